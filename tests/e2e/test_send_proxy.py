"""Pool option send_proxy=v1|v2 (issue #13) end to end: the balancer built from
tests/routes/send_proxy.def in front of a python backend that records the bytes each
connection starts with (the PROXY header), then echoes what follows.

The header names the client (its address and port) and the address it connected to, or,
behind `proxy_protocol`, the addresses the PROXY header in carried; it is the first thing on
every server connection of the tunnel (also the one after a refused connect), before the
client's bytes; the client's bytes then pass untouched.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import unittest

import jtest
from balancer import BalancerTestCase

HOST = "127.0.150.1"
CLIENT = "127.0.150.20"  # the client's own source address: not the balancer's
V1, V2, V1_IN, V2_IN, RETRY = 17101, 17102, 17103, 17104, 17105
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def read_header(conn: socket.socket) -> bytes:
    """The PROXY header at the start of `conn`, as sent (v1 to its CRLF, v2 by its length)."""
    got = jtest.recv_exact(conn, 16)
    if got.startswith(V2_SIG):
        return jtest.recv_exact(conn, 16 + struct.unpack("!H", got[14:16])[0], got)
    while not got.endswith(b"\r\n") and len(got) < 108:
        c = conn.recv(1)
        if not c:
            break
        got += c
    return got


class Recorder:
    """127.0.150.1:7101: per connection, records its PROXY header under the 16-byte tag the
    client sends first behind it, then echoes (the tag too) until EOF."""

    def __init__(self):
        self.headers: dict[bytes, bytes] = {}
        self.lock = threading.Lock()
        self.sock = socket.create_server((HOST, 7101), reuse_port=False, backlog=64)
        jtest.serve_connections(self.sock, self.handle)

    def handle(self, conn: socket.socket):
        with conn:
            conn.settimeout(30)
            try:
                header = read_header(conn)
                tag = jtest.recv_exact(conn, 16)
                with self.lock:
                    self.headers[tag] = header
                conn.sendall(tag)
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def header(self, tag: bytes) -> bytes:
        with self.lock:
            return self.headers.get(tag, b"")

    def close(self):
        self.sock.close()


def v2_tcp4(src: str, dst: str, sport: int, dport: int) -> bytes:
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return V2_SIG + b"\x21\x11" + struct.pack("!H", len(body)) + body


class SendProxyTest(BalancerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.recorder = Recorder()
        cls.addClassCleanup(cls.recorder.close)

    def setUp(self):
        # Every listener is bound before the balancer says it listens (no probe connection,
        # which would be a tunnel of its own).
        self.lb = self.start_balancer("send_proxy")

    def tunnel(self, port: int, first: bytes = b"") -> tuple[bytes, int]:
        """Sends `first` + a unique tag + "hello" through the listener on `port` from CLIENT;
        returns the header the backend saw before the tag, and the client's own port. The
        echo proves the bytes behind the header are the client's, untouched."""
        tag = os.urandom(8).hex().encode()
        with socket.create_connection((HOST, port), timeout=10, source_address=(CLIENT, 0)) as s:
            s.sendall(first + tag + b"hello")
            self.assertEqual(jtest.recv_exact(s, 21), tag + b"hello")
            client_port = s.getsockname()[1]
        return self.recorder.header(tag), client_port

    def test_v1_names_the_client_and_the_listener(self):
        header, port = self.tunnel(V1)
        self.assertEqual(header, f"PROXY TCP4 {CLIENT} {HOST} {port} {V1}\r\n".encode())

    def test_v2_names_the_client_and_the_listener(self):
        header, port = self.tunnel(V2)
        self.assertEqual(header, v2_tcp4(CLIENT, HOST, port, V2))

    def test_behind_proxy_protocol_the_carried_addresses_go_on(self):
        for listener, inbound in ((V1_IN, b"PROXY TCP4 203.0.113.9 198.51.100.1 5555 443\r\n"),
                                  (V1_IN, v2_tcp4("203.0.113.9", "198.51.100.1", 5555, 443)),
                                  (V2_IN, b"PROXY TCP4 203.0.113.9 198.51.100.1 5555 443\r\n")):
            with self.subTest(listener=listener, inbound=inbound[:12]):
                header, _ = self.tunnel(listener, inbound)
                if listener == V1_IN:
                    self.assertEqual(header, b"PROXY TCP4 203.0.113.9 198.51.100.1 5555 443\r\n")
                else:
                    self.assertEqual(header, v2_tcp4("203.0.113.9", "198.51.100.1", 5555, 443))

    def test_behind_proxy_protocol_a_local_header_names_the_connection(self):
        header, port = self.tunnel(V1_IN, b"PROXY UNKNOWN\r\n")
        self.assertEqual(header, f"PROXY TCP4 {CLIENT} {HOST} {port} {V1_IN}\r\n".encode())

    def test_the_connection_after_a_refused_one_starts_with_the_header(self):
        for _ in range(3):
            header, port = self.tunnel(RETRY)
            self.assertEqual(header, f"PROXY TCP4 {CLIENT} {HOST} {port} {RETRY}\r\n".encode())
        self.lb.wait_for_line(rf"L4 connect to {HOST}:7109 failed: connection refused")


if __name__ == "__main__":
    unittest.main()

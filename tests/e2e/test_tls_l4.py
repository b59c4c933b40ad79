"""`listen tls ADDR:PORT cert=... key=... pool=NAME` (issue #13) end to end: the balancer
built from tests/routes/tls_l4.def terminates TLS and relays the plaintext as L4 to a python
echo backend on 127.0.151.1:7201; python's ssl is the client.

1 MB each way comes back byte-exact; SNI picks the certificate among the listener's pairs (the
first is the default); the client's close_notify reaches the server as a FIN and the
server's end comes back (the echo's last bytes, then the end); behind proxy_protocol the
header comes before the TLS handshake.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import tempfile
import unittest

import jtest
from balancer import BalancerTestCase

HOST = "127.0.151.1"
TLS, TLS_PROXY = 17201, 17202


class Echo:
    """127.0.151.1:7201: echoes each connection until its FIN, then ends its own side."""

    def __init__(self):
        self.sock = socket.create_server((HOST, 7201), backlog=64)
        self.received: list[bytes] = []
        jtest.serve_connections(self.sock, self.handle)

    def handle(self, conn: socket.socket):
        with conn:
            conn.settimeout(30)
            got = bytearray()
            try:
                while data := conn.recv(65536):
                    got += data
                    conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self.received.append(bytes(got))

    def close(self):
        self.sock.close()


class TlsL4Test(BalancerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.echo = Echo()
        cls.addClassCleanup(cls.echo.close)
        cls.dir = tempfile.mkdtemp()
        cls.addClassCleanup(shutil.rmtree, cls.dir)
        jtest.make_cert(cls.dir, "l4-a", "localhost", "DNS:localhost,IP:127.0.151.1")
        jtest.make_cert(cls.dir, "l4-b", "other.test", "DNS:other.test")

    def setUp(self):
        self.lb = self.start_balancer("tls_l4", cwd=self.dir)

    def context(self, stem: str) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=os.path.join(self.dir, stem + ".crt"))

    def dial(self, name: str, stem: str, port: int = TLS, first: bytes = b"") -> ssl.SSLSocket:
        raw = socket.create_connection((HOST, port), timeout=15)
        if first:
            raw.sendall(first)
        return self.context(stem).wrap_socket(raw, server_hostname=name)

    def test_one_megabyte_each_way_byte_exact(self):
        data = jtest.pattern_bytes(1 << 20)
        with self.dial("localhost", "l4-a") as s:
            got = bytearray()
            # Chunk by chunk: an SSL socket takes no concurrent reader and writer.
            for at in range(0, len(data), 32_768):
                chunk = data[at:at + 32_768]
                s.sendall(chunk)
                got += jtest.recv_exact(s, len(chunk))
            self.assertEqual(len(got), len(data))
            self.assertTrue(got == data, "the echoed megabyte differs")
        # The server saw the plaintext megabyte, byte-exact, then the end.
        self.assertTrue(jtest.wait_until(lambda: any(r == data for r in self.echo.received), 15),
                        "the server did not get the megabyte, then the end")

    def test_access_log_line_names_the_tls_version(self):
        self.lb.stop()    # its listeners' ports: this one logs
        log = self.access_log_path()
        self.start_balancer("tls_l4", cwd=self.dir, access_log=log, extra=["--access-log-format", "json"])
        with self.dial("localhost", "l4-a") as s:
            s.sendall(b"ping")
            self.assertEqual(jtest.recv_exact(s, 4), b"ping")

        def logged():
            with open(log) as f:
                return [json.loads(line) for line in f if line.strip()]
        self.assertTrue(jtest.wait_until(lambda: logged(), 5), "no access log line")
        self.assertEqual((logged()[0]["kind"], logged()[0]["tls"]), ("tcp", "TLSv1.3"))

    def test_sni_picks_the_certificate(self):
        for name, stem in (("localhost", "l4-a"), ("other.test", "l4-b")):
            with self.subTest(name=name):
                with self.dial(name, stem) as s:  # verifies against that certificate only
                    self.assertIn(("DNS", name), s.getpeercert()["subjectAltName"])
                    s.sendall(b"ping " + name.encode())
                    self.assertEqual(jtest.recv_exact(s, 5 + len(name)), b"ping " + name.encode())
        # An unknown name gets the default (the first) certificate: it verifies against
        # l4-a's (the name aside), not against l4-b's.
        ctx = self.context("l4-a")
        ctx.check_hostname = False
        with ctx.wrap_socket(socket.create_connection((HOST, TLS), timeout=15), server_hostname="unknown.test") as s:
            self.assertIn(("DNS", "localhost"), s.getpeercert()["subjectAltName"])
        with self.assertRaises(ssl.SSLCertVerificationError):
            self.dial("other.test", "l4-a").close()

    def test_client_close_notify_ends_the_server_side_and_its_end_comes_back(self):
        with self.dial("localhost", "l4-a") as s:
            s.sendall(b"last words")
            self.assertEqual(jtest.recv_exact(s, 10), b"last words")
            raw = s.unwrap()  # our close_notify; returns once the balancer's came back
            self.assertEqual(jtest.recv_to_end(raw), b"")
            raw.close()
        self.assertTrue(jtest.wait_until(lambda: b"last words" in self.echo.received, 15))

    def test_proxy_protocol_header_before_the_handshake(self):
        header = b"PROXY TCP4 203.0.113.9 127.0.151.1 5555 17202\r\n"
        with self.dial("localhost", "l4-a", port=TLS_PROXY, first=header) as s:
            s.sendall(b"behind a header")
            self.assertEqual(jtest.recv_exact(s, 15), b"behind a header")

    def test_a_plaintext_client_is_closed(self):
        with socket.create_connection((HOST, TLS), timeout=15) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                data = jtest.recv_to_end(s)
            except ConnectionResetError:
                data = b""
            self.assertNotIn(b"GET", data)  # nothing of it was relayed back by the echo
        self.assertNotIn(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", self.echo.received)


if __name__ == "__main__":
    unittest.main()

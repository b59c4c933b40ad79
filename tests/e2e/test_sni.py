"""SNI pass-through (`listen tcp ADDR:PORT sni` + `route sni NAME -> POOL`, issue #13) end to
end: the balancer built from tests/routes/sni.def peeks at the ClientHello, routes on its
server_name, and relays every byte untouched, the ClientHello included: the client
completes its handshake with the backend, whose certificate it sees (the balancer has none).

Two names go to two TLS backends (python ssl servers run here), a wildcard to the second, a
ClientHello split across two reads, or fragmented over several TLS records, is still routed;
on a listener with proxy_protocol as well, the PROXY header is read first and the ClientHello
behind it routes; a ClientHello without server_name, and
bytes that are not TLS at all, go to the default pool (a plain echo server, which sends the
very bytes back: the proof they passed untouched).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import struct
import tempfile
import time
import unittest

import jtest
from balancer import BalancerTestCase

HOST = "127.0.152.1"
SNI = 17301
PROXIED = ("127.0.171.1", 17303)  # `sni proxy_protocol`: a PROXY header first, then the ClientHello


def records(flight: bytes, cuts: list[int]) -> list[bytes]:
    """The ClientHello record that opens `flight` sent again as several records, its handshake
    message cut at `cuts` (offsets into the message), as a client that fragments does; what
    followed the hello in `flight` is appended to the last."""
    assert flight[0] == 22
    end = 5 + struct.unpack("!H", flight[3:5])[0]
    message, after = flight[5:end], flight[end:]
    out, start = [], 0
    for cut in [*cuts, len(message)]:
        fragment = message[start:cut]
        out.append(flight[:3] + struct.pack("!H", len(fragment)) + fragment)
        start = cut
    out[-1] += after
    return out


def proxy_v1(src: str) -> bytes:
    return f"PROXY TCP4 {src} {PROXIED[0]} 40000 {PROXIED[1]}\r\n".encode()


def tls_echo(ctx: ssl.SSLContext):
    def handle(conn: socket.socket):
        conn.settimeout(30)
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                while data := tls.recv(65536):
                    tls.sendall(data)
        except (OSError, ssl.SSLError):
            conn.close()
    return handle


def plain_echo(conn: socket.socket):
    with conn:
        conn.settimeout(30)
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
        except OSError:
            pass


def client_hello(name: str | None) -> bytes:
    """The first flight of a python ssl client for `name`: its ClientHello."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    out = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname=name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


class SniTest(BalancerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp()
        cls.addClassCleanup(shutil.rmtree, cls.dir)
        jtest.make_cert(cls.dir, "alpha", "alpha.sni.test", "DNS:alpha.sni.test")
        jtest.make_cert(cls.dir, "beta", "beta.sni.test", "DNS:beta.sni.test,DNS:*.wild.test")
        cls.socks = []
        for port, stem in ((7301, "alpha"), (7302, "beta"), (7303, None)):
            sock = socket.create_server((HOST, port), backlog=64)
            cls.socks.append(sock)
            cls.addClassCleanup(sock.close)
            if stem is None:
                jtest.serve_connections(sock, plain_echo)
                continue
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(os.path.join(cls.dir, stem + ".crt"), os.path.join(cls.dir, stem + ".key"))
            jtest.serve_connections(sock, tls_echo(ctx))

    def setUp(self):
        # An access log: a connection that ends before its route (the silent one) is logged too.
        self.lb_log = self.access_log_path()
        self.lb = self.start_balancer("sni", access_log=self.lb_log)

    def verify_with(self, stem: str) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=os.path.join(self.dir, stem + ".crt"))

    def test_two_names_to_two_pools_with_the_backends_certificates(self):
        data = jtest.pattern_bytes(200_000)
        for name, stem in (("alpha.sni.test", "alpha"), ("beta.sni.test", "beta"), ("BETA.sni.test", "beta"),
                           ("x.wild.test", "beta")):
            with self.subTest(name=name):
                raw = socket.create_connection((HOST, SNI), timeout=15)
                # Verifies against that backend's certificate only: the one the client sees.
                with self.verify_with(stem).wrap_socket(raw, server_hostname=name) as s:
                    got = bytearray()
                    for at in range(0, len(data), 20_000):
                        s.sendall(data[at:at + 20_000])
                        got += jtest.recv_exact(s, 20_000)
                    self.assertTrue(got == data, f"echo through {name} differs")
        # And not Juggler's, nor the other backend's.
        raw = socket.create_connection((HOST, SNI), timeout=15)
        with self.assertRaises(ssl.SSLCertVerificationError):
            self.verify_with("beta").wrap_socket(raw, server_hostname="alpha.sni.test")
        raw.close()

    def handshake(self, name: str, stem: str, send_first, addr=(HOST, SNI)):
        """A TLS handshake with `name` through the balancer, driven by hand (ssl.MemoryBIO), its
        first flight (the ClientHello) sent by `send_first(sock, flight)`; the certificate must
        be the `stem` backend's (verified, and named in subjectAltName), and a byte echoed."""
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.verify_with(stem).wrap_bio(incoming, outgoing, server_hostname=name)
        with socket.create_connection(addr, timeout=15) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            first = True
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    flight = outgoing.read()
                    if first:
                        send_first(s, flight)
                        first = False
                    elif flight:
                        s.sendall(flight)
                    chunk = s.recv(65536)
                    self.assertTrue(chunk, "the balancer closed")
                    incoming.write(chunk)
            s.sendall(outgoing.read())  # the client's Finished
            self.assertIn(("DNS", name), tls.getpeercert()["subjectAltName"])
            tls.write(b"ping")
            s.sendall(outgoing.read())
            while True:  # the echo (behind any session tickets)
                try:
                    self.assertEqual(tls.read(4), b"ping")
                    break
                except ssl.SSLWantReadError:
                    chunk = s.recv(65536)
                    self.assertTrue(chunk, "the balancer closed")
                    incoming.write(chunk)

    def test_a_client_hello_split_across_reads_is_routed(self):
        def split(s, flight):
            # The record header and a few bytes, then the rest: two segments, two reads.
            s.sendall(flight[:7])
            time.sleep(0.1)
            s.sendall(flight[7:])
        self.handshake("alpha.sni.test", "alpha", split)

    def test_a_client_hello_fragmented_over_records_is_routed(self):
        """RFC 8446 5.1: a handshake message may span records (a large hello, or a client that
        fragments on purpose). The records, as sent, reach the backend, which joins them too."""
        name = "alpha.sni.test"
        for how in ("one write", "a write per record"):
            with self.subTest(how=how):
                def fragmented(s, flight):
                    at = flight[5:].find(name.encode())
                    self.assertGreater(at, 0)
                    # The handshake header cut, and the host_name cut in two.
                    parts = records(flight, [2, at + 5])
                    if how == "one write":
                        s.sendall(b"".join(parts))
                        return
                    for part in parts:
                        s.sendall(part)
                        time.sleep(0.05)  # a segment each (TCP_NODELAY): the peek sees them one by one
                self.handshake(name, "alpha", fragmented)

    def test_no_server_name_goes_to_the_default_untouched(self):
        hello = client_hello(None)
        with socket.create_connection((HOST, SNI), timeout=15) as s:
            s.sendall(hello)
            self.assertEqual(jtest.recv_exact(s, len(hello)), hello)  # the plain echo: every byte as sent

    def test_bytes_that_are_not_tls_go_to_the_default_untouched(self):
        for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x7f\xffnot a hello"):
            with self.subTest(junk=junk[:8]):
                with socket.create_connection((HOST, SNI), timeout=15) as s:
                    s.sendall(junk)
                    self.assertEqual(jtest.recv_exact(s, len(junk)), junk)

    def test_proxy_protocol_then_the_client_hello(self):
        """`listen tcp ... sni proxy_protocol`: the PROXY header is read first, then the
        ClientHello behind it is peeked and routes the connection; the header's address is
        the client's (the access log), and the header is not relayed (the handshake would fail)."""
        for src, name, stem, how in (("203.0.113.9", "alpha.sni.test", "alpha", "together"),
                                     ("203.0.113.10", "beta.sni.test", "beta", "apart"),
                                     ("203.0.113.11", "alpha.sni.test", "alpha", "fragmented")):
            with self.subTest(how=how):
                def with_header(s, flight):
                    if how == "together":
                        s.sendall(proxy_v1(src) + flight)
                        return
                    s.sendall(proxy_v1(src))
                    time.sleep(0.05)  # the header alone in the first read
                    s.sendall(b"".join(records(flight, [100])) if how == "fragmented" else flight)
                self.handshake(name, stem, with_header, addr=PROXIED)
                server = f"upstream={HOST}:{7301 if stem == 'alpha' else 7302}"
                lines = jtest.access_log_lines(self.lb_log, pattern=re.escape(src + " "))
                self.assertTrue(any(line.startswith(src + " ") and server in line for line in lines), lines[-3:])
        # Without the header: closed, not routed.
        with socket.create_connection(PROXIED, timeout=15) as s:
            s.sendall(client_hello("alpha.sni.test"))
            try:
                self.assertEqual(jtest.recv_to_end(s), b"")
            except ConnectionResetError:
                pass

    def test_a_silent_client_is_closed_after_the_header_timeout(self):
        with socket.create_connection((HOST, SNI), timeout=30) as s:
            t0 = time.monotonic()
            try:
                self.assertEqual(jtest.recv_to_end(s), b"")
            except ConnectionResetError:
                pass
            self.assertGreaterEqual(time.monotonic() - t0, 1.5)


if __name__ == "__main__":
    unittest.main()

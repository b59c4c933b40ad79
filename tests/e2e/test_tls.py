"""TLS termination end to end: curl, python's ssl and openssl s_client against the balancer
built from tests/routes/tls.def, with plain-HTTP testservers behind it."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest
import warnings

import jtest
from balancer import BalancerTestCase, balancer_path, start_balancer

HOST = "127.0.75.1"


class TlsTest(BalancerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dir = tempfile.mkdtemp()
        cls.addClassCleanup(shutil.rmtree, cls.dir)
        jtest.make_cert(cls.dir, "tls-a", "localhost", "DNS:localhost,IP:127.0.0.1")
        jtest.make_cert(cls.dir, "tls-b", "other.test", "DNS:other.test")
        cls.backends = [cls.start_class_testserver(port=p, host=HOST) for p in (6901, 6902)]
        cls.lb = start_balancer("tls", extra=["--https-port", "0"], cwd=cls.dir)
        cls.addClassCleanup(jtest.check_stopped_cleanly, cls.lb)
        cls.https_port = int(cls.lb.wait_for_line(r"listening on https://\S+:(\d+)").group(1))
        cls.ca_a = os.path.join(cls.dir, "tls-a.crt")
        cls.ca_b = os.path.join(cls.dir, "tls-b.crt")

    def client_context(self, cafile: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=cafile)
        return ctx

    def curl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["curl", "-s", "--cacert", self.ca_a, *args], capture_output=True, timeout=60)

    def test_curl_over_tls_1_2_and_1_3(self):
        """Each TLS version, over HTTP/1.1 and over HTTP/2 (ALPN): the protocol curl says it
        spoke, a verified certificate, and the request as the server saw it."""
        for flags, version in ((["--tlsv1.2", "--tls-max", "1.2"], "TLSv1.2"), (["--tlsv1.3"], "TLSv1.3")):
            for proto, expect in (("--http1.1", b"1.1"), ("--http2", b"2")):
                out = self.curl(*flags, proto, "-w", "\n%{ssl_verify_result} %{http_version}",
                                f"https://localhost:{self.https_port}/headers")
                self.assertEqual(out.returncode, 0, out.stderr)
                body, last = out.stdout.rsplit(b"\n", 1)
                self.assertEqual(last, b"0 " + expect, (version, proto))
                self.assertIn(b"X-Forwarded-Proto: https", body)

    def test_sni_picks_the_certificate_and_each_verifies(self):
        for name, ca in (("localhost", self.ca_a), ("other.test", self.ca_b)):
            ctx = self.client_context(ca)
            with socket.create_connection(("127.0.0.1", self.https_port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname=name) as tls:
                    cert = tls.getpeercert()
                    self.assertIn(("commonName", name), cert["subject"][0])
                    tls.sendall(f"GET /ping HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())
                    self.assertEqual(jtest.read_response(tls.makefile("rb")).body, b"pong\n")

    def test_alpn_offers_h2_then_http_1_1(self):
        for offer, chosen in ((["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")):
            ctx = self.client_context(self.ca_a)
            ctx.set_alpn_protocols(offer)
            with socket.create_connection(("127.0.0.1", self.https_port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                    self.assertEqual(tls.selected_alpn_protocol(), chosen)

    def test_sessions_are_resumed(self):
        out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{self.https_port}", "-tls1_2",
                              "-reconnect", "-CAfile", self.ca_a],
                             input=b"", capture_output=True, timeout=30)
        reused = len(re.findall(rb"^Reused, ", out.stdout, re.M))
        self.assertGreaterEqual(reused, 4, out.stdout.decode(errors="replace")[-2000:])
        # TLS 1.3 tickets, from python.
        ctx = self.client_context(self.ca_a)
        with socket.create_connection(("127.0.0.1", self.https_port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
                jtest.read_response(tls.makefile("rb"))
                session = tls.session
        with socket.create_connection(("127.0.0.1", self.https_port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
                self.assertTrue(tls.session_reused)

    def test_a_resumed_tls13_connection_gets_a_fresh_ticket(self):
        # TLS 1.3 clients use a ticket once: each connection of a chain resumes
        # with the ticket the previous one received. Without a fresh ticket
        # after a resumption, the client's session stays the one it used
        # (same id) and OpenSSL clients (wrk, curl) do a full handshake next.
        ctx = self.client_context(self.ca_a)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        session, ids = None, []
        for i in range(4):
            with socket.create_connection(("127.0.0.1", self.https_port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
                    tls.sendall(b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    jtest.read_response(tls.makefile("rb"))
                    self.assertEqual(tls.session_reused, i > 0, f"connection {i}")
                    session = tls.session
                    ids.append(session.id)
        self.assertEqual(len(set(ids)), 4, "every connection must leave the client a new ticket")

    def test_close_notify_before_the_balancer_closes(self):
        # After a Connection: close answer the balancer closes; over TLS it sends
        # close_notify first, so a client that takes a bare EOF for truncation
        # (suppress_ragged_eofs=False raises SSLEOFError) reads a clean end.
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = self.client_context(self.ca_a)
            ctx.minimum_version = ctx.maximum_version = version
            with socket.create_connection(("127.0.0.1", self.https_port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False) as tls:
                    tls.sendall(b"GET /ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    data = b""
                    while chunk := tls.recv(65536):
                        data += chunk
            self.assertTrue(data.startswith(b"HTTP/1.1 200"), data[:100])
            self.assertTrue(data.endswith(b"pong\n"), data[-100:])

    # ---- refusals: the SERVER must refuse, not our local OpenSSL.
    # The client context permits everything (security level 0, the old protocol or the weak
    # suite) and is first checked against a local python server that permits everything
    # too: if that handshake fails, this OpenSSL cannot offer it and the case is skipped.
    # Against the balancer the handshake must then fail with an alert RECEIVED from it.

    def permissive_client(self, version: ssl.TLSVersion, ciphers: str) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with warnings.catch_warnings():  # python deprecates TLS 1.0/1.1: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ctx.maximum_version = version
        ctx.set_ciphers(ciphers + ":@SECLEVEL=0")
        return ctx

    def local_handshake(self, client: ssl.SSLContext) -> tuple:
        """Handshakes `client` with an in-process server that allows any protocol and suite;
        returns (version, cipher) or raises ssl.SSLError/OSError."""
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(os.path.join(self.dir, "tls-a.crt"), os.path.join(self.dir, "tls-a.key"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            server.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        server.set_ciphers("ALL:eNULL:@SECLEVEL=0")
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)
        listener.settimeout(10)

        def serve():
            try:
                conn, _ = listener.accept()
                with server.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except OSError:
                pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with socket.create_connection(listener.getsockname(), timeout=10) as raw:
                with client.wrap_socket(raw, server_hostname="localhost") as tls:
                    return tls.version(), tls.cipher()[0]
        finally:
            thread.join(timeout=10)

    def balancer_handshake(self, client: ssl.SSLContext) -> tuple:
        with socket.create_connection(("127.0.0.1", self.https_port), timeout=10) as raw:
            with client.wrap_socket(raw, server_hostname="localhost") as tls:
                return tls.version(), tls.cipher()[0]

    def assert_refused_by_the_server(self, client: ssl.SSLContext, alert: str) -> None:
        with self.assertRaises(ssl.SSLError) as caught:
            got = self.balancer_handshake(client)
            self.fail(f"the balancer accepted {got}")
        # "tlsv1 alert ..." / "sslv3 alert ...": an alert the peer sent, not a local refusal.
        self.assertEqual(caught.exception.reason, alert, caught.exception)

    def test_old_protocols_are_refused_by_the_server(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old = (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1)
        for version in old:
            with self.subTest(version=version.name):
                try:
                    client = self.permissive_client(version, "ALL")
                    self.assertEqual(self.local_handshake(client)[0], version.name.replace("_", "."))
                except (ValueError, ssl.SSLError) as error:
                    self.skipTest(f"this OpenSSL cannot offer {version.name}: {error}")
                self.assert_refused_by_the_server(client, "TLSV1_ALERT_PROTOCOL_VERSION")
        # Control: the same client configuration, TLS 1.2 allowed, gets through.
        client = self.permissive_client(ssl.TLSVersion.TLSv1_2, "ALL")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            client.minimum_version = ssl.TLSVersion.TLSv1
        self.assertEqual(self.balancer_handshake(client)[0], "TLSv1.2")

    def test_weak_suites_are_refused_by_the_server(self):
        # All usable with the ECDSA certificates: CBC with SHA-1 or SHA-384 MACs (no AEAD),
        # CAMELLIA, and a NULL (unencrypted) suite.
        for cipher in ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-CAMELLIA128-SHA256",
                       "ECDHE-ECDSA-NULL-SHA"):
            with self.subTest(cipher=cipher):
                try:
                    client = self.permissive_client(ssl.TLSVersion.TLSv1_2, cipher)
                    self.assertEqual(self.local_handshake(client), ("TLSv1.2", cipher))
                except (ValueError, ssl.SSLError) as error:
                    self.skipTest(f"this OpenSSL cannot offer {cipher}: {error}")
                self.assert_refused_by_the_server(client, "SSLV3_ALERT_HANDSHAKE_FAILURE")
        # Control: the same client configuration with an allowed suite gets through.
        client = self.permissive_client(ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256")
        self.assertEqual(self.balancer_handshake(client), ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256"))

    def test_100mb_download_byte_exact_with_bounded_memory(self):
        n = 100 * 1000 * 1000
        ctx = self.client_context(self.ca_a)
        conn = http.client.HTTPSConnection("localhost", self.https_port, context=ctx, timeout=60)
        self.addCleanup(conn.close)
        conn.request("GET", f"/bytes?n={n}")
        resp = conn.getresponse()
        digest = hashlib.sha256()
        got = peak = 0
        while chunk := resp.read(1 << 20):
            digest.update(chunk)
            got += len(chunk)
            if got % (8 << 20) < (1 << 20):
                peak = max(peak, jtest.rss_kb(self.lb.pid))
        self.assertEqual(got, n)
        self.assertEqual(digest.hexdigest(), jtest.pattern_sha256(n))
        if "ASAN_OPTIONS" not in os.environ:  # ASan's quarantine keeps freed TLS record buffers
            self.assertLess(peak, 60 * 1024, f"balancer RSS peaked at {peak} kB")

    def test_100mb_download_over_http2_byte_exact_with_bounded_memory(self):
        """The same 100 MB through one HTTP/2 stream (curl --http2): flow control and the
        stream's backpressure keep the balancer's memory bounded as over HTTP/1.1."""
        n = 100 * 1000 * 1000
        proc = subprocess.Popen(["curl", "-s", "--http2", "--cacert", self.ca_a, "--max-time", "120",
                                 "-w", "%{stderr}%{http_version}", f"https://localhost:{self.https_port}/bytes?n={n}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(proc.kill)
        digest = hashlib.sha256()
        got = peak = 0
        while chunk := proc.stdout.read(1 << 20):
            digest.update(chunk)
            got += len(chunk)
            if got % (8 << 20) < (1 << 20):
                peak = max(peak, jtest.rss_kb(self.lb.pid))
        self.assertEqual(proc.wait(timeout=60), 0)
        self.assertEqual(proc.stderr.read(), b"2")
        self.assertEqual(got, n)
        self.assertEqual(digest.hexdigest(), jtest.pattern_sha256(n))
        if "ASAN_OPTIONS" not in os.environ:
            self.assertLess(peak, 60 * 1024, f"balancer RSS peaked at {peak} kB")

    def test_large_upload_over_tls(self):
        body = os.urandom(5 * 1024 * 1024)
        ctx = self.client_context(self.ca_a)
        conn = http.client.HTTPSConnection("localhost", self.https_port, context=ctx, timeout=60)
        self.addCleanup(conn.close)
        conn.request("POST", "/echo", body=body)
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.read(), body)

    def test_garbage_and_plain_http_on_the_https_port_disturb_nobody(self):
        ctx = self.client_context(self.ca_a)
        conn = http.client.HTTPSConnection("localhost", self.https_port, context=ctx, timeout=10)
        self.addCleanup(conn.close)
        conn.request("GET", "/ping")
        self.assertEqual(conn.getresponse().read(), b"pong\n")
        for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", os.urandom(5000), b"\x16\x03\x01\x00\x05hello"):
            with socket.create_connection(("127.0.0.1", self.https_port), timeout=10) as s:
                s.sendall(junk)
                s.shutdown(socket.SHUT_WR)
                try:
                    while s.recv(4096):
                        pass
                except ConnectionResetError:
                    pass
        # A client that disappears mid-handshake.
        s = socket.create_connection(("127.0.0.1", self.https_port), timeout=10)
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        s.close()
        conn.request("GET", "/ping")  # the kept-alive TLS connection still works
        self.assertEqual(conn.getresponse().read(), b"pong\n")
        self.assertEqual(jtest.http_request(self.plain_port(), path="/ping")[0], 200)

    def plain_port(self) -> int:
        return int(re.search(r"listening on http://\S+:(\d+)", self.lb.output()).group(1))


class TicketRotationTest(BalancerTestCase):
    def test_ticket_keys_rotate_and_the_previous_key_is_still_accepted(self):
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d)
        jtest.make_cert(d, "tls-a", "localhost", "DNS:localhost,IP:127.0.0.1")
        jtest.make_cert(d, "tls-b", "other.test", "DNS:other.test")
        self.start_backends(HOST, (6901, 6902))
        period = 2  # seconds; the keys of epoch E = floor(unix time / period) (src/tls/tls.cpp)
        lb = self.start_balancer("tls", extra=["--https-port", "0"], cwd=d,
                                 env={"JUGGLER_TLS_TICKET_ROTATE_S": str(period)})
        port = int(lb.wait_for_line(r"listening on https://\S+:(\d+)").group(1))
        ctx = ssl.create_default_context(cafile=os.path.join(d, "tls-a.crt"))

        def connect(session=None):
            """(reused, session, epoch at the start, epoch at the end) of one connection."""
            start = time.time()
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            tls = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
            tls.sendall(b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
            jtest.read_response(tls.makefile("rb"))
            reused, session = tls.session_reused, tls.session
            tls.close()
            return reused, session, int(start // period), int(time.time() // period)

        # A ticket issued in epoch E resumes in E and E+1, not from E+2 on. The clock is the
        # behaviour here: the sleeps wait for epoch boundaries. A connection that straddles a
        # boundary (a loaded machine) has no single epoch: it is not judged, and the round
        # starts over, until each age (0, 1, 2) was judged once.
        judged: dict = {}
        deadline = time.monotonic() + 40
        while len(judged) < 3 and time.monotonic() < deadline:
            time.sleep(period - time.time() % period + 0.05)  # just after a boundary
            _, ticket, e0, e1 = connect()
            if e0 != e1:
                continue
            for age in (0, 1, 2):
                wait = (e0 + age) * period + 0.05 - time.time()
                if wait > 0:
                    time.sleep(wait)
                reused, _, a0, a1 = connect(ticket)
                if a0 != a1:
                    break
                seen = a0 - e0
                self.assertEqual(reused, seen <= 1, f"a ticket {seen} epoch(s) old: resumed={reused}")
                judged.setdefault(min(seen, 2), reused)
        self.assertEqual(judged, {0: True, 1: True, 2: False})


class CertificateErrorsTest(unittest.TestCase):
    def run_in(self, directory: str) -> subprocess.CompletedProcess:
        return jtest.run_program([balancer_path("tls"), "--port", "0", "--https-port", "0"], cwd=directory,
                                 timeout=10)

    def test_missing_certificate_names_the_file_and_make_ssl_cert(self):
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d)
        out = self.run_in(d)
        self.assertEqual(out.returncode, 1)
        self.assertIn("tls-a.crt", out.stderr)
        self.assertIn("make ssl_cert", out.stderr)
        self.assertRegex(out.stderr, r"tls\.def:\d+: listen https")

    def test_key_that_does_not_match_is_refused(self):
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d)
        jtest.make_cert(d, "tls-a", "localhost", "DNS:localhost")
        jtest.make_cert(d, "tls-b", "other.test", "DNS:other.test")
        shutil.copy(os.path.join(d, "tls-b.key"), os.path.join(d, "tls-a.key"))
        out = self.run_in(d)
        self.assertEqual(out.returncode, 1)
        self.assertIn("tls-a.key does not match certificate tls-a.crt", out.stderr)


if __name__ == "__main__":
    unittest.main()

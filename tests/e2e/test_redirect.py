"""Redirect routes end to end (tests/routes/redirect.def): `-> redirect POOL CODE` answers
with the picked server's address, `-> redirect https CODE` sends plain HTTP to HTTPS."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import unittest

import jtest
from balancer import BalancerTestCase

HOST = "127.0.84.1"


class RedirectTest(BalancerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dir = tempfile.mkdtemp()
        cls.addClassCleanup(shutil.rmtree, cls.dir)
        jtest.make_cert(cls.dir, "tls-a", "localhost", "DNS:localhost")
        for port in (6901, 6902):
            cls.start_class_testserver(port=port, host=HOST)
        from balancer import start_balancer
        cls.lb = start_balancer("redirect", extra=["--https-port", "0"], cwd=cls.dir)
        cls.addClassCleanup(jtest.check_stopped_cleanly, cls.lb)
        cls.https_port = int(cls.lb.wait_for_line(r"listening on https://\S+:(\d+)").group(1))

    def raw(self, request: bytes) -> jtest.RawResponse:
        sock = jtest.raw_connection(self.lb.port)
        self.addCleanup(sock.close)
        sock.sendall(request)
        return jtest.read_response(sock.makefile("rb"))

    def test_redirect_to_the_picked_server(self):
        seen = []
        for _ in range(4):
            resp = self.raw(b"GET /files/report.pdf?v=2 HTTP/1.1\r\nHost: shop.test\r\n\r\n")
            self.assertEqual(resp.status, 302)
            self.assertEqual(resp.header("Content-Length"), "0")
            seen.append(resp.header("Location"))
        self.assertEqual(sorted(set(seen)), [f"http://{HOST}:6901/files/report.pdf?v=2",
                                             f"http://{HOST}:6902/files/report.pdf?v=2"])
        # And the server it names really serves: follow one.
        status, _, _ = jtest.http_request(6901, path="/ping", host=HOST)
        self.assertEqual(status, 200)

    def test_redirect_to_https_keeps_host_and_target(self):
        resp = self.raw(b"POST /login/form?next=%2Fhome HTTP/1.1\r\nHost: Shop.Test:8080\r\nContent-Length: 3\r\n\r\nabc")
        self.assertEqual(resp.status, 301)
        self.assertEqual(resp.header("Location"), f"https://Shop.Test:{self.https_port}/login/form?next=%2Fhome")
        # curl follows it to the https listener, where the same route does not apply
        # (the request is already secure) and the catch-all proxies it: no redirect loop.
        out = subprocess.run(["curl", "-s", "-L", "-k", "-o", "/dev/null", "-w", "%{http_code} %{num_redirects} %{url_effective}",
                              f"http://localhost:{self.lb.port}/login/x"], capture_output=True, text=True, timeout=20)
        self.assertEqual(out.stdout, f"404 1 https://localhost:{self.https_port}/login/x")  # testserver: no such file

    def test_keep_alive_after_a_redirect(self):
        sock = jtest.raw_connection(self.lb.port)
        self.addCleanup(sock.close)
        reader = sock.makefile("rb")
        sock.sendall(b"GET /files/a HTTP/1.1\r\nHost: x\r\n\r\nGET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(jtest.read_response(reader).status, 302)
        self.assertEqual(jtest.read_response(reader).body, b"pong\n")

    def test_redirect_without_host_is_400(self):
        resp = self.raw(b"GET /login/x HTTP/1.0\r\n\r\n")
        self.assertEqual(resp.status, 400)


if __name__ == "__main__":
    unittest.main()

"""Absolute-form request targets end to end (RFC 9112 3.2.2; tests/routes/absolute.def):
`GET http://b.example/x` is routed by the target's authority, whatever Host says, and the
server gets `GET /x` with `Host: b.example`; a scheme other than http(s) or userinfo in the
target is answered 400. The servers are testservers on 127.0.175.1 (pool a: 6901, pool b:
6902) whose /headers echoes the request line and headers as they arrived."""

from __future__ import annotations

import unittest

import jtest
from balancer import BalancerTestCase

HOST = "127.0.175.1"
A, B = "6901", "6902"


class AbsoluteTargetTest(BalancerTestCase):
    def setUp(self):
        self.a = self.start_testserver(port=int(A), host=HOST)
        self.b = self.start_testserver(port=int(B), host=HOST, quiet=False)
        self.log = self.access_log_path()
        self.lb = self.start_balancer("absolute", access_log=self.log)

    def exchange(self, *requests: bytes) -> list:
        """Sends the requests on one connection; their responses, in order."""
        sock = jtest.raw_connection(self.lb.port, host=HOST)
        self.addCleanup(sock.close)
        sock.sendall(b"".join(requests))
        reader = sock.makefile("rb")
        self.addCleanup(reader.close)
        return [jtest.read_response(reader) for _ in requests]

    def echoed(self, response: jtest.RawResponse) -> list:
        """The request line and header lines the server saw (/headers)."""
        self.assertEqual(response.status, 200, response)
        return response.body.decode().splitlines()

    def test_routed_by_the_authority_and_sent_in_origin_form(self):
        absolute, origin = self.exchange(
            b"GET http://b.example/headers HTTP/1.1\r\nHost: a.example\r\nAccept: */*\r\n\r\n",
            b"GET /headers HTTP/1.1\r\nHost: a.example\r\n\r\n")  # the same connection, origin-form
        self.assertEqual(absolute.header("X-Server"), B)
        seen = self.echoed(absolute)
        self.assertEqual(seen[0], "GET /headers HTTP/1.1")
        hosts = [line for line in seen if line.lower().startswith("host:")]
        self.assertEqual(hosts, ["Host: b.example"], seen)  # the disagreeing Host is replaced, not added to
        self.assertIn("X-Forwarded-Host: b.example", seen)
        self.assertNotIn("a.example", "\n".join(seen))
        self.assertIn("Accept: */*", seen)
        # The next request on the connection is routed and sent by its own Host.
        self.assertEqual(origin.header("X-Server"), A)
        seen = self.echoed(origin)
        self.assertEqual((seen[0], [h for h in seen if h.startswith("Host:")]), ("GET /headers HTTP/1.1", ["Host: a.example"]))

    def test_port_query_and_case_of_the_authority(self):
        (r,) = self.exchange(b"GET HTTP://A.Example:8080/headers?x=1 HTTP/1.1\r\nHost: b.example\r\n\r\n")
        self.assertEqual(r.header("X-Server"), A)
        seen = self.echoed(r)
        self.assertEqual(seen[0], "GET /headers?x=1 HTTP/1.1")
        self.assertEqual([h for h in seen if h.startswith("Host:")], ["Host: A.Example:8080"])

    def test_an_empty_path_is_slash(self):
        (r,) = self.exchange(b"GET http://b.example HTTP/1.0\r\n\r\n")  # 1.0: no Host needed
        self.assertEqual(r.header("X-Server"), B)  # the server's own 404: it has no files
        self.assertEqual(r.status, 404)
        self.b.wait_for_line(r"^GET / 404$")

    def test_other_schemes_and_userinfo_are_refused(self):
        for target in (b"ftp://b.example/headers", b"ws://b.example/headers", b"http://user@b.example/headers",
                       b"http://user:secret@b.example/headers", b"http:///headers"):
            with self.subTest(target=target):
                (r,) = self.exchange(b"GET " + target + b" HTTP/1.1\r\nHost: b.example\r\n\r\n")
                self.assertEqual(r.status, 400, r)
                self.assertIsNone(r.header("X-Server"))
                self.assertEqual(r.header("Connection"), "close")

    def test_the_access_log_shows_the_request_as_received(self):
        self.exchange(b"GET http://b.example/headers?k=v HTTP/1.1\r\nHost: a.example\r\n\r\n")
        (line,) = jtest.access_log_lines(self.log, 1, pattern="headers")
        self.assertIn('"GET http://b.example/headers?k=v HTTP/1.1" 200 ', line)


if __name__ == "__main__":
    unittest.main()

"""Timeouts measure the party they name: timeout.upstream is the server's silence while the
balancer waits for it (not the client's upload, not time the balancer paused the server for
backpressure), timeout.client_idle the client's (a body that stops coming, a response that is
not read)."""

from __future__ import annotations

import hashlib
import re
import socket
import time
import unittest

import jtest
from balancer import BalancerTestCase

HOST = "127.0.102.1"
UPSTREAM_S = 2.0  # timeout.upstream in tests/routes/parties.def
FAST_PHASE_S = 60  # test_slow_reader_gets_every_byte: 50 MB once the client reads at full speed


class TimeoutPartiesTest(BalancerTestCase):
    def setUp(self):
        self.start_backends(HOST, (6901,))

    def assert_logged(self, path: str, pattern: str) -> None:
        lines = jtest.access_log_lines(path, pattern=pattern)
        self.assertTrue(any(re.search(pattern, line) for line in lines),
                        f"no access log line matches {pattern!r}: {lines}")

    def test_upload_slower_than_the_upstream_timeout_completes(self):
        lb = self.start_balancer("parties")
        # 5 s of upload, a piece every 100 ms: the server is never the one keeping us waiting.
        pieces, size = 50, 4096
        body = jtest.pattern_bytes(pieces * size)
        sock = jtest.raw_connection(lb.port, timeout=30)
        self.addCleanup(sock.close)
        sock.sendall(f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        started = time.monotonic()
        for i in range(pieces):
            sock.sendall(body[i * size:(i + 1) * size])
            time.sleep(0.1)
        self.assertGreater(time.monotonic() - started, 2 * UPSTREAM_S)
        resp = jtest.read_response(sock.makefile("rb"))
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.body, body)

    def test_slow_reader_gets_every_byte(self):
        lb = self.start_balancer("parties")
        n = 50_000_000
        sock = socket.socket()
        self.addCleanup(sock.close)
        # A small receive window, so the balancer is held back at once. Set before connect:
        # shrunk after it, the buffer no longer holds the 64 KB window advertised at the
        # handshake, the balancer's kernel keeps a 32 KB MSS (half the largest window it saw)
        # that later windows do not fit, and sends only on zero-window probes whose interval
        # doubles: the full-speed phase stalls for seconds at a time (and hung CI once).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.settimeout(30)
        sock.connect((jtest.LOOPBACK, lb.port))
        sock.sendall(f"GET /bytes?n={n} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        digest = hashlib.sha256()
        got = 0
        data = b""
        # 1 KB per 50 ms for 6 s (three times timeout.upstream), then full speed.
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            chunk = sock.recv(1024)
            self.assertTrue(chunk, f"closed after {got} bytes while reading slowly")
            data += chunk
            got += len(chunk)
            time.sleep(0.05)
        head_end = data.index(b"\r\n\r\n") + 4
        self.assertIn(f"Content-Length: {n}".encode(), data[:head_end])
        digest.update(data[head_end:])
        body_bytes = len(data) - head_end
        # Full speed: about a second under ASan; the bound turns a stalled transfer into a
        # failure that says so instead of the runner's timeout.
        fast_started = time.monotonic()
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            digest.update(chunk)
            body_bytes += len(chunk)
            self.assertLess(time.monotonic() - fast_started, FAST_PHASE_S,
                            f"{body_bytes} of {n} bytes after {FAST_PHASE_S} s at full speed")
        self.assertEqual(body_bytes, n)
        self.assertEqual(digest.hexdigest(), jtest.pattern_sha256(n))
        self.assertNotIn("stalled", lb.output())
        self.assertNotIn("did not answer", lb.output())

    def test_client_that_stops_sending_its_body_gets_408_not_504(self):
        log = self.access_log_path()
        lb = self.start_balancer("parties", access_log=log, extra=["--timeout-client-idle", "1s"])
        sock = jtest.raw_connection(lb.port, timeout=10)
        self.addCleanup(sock.close)
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
        started = time.monotonic()
        resp = jtest.read_response(sock.makefile("rb"))
        waited = time.monotonic() - started
        self.assertEqual(resp.status, 408)
        self.assertGreaterEqual(waited, 0.9)
        self.assertLess(waited, UPSTREAM_S + 3)
        lb.wait_for_line(r"client 127\.0\.0\.1 stalled sending the body")
        # The access log names the party: a client timeout (c) during the request (R).
        self.assert_logged(log, r'"POST /echo HTTP/1\.1" 408 .* term=cR$')

    def test_silent_server_is_504_and_logged_as_a_server_timeout(self):
        log = self.access_log_path()
        lb = self.start_balancer("parties", access_log=log)
        started = time.monotonic()
        status, _, _ = jtest.http_request(lb.port, path="/hang", timeout=10)
        self.assertEqual(status, 504)
        self.assertGreaterEqual(time.monotonic() - started, UPSTREAM_S - 0.2)
        lb.wait_for_line(r"server 127\.0\.102\.1:6901 did not answer within 2000 ms")
        self.assert_logged(log, r'"GET /hang HTTP/1\.1" 504 .* term=sH$')
        self.assertEqual(jtest.http_request(lb.port, path="/ping")[0], 200)
        self.assert_logged(log, r'"GET /ping HTTP/1\.1" 200 .* term=--$')


if __name__ == "__main__":
    unittest.main()

"""Timeouts end to end: slow clients get 408, silent servers 504, idle keep-alive
connections are closed, and none of it disturbs other clients."""

from __future__ import annotations

import time
import unittest

import jtest
from balancer import BalancerTestCase

HOST = "127.0.74.1"


class TimeoutTest(BalancerTestCase):
    def setUp(self):
        self.start_backends(HOST, (6901, 6902))
        self.lb = self.start_balancer("timeouts")

    def test_half_a_header_gets_408_and_others_are_served_meanwhile(self):
        slow = jtest.raw_connection(self.lb.port)
        self.addCleanup(slow.close)
        slow.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        started = time.monotonic()
        # Another client is answered at once while the slow one waits.
        for _ in range(5):
            self.assertEqual(jtest.http_request(self.lb.port, path="/ping")[0], 200)
        resp = jtest.read_response(slow.makefile("rb"))
        waited = time.monotonic() - started
        self.assertEqual(resp.status, 408)
        self.assertGreaterEqual(waited, 0.9)
        self.assertLess(waited, 3.0)

    def test_server_that_never_answers_gives_504(self):
        started = time.monotonic()
        status, _, body = jtest.http_request(self.lb.port, path="/hang", timeout=10)
        waited = time.monotonic() - started
        self.assertEqual(status, 504)
        self.assertIn(b"504", body)
        self.assertGreaterEqual(waited, 0.9)
        self.assertLess(waited, 3.0)
        self.assertEqual(jtest.http_request(self.lb.port, path="/ping")[0], 200)

    def test_idle_keep_alive_connection_is_closed(self):
        sock = jtest.raw_connection(self.lb.port)
        self.addCleanup(sock.close)
        reader = sock.makefile("rb")
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(jtest.read_response(reader).status, 200)
        started = time.monotonic()
        sock.settimeout(6)
        self.assertEqual(sock.recv(1), b"")  # closed by the balancer
        waited = time.monotonic() - started
        self.assertGreaterEqual(waited, 1.8)
        self.assertLess(waited, 4.0)

    def test_slow_body_from_server_within_timeout_is_fine(self):
        # Each piece arrives well within timeout.upstream: the stalled-body timer must not fire.
        status, _, body = jtest.http_request(self.lb.port, path="/delay?ms=600", timeout=10)
        self.assertEqual(status, 200)


if __name__ == "__main__":
    unittest.main()


class CommandLineTimeoutTest(BalancerTestCase):
    def test_timeout_flags_override_routes_def(self):
        self.start_backends(HOST, (6901, 6902))
        lb = self.start_balancer("timeouts", extra=["--timeout-upstream", "2500ms"])  # timeouts.def says 1s
        started = time.monotonic()
        status, _, _ = jtest.http_request(lb.port, path="/hang", timeout=10)
        waited = time.monotonic() - started
        self.assertEqual(status, 504)
        self.assertLess(waited, 4.5)
        self.assertGreaterEqual(waited, 2.4)

    def test_bad_duration_is_refused(self):
        from balancer import balancer_path
        out = jtest.run_program([balancer_path("timeouts"), "--port", "0", "--timeout-connect", "10"], timeout=10)
        self.assertEqual(out.returncode, 105, out.stdout + out.stderr)  # CLI11's ValidationError status
        self.assertIn("not a duration", out.stderr + out.stdout)

    def test_second_signal_exits_at_once(self):
        self.start_backends(HOST, (6901, 6902))
        from balancer import start_balancer
        import signal
        import threading
        lb = start_balancer("timeouts", extra=["--timeout-upstream", "30s"])
        self.addCleanup(lb.stop, signal.SIGKILL)
        hung = threading.Thread(target=lambda: self._swallow(lambda: jtest.http_request(lb.port, path="/hang",
                                                                                          timeout=10)))
        hung.start()
        time.sleep(0.3)
        lb.send_signal(signal.SIGTERM)  # drains: waits for /hang (up to timeout.drain)
        time.sleep(0.3)
        self.assertIsNone(lb.poll())
        started = time.monotonic()
        lb.send_signal(signal.SIGTERM)
        self.assertEqual(lb.wait(timeout=5), 1)
        self.assertLess(time.monotonic() - started, 2)
        hung.join(timeout=10)

    @staticmethod
    def _swallow(fn):
        try:
            fn()
        except OSError:
            pass

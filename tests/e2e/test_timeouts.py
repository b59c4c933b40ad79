"""Timeouts end to end: slow clients get 408, silent servers 504, a stalled response body
is cut, idle keep-alive connections are closed, a drain that outlasts timeout.drain ends
the process, and none of it disturbs other clients."""

from __future__ import annotations

import signal
import socket
import time
import unittest

import jtest
from balancer import BalancerTestCase, start_balancer

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
        # The body pauses 600 ms three times (timeout.upstream is 1s): 1.8 s in all, but never 1 s
        # without a byte, so it is not cut (the stall timer counts from the last read).
        started = time.monotonic()
        status, _, body = jtest.http_request(
            self.lb.port, path="/bytes?n=100000&pause=30000&pause_ms=600&pauses=3", timeout=10)
        self.assertGreaterEqual(time.monotonic() - started, 1.79)
        self.assertEqual((status, body), (200, jtest.pattern_bytes(100000)))

    def test_body_that_stalls_is_cut_and_others_are_served_meanwhile(self):
        # The server sends the head and 30000 of its 100000 bytes, then nothing for 5 s; past
        # timeout.upstream (1s) without a byte, the balancer cuts the client connection.
        sock = jtest.raw_connection(self.lb.port, timeout=10)
        self.addCleanup(sock.close)
        started = time.monotonic()
        sock.sendall(b"GET /bytes?n=100000&pause=30000&pause_ms=5000 HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < 30000:
            chunk = sock.recv(65536)
            self.assertTrue(chunk, f"closed after {len(data)} bytes")
            data += chunk
        # Other clients are served while that body stalls.
        for _ in range(5):
            self.assertEqual(jtest.http_request(self.lb.port, path="/ping")[0], 200)
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        cut = time.monotonic() - started
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertIn(b"Content-Length: 100000", head)
        self.assertEqual(body, jtest.pattern_bytes(30000))  # fewer bytes than announced, then the close
        self.assertGreaterEqual(cut, 0.9)
        self.assertLess(cut, 4.0)  # the cut, not the server's pause ending (5 s)
        self.lb.wait_for_line(r"server 127\.0\.74\.1:690[12] stalled mid-response", timeout=5)
        self.assertEqual(jtest.http_request(self.lb.port, path="/ping")[0], 200)


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
        backends = [self.start_testserver(port=p, host=HOST, quiet=False) for p in (6901, 6902)]
        from balancer import start_balancer
        import signal
        import threading
        lb = start_balancer("timeouts", extra=["--timeout-upstream", "30s"])
        self.addCleanup(lb.stop, signal.SIGKILL)
        hung = threading.Thread(target=lambda: self._swallow(lambda: jtest.http_request(lb.port, path="/hang",
                                                                                          timeout=10)))
        hung.start()
        deadline = time.monotonic() + 10
        while not any("GET /hang hang" in line for b in backends for line in list(b.lines)):
            self.assertLess(time.monotonic(), deadline, "/hang never reached a server")
            time.sleep(0.02)
        lb.send_signal(signal.SIGTERM)  # drains: waits for /hang (up to timeout.drain)
        lb.wait_for_line(r"draining")
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


class DrainFirstRequestTest(BalancerTestCase):
    def test_a_connection_accepted_before_the_drain_gets_its_first_request_answered(self):
        """A client that connected just before SIGTERM and sends its request just after gets
        an answer (Connection: close), not a reset: a fresh connection's failure is one a
        client does not retry. One that sends nothing is closed within the drain's grace of
        a second (src/http1/connection.cpp), not held for timeout.client_header (30 s here)."""
        for p in (6901, 6902):
            self.start_testserver(port=p, host=HOST)
        lb = start_balancer("timeouts", extra=["--timeout-client-header", "30s"])
        self.addCleanup(lb.stop, signal.SIGKILL)
        early = jtest.raw_connection(lb.port, timeout=10)
        self.addCleanup(early.close)
        silent = jtest.raw_connection(lb.port, timeout=10)
        self.addCleanup(silent.close)
        # Answered on a third connection: the one worker accepted the two before it.
        self.assertEqual(jtest.http_request(lb.port, path="/ping")[0], 200)
        started = time.monotonic()
        lb.send_signal(signal.SIGTERM)
        self.assertTrue(jtest.wait_refused(lb.port), "the worker did not stop accepting")  # it drains
        early.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        r = jtest.read_response(early.makefile("rb"))
        self.assertEqual((r.status, r.body), (200, b"pong\n"))
        self.assertEqual((r.header("Connection") or "").lower(), "close")
        self.assertEqual(early.recv(1), b"")  # and then it closes
        self.assertEqual(silent.recv(1), b"")  # closed as idle once the grace is over
        self.assertLess(time.monotonic() - started, 5.0)
        self.assertEqual(lb.wait(timeout=10), 0, lb.output())
        self.assertLess(time.monotonic() - started, 5.0, "the drain waited for the silent client's header timeout")


class DrainTimeoutTest(BalancerTestCase):
    def test_drain_timeout_exits_1_and_drops_what_is_in_flight(self):
        backends = [self.start_testserver(port=p, host=HOST, quiet=False) for p in (6901, 6902)]
        # timeout.upstream far beyond the drain: only the drain timeout can end /hang.
        lb = start_balancer("timeouts", extra=["--timeout-upstream", "30s", "--timeout-drain", "1s"])
        self.addCleanup(lb.stop, signal.SIGKILL)  # it exits 1 by design: no clean-exit check
        sock = jtest.raw_connection(lb.port, timeout=10)
        self.addCleanup(sock.close)
        sock.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + 10
        while not any("GET /hang hang" in line for b in backends for line in list(b.lines)):
            self.assertLess(time.monotonic(), deadline, "/hang never reached a server")
            time.sleep(0.01)
        started = time.monotonic()
        lb.send_signal(signal.SIGTERM)
        code = lb.wait(timeout=10)
        took = time.monotonic() - started
        # src/runtime: the drain timer logs and _Exit(1)s with requests still in flight.
        self.assertEqual(code, 1, lb.output())
        self.assertGreaterEqual(took, 0.9)
        self.assertLess(took, 5.0)
        lb.wait_for_line(r"drain timeout: exiting with requests still in flight", timeout=5)
        # The client got no answer: its connection just closed.
        try:
            self.assertEqual(sock.recv(65536), b"")
        except ConnectionResetError:
            pass


if __name__ == "__main__":
    unittest.main()

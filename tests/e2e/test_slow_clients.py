"""Slow and numerous clients (issue #7), bounded and on loopback only: the balancer built
from tests/routes/slowclients.def (1 worker, timeout.client_header 3s) in front of testservers
on 127.0.83.1:6901-6903. While the hostile clients run, a normal client must keep getting
answers, each within 2 s (tens of ms in practice): well under the 3 s a client would wait
if the hostile clients held the balancer up until timeout.client_header cut them.

  * slowloris: many connections sending one header byte every 0.5 s -> 408 and closed at
    timeout.client_header, and meanwhile nobody else waits;
  * slow body: a 1 MB Content-Length body sent a few bytes a second;
  * slow read: /bytes?n=50000000 read at 1 KB/s, with the balancer's memory bounded
    (backpressure), while others are served;
  * 10,000 concurrent keep-alive clients, two requests each: all answered; the balancer's
    RSS is printed. The test raises the descriptor limits (soft and hard; the suite runs
    as root) before it starts the balancer; it skips only if that is refused.
"""

from __future__ import annotations

import resource
import selectors
import socket
import sys
import threading
import time
import unittest

import jtest
from balancer import BalancerTestCase

HOST = "127.0.83.1"
PORTS = (6901, 6902, 6903)
PING = b"GET /ping HTTP/1.1\r\nHost: h\r\n\r\n"
MANY = 10000              # concurrent clients in test_10000_...
DESCRIPTORS = MANY + 1000  # for this process, and for the balancer (it raises its soft limit to the hard one)


def raise_descriptor_limit(need: int) -> str:
    """Raises this process's RLIMIT_NOFILE (soft and, as root, hard) to at least `need`, so
    the balancers started afterwards inherit it. Returns "" or why it could not."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need and hard >= need:
        return ""
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), max(hard, need)))
    except (ValueError, OSError) as error:
        return f"cannot raise the descriptor limit from {soft}/{hard} to {need}: {error}"
    return ""


class Prober(threading.Thread):
    """A normal client: GET /ping on a fresh connection every `interval` s; records the
    slowest answer (seconds) and any failure."""

    def __init__(self, port: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.port, self.interval = port, interval
        self.times: list[float] = []
        self.failures: list[str] = []
        self.stop_event = threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            t0 = time.monotonic()
            try:
                status, _, body = jtest.http_request(self.port, path="/ping", timeout=5)
                if status != 200 or body != b"pong\n":
                    self.failures.append(f"{status} {body[:50]!r}")
            except OSError as error:
                self.failures.append(repr(error))
            self.times.append(time.monotonic() - t0)
            self.stop_event.wait(self.interval)

    def finish(self):
        self.stop_event.set()
        self.join(10)
        return max(self.times) if self.times else None


class SlowClientsTest(BalancerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        limits = resource.getrlimit(resource.RLIMIT_NOFILE)
        cls.addClassCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, limits)
        cls.no_descriptors = raise_descriptor_limit(DESCRIPTORS)
        cls.backends = [cls.start_class_testserver(port=p, host=HOST) for p in PORTS]

    def setUp(self):
        self.lb = self.start_balancer("slowclients")
        self.prober = Prober(self.lb.port)

    def assert_prober_fine(self, label: str):
        slowest = self.prober.finish()
        self.assertFalse(self.prober.failures, f"{label}: normal client failed: {self.prober.failures[:5]}")
        self.assertGreater(len(self.prober.times), 5, label)
        # Below the 3 s header timeout: a normal client never waits for the hostile ones.
        self.assertLess(slowest, 2.0, f"{label}: a normal request took {slowest:.2f}s")
        print(f"\n  {label}: {len(self.prober.times)} normal requests, slowest {slowest * 1000:.0f} ms,"
              f" balancer RSS {jtest.rss_kb(self.lb.pid)} kB", file=sys.stderr)

    # ---- slowloris

    def test_slowloris_is_cut_at_the_header_timeout_and_others_are_served(self):
        n, timeout_s = 300, 3.0  # slowclients.def: timeout.client_header 3s
        socks, connected = [], []  # connected[k]: monotonic time when socket k began to connect
        sel = selectors.DefaultSelector()
        self.addCleanup(sel.close)
        for k in range(n):
            connected.append(time.monotonic())
            s = jtest.raw_connection(self.lb.port, timeout=5)
            self.addCleanup(s.close)
            s.sendall(b"GET /ping HTTP/1.1\r\nHost: h\r\n")
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, k)
            socks.append(s)
        self.prober.start()
        answers: dict[int, bytes] = {}
        closed: dict[int, float] = {}  # seconds from socket k's own connect to its close
        header = b"X-Slow: " + b"a" * 1000
        i = 0
        next_byte = time.monotonic()
        # One header byte every 0.5 s on every open connection, for up to 10 s after the
        # last connect (the limit is 3 s); closes are seen as they happen (select).
        deadline = time.monotonic() + 10
        while len(closed) < n and time.monotonic() < deadline:
            if time.monotonic() >= next_byte:
                for k, s in enumerate(socks):
                    if k not in closed:
                        try:
                            s.send(header[i:i + 1])
                        except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                            pass  # a close is recorded by the reader below
                i += 1
                next_byte += 0.5
            for key, _ in sel.select(timeout=max(0.0, min(next_byte, deadline) - time.monotonic())):
                k = key.data
                try:
                    data = socks[k].recv(4096)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    data = b""
                if data:
                    answers[k] = answers.get(k, b"") + data
                else:
                    closed[k] = time.monotonic() - connected[k]
                    sel.unregister(socks[k])
        self.assert_prober_fine("slowloris")
        self.assertEqual(len(closed), n, f"{n - len(closed)} slowloris connections still open after 10 s")
        # Lower bound: the timer starts at accept, after the connect began (0.1 s for the
        # timer wheel's granularity). Upper bound: generous, for a loaded machine.
        self.assertGreater(min(closed.values()), timeout_s - 0.1, "cut before timeout.client_header (3 s)")
        self.assertLess(max(closed.values()), timeout_s + 3.0, "cut well after timeout.client_header (3 s)")
        with_408 = sum(1 for a in answers.values() if a.startswith(b"HTTP/1.1 408"))
        self.assertEqual(with_408, n, "every slowloris connection gets a 408 before the close")
        print(f"  slowloris: closed {min(closed.values()):.2f} to {max(closed.values()):.2f} s after each"
              f" connection's connect", file=sys.stderr)

    # ---- slow body

    def test_slow_body_does_not_hold_up_others(self):
        s = jtest.raw_connection(self.lb.port, timeout=5)
        self.addCleanup(s.close)
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n")
        self.prober.start()
        sent = 0
        start = time.monotonic()
        while time.monotonic() - start < 4:
            s.sendall(b"abcd")  # a few bytes a second
            sent += 4
            time.sleep(0.5)
        self.assert_prober_fine("slow body")
        # The slow request is still going: nothing was answered yet.
        s.setblocking(False)
        with self.assertRaises(BlockingIOError):
            s.recv(1)
        # And the balancer still answers on it once the body is complete.
        s.setblocking(True)
        s.sendall(b"z" * (1000000 - sent))
        reader = s.makefile("rb")
        response = jtest.read_response(reader)
        self.assertEqual(response.status, 200)
        self.assertEqual(len(response.body), 1000000)

    # ---- slow read

    def test_slow_reader_has_bounded_memory_and_others_are_served(self):
        s = socket.socket()
        # A small receive buffer so backpressure reaches the balancer quickly.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        s.settimeout(5)
        # Growth over the balancer's own RSS: the sanitizer build starts near 40 MB.
        baseline = jtest.rss_kb(self.lb.pid)
        s.connect((jtest.LOOPBACK, self.lb.port))
        self.addCleanup(s.close)
        s.sendall(b"GET /bytes?n=50000000 HTTP/1.1\r\nHost: h\r\n\r\n")
        self.prober.start()
        got = 0
        start = time.monotonic()
        peak = 0
        while time.monotonic() - start < 5:
            got += len(s.recv(1024))  # 1 KB/s
            peak = max(peak, jtest.rss_kb(self.lb.pid))
            time.sleep(1.0)
        self.assert_prober_fine("slow read")
        print(f"  slow read: read {got} bytes of 50000000, balancer RSS peak {peak} kB", file=sys.stderr)
        self.assertLess(peak - baseline, 32 * 1024, "the balancer buffers the slow reader's response")

    # ---- many clients

    def test_10000_concurrent_keep_alive_clients_are_all_answered(self):
        n, batch, rounds = MANY, 500, 2
        if self.no_descriptors:  # setUpClass raised the limits before any balancer started
            self.skipTest(self.no_descriptors)
        # Opening 10,000 connections one by one takes longer than timeout.client_header (3 s)
        # on a loaded machine or under ASan, and an idle new connection is cut at that
        # timeout: this test's own balancer waits for a first request (and between
        # requests) long enough.
        self.lb = self.start_balancer("slowclients", extra=["--timeout-client-header", "120s",
                                                            "--timeout-client-idle", "120s"])
        sel = selectors.DefaultSelector()
        self.addCleanup(sel.close)
        socks = []
        self.addCleanup(lambda: [s.close() for s in socks])
        before = jtest.rss_kb(self.lb.pid)
        connecting = time.monotonic()
        for _ in range(n):
            s = socket.create_connection((jtest.LOOPBACK, self.lb.port), timeout=10)
            s.setblocking(False)
            socks.append(s)
        peak = jtest.rss_kb(self.lb.pid)
        answered = 0
        started = time.monotonic()
        for round_no in range(rounds):
            # Requests go out in batches (bounded in flight), while every connection stays open.
            for first in range(0, n, batch):
                pending = {}
                for s in socks[first:first + batch]:
                    s.sendall(PING)
                    pending[s] = b""
                    sel.register(s, selectors.EVENT_READ)
                deadline = time.monotonic() + 30
                while pending and time.monotonic() < deadline:
                    for key, _ in sel.select(timeout=1):
                        s = key.fileobj
                        data = s.recv(4096)
                        if not data:
                            sel.unregister(s)
                            pending.pop(s)
                            continue
                        pending[s] += data
                        buf = pending[s]
                        if b"\r\n\r\n" in buf and buf.endswith(b"pong\n"):
                            self.assertTrue(buf.startswith(b"HTTP/1.1 200"), buf[:100])
                            self.assertNotIn(b"Connection: close", buf)
                            sel.unregister(s)
                            pending.pop(s)
                            answered += 1
                self.assertFalse(pending, f"round {round_no}: {len(pending)} clients not answered in 30 s")
            peak = max(peak, jtest.rss_kb(self.lb.pid))
        self.assertEqual(answered, n * rounds)
        after = jtest.rss_kb(self.lb.pid)
        print(f"\n  {n} connections opened in {started - connecting:.1f} s, "
              f"{n} concurrent keep-alive clients x {rounds} requests in {time.monotonic() - started:.1f} s: "
              f"balancer RSS {before} kB before, {peak} kB peak, {after} kB after "
              f"({(after - before) * 1024 // n} bytes per connection)", file=sys.stderr)


if __name__ == "__main__":
    unittest.main()

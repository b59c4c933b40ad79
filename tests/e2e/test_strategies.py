"""Balancing strategies end to end (tests/routes/strategies.def): cookie stickiness and its
failover, consistent hashing that agrees across processes, least_time and least_conn."""

from __future__ import annotations

import collections
import http.client
import signal
import threading
import time
import unittest

import jtest
from balancer import BalancerTestCase

HOST = "127.0.78.1"


def get(port: int, host: str, headers: dict | None = None, path: str = "/ping", conn=None):
    c = conn or http.client.HTTPConnection(jtest.LOOPBACK, port, timeout=10)
    try:
        c.request("GET", path, headers={"Host": host, **(headers or {})})
        r = c.getresponse()
        r.read()
        return r.status, r.headers
    finally:
        if conn is None:
            c.close()


class StickyCookieTest(BalancerTestCase):
    def test_sticks_from_the_first_request_and_fails_over(self):
        servers = {}
        for port in (6901, 6902, 6903):
            proc = jtest.start_testserver(port=port, host=HOST)
            self.addCleanup(proc.stop, signal.SIGKILL)
            servers[str(port)] = proc
        lb = self.start_balancer("strategies")
        status, headers = get(lb.port, "sticky.test")
        self.assertEqual(status, 200)
        cookie = headers["Set-Cookie"]
        self.assertRegex(cookie, r"^jsid=[0-9a-f]{32}; Path=/; HttpOnly$")
        first = headers["X-Server"]
        jar = {"Cookie": cookie.split(";")[0]}
        seen = collections.Counter()
        for _ in range(50):
            status, headers = get(lb.port, "sticky.test", jar)
            self.assertEqual(status, 200)
            self.assertIsNone(headers.get("Set-Cookie"))  # only minted when missing
            seen[headers["X-Server"]] += 1
        self.assertEqual(seen, {first: 50})  # sticky from its very first request

        # Different clients spread over the servers.
        spread = collections.Counter(get(lb.port, "sticky.test")[1]["X-Server"] for _ in range(60))
        self.assertEqual(len(spread), 3, spread)

        # Its server dies: the client moves to one other server and stays there.
        servers[first].stop(signal.SIGKILL)
        moved = collections.Counter()
        for _ in range(20):
            status, headers = get(lb.port, "sticky.test", jar)
            self.assertEqual(status, 200)
            moved[headers["X-Server"]] += 1
        self.assertEqual(len(moved), 1, moved)
        self.assertNotIn(first, moved)

        # It recovers: consistent hashing brings the client back (documented behaviour).
        servers[first] = jtest.start_testserver(port=int(first), host=HOST)
        self.addCleanup(jtest.check_stopped_cleanly, servers[first])
        deadline = time.monotonic() + 40
        back = None
        while time.monotonic() < deadline:
            status, headers = get(lb.port, "sticky.test", jar)
            self.assertEqual(status, 200)  # served by another server meanwhile, never an error
            back = headers["X-Server"]
            if back == first:
                break
            time.sleep(0.5)
        self.assertEqual(back, first)


class HashAcrossProcessesTest(BalancerTestCase):
    def test_two_balancers_send_each_key_to_the_same_server(self):
        self.start_backends(HOST, (6901, 6902, 6903))
        a = self.start_balancer("strategies")
        b = self.start_balancer("strategies")
        counts = collections.Counter()
        for i in range(60):
            user = {"X-User": f"user-{i}"}
            sa = get(a.port, "user.test", user)[1]["X-Server"]
            sb = get(b.port, "user.test", user)[1]["X-Server"]
            self.assertEqual(sa, sb, f"user-{i}")
            self.assertEqual(get(a.port, "user.test", user)[1]["X-Server"], sa)  # and it is stable
            counts[sa] += 1
        self.assertEqual(len(counts), 3, counts)
        # A request without the key falls back to round-robin.
        spread = collections.Counter(get(a.port, "user.test")[1]["X-Server"] for _ in range(30))
        self.assertEqual(len(spread), 3, spread)


class LeastTimeTest(BalancerTestCase):
    def test_traffic_moves_away_from_a_slow_server(self):
        self.start_testserver(port=6911, host=HOST)
        self.start_testserver(port=6912, host=HOST)
        self.start_testserver(port=6913, host=HOST, extra_args=["--delay-ms", "50"])
        lb = self.start_balancer("strategies")
        conn = http.client.HTTPConnection(jtest.LOOPBACK, lb.port, timeout=10)
        self.addCleanup(conn.close)
        counts = collections.Counter()
        for _ in range(300):
            status, headers = get(lb.port, "fast.test", conn=conn)
            self.assertEqual(status, 200)
            counts[headers["X-Server"]] += 1
        self.assertLess(counts["6913"], 30, counts)  # under 10% for the slow one
        self.assertGreater(counts["6911"], 60, counts)  # both fast servers share the rest
        self.assertGreater(counts["6912"], 60, counts)


def established_to(host: str, port: int) -> int:
    """TCP connections in state ESTABLISHED whose remote end is host:port (/proc/net/tcp)."""
    a, b, c, d = (int(x) for x in host.split("."))
    remote = f"{d:02X}{c:02X}{b:02X}{a:02X}:{port:04X}"
    with open("/proc/net/tcp") as f:
        next(f)
        return sum(1 for line in f if line.split()[2] == remote and line.split()[3] == "01")


class LeastConnTest(BalancerTestCase):
    SLOW_MS = 6000

    def test_new_requests_avoid_the_busy_server(self):
        # 6902 answers everything after SLOW_MS, 6901 at once: requests the balancer sends
        # to 6902 stay in flight, the ones it sends to 6901 are over in milliseconds.
        self.start_testserver(port=6901, host=HOST)
        self.start_testserver(port=6902, host=HOST, extra_args=["--delay-ms", str(self.SLOW_MS)])
        lb = self.start_balancer("strategies")

        # Phase 1: a few requests at once. Ties between idle servers are broken round-robin
        # per worker, so with 5 requests on 2 workers at least one lands on 6902 and stays.
        held: list = []
        lock = threading.Lock()

        def hold():
            try:
                server = get(lb.port, "conn.test")[1]["X-Server"]
            except OSError as error:
                server = repr(error)
            with lock:
                held.append((server, time.monotonic()))

        threads = [threading.Thread(target=hold, daemon=True) for _ in range(5)]
        for t in threads:
            t.start()
        self.addCleanup(lambda: [t.join(timeout=30) for t in threads])
        # Wait (polling) until each of the 5 is either answered (by 6901) or in flight on an
        # upstream connection to 6902.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with lock:
                answered = len(held)
            busy = established_to(HOST, 6902)
            if busy >= 1 and answered + busy >= len(threads):
                break
            time.sleep(0.01)
        else:
            self.fail(f"phase 1 did not settle: {held}, {established_to(HOST, 6902)} connections to 6902")
        with lock:
            self.assertTrue(all(server == "6901" for server, _ in held), held)

        # Phase 2: while 6902 is busy, every new request goes to the idle 6901.
        # (Under round_robin every other one would go to 6902 and wait SLOW_MS.)
        for i in range(20):
            started = time.monotonic()
            status, headers = get(lb.port, "conn.test")
            self.assertEqual((status, headers["X-Server"]), (200, "6901"), f"request {i}")
            self.assertLess(time.monotonic() - started, self.SLOW_MS / 1000 / 2)
        phase2_done = time.monotonic()
        # The premise held throughout: no request on 6902 was answered before phase 2 ended.
        with lock:
            self.assertFalse([s for s, t in held if s != "6901" and t <= phase2_done], held)
        for t in threads:
            t.join(timeout=30)
        self.assertEqual(len(held), 5)
        self.assertIn("6902", [s for s, _ in held])


if __name__ == "__main__":
    unittest.main()

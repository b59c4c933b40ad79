"""Failover under load: a server dies while clients keep sending, and nobody notices."""

from __future__ import annotations

import http.client
import signal
import threading
import time
import unittest

import jtest
from balancer import BalancerTestCase

HOST = "127.0.80.1"  # tests/routes/failover.def


class KillUnderLoadTest(BalancerTestCase):
    def test_killing_one_of_three_servers_loses_no_request(self):
        self.start_backends(HOST, (6901, 6903))
        victim = jtest.start_testserver(port=6902, host=HOST)  # killed below: no clean-exit check
        self.addCleanup(victim.stop, signal.SIGKILL)
        lb = self.start_balancer("failover", workers=2)
        clients, per_client = 20, 250  # 5,000 GETs over 20 kept-alive connections
        done = []
        failures = []
        progress = [0]
        lock = threading.Lock()
        deadline = time.monotonic() + 60

        def client():
            conn = http.client.HTTPConnection(jtest.LOOPBACK, lb.port, timeout=10)
            ok = 0
            try:
                for _ in range(per_client):
                    if time.monotonic() > deadline:
                        break
                    try:
                        conn.request("GET", "/ping")
                        resp = conn.getresponse()
                        body = resp.read()
                        if resp.status != 200 or body != b"pong\n":
                            with lock:
                                failures.append((resp.status, body[:80]))
                        else:
                            ok += 1
                            progress[0] += 1
                    except (OSError, http.client.HTTPException) as error:
                        with lock:
                            failures.append(repr(error))
                        conn.close()
                        conn = http.client.HTTPConnection(jtest.LOOPBACK, lb.port, timeout=10)
            finally:
                conn.close()
                with lock:
                    done.append(ok)

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        # Kill a server once a fifth of the load went through.
        while progress[0] < clients * per_client // 5 and time.monotonic() < deadline:
            time.sleep(0.005)
        killed_at = progress[0]
        victim.stop(signal.SIGKILL)
        for t in threads:
            t.join(timeout=90)
        self.assertEqual(failures, [])
        self.assertEqual(sum(done), clients * per_client)
        self.assertLess(killed_at, clients * per_client * 0.6, "the kill came too late to test anything")


if __name__ == "__main__":
    unittest.main()


class RetryBudgetTest(BalancerTestCase):
    def test_retries_stay_near_20_percent_when_two_of_three_servers_reset(self):
        host = "127.0.76.1"
        resetters = [jtest.start_testserver(port=p, host=host, quiet=False, extra_args=["--reset-all"])
                     for p in (6901, 6902)]
        for proc in resetters:
            self.addCleanup(proc.stop)
        self.start_testserver(port=6903, host=host)
        lb = self.start_balancer("budget")
        n = 600
        ok = failed = 0
        conn = http.client.HTTPConnection(jtest.LOOPBACK, lb.port, timeout=10)
        self.addCleanup(conn.close)
        for _ in range(n):
            conn.request("GET", "/ping")
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                ok += 1
            else:
                self.assertEqual(resp.status, 502)
                failed += 1
        time.sleep(0.2)
        reached_resetters = sum(sum(1 for line in p.lines if "RST" in line) for p in resetters)
        attempts = reached_resetters + ok  # every 200 came from the healthy server, once
        retries = attempts - n
        print(f"\nretry budget: {n} requests, {ok} ok, {failed} 502, {retries} retries", flush=True)
        # The budget: 20% of requests, plus the initial allowance of 10 retries.
        self.assertLessEqual(retries, 0.2 * n + 10, (ok, failed, reached_resetters))
        self.assertGreaterEqual(retries, 0.15 * n, (ok, failed, reached_resetters))
        self.assertGreater(failed, 0)  # without a budget nearly every request would have been retried to success

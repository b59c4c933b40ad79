"""Failover under load: a server dies while clients keep sending, and nobody notices."""

from __future__ import annotations

import http.client
import signal
import threading
import time
import unittest

import jtest
from balancer import BalancerTestCase

HOST = "127.0.71.1"  # tests/routes/basic.def


class KillUnderLoadTest(BalancerTestCase):
    def test_killing_one_of_three_servers_loses_no_request(self):
        self.start_backends(HOST, (6901, 6903))
        victim = jtest.start_testserver(port=6902, host=HOST)  # killed below: no clean-exit check
        self.addCleanup(victim.stop, signal.SIGKILL)
        lb = self.start_balancer("basic", workers=2)
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

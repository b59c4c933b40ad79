"""The features' rows in /metrics (issue #15: "as they land"): the cache's answers by
X-Cache, the compressors' bytes in and out, the tunnels open. The balancer built from
tests/routes/featmetrics.def (two workers: the rows are summed over them) in front of a
testserver on 127.0.135.1:6901. (Reloads and the live table: test_reload.py.)
"""

from __future__ import annotations

import socket
import unittest

import jtest
import promtext
from balancer import BalancerTestCase

HOST = "127.0.135.1"
L4 = 17135


class FeatureMetricsTest(BalancerTestCase):
    def setUp(self):
        self.start_backends(HOST, (6901,))
        self.lb = self.start_balancer("featmetrics", workers=2, extra=["--admin", f"{HOST}:0"])
        self.admin = int(self.lb.wait_for_line(r"admin listening on http://[\d.]+:(\d+)").group(1))

    def metrics(self) -> dict:
        return promtext.parse(jtest.http_request(self.admin, path="/metrics", host=HOST)[2].decode())

    def settled(self, read, expected):
        """`read(metrics)` once it equals `expected` (an exchange is counted as it ends,
        which may be just after its client read the answer), or its last value."""
        got = [None]

        def check():
            got[0] = read(self.metrics())
            return got[0] == expected
        jtest.wait_until(check, 5)
        return got[0]

    def get(self, path: str, host: str, headers: dict | None = None):
        return jtest.http_request(self.lb.port, path=path, host=HOST, headers={"Host": host, **(headers or {})})

    def test_cache_answers_by_x_cache(self):
        for _ in range(3):  # a miss, then two hits
            self.assertEqual(self.get("/bytes?n=100", "cache.test")[0], 200)
        self.assertEqual(self.get("/echo", "cache.test")[0], 200)  # not a stored answer's route path: a miss
        counts = lambda m: {r: promtext.value(m, "juggler_cache_requests_total", result=r)
                            for r in ("hit", "miss", "stale", "bypass")}
        expected = {"hit": 2, "miss": 2, "stale": 0, "bypass": 0}
        self.assertEqual(self.settled(counts, expected), expected)
        # A POST is not looked up: BYPASS.
        jtest.http_request(self.lb.port, method="POST", path="/echo", body=b"x", host=HOST,
                           headers={"Host": "cache.test"})
        self.assertEqual(self.settled(lambda m: promtext.value(m, "juggler_cache_requests_total", result="bypass"), 1), 1)

    def test_compress_bytes_in_and_out(self):
        status, headers, body = self.get("/bytes?n=50000&type=text/plain", "any.test", {"Accept-Encoding": "gzip"})
        self.assertEqual((status, headers["Content-Encoding"]), (200, "gzip"))
        self.assertEqual(self.settled(lambda m: promtext.value(m, "juggler_compress_bytes_total", direction="in"),
                                      50_000), 50_000)
        m = self.metrics()
        out = promtext.value(m, "juggler_compress_bytes_total", direction="out")
        self.assertTrue(0 < out < 50_000, out)
        self.assertLessEqual(out, len(body))  # the chunk framing is not counted

    def test_tunnels_open(self):
        self.assertEqual(promtext.value(self.metrics(), "juggler_tunnels_open"), 0)
        with socket.create_connection((HOST, L4), timeout=10):
            self.assertTrue(jtest.wait_until(
                lambda: promtext.value(self.metrics(), "juggler_tunnels_open") == 1, 5), "no tunnel counted")
        self.assertTrue(jtest.wait_until(
            lambda: promtext.value(self.metrics(), "juggler_tunnels_open") == 0, 5), "the closed tunnel still counted")


if __name__ == "__main__":
    unittest.main()

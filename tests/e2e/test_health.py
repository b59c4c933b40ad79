"""Active health checks and error pages end to end (tests/routes/health.def)."""

from __future__ import annotations

import collections
import os
import shutil
import signal
import tempfile
import unittest

import jtest
from balancer import BalancerTestCase, balancer_path

HOST = "127.0.79.1"
PAGE = b"<html><body><h1>We are down for a moment</h1></body></html>\n"
# health.def: interval 700 ms, timeout 500 ms (a check must be shorter than the interval),
# rise/fall 2. The slowest verdict: the next check starts within one interval, the second
# one an interval later and ends at its timeout: 0.7 + 0.7 + 0.5 = 1.9 s. These are upper
# bounds with 3 s of slack for a loaded machine and the ASan pass.
INTERVAL_S, CHECK_TIMEOUT_S, RISE_FALL = 0.7, 0.5, 2
DETECT_S = RISE_FALL * INTERVAL_S + CHECK_TIMEOUT_S + 3.0


class HealthTest(BalancerTestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        os.mkdir(os.path.join(self.dir, "pages"))
        with open(os.path.join(self.dir, "pages", "503.html"), "wb") as f:
            f.write(PAGE)

    def spread(self, port: int, n: int = 30) -> collections.Counter:
        counts = collections.Counter()
        for _ in range(n):
            status, headers, _ = jtest.http_request(port, path="/ping")
            self.assertEqual(status, 200)
            counts[headers["X-Server"]] += 1
        return counts

    def test_server_taken_down_and_brought_back(self):
        servers = {}
        for port in (6901, 6902, 6903):
            servers[port] = jtest.start_testserver(port=port, host=HOST)
            self.addCleanup(servers[port].stop, signal.SIGKILL)
        lb = self.start_balancer("health", cwd=self.dir)
        self.assertEqual(len(self.spread(lb.port)), 3)

        servers[6902].stop(signal.SIGKILL)
        lb.wait_for_line(r"server 127\.0\.79\.1:6902 in pool web is DOWN: connect refused", timeout=DETECT_S)
        self.assertEqual(set(self.spread(lb.port)), {"6901", "6903"})

        servers[6902] = self.start_testserver(port=6902, host=HOST)
        lb.wait_for_line(r"server 127\.0\.79\.1:6902 in pool web is UP again", timeout=DETECT_S)
        self.assertEqual(set(self.spread(lb.port)), {"6901", "6902", "6903"})

    def test_failing_status_takes_a_server_out(self):
        self.start_testserver(port=6901, host=HOST)
        self.start_testserver(port=6902, host=HOST)
        # Answers only after 5 s: every check times out (500 ms) well before.
        self.start_testserver(port=6903, host=HOST, extra_args=["--delay-ms", "5000"])
        lb = self.start_balancer("health", cwd=self.dir)
        lb.wait_for_line(r"server 127\.0\.79\.1:6903 in pool web is DOWN: timeout", timeout=DETECT_S)
        self.assertEqual(set(self.spread(lb.port)), {"6901", "6902"})

    def test_all_servers_down_is_503_with_the_custom_page(self):
        lb = self.start_balancer("health", cwd=self.dir)
        for port in (6901, 6902, 6903):
            lb.wait_for_line(rf"server 127\.0\.79\.1:{port} in pool web is DOWN", timeout=DETECT_S)
        status, headers, body = jtest.http_request(lb.port, path="/ping")
        self.assertEqual(status, 503)
        self.assertEqual(body, PAGE)
        self.assertEqual(headers["Content-Type"], "text/html; charset=utf-8")
        self.assertEqual(int(headers["Content-Length"]), len(PAGE))

    def test_missing_error_pages_folder_stops_start_up(self):
        empty = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, empty)
        out = jtest.run_program([balancer_path("health"), "--port", "0"], cwd=empty, timeout=10)
        self.assertEqual(out.returncode, 1)
        self.assertIn("set error_pages: cannot read pages", out.stderr)


if __name__ == "__main__":
    unittest.main()

"""Failover: a server dies under load and nobody notices; a server whose connect hangs is
skipped after timeout.connect; a kept-alive connection the server closed just as a request
came is replayed on a fresh one; retries stay within the budget."""

from __future__ import annotations

import http.client
import signal
import socket
import threading
import time
import unittest

import jtest
from balancer import BalancerTestCase

HOST = "127.0.80.1"  # tests/routes/failover.def
CONNECT_HOST = "127.0.92.1"  # tests/routes/connect_timeout.def
REPLAY_HOST = "127.0.91.1"  # tests/routes/replay.def


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


class ConnectTimeoutTest(BalancerTestCase):
    def black_hole(self, port: int) -> None:
        """A listener on CONNECT_HOST:port that never accepts, its accept queue full: the
        kernel drops further SYNs, so a connect to it hangs (no refusal, no reset)."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((CONNECT_HOST, port))
        listener.listen(0)
        filler = socket.create_connection((CONNECT_HOST, port), timeout=2)  # queued, never accepted
        self.addCleanup(filler.close)
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(probe.close)
        probe.settimeout(0.3)
        try:
            probe.connect((CONNECT_HOST, port))
        except socket.timeout:
            return
        except OSError as error:
            self.fail(f"a connect to the full listener failed at once ({error!r}) instead of hanging")
        self.fail("a connect to the full listener succeeded instead of hanging")

    def test_a_server_whose_connect_times_out_is_skipped(self):
        self.black_hole(6901)
        self.start_testserver(port=6902, host=CONNECT_HOST)
        log = self.access_log_path()
        # timeout.connect 500ms, round-robin over both
        lb = self.start_balancer("connect_timeout", access_log=log)
        took = []
        for _ in range(2):  # round-robin: one of the two goes to the black hole first
            started = time.monotonic()
            status, headers, body = jtest.http_request(lb.port, path="/ping", timeout=10)
            took.append(time.monotonic() - started)
            self.assertEqual((status, headers["X-Server"], body), (200, "6902", b"pong\n"))
        lb.wait_for_line(r"connect to 127\.0\.92\.1:6901 timed out", timeout=5)
        self.assertGreaterEqual(max(took), 0.45, took)  # it waited for timeout.connect...
        self.assertLess(max(took), 4.0, took)  # ...not for the kernel's SYN retries (a minute and more)
        # Both were answered: the access log says they ended normally (term=--), the failed
        # first attempt being history once the next server answered.
        lines = jtest.access_log_lines(log, 2)
        self.assertEqual(len(lines), 2, lines)
        for line in lines:
            self.assertRegex(line, r'"GET /ping HTTP/1\.1" 200 .* upstream=127\.0\.92\.1:6902 rt=\S+ term=--$')


class ReplayTest(BalancerTestCase):
    def test_kept_alive_connection_closed_under_a_request_is_replayed_on_a_fresh_one(self):
        # The server answers one request per connection, then closes when the next one comes,
        # without an answer: each reuse of the kept-alive connection meets that close. The
        # requests are POSTs, which only the stale-connection replay may send again.
        server = self.start_testserver(port=6901, host=REPLAY_HOST, quiet=False, extra_args=["--drop-after", "1"])
        lb = self.start_balancer("replay")
        conn = http.client.HTTPConnection(jtest.LOOPBACK, lb.port, timeout=10)
        self.addCleanup(conn.close)
        answered_on = []
        for i in range(4):
            body = b"post %d" % i
            conn.request("POST", "/echo", body=body)
            resp = conn.getresponse()
            self.assertEqual((resp.status, resp.read()), (200, body), f"request {i}")
            answered_on.append(resp.headers["X-Conn"])
        # Requests 2-4 each went out on the kept-alive connection, met the close, and were
        # answered on a fresh one.
        self.assertEqual(answered_on, ["1", "2", "3", "4"])
        deadline = time.monotonic() + 5
        while len(server.lines) < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(server.lines[1:], ["POST /echo 200", "POST /echo drop"] * 3 + ["POST /echo 200"])


if __name__ == "__main__":
    unittest.main()

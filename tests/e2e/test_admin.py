"""The admin listener end to end (tests/routes/admin.def): /metrics after known traffic,
health in /metrics and /stats.json, unknown paths, the admin listener while the traffic
listener is at its connection limit, and the /stats page in headless Chromium."""

from __future__ import annotations

import collections
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import tempfile
import threading
import time
import unittest

import chromium
import jtest
import promtext
from balancer import ROUTES_BIN, BalancerTestCase, balancer_path

HOST = "127.0.125.1"        # the balancer's listeners and pool web's servers
OTHER_HOST = "127.0.126.1"  # pool other's server (never started: its requests get 502)
ADMIN_READY = r"admin listening on http://[\d.]+:(\d+)"
# admin.def checks pool web every 300 ms (timeout 250 ms, fall 1): a verdict within
# 0.55 s; the bound leaves several seconds for a loaded machine and the ASan pass.
DETECT_S = 6.0


def exchange(port: int, request: bytes, host: str = HOST) -> bytes:
    """Sends `request` on a new connection and returns every byte until the balancer closes."""
    with jtest.raw_connection(port, host=host) as s:
        s.sendall(request)
        return jtest.recv_to_end(s)


def status_and_server(response: bytes):
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(head[0].split(" ")[1])
    server = next((line.split(":", 1)[1].strip() for line in head[1:] if line.lower().startswith("x-server:")), None)
    return status, server


def get(port: int, path: str, method: str = "GET"):
    """(status, headers, body) of one request to HOST:port."""
    return jtest.http_request(port, method=method, path=path, host=HOST)


class AdminTestCase(BalancerTestCase):
    def start_admin_balancer(self, workers: int = 2, **kwargs):
        lb = self.start_balancer("admin", workers=workers, extra=["--admin", f"{HOST}:0"], **kwargs)
        lb.admin_port = int(lb.wait_for_line(ADMIN_READY).group(1))
        return lb

    def scrape(self, lb) -> dict:
        status, headers, body = get(lb.admin_port, "/metrics")
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "text/plain; version=0.0.4; charset=utf-8")
        return promtext.parse(body.decode("utf-8"))

    def scrape_until(self, lb, done, timeout: float = 5.0) -> dict:
        """Scrapes until done(samples) (the exchange's record follows its last byte by a
        moment), then returns the samples; the caller asserts on them either way."""
        deadline = time.monotonic() + timeout
        while True:
            samples = self.scrape(lb)
            if done(samples) or time.monotonic() > deadline:
                return samples
            time.sleep(0.05)


class MetricsTest(AdminTestCase):
    def test_counters_after_known_traffic(self):
        self.start_backends(HOST, [6901, 6902])
        lb = self.start_admin_balancer()
        sent = received = 0
        by_server = collections.Counter()  # (X-Server, class)
        plan = [(b"/ping", 200)] * 7 + [(b"/status/404", 404)] * 2 + [(b"/status/503", 503)] * 3
        for path, expected in plan:
            request = b"GET " + path + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            response = exchange(lb.port, request)
            status, server = status_and_server(response)
            self.assertEqual(status, expected)
            by_server[(f"{HOST}:{server}", f"{expected // 100}xx")] += 1
            sent, received = sent + len(request), received + len(response)
        for request, expected in [(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 200)] * 2 + [
                (b"GET /other/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 502),
                (b"GARBAGE\r\n\r\n", 400)]:
            response = exchange(lb.port, request)
            self.assertEqual(status_and_server(response)[0], expected)
            sent, received = sent + len(request), received + len(response)

        requests = len(plan) + 4
        # The exchange is counted, then let go (the active gauge) a moment later: wait for both.
        m = self.scrape_until(lb, lambda s: promtext.total(s, "juggler_route_requests_total") >= requests
                              and promtext.value(s, "juggler_client_connections", state="active") == 0)
        route = lambda r, c: promtext.value(m, "juggler_route_requests_total", route=r, **{"class": c})
        self.assertEqual(promtext.total(m, "juggler_route_requests_total"), requests)
        self.assertEqual(route("1", "2xx"), 2)   # /healthz -> respond 200
        self.assertEqual(route("2", "5xx"), 1)   # /other/* -> other, nobody listens
        self.assertEqual((route("3", "2xx"), route("3", "4xx"), route("3", "5xx")), (7, 2, 3))
        self.assertEqual(route("none", "4xx"), 1)  # the malformed request
        pool = lambda p, c: promtext.value(m, "juggler_pool_requests_total", pool=p, **{"class": c})
        self.assertEqual([pool("web", c) for c in ("1xx", "2xx", "3xx", "4xx", "5xx")], [0, 7, 0, 2, 3])
        self.assertEqual(pool("other", "5xx"), 1)
        for port in (6901, 6902):
            for c in ("1xx", "2xx", "3xx", "4xx", "5xx"):
                self.assertEqual(promtext.value(m, "juggler_server_requests_total", server=f"{HOST}:{port}",
                                                **{"class": c}), by_server[(f"{HOST}:{port}", c)], (port, c))
        self.assertEqual(promtext.value(m, "juggler_server_requests_total", server=f"{OTHER_HOST}:6901",
                                        **{"class": "5xx"}), 1)
        self.assertEqual(promtext.value(m, "juggler_pool_request_duration_seconds_count", pool="web"), 12)
        self.assertEqual(promtext.value(m, "juggler_client_bytes_received_total"), sent)
        self.assertEqual(promtext.value(m, "juggler_client_bytes_sent_total"), received)
        self.assertEqual(promtext.value(m, "juggler_client_connections", state="active"), 0)
        self.assertEqual(promtext.value(m, "juggler_server_ejections_total", server=f"{OTHER_HOST}:6901"), 0)
        opened = promtext.total(m, "juggler_upstream_connections_opened_total", pool="web")
        reused = promtext.total(m, "juggler_upstream_connections_reused_total", pool="web")
        self.assertEqual(opened + reused, 12)  # every request to web went on a new or a kept-alive connection
        self.assertEqual(promtext.value(m, "juggler_workers"), 2)

    def test_format_parses_and_pages_answer(self):
        lb = self.start_admin_balancer(workers=1)
        for _ in range(3):  # durations in the histograms of pool other and its server (502: nobody listens)
            self.assertEqual(get(lb.port, "/other/x")[0], 502)
        status, headers, body = get(lb.admin_port, "/metrics")
        samples = promtext.parse(body.decode("utf-8"))  # raises on any deviation from the format
        self.assertGreater(len(samples), 100)
        status, headers, body = get(lb.admin_port, "/metrics", method="HEAD")
        self.assertEqual((status, body), (200, b""))
        self.assertGreater(int(headers["Content-Length"]), 1000)
        for path in ("/nope", "/metrics/", "/stats.jsonx", "/servers", "/metrics.txt"):
            self.assertEqual(get(lb.admin_port, path)[0], 404, path)
        self.assertEqual(get(lb.admin_port, "/metrics", method="POST")[0], 405)
        # The traffic listener does not answer admin paths: they go to pool web (down here).
        self.assertNotEqual(get(lb.port, "/metrics")[0], 200)

    def test_admin_flag(self):
        check = lambda *flags: jtest.run_program([balancer_path("admin"), "--check", *flags], timeout=10)
        self.assertIn("admin  127.0.125.1:19125  (/metrics, /stats)", check().stdout)  # set admin
        self.assertIn("admin  127.0.0.1:9999  (/metrics, /stats)", check("--admin", "9999").stdout)
        self.assertIn("admin  [::1]:9999", check("--admin", "[::1]:9999").stdout)
        self.assertNotIn("admin  ", check("--admin", "off").stdout)
        bad = check("--admin", "localhost:80")
        self.assertEqual(bad.returncode, 1)
        self.assertIn("--admin: 'localhost:80' is not ADDR:PORT", bad.stderr)

    def test_server_down_shows_down(self):
        self.start_testserver(port=6901, host=HOST)  # 6902 is never started
        lb = self.start_admin_balancer()
        lb.wait_for_line(rf"server {re.escape(HOST)}:6902 in pool web is DOWN", timeout=DETECT_S)
        m = self.scrape(lb)
        self.assertEqual(promtext.value(m, "juggler_server_up", server=f"{HOST}:6902"), 0)
        self.assertEqual(promtext.value(m, "juggler_server_up", server=f"{HOST}:6901"), 1)
        self.assertEqual(promtext.value(m, "juggler_server_last_check_success", server=f"{HOST}:6902"), 0)
        self.assertGreater(promtext.value(m, "juggler_server_last_check_timestamp_seconds", server=f"{HOST}:6902"),
                           time.time() - 60)
        stats = json.loads(get(lb.admin_port, "/stats.json")[2])
        web = {s["address"]: s for s in stats["pools"][0]["servers"]}
        self.assertEqual(web[f"{HOST}:6902"]["state"], "down")
        self.assertEqual(web[f"{HOST}:6902"]["last_check"]["result"], "connect refused")
        self.assertEqual(web[f"{HOST}:6901"]["state"], "up")


class SaturationTest(AdminTestCase):
    def test_admin_answers_while_traffic_is_at_its_limit(self):
        # One worker, limit.connections_per_worker 8: eight held connections fill it, and
        # four of them keep it busy with pipelined requests while the admin is asked.
        lb = self.start_admin_balancer(workers=1)
        held = [jtest.raw_connection(lb.port, host=HOST) for _ in range(8)]
        for s in held:
            self.addCleanup(s.close)
        # Each held connection has been accepted once a request on it is answered.
        for s in held:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            self.assertIn(b"200 OK", s.recv(4096))
        # Refused at accept with a 503 (nothing sent: unread bytes would turn the close into a reset).
        refused = exchange(lb.port, b"")
        self.assertTrue(refused.startswith(b"HTTP/1.1 503"), refused[:80])

        stop = threading.Event()
        batch = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n" * 200

        def flood(s: socket.socket) -> None:
            deadline = time.monotonic() + 20  # bounded even if the test fails early
            s.settimeout(5)
            try:
                while not stop.is_set() and time.monotonic() < deadline:
                    s.sendall(batch)
                    got = 0
                    while got < 200 * 38:  # each answer is 38 bytes
                        data = s.recv(65536)
                        if not data:
                            return
                        got += len(data)
            except OSError:
                return

        threads = [threading.Thread(target=flood, args=(s,), daemon=True) for s in held[:4]]
        for t in threads:
            t.start()
        try:
            for _ in range(5):
                started = time.monotonic()
                status, _, body = get(lb.admin_port, "/metrics")
                self.assertEqual(status, 200)
                self.assertLess(time.monotonic() - started, 2.0)
            m = promtext.parse(body.decode("utf-8"))
            self.assertGreaterEqual(promtext.value(m, "juggler_accept_refused_total"), 1)
            self.assertEqual(promtext.total(m, "juggler_client_connections"), 8)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=10)


CONTROL_HOST = "127.0.127.1"  # admin_control.def: its listeners and servers
TOKEN = "s3cret-token-for-the-test"


def control(port: int, path: str, token=TOKEN, method: str = "POST"):
    """(status, headers, body) of a control request to the admin listener on CONTROL_HOST."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return jtest.http_request(port, method=method, path=path, headers=headers, host=CONTROL_HOST)


class ControlTest(AdminTestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        with open(os.path.join(self.dir, "admin.token"), "w") as f:
            f.write(TOKEN + "\n")

    def start_control_balancer(self):
        lb = self.start_balancer("admin_control", workers=1, cwd=self.dir,
                                 extra=["--admin", f"{CONTROL_HOST}:0"])
        lb.admin_port = int(lb.wait_for_line(ADMIN_READY).group(1))
        return lb

    def spread(self, lb, n: int) -> collections.Counter:
        counts = collections.Counter()
        for _ in range(n):
            status, headers, _ = jtest.http_request(lb.port, path="/ping", host=CONTROL_HOST)
            self.assertEqual(status, 200)
            counts[headers["X-Server"]] += 1
        return counts

    def test_token_is_required(self):
        self.start_backends(CONTROL_HOST, [6901, 6902])
        lb = self.start_control_balancer()
        path = f"/servers/web/{CONTROL_HOST}:6902/drain"
        for token in (None, "wrong", TOKEN + "x", ""):
            status, headers, _ = control(lb.admin_port, path, token=token)
            self.assertEqual(status, 401, token)
            self.assertEqual(headers["WWW-Authenticate"], 'Bearer realm="juggler"')
        self.assertEqual(control(lb.admin_port, path, method="GET")[0], 405)
        self.assertEqual(set(self.spread(lb, 10)), {"6901", "6902"})  # nothing was drained
        self.assertEqual(control(lb.admin_port, f"/servers/web/{CONTROL_HOST}:6903/drain")[0], 404)
        self.assertEqual(control(lb.admin_port, f"/servers/nope/{CONTROL_HOST}:6902/drain")[0], 404)
        self.assertEqual(control(lb.admin_port, f"/servers/web/{CONTROL_HOST}:6902/stop")[0], 404)
        for w in ("0", "257", "x", ""):
            self.assertEqual(control(lb.admin_port, f"/servers/web/{CONTROL_HOST}:6902/weight?w={w}")[0], 400, w)

    def test_drain_ready_and_weight(self):
        self.start_backends(CONTROL_HOST, [6901, 6902])
        lb = self.start_control_balancer()
        # Two slow requests in flight, one on each server (one worker: round-robin alternates).
        results = []

        def slow() -> None:
            results.append(jtest.http_request(lb.port, path="/delay?ms=1500", host=CONTROL_HOST))

        threads = [threading.Thread(target=slow) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while promtext.total(self.scrape_control(lb), "juggler_upstream_connections", state="busy") < 2:
            self.assertLess(time.monotonic(), deadline, "the slow requests never got under way")
            time.sleep(0.05)

        status, _, body = control(lb.admin_port, f"/servers/web/{CONTROL_HOST}:6902/drain")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["state"], "drain")
        self.assertEqual(set(self.spread(lb, 10)), {"6901"})  # no new request for 6902
        for t in threads:
            t.join(timeout=20)
        # The ones in flight finished, on both servers.
        self.assertEqual(sorted((s, h["X-Server"]) for s, h, _ in results), [(200, "6901"), (200, "6902")])
        m = self.scrape_control(lb)
        self.assertEqual(promtext.value(m, "juggler_server_drained", server=f"{CONTROL_HOST}:6902"), 1)
        stats = json.loads(jtest.http_request(lb.admin_port, path="/stats.json", host=CONTROL_HOST)[2])
        self.assertEqual([s["state"] for s in stats["pools"][0]["servers"]], ["up", "drain"])

        self.assertEqual(control(lb.admin_port, f"/servers/web/{CONTROL_HOST}:6902/ready")[0], 200)
        self.assertEqual(self.spread(lb, 10), {"6901": 5, "6902": 5})
        self.assertEqual(control(lb.admin_port, f"/servers/web/{CONTROL_HOST}:6901/weight?w=3")[0], 200)
        self.assertEqual(self.spread(lb, 40), {"6901": 30, "6902": 10})
        m = self.scrape_control(lb)
        self.assertEqual(promtext.value(m, "juggler_server_weight", server=f"{CONTROL_HOST}:6901"), 3)
        self.assertEqual(promtext.value(m, "juggler_server_drained", server=f"{CONTROL_HOST}:6902"), 0)

    def scrape_control(self, lb) -> dict:
        return promtext.parse(jtest.http_request(lb.admin_port, path="/metrics", host=CONTROL_HOST)[2].decode())

    def test_missing_token_file_stops_start_up(self):
        os.unlink(os.path.join(self.dir, "admin.token"))
        out = jtest.run_program([balancer_path("admin_control"), "--port", "0"], cwd=self.dir, timeout=10)
        self.assertEqual(out.returncode, 1)
        self.assertIn("set admin_token_file: cannot read a token from admin.token", out.stderr)

    def test_control_is_off_without_a_token_file(self):
        lb = self.start_admin_balancer(workers=1)
        status, _, _ = jtest.http_request(lb.admin_port, method="POST", path=f"/servers/web/{HOST}:6901/drain",
                                          headers={"Authorization": "Bearer x"}, host=HOST)
        self.assertEqual(status, 403)


class TlsCountersTest(AdminTestCase):
    def test_handshakes_full_resumed_and_failed(self):
        tls_host = "127.0.128.1"
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d)
        jtest.make_cert(d, "admin-tls", "localhost", f"DNS:localhost,IP:{tls_host}")
        lb = self.start_balancer("admin_tls", workers=1, cwd=d,
                                 extra=["--https-port", "0", "--admin", f"{tls_host}:0"])
        https_port = int(lb.wait_for_line(r"listening on https://\S+:(\d+)").group(1))
        admin_port = int(lb.wait_for_line(ADMIN_READY).group(1))
        ctx = ssl.create_default_context(cafile=os.path.join(d, "admin-tls.crt"))
        session = None
        for expect_reused in (False, True, True):  # one full handshake, two resumed
            with socket.create_connection((tls_host, https_port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
                    tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    self.assertEqual(jtest.read_response(tls.makefile("rb")).status, 200)
                    self.assertEqual(tls.session_reused, expect_reused)
                    session = tls.session
        # Plain HTTP on the https port: the handshake fails and the connection closes.
        try:
            answer = exchange(https_port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", host=tls_host)
        except ConnectionResetError:
            answer = b""
        self.assertFalse(answer.startswith(b"HTTP/"))

        def scrape():
            body = jtest.http_request(admin_port, path="/metrics", host=tls_host)[2]
            return promtext.parse(body.decode())

        deadline = time.monotonic() + 5
        m = scrape()
        while promtext.value(m, "juggler_tls_failures_total") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
            m = scrape()
        self.assertEqual(promtext.value(m, "juggler_tls_handshakes_total", kind="full"), 1)
        self.assertEqual(promtext.value(m, "juggler_tls_handshakes_total", kind="resumed"), 2)
        self.assertEqual(promtext.value(m, "juggler_tls_failures_total"), 1)


# Painted pixels of a canvas in its line colours (blue, orange): a chart that drew a line.
PAINTED = """(() => {
  const c = document.getElementById(%r), d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 200 && (d[i + 2] > 150 && d[i] < 60 || d[i] > 150 && d[i + 2] < 60)) n++;
  return n;
})()"""
ROW = 'document.querySelector(\'tr[data-server="%s"]\')'


class StatsPageTest(AdminTestCase):
    def test_stats_page_in_chromium(self):
        self.start_testserver(port=6901, host=HOST)
        killed = jtest.start_testserver(port=6902, host=HOST)  # SIGKILLed below, so not checked at cleanup
        self.addCleanup(killed.stop, signal.SIGKILL)
        lb = self.start_admin_balancer()
        stop = threading.Event()

        def traffic() -> None:  # a few requests a second for the charts; bounded in time
            deadline = time.monotonic() + 60
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    exchange(lb.port, b"GET /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass
                time.sleep(0.02)

        loader = threading.Thread(target=traffic, daemon=True)
        loader.start()
        self.addCleanup(loader.join, 10)
        self.addCleanup(stop.set)
        with chromium.Browser() as browser:
            page = browser.open(f"http://{HOST}:{lb.admin_port}/stats")
            page.wait_for("window.juggler && window.juggler.updates >= 3")
            row = ROW % f"{HOST}:6902"
            self.assertEqual(page.evaluate(f"{row}.className"), "up")
            # Both charts draw lines that grow with each poll (a point needs two polls).
            page.wait_for(f"{PAINTED % 'rps'} > 100")
            page.wait_for(f"{PAINTED % 'lat'} > 100")

            killed.stop(signal.SIGKILL)
            lb.wait_for_line(rf"server {re.escape(HOST)}:6902 in pool web is DOWN", timeout=DETECT_S)
            known_down = page.evaluate("window.juggler.updates")
            page.wait_for(f"{row}.className === 'down'", timeout=10)
            self.assertLessEqual(page.evaluate("window.juggler.updates") - known_down, 2)
            self.assertEqual(page.evaluate(f"getComputedStyle({row}.children[0]).backgroundColor"),
                             "rgb(255, 215, 213)")
            self.assertEqual(page.evaluate(f"{row}.children[1].textContent"), "down")
            self.assertEqual(page.evaluate(f"{ROW % (HOST + ':6901')}.className"), "up")
            # The artifact: in the build folder, not committed.
            page.screenshot(os.path.join(os.path.dirname(ROUTES_BIN), "artifacts", "stats-page.png"))
            self.assertEqual(page.errors, [])
            self.assertEqual(page.evaluate("window.juggler.failures"), 0)


if __name__ == "__main__":
    unittest.main()

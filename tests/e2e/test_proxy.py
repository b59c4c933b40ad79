"""End-to-end tests of the HTTP/1.1 proxy core: the balancer built from
tests/routes/basic.def (and weights.def) in front of real testservers,
driven by real clients (http.client, raw sockets, curl)."""

from __future__ import annotations

import collections
import hashlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import unittest

import jtest
from balancer import BalancerTestCase, balancer_path

BASIC_HOST = "127.0.71.1"
BASIC_PORTS = (6901, 6902, 6903)
WEIGHTS_HOST = "127.0.72.1"
INTERIM_HOST = "127.0.90.1"  # tests/routes/interim.def


class ProxyTest(BalancerTestCase):
    """One balancer (1 worker) and three backends for the whole class."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.backends = [cls.start_class_testserver(port=p, host=BASIC_HOST) for p in BASIC_PORTS]
        from balancer import start_balancer
        cls.lb = start_balancer("basic")
        cls.addClassCleanup(jtest.check_stopped_cleanly, cls.lb)
        cls.port = cls.lb.port

    def conn(self, timeout=10.0) -> http.client.HTTPConnection:
        c = http.client.HTTPConnection(jtest.LOOPBACK, self.port, timeout=timeout)
        self.addCleanup(c.close)
        return c

    def get(self, path, **kw):
        return jtest.http_request(self.port, path=path, **kw)

    # ---- balancing

    def test_requests_spread_evenly_over_three_servers(self):
        counts = collections.Counter()
        for _ in range(30):
            status, headers, _ = self.get("/ping")
            self.assertEqual(status, 200)
            counts[headers["X-Server"]] += 1
        self.assertEqual(sorted(counts), [str(p) for p in BASIC_PORTS])
        self.assertEqual(set(counts.values()), {10}, counts)

    def test_keep_alive_client_reuses_one_upstream_connection_per_server(self):
        c = self.conn()
        seen = collections.defaultdict(set)
        for _ in range(30):
            c.request("GET", "/ping")
            r = c.getresponse()
            self.assertEqual(r.read(), b"pong\n")
            seen[r.headers["X-Server"]].add(r.headers["X-Conn"])
        self.assertEqual(len(seen), 3)
        # 10 requests per server, each over one kept-alive upstream connection.
        for server, conns in seen.items():
            self.assertEqual(len(conns), 1, f"server {server} saw connections {conns}")

    # ---- bodies

    def test_10mb_post_is_echoed_byte_exact(self):
        body = os.urandom(10 * 1024 * 1024)
        status, headers, got = self.get("/echo", method="POST", body=body, timeout=60)
        self.assertEqual(status, 200)
        self.assertEqual(len(got), len(body))
        self.assertEqual(hashlib.sha256(got).digest(), hashlib.sha256(body).digest())

    def test_200mb_download_byte_exact_with_bounded_memory(self):
        n = 200 * 1000 * 1000
        # Growth over the balancer's own RSS: the sanitizer build starts near 40 MB.
        baseline = jtest.rss_kb(self.lb.pid)
        c = self.conn(timeout=60)
        c.request("GET", f"/bytes?n={n}")
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        self.assertEqual(int(r.headers["Content-Length"]), n)
        digest = hashlib.sha256()
        got = 0
        peak = 0
        while True:
            chunk = r.read(1 << 20)
            if not chunk:
                break
            digest.update(chunk)
            got += len(chunk)
            if got % (16 << 20) < (1 << 20):
                peak = max(peak, jtest.rss_kb(self.lb.pid))
        self.assertEqual(got, n)
        self.assertEqual(digest.hexdigest(), jtest.pattern_sha256(n))
        self.assertLess(peak - baseline, 32 * 1024, f"balancer RSS peaked at {peak} kB (from {baseline} kB)")

    # Large response bodies move to 256 KB bulk buffers after their head: what
    # follows checks the bytes, the reuse of both connections afterwards, the
    # failure paths (server dies mid-body, client leaves mid-body), and that no
    # descriptor is left behind.

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.lb.pid}/fd"))

    def settle(self) -> int:
        """One large body and a request to each server, on new client
        connections: each server has one idle connection. Returns the
        balancer's descriptor count in that state."""
        self.assertEqual(self.get("/bytes?n=300000")[2], jtest.pattern_bytes(300000))
        for _ in BASIC_PORTS:
            self.assertEqual(self.get("/ping")[0], 200)
        time.sleep(0.1)
        return self.open_fds()

    def wait_fds(self, expected: int):
        deadline = time.monotonic() + 3
        while self.open_fds() != expected and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.open_fds(), expected)

    def test_large_bodies_keep_both_connections_and_no_descriptor(self):
        c = self.conn(timeout=30)
        c.request("GET", "/bytes?n=300000")  # warm-up: one connection per server exists
        self.assertEqual(c.getresponse().read(), jtest.pattern_bytes(300000))
        baseline = self.open_fds()
        seen = collections.defaultdict(set)
        for n in (300_000, 5_000_003, 1_000_000, 262_145, 2_000_000, 7_777_777):
            c.request("GET", f"/bytes?n={n}")
            r = c.getresponse()
            body = r.read()
            self.assertEqual(len(body), n)
            self.assertEqual(hashlib.sha256(body).hexdigest(), jtest.pattern_sha256(n))
            seen[r.headers["X-Server"]].add(r.headers["X-Conn"])
        self.assertEqual(len(seen), 3)
        for server, conns in seen.items():
            self.assertEqual(len(conns), 1, f"server {server} saw connections {conns}")
        c.request("GET", "/ping")
        self.assertEqual(c.getresponse().read(), b"pong\n")
        self.wait_fds(baseline)

    def test_server_dying_mid_body_closes_the_client_connection(self):
        baseline = self.settle()
        with socket.create_connection((jtest.LOOPBACK, self.port), timeout=10) as s:
            s.sendall(b"GET /bytes?n=3000000&cut=1200000 HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertIn(b"Content-Length: 3000000", head)
        self.assertEqual(body, jtest.pattern_bytes(1200000))  # what the server sent, then the close
        self.settle()
        self.wait_fds(baseline)

    def test_client_leaving_mid_body_frees_everything(self):
        baseline = self.settle()
        s = socket.create_connection((jtest.LOOPBACK, self.port), timeout=10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /bytes?n=100000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        got = 0
        while got < 2_000_000:
            got += len(s.recv(1 << 16))
        s.close()
        self.settle()
        self.wait_fds(baseline)

    def test_chunked_request_body_is_relayed(self):
        c = self.conn()
        parts = [b"a" * 1000, b"b" * 70000, b"c" * 5]
        c.request("POST", "/echo", body=iter(parts), encode_chunked=True,
                  headers={"Transfer-Encoding": "chunked"})
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.read(), b"".join(parts))

    def test_chunked_response_is_relayed(self):
        sock = jtest.raw_connection(self.port)
        self.addCleanup(sock.close)
        sock.sendall(b"GET /bytes?n=300000&chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = jtest.read_response(sock.makefile("rb"))
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.header("Transfer-Encoding"), "chunked")
        self.assertGreater(len(resp.chunk_sizes), 1)
        self.assertEqual(resp.body, jtest.pattern_bytes(300000))

    def test_head_has_no_body_and_the_connection_goes_on(self):
        sock = jtest.raw_connection(self.port)
        self.addCleanup(sock.close)
        reader = sock.makefile("rb")
        sock.sendall(b"HEAD /bytes?n=5000 HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = jtest.read_response(reader, head=True)
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.header("Content-Length"), "5000")
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = jtest.read_response(reader)
        self.assertEqual((resp.status, resp.body), (200, b"pong\n"))

    def test_expect_100_continue(self):
        out = subprocess.run(
            ["curl", "-s", "-H", "Expect: 100-continue", "--data-binary", "@-",
             f"http://127.0.0.1:{self.port}/echo"],
            input=b"x" * 200000, capture_output=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout, b"x" * 200000)

    def test_expect_100_continue_is_relayed_before_the_body(self):
        # curl (above) sends its body anyway after waiting a second for the 100, so it passes
        # whether or not the 100 arrives; this client sends no body byte before the 100.
        body = os.urandom(300000)
        sock = jtest.raw_connection(self.port, timeout=3)  # < timeout.upstream (5s): no 504 instead
        self.addCleanup(sock.close)
        reader = sock.makefile("rb")
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body))
        try:
            interim = jtest.read_response(reader)
        except socket.timeout:
            self.fail("no 100 Continue came back within 3 s of a head with Expect: 100-continue")
        self.assertEqual((interim.status, interim.reason), (100, "Continue"))
        # The server's own 100 (the testserver puts X-Server on it), relayed.
        self.assertIn(interim.header("X-Server"), [str(p) for p in BASIC_PORTS])
        sock.settimeout(10)
        sock.sendall(body)
        resp = jtest.read_response(reader)
        self.assertEqual((resp.status, resp.header("X-Server")), (200, interim.header("X-Server")))
        self.assertEqual(resp.body, body)
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(jtest.read_response(reader).body, b"pong\n")

    def test_status_without_body(self):
        for code in (204, 304):
            sock = jtest.raw_connection(self.port)
            self.addCleanup(sock.close)
            reader = sock.makefile("rb")
            sock.sendall(f"GET /status/{code} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            self.assertEqual(jtest.read_response(reader).status, code)
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(jtest.read_response(reader).body, b"pong\n")

    # ---- pipelining

    def test_ten_pipelined_requests_in_one_write(self):
        sock = jtest.raw_connection(self.port)
        self.addCleanup(sock.close)
        sock.sendall(b"".join(f"GET /headers?i={i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(10)))
        reader = sock.makefile("rb")
        for i in range(10):
            resp = jtest.read_response(reader)
            self.assertEqual(resp.status, 200)
            first = resp.body.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
            self.assertEqual(first, f"GET /headers?i={i} HTTP/1.1".encode())

    # ---- header editing

    def test_forwarded_headers_added_and_hop_by_hop_removed(self):
        status, _, body = self.get("/headers", headers={
            "X-Forwarded-For": "203.0.113.9",
            "X-Forwarded-Proto": "https",  # a client cannot claim this
            "Connection": "keep-alive, X-Secret",
            "X-Secret": "drop me",
            "Keep-Alive": "timeout=5",
            "Proxy-Connection": "keep-alive",
            "X-Kept": "yes",
            "Host": "shop.example:8443",
        })
        self.assertEqual(status, 200)
        lines = body.decode().splitlines()
        names = [line.split(":", 1)[0].lower() for line in lines[1:] if ":" in line]
        self.assertIn("X-Forwarded-For: 203.0.113.9, 127.0.0.1", lines)
        self.assertIn("X-Forwarded-Proto: http", lines)
        self.assertIn("X-Forwarded-Host: shop.example:8443", lines)
        self.assertIn("Via: 1.1 juggler", lines)
        self.assertIn("X-Kept: yes", lines)
        for gone in ("x-secret", "keep-alive", "proxy-connection", "connection"):
            self.assertNotIn(gone, names)
        self.assertEqual(names.count("x-forwarded-proto"), 1)

    # ---- local answers and errors

    def test_respond_route(self):
        status, headers, body = self.get("/healthz")
        self.assertEqual((status, body), (200, b""))
        self.assertIsNone(headers.get("X-Server"))

    def test_no_route_is_404_and_keeps_the_connection(self):
        c = self.conn()
        c.request("GET", "/nowhere")
        r = c.getresponse()
        self.assertEqual(r.status, 404)
        r.read()
        c.request("GET", "/ping")
        self.assertEqual(c.getresponse().read(), b"pong\n")

    def bad(self, raw: bytes) -> jtest.RawResponse:
        sock = jtest.raw_connection(self.port)
        self.addCleanup(sock.close)
        sock.sendall(raw)
        reader = sock.makefile("rb")
        resp = jtest.read_response(reader)
        # The connection is closed after a refused request.
        self.assertEqual(reader.read(), b"")
        return resp

    def test_malformed_request_is_400_and_closes(self):
        self.assertEqual(self.bad(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n").status, 400)
        self.assertEqual(self.bad(b"NOT HTTP AT ALL\r\n\r\n").status, 400)

    def test_ambiguous_framing_is_refused(self):
        self.assertEqual(self.bad(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n").status, 400)
        self.assertEqual(self.bad(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                  b"Content-Length: 4\r\n\r\nabcd").status, 400)
        self.assertEqual(self.bad(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n").status, 400)
        self.assertEqual(self.bad(b"GET / HTTP/1.1\r\n\r\n").status, 400)  # no Host

    def test_dot_segments_are_refused(self):
        # The route would be chosen for one path and the server would resolve another.
        for target in (b"/status/../echo", b"/ping/./x", b"/status/%2e%2e/echo", b"/x/.%2E"):
            with self.subTest(target=target):
                self.assertEqual(self.bad(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n").status, 400)
        # Dots inside names are fine.
        self.assertEqual(self.get("/status/200?x=a/../b")[0], 200)

    def test_head_too_large_is_431(self):
        self.assertEqual(self.bad(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n").status, 431)

    def test_body_too_large_is_413(self):
        self.assertEqual(self.bad(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n").status,
                         413)


class InterimTest(BalancerTestCase):
    """1xx responses before the final one are relayed, up to 8 of them; more, or a 101 the
    client never asked for (the balancer strips Upgrade), is a broken server: 502
    (docs/SECURITY.md, bug 5: kMaxInterim in src/session/session.cpp)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.backend = cls.start_class_testserver(port=6901, host=INTERIM_HOST)
        from balancer import start_balancer
        cls.lb = start_balancer("interim")
        cls.addClassCleanup(jtest.check_stopped_cleanly, cls.lb)

    def exchange(self, path: str):
        """GET `path` on a new connection: ([interim responses], final response, reader)."""
        sock = jtest.raw_connection(self.lb.port, timeout=10)
        self.addCleanup(sock.close)
        reader = sock.makefile("rb")
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
        interims = []
        while (resp := jtest.read_response(reader)).status < 200:
            interims.append(resp)
        return interims, resp, sock, reader

    def test_up_to_eight_interim_responses_are_relayed(self):
        for code, n in ((100, 1), (103, 3), (100, 8)):
            with self.subTest(code=code, n=n):
                interims, resp, sock, reader = self.exchange(f"/interim?n={n}&code={code}")
                self.assertEqual([r.status for r in interims], [code] * n)
                self.assertTrue(all(r.header("X-Server") == "6901" for r in interims))
                self.assertEqual((resp.status, resp.body), (200, b"interim %d\n" % n))
                sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
                self.assertEqual(jtest.read_response(reader).body, b"pong\n")

    def test_more_than_eight_interim_responses_are_a_502(self):
        for n in (9, 1000):
            with self.subTest(n=n):
                interims, resp, _, _ = self.exchange(f"/interim?n={n}")
                self.assertEqual(resp.status, 502)
                self.assertLessEqual(len(interims), 8)  # some may have been relayed before the 9th came
        self.assertEqual(jtest.http_request(self.lb.port, path="/ping")[0], 200)

    def test_101_nobody_asked_for_is_a_502(self):
        interims, resp, _, _ = self.exchange("/interim?n=1&code=101")
        self.assertEqual(interims, [])
        self.assertEqual(resp.status, 502)
        self.assertEqual(jtest.http_request(self.lb.port, path="/ping")[0], 200)


class FailoverTest(BalancerTestCase):
    def test_one_server_down_the_others_serve_every_request(self):
        self.start_testserver(port=6901, host=BASIC_HOST)
        self.start_testserver(port=6903, host=BASIC_HOST)
        lb = self.start_balancer("basic")
        counts = collections.Counter()
        for _ in range(30):
            status, headers, _ = jtest.http_request(lb.port, path="/ping")
            self.assertEqual(status, 200)
            counts[headers["X-Server"]] += 1
        self.assertEqual(set(counts), {"6901", "6903"})
        # Passive health: after max_fails (3) refused connects it is ejected, not tried again.
        lb.wait_for_line(r"server 127\.0\.71\.1:6902 in pool web ejected for 10000 ms")

    def test_all_servers_down_is_502(self):
        lb = self.start_balancer("basic")
        status, _, body = jtest.http_request(lb.port, path="/ping")
        self.assertEqual(status, 502)
        self.assertIn(b"502", body)

    def test_server_that_resets_mid_exchange_gives_502_not_a_hang(self):
        self.start_backends(BASIC_HOST, BASIC_PORTS)
        lb = self.start_balancer("basic")
        status, _, _ = jtest.http_request(lb.port, path="/reset", method="POST", body=b"x")
        self.assertEqual(status, 502)
        self.assertEqual(jtest.http_request(lb.port, path="/ping")[0], 200)


class WeightsTest(BalancerTestCase):
    def test_weights_and_backup(self):
        servers = self.start_backends(WEIGHTS_HOST, (6901, 6902, 6903, 6904))
        lb = self.start_balancer("weights")
        counts = collections.Counter()
        for _ in range(60):
            status, headers, _ = jtest.http_request(lb.port, path="/ping")
            self.assertEqual(status, 200)
            counts[headers["X-Server"]] += 1
        self.assertEqual(counts, {"6901": 10, "6902": 20, "6903": 30})
        # With every primary gone, the backup serves.
        for proc in servers[:3]:
            proc.stop()
        for _ in range(5):
            status, headers, _ = jtest.http_request(lb.port, path="/ping")
            self.assertEqual((status, headers["X-Server"]), (200, "6904"))


class LifecycleTest(BalancerTestCase):
    def test_access_log_records_each_request(self):
        self.start_backends(BASIC_HOST, BASIC_PORTS)
        path = self.access_log_path()
        lb = self.start_balancer("basic", access_log=path)
        jtest.http_request(lb.port, path="/ping", headers={"User-Agent": "e2e-agent", "Referer": "http://r/"})
        jtest.http_request(lb.port, path="/nowhere")
        lines = jtest.access_log_lines(path, 2)
        self.assertEqual(len(lines), 2, lines)
        self.assertRegex(lines[0], r'^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /ping HTTP/1\.1" '
                                   r'200 \d+ "http://r/" "e2e-agent" upstream=127\.0\.71\.1:690[123] rt=\d+\.\d{3} term=--$')
        self.assertRegex(lines[1], r'"GET /nowhere HTTP/1\.1" 404 \d+ .* upstream=- rt=\S+ term=--$')

    def test_sigterm_finishes_in_flight_requests_then_exits_0(self):
        backends = [self.start_testserver(port=p, host=BASIC_HOST, quiet=False) for p in BASIC_PORTS]
        lb = self.start_balancer("basic", workers=2)
        results = []

        def slow():
            try:
                results.append(jtest.http_request(lb.port, path="/delay?ms=500", timeout=15)[0])
            except OSError as error:
                results.append(repr(error))

        threads = [threading.Thread(target=slow) for _ in range(200)]
        for t in threads:
            t.start()
        # Signal once every request reached a server (the testserver logs "wait" as a /delay
        # arrives): each is then in flight, in the balancer, for up to 500 ms more.
        deadline = time.monotonic() + 30
        arrived = 0
        while time.monotonic() < deadline:
            arrived = sum(sum(1 for line in list(b.lines) if line.endswith(" wait")) for b in backends)
            if arrived >= 200:
                break
            time.sleep(0.005)
        self.assertEqual(arrived, 200)
        lb.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=20)
        self.assertEqual(results, [200] * 200)
        self.assertEqual(lb.wait(timeout=10), 0)
        with self.assertRaises(OSError):
            socket.create_connection((jtest.LOOPBACK, lb.port), timeout=1).close()

    def test_check_prints_the_compiled_table(self):
        out = jtest.run_program([balancer_path("basic"), "--check"], timeout=10)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("server 127.0.71.1:6902", out.stdout)
        self.assertIn("route * /echo -> web", out.stdout)
        # The effective settings: the command line's overrides applied.
        out = jtest.run_program([balancer_path("basic"), "--check", "--port", "8123", "--workers", "3",
                                 "--timeout-upstream", "7s", "--access-log", "off"], timeout=10)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertRegex(out.stdout, r"http  [0-9.]+:8123  \(--port\)")
        self.assertIn("workers 3", out.stdout)
        self.assertIn("upstream 7000ms", out.stdout)
        self.assertIn("access_log off", out.stdout)

    @unittest.skipUnless(shutil.which("setpriv") and os.geteuid() == 0, "needs root to drop privileges")
    def test_privileged_port_without_root_says_sudo_or_port(self):
        out = jtest.run_program(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                 balancer_path("basic"), "--port", "80"], timeout=10)
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        self.assertIn("cannot listen on 127.0.0.1:80", out.stderr)
        self.assertIn("sudo", out.stderr)
        self.assertIn("--port", out.stderr)


if __name__ == "__main__":
    unittest.main()

"""The access log end to end (tests/routes/logs.def): json lines of a proxied request, a
retry, a 502, a PROXY-protocol client, TLS and an L4 tunnel carry the right fields; the
combined format matches Apache's regex; SIGUSR1 after a rename moves the log to the new
file without losing a line; a log on a full disk (/dev/full) drops and counts lines in
/metrics without stalling requests; buffered lines reach the file well within a second."""

from __future__ import annotations

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

import jtest
import promtext
from balancer import BalancerTestCase

HOST = "127.0.155.1"     # the balancer's listeners and the testserver (7151)
CLIENT = "127.0.155.2"   # the tests' client address (bound), so the log's client is known
PROXY_PORT, HTTPS_PORT, TCP_PORT = 18156, 18455, 17155
ADMIN_READY = r"admin listening on http://[\d.]+:(\d+)"
# Apache's combined log format (as log analysers parse it); juggler appends fields after it.
APACHE_COMBINED = re.compile(
    r'^(\S+) (\S+) (\S+) \[([\w:/]+\s[+\-]\d{4})\] "(\S+) (\S+)\s*(\S*)" (\d{3}) (\d+|-) "([^"]*)" "([^"]*)"')
JSON_KEYS = {"time", "kind", "client", "method", "path", "protocol", "route", "pool", "server", "status", "bytes_in",
             "bytes_out", "duration_ms", "ttfb_ms", "retries", "term", "tls", "referer", "user_agent"}


def request_bytes(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: logs\r\nUser-Agent: t\r\n{extra}Connection: close\r\n\r\n".encode()


def exchange(port: int, data: bytes, host: str = HOST) -> bytes:
    """Sends `data` from CLIENT on a new connection; every byte until the balancer closes."""
    with socket.create_connection((host, port), timeout=10, source_address=(CLIENT, 0)) as s:
        s.sendall(data)
        return jtest.recv_to_end(s)


def read_lines(path: str) -> list:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return f.read().splitlines()


def json_lines(path: str, count: int, timeout: float = 5.0) -> list:
    """The log's lines, parsed, once it holds `count` (fewer when time ran out)."""
    return [json.loads(line) for line in jtest.access_log_lines(path, count=count, timeout=timeout)]


class LogTestCase(BalancerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp()
        cls.addClassCleanup(shutil.rmtree, cls.dir)
        jtest.make_cert(cls.dir, "logs", "localhost", f"DNS:localhost,IP:{HOST}")
        cls.start_class_testserver(host=HOST, port=7151)

    def start_logging(self, fmt: str = "json", path: str | None = None, workers: int = 1, admin: bool = False):
        path = path or self.access_log_path()
        extra = ["--access-log-format", fmt] + (["--admin", f"{HOST}:0"] if admin else [])
        lb = self.start_balancer("logs", workers=workers, access_log=path, extra=extra, cwd=self.dir)
        if admin:
            lb.admin_port = int(lb.wait_for_line(ADMIN_READY).group(1))
        lb.log = path
        return lb


class JsonLines(LogTestCase):
    def test_proxied_request(self):
        lb = self.start_logging()
        sent = request_bytes("/ping?x=1", "Referer: http://r/\r\n")
        answer = exchange(lb.port, sent)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:80])
        (line,) = json_lines(lb.log, 1)
        self.assertEqual(set(line), JSON_KEYS)
        self.assertRegex(line["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual((line["kind"], line["client"], line["method"], line["path"]),
                         ("http", CLIENT, "GET", "/ping?x=1"))
        self.assertEqual((line["route"], line["pool"], line["server"], line["status"]),
                         (5, "web", f"{HOST}:7151", 200))
        self.assertEqual((line["bytes_in"], line["bytes_out"]), (len(sent), len(answer)))
        self.assertEqual((line["retries"], line["term"], line["tls"]), (0, "--", None))
        self.assertEqual((line["referer"], line["user_agent"]), ("http://r/", "t"))
        self.assertGreater(line["ttfb_ms"], 0)
        self.assertGreaterEqual(line["duration_ms"], line["ttfb_ms"])

    def test_retry_and_502(self):
        lb = self.start_logging()
        # Pool retry's first server refuses: one of two requests meets it and goes on to 7151.
        for _ in range(2):
            exchange(lb.port, request_bytes("/retry/ping"))
        answer = exchange(lb.port, request_bytes("/broken/x"))
        self.assertTrue(answer.startswith(b"HTTP/1.1 502"), answer[:80])
        lines = json_lines(lb.log, 3)
        self.assertEqual(len(lines), 3, lines)
        retried = [line for line in lines[:2] if line["retries"] == 1]
        self.assertEqual(len(retried), 1, lines)
        self.assertEqual((retried[0]["pool"], retried[0]["server"], retried[0]["term"]),
                         ("retry", f"{HOST}:7151", "--"))
        broken = lines[2]
        self.assertEqual((broken["status"], broken["pool"], broken["server"], broken["term"], broken["ttfb_ms"]),
                         (502, "broken", f"{HOST}:7159", "SC", None))

    def test_proxy_protocol_tls_and_local_answer(self):
        lb = self.start_logging()
        header = f"PROXY TCP4 203.0.113.7 {HOST} 5555 {PROXY_PORT}\r\n".encode()
        exchange(PROXY_PORT, header + request_bytes("/healthz"))
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        with socket.create_connection((HOST, HTTPS_PORT), timeout=10, source_address=(CLIENT, 0)) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(request_bytes("/ping"))
                jtest.recv_to_end(s)
        proxied, tls = json_lines(lb.log, 2)
        self.assertEqual((proxied["client"], proxied["route"], proxied["status"], proxied["pool"],
                          proxied["server"], proxied["ttfb_ms"]), ("203.0.113.7", 3, 200, None, None, None))
        self.assertEqual((tls["client"], tls["tls"], tls["status"]), (CLIENT, "TLSv1.3", 200))

    def test_tcp_tunnel_logs_at_its_end(self):
        lb = self.start_logging()
        sent = request_bytes("/ping")
        answer = exchange(TCP_PORT, sent)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:80])
        (line,) = json_lines(lb.log, 1)
        self.assertEqual((line["kind"], line["client"], line["pool"], line["server"], line["status"]),
                         ("tcp", CLIENT, "web", f"{HOST}:7151", None))
        self.assertEqual((line["bytes_in"], line["bytes_out"], line["term"]), (len(sent), len(answer), "--"))

    def test_websocket_logs_the_101_and_the_tunnel_at_its_end(self):
        switch = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        backend = socket.create_server((HOST, 7152))
        self.addCleanup(backend.close)

        def serve():
            c, _ = backend.accept()
            with c:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += c.recv(65536)
                c.sendall(switch + b"hi")
                while chunk := c.recv(65536):
                    c.sendall(chunk)
                c.shutdown(socket.SHUT_WR)

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        lb = self.start_logging()
        sent = request_bytes("/ws", "Upgrade: websocket\r\n").replace(b"Connection: close", b"Connection: Upgrade")
        with socket.create_connection((HOST, lb.port), timeout=10, source_address=(CLIENT, 0)) as s:
            s.sendall(sent)
            got = jtest.recv_exact(s, len(switch) + 2)
            s.sendall(b"ping")
            got += jtest.recv_exact(s, 4)
            s.shutdown(socket.SHUT_WR)
            got += jtest.recv_to_end(s)
        self.assertEqual(got, switch + b"hiping")
        server.join(10)
        http, tunnel = json_lines(lb.log, 2)
        self.assertEqual((http["kind"], http["status"], http["path"], http["pool"]), ("http", 101, "/ws", "ws"))
        self.assertEqual((tunnel["kind"], tunnel["client"], tunnel["method"], tunnel["path"], tunnel["route"],
                          tunnel["pool"], tunnel["server"], tunnel["status"], tunnel["term"]),
                         ("websocket", CLIENT, "GET", "/ws", 4, "ws", f"{HOST}:7152", 101, "--"))
        # The tunnel's bytes: the client's "ping" one way; the 101 head, "hi" and the echo the other.
        self.assertEqual((tunnel["bytes_in"], tunnel["bytes_out"]), (4, len(got)))

    def test_bytes_outside_ascii_stay_valid_json(self):
        lb = self.start_logging()
        exchange(lb.port, b'GET /p HTTP/1.1\r\nHost: logs\r\nUser-Agent: "q\\\t\xc3\xa9\r\nConnection: close\r\n\r\n')
        jtest.wait_until(lambda: os.path.exists(lb.log) and os.path.getsize(lb.log) > 0, 5)
        with open(lb.log, "rb") as f:
            raw = f.read()
        raw.decode("ascii")  # every byte outside printable ASCII is escaped
        self.assertEqual(json.loads(raw)["user_agent"], '"q\\\t\xc3\xa9')


class TtfbMetrics(LogTestCase):
    def test_ttfb_histogram_next_to_the_duration(self):
        """/delay?ms=300 answers its head after 300 ms: the pool's TTFB histogram has it
        in (0.25 s, 0.5 s], like the total duration; the local answer and the 502 (no
        server answered) are not in it."""
        lb = self.start_logging(admin=True)
        exchange(lb.port, request_bytes("/delay?ms=300"))
        exchange(lb.port, request_bytes("/healthz"))
        exchange(lb.port, request_bytes("/broken/x"))

        def samples():
            return promtext.parse(jtest.http_request(lb.admin_port, path="/metrics", host=HOST)[2].decode())
        bucket = lambda family, pool, le: samples_now.get((f"{family}_bucket", (("le", le), ("pool", pool))))
        jtest.wait_until(lambda: samples().get(("juggler_pool_requests_total", (("class", "5xx"), ("pool", "broken")))) == 1, 5)
        samples_now = samples()
        for family in ("juggler_pool_ttfb_seconds", "juggler_pool_request_duration_seconds"):
            self.assertEqual((bucket(family, "web", "0.25"), bucket(family, "web", "0.5")), (0, 1), family)
        ttfb_sum = samples_now[("juggler_pool_ttfb_seconds_sum", (("pool", "web"),))]
        self.assertGreaterEqual(ttfb_sum, 0.3)
        self.assertLessEqual(ttfb_sum, samples_now[("juggler_pool_request_duration_seconds_sum", (("pool", "web"),))])
        self.assertEqual(samples_now[("juggler_pool_ttfb_seconds_count", (("pool", "broken"),))], 0)
        self.assertEqual(samples_now[("juggler_pool_request_duration_seconds_count", (("pool", "broken"),))], 1)


class ErrorLog(LogTestCase):
    def test_lines_carry_time_and_level(self):
        lb = self.start_balancer("logs", log_level="info", cwd=self.dir)
        line = lb.wait_for_line(r"listening on http://").string
        self.assertRegex(line, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z juggler info: listening on http://")
        lb.send_signal(signal.SIGUSR1)  # no file to reopen: said, at info
        self.assertRegex(lb.wait_for_line("SIGUSR1").string, r"Z juggler info: SIGUSR1: no access log file to reopen$")

    def test_journal_gets_priority_prefixes(self):
        """With stderr the journal's stream (JOURNAL_STREAM names its device and inode, as
        systemd sets it) lines carry the sd-daemon priority instead of a time."""
        wrapper = ["sh", "-c", 'JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec "$@"', "sh"]
        lb = self.start_balancer("logs", cwd=self.dir, wrapper=wrapper)
        self.assertRegex(lb.wait_for_line(r"listening on http://").string, r"^<6>juggler: listening on http://")


class CombinedLines(LogTestCase):
    def test_matches_apache_combined(self):
        lb = self.start_logging("combined")
        exchange(lb.port, request_bytes("/ping", "Referer: http://r/\r\n"))
        exchange(lb.port, request_bytes("/broken/x"))
        lines = jtest.access_log_lines(lb.log, count=2)
        self.assertEqual(len(lines), 2, lines)
        first, second = (APACHE_COMBINED.match(line) for line in lines)
        self.assertIsNotNone(first, lines[0])
        self.assertIsNotNone(second, lines[1])
        self.assertEqual((first[1], first[5], first[6], first[8], first[10], first[11]),
                         (CLIENT, "GET", "/ping", "200", "http://r/", "t"))
        self.assertEqual(second[8], "502")
        self.assertRegex(lines[1], r" upstream=127\.0\.155\.1:7159 rt=\d+\.\d{3} term=SC$")


class Delivery(LogTestCase):
    def test_lines_appear_within_a_second(self):
        """Lines wait in the worker's buffer for at most a tick (100 ms): each of ten
        requests' line is in the file well within a second. Each request follows the last
        flush at once, so a wait is about a whole flush period: the median tells 100 ms
        from the 500 ms the log was flushed at before, with room for a loaded machine."""
        lb = self.start_logging()
        waits = []
        for i in range(10):
            exchange(lb.port, request_bytes(f"/ping?{i}"))
            t0 = time.monotonic()
            lines = jtest.access_log_lines(lb.log, count=i + 1, timeout=3)
            waits.append(time.monotonic() - t0)
            self.assertEqual(len(lines), i + 1)
        print(f"\nlog line latency: max {max(waits) * 1000:.0f} ms, median {sorted(waits)[5] * 1000:.0f} ms")
        self.assertLess(max(waits), 1.0, waits)
        self.assertLess(sorted(waits)[5], 0.4, waits)

    def test_sigusr1_after_rename_loses_no_line(self):
        """logrotate's way: rename the file, SIGUSR1, go on. Two workers, requests flowing
        all the while: every line is in the old file or the new one, and the new one gets the
        lines after the reopen."""
        lb = self.start_logging(workers=2)
        rotated = lb.log + ".1"
        sent = 0
        stop = threading.Event()
        errors = []

        def load():
            nonlocal sent
            deadline = time.monotonic() + 60
            while not stop.is_set() and sent < 3000 and time.monotonic() < deadline:
                try:
                    if not exchange(lb.port, request_bytes(f"/ping?{sent}")).startswith(b"HTTP/1.1 200"):
                        errors.append(sent)
                except OSError as e:
                    errors.append(e)
                sent += 1

        worker = threading.Thread(target=load)
        worker.start()
        try:
            self.assertTrue(jtest.wait_until(lambda: sent >= 100, 30), sent)
            os.rename(lb.log, rotated)
            lb.send_signal(signal.SIGUSR1)
            lb.wait_for_line(r"SIGUSR1: access log .* reopened")
            at_reopen = sent
            self.assertTrue(jtest.wait_until(lambda: sent >= at_reopen + 100, 30), sent)
        finally:
            stop.set()
            worker.join()
        self.assertEqual(errors, [])

        def counts():
            return [len(read_lines(p)) for p in (rotated, lb.log)]
        jtest.wait_until(lambda: sum(counts()) >= sent, 5)
        old, new = counts()
        self.assertEqual(old + new, sent, (old, new))
        self.assertGreaterEqual(new, 100)
        seen = sorted(int(json.loads(line)["path"].split("?")[1])
                      for p in (rotated, lb.log) for line in read_lines(p))
        self.assertEqual(seen, list(range(sent)))

    def test_full_disk_drops_and_counts_without_stalling(self):
        lb = self.start_logging(path="/dev/full", admin=True)
        count = 300
        t0 = time.monotonic()
        for i in range(count):
            started = time.monotonic()
            self.assertTrue(exchange(lb.port, request_bytes("/ping")).startswith(b"HTTP/1.1 200"))
            self.assertLess(time.monotonic() - started, 2.0, f"request {i} stalled")
        elapsed = time.monotonic() - t0

        def dropped():
            body = jtest.http_request(lb.admin_port, path="/metrics", host=HOST)[2].decode()
            return promtext.parse(body).get(("juggler_access_log_dropped_lines_total", ()), -1)
        jtest.wait_until(lambda: dropped() >= count, 5)
        self.assertEqual(dropped(), count)
        self.assertIn("access log: write failed (No space left on device)", lb.output())
        print(f"\n{count} requests with the log on /dev/full: {elapsed:.2f} s")


if __name__ == "__main__":
    unittest.main()

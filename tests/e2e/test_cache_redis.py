"""The response cache in Redis (issue #12, `set cache redis`): the balancer built from
tests/routes/cache_redis.def (prefix `jt:`, max_object=64k, deadline=250ms) in front of a
testserver on 127.0.160.1:6901, and a real redis-server this file starts on
127.0.160.1:6390 (the address the routes file names), without persistence, so a restart
starts empty. The Host picks the route: plain.test (no cache), sie.test (`cache`, its
own server on 6902, killed for stale-if-error), anything else (`cache`).

The testserver logs `METHOD TARGET STATUS` per request: that log is the upstream request
counter (a marker request through the uncached route first, so everything before it was
counted). Redis is read with a few lines of RESP over a raw socket (no client library).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import tempfile
import time
import unittest
import urllib.parse

import jtest
import promtext
from balancer import BalancerTestCase

HOST = "127.0.160.1"
PORT = 6901
SIE_PORT = 6902
REDIS_PORT = 6390  # tests/routes/cache_redis.def: set cache redis 127.0.160.1:6390
PREFIX = "jt:"
DEADLINE = 0.250  # tests/routes/cache_redis.def: generous, so a loaded (ASan) run does not miss it by chance
REDIS_READY = r"Ready to accept connections"
DOWN = r"cache: redis 127\.0\.160\.1:6390 unavailable"
BACK = r"cache: redis 127\.0\.160\.1:6390 is back"


def cc(value: str) -> str:
    """A header= parameter for the testserver: Cache-Control: value."""
    return "header=" + urllib.parse.quote("Cache-Control:" + value, safe="")


def redis_command(*args: str, timeout: float = 5.0):
    """One command to the test's redis-server; the decoded reply (bytes, int, list, None;
    an error reply raises)."""
    out = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args)
    with socket.create_connection((HOST, REDIS_PORT), timeout=timeout) as s:
        s.sendall(out)
        return _read_reply(s.makefile("rb"))


def _read_reply(f):
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError(f"short reply from redis: {line!r}")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read_reply(f) for _ in range(n)]
    raise ConnectionError(f"bad reply from redis: {line!r}")


class RedisCacheTest(BalancerTestCase):
    @classmethod
    def setUpClass(cls):
        if not shutil.which("redis-server"):
            raise AssertionError("redis-server is missing: run tools/install-deps.sh (it installs redis-server)")
        cls.server = cls.start_class_testserver(port=PORT, host=HOST, quiet=False)

    def setUp(self):
        self.redis = self.start_redis()
        self.marks = 0

    # ------------------------------------------------------------ helpers

    def start_redis(self) -> jtest.ManagedProcess:
        """A redis-server on HOST:REDIS_PORT, stopped (killed) at cleanup."""
        workdir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, workdir, True)
        argv = ["redis-server", "--bind", HOST, "--port", str(REDIS_PORT), "--save", "", "--appendonly", "no",
                "--dir", workdir, "--protected-mode", "no"]
        proc = jtest.start_process(argv, REDIS_READY, name="redis-server")
        self.addCleanup(proc.stop, signal.SIGKILL)
        return proc

    def start_lb(self, workers=2):
        """A balancer, returned once its every worker's Redis connection answers (a first
        request on a connection still being made is a BYPASS)."""
        lb = self.start_balancer("cache_redis", workers=workers)
        self.wait_for_redis(lb)
        return lb

    def wait_for_redis(self, lb, timeout=10.0):
        """Until both workers look up in Redis: a fresh target each time (nothing is
        stored), answered MISS 8 times in a row on new connections (the kernel spreads them
        over the workers; a worker still connecting answers BYPASS)."""
        misses = 0
        deadline = time.monotonic() + timeout
        n = 0
        while misses < 8:
            self.assertLess(time.monotonic(), deadline, "the balancer never reached redis:\n" + lb.output())
            n += 1
            r = self.get(lb, f"/bytes?n=1&t=warm-{id(self)}-{n}&{cc('no-store')}")
            misses = misses + 1 if r.header("X-Cache") == "MISS" else 0
            if misses == 0:
                time.sleep(0.02)

    def get(self, lb, target, host="any.test", method="GET", headers=()):
        """One request on a new raw socket; the RawResponse, with `.took` in seconds."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(30)
        try:
            sock.connect(("127.0.0.1", lb.port))
            began = time.monotonic()
            lines = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
            sock.sendall((lines + "\r\n").encode())
            r = jtest.read_response(sock.makefile("rb"), head=method == "HEAD")
            r.took = time.monotonic() - began
            return r
        finally:
            sock.close()

    def upstream_count(self, lb, target) -> int:
        self.marks += 1
        mark = f"/ping?mark={id(self)}-{self.marks}"
        self.assertEqual(self.get(lb, mark, host="plain.test").status, 200)
        self.server.wait_for_line(re.escape(f"GET {mark} "), timeout=10)
        return sum(1 for line in self.server.output().splitlines() if line.startswith(f"GET {target} "))

    @staticmethod
    def key(target, host="any.test", ae_class="0"):
        """The Redis key of a request: prefix, host, target, space, Accept-Encoding class."""
        return f"{PREFIX}{host}{target} {ae_class}"

    def wait_stored(self, key, timeout=10.0):
        """The SET goes out after the answer: poll until the key is there."""
        self.assertTrue(jtest.wait_until(lambda: redis_command("EXISTS", key) == 1, timeout),
                        f"{key!r} never reached redis; keys: {redis_command('KEYS', PREFIX + '*')}")

    def count(self, proc, pattern) -> int:
        return sum(1 for line in proc.output().splitlines() if re.search(pattern, line))

    # ------------------------------------------------------------ hits across processes

    def test_a_response_stored_by_one_process_is_a_hit_in_another(self):
        a = self.start_lb()
        b = self.start_lb()
        t = f"/bytes?n=20000&t=cross&{cc('max-age=60')}"
        first = self.get(a, t)
        self.assertEqual((first.status, first.header("X-Cache")), (200, "MISS"))
        self.wait_stored(self.key(t))
        for lb in (b, a, b):
            r = self.get(lb, t)
            self.assertEqual((r.status, r.header("X-Cache")), (200, "HIT"), r.headers)
            self.assertEqual(r.body, jtest.pattern_bytes(20000))
            self.assertEqual(r.header("Content-Length"), "20000")
            self.assertEqual(r.header("Cache-Control"), "max-age=60")
            self.assertIsNotNone(r.header("Age"))
        # HEAD is answered from the GET entry too, without its body.
        h = self.get(b, t, method="HEAD")
        self.assertEqual((h.status, h.header("X-Cache"), h.body), (200, "HIT", b""))
        self.assertEqual(self.upstream_count(a, t), 1)

    def test_the_redis_key_has_a_px_ttl_of_freshness_plus_stale_windows(self):
        lb = self.start_lb()
        plain = f"/bytes?n=100&t=ttl&{cc('max-age=30')}"
        stale = f"/bytes?n=100&t=ttl-stale&{cc('max-age=30, stale-if-error=60')}"
        for t in (plain, stale):
            self.assertEqual(self.get(lb, t).header("X-Cache"), "MISS")
            self.wait_stored(self.key(t))
        pttl = redis_command("PTTL", self.key(plain))
        self.assertGreater(pttl, 20_000)
        self.assertLessEqual(pttl, 30_000)
        pttl = redis_command("PTTL", self.key(stale))
        self.assertGreater(pttl, 80_000)
        self.assertLessEqual(pttl, 90_000)

    # ------------------------------------------------------------ what is not stored

    def test_an_object_over_max_object_streams_through_and_is_not_stored(self):
        lb = self.start_lb()
        for t in (f"/bytes?n=100000&t=big&{cc('max-age=60')}", f"/bytes?n=100000&chunked=1&t=bigc&{cc('max-age=60')}"):
            small = f"/bytes?n=1000&t=small-after-{t[-40:]}&{cc('max-age=60')}"
            for _ in range(2):
                r = self.get(lb, t)
                self.assertEqual((r.status, r.header("X-Cache")), (200, "MISS"), r.headers)
                self.assertEqual(r.body, jtest.pattern_bytes(100000))
            # A small one stored after it is there: the big one's SET would have gone first.
            self.get(lb, small)
            self.wait_stored(self.key(small))
            self.assertEqual(redis_command("EXISTS", self.key(t)), 0)
            self.assertEqual(self.upstream_count(lb, t), 2)

    # ------------------------------------------------------------ PURGE

    def test_purge_removes_the_entry_from_redis(self):
        lb = self.start_lb()
        t = f"/bytes?n=500&t=purge&{cc('max-age=60')}"
        self.get(lb, t)
        self.get(lb, t, headers=[("Accept-Encoding", "gzip")])  # a second class of the same URL
        self.wait_stored(self.key(t))
        self.wait_stored(self.key(t, ae_class="1"))
        self.assertEqual(self.get(lb, t).header("X-Cache"), "HIT")
        r = self.get(lb, t, method="PURGE")
        self.assertEqual((r.status, r.body), (200, b"purged\n"))
        self.assertEqual(redis_command("KEYS", PREFIX + "any.test/bytes?n=500&t=purge*"), [])
        self.assertEqual(self.get(lb, t).header("X-Cache"), "MISS")
        self.wait_stored(self.key(t))
        self.assertEqual(self.get(lb, t, method="PURGE").status, 200)
        self.assertEqual(self.get(lb, t, method="PURGE").status, 404)  # nothing left to purge
        self.assertEqual(self.upstream_count(lb, t), 3)

    # ------------------------------------------------------------ Redis trouble

    def redis_up_gauge(self, admin) -> float:
        text = jtest.http_request(admin, path="/metrics", host=HOST)[2].decode()
        return promtext.value(promtext.parse(text), "juggler_cache_redis_connections_up")

    def test_redis_hanging_then_killed_never_fails_or_delays_a_request_and_hits_come_back(self):
        lb = self.start_balancer("cache_redis", workers=2, extra=["--admin", f"{HOST}:0"])
        admin = int(lb.wait_for_line(r"admin listening on http://[\d.]+:(\d+)").group(1))
        self.wait_for_redis(lb)
        self.assertTrue(jtest.wait_until(lambda: self.redis_up_gauge(admin) == 2, 10))
        t = f"/bytes?n=3000&t=outage&{cc('max-age=600')}"
        self.get(lb, t)
        self.wait_stored(self.key(t))
        self.assertEqual(self.get(lb, t).header("X-Cache"), "HIT")

        # Hanging (SIGSTOP: the socket accepts, nothing answers): each lookup is given up
        # at the deadline, and the request goes to the server.
        os.kill(self.redis.pid, signal.SIGSTOP)
        slowest = 0.0
        for i in range(30):
            r = self.get(lb, t)
            self.assertEqual((r.status, r.header("X-Cache")), (200, "BYPASS"), (i, r.headers))
            self.assertEqual(r.body, jtest.pattern_bytes(3000))
            slowest = max(slowest, r.took)
        self.assertLess(slowest, DEADLINE + 0.75, "a request waited for redis past its deadline")
        lb.wait_for_line(DOWN, timeout=10)  # given up once its lookups stayed unanswered

        # Killed: refused at once.
        self.redis.stop(signal.SIGKILL)
        for i in range(30):
            r = self.get(lb, t)
            self.assertEqual((r.status, r.header("X-Cache")), (200, "BYPASS"), (i, r.headers))
            self.assertLess(r.took, DEADLINE + 0.75)
        self.assertEqual(self.count(lb, DOWN), 1, "the outage is logged once:\n" + lb.output())
        self.assertEqual(self.count(lb, BACK), 0)
        self.assertEqual(self.redis_up_gauge(admin), 0)
        # The answers count in the cache's rows as any other BYPASS (60 above, and the warm-up's).
        def bypasses():
            text = jtest.http_request(admin, path="/metrics", host=HOST)[2].decode()
            return promtext.value(promtext.parse(text), "juggler_cache_requests_total", result="bypass")

        self.assertTrue(jtest.wait_until(lambda: bypasses() >= 60, 10), bypasses())

        # Back on the same port (empty: no persistence): lookups resume, the next answer is
        # stored again, and hits follow.
        self.redis = self.start_redis()
        lb.wait_for_line(BACK, timeout=15)
        self.wait_for_redis(lb)
        self.assertEqual(self.get(lb, t).header("X-Cache"), "MISS")
        self.wait_stored(self.key(t))
        self.assertEqual(self.get(lb, t).header("X-Cache"), "HIT")
        self.assertEqual(self.count(lb, DOWN), 1)
        self.assertEqual(self.count(lb, BACK), 1, lb.output())
        self.assertEqual(self.redis_up_gauge(admin), 2)

    def test_a_balancer_started_while_redis_is_down_serves_and_uses_redis_once_it_is_up(self):
        self.redis.stop(signal.SIGKILL)
        lb = self.start_balancer("cache_redis", workers=2)
        t = f"/bytes?n=100&t=late&{cc('max-age=60')}"
        for _ in range(3):
            r = self.get(lb, t)
            self.assertEqual((r.status, r.header("X-Cache")), (200, "BYPASS"))
        lb.wait_for_line(DOWN, timeout=10)
        self.redis = self.start_redis()
        lb.wait_for_line(BACK, timeout=15)
        self.wait_for_redis(lb)
        self.get(lb, t)
        self.wait_stored(self.key(t))
        self.assertEqual(self.get(lb, t).header("X-Cache"), "HIT")

    # ------------------------------------------------------------ stale-if-error, collapsing

    def test_stale_if_error_answers_from_a_redis_entry_while_the_server_is_down(self):
        sie = self.start_testserver(port=SIE_PORT, host=HOST)
        lb = self.start_lb()
        t = f"/bytes?n=2000&t=sie&{cc('max-age=1, stale-if-error=60')}"
        self.assertEqual(self.get(lb, t, host="sie.test").header("X-Cache"), "MISS")
        self.wait_stored(self.key(t, host="sie.test"))
        sie.stop()
        seen = []

        def stale_now():
            r = self.get(lb, t, host="sie.test")
            seen.append((r.status, r.header("X-Cache")))
            self.assertEqual(r.status, 200, seen)
            self.assertEqual(r.body, jtest.pattern_bytes(2000))
            return r.header("X-Cache") == "STALE"

        self.assertTrue(jtest.wait_until(stale_now, 10), seen)
        self.assertLessEqual(set(seen), {(200, "HIT"), (200, "STALE")})

    def test_concurrent_misses_on_one_worker_make_one_upstream_request(self):
        lb = self.start_lb(workers=1)
        n = 20
        t = f"/bytes?n=20000&pause=0&pause_ms=1000&t=collapse&{cc('max-age=60')}"
        socks = [jtest.raw_connection(lb.port, timeout=60) for _ in range(n)]
        try:
            for s in socks:
                s.sendall(f"GET {t} HTTP/1.1\r\nHost: any.test\r\n\r\n".encode())
            answers = jtest.read_responses(socks)
        finally:
            for s in socks:
                s.close()
        for a in answers:
            self.assertIsNotNone(a)
            self.assertEqual((a.status, a.body), (200, jtest.pattern_bytes(20000)))
        self.assertEqual(sorted(a.header("X-Cache") for a in answers), ["HIT"] * (n - 1) + ["MISS"])
        self.assertEqual(self.upstream_count(lb, t), 1)


if __name__ == "__main__":
    unittest.main()

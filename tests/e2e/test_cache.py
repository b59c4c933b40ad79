"""The response cache (issue #12): the balancer built from tests/routes/cache.def in front
of testservers on 127.0.140.1 (6901 for most routes; 6902 and 6903 for pair.test) and a
scripted raw backend of the test's own on 6904 (scripted.test). The Host picks the route:
bounded.test (`cache=2s`), gz.test (`cache compress`), pair.test (`cache`, two servers),
scripted.test (`cache`), plain.test (no cache), anything else (`cache`).

The testserver logs `METHOD TARGET STATUS` per request: that log is the upstream request
counter. Every test uses its own targets (a `t=` parameter), and a test that asserts a
request never reached the server first sends a marker request through the uncached route
and waits for its line: the server logs in order, so everything before it was counted.
Responses are read off raw sockets (no client retries or decodes on its own).
"""

from __future__ import annotations

import email.utils
import gzip
import re
import socket
import threading
import time
import unittest
import urllib.parse

import jtest
from balancer import BalancerTestCase

HOST = "127.0.140.1"
PORT = 6901
PAIR_PORTS = (6902, 6903)
OTHER_CLIENT = "127.0.140.2"  # outside cache.purge_from (127.0.0.1)
SCRIPTED_PORT = 6904


class ScriptedServer:
    """A raw HTTP/1.1 backend whose answers the test writes: script[t] is a function of
    (the n-th request for t= starting at 1, the request's header dict in lower case)
    returning (status line, [header lines], body). One request per connection
    (Connection: close); `seen` lists (t, headers) in order."""

    def __init__(self):
        self.script, self.seen, self.lock = {}, [], threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, SCRIPTED_PORT))
        self.sock.listen(64)
        jtest.serve_connections(self.sock, self.handle)

    def count(self, t):
        with self.lock:
            return sum(1 for x, _ in self.seen if x == t)

    def handle(self, conn):
        with conn:
            conn.settimeout(10)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
                target = lines[0].split(" ")[1]
                headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
                t = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query).get("t", [""])[0]
                with self.lock:
                    self.seen.append((t, headers))
                    n = sum(1 for x, _ in self.seen if x == t)
                status, fields, body = self.script[t](n, headers)
                if not status.startswith("304"):
                    fields = fields + [f"Content-Length: {len(body)}"]
                head = f"HTTP/1.1 {status}\r\n" + "".join(f + "\r\n" for f in fields) + "Connection: close\r\n\r\n"
                conn.sendall(head.encode() + body)
            except OSError:
                pass

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() in progress, which holds the port
        except OSError:
            pass
        self.sock.close()


def http_date(offset: float = 0.0) -> str:
    return email.utils.formatdate(time.time() + offset, usegmt=True)


def cc(value: str) -> str:
    """A header= parameter for the testserver: Cache-Control: value."""
    return "header=" + urllib.parse.quote("Cache-Control:" + value, safe="")


def hdr(name: str, value: str) -> str:
    return "header=" + urllib.parse.quote(f"{name}:{value}", safe="")


class CacheTest(BalancerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = cls.start_class_testserver(port=PORT, host=HOST, quiet=False)

    def setUp(self):
        self.lb = self.start_balancer("cache", workers=2)
        self.marks = 0

    # ------------------------------------------------------------ helpers

    def get(self, target, host="any.test", method="GET", headers=(), source=None):
        """One request on a new raw socket; returns the RawResponse."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(30)
        try:
            if source:
                sock.bind((source, 0))
            sock.connect(("127.0.0.1", self.lb.port))
            lines = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
            sock.sendall((lines + "\r\n").encode())
            return jtest.read_response(sock.makefile("rb"), head=method == "HEAD")
        finally:
            sock.close()

    def upstream_count(self, target, server=None) -> int:
        """Requests for exactly `target` the server logged, after a marker request went
        through the uncached route (so every earlier request is in the log)."""
        server = server or self.server
        self.marks += 1
        mark = f"/ping?mark={id(self)}-{self.marks}"
        if server is self.server:
            self.assertEqual(self.get(mark, host="plain.test").status, 200)
        else:
            with socket.create_connection((server.host, server.port), timeout=10) as s:
                s.sendall(f"GET {mark} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                jtest.recv_to_end(s)
        server.wait_for_line(re.escape(f"GET {mark} "), timeout=10)
        return sum(1 for line in server.output().splitlines() if line.startswith(f"GET {target} "))

    def assert_hit(self, r, body=None):
        self.assertEqual(r.status, 200, r.headers)
        self.assertEqual(r.header("X-Cache"), "HIT", r.headers)
        self.assertIsNotNone(r.header("Age"))
        if body is not None:
            self.assertEqual(r.body, body)

    # ------------------------------------------------------------ HIT / MISS

    def test_second_get_is_a_hit_that_never_reaches_the_server(self):
        t = f"/bytes?n=5000&t=hit&{cc('max-age=60')}"
        first = self.get(t)
        self.assertEqual(first.header("X-Cache"), "MISS")
        self.assertEqual(first.body, jtest.pattern_bytes(5000))
        for _ in range(3):
            r = self.get(t)
            self.assert_hit(r, jtest.pattern_bytes(5000))
            self.assertEqual(r.header("Content-Length"), "5000")
            self.assertEqual(r.header("Cache-Control"), "max-age=60")
        # HEAD is answered from the GET entry, without the body: the next answer on the
        # same connection starts right after its head.
        with jtest.raw_connection(self.lb.port, timeout=30) as s:
            reader = s.makefile("rb")
            s.sendall(f"HEAD {t} HTTP/1.1\r\nHost: any.test\r\n\r\nGET {t} HTTP/1.1\r\nHost: any.test\r\n\r\n".encode())
            head = jtest.read_response(reader, head=True)
            self.assert_hit(head, b"")
            self.assertEqual(head.header("Content-Length"), "5000")
            after = jtest.read_response(reader)
            self.assertEqual(after.version, "HTTP/1.1")  # not body bytes before it
            self.assert_hit(after, jtest.pattern_bytes(5000))
        self.assertEqual(self.upstream_count(t), 1)

    def test_uncached_route_has_no_x_cache_and_every_request_goes_up(self):
        t = f"/bytes?n=10&t=plain&{cc('max-age=60')}"
        for _ in range(2):
            r = self.get(t, host="plain.test")
            self.assertIsNone(r.header("X-Cache"))
            self.assertIsNone(r.header("Age"))
        self.assertEqual(self.upstream_count(t), 2)

    def test_what_is_never_stored(self):
        cases = {
            "nostore": (f"/bytes?n=10&t=nostore&{cc('no-store, max-age=60')}", ()),
            "private": (f"/bytes?n=10&t=private&{cc('private, max-age=60')}", ()),
            "cookie": (f"/bytes?n=10&t=cookie&{cc('max-age=60')}&{hdr('Set-Cookie', 'sid=1')}", ()),
            "auth": (f"/bytes?n=10&t=auth&{cc('max-age=60')}", (("Authorization", "Bearer x"),)),
            "nofresh": ("/bytes?n=10&t=nofresh", ()),  # `cache` without a TTL: no heuristic freshness
        }
        for name, (t, headers) in cases.items():
            with self.subTest(name):
                self.assertEqual(self.get(t, headers=headers).header("X-Cache"), "MISS")
                self.assertEqual(self.get(t, headers=headers).header("X-Cache"), "MISS")
                # Not stored for a request without Authorization either.
                self.assertEqual(self.get(t).header("X-Cache"), "MISS")
                self.assertEqual(self.upstream_count(t), 3)

    def test_public_and_s_maxage_allow_set_cookie_and_authorization_but_the_cookie_is_not_replayed(self):
        t = f"/bytes?n=10&t=pubcookie&{cc('public, max-age=60')}&{hdr('Set-Cookie', 'sid=1')}"
        first = self.get(t)
        self.assertEqual(first.header("Set-Cookie"), "sid=1")
        hit = self.get(t)
        self.assert_hit(hit)
        self.assertIsNone(hit.header("Set-Cookie"))
        a = f"/bytes?n=10&t=authshared&{cc('s-maxage=60')}"
        self.assertEqual(self.get(a, headers=(("Authorization", "Bearer x"),)).header("X-Cache"), "MISS")
        self.assert_hit(self.get(a, headers=(("Authorization", "Bearer y"),)))
        self.assertEqual(self.upstream_count(t), 1)
        self.assertEqual(self.upstream_count(a), 1)

    def test_request_no_cache_goes_to_the_server_and_refreshes(self):
        t = f"/bytes?n=10&t=reqnocache&{cc('max-age=60')}"
        self.get(t)
        self.assertEqual(self.get(t, headers=(("Cache-Control", "no-cache"),)).header("X-Cache"), "MISS")
        self.assertEqual(self.get(t, headers=(("Pragma", "no-cache"),)).header("X-Cache"), "MISS")
        self.assert_hit(self.get(t))
        self.assertEqual(self.upstream_count(t), 3)

    def test_non_get_bypasses(self):
        r = self.get("/echo?t=post", method="POST", headers=(("Content-Length", "0"),))
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("X-Cache"), "BYPASS")

    def test_an_unsafe_method_invalidates_the_url(self):
        t = f"/bytes?n=10&t=unsafe&{cc('max-age=60')}"
        self.get(t)
        self.assert_hit(self.get(t))
        self.assertEqual(self.get(t, method="OPTIONS").header("X-Cache"), "BYPASS")  # safe: kept
        self.assert_hit(self.get(t))
        r = self.get(t, method="DELETE", headers=(("Content-Length", "0"),))
        self.assertEqual(r.header("X-Cache"), "BYPASS")
        self.assertEqual(self.get(t).header("X-Cache"), "MISS")

    # ------------------------------------------------------------ freshness

    def poll_until_miss(self, t, host="any.test", timeout=15.0) -> float:
        """Seconds from the store until a GET of `t` was no longer a HIT (polling)."""
        stored = time.monotonic()
        self.assertEqual(self.get(t, host=host).header("X-Cache"), "MISS")
        self.assert_hit(self.get(t, host=host))
        deadline = stored + timeout
        while time.monotonic() < deadline:
            r = self.get(t, host=host)
            if r.header("X-Cache") != "HIT":
                self.assertEqual(r.header("X-Cache"), "MISS")
                return time.monotonic() - stored
            self.assertLess(int(r.header("Age")), 60)
            time.sleep(0.05)
        self.fail(f"{t} still a HIT after {timeout}s")

    def test_max_age_expiry(self):
        elapsed = self.poll_until_miss(f"/bytes?n=10&t=maxage&{cc('max-age=1')}")
        self.assertGreaterEqual(elapsed, 1.0)

    def test_expires_and_age_count(self):
        # Age 58 of max-age=60: fresh for two more seconds only.
        elapsed = self.poll_until_miss(f"/bytes?n=10&t=age&{cc('max-age=60')}&{hdr('Age', '58')}")
        self.assertGreaterEqual(elapsed, 2.0)
        self.assertLess(elapsed, 10.0)

    def test_route_ttl_bounds_the_servers_max_age(self):
        elapsed = self.poll_until_miss(f"/bytes?n=10&t=bounded&{cc('max-age=600')}", host="bounded.test")
        self.assertGreaterEqual(elapsed, 2.0)
        self.assertLess(elapsed, 10.0)

    def test_route_ttl_is_the_lifetime_of_a_response_that_names_none(self):
        t = "/bytes?n=10&t=heuristic"
        self.get(t, host="bounded.test")
        self.assert_hit(self.get(t, host="bounded.test"))

    # ------------------------------------------------------------ variants

    def test_vary_keeps_a_copy_per_value(self):
        t = f"/headers?t=vary&{cc('max-age=60')}&{hdr('Vary', 'X-Lang')}"
        en = self.get(t, headers=(("X-Lang", "en"),))
        fr = self.get(t, headers=(("X-Lang", "fr"),))
        self.assertEqual((en.header("X-Cache"), fr.header("X-Cache")), ("MISS", "MISS"))
        self.assertIn(b"X-Lang: en", en.body)
        self.assertIn(b"X-Lang: fr", fr.body)
        self.assert_hit(self.get(t, headers=(("X-Lang", "fr"),)), fr.body)
        self.assert_hit(self.get(t, headers=(("X-Lang", "en"),)), en.body)
        self.assertEqual(self.get(t).header("X-Cache"), "MISS")  # no X-Lang: a third variant
        self.assertEqual(self.upstream_count(t), 3)

    def test_vary_star_is_not_stored(self):
        t = f"/bytes?n=10&t=varystar&{cc('max-age=60')}&{hdr('Vary', '*')}"
        self.get(t)
        self.assertEqual(self.get(t).header("X-Cache"), "MISS")

    def test_compressed_copies_are_stored_and_counted_at_their_own_size(self):
        # The store holds what it stores: a gzipped copy of a 90,000-byte text (the testserver's
        # repeating pattern: well under 1 KB gzipped) takes its own size, not the server's
        # Content-Length. 200 of them (18 MB as the server sent them) all stay in the 16 MB store.
        targets = [f"/bytes?n=90000&type=text/plain&t=gzroom{i}&{cc('max-age=60')}" for i in range(200)]
        for t in targets:
            r = self.get(t, host="gz.test", headers=(("Accept-Encoding", "gzip"),))
            self.assertEqual((r.header("X-Cache"), r.header("Content-Encoding")), ("MISS", "gzip"), t)
        for t in targets:
            hit = self.get(t, host="gz.test", headers=(("Accept-Encoding", "gzip"),))
            self.assert_hit(hit)
        self.assertEqual(gzip.decompress(hit.body), jtest.pattern_bytes(90000))

    def test_compressed_and_identity_copies_are_separate_entries(self):
        t = f"/bytes?n=4000&type=text/plain&t=gz&{cc('max-age=60')}"
        body = jtest.pattern_bytes(4000)
        z = self.get(t, host="gz.test", headers=(("Accept-Encoding", "gzip"),))
        self.assertEqual((z.header("X-Cache"), z.header("Content-Encoding")), ("MISS", "gzip"))
        # The same set of codings, spelled otherwise: the stored gzip copy, not compressed again.
        hit = self.get(t, host="gz.test", headers=(("Accept-Encoding", "GZIP;q=0.8, identity"),))
        self.assert_hit(hit)
        self.assertEqual(hit.header("Content-Encoding"), "gzip")
        self.assertEqual(gzip.decompress(hit.body), body)
        plain = self.get(t, host="gz.test")
        self.assertEqual(plain.header("X-Cache"), "MISS")
        self.assertIsNone(plain.header("Content-Encoding"))
        self.assertEqual(plain.body, body)
        again = self.get(t, host="gz.test", headers=(("Accept-Encoding", "gzip;q=0"),))
        self.assert_hit(again, body)
        self.assertIsNone(again.header("Content-Encoding"))
        self.assertEqual(self.upstream_count(t), 2)

    # ------------------------------------------------------------ size limit

    def test_over_the_limit_streams_through_uncached(self):
        n = 3 * 1024 * 1024
        for chunked in ("", "&chunked=1"):
            t = f"/bytes?n={n}{chunked}&t=big&{cc('max-age=60')}"
            with self.subTest(chunked=bool(chunked)):
                for _ in range(2):
                    r = self.get(t)
                    self.assertEqual(r.header("X-Cache"), "MISS")
                    self.assertEqual(len(r.body), n)
                    self.assertEqual(r.body[:62], jtest.pattern_bytes(62))
                self.assertEqual(self.upstream_count(t), 2)
        # Just under it is stored, chunked (through the filter chain) and with
        # Content-Length (copied from the zero-copy relay's reads, many of them).
        for chunked in ("&chunked=1", ""):
            small = f"/bytes?n={1024 * 1024 - 4096}{chunked}&t=under&{cc('max-age=60')}"
            with self.subTest(chunked=bool(chunked)):
                self.get(small)
                self.assert_hit(self.get(small), jtest.pattern_bytes(1024 * 1024 - 4096))

    def test_a_large_uncacheable_body_is_never_buffered_whole(self):
        n = 96 * 1024 * 1024
        t = f"/bytes?n={n}&chunked=1&t=huge&{cc('max-age=60')}"
        before = jtest.rss_kb(self.lb.pid)
        sock = jtest.raw_connection(self.lb.port, timeout=60)
        got, peak = 0, before
        try:
            sock.sendall(f"GET {t} HTTP/1.1\r\nHost: any.test\r\nConnection: close\r\n\r\n".encode())
            while True:
                data = sock.recv(1 << 20)
                if not data:
                    break
                got += len(data)
                peak = max(peak, jtest.rss_kb(self.lb.pid))
        finally:
            sock.close()
        self.assertGreater(got, n)
        self.assertLess(peak - before, 40 * 1024, f"RSS grew from {before} kB to {peak} kB")

    # ------------------------------------------------------------ revalidation, stale answers

    def statuses(self, target, server=None) -> list:
        """The statuses the server logged for `target`, in order (after a marker)."""
        server = server or self.server
        self.upstream_count(target, server)
        return [line.rsplit(" ", 1)[1] for line in server.output().splitlines() if line.startswith(f"GET {target} ")]

    def test_expired_entry_is_revalidated_and_a_304_refreshes_it(self):
        t = f"/bytes?n=3000&etag=v1&t=reval&{cc('max-age=1')}"
        body = jtest.pattern_bytes(3000)
        self.poll_until_hit_ends_then_expect(t, "HIT", body)
        self.assertEqual(self.statuses(t), ["200", "304"])
        fresh = self.get(t)  # fresh again for max-age: no request
        self.assert_hit(fresh, body)
        self.assertLess(int(fresh.header("Age")), 2)
        self.assertEqual(self.statuses(t), ["200", "304"])

    def poll_until_hit_ends_then_expect(self, t, want, body):
        """Stores `t`, then polls until the answer is no longer a plain HIT of the
        first copy (Age grew then fell back, or X-Cache changed): that answer must
        be `want` with `body`."""
        self.assertEqual(self.get(t).header("X-Cache"), "MISS")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            r = self.get(t)
            if self.server.output().count(f"GET {t} 304") or r.header("X-Cache") != "HIT":
                self.assertEqual(r.header("X-Cache"), want, r.headers)
                self.assertEqual((r.status, r.body), (200, body))
                return r
            time.sleep(0.05)
        self.fail(f"{t} never left its first copy")

    def test_no_cache_revalidates_every_time(self):
        t = f"/bytes?n=100&etag=v2&t=nocache&{cc('no-cache')}"
        self.assertEqual(self.get(t).header("X-Cache"), "MISS")
        for _ in range(2):
            self.assert_hit(self.get(t), jtest.pattern_bytes(100))
        self.assertEqual(self.statuses(t), ["200", "304", "304"])

    # ------------------------------------------------------------ conditional requests of clients

    def test_a_hit_answers_the_clients_own_conditional_with_a_304(self):
        lm = "Tue, 01 Dec 2026 10:00:00 GMT"
        t = f"/bytes?n=3000&etag=v4&t=cond304&{cc('max-age=60')}&{hdr('Last-Modified', lm)}"
        body = jtest.pattern_bytes(3000)
        self.assertEqual(self.get(t).header("X-Cache"), "MISS")
        later, earlier = "Tue, 01 Dec 2026 10:00:01 GMT", "Tue, 01 Dec 2026 09:59:59 GMT"
        for headers, status in (((("If-None-Match", '"v4"'),), 304),
                                ((("If-None-Match", 'W/"v4"'),), 304),   # weak comparison
                                ((("If-None-Match", '"x", "v4"'),), 304),
                                ((("If-None-Match", "*"),), 304),
                                ((("If-None-Match", '"v5"'),), 200),
                                ((("If-Modified-Since", lm),), 304),
                                ((("If-Modified-Since", later),), 304),
                                ((("If-Modified-Since", earlier),), 200),
                                # If-None-Match decides alone when present (RFC 9110 13.2.2)
                                ((("If-None-Match", '"v5"'), ("If-Modified-Since", later)), 200)):
            with self.subTest(headers=headers):
                r = self.get(t, headers=headers)
                self.assertEqual((r.status, r.header("X-Cache")), (status, "HIT"), r.headers)
                self.assertEqual(r.header("ETag"), '"v4"')
                self.assertEqual(r.header("Cache-Control"), "max-age=60")
                self.assertIsNotNone(r.header("Age"))
                if status == 304:
                    self.assertIsNone(r.header("Content-Length"))
                else:
                    self.assertEqual(r.body, body)
        # Bodiless on the wire: the next answer on the connection starts right after it.
        with jtest.raw_connection(self.lb.port, timeout=30) as s:
            reader = s.makefile("rb")
            s.sendall((f'GET {t} HTTP/1.1\r\nHost: any.test\r\nIf-None-Match: "v4"\r\n\r\n'
                       f'HEAD {t} HTTP/1.1\r\nHost: any.test\r\nIf-None-Match: "v4"\r\n\r\n'
                       f"GET {t} HTTP/1.1\r\nHost: any.test\r\n\r\n").encode())
            for head in (False, True):
                r = jtest.read_response(reader, head=head)
                self.assertEqual((r.version, r.status), ("HTTP/1.1", 304))  # not body bytes before it
            after = jtest.read_response(reader)
            self.assertEqual((after.version, after.status), ("HTTP/1.1", 200))
            self.assertEqual(after.body, body)
        self.assertEqual(self.upstream_count(t), 1)

    def test_a_clients_own_conditional_request_gets_the_servers_304(self):
        t = f"/bytes?n=100&etag=v3&t=own304&{cc('no-cache')}"
        self.get(t)
        r = self.get(t, headers=(("If-None-Match", '"v3"'),))
        self.assertEqual((r.status, r.header("X-Cache")), (304, "MISS"))

    # ------------------------------------------------------------ the scripted backend

    def scripted(self):
        server = ScriptedServer()
        self.addCleanup(server.close)
        return server

    def test_a_304_on_revalidation_updates_the_stored_headers(self):
        server = self.scripted()

        def answer(n, headers):
            if n > 1 and headers.get("if-none-match") == '"m1"':
                return "304 Not Modified", ['ETag: "m1"', "Cache-Control: max-age=60", "X-Version: 2",
                                            f"Date: {http_date()}"], b""
            return "200 OK", ['ETag: "m1"', "Cache-Control: max-age=1", f"X-Version: 1 (request {n})",
                              "Expires: Thu, 01 Jan 2037 00:00:00 GMT", f"Date: {http_date()}"], b"stored body"
        server.script["merge"] = answer
        t = "/merge?t=merge"
        self.assertEqual(self.get(t, host="scripted.test").header("X-Version"), "1 (request 1)")
        self.assertTrue(jtest.wait_until(lambda: self.get(t, host="scripted.test") and server.count("merge") >= 2, 15))
        for _ in range(2):  # the refreshed entry, fresh for the 304's max-age: no third request
            r = self.get(t, host="scripted.test")
            self.assert_hit(r, b"stored body")
            self.assertEqual([v for k, v in r.headers if k.lower() == "x-version"], ["2"], r.headers)
            self.assertEqual([v for k, v in r.headers if k.lower() == "cache-control"], ["max-age=60"])
            self.assertEqual(r.header("Expires"), "Thu, 01 Jan 2037 00:00:00 GMT")  # not in the 304: kept
            self.assertEqual(r.header("ETag"), '"m1"')
            self.assertLess(int(r.header("Age")), 10)
        self.assertEqual(server.count("merge"), 2)

    def test_age_counts_the_apparent_age_from_the_servers_date(self):
        server = self.scripted()
        server.script["old"] = lambda n, h: ("200 OK", ["Cache-Control: max-age=600", f"Date: {http_date(-300)}"],
                                             b"old")
        server.script["stale"] = lambda n, h: ("200 OK", ["Cache-Control: max-age=60", f"Date: {http_date(-120)}"],
                                               b"stale")
        self.get("/a?t=old", host="scripted.test")
        r = self.get("/a?t=old", host="scripted.test")
        self.assert_hit(r, b"old")
        self.assertGreaterEqual(int(r.header("Age")), 298)  # 300 s old by its Date, the second's rounding aside
        self.assertLess(int(r.header("Age")), 400)
        # Older than its max-age on arrival, with nothing to revalidate with: not stored.
        for _ in range(2):
            self.assertEqual(self.get("/a?t=stale", host="scripted.test").header("X-Cache"), "MISS")
        self.assertEqual(server.count("stale"), 2)

    def start_pair(self):
        return [self.start_testserver(port=p, host=HOST, quiet=False) for p in PAIR_PORTS]

    def test_stale_if_error_answers_while_every_server_is_down(self):
        servers = self.start_pair()
        ok = f"/bytes?n=2000&t=sie&{cc('max-age=1, stale-if-error=60')}"
        strict = f"/bytes?n=2000&t=nosie&{cc('max-age=1')}"
        for t in (ok, strict):
            self.assertEqual(self.get(t, host="pair.test").header("X-Cache"), "MISS")
        stored = time.monotonic()
        for s in servers:
            s.stop()  # SIGTERM: the testserver exits at once, connections dropped
        time.sleep(max(0.0, stored + 1.2 - time.monotonic()))  # both copies expired (max-age=1)
        for _ in range(3):
            r = self.get(ok, host="pair.test")
            self.assertEqual((r.status, r.header("X-Cache")), (200, "STALE"), r.headers)
            self.assertEqual(r.body, jtest.pattern_bytes(2000))
            self.assertGreaterEqual(int(r.header("Age")), 1)
            self.assertIsNone(r.header("Warning"))
        self.assertIn(self.get(strict, host="pair.test").status, (502, 503))

    # ------------------------------------------------------------ collapsed misses

    def test_concurrent_misses_for_one_key_make_one_upstream_request(self):
        n = 100
        t = f"/bytes?n=20000&pause=0&pause_ms=1500&t=collapse&{cc('max-age=60')}"
        socks = []
        try:
            for _ in range(n):
                s = jtest.raw_connection(self.lb.port, timeout=60)
                socks.append(s)
            began = time.monotonic()
            for s in socks:
                s.sendall(f"GET {t} HTTP/1.1\r\nHost: any.test\r\n\r\n".encode())
            sent = time.monotonic() - began
            answers = jtest.read_responses(socks)
            took = time.monotonic() - began
        finally:
            for s in socks:
                s.close()
        # All were sent while the first was still waiting for its (1.5 s) body, and the
        # waiters were woken when it was stored, not at the end of their bound (10 s).
        self.assertLess(sent, 1.5)
        self.assertLess(took, 8.0)
        body = jtest.pattern_bytes(20000)
        for a in answers:
            self.assertIsNotNone(a)
            self.assertEqual((a.status, a.body), (200, body))
        tags = sorted(a.header("X-Cache") for a in answers)
        self.assertEqual(tags, ["HIT"] * (n - 1) + ["MISS"])
        self.assertEqual(self.upstream_count(t), 1)

    def test_waiters_go_to_the_server_when_the_answer_is_not_storable(self):
        n = 5
        t = f"/bytes?n=100&pause=0&pause_ms=500&t=collapse_nostore&{cc('no-store')}"
        socks = [jtest.raw_connection(self.lb.port, timeout=30) for _ in range(n)]
        try:
            began = time.monotonic()
            for s in socks:
                s.sendall(f"GET {t} HTTP/1.1\r\nHost: any.test\r\n\r\n".encode())
            answers = [jtest.read_response(s.makefile("rb")) for s in socks]
            took = time.monotonic() - began
        finally:
            for s in socks:
                s.close()
        self.assertEqual([a.header("X-Cache") for a in answers], ["MISS"] * n)
        # Woken when the leader's answer proved unstorable, not at the end of their bound
        # (timeout.upstream, 10 s).
        self.assertLess(took, 8.0)
        self.assertEqual(self.upstream_count(t), n)

    def test_stale_while_revalidate_answers_stale_while_another_request_refreshes(self):
        # Freshness counts from the response head; the body takes 1 s more.
        t = f"/bytes?n=100&pause=0&pause_ms=1000&t=swr&{cc('max-age=2, stale-while-revalidate=30')}"
        strict = f"/bytes?n=100&pause=0&pause_ms=1000&t=noswr&{cc('max-age=2')}"
        self.get(strict)
        self.get(t)
        stored = time.monotonic()
        time.sleep(max(0.0, stored + 1.2 - time.monotonic()))  # both expired
        for target, want in ((t, "STALE"), (strict, "HIT")):
            leader = {}
            thread = threading.Thread(target=lambda: leader.update(r=self.get(target)))
            thread.start()
            # The leader's refresh is at the server (it logs on arrival; the body waits 1 s).
            self.assertTrue(jtest.wait_until(lambda: self.server.output().count(f"GET {target} ") >= 2, 10))
            began = time.monotonic()
            r = self.get(target)
            waited = time.monotonic() - began
            thread.join(30)
            self.assertEqual(leader["r"].header("X-Cache"), "MISS")
            self.assertEqual((r.status, r.body, r.header("X-Cache")), (200, jtest.pattern_bytes(100), want))
            if want == "STALE":
                self.assertLess(waited, 1.0)  # did not wait for the refresh
            self.assertEqual(self.upstream_count(target), 2)

    # ------------------------------------------------------------ PURGE

    def test_purge_from_an_allowed_address_removes_every_variant(self):
        t = f"/bytes?n=10&t=purge&{cc('max-age=60')}"
        self.get(t)
        self.assert_hit(self.get(t))
        refused = self.get(t, method="PURGE", source=OTHER_CLIENT)
        self.assertEqual(refused.status, 403)
        self.assert_hit(self.get(t))
        done = self.get(t, method="PURGE")
        self.assertEqual((done.status, done.body), (200, b"purged\n"))
        self.assertEqual(self.get(t, method="PURGE").status, 404)  # nothing left
        self.assertEqual(self.get(t).header("X-Cache"), "MISS")
        self.assertEqual(self.upstream_count(t), 2)


if __name__ == "__main__":
    unittest.main()

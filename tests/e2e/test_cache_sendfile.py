"""Cached bodies in memfds, sent by sendfile(2) (issue #12, the 100 KB hit): the balancer
built from tests/routes/cache_sendfile.def (one worker) in front of a backend of the test's
own on 127.0.220.1:6921, whose every fetch of a target gives other bytes (so a stale or
freed copy cannot pass for the right one).

What proves the path is taken: /metrics' juggler_cache_sendfile_bytes_total (bytes the
kernel took by sendfile(2); it stays 0 when the path is off) and juggler_cache_files (the
memfds open). Responses are read off raw sockets.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import socketserver
import ssl
import tempfile
import threading
import time
import unittest
import urllib.parse

import jtest
import promtext
from balancer import BalancerTestCase, start_balancer

HOST = "127.0.220.1"
BACKEND_PORT = 6921
TLS_PORT = 18421
THRESHOLD = 96 * 1024  # kFileBodyMin, src/cache/store.hpp
CHUNK = 16 * 1024  # kFileChunk, src/stream/stream.cpp: what a full socket gets copied
MB = 1024 * 1024


def body_of(target: str, version: int) -> bytes:
    """The backend's body for the `version`-th fetch of `target` (n= bytes)."""
    n = int(urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)["n"][0])
    return random.Random(f"{target}#{version}").randbytes(n)


class VersionedBackend(socketserver.ThreadingTCPServer):
    """GET /obj?n=N&...: N bytes, other ones on every fetch of the same target
    (body_of(target, fetch number)), cacheable for 10 minutes; one request per
    connection. `fetches[target]`: how many times the target was fetched."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self):
        self.fetches, self.lock = {}, threading.Lock()
        super().__init__((HOST, BACKEND_PORT), VersionedHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self):
        self.shutdown()
        self.server_close()


class VersionedHandler(socketserver.StreamRequestHandler):
    def handle(self):
        self.connection.settimeout(30)
        target = self.rfile.readline().split(b" ")[1].decode()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        server = self.server
        with server.lock:
            version = server.fetches[target] = server.fetches.get(target, 0) + 1
        body = body_of(target, version)
        self.wfile.write(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Type: application/octet-stream\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)


class SendfileCase(BalancerTestCase):
    """A balancer (started by the subclass) and its /metrics."""

    lb_extra: tuple = ()
    lb_env = None
    wrapper: tuple = ()

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.backend = VersionedBackend()
        cls.addClassCleanup(cls.backend.close)
        cls.dir = tempfile.mkdtemp()
        cls.addClassCleanup(shutil.rmtree, cls.dir)
        jtest.make_cert(cls.dir, "sf", "localhost", f"IP:{HOST}")

    def setUp(self):
        # A balancer per test: each starts with an empty cache and counters at 0.
        self.lb = self.start_balancer("cache_sendfile", extra=["--admin", f"{HOST}:0", *self.lb_extra], cwd=self.dir,
                                      env=self.lb_env, wrapper=self.wrapper)
        self.admin = int(self.lb.wait_for_line(r"admin listening on http://[\d.]+:(\d+)").group(1))

    def metric(self, name: str) -> int:
        text = jtest.http_request(self.admin, path="/metrics", host=HOST)[2].decode()
        return int(promtext.value(promtext.parse(text), name))

    def sent_by_sendfile(self) -> int:
        return self.metric("juggler_cache_sendfile_bytes_total")

    def sent_since(self, before: int, at_least: int = 1) -> int:
        """Bytes sent by sendfile since `before`, read again until at least `at_least` (for
        5 s at most): the worker counts a call's bytes once it returns, and by then the
        client may have read them and asked /metrics (another thread) already."""
        deadline = time.monotonic() + 5
        while (sent := self.sent_by_sendfile() - before) < at_least and time.monotonic() < deadline:
            time.sleep(0.02)
        return sent

    def files(self) -> int:
        return self.metric("juggler_cache_files")

    def connect(self, rcvbuf: int = 0) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: the window it offers
        sock.settimeout(60)
        sock.connect((HOST, self.lb.port))
        self.addCleanup(sock.close)
        return sock

    def ask(self, sock, target, method="GET"):
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: sf.test\r\n\r\n".encode())

    def get(self, target, method="GET", sock=None):
        sock = sock or self.connect()
        self.ask(sock, target, method)
        return jtest.read_response(sock.makefile("rb"), head=method == "HEAD")

    def store(self, target) -> bytes:
        """Fetches `target` into the cache (a MISS) and returns its bytes."""
        r = self.get(target)
        self.assertEqual((r.status, r.header("X-Cache")), (200, "MISS"), target)
        self.assertEqual(r.body, body_of(target, self.backend.fetches[target]), target)
        return r.body


class SendfileTest(SendfileCase):
    def test_hits_around_the_threshold_are_byte_exact_and_large_ones_use_sendfile(self):
        for n in (32 * 1024, THRESHOLD - 1, THRESHOLD, THRESHOLD + 1, 5 * MB):
            with self.subTest(n=n):
                target = f"/obj?n={n}&t=sizes"
                files = self.files()
                body = self.store(target)
                self.assertEqual(self.files() - files, 1 if n >= THRESHOLD else 0)
                before = self.sent_by_sendfile()
                sock = self.connect()
                for _ in range(2):  # keep-alive: the second answer's framing follows the first's body
                    hit = self.get(target, sock=sock)
                    self.assertEqual((hit.status, hit.header("X-Cache")), (200, "HIT"))
                    self.assertEqual(int(hit.header("Content-Length")), n)
                    self.assertTrue(hit.body == body, f"{n}: {len(hit.body)} bytes, not the stored ones")
                if n < THRESHOLD:
                    self.assertEqual(self.sent_by_sendfile(), before)
                else:
                    sent = self.sent_since(before, n)
                    # Each hit's body by sendfile, but for the CHUNKs copied while a socket was full.
                    self.assertGreaterEqual(sent, n)
                    self.assertLessEqual(sent, 2 * n)

    def test_head_and_tls_hits_read_the_mapping(self):
        for n in (100 * 1024, 5 * MB):
            with self.subTest(n=n):
                target = f"/obj?n={n}&t=head-tls"
                files = self.files()
                body = self.store(target)
                self.assertEqual(self.files(), files + 1)  # a memfd's mapping is what they read
                before = self.sent_by_sendfile()
                sock = self.connect()
                head = self.get(target, method="HEAD", sock=sock)
                self.assertEqual((head.status, head.header("X-Cache"), head.body), (200, "HIT", b""))
                self.assertEqual(int(head.header("Content-Length")), n)
                self.assertEqual(self.sent_by_sendfile(), before)  # no body, no sendfile
                after_head = self.get(target, sock=sock)  # the same connection: HEAD wrote no body bytes
                self.assertTrue(after_head.body == body)
                ctx = ssl.create_default_context(cafile=os.path.join(self.dir, "sf.crt"))
                with ctx.wrap_socket(socket.create_connection((HOST, TLS_PORT), timeout=60),
                                     server_hostname=HOST) as tls:
                    before = self.sent_by_sendfile()
                    self.ask(tls, target)
                    hit = jtest.read_response(tls.makefile("rb"))
                    self.assertEqual((hit.status, hit.header("X-Cache")), (200, "HIT"))
                    self.assertTrue(hit.body == body, f"TLS: {len(hit.body)} bytes, not the stored ones")
                    self.assertEqual(self.sent_by_sendfile(), before)  # TLS encrypts from the mapping

    def slow_read_while(self, target: str, n: int, meanwhile) -> None:
        """A client with a small receive window asks for the stored `target` (n bytes) and
        stops reading after its first bytes, so the balancer's send stalls half-way (the
        body is larger than what the socket buffers hold); `meanwhile()` runs; then the
        client reads the rest and must get exactly the bytes stored before."""
        old = body_of(target, self.backend.fetches[target])
        before = self.sent_by_sendfile()
        slow = self.connect(rcvbuf=32 * 1024)
        self.ask(slow, target)
        reader = slow.makefile("rb")
        first = reader.read(64 * 1024)  # the head and the body's start, then a pause
        meanwhile()
        head, _, got = first.partition(b"\r\n\r\n")
        self.assertIn(b"X-Cache: HIT", head)
        got += reader.read(n - len(got))
        self.assertEqual(len(got), n)
        self.assertTrue(got == old, "the slow reader did not get the bytes stored when it asked")
        sent = self.sent_since(before)
        # The socket filled (the pause): the send went on after at least one copied CHUNK.
        self.assertGreater(sent, 0)
        self.assertLessEqual(sent, n - CHUNK)

    def test_a_slow_reader_gets_the_old_bytes_through_a_purge(self):
        n = 6 * MB  # more than the socket buffers hold (tcp_wmem's 4 MB at most, and the small window)
        target = f"/obj?n={n}&t=purge"
        self.store(target)
        files = self.files()

        def purge_and_refetch():
            r = self.get(target, method="PURGE")
            self.assertEqual(r.status, 200)
            fresh = self.store(target)  # another body now, in another memfd
            self.assertNotEqual(fresh, body_of(target, 1))
            # The purged entry's memfd stays open while its send is under way.
            self.assertEqual(self.files(), files + 1)

        self.slow_read_while(target, n, purge_and_refetch)
        # Sent: its last reference went with the exchange, and the memfd with it.
        self.assertTrue(jtest.wait_until(lambda: self.files() == files, 10), self.files())

    def test_a_slow_reader_gets_the_old_bytes_through_an_eviction(self):
        n = 6 * MB
        target = f"/obj?n={n}&t=evict"
        self.store(target)

        files = []

        def evict():
            for i in range(12):  # 72 MB through a 64 MB cache: the first one goes
                self.store(f"/obj?n={n}&t=evict-filler-{i}")
            self.assertEqual(self.get(target, method="HEAD").header("X-Cache"), "MISS")  # evicted
            files.append(self.files())  # the evicted entry's memfd among them, while its send is under way

        self.slow_read_while(target, n, evict)
        self.assertTrue(jtest.wait_until(lambda: self.files() == files[0] - 1, 10), (self.files(), files))


class NoSendfileTest(SendfileCase):
    """JUGGLER_NO_SENDFILE: the same memfd entries, written from their mapping."""

    lb_env = {"JUGGLER_NO_SENDFILE": "1"}

    def test_the_switch_writes_from_the_mapping(self):
        target = f"/obj?n={100 * 1024}&t=nosendfile"
        body = self.store(target)
        self.assertEqual(self.files(), 1)
        hit = self.get(target)
        self.assertEqual(hit.header("X-Cache"), "HIT")
        self.assertTrue(hit.body == body)
        self.assertEqual(self.sent_by_sendfile(), 0)


class DescriptorCapTest(SendfileCase):
    """Under a descriptor limit of 96 the cache keeps at most 96 / 8 = 12 memfds: the
    bodies beyond stay on the heap and are served from there, byte-exact."""

    wrapper = ("prlimit", "--nofile=96:96")

    def test_bodies_beyond_the_cap_stay_on_the_heap(self):
        bodies = {}
        for i in range(14):
            target = f"/obj?n={THRESHOLD}&t=cap-{i}"
            bodies[target] = self.store(target)
        self.assertEqual(self.files(), 12)
        for i, (target, body) in enumerate(bodies.items()):
            before = self.sent_by_sendfile()
            hit = self.get(target)
            self.assertEqual(hit.header("X-Cache"), "HIT")
            self.assertTrue(hit.body == body, target)
            if i < 12:
                self.assertGreater(self.sent_since(before), 0, target)
            else:
                self.assertEqual(self.sent_by_sendfile(), before, target)


if __name__ == "__main__":
    unittest.main()

"""Compression (issue #12): the balancer built from tests/routes/compress.def in front of a
testserver on 127.0.110.1:6901 whose --root holds generated text files (Content-Length
bodies) and whose /bytes?chunked=1&type=... gives chunked ones. The Host picks the route:
gzip.test (`gzip`), brgz.test (`compress=gzip,br`), plain.test (no compression), anything
else (`compress`: zstd, br and gzip).

Real clients decode: curl --compressed, python3's gzip, brotli (python3-brotli, through
/usr/bin/python3 when this interpreter lacks it) and the zstd CLI, to the exact bytes of
the file. Responses are read off raw sockets so nothing decodes or retries on its own.
"""

from __future__ import annotations

import gzip
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import jtest
from balancer import BalancerTestCase

HOST = "127.0.110.1"
PORT = 6901

# name -> size; the type comes from the extension (testserver's table).
FILES = {"one_k.txt": 1000, "hundred_k.json": 100_000, "three_m.html": 3_000_000, "four_m.js": 4_000_000,
         "small.txt": 200, "picture.png": 50_000, "drawing.svg": 20_000, "big.txt": 24_000_000}


def words_text(size: int, seed: int) -> bytes:
    """Text that compresses like prose (about 3:1), not like a repeated pattern."""
    r = random.Random(seed)
    vocabulary = ["".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(2, 10)))
                  for _ in range(3000)]
    out, total = [], 0
    while total < size:
        w = r.choice(vocabulary)
        out.append(w)
        total += len(w) + 1
    return " ".join(out).encode()[:size]


def brotli_decompress(data: bytes) -> bytes:
    try:
        import brotli  # python3-brotli
        return brotli.decompress(data)
    except ImportError:
        # The Debian module lives with the system interpreter.
        code = "import brotli,sys; sys.stdout.buffer.write(brotli.decompress(sys.stdin.buffer.read()))"
        return subprocess.run(["/usr/bin/python3", "-c", code], input=data, capture_output=True,
                              check=True, timeout=60).stdout


def zstd_decompress(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-d", "-c", "-q"], input=data, capture_output=True, check=True,
                          timeout=60).stdout


def decode(coding, data: bytes) -> bytes:
    if coding is None:
        return data
    return {"gzip": gzip.decompress, "br": brotli_decompress, "zstd": zstd_decompress}[coding](data)


class CompressTest(BalancerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.root = tempfile.mkdtemp(prefix="juggler-compress-")
        cls.bodies = {}
        for i, (name, size) in enumerate(FILES.items()):
            cls.bodies[name] = words_text(size, i)
            with open(os.path.join(cls.root, name), "wb") as f:
                f.write(cls.bodies[name])
        cls.server = cls.start_class_testserver(port=PORT, host=HOST, root=cls.root)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)
        super().tearDownClass()

    def setUp(self):
        self.lb = self.start_balancer("compress")

    def get(self, path, host="any.test", accept=None, method="GET", extra="", version="1.1", sock=None):
        """One request on a raw socket (a new one unless `sock`); returns the RawResponse."""
        own = sock is None
        sock = sock or jtest.raw_connection(self.lb.port, timeout=30)
        try:
            lines = f"{method} {path} HTTP/{version}\r\nHost: {host}\r\n"
            if accept is not None:
                lines += f"Accept-Encoding: {accept}\r\n"
            sock.sendall((lines + extra + "\r\n").encode())
            return jtest.read_response(sock.makefile("rb"), head=method == "HEAD")
        finally:
            if own:
                sock.close()

    def assert_encoded(self, r, coding, original: bytes):
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("Content-Encoding"), coding)
        self.assertIsNone(r.header("Content-Length"))
        self.assertEqual(r.header("Transfer-Encoding"), "chunked")
        self.assertIn("Accept-Encoding", r.header("Vary", ""))
        self.assertLess(len(r.body), len(original))
        self.assertEqual(decode(coding, r.body), original)

    def assert_identity(self, r, original: bytes = None):
        self.assertIsNone(r.header("Content-Encoding"), r.headers)
        if original is not None:
            self.assertEqual(r.body, original)

    # ------------------------------------------------------------ each encoding, each size

    def test_each_encoding_decodes_to_the_exact_bytes(self):
        for coding in ("gzip", "br", "zstd"):
            for name in ("one_k.txt", "hundred_k.json", "three_m.html", "drawing.svg"):
                with self.subTest(coding=coding, file=name):
                    self.assert_encoded(self.get("/" + name, accept=coding), coding, self.bodies[name])

    def test_chunked_bodies_decode_too(self):
        for coding in ("gzip", "br", "zstd"):
            for n in (1000, 300_000, 3_000_000):
                with self.subTest(coding=coding, n=n):
                    r = self.get(f"/bytes?n={n}&chunked=1&type=text/plain", accept=coding)
                    self.assert_encoded(r, coding, jtest.pattern_bytes(n))

    def test_curl_compressed(self):
        """curl asks for every coding it has (deflate, gzip, br, zstd) and decodes."""
        out = os.path.join(self.root, "curl.out")
        for host, coding in (("gzip.test", "gzip"), ("brgz.test", "br"), ("all.test", "zstd")):
            for name in ("one_k.txt", "four_m.js"):
                with self.subTest(host=host, file=name):
                    p = subprocess.run(["curl", "-sS", "--compressed", "-D", "-", "-o", out, "-H", f"Host: {host}",
                                        f"http://127.0.0.1:{self.lb.port}/{name}"],
                                       capture_output=True, text=True, timeout=60)
                    self.assertEqual(p.returncode, 0, p.stderr)
                    self.assertIn(f"content-encoding: {coding}", p.stdout.lower())
                    with open(out, "rb") as f:
                        self.assertEqual(f.read(), self.bodies[name])

    def test_keep_alive_after_a_compressed_response(self):
        with jtest.raw_connection(self.lb.port, timeout=30) as sock:
            for name in ("hundred_k.json", "one_k.txt", "hundred_k.json"):
                self.assert_encoded(self.get("/" + name, accept="gzip", sock=sock), "gzip", self.bodies[name])
            r = self.get("/picture.png", accept="gzip", sock=sock)
            self.assert_identity(r, self.bodies["picture.png"])

    def test_http10_client_gets_a_body_ended_by_the_close(self):
        r = self.get("/hundred_k.json", accept="gzip", version="1.0")
        self.assertEqual(r.header("Content-Encoding"), "gzip")
        self.assertIsNone(r.header("Transfer-Encoding"))
        self.assertIsNone(r.header("Content-Length"))
        self.assertEqual(r.header("Connection"), "close")
        self.assertEqual(gzip.decompress(r.body), self.bodies["hundred_k.json"])

    # ------------------------------------------------------------ when not to compress

    def test_left_alone(self):
        big = "/bytes?n=5000&type=text/plain"
        cases = [
            ("not asked", "/one_k.txt", "any.test", None, ""),
            ("identity only", "/one_k.txt", "any.test", "identity", ""),
            ("refused by q=0", "/one_k.txt", "gzip.test", "gzip;q=0, br", ""),
            ("a route without compression", "/one_k.txt", "plain.test", "gzip", ""),
            ("an image", "/picture.png", "any.test", "gzip, br, zstd", ""),
            ("a small body", "/small.txt", "any.test", "gzip", ""),
            ("a Range request", "/three_m.html", "any.test", "gzip", "Range: bytes=0-99\r\n"),
            ("already encoded", big + "&header=Content-Encoding:gzip", "any.test", "gzip", ""),
            ("no-transform", big + "&header=Cache-Control:public,%20no-transform", "any.test", "gzip", ""),
        ]
        for what, path, host, accept, extra in cases:
            with self.subTest(what):
                r = self.get(path, host=host, accept=accept, extra=extra)
                self.assertEqual(r.status, 200)
                # The server's own coding (when it set one) is relayed as it is, once.
                server_coding = ["gzip"] if "Content-Encoding" in path else []
                self.assertEqual([v for k, v in r.headers if k.lower() == "content-encoding"], server_coding)
                self.assertIsNotNone(r.header("Content-Length"))
                self.assertIsNone(r.header("Vary"))
        r = self.get("/three_m.html", accept="gzip", method="HEAD")
        self.assert_identity(r)
        self.assertEqual(r.header("Content-Length"), "3000000")
        for status in (304, 204):
            with self.subTest(status=status):
                r = self.get(f"/status/{status}", accept="gzip")
                self.assertEqual(r.status, status)
                self.assert_identity(r, b"")

    # ------------------------------------------------------------ negotiation and head edits

    def test_q_values_and_the_server_order(self):
        cases = [
            ("any.test", "gzip", "gzip"),
            ("any.test", "gzip;q=0.5, br;q=0.9", "br"),
            ("any.test", "gzip, br;q=0", "gzip"),
            ("any.test", "*", "zstd"),                       # ties: zstd > br > gzip
            ("any.test", "gzip, br, zstd", "zstd"),
            ("any.test", "br;q=0.5, zstd;q=0.5, gzip;q=0.5", "zstd"),
            ("any.test", "*;q=0.1, gzip", "gzip"),
            ("any.test", "zstd;q=0, *", "br"),
            ("any.test", "GZIP;Q=1.000", "gzip"),
            ("brgz.test", "zstd, br, gzip", "br"),            # the route has no zstd
            ("brgz.test", "zstd", None),
            ("gzip.test", "x-gzip", "gzip"),
            ("gzip.test", "gzip;q=0, br", None),           # q=0 refuses
            ("any.test", "*;q=0", None),
            ("any.test", "deflate", None),
            ("any.test", "gzip;q=bad", None),               # a malformed element is ignored
        ]
        for host, accept, coding in cases:
            with self.subTest(host=host, accept=accept):
                r = self.get("/one_k.txt", host=host, accept=accept)
                self.assertEqual(r.header("Content-Encoding"), coding)
                self.assertEqual(decode(coding, r.body), self.bodies["one_k.txt"])
        # Two Accept-Encoding lines are one list (RFC 9110 5.3): the second names br.
        r = self.get("/one_k.txt", accept="gzip;q=0.1", extra="Accept-Encoding: br\r\n")
        self.assertEqual(r.header("Content-Encoding"), "br")
        self.assertEqual(decode("br", r.body), self.bodies["one_k.txt"])

    def test_vary_merged_and_etag_weakened(self):
        base = "/bytes?n=5000&type=application/json&header="
        cases = [
            ("Vary:Origin", "Vary", "Origin, Accept-Encoding"),
            ("Vary:accept-encoding", "Vary", "accept-encoding"),
            ("Vary:*", "Vary", "*"),
            ('ETag:"v1"', "ETag", 'W/"v1"'),
            ('ETag:W/"v2"', "ETag", 'W/"v2"'),
        ]
        for header, name, value in cases:
            with self.subTest(header):
                r = self.get(base + header.replace('"', "%22"), accept="gzip")
                self.assertEqual(r.header("Content-Encoding"), "gzip")
                self.assertEqual([v for k, v in r.headers if k.lower() == name.lower()], [value])
                self.assertEqual(gzip.decompress(r.body), jtest.pattern_bytes(5000))

    # ------------------------------------------------------------ backpressure

    def test_slow_readers_get_every_byte(self):
        """Three clients at once, each reading 4 KB every 20 ms for 2 s, then the rest at
        full speed, of a 24 MB text body (about 8 MB gzipped, more than the loopback socket
        buffers hold): the balancer holds each encoder and the server back meanwhile
        (nothing is pushed and the server is not read while a client write is pending) and
        delivers every body byte for byte."""
        results, errors = {}, []

        def fetch(k: int) -> None:
            try:
                with jtest.raw_connection(self.lb.port, timeout=30) as sock:
                    sock.sendall(b"GET /big.txt HTTP/1.1\r\nHost: a.test\r\nAccept-Encoding: gzip\r\n\r\n")
                    deadline = time.monotonic() + 2
                    slow = bytearray()
                    while time.monotonic() < deadline:
                        slow += sock.recv(4096)
                        time.sleep(0.02)
                    results[k] = (len(slow), jtest.read_response(_Joined(bytes(slow), sock.makefile("rb"))))
            except Exception as error:  # reported below, in the test's thread
                errors.append(f"client {k}: {error!r}")

        threads = [threading.Thread(target=fetch, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        for k in range(3):
            slow, r = results[k]
            self.assertLess(slow, 600_000)  # it was read slowly indeed
            self.assert_encoded(r, "gzip", self.bodies["big.txt"])

    def test_100_stalled_readers_hold_bounded_memory(self):
        """100 clients ask for the 24 MB text (gzip, br and zstd in turn), read its first
        bytes and stop reading. The balancer must hold each encoder and the server back, not
        buffer the body: its memory grows by the encoders' state and a few buffers per
        client (measured: 0.9 to 1.2 MB on average; gzip 0.5 MB, br 0.6 MB, zstd 1.5 MB), never by the
        8 MB each
        compressed body is. Then the last client reads to the end and gets every byte."""
        codings = ["gzip", "br", "zstd"]
        base = jtest.rss_kb(self.lb.pid)
        socks, first = [], []
        self.addCleanup(lambda: [s.close() for s in socks])
        for k in range(100):
            # A small window, set before connect so the handshake advertises it: the
            # balancer's kernel then takes little, and the stall comes after a few KB.
            s = socket.socket()
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            s.settimeout(30)
            s.connect((jtest.LOOPBACK, self.lb.port))
            s.sendall(f"GET /big.txt HTTP/1.1\r\nHost: a.test\r\nAccept-Encoding: {codings[k % len(codings)]}"
                      "\r\n\r\n".encode())
            # One at a time: its response has started (its encoder is taken) before the
            # next asks, so the single-threaded testserver is not asked 100 times at once.
            first.append(s.recv(4096))
            self.assertTrue(first[-1].startswith(b"HTTP/1.1 200"), (k, first[-1][:100]))
        # Held back: the balancer's memory stops growing once every window is full.
        last, still_since = jtest.rss_kb(self.lb.pid), time.monotonic()
        deadline = time.monotonic() + 10
        while time.monotonic() - still_since < 1.0 and time.monotonic() < deadline:
            time.sleep(0.1)
            now = jtest.rss_kb(self.lb.pid)
            if now > last + 256:
                last, still_since = now, time.monotonic()
        per_reader = (jtest.rss_kb(self.lb.pid) - base) / len(socks)
        print(f"\n100 stalled compressing readers: {per_reader:.0f} kB each")
        # Under the suite's ASan pass RSS counts redzones and quarantine, not our memory.
        if "ASAN_OPTIONS" not in os.environ:
            self.assertLess(per_reader, 2048, "kB per stalled compressing reader")
        # The last client (gzip: 99 % 3 == 0) has stalled the shortest, well within
        # compress.def's 20 s client_idle, past which a client that does not read is cut.
        for s in socks[:-1]:
            s.close()
        r = jtest.read_response(_Joined(first[-1], socks[-1].makefile("rb")))
        self.assert_encoded(r, "gzip", self.bodies["big.txt"])

class _Joined:
    """Bytes already read, then a file: readline() and read(n) across both."""

    def __init__(self, first: bytes, rest):
        self.buf, self.rest = bytearray(first), rest

    def _fill(self, n: int) -> None:
        while len(self.buf) < n:
            more = self.rest.read1(65536)
            if not more:
                break
            self.buf += more

    def readline(self) -> bytes:
        while b"\n" not in self.buf:
            before = len(self.buf)
            self._fill(before + 1)
            if len(self.buf) == before:
                break
        i = self.buf.find(b"\n") + 1 or len(self.buf)
        line, self.buf = bytes(self.buf[:i]), self.buf[i:]
        return line

    def read(self, n: int = -1) -> bytes:
        self._fill(n)
        out, self.buf = bytes(self.buf[:n]), self.buf[n:]
        return out


if __name__ == "__main__":
    unittest.main()

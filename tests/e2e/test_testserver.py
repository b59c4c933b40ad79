"""bin/testserver, the backend every end-to-end test runs behind the balancer: each endpoint,
keep-alive and pipelining, streaming with backpressure, the command line and signals."""

import hashlib
import http.client
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import jtest


def proc_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def send_raw(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Sends `data`, half-closes, and returns everything the server sends until it closes."""
    with jtest.raw_connection(port, timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return jtest.recv_to_end(sock)


def expect_eof(test: unittest.TestCase, sock: socket.socket, timeout: float = 5.0) -> None:
    sock.settimeout(timeout)
    test.assertEqual(sock.recv(1), b"", "the server should have closed the connection")


class Endpoints(jtest.JugglerTestCase):
    """One server for the class; each test uses fresh connections."""

    @classmethod
    def setUpClass(cls):
        cls.root = tempfile.mkdtemp(prefix="testserver-root-")
        cls.addClassCleanup(shutil.rmtree, cls.root, True)
        os.makedirs(os.path.join(cls.root, "sub"))
        files = {
            "index.html": b"<!DOCTYPE html><title>root index</title>\n",
            "sub/index.html": b"<p>sub index</p>\n",
            "style.css": b"body{}\n",
            "app.js": b"let x = 1;\n",
            "data.json": b"{}\n",
            "notes.txt": b"notes\n",
            "pic.png": b"\x89PNG\r\n",
            "mod.wasm": b"\x00asm",
            "blob.unknownext": b"??",
            "empty.txt": b"",
            "a..b.txt": b"dots inside a name are fine\n",
            "big.bin": os.urandom(3 * 1024 * 1024 + 17),
        }
        for name, data in files.items():
            with open(os.path.join(cls.root, name), "wb") as out:
                out.write(data)
        cls.files = files
        cls.server = cls.start_class_testserver(root=cls.root)
        cls.port = cls.server.port

    def request(self, method="GET", path="/", body=None, headers=None):
        return jtest.http_request(self.port, method, path, body, headers)

    # ---------------------------------------------------------------- /ping and common headers

    def test_ping(self):
        status, headers, body = self.request(path="/ping")
        self.assertEqual(status, 200)
        self.assertEqual(body, b"pong\n")
        self.assertEqual(headers["X-Server"], str(self.port))
        self.assertEqual(headers["Content-Length"], "5")
        self.assertGreaterEqual(int(headers["X-Conn"]), 1)

    def test_other_methods_and_head(self):
        for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
            status, _, body = self.request(method, "/ping", body=b"ignored")
            self.assertEqual((status, body), (200, b"pong\n"), method)
        status, headers, body = self.request("HEAD", "/ping")
        self.assertEqual((status, body, headers["Content-Length"]), (200, b"", "5"))

    def test_x_conn_counts_connections(self):
        conn = http.client.HTTPConnection(jtest.LOOPBACK, self.port, timeout=10)
        self.addCleanup(conn.close)
        serials = []
        for _ in range(3):
            conn.request("GET", "/ping")
            resp = conn.getresponse()
            resp.read()
            serials.append(int(resp.headers["X-Conn"]))
        self.assertEqual(len(set(serials)), 1, "keep-alive: one connection, one serial")
        _, headers, _ = self.request(path="/ping")
        self.assertGreater(int(headers["X-Conn"]), serials[0])

    # ---------------------------------------------------------------- keep-alive and pipelining

    def test_http10_closes_unless_keep_alive(self):
        reply = send_raw(self.port, b"GET /ping HTTP/1.0\r\n\r\n")
        self.assertTrue(reply.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertIn(b"\r\nConnection: close\r\n", reply)
        self.assertTrue(reply.endswith(b"\r\n\r\npong\n"))

        with jtest.raw_connection(self.port) as sock:
            reader = sock.makefile("rb")
            for _ in range(2):
                sock.sendall(b"GET /ping HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                resp = jtest.read_response(reader)
                self.assertEqual(resp.body, b"pong\n")
                self.assertEqual(resp.header("Connection"), "keep-alive")

    def test_connection_close_request(self):
        with jtest.raw_connection(self.port) as sock:
            sock.sendall(b"GET /ping HTTP/1.1\r\nConnection: close\r\n\r\n")
            resp = jtest.read_response(sock.makefile("rb"))
            self.assertEqual(resp.header("Connection"), "close")
            expect_eof(self, sock)

    def test_pipelining_answers_in_order(self):
        requests, expected = [], []
        for i in range(10):
            kind = i % 5
            if kind == 0:
                body = os.urandom(1000 + i)
                requests.append(b"POST /echo?i=%d HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (i, len(body))
                                + body)
                expected.append(body)
            elif kind == 1:
                requests.append(b"GET /delay?ms=30 HTTP/1.1\r\nHost: t\r\n\r\n")
                expected.append(b"delayed 30\n")
            elif kind == 2:
                requests.append(b"GET /bytes?n=%d&chunked=1 HTTP/1.1\r\nHost: t\r\n\r\n" % (70000 * i))
                expected.append(jtest.pattern_bytes(70000 * i))
            elif kind == 3:
                requests.append(b"GET /status/404 HTTP/1.1\r\nHost: t\r\n\r\n")
                expected.append(b"404 Not Found\n")
            else:
                requests.append(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                expected.append(b"abcde")
        with jtest.raw_connection(self.port) as sock:
            sock.sendall(b"".join(requests))  # all ten in one write
            reader = sock.makefile("rb")
            serials = set()
            for i, want in enumerate(expected):
                resp = jtest.read_response(reader)
                self.assertEqual(resp.body, want, f"response {i}")
                serials.add(resp.header("X-Conn"))
            self.assertEqual(len(serials), 1)

    def test_many_pipelined_requests_byte_by_byte_and_in_bulk(self):
        one = b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n"
        with jtest.raw_connection(self.port) as sock:
            for byte in one * 2:  # partial reads: one byte per segment
                sock.sendall(bytes([byte]))
            sock.sendall(one * 500)
            reader = sock.makefile("rb")
            for _ in range(502):
                self.assertEqual(jtest.read_response(reader).body, b"pong\n")

    # ---------------------------------------------------------------- /echo

    def test_echo(self):
        body = os.urandom(200_000)
        status, headers, got = self.request("PUT", "/echo?x=1&y=%20", body, {"Content-Type": "image/x-test"})
        self.assertEqual(status, 200)
        self.assertEqual(got, body)
        self.assertEqual(headers["Content-Type"], "image/x-test")
        self.assertEqual(headers["X-Echo-Method"], "PUT")
        self.assertEqual(headers["X-Echo-Target"], "/echo?x=1&y=%20")
        self.assertEqual(headers["X-Echo-Body-Length"], str(len(body)))

    def test_echo_empty_and_default_type(self):
        status, headers, got = self.request("GET", "/echo")
        self.assertEqual((status, got, headers["Content-Type"]), (200, b"", "application/octet-stream"))
        self.assertEqual(headers["X-Echo-Body-Length"], "0")
        self.assertEqual(headers["X-Echo-Method"], "GET")

    def test_echo_10mb_byte_exact(self):
        body = os.urandom(10 * 1024 * 1024)
        _, headers, got = self.request("POST", "/echo", body)
        self.assertEqual(headers["X-Echo-Body-Length"], str(len(body)))
        self.assertEqual(hashlib.sha256(got).digest(), hashlib.sha256(body).digest())

    def test_echo_chunked_upload(self):
        pieces = [os.urandom(n) for n in (1, 100, 65536, 300_000, 7)]
        wire = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces)
        with jtest.raw_connection(self.port) as sock:
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + wire
                         + b"0\r\nX-Trailer: t\r\n\r\n")
            resp = jtest.read_response(sock.makefile("rb"))
        self.assertEqual(resp.body, b"".join(pieces))
        self.assertEqual(resp.header("X-Echo-Body-Length"), str(sum(map(len, pieces))))

    def test_echo_expect_100_continue(self):
        body = os.urandom(100_000)
        with jtest.raw_connection(self.port) as sock:
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
                         % len(body))
            reader = sock.makefile("rb")
            interim = jtest.read_response(reader)
            self.assertEqual((interim.status, interim.reason), (100, "Continue"))
            self.assertEqual(interim.header("X-Server"), str(self.port))
            sock.sendall(body)
            resp = jtest.read_response(reader)
        self.assertEqual((resp.status, resp.body), (200, body))

    # ---------------------------------------------------------------- /interim

    def test_interim_responses_then_200_on_a_kept_alive_connection(self):
        for code, n in ((100, 3), (103, 1), (100, 0), (100, 1000)):
            with self.subTest(code=code, n=n), jtest.raw_connection(self.port) as sock:
                reader = sock.makefile("rb")
                sock.sendall(b"GET /interim?n=%d&code=%d HTTP/1.1\r\n\r\n" % (n, code))
                interims = []
                while (resp := jtest.read_response(reader)).status < 200:
                    interims.append(resp)
                self.assertEqual([r.status for r in interims], [code] * n)
                self.assertTrue(all(r.header("X-Server") == str(self.port) for r in interims))
                self.assertEqual((resp.status, resp.body), (200, b"interim %d\n" % n))
                sock.sendall(b"GET /ping HTTP/1.1\r\n\r\n")
                self.assertEqual(jtest.read_response(reader).body, b"pong\n")

    def test_interim_101_has_upgrade_headers(self):
        with jtest.raw_connection(self.port) as sock:
            reader = sock.makefile("rb")
            sock.sendall(b"GET /interim?n=1&code=101 HTTP/1.1\r\n\r\n")
            first = jtest.read_response(reader)
            self.assertEqual((first.status, first.reason), (101, "Switching Protocols"))
            self.assertEqual((first.header("Connection"), first.header("Upgrade")), ("Upgrade", "testserver"))
            self.assertEqual(jtest.read_response(reader).status, 200)

    def test_interim_bad_arguments(self):
        for path in ("/interim", "/interim?n=x", "/interim?n=10001", "/interim?n=1&code=99",
                     "/interim?n=1&code=200"):
            self.assertEqual(self.request(path=path)[0], 400, path)

    # ---------------------------------------------------------------- /headers

    def test_headers_lists_request_exactly(self):
        request = (b"GET /headers?q=1 HTTP/1.1\r\nHost: example.test\r\nX-Forwarded-For: 10.0.0.1\r\n"
                   b"x-lower: a  b\r\nVia: 1.1 juggler\r\nX-Empty:\r\nConnection: keep-alive\r\n\r\n")
        with jtest.raw_connection(self.port) as sock:
            sock.sendall(request)
            resp = jtest.read_response(sock.makefile("rb"))
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.body.decode().split("\n"), [
            "GET /headers?q=1 HTTP/1.1",
            "Host: example.test",
            "X-Forwarded-For: 10.0.0.1",
            "x-lower: a  b",
            "Via: 1.1 juggler",
            "X-Empty: ",
            "Connection: keep-alive",
            "",
        ])

    # ---------------------------------------------------------------- /delay

    def test_delay_does_not_block_other_connections(self):
        result = {}

        def slow():
            start = time.monotonic()
            result["reply"] = self.request(path="/delay?ms=2000")
            result["elapsed"] = time.monotonic() - start

        thread = threading.Thread(target=slow)
        thread.start()
        time.sleep(0.1)
        start = time.monotonic()
        self.assertEqual(self.request(path="/ping")[2], b"pong\n")
        self.assertLess(time.monotonic() - start, 1.0)  # behind the delay it would take ~1.9 s
        thread.join(10)
        self.assertEqual(result["reply"][2], b"delayed 2000\n")
        self.assertGreaterEqual(result["elapsed"], 1.99)

    def test_delay_bad_argument(self):
        for path in ("/delay", "/delay?ms=", "/delay?ms=-1", "/delay?ms=abc"):
            self.assertEqual(self.request(path=path)[0], 400, path)
        self.assertEqual(self.request(path="/delay?x=1&ms=0")[2], b"delayed 0\n")

    # ---------------------------------------------------------------- /status/N

    def test_status_codes(self):
        for code in (200, 201, 301, 400, 404, 418, 500, 502, 503, 599):
            status, headers, body = self.request(path=f"/status/{code}")
            self.assertEqual(status, code)
            self.assertTrue(body.startswith(str(code).encode()), body)
            self.assertEqual(headers["Content-Length"], str(len(body)))

    def test_status_without_body(self):
        with jtest.raw_connection(self.port) as sock:
            reader = sock.makefile("rb")
            for code in (204, 304):
                sock.sendall(b"GET /status/%d HTTP/1.1\r\n\r\n" % code)
                resp = jtest.read_response(reader)
                self.assertEqual(resp.status, code)
                self.assertIsNone(resp.header("Content-Length"))
            sock.sendall(b"HEAD /status/500 HTTP/1.1\r\n\r\nGET /ping HTTP/1.1\r\n\r\n")
            resp = jtest.read_response(reader, head=True)
            self.assertEqual(resp.status, 500)
            self.assertNotEqual(resp.header("Content-Length"), "0")
            # nothing of a body leaked between the two: the next response parses
            self.assertEqual(jtest.read_response(reader).body, b"pong\n")

    def test_status_out_of_range(self):
        for path in ("/status/100", "/status/600", "/status/99", "/status/abc", "/status/"):
            self.assertEqual(self.request(path=path)[0], 400, path)

    # ---------------------------------------------------------------- /bytes

    def test_bytes_content_length(self):
        status, headers, body = self.request(path="/bytes?n=1000003")
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Length"], "1000003")
        self.assertEqual(body, jtest.pattern_bytes(1000003))

    def test_bytes_chunked_framing(self):
        with jtest.raw_connection(self.port) as sock:
            sock.sendall(b"GET /bytes?n=200000&chunked=1 HTTP/1.1\r\n\r\n")
            resp = jtest.read_response(sock.makefile("rb"))
        self.assertEqual(resp.header("Transfer-Encoding"), "chunked")
        self.assertIsNone(resp.header("Content-Length"))
        self.assertEqual(resp.body, jtest.pattern_bytes(200000))
        self.assertTrue(all(0 < size <= 65536 for size in resp.chunk_sizes), resp.chunk_sizes)

    def test_bytes_cut_announces_more_than_it_sends_then_closes(self):
        for cut in (0, 1, 100000):
            with jtest.raw_connection(self.port) as sock:
                sock.sendall(b"GET /bytes?n=300000&cut=%d HTTP/1.1\r\n\r\n" % cut)
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            self.assertIn(b"Content-Length: 300000", head)
            self.assertEqual(body, jtest.pattern_bytes(cut))

    def test_bytes_pause_sends_part_then_waits_then_the_rest(self):
        p = jtest.pattern_bytes(300000)
        for chunked in (False, True):
            # What comes before the pause, on the wire: a chunk ends where the pause begins.
            before = (b"10000\r\n" + p[:65536] + b"\r\n" + b"86a0\r\n" + p[65536:100000] + b"\r\n"
                      if chunked else p[:100000])
            with self.subTest(chunked=chunked), jtest.raw_connection(self.port) as sock:
                reader = sock.makefile("rb")
                started = time.monotonic()
                sock.sendall(b"GET /bytes?n=300000&pause=100000&pause_ms=1000%s HTTP/1.1\r\n\r\n"
                             % (b"&chunked=1" if chunked else b""))
                self.assertEqual(reader.readline(), b"HTTP/1.1 200 OK\r\n")
                while reader.readline() != b"\r\n":
                    pass
                self.assertEqual(reader.read(len(before)), before)
                self.assertLess(time.monotonic() - started, 0.7)
                self.assertEqual(select.select([sock], [], [], 0.3)[0], [])  # the pause: nothing comes
                if chunked:
                    rest = b""
                    while size := int(reader.readline(), 16):
                        rest += reader.read(size)
                        self.assertEqual(reader.readline(), b"\r\n")
                    self.assertEqual(reader.readline(), b"\r\n")
                else:
                    rest = reader.read(200000)
                self.assertGreaterEqual(time.monotonic() - started, 0.99)
                self.assertEqual(rest, p[100000:])
                # The connection goes on.
                sock.sendall(b"GET /ping HTTP/1.1\r\n\r\n")
                self.assertEqual(jtest.read_response(reader).body, b"pong\n")

    def test_bytes_pause_default_and_bad_arguments(self):
        started = time.monotonic()
        self.assertEqual(self.request(path="/bytes?n=10&pause=0")[2], jtest.pattern_bytes(10))
        self.assertGreaterEqual(time.monotonic() - started, 0.99)  # pause_ms defaults to 1000
        self.assertEqual(self.request(path="/bytes?n=10&pause=10&pause_ms=5000")[2], jtest.pattern_bytes(10))
        for path in ("/bytes?n=10&pause=x", "/bytes?n=10&pause=1&pause_ms=-1", "/bytes?n=10&pause=1&pauses=0",
                     "/bytes?n=10&pause=0&pauses=2", "/bytes?n=10&pause=1&pauses=x"):
            self.assertEqual(self.request(path=path)[0], 400, path)

    def test_bytes_pauses_repeat_every_k_bytes(self):
        with jtest.raw_connection(self.port) as sock:
            reader = sock.makefile("rb")
            sock.sendall(b"GET /bytes?n=1000&pause=300&pause_ms=400&pauses=3 HTTP/1.1\r\n\r\n")
            started = time.monotonic()
            while reader.readline() != b"\r\n":
                pass
            arrivals = []
            for k in range(4):  # 300, 300, 300 and the last 100, a pause before each but the first
                self.assertEqual(reader.read(100 if k == 3 else 300), jtest.pattern_bytes(1000)[300 * k:300 * k + 300])
                arrivals.append(time.monotonic() - started)
            gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
            self.assertTrue(all(gap >= 0.39 for gap in gaps), gaps)
            self.assertLess(arrivals[0], 0.3)

    def test_bytes_edge_cases(self):
        self.assertEqual(self.request(path="/bytes?n=0")[2], b"")
        self.assertEqual(self.request(path="/bytes?n=0&chunked=1")[2], b"")
        self.assertEqual(self.request(path="/bytes?n=1&chunked=1")[2], b"0")
        status, headers, body = self.request("HEAD", "/bytes?n=123456")
        self.assertEqual((status, body, headers["Content-Length"]), (200, b"", "123456"))
        for path in ("/bytes", "/bytes?n=", "/bytes?n=-5", "/bytes?n=1x"):
            self.assertEqual(self.request(path=path)[0], 400, path)

    def test_bytes_large_stream_constant_memory(self):
        n = 200_000_000
        rss_before = proc_rss_kb(self.server.pid)
        with jtest.raw_connection(self.port, timeout=60) as sock:
            sock.sendall(b"GET /bytes?n=%d HTTP/1.1\r\n\r\n" % n)
            reader = sock.makefile("rb")
            resp_head = jtest.read_response(reader, head=True)
            self.assertEqual(resp_head.header("Content-Length"), str(n))
            digest = hashlib.sha256()
            left = n
            peak = 0
            while left:
                block = reader.read(min(left, 4 << 20))
                self.assertTrue(block, "stream ended early")
                digest.update(block)
                left -= len(block)
                peak = max(peak, proc_rss_kb(self.server.pid))
        self.assertEqual(digest.hexdigest(), jtest.pattern_sha256(n))
        self.assertLess(peak - rss_before, 32 * 1024, "the server buffered the stream")

    def test_bytes_stalled_client_is_bounded(self):
        rss_before = proc_rss_kb(self.server.pid)
        with jtest.raw_connection(self.port) as sock:
            sock.sendall(b"GET /bytes?n=2000000000 HTTP/1.1\r\n\r\n")
            time.sleep(0.5)  # read nothing: the server must stop producing
            self.assertLess(proc_rss_kb(self.server.pid) - rss_before, 16 * 1024)
            self.assertTrue(sock.recv(1000).startswith(b"HTTP/1.1 200 OK"))
        # disconnecting mid-stream frees everything and the server goes on
        self.assertEqual(self.request(path="/ping")[2], b"pong\n")

    # ---------------------------------------------------------------- /close, /reset, /hang

    def test_close(self):
        with jtest.raw_connection(self.port) as sock:
            sock.sendall(b"GET /close HTTP/1.1\r\n\r\nGET /ping HTTP/1.1\r\n\r\n")
            reader = sock.makefile("rb")
            resp = jtest.read_response(reader)
            self.assertEqual((resp.status, resp.header("Connection")), (200, "close"))
            self.assertEqual(reader.read(), b"", "nothing after the closing response")

    def test_reset(self):
        with jtest.raw_connection(self.port) as sock:
            sock.sendall(b"GET /reset HTTP/1.1\r\n\r\n")
            with self.assertRaises(ConnectionResetError):
                sock.recv(1000)

    def test_reset_after_answered_request(self):
        with jtest.raw_connection(self.port) as sock:
            sock.sendall(b"GET /ping HTTP/1.1\r\n\r\n")
            self.assertEqual(jtest.read_response(sock.makefile("rb")).body, b"pong\n")
            sock.sendall(b"GET /reset HTTP/1.1\r\n\r\n")
            with self.assertRaises(ConnectionResetError):
                sock.recv(1000)

    def test_hang(self):
        with jtest.raw_connection(self.port) as sock:
            sock.sendall(b"GET /hang HTTP/1.1\r\n\r\nGET /ping HTTP/1.1\r\n\r\n")
            sock.settimeout(0.5)
            with self.assertRaises(socket.timeout):
                sock.recv(1000)
            self.assertEqual(self.request(path="/ping")[2], b"pong\n")

    # ---------------------------------------------------------------- errors

    def test_malformed_request_gets_400_and_close(self):
        for bad in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
                    b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
                    b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"):
            reply = send_raw(self.port, bad)
            self.assertTrue(reply.startswith(b"HTTP/1.1 400 "), (bad, reply))
            self.assertIn(b"\r\nConnection: close\r\n", reply)

    def test_huge_head_gets_431(self):
        reply = send_raw(self.port, b"GET /ping HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
        self.assertTrue(reply.startswith(b"HTTP/1.1 431 "), reply[:100])

    def test_truncated_request_then_eof(self):
        self.assertEqual(send_raw(self.port, b"POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"), b"")
        reply = send_raw(self.port, b"GET /ping HTTP/1.1\r\n\r\n")  # answered, then closed on EOF
        self.assertTrue(reply.endswith(b"pong\n"))

    # ---------------------------------------------------------------- static files

    def test_static_index_and_types(self):
        cases = {
            "/": ("index.html", "text/html; charset=utf-8"),
            "/index.html": ("index.html", "text/html; charset=utf-8"),
            "/sub/": ("sub/index.html", "text/html; charset=utf-8"),
            "/sub": ("sub/index.html", "text/html; charset=utf-8"),
            "/style.css": ("style.css", "text/css; charset=utf-8"),
            "/app.js": ("app.js", "text/javascript; charset=utf-8"),
            "/data.json?v=2": ("data.json", "application/json"),
            "/notes.txt": ("notes.txt", "text/plain; charset=utf-8"),
            "/pic.png": ("pic.png", "image/png"),
            "/mod.wasm": ("mod.wasm", "application/wasm"),
            "/blob.unknownext": ("blob.unknownext", "application/octet-stream"),
            "/empty.txt": ("empty.txt", "text/plain; charset=utf-8"),
            "/a..b.txt": ("a..b.txt", "text/plain; charset=utf-8"),
            "/%61pp.js": ("app.js", "text/javascript; charset=utf-8"),
        }
        for path, (name, ctype) in cases.items():
            status, headers, body = self.request(path=path)
            self.assertEqual(status, 200, path)
            self.assertEqual(body, self.files[name], path)
            self.assertEqual(headers["Content-Type"], ctype, path)
            self.assertEqual(headers["Content-Length"], str(len(self.files[name])), path)

    def test_static_big_file_and_head(self):
        status, headers, body = self.request(path="/big.bin")
        self.assertEqual((status, body), (200, self.files["big.bin"]))
        status, headers, body = self.request("HEAD", "/big.bin")
        self.assertEqual((status, body, headers["Content-Length"]), (200, b"", str(len(self.files["big.bin"]))))

    def test_static_errors(self):
        self.assertEqual(self.request(path="/missing.html")[0], 404)
        self.assertEqual(self.request(path="/sub/missing/")[0], 404)
        self.assertEqual(self.request("POST", "/index.html", b"x")[0], 405)
        for path in (b"/../etc/passwd", b"/sub/../../x", b"/%2e%2e/etc/passwd", b"/..", b"/index.html%00.txt"):
            reply = send_raw(self.port, b"GET " + path + b" HTTP/1.1\r\n\r\n")
            self.assertTrue(reply.startswith(b"HTTP/1.1 403 "), (path, reply[:40]))

    # ---------------------------------------------------------------- many connections

    def test_many_concurrent_connections(self):
        count = 300
        socks = [jtest.raw_connection(self.port) for _ in range(count)]
        try:
            for sock in socks:
                sock.sendall(b"GET /delay?ms=100 HTTP/1.1\r\n\r\n")
            serials = set()
            for sock in socks:
                resp = jtest.read_response(sock.makefile("rb"))
                self.assertEqual(resp.body, b"delayed 100\n")
                serials.add(resp.header("X-Conn"))
            self.assertEqual(len(serials), count)
        finally:
            for sock in socks:
                sock.close()


class NoRoot(jtest.JugglerTestCase):
    def test_everything_else_is_404(self):
        server = self.start_testserver()
        for path in ("/", "/index.html", "/x/y"):
            status, _, body = jtest.http_request(server.port, path=path)
            self.assertEqual(status, 404, path)
            self.assertTrue(body)

    def test_demo_roots(self):
        for n in (1, 2, 3):
            server = self.start_testserver(root=jtest.demo_root(n))
            status, headers, body = jtest.http_request(server.port, path="/")
            self.assertEqual(status, 200)
            self.assertIn(f"Juggler demo backend {n}".encode(), body)
            self.assertEqual(headers["X-Server"], str(server.port))


class CommandLine(jtest.JugglerTestCase):
    def run_testserver(self, *args):
        return jtest.run_program([jtest.binary("testserver"), *args], timeout=10)

    def test_help(self):
        result = self.run_testserver("--help")
        self.assertEqual(result.returncode, 0)
        self.assertIn("--port", result.stdout)

    def test_bad_arguments_exit_2(self):
        for args in ([], ["--port"], ["--port", "x"], ["--port", "70000"], ["--port", "1", "--bogus"],
                     ["--port", "1", "--root", "/nonexistent-dir"], ["--port", "1", "--host", "not-an-ip"],
                     ["--port", "1", "--drop-after", "x"], ["--port", "1", "--drop-after"]):
            result = self.run_testserver(*args)
            self.assertEqual(result.returncode, 2, args)
            self.assertIn("testserver:", result.stderr, args)

    def test_port_in_use_exits_1(self):
        server = self.start_testserver()
        result = self.run_testserver("--port", str(server.port), "--quiet")
        self.assertEqual(result.returncode, 1)
        self.assertIn("address already in use", result.stderr)

    def test_port_equals_form_and_listening_line(self):
        port = jtest.free_port()
        proc = jtest.start_process([jtest.binary("testserver"), f"--port={port}", "--quiet"],
                                   jtest.TESTSERVER_READY)
        self.addCleanup(proc.stop)
        self.assertEqual(proc.lines[0], f"testserver listening on 127.0.0.1:{port}")

    def test_signals_exit_0_promptly(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            server = self.start_testserver()
            # busy connections must not delay the exit
            socks = [jtest.raw_connection(server.port) for _ in range(3)]
            for sock in socks:
                self.addCleanup(sock.close)
            socks[0].sendall(b"GET /hang HTTP/1.1\r\n\r\n")
            socks[1].sendall(b"GET /delay?ms=60000 HTTP/1.1\r\n\r\n")
            socks[2].sendall(b"GET /bytes?n=2000000000 HTTP/1.1\r\n\r\n")
            time.sleep(0.2)
            start = time.monotonic()
            server.send_signal(sig)
            self.assertEqual(server.wait(timeout=5), 0)
            self.assertLess(time.monotonic() - start, 2)

    def test_drop_after_closes_upon_the_next_request_without_answering(self):
        server = self.start_testserver(quiet=False, extra_args=["--drop-after", "2"])
        with jtest.raw_connection(server.port) as sock:
            reader = sock.makefile("rb")
            for _ in range(2):
                sock.sendall(b"GET /ping HTTP/1.1\r\n\r\n")
                resp = jtest.read_response(reader)
                self.assertEqual((resp.body, resp.header("X-Conn")), (b"pong\n", "1"))
            # The connection stays open while idle...
            sock.settimeout(0.3)
            with self.assertRaises(socket.timeout):
                sock.recv(1)
            sock.settimeout(5)
            # ...and closes, without a byte, once the next request came.
            sock.sendall(b"GET /ping HTTP/1.1\r\n\r\n")
            self.assertEqual(reader.read(), b"")
        # Every connection gets its own count.
        self.assertEqual(jtest.http_request(server.port, path="/ping")[1]["X-Conn"], "2")
        # The server logs a request after answering it: wait for the fourth line.
        deadline = time.monotonic() + 5
        while len(server.lines) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(server.lines[1:5], ["GET /ping 200"] * 2 + ["GET /ping drop", "GET /ping 200"])
        zero = self.start_testserver(extra_args=["--drop-after=0"])
        self.assertEqual(send_raw(zero.port, b"GET /ping HTTP/1.1\r\n\r\n"), b"")

    def test_delay_logs_on_arrival_and_on_answer(self):
        server = self.start_testserver(quiet=False)
        with jtest.raw_connection(server.port) as sock:
            sock.sendall(b"GET /delay?ms=60000 HTTP/1.1\r\n\r\n")
            server.wait_for_line(r"^GET /delay\?ms=60000 wait$", timeout=5)
        self.assertEqual(jtest.http_request(server.port, path="/delay?ms=0")[0], 200)
        server.wait_for_line(r"^GET /delay\?ms=0 200$", timeout=5)

    def test_request_log_unless_quiet(self):
        server = self.start_testserver(quiet=False)
        jtest.http_request(server.port, path="/ping")
        jtest.http_request(server.port, path="/status/503")
        deadline = time.monotonic() + 5
        while len(server.lines) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(server.lines[1:3], ["GET /ping 200", "GET /status/503 503"])

        quiet = self.start_testserver()
        jtest.http_request(quiet.port, path="/ping")
        time.sleep(0.1)
        self.assertEqual(len(quiet.lines), 1)


if __name__ == "__main__":
    unittest.main()

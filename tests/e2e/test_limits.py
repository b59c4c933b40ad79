"""limit.* settings end to end (tests/routes/limits.def), and running out of file
descriptors (tests/routes/fdlimit.def)."""

from __future__ import annotations

import os
import re
import resource
import socket
import time
import unittest

import jtest
from balancer import BalancerTestCase

HOST = "127.0.81.1"


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class LimitsTest(BalancerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server = cls.start_class_testserver(port=6901, host=HOST, quiet=False)
        from balancer import start_balancer
        cls.lb = start_balancer("limits")
        cls.addClassCleanup(jtest.check_stopped_cleanly, cls.lb)

    def exchange(self, raw: bytes) -> jtest.RawResponse:
        sock = jtest.raw_connection(self.lb.port)
        self.addCleanup(sock.close)
        sock.sendall(raw)
        return jtest.read_response(sock.makefile("rb"))

    def server_saw(self, marker: str) -> bool:
        """Whether the server logged a request whose target holds `marker`. Called after the
        balancer answered the rejected request: a barrier request then goes through, and once
        the server logged it, a request forwarded before it would have been logged too (one
        server, /ping answered at once; it logs each request as it answers)."""
        self.__class__.barriers = getattr(self.__class__, "barriers", 0) + 1
        barrier = f"/ping?barrier={self.barriers}"
        self.assertEqual(jtest.http_request(self.lb.port, path=barrier)[0], 200)
        self.server.wait_for_line(re.escape(f"GET {barrier} 200"), timeout=10)
        return any(marker in line for line in self.server.lines)

    def test_header_bytes_431(self):
        resp = self.exchange(b"GET /ping?hb HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n")
        self.assertEqual(resp.status, 431)
        self.assertFalse(self.server_saw("/ping?hb"))

    def test_header_count_431(self):
        headers = b"".join(b"X-%d: v\r\n" % i for i in range(25))
        resp = self.exchange(b"GET /ping?hc HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        self.assertEqual(resp.status, 431)
        self.assertFalse(self.server_saw("/ping?hc"))

    def test_uri_414(self):
        resp = self.exchange(b"GET /ping?uri=" + b"u" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(resp.status, 414)
        self.assertFalse(self.server_saw("?uri="))

    def test_content_length_over_the_limit_413_before_forwarding(self):
        resp = self.exchange(b"POST /echo?cl HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"b" * 1000)
        self.assertEqual(resp.status, 413)
        self.assertFalse(self.server_saw("/echo?cl"))

    def test_chunked_body_over_the_limit_413_as_it_streams(self):
        chunk = b"8000\r\n" + b"c" * 0x8000 + b"\r\n"  # 32 KB chunks
        sock = jtest.raw_connection(self.lb.port)
        self.addCleanup(sock.close)
        sock.sendall(b"POST /echo?chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(4):  # 128 KB announced: over the 64 KB limit after the third chunk
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = jtest.read_response(sock.makefile("rb"))
        self.assertEqual(resp.status, 413)
        # Within the limit it goes through.
        small = b"2800\r\n" + b"s" * 0x2800 + b"\r\n0\r\n\r\n"
        ok = self.exchange(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + small)
        self.assertEqual((ok.status, len(ok.body)), (200, 0x2800))

    def test_requests_per_connection(self):
        sock = jtest.raw_connection(self.lb.port)
        self.addCleanup(sock.close)
        reader = sock.makefile("rb")
        for i in range(3):
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            resp = jtest.read_response(reader)
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.header("Connection"), "close" if i == 2 else None)
        self.assertEqual(reader.read(), b"")  # closed after the third

    def test_connections_per_worker(self):
        held = []
        for _ in range(20):  # each answered once, so the balancer holds all 20 (kept alive)
            s = jtest.raw_connection(self.lb.port)
            self.addCleanup(s.close)
            s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(jtest.read_response(s.makefile("rb")).status, 200)
            held.append(s)
        extra = jtest.raw_connection(self.lb.port)
        self.addCleanup(extra.close)
        resp = jtest.read_response(extra.makefile("rb"))
        self.assertEqual(resp.status, 503)
        for s in held:
            s.close()
        # The balancer sees the closes soon: poll (503 until it did) for up to 10 s.
        deadline = time.monotonic() + 10
        while (status := jtest.http_request(self.lb.port, path="/ping")[0]) == 503 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(status, 200)


class FdLimitTest(BalancerTestCase):
    def test_out_of_file_descriptors_backs_off_and_recovers(self):
        self.start_testserver(port=6901, host="127.0.82.1")
        lb = self.start_balancer("fdlimit", wrapper=["prlimit", "--nofile=256:256"])
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 1200:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
            self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        clients = []
        try:
            for _ in range(1000):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex((jtest.LOOPBACK, lb.port))
                clients.append(s)
            # Wait until the balancer is out of descriptors (polled: its open fds).
            deadline = time.monotonic() + 10
            while len(os.listdir(f"/proc/{lb.pid}/fd")) < 250 and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertGreaterEqual(len(os.listdir(f"/proc/{lb.pid}/fd")), 250, "the balancer never ran out")
            before = cpu_seconds(lb.pid)
            time.sleep(2.0)
            used = cpu_seconds(lb.pid) - before
            self.assertLess(used, 0.5, f"balancer used {used:.2f} s of CPU in 2 s while out of descriptors")
        finally:
            for s in clients:
                s.close()
        deadline = time.monotonic() + 10
        status = None
        while time.monotonic() < deadline:
            try:
                status = jtest.http_request(lb.port, path="/ping", timeout=2)[0]
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        self.assertEqual(status, 200)
        self.assertIsNone(lb.poll())


if __name__ == "__main__":
    unittest.main()

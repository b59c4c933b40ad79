"""HTTP/2 streams relaying what an HTTP/1.1 server says besides the answer: interim answers
(103 Early Hints, 100 Continue) as HEADERS before the final ones, and chunked trailers as
trailing HEADERS with END_STREAM for a client that sent `te: trailers`. Frames read with
tools/h2attacks.py's client (it records each frame). The balancer from
tests/routes/h2interim.def, a testserver on 127.0.210.2:6922."""

from __future__ import annotations

import socket
import unittest

from test_h2 import testserver_bytes
from balancer import H2BalancerTestCase
from test_h2_attacks import h2attacks  # the runner in tools/

HOST = "127.0.210.2"
DATA, HEADERS, END_STREAM = 0, 1, 0x1


class H2InterimTest(H2BalancerTestCase):
    ROUTES, HOST, BACKEND_PORT = "h2interim", HOST, 6922

    def get(self, path: str, extra=()) -> tuple[h2attacks.Client, int]:
        """A GET on a fresh connection, read to its stream's end."""
        c = h2attacks.Client(HOST, self.port, cafile=self.ca)
        self.addCleanup(c.close)
        sid = c.headers(path, extra=extra)
        self.assertTrue(c.wait(lambda: sid in c.ended or sid in c.resets, 30), c.frames[-10:])
        return c, sid

    def stream_frames(self, c: h2attacks.Client, sid: int) -> list:
        return [(kind, flags) for kind, flags, s in c.frames if s == sid]

    # ------------------------------------------------------------ 1xx

    def test_early_hints_and_100_continue_come_before_the_final_answer(self):
        c, sid = self.get("/interim?n=1&code=103")
        self.assertEqual(c.status[sid], ["103", "200"])
        hints = dict(c.fields[sid][0])
        self.assertIn("x-server", hints)  # the interim answer's own fields, names in lower case
        self.assertEqual(bytes(c.body[sid]), b"interim 1\n")
        # Neither interim HEADERS ends the stream.
        heads = [flags for kind, flags in self.stream_frames(c, sid) if kind == HEADERS]
        self.assertEqual([f & END_STREAM for f in heads], [0, 0])
        c, sid = self.get("/interim?n=2&code=100")
        self.assertEqual(c.status[sid], ["100", "100", "200"])
        self.assertEqual(bytes(c.body[sid]), b"interim 2\n")

    def test_101_and_endless_interim_answers_are_a_broken_server(self):
        # As for HTTP/1 (relay.cpp): a 101 nobody asked for, or more than kMaxInterim (8)
        # interim answers, is a broken server: 502, and no 101 ever goes out (HTTP/2 has none).
        c, sid = self.get("/interim?n=1&code=101")
        self.assertEqual(c.status[sid], ["502"])
        c, sid = self.get("/interim?n=9&code=103")
        self.assertEqual(c.status[sid][-1], "502")
        self.assertLessEqual(len(c.status[sid]), 9)

    # ------------------------------------------------------------ trailers

    def test_trailers_go_as_trailing_headers_with_end_stream(self):
        n = 300_000  # several chunks: the trailers come after the last
        c, sid = self.get(f"/bytes?n={n}&chunked=1&trailer=X-Checksum:abc&trailer=grpc-status:0",
                          extra=[("te", "trailers")])
        self.assertEqual(c.status[sid], ["200"])
        self.assertEqual(bytes(c.body[sid]), testserver_bytes(n))
        self.assertEqual(c.fields[sid][-1], [("x-checksum", "abc"), ("grpc-status", "0")])
        frames = self.stream_frames(c, sid)
        self.assertEqual(frames[-1], (HEADERS, 0x4 | END_STREAM))  # END_HEADERS | END_STREAM
        self.assertFalse(any(flags & END_STREAM for kind, flags in frames[:-1]), frames)

    def test_trailers_that_frame_or_route_are_left_out(self):
        c, sid = self.get("/bytes?n=10&chunked=1&trailer=Content-Length:5&trailer=Connection:close"
                          "&trailer=Transfer-Encoding:chunked&trailer=X-Ok:1", extra=[("te", "trailers")])
        self.assertEqual(bytes(c.body[sid]), testserver_bytes(10))
        self.assertEqual(c.fields[sid][-1], [("x-ok", "1")])

    def test_without_te_trailers_the_last_data_ends_the_stream(self):
        c, sid = self.get("/bytes?n=1000&chunked=1&trailer=X-Checksum:abc")
        self.assertEqual(bytes(c.body[sid]), testserver_bytes(1000))
        self.assertEqual(len(c.fields[sid]), 1)  # the answer's head only
        self.assertEqual(self.stream_frames(c, sid)[-1], (DATA, END_STREAM))

    def test_http11_clients_get_the_trailers_in_the_chunked_body(self):
        # HTTP/1.1 relays the chunked body as it came, trailers included (docs/SECURITY.md).
        with socket.create_connection((HOST, self.lb.port), timeout=20) as s:
            s.sendall(b"GET /bytes?n=10&chunked=1&trailer=X-Checksum:abc HTTP/1.1\r\nHost: t\r\n"
                      b"Connection: close\r\n\r\n")
            got = b""
            while chunk := s.recv(65536):
                got += chunk
        self.assertTrue(got.endswith(b"\r\n0\r\nX-Checksum: abc\r\n\r\n"), got[-80:])


if __name__ == "__main__":
    unittest.main()

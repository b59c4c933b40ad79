"""HTTP/2 DATA frames written without a copy (src/http2 read_body / on_send_data): a frame's
payload is at most 8 pieces of the server's bytes, and a frame whose 8 pieces are tiny (a
server's small chunks in one read) is copied instead, so it does not go as many frames of a
few dozen bytes. The bytes must arrive exact, in order, on several streams at once, in both
ways of writing. The balancer from tests/routes/h2pieces.def; the chunks come from a server in
this file on 127.0.230.1:6932."""

from __future__ import annotations

import socket
import socketserver
import threading
import unittest

from balancer import H2BalancerTestCase
from test_h2_attacks import h2attacks  # the runner in tools/

HOST = "127.0.230.1"
CHUNKY_PORT = 6932
DATA = 0


def chunk_bytes(i: int, size: int) -> bytes:
    """Chunk i of an answer: `size` bytes that name their place (so a piece sent twice,
    dropped or out of order changes the body)."""
    return (f"{i:06d}" * (size // 6 + 1)).encode()[:size]


class Chunky(socketserver.ThreadingTCPServer):
    """GET /pieces/N/S: 200, N chunks of S bytes, head and every chunk in one sendall."""
    allow_reuse_address = True
    daemon_threads = True

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    d = self.request.recv(65536)
                    if not d:
                        return
                    buf += d
                head, buf = buf.split(b"\r\n\r\n", 1)
                _, n, size = head.split(b" ", 2)[1].decode().rsplit("/", 2)
                n, size = int(n), int(size)
                out = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"]
                out += [b"%x\r\n%s\r\n" % (size, chunk_bytes(i, size)) for i in range(n)]
                out.append(b"0\r\n\r\n")
                self.request.sendall(b"".join(out))


def expected(n: int, size: int) -> bytes:
    return b"".join(chunk_bytes(i, size) for i in range(n))


class H2PiecesTest(H2BalancerTestCase):
    ROUTES, HOST, BACKEND_PORT = "h2pieces", HOST, 6931

    @classmethod
    def setUpClass(cls):
        cls.chunky = Chunky((HOST, CHUNKY_PORT), Chunky.Handler)
        threading.Thread(target=cls.chunky.serve_forever, daemon=True).start()
        cls.addClassCleanup(cls.chunky.server_close)
        cls.addClassCleanup(cls.chunky.shutdown)
        super().setUpClass()

    def test_tiny_chunks_in_one_read_arrive_exact(self):
        """3,000 chunks of 5 bytes (15 KB, one read): copied into a frame or two, not sent as
        376 frames of 8 pieces (40 bytes and a 9-byte header each)."""
        c = h2attacks.Client(HOST, self.port, cafile=self.ca)
        self.addCleanup(c.close)
        sid = c.headers("/pieces/3000/5")
        self.assertTrue(c.wait(lambda: sid in c.ended or sid in c.resets, 30), c.frames[-10:])
        self.assertEqual(c.status[sid], ["200"])
        self.assertEqual(bytes(c.body[sid]), expected(3000, 5))
        frames = sum(1 for kind, _, s in c.frames if s == sid and kind == DATA)
        print(f"\n3,000 chunks of 5 bytes: {frames} DATA frames")
        self.assertLessEqual(frames, 4)

    def test_several_streams_of_pieces_at_once(self):
        """Eight streams on one connection, chunk sizes on both sides of the copy's bound
        (8 pieces of 1 to 9 bytes are copied, of 4,000 and 70,000 bytes written in place):
        each body exact."""
        c = h2attacks.Client(HOST, self.port, cafile=self.ca)
        self.addCleanup(c.close)
        asks = [(2000, 1), (500, 7), (600, 8), (700, 9), (40, 4000), (3, 70000), (1000, 3), (1, 1)]
        sids = {c.headers(f"/pieces/{n}/{size}"): (n, size) for n, size in asks}
        self.assertTrue(c.wait(lambda: all(s in c.ended or s in c.resets for s in sids), 60), c.frames[-10:])
        for sid, (n, size) in sids.items():
            self.assertEqual(c.status[sid], ["200"], (n, size))
            self.assertEqual(bytes(c.body[sid]), expected(n, size), (n, size))


if __name__ == "__main__":
    unittest.main()

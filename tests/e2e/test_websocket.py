"""WebSocket / Upgrade through the balancer (issue #13): the balancer built from
tests/routes/websocket.def in front of a raw TCP backend run by this test (a thread per
connection, on 127.0.130.1:7130), real client sockets (plain and TLS).

A request with `Connection: Upgrade` + `Upgrade: websocket` goes to the server with both
kept; a 101 is relayed and then bytes pass both ways untouched (the 101's trailing bytes and
the bytes the client sent right behind its head are not lost); a non-101 answer is a normal
response on a connection that stays HTTP; Upgrade with a body, or h2c, is refused (400); the
end of either side ends the other; a drain lets an open tunnel run, then closes it; least_conn
counts an open WebSocket as a busy connection of its server until it closes.
The frames are raw bytes: the tunnel does not look at them, so the backend just echoes.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import ssl
import tempfile
import threading
import time
import unittest

import jtest
from balancer import BalancerTestCase

HOST = "127.0.130.1"
BACKEND = 7130
HTTPS = 18430
SECOND = ("127.0.170.1", 7131)
SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


def upgrade_request(path: str, extra: str = "", upgrade: str = "websocket") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\n"
            f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode()


def read_head(s: socket.socket) -> tuple[bytes, bytes]:
    """The head up to its empty line, and what came after it in the same reads."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def upgrade_of(head: bytes) -> bytes:
    """The value of the Upgrade line of a request head, b"" without one."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"upgrade":
            return value.strip()
    return b""


class Backend:
    """By path: /ws answers 101 (Upgrade: the token it was asked for) with b"after-101" in
    the same write, then echoes until the client's FIN, which it passes back; /bye answers
    101 + b"bye" and closes; /plain, and any request without an Upgrade line, answers 200
    "no" (keep-alive, any number of requests). Records each request head and counts
    connections open."""

    def __init__(self, addr: tuple[str, int] = (HOST, BACKEND)):
        self.heads: list[bytes] = []
        self.open = 0
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(addr)
        self.sock.listen(64)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket):
        with self.lock:
            self.open += 1
        try:
            c.settimeout(30)
            rest = b""
            while True:
                while b"\r\n\r\n" not in rest:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    rest += chunk
                head, _, rest = rest.partition(b"\r\n\r\n")
                with self.lock:
                    self.heads.append(head)
                path = head.split(b" ")[1]
                if path == b"/plain" or not upgrade_of(head):
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno")
                    continue
                if path == b"/bye":
                    c.sendall(SWITCH + b"bye")
                    return
                c.sendall(SWITCH.replace(b"websocket", upgrade_of(head)) + b"after-101")
                if rest:
                    c.sendall(rest)
                while True:
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    c.sendall(chunk)
                c.shutdown(socket.SHUT_WR)
                return
        except OSError:
            pass
        finally:
            c.close()
            with self.lock:
                self.open -= 1

    def stop(self):
        self.sock.close()

    def wait_for(self, predicate, timeout=15.0) -> bool:
        return jtest.wait_until(predicate, timeout)


class WebSocketTest(BalancerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.backend = Backend()
        cls.addClassCleanup(cls.backend.stop)
        cls.second = Backend(SECOND)  # pool lc (least_conn): the first and this one
        cls.addClassCleanup(cls.second.stop)
        cls.dir = tempfile.mkdtemp()
        cls.addClassCleanup(shutil.rmtree, cls.dir)
        jtest.make_cert(cls.dir, "ws", "localhost", "DNS:localhost,IP:127.0.130.1")

    def start(self):
        lb = self.start_balancer("websocket", cwd=self.dir)
        jtest.wait_for_port(HTTPS, HOST)
        return lb

    def dial(self, lb, tls: bool = False) -> socket.socket:
        if not tls:
            return socket.create_connection((HOST, lb.port), timeout=15)
        ctx = ssl.create_default_context(cafile=os.path.join(self.dir, "ws.crt"))
        raw = socket.create_connection((HOST, HTTPS), timeout=15)
        return ctx.wrap_socket(raw, server_hostname="localhost")

    def switch(self, s, request: bytes):
        """Sends `request` on `s`, checks that a 101 answers it: its head and the bytes read behind it."""
        s.sendall(request)
        head, rest = read_head(s)
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        return head, rest

    def echo_through(self, tls: bool):
        lb = self.start()
        with self.dial(lb, tls) as s:
            # Bytes right behind the head, in the same write: the first frame.
            head, rest = self.switch(s, upgrade_request("/ws") + b"early")
            self.assertIn(b"\r\nUpgrade: websocket", head)
            # What the server wrote behind its 101, then the echo of "early".
            self.assertEqual(jtest.recv_exact(s, len(b"after-101early"), rest), b"after-101early")
            # Frame by frame (an SSL socket takes no concurrent reader and writer).
            data = jtest.pattern_bytes(320_000)
            got = bytearray()
            for at in range(0, len(data), 16_000):
                s.sendall(data[at:at + 16_000])
                got += jtest.recv_exact(s, len(data[at:at + 16_000]))
            self.assertTrue(got == data, f"echo differs ({len(got)} of {len(data)} bytes)")
            if not tls:
                s.shutdown(socket.SHUT_WR)
                self.assertEqual(jtest.recv_to_end(s), b"")  # the server's FIN, passed back
        sent = self.backend.heads[-1]
        self.assertIn(b"\r\nUpgrade: websocket", sent)
        self.assertIn(b"\r\nConnection: Upgrade", sent)

    def test_websocket_echo_over_http(self):
        self.echo_through(tls=False)

    def test_websocket_echo_over_https(self):
        self.echo_through(tls=True)

    def test_https_full_duplex_two_megabytes(self):
        """Both ways at once over TLS, one thread (an SSL socket takes no concurrent reader and
        writer): every byte echoed, none held back inside the balancer's OpenSSL when a read
        fills the tunnel's buffer (seen short by 128 bytes at the end before the fix)."""
        lb = self.start()
        with self.dial(lb, tls=True) as s:
            head, rest = self.switch(s, upgrade_request("/ws"))
            data = jtest.pattern_bytes(2_000_000)
            want = b"after-101" + data
            got = bytearray(rest)
            s.setblocking(False)
            sent, ended = 0, False
            deadline = time.monotonic() + 60
            while len(got) < len(want) and not ended and time.monotonic() < deadline:
                r, w, _ = select.select([s], [s] if sent < len(data) else [], [], 1)
                if w:
                    try:
                        sent += s.send(data[sent:sent + 16384])
                    except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                        pass
                if r or s.pending():
                    try:
                        while len(got) < len(want):
                            chunk = s.recv(65536)
                            if not chunk:
                                ended = True
                                break
                            got += chunk
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        pass
            self.assertEqual(len(got), len(want), f"sent {sent}, ended {ended}")
            self.assertTrue(bytes(got) == want, "the echo differs")

    def test_non_101_answer_is_a_normal_response_and_the_connection_stays_http(self):
        lb = self.start()
        with self.dial(lb) as s:
            s.sendall(upgrade_request("/plain"))
            head, rest = read_head(s)
            self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
            self.assertEqual(jtest.recv_exact(s, 2, rest), b"no")
            s.sendall(b"GET /plain HTTP/1.1\r\nHost: ws.test\r\n\r\n")
            head, rest = read_head(s)
            self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
            self.assertEqual(jtest.recv_exact(s, 2, rest), b"no")

    def refused(self, request: bytes):
        lb = self.start()
        before = len(self.backend.heads)
        with self.dial(lb) as s:
            s.sendall(request)
            head, _ = read_head(s)
            self.assertTrue(head.startswith(b"HTTP/1.1 400 "), head)
        self.assertEqual(len(self.backend.heads), before, "the request reached the server")

    def test_upgrade_with_a_body_is_refused(self):
        self.refused(upgrade_request("/ws", "Content-Length: 5\r\n") + b"hello")

    def test_h2c_is_refused(self):
        self.refused(upgrade_request("/ws", "HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n", upgrade="h2c"))

    def test_upgrade_option_tunnels_the_tokens_it_lists(self):
        lb = self.start()
        with self.dial(lb) as s:
            # Not allowed (foo) and allowed (mqtt): only the first allowed goes on.
            head, rest = self.switch(s, upgrade_request("/mqtt/ws", upgrade="foo, mqtt") + b"early")
            self.assertIn(b"\r\nUpgrade: mqtt", head)
            self.assertEqual(jtest.recv_exact(s, len(b"after-101early"), rest), b"after-101early")
            s.sendall(b"frame")
            self.assertEqual(jtest.recv_exact(s, 5), b"frame")
        self.assertEqual(upgrade_of(self.backend.heads[-1]), b"mqtt")
        with self.dial(lb) as s:  # websocket stays allowed there because it is listed
            self.switch(s, upgrade_request("/mqtt/ws"))
        self.assertEqual(upgrade_of(self.backend.heads[-1]), b"websocket")

    def plain_answers(self, lb, request: bytes):
        """`request` reaches the server without Upgrade (nor Connection: Upgrade), its 200 comes
        back, and the connection stays HTTP (a second request on it is answered too)."""
        with self.dial(lb) as s:
            for _ in range(2):
                before = len(self.backend.heads)
                s.sendall(request)
                head, rest = read_head(s)
                self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
                self.assertEqual(jtest.recv_exact(s, 2, rest), b"no")
                self.assertEqual(len(self.backend.heads), before + 1)
                sent = self.backend.heads[-1]
                self.assertEqual(upgrade_of(sent), b"", sent)
                connection = [line for line in sent.lower().split(b"\r\n") if line.startswith(b"connection:")]
                self.assertFalse(any(b"upgrade" in line for line in connection), sent)

    def test_a_token_the_route_does_not_allow_goes_as_plain_http(self):
        lb = self.start()
        self.plain_answers(lb, upgrade_request("/ws", upgrade="mqtt"))  # the default allows websocket only

    def test_upgrade_none_refuses_even_websocket(self):
        lb = self.start()
        self.plain_answers(lb, upgrade_request("/none/ws"))

    def test_h2c_is_refused_on_a_route_with_upgrade_option(self):
        self.refused(upgrade_request("/mqtt/ws", upgrade="mqtt, h2c"))

    def test_server_close_closes_the_client(self):
        lb = self.start()
        with self.dial(lb) as s:
            head, rest = self.switch(s, upgrade_request("/bye"))
            self.assertEqual(rest + jtest.recv_to_end(s), b"bye")

    def test_client_close_closes_the_server_side(self):
        lb = self.start()
        self.assertTrue(self.backend.wait_for(lambda: self.backend.open == 0))
        s = self.dial(lb)
        head, rest = self.switch(s, upgrade_request("/ws"))
        self.assertEqual(self.backend.open, 1)
        s.close()  # no FIN dance: the whole client goes
        self.assertTrue(self.backend.wait_for(lambda: self.backend.open == 0), "the server side stayed open")

    def served_by(self, lb, request: bytes) -> "Backend":
        """Sends `request` on a new connection; the backend whose heads it reached."""
        before = (len(self.backend.heads), len(self.second.heads))
        with self.dial(lb) as s:
            s.sendall(request)
            head, rest = read_head(s)
            self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
            self.assertEqual(jtest.recv_exact(s, 2, rest), b"no")
        after = (len(self.backend.heads), len(self.second.heads))
        self.assertEqual(sum(after) - sum(before), 1)
        return self.backend if after[0] > before[0] else self.second

    def test_least_conn_counts_an_open_websocket_until_it_closes(self):
        lb = self.start()
        plain = b"GET /lc/plain HTTP/1.1\r\nHost: ws.test\r\n\r\n"
        before = (len(self.backend.heads), len(self.second.heads))
        held = self.dial(lb)
        try:
            self.switch(held, upgrade_request("/lc/ws"))
            busy = self.backend if len(self.backend.heads) > before[0] else self.second
            # With both idle least_conn takes turns: each of these would go to the busy one
            # every other time were the WebSocket not counted after its 101.
            for i in range(6):
                self.assertIsNot(self.served_by(lb, plain), busy, f"request {i} went to the server of the WebSocket")
        finally:
            held.close()
        self.assertTrue(busy.wait_for(lambda: busy.open == 0))
        # Closed: no longer counted, the turns come back to it (a few tries: the balancer
        # closes the tunnel in the same loop turn the server sees it go, but maybe after).
        self.assertTrue(any(self.served_by(lb, plain) is busy for _ in range(8)),
                        "the closed WebSocket is still counted")

    def test_drain_lets_a_tunnel_run_then_closes_it(self):
        lb = self.start()
        with self.dial(lb) as s:
            head, rest = self.switch(s, upgrade_request("/ws"))
            self.assertEqual(jtest.recv_exact(s, 9, rest), b"after-101")
            t0 = time.monotonic()
            lb.send_signal(signal.SIGTERM)
            lb.wait_for_line("draining")
            s.sendall(b"still here")
            self.assertEqual(jtest.recv_exact(s, 10), b"still here")  # the tunnel runs on
            self.assertEqual(jtest.recv_to_end(s), b"")  # closed at the end of the drain (3s)
            took = time.monotonic() - t0
        self.assertEqual(lb.wait(timeout=10), 0, lb.output())
        self.assertGreaterEqual(took, 2.0)
        self.assertLess(took, 10)


if __name__ == "__main__":
    unittest.main()

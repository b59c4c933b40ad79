"""HTTP/2 to clients over TLS (ALPN h2), end to end: curl --http2 and h2load as real clients,
python3-h2 (Debian) for the requests a polite client never sends: the balancer built from
tests/routes/h2.def, plain-HTTP testservers behind it on 127.0.180.1."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

try:
    import h2.config
    import h2.connection
    import h2.errors
    import h2.events
    import h2.exceptions
    import h2.settings
except ImportError:  # the Debian module lives with the system interpreter
    sys.path.append("/usr/lib/python3/dist-packages")
    import h2.config
    import h2.connection
    import h2.errors
    import h2.events
    import h2.exceptions
    import h2.settings
import hpack  # h2's own dependencies: frames read by hand where h2 stops at a GOAWAY
import hyperframe.frame

import jtest
import promtext
from balancer import BalancerTestCase, H2BalancerTestCase, start_balancer

sys.path.insert(0, os.path.join(jtest.SOURCE_DIR, "tools"))
import h2attacks  # noqa: E402  (the hostile client of tools/h2attacks.py)

HOST = "127.0.180.1"
OFF_HOST, OFF_PORT = "127.0.180.2", 18481  # the listener with h2=off
ALPHABET = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
GLITCH_BUDGET = 50  # set h2.glitches in tests/routes/h2.def


def testserver_bytes(n: int) -> bytes:
    """The body of the testserver's /bytes?n=N: byte i is ALPHABET[i % 62]."""
    return (ALPHABET * (n // len(ALPHABET) + 1))[:n]


class RawH2:
    """A client connection driven by hand with python3-h2: outbound validation off, so it
    can send what the RFC forbids; events read with a deadline."""

    def __init__(self, port: int, cafile: str, host: str = HOST, raw: socket.socket | None = None,
                 send_preface: bool = True):
        """`raw`: a TCP connection made earlier (the handshake starts here); without
        `send_preface`, the preface waits for the first flush (one write with a request)."""
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.set_alpn_protocols(["h2"])
        raw = raw or socket.create_connection((host, port), timeout=20)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2"
        config = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False,
                                           normalize_outbound_headers=False, validate_inbound_headers=False)
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.closed = False  # EOF (or reset) read
        self.broken = False  # a send failed
        self.stalled: set = set()  # streams whose data is never acknowledged (their window stays shut)
        self.events: list = []
        if send_preface:
            self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.closed and not self.broken:
            try:
                self.sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                self.broken = True  # what the server sent may still be read

    def request(self, path: str, extra=(), end: bool = True, authority: str = "localhost") -> int:
        sid = self.conn.get_next_available_stream_id()
        headers = [(":method", "GET"), (":scheme", "https"), (":authority", authority), (":path", path), *extra]
        self.conn.send_headers(sid, headers, end_stream=end)
        self.flush()
        return sid

    def read_until(self, done, timeout: float = 20.0) -> list:
        """Reads events until done(events) is true or the connection ends; returns them all."""
        deadline = time.monotonic() + timeout
        while not done(self.events) and not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; events so far: {self.events[-10:]}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                data = b""
            if not data:
                self.closed = True
                break
            for ev in self.conn.receive_data(data):
                self.events.append(ev)
                if isinstance(ev, h2.events.DataReceived) and ev.stream_id not in self.stalled:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            self.flush()
        return self.events

    def response(self, sid: int, timeout: float = 20.0):
        """(headers dict, body) of stream `sid`, or ("reset", error code)."""
        def ended(evs):
            return any(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == sid
                       for e in evs)
        evs = self.read_until(ended, timeout)
        headers, body = {}, b""
        for e in evs:
            if getattr(e, "stream_id", None) != sid:
                continue
            if isinstance(e, h2.events.StreamReset):
                return "reset", e.error_code
            if isinstance(e, h2.events.ResponseReceived):
                headers = {k.decode(): v.decode() for k, v in e.headers}
            if isinstance(e, h2.events.DataReceived):
                body += e.data
        return headers, body

    def goaway(self):
        for e in self.events:
            if isinstance(e, h2.events.ConnectionTerminated):
                return e
        return None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def read_frames(sock, done, timeout: float = 10.0) -> list:
    """HTTP/2 frames read by hand (python3-h2 reads nothing after a GOAWAY) until
    done(frames), the connection's end or `timeout`."""
    frames, data, deadline = [], b"", time.monotonic() + timeout
    while not done(frames) and time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
        while len(data) >= 9:
            frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(data[:9]))
            if len(data) < 9 + length:
                break
            frame.parse_body(memoryview(data[9:9 + length]))
            frames.append(frame)
            data = data[9 + length:]
    return frames


def goaways(frames) -> list:
    return [(f.error_code, f.last_stream_id) for f in frames if isinstance(f, hyperframe.frame.GoAwayFrame)]


def answer(frames, sid: int, decoder) -> tuple:
    """(status, body) of stream `sid` in `frames`; `decoder`: the connection's HPACK state."""
    head = [f for f in frames if isinstance(f, hyperframe.frame.HeadersFrame) and f.stream_id == sid]
    status = dict(decoder.decode(head[0].data)).get(":status") if len(head) == 1 else None
    body = b"".join(f.data for f in frames if isinstance(f, hyperframe.frame.DataFrame) and f.stream_id == sid)
    return status, body


NOTICE = (0, 2**31 - 1)  # a drain's first GOAWAY (NO_ERROR, every stream still welcome)


class H2Test(BalancerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dir = tempfile.mkdtemp()
        cls.addClassCleanup(shutil.rmtree, cls.dir)
        jtest.make_cert(cls.dir, "h2", "localhost", "DNS:localhost,IP:127.0.180.1,IP:127.0.180.2,IP:127.0.180.3")
        cls.ca = os.path.join(cls.dir, "h2.crt")
        # Not quiet: each request the servers get is a line (the Rapid Reset test counts them).
        cls.backends = [cls.start_class_testserver(port=p, host=HOST, quiet=False) for p in (6901, 6902)]
        cls.access_log = os.path.join(cls.dir, "access.log")
        cls.lb = start_balancer("h2", access_log=cls.access_log,
                                extra=["--https-port", "0", "--access-log-format", "json", "--admin", f"{HOST}:0"],
                                cwd=cls.dir)
        cls.addClassCleanup(jtest.check_stopped_cleanly, cls.lb)
        cls.port = int(cls.lb.wait_for_line(r"listening on https://127\.0\.180\.1:(\d+)").group(1))
        cls.admin_port = int(cls.lb.wait_for_line(r"admin listening on http://[\d.]+:(\d+)").group(1))

    def curl(self, *args: str, host: str = HOST, port: int = 0) -> subprocess.CompletedProcess:
        port = port or self.port
        return subprocess.run(["curl", "-s", "--cacert", self.ca, "--resolve", f"localhost:{port}:{host}",
                               "--max-time", "60", *args], capture_output=True, timeout=90)

    def url(self, path: str, port: int = 0) -> str:
        return f"https://localhost:{port or self.port}{path}"

    def served(self, target: str) -> int:
        """Requests for `target` the testservers logged so far (a line each: METHOD TARGET STATUS)."""
        return sum(len([ln for ln in b.lines if ln.split(" ")[1:2] == [target]]) for b in self.backends)

    # ------------------------------------------------------------ ALPN and plain requests

    def test_alpn_offers_h2_then_http11_and_h2_off_offers_http11(self):
        def alpn(host, port, offer):
            ctx = ssl.create_default_context(cafile=self.ca)
            ctx.set_alpn_protocols(offer)
            with socket.create_connection((host, port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                    return tls.selected_alpn_protocol()
        self.assertEqual(alpn(HOST, self.port, ["http/1.1", "h2"]), "h2")  # the server's order
        self.assertEqual(alpn(HOST, self.port, ["http/1.1"]), "http/1.1")
        self.assertEqual(alpn(OFF_HOST, OFF_PORT, ["h2", "http/1.1"]), "http/1.1")
        # HTTP/1.1 over TLS on the h2 listener is unchanged.
        out = self.curl("--http1.1", "-w", "\n%{http_version}", self.url("/ping"))
        self.assertEqual(out.stdout, b"pong\n\n1.1")
        out = self.curl("--http2", "-w", "\n%{http_version}", self.url("/ping", OFF_PORT), host=OFF_HOST, port=OFF_PORT)
        self.assertEqual(out.stdout, b"pong\n\n1.1")

    def test_curl_http2_get_local_answer_and_404(self):
        out = self.curl("--http2", "-w", "\n%{http_version} %{response_code}", self.url("/ping"))
        self.assertEqual(out.stdout, b"pong\n\n2 200", out.stderr)
        out = self.curl("--http2", "-w", "%{http_version} %{response_code}", self.url("/local"))
        self.assertEqual(out.stdout, b"2 204")
        out = self.curl("--http2", "-i", self.url("/status/404"))
        self.assertTrue(out.stdout.startswith(b"HTTP/2 404"), out.stdout)
        self.assertIn(b"\r\nx-server: ", out.stdout)  # names in lower case

    def test_large_body_byte_exact(self):
        n = 30_000_000
        expect = hashlib.sha256(testserver_bytes(n)).hexdigest()
        for path in (f"/bytes?n={n}", f"/bytes?n={n}&chunked=1"):
            out = self.curl("--http2", self.url(path))
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertEqual(len(out.stdout), n, path)
            self.assertEqual(hashlib.sha256(out.stdout).hexdigest(), expect, path)

    def test_uploads_with_length_and_chunked(self):
        body = os.urandom(3_000_000)
        path = os.path.join(self.dir, "upload.bin")
        with open(path, "wb") as f:
            f.write(body)
        out = self.curl("--http2", "--data-binary", f"@{path}", "-H", "Content-Type: application/octet-stream",
                        self.url("/echo"))
        self.assertEqual(out.stdout, body, out.stderr)
        # -T - : no content-length, so the balancer frames it chunked upstream.
        with open(path, "rb") as f:
            res = subprocess.run(["curl", "-s", "--http2", "--cacert", self.ca, "--resolve",
                                  f"localhost:{self.port}:{HOST}", "--max-time", "60", "-T", "-",
                                  "-D", "-", self.url("/echo")],
                                 stdin=f, capture_output=True, timeout=90)
        head, _, echoed = res.stdout.partition(b"\r\n\r\n")
        self.assertIn(b"x-echo-method: PUT", head)
        self.assertEqual(echoed, body)

    def test_h2load_one_connection_100_streams(self):
        def refused():  # requests the servers could not parse (a stray byte after a head: "- - 400")
            return sum(len([ln for ln in b.lines if ln.startswith("- - ")]) for b in self.backends)
        before = refused()
        out = subprocess.run(["h2load", "-c1", "-m100", "-n2000", f"https://{HOST}:{self.port}/ping"],
                             capture_output=True, text=True, timeout=120)
        self.assertIn("2000 done, 2000 succeeded", out.stdout, out.stdout + out.stderr)
        self.assertIn("status codes: 2000 2xx", out.stdout)
        self.assertEqual(refused(), before)  # every request reached its server intact

    def test_stream_with_closed_window_does_not_hold_up_another(self):
        c = RawH2(self.port, self.ca)
        self.addCleanup(c.close)
        c.conn.increment_flow_control_window(1 << 30)  # the connection's window is not the limit
        c.flush()
        slow = c.request("/bytes?n=20000000")
        c.stalled.add(slow)
        fast = c.request("/bytes?n=3000000")
        headers, body = c.response(fast, timeout=60)
        self.assertEqual((headers[":status"], len(body)), ("200", 3_000_000))
        self.assertEqual(body, testserver_bytes(3_000_000))
        got = sum(len(e.data) for e in c.events if isinstance(e, h2.events.DataReceived) and e.stream_id == slow)
        self.assertLessEqual(got, 65535)  # the slow stream's default window, no more
        # Opening its window lets it go on to its end.
        c.stalled.discard(slow)
        c.conn.acknowledge_received_data(got, slow)
        c.flush()
        headers, body = c.response(slow, timeout=120)
        self.assertEqual(len(body), 20_000_000)
        # Byte-exact: the server's bytes waited in its buffer while the window was shut.
        self.assertEqual(hashlib.sha256(body).digest(), hashlib.sha256(testserver_bytes(20_000_000)).digest())

    # ------------------------------------------------------------ mapping to HTTP/1.1

    def test_request_mapped_to_http11_head(self):
        c = RawH2(self.port, self.ca)
        self.addCleanup(c.close)
        sid = c.request("/headers?x=1", [("cookie", "a=1"), ("x-test", "yes"), ("cookie", "b=2")],
                        authority="example.test")
        headers, body = c.response(sid)
        self.assertEqual(headers[":status"], "200", body)
        lines = body.decode().split("\n")
        self.assertEqual(lines[0], "GET /headers?x=1 HTTP/1.1")
        self.assertIn("Host: example.test", lines)
        self.assertIn("Cookie: a=1; b=2", lines)  # one line, RFC 9113 8.2.3
        self.assertIn("x-test: yes", lines)
        self.assertNotIn("connection", headers)
        self.assertNotIn("keep-alive", headers)

    def test_path_goes_through_the_http11_target_mapping(self):
        # :path and :authority are mapped as an HTTP/1.1 target and Host are (map_target):
        # a :path that is not origin-form is malformed (RFC 9113 8.3.1), not an absolute-form
        # target routed by its own authority. nghttp2 checks :path only for http(s) schemes.
        c = RawH2(self.port, self.ca)
        self.addCleanup(c.close)
        for scheme, path in (("foo", "http://evil.example/headers"), ("foo", "headers")):
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(sid, [(":method", "GET"), (":scheme", scheme), (":authority", "localhost"),
                                      (":path", path)], end_stream=True)
            c.flush()
            self.assertEqual(c.response(sid), ("reset", h2.errors.ErrorCodes.PROTOCOL_ERROR), path)
        sid = c.request("/headers", authority="example.test:8443")
        headers, body = c.response(sid)
        self.assertIn("Host: example.test:8443", body.decode().split("\n"))

    # ------------------------------------------------------------ the protocol in the log and /metrics

    def by_protocol(self) -> dict:
        body = jtest.http_request(self.admin_port, path="/metrics", host=HOST)[2].decode()
        samples = promtext.parse(body)
        return {p: promtext.value(samples, "juggler_requests_total", protocol=p) for p in ("HTTP/1", "HTTP/2")}

    def test_access_log_and_metrics_say_the_protocol(self):
        before = self.by_protocol()
        c = RawH2(self.port, self.ca)
        self.addCleanup(c.close)
        sid = c.request("/ping?proto-h2")
        self.assertEqual(c.response(sid)[0][":status"], "200")
        status, _, _ = jtest.http_request(self.lb.port, path="/ping?proto-h1", host=HOST)
        self.assertEqual(status, 200)
        lines = jtest.access_log_lines(self.access_log, pattern=r"proto-h1", timeout=10)
        lines = jtest.access_log_lines(self.access_log, pattern=r"proto-h2", timeout=10)
        logged = {json.loads(ln)["path"]: json.loads(ln) for ln in lines if "proto-h" in ln}
        self.assertEqual(logged["/ping?proto-h2"]["protocol"], "HTTP/2.0")
        self.assertEqual(logged["/ping?proto-h2"]["tls"], "TLSv1.3")
        self.assertEqual(logged["/ping?proto-h1"]["protocol"], "HTTP/1.1")
        # Counted when the exchange ends, which is when the answer went out: polled.
        deadline = time.monotonic() + 10
        while (after := self.by_protocol()) != {k: v + 1 for k, v in before.items()} and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(after, {k: v + 1 for k, v in before.items()})

    def test_forbidden_fields_are_reset(self):
        c = RawH2(self.port, self.ca)
        self.addCleanup(c.close)
        for bad in ([("connection", "keep-alive")], [("te", "gzip")], [("host", "other.test")],
                    [("transfer-encoding", "chunked")], [("upgrade", "websocket")]):
            sid = c.request("/ping", bad)
            self.assertEqual(c.response(sid), ("reset", h2.errors.ErrorCodes.PROTOCOL_ERROR), bad)
        sid = c.request("/ping", [("te", "trailers"), ("host", "localhost")])
        headers, body = c.response(sid)
        self.assertEqual((headers[":status"], body), ("200", b"pong\n"))

    # ------------------------------------------------------------ attacks

    def test_rapid_reset_goaway_enhance_your_calm(self):
        before = self.served("/ping?rr")
        c = RawH2(self.port, self.ca)
        self.addCleanup(c.close)
        sent = 0
        try:
            for _ in range(2000):
                sid = c.conn.get_next_available_stream_id()
                c.conn.send_headers(sid, [(":method", "GET"), (":scheme", "https"), (":authority", "localhost"),
                                          (":path", "/ping?rr")], end_stream=True)
                c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                c.flush()  # the request and its reset in one write, as the attack sends them
                if c.broken or c.closed:
                    break
                sent += 1
        except h2.exceptions.ProtocolError:
            pass  # python3-h2 saw the GOAWAY
        c.read_until(lambda evs: c.goaway() is not None, timeout=30)
        goaway = c.goaway()
        self.assertIsNotNone(goaway, f"no GOAWAY after {sent} resets")
        self.assertEqual(goaway.error_code, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
        # Another client is served at once.
        out = self.curl("--http2", self.url("/ping"))
        self.assertEqual(out.stdout, b"pong\n")
        time.sleep(0.3)  # requests that reached a server arrive there within this margin
        # Each request and its reset came in one write, so no stream is answered before its
        # reset is read (such a stream would be a request like any other, not a glitch).
        self.assertLessEqual(self.served("/ping?rr") - before, GLITCH_BUDGET + 2)

    def test_ping_and_settings_floods_goaway(self):
        for flood in ("ping", "settings"):
            c = RawH2(self.port, self.ca)
            self.addCleanup(c.close)
            for i in range(GLITCH_BUDGET * 4):
                if flood == "ping":
                    c.conn.ping(i.to_bytes(8, "big"))
                else:
                    c.conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100 + i})
                c.flush()
                if c.broken:
                    break
            c.read_until(lambda evs: c.goaway() is not None, timeout=30)
            self.assertIsNotNone(c.goaway(), flood)
            self.assertEqual(c.goaway().error_code, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, flood)
            acks = sum(isinstance(e, (h2.events.PingAckReceived, h2.events.SettingsAcknowledged)) for e in c.events)
            self.assertLessEqual(acks, GLITCH_BUDGET + 2, flood)

    def test_header_list_limit_431_and_hpack_bomb(self):
        c = RawH2(self.port, self.ca)
        self.addCleanup(c.close)
        # One 4 KB field, then referenced from the HPACK table again and again: 100 of them
        # decode to 400 KB, past limit.header_bytes (16k) whatever the frame's size.
        big = ("x-big", "v" * 4000)
        sid = c.request("/ping", [big] * 100)
        headers, _ = c.response(sid)
        self.assertEqual(headers.get(":status"), "431")
        sid = c.request("/ping")
        headers, body = c.response(sid)
        self.assertEqual((headers[":status"], body), ("200", b"pong\n"))  # the connection goes on

    def test_continuation_flood_closes_the_connection(self):
        # HEADERS without END_HEADERS, then CONTINUATION frames of 1.6 KB that never end
        # (tools/h2attacks.py, as measured in docs/SECURITY.md).
        r = h2attacks.run("continuation_flood", HOST, self.port, cafile=self.ca, n=5000, wait=10)
        self.assertTrue(r["eof"] or r["broken"] or r["goaway"], h2attacks.describe(r))
        self.assertLess(r["sent"], 5000, "the balancer took 5000 CONTINUATION frames without closing")
        out = self.curl("--http2", self.url("/ping"))
        self.assertEqual(out.stdout, b"pong\n")


class H2FiltersTest(H2BalancerTestCase):
    """tests/routes/h2misc.def: response filters on h2 streams, and timeout.client_idle 2s."""
    MISC_HOST = "127.0.180.4"
    ROUTES, HOST, BACKEND_PORT = "h2misc", MISC_HOST, 6905
    EXTRA = ("--admin", f"{MISC_HOST}:0")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.admin_port = int(cls.lb.wait_for_line(r"admin listening on http://[\d.]+:(\d+)").group(1))

    def connect(self) -> RawH2:
        c = RawH2(self.port, self.ca, host=self.MISC_HOST)
        self.addCleanup(c.close)
        return c

    def test_gzip_on_a_stream_decodes_byte_exact(self):
        c = self.connect()
        sid = c.request("/bytes?n=200000&type=text/plain", [("accept-encoding", "gzip")], authority="gzip.test")
        headers, body = c.response(sid)
        self.assertEqual(headers[":status"], "200", headers)
        self.assertEqual(headers.get("content-encoding"), "gzip", headers)
        self.assertNotIn("content-length", headers)  # the length changed: DATA frames end it
        self.assertLess(len(body), 200000 // 10)
        self.assertEqual(gzip.decompress(body), testserver_bytes(200000))

    def test_cache_hit_on_a_stream(self):
        c = self.connect()
        results = []
        for _ in range(2):
            sid = c.request("/bytes?n=3000&type=text/plain", authority="cache.test")
            headers, body = c.response(sid)
            self.assertEqual((headers[":status"], body), ("200", testserver_bytes(3000)))
            results.append(headers.get("x-cache"))
        self.assertEqual(results, ["MISS", "HIT"])
        self.assertEqual(sum(1 for ln in self.backend.lines if "/bytes?n=3000" in ln), 1)

    def busy(self) -> float:
        body = jtest.http_request(self.admin_port, path="/metrics", host=self.MISC_HOST)[2].decode()
        return promtext.total(promtext.parse(body), "juggler_upstream_connections", state="busy")

    def test_window_never_opened_times_out_and_releases_the_server(self):
        c = self.connect()
        c.conn.increment_flow_control_window(1 << 30)  # the stream's window is the one shut, not the connection's
        c.flush()
        sid = c.request("/bytes?n=5000000")
        c.stalled.add(sid)  # never acknowledged: its window (65535) closes for good
        c.read_until(lambda evs: sum(e.flow_controlled_length for e in evs if isinstance(e, h2.events.DataReceived)
                                     and e.stream_id == sid) >= 65535)
        self.assertEqual(self.busy(), 1)  # the server's connection is held by the stalled stream
        start = time.monotonic()
        self.assertEqual(c.response(sid, timeout=30)[0], "reset")
        waited = time.monotonic() - start
        # timeout.client_idle 2s from the held send, not timeout.upstream (30s) nor the server giving up
        self.assertGreater(waited, 1.0)
        self.assertLess(waited, 20.0)
        deadline = time.monotonic() + 10
        while self.busy() != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.busy(), 0)  # released: the server's connection closed
        # The client connection goes on: another stream is answered.
        sid = c.request("/ping")
        headers, body = c.response(sid)
        self.assertEqual((headers[":status"], body), ("200", b"pong\n"))

    def test_small_answer_to_a_shut_window_frees_the_server_at_once(self):
        # A small answer that came whole is kept by its stream (response.cpp quick_answer(),
        # and stash() for a body that came after its head): the server's connection goes back
        # to the pool at once, not when the client opens its window; the bytes go when it
        # does; a stream that never opens it still times out.
        c = self.connect()
        c.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        c.flush()
        c.read_until(lambda evs: any(isinstance(e, h2.events.SettingsAcknowledged) for e in evs))
        # /ping: head and body in one write; pause=0: the head, 300 ms, then the body
        for path, expect in (("/ping", b"pong\n"), ("/bytes?n=3000&pause=0&pause_ms=300", testserver_bytes(3000))):
            sid = c.request(path)
            c.read_until(lambda evs: any(isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid
                                         for e in evs))
            deadline = time.monotonic() + 10
            while self.busy() != 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertEqual(self.busy(), 0, path)  # released while the stream's window is still shut
            c.conn.increment_flow_control_window(1 << 20, stream_id=sid)
            c.flush()
            headers, body = c.response(sid)
            self.assertNotEqual(headers, "reset", f"{path}: held until timeout.client_idle, not released at once")
            self.assertEqual((headers[":status"], body), ("200", expect))
        # Never opened: reset after timeout.client_idle (2s), the connection goes on.
        sid = c.request("/ping")
        start = time.monotonic()
        self.assertEqual(c.response(sid, timeout=30)[0], "reset")
        self.assertGreater(time.monotonic() - start, 1.0)
        c.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65535})
        c.flush()
        sid = c.request("/ping")
        headers, body = c.response(sid)
        self.assertEqual((headers[":status"], body), ("200", b"pong\n"))


class H2DrainTest(BalancerTestCase):
    def test_sigterm_sends_goaway_and_streams_in_flight_finish(self):
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        jtest.make_cert(folder, "h2", "localhost", "DNS:localhost,IP:127.0.180.1,IP:127.0.180.2,IP:127.0.180.3")
        server = self.start_testserver(port=6903, host=HOST, quiet=False)
        access_log = os.path.join(folder, "access.log")
        lb = start_balancer("h2drain", access_log=access_log, extra=["--https-port", "0", "--access-log-format",
                                                                     "combined"], cwd=folder)
        self.addCleanup(lb.stop)
        port = int(lb.wait_for_line(r"listening on https://127\.0\.180\.3:(\d+)").group(1))
        # nghttp (nghttp2-client) shows the frames; python3-h2 stops at a GOAWAY.
        client = subprocess.Popen(["nghttp", "-v", f"https://127.0.180.3:{port}/delay?ms=1500"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.addCleanup(client.kill)
        server.wait_for_line(r"^GET /delay\?ms=1500 wait$")
        lb.send_signal(15)
        out, _ = client.communicate(timeout=60)
        # nghttp's request is stream 13 (it opens priority streams first): the GOAWAY names it.
        self.assertRegex(out, r"recv GOAWAY frame[^\n]*\n\s*\(last_stream_id=13, error_code=NO_ERROR")
        self.assertIn("recv (stream_id=13) :status: 200", out)
        self.assertIn("delayed 1500", out)
        self.assertLess(out.index("recv GOAWAY"), out.index(":status: 200"))  # the GOAWAY came first
        self.assertEqual(lb.wait(timeout=20), 0)
        lb.stop()
        # Combined: the request line's protocol field is the client's, not the HTTP/1.1 head's.
        line = jtest.access_log_lines(access_log, pattern="delay")[0]
        self.assertRegex(line, r'^\S+ - - \[[^]]+\] "GET /delay\?ms=1500 HTTP/2\.0" 200 ')

    def start_drain_balancer(self) -> tuple:
        """h2drain.def with its certificate and server: (balancer, https port, CA file)."""
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        jtest.make_cert(folder, "h2", "localhost", "DNS:localhost,IP:127.0.180.3")
        self.start_testserver(port=6903, host=HOST)
        lb = start_balancer("h2drain", extra=["--https-port", "0"], cwd=folder)
        self.addCleanup(lb.stop)
        port = int(lb.wait_for_line(r"listening on https://127\.0\.180\.3:(\d+)").group(1))
        return lb, port, os.path.join(folder, "h2.crt")

    def test_a_connection_accepted_before_the_drain_is_served_then_goes_away(self):
        """Connected before SIGTERM, its TLS handshake and first request after: ALPN picks
        HTTP/2 once the drain began, the request sent with the preface is answered, a GOAWAY
        names it, and the process exits without waiting for the connection's idle timeout."""
        lb, port, ca = self.start_drain_balancer()
        early = socket.create_connection(("127.0.180.3", port), timeout=20)
        self.addCleanup(early.close)
        # Answered on a second connection: the one worker accepted the early one before it.
        first = RawH2(port, ca, host="127.0.180.3")
        self.assertEqual(first.response(first.request("/ping"))[0][":status"], "200")
        first.close()
        started = time.monotonic()
        lb.send_signal(15)
        self.assertTrue(jtest.wait_refused(port, "127.0.180.3"), "the worker did not stop accepting")  # it drains
        c = RawH2(port, ca, raw=early, send_preface=False)
        self.addCleanup(c.close)
        sid = c.request("/ping")  # with the preface: one write
        # The GOAWAYs come before the answer, which python3-h2 refuses to read.
        frames = read_frames(c.sock, lambda fs: False)  # to the connection's end
        self.assertEqual(goaways(frames), [NOTICE, (0, sid)],
                         "the drain's notice, then a GOAWAY naming the request, on a connection HTTP/2 took "
                         "during the drain")
        self.assertEqual(answer(frames, sid, hpack.Decoder()), ("200", b"pong\n"))
        self.assertEqual(lb.wait(timeout=20), 0)
        self.assertLess(time.monotonic() - started, 5.0, "the drain waited for the HTTP/2 connection's idle timeout")

    def test_a_request_sent_after_the_drain_notice_is_served(self):
        """SIGTERM: the first GOAWAY names stream 2^31-1, so a request the client sends after
        it (it was on its way) is still served; the final GOAWAY, a second later, names it."""
        lb, port, ca = self.start_drain_balancer()
        c = RawH2(port, ca, host="127.0.180.3")
        self.addCleanup(c.close)
        sid = c.request("/ping")
        self.assertEqual(c.response(sid)[0][":status"], "200")
        lb.send_signal(15)
        frames = read_frames(c.sock, lambda fs: goaways(fs))
        self.assertEqual(goaways(frames), [NOTICE], "the drain's first GOAWAY")
        # The next stream, by hand (python3-h2 sends nothing after a GOAWAY), its header
        # block from the connection's own HPACK state.
        late = sid + 2
        block = c.conn.encoder.encode([(":method", "GET"), (":scheme", "https"), (":authority", "localhost"),
                                       (":path", "/ping?after-notice")])
        c.sock.sendall(hyperframe.frame.HeadersFrame(late, data=block, flags=["END_HEADERS", "END_STREAM"]).serialize())
        frames += read_frames(c.sock, lambda fs: False)  # to the connection's end
        self.assertEqual(goaways(frames), [NOTICE, (0, late)])
        self.assertEqual(answer(frames, late, c.conn.decoder), ("200", b"pong\n"))
        self.assertEqual(lb.wait(timeout=20), 0)


if __name__ == "__main__":
    unittest.main()

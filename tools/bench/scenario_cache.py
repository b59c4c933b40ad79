"""Scenario 12 of `make bench` (issue #12): the response cache.

12a/12b: a cache HIT of a 1 KB and of a 100 KB object (GET /c/1k, /c/100k),
keep-alive, against Varnish (`varnishd -s malloc`, tools/bench/conf/varnish.vcl)
and nginx `proxy_cache` (bench.py nginx_cache()), all with the same TTL and
size (bench.py CACHE_TTL_S, CACHE_MB). Each proxy is primed and checked to
answer from its cache (Juggler X-Cache: HIT, nginx X-Cache-Status: HIT,
Varnish an X-Varnish with two transaction ids) before it is measured.
Then Juggler's heap allocations per hit under the malloc counter (as
scenario 7) and its user-space instructions per hit under callgrind.

12c: the miss path: every request a different query string, on the cached
route (/c/1k?n=N: a lookup, a miss, the response stored) and on an uncached
route of the same build (/u/1k?n=N, the same object through the catch-all):
Juggler's CPU per request, miss / uncached, once the store is full (filled
first by misses until a 3 s run takes < 0.05 page faults per request: before,
every stored copy lands on fresh pages, a cost per byte of capacity paid once;
the fill's first and last runs are printed).

12d: the 1 KB HIT with the cache in Redis (`set cache redis`, a redis-server
on BENCH_HOST; the extras build started on a table compiled from
bench-redis.def) next to the memory cache: req/s, Juggler's CPU per hit, and
redis-server's CPU per hit beside it.

Called from bench.py's Scenarios.s12 with the bench module (m) for its
helpers: this file keeps bench.py from growing further.
"""

from __future__ import annotations

import re
import shutil
import socket
import statistics
import subprocess
import time
from pathlib import Path

import scenario_h2          # its h2load runner (beside this file, as bench.py imports both)

HERE = Path(__file__).resolve().parent
MISSES_SCRIPT = HERE / "misses.lua"
HIT_KEYS = ["juggler-ext", "varnish", "nginx-cache"]


def head_of(host: str, port: int, path: str) -> tuple[int, str]:
    """One GET on a new connection: the status and the head (the body read whole)."""
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    m = re.match(r"HTTP/1\.[01] (\d{3})", head)
    return (int(m.group(1)) if m else 0), head


def answered_from_cache(key: str, head: str) -> bool:
    if key.startswith("juggler"):          # juggler-ext, juggler-redis, juggler-ext-base
        return re.search(r"\r\nX-Cache: HIT\r?$", head, re.I | re.M) is not None
    if key == "nginx-cache":
        return re.search(r"\r\nX-Cache-Status: HIT\r?$", head, re.I | re.M) is not None
    return re.search(r"\r\nX-Varnish: \d+ \d+\r?$", head, re.I | re.M) is not None   # varnish: hit = two ids


def prime(b, m, key: str, path: str) -> None:
    """Stores the object and checks the next GET is answered from the cache."""
    t = b.target(key)
    for _ in range(20):
        status, head = head_of(m.HOST, t.port, path)
        if status != 200:
            raise RuntimeError(f"scenario 12: {b.label(key)} answered {path} with {status}")
        if answered_from_cache(key, head):
            return
        time.sleep(0.05)
    raise RuntimeError(f"scenario 12: {b.label(key)} does not answer {path} from its cache:\n{head}")


def hits(sc, m, sid: str, name: str) -> None:
    b, s = sc.b, sc.s
    path = f"/c/{name}"
    size = m.CACHE_OBJECTS[name]
    b.note(f"\n## {sid}. Cache HIT, {size:,}-byte object (GET {path}), keep-alive, {s.conns} connections, "
           f"TTL {m.CACHE_TTL_S} s, {m.CACHE_MB} MB")
    keys = sc.keys(HIT_KEYS)        # + juggler@SHORT (the base's extras build) under BENCH_BASE
    for k in keys:
        prime(b, m, k, path)
    runs = b.rounds(sid, keys, path, s.conns)
    for k in keys:           # still hits at the end (no expiry, no eviction in between)
        t = b.target(k)
        if not answered_from_cache(k, head_of(m.HOST, t.port, path)[1]):
            raise RuntimeError(f"scenario {sid}: {b.label(k)} no longer answers {path} from its cache")
    cols = ("rps", "p50", "p99", "cpu_us_per_req", "wrk_cpu_us_per_req", "gbps")
    meds = {k: {x: m.med(runs[k], x) for x in cols} for k in keys}
    rows = [[b.label(k), m.fmt(meds[k]["rps"], ",.0f"), m.fmt(meds[k]["p50"], ".0f"), m.fmt(meds[k]["p99"], ".0f"),
             m.fmt(meds[k]["cpu_us_per_req"], ".2f"), m.fmt(meds[k]["wrk_cpu_us_per_req"], ".2f"),
             m.fmt(meds[k]["gbps"], ".3f"), m.errors_cell(runs[k])]
            for k in keys]
    b.note(f"\n### {sid}. cache HIT, {size:,} B (medians of {s.rounds}; wrk CPU: the client's own utime + stime "
           "per request it completed)\n")
    for line in m.table(["proxy", "req/s", "p50 µs", "p99 µs", "CPU µs/req", "wrk CPU µs/req", "GB/s", "errors"],
                        rows):
        b.note(line)
    ratio_of = ("rps", "p50", "p99", "cpu_us_per_req", "wrk_cpu_us_per_req")
    rr = [[f"Juggler / {b.label(o)}"] + [m.fmt(m.paired(runs, "juggler-ext", o, x), ".2f", "×") for x in ratio_of]
          for o in HIT_KEYS[1:]]
    if s.base_short:
        rr.append([f"Juggler / {b.base_label()}"] + sc.vs_base(sid, runs, "juggler-ext", m.RATE_MEASURES + [
            ("wrk_cpu_us_per_req", "wrk CPU µs/req", ".2f")]))
    b.note("\nRatios: the median over rounds of the ratio within each round.\n")
    for line in m.table(["ratio", "req/s", "p50", "p99", "CPU/req", "wrk CPU/req"], rr):
        b.note(line)
    b.results["scenarios"][sid] = {"runs": runs, "medians": meds}
    client_work(sc, m, sid, path, keys)
    if name == "100k":
        hits_lean_client(sc, m, sid, path, HIT_KEYS)
    for o in HIT_KEYS[1:]:
        r = m.paired(runs, "juggler-ext", o, "rps")
        c = m.paired(runs, "juggler-ext", o, "cpu_us_per_req")
        sc.verdict(f"{sid} cache HIT {name}", f"req/s ≥ 1.2× {b.label(o)}",
                   f"{m.fmt(r, '.2f', '×')} (CPU/req {m.fmt(c, '.2f', '×')})", r is not None and r >= 1.2)


# 12b's hits again with h2load (`--h1`, nghttp2-client) as the client: wrk uses
# a whole core receiving 100 KB responses at ~20k/s (≈ 90 % of it the
# kernel's copy into it), so its req/s is the client's limit; a second client
# shows whether another one changes that (docs/BENCHMARKS.md: it does not,
# h2load caps at the same rate). Rotated rounds, the same connections; each
# proxy's CPU and the client's own (its rusage) per response. Information.
def hits_lean_client(sc, m, sid: str, path: str, keys: list[str]) -> None:
    b, s = sc.b, sc.s
    if not shutil.which("h2load"):
        b.note(f"\n({sid}: no h2load: the rounds with the leaner client skipped)")
        return

    def h2load_h1(t, path: str, seconds: int | None) -> dict:
        r = scenario_h2.measure(sc, m, t, path, s.conns, 1, duration=seconds, h1=True)
        r["client_us_per_req"] = r["client_s"] * 1e6 / r["requests"] if r["requests"] else None
        return r

    runs = b.rounds(f"{sid}-h2load", keys, path, s.conns, run=h2load_h1)
    cols = ("rps", "cpu_us_per_req", "client_us_per_req")
    meds = {k: {x: m.med(runs[k], x) for x in cols} for k in keys}
    b.note(f"\n### {sid}, client h2load --h1 (-t1 -c{s.conns}, medians of {s.rounds}; client CPU: h2load's "
           "utime + stime per response)\n")
    rows = [[b.label(k), m.fmt(meds[k]["rps"], ",.0f"), m.fmt(meds[k]["cpu_us_per_req"], ".2f"),
             m.fmt(meds[k]["client_us_per_req"], ".2f"), m.errors_cell(runs[k])] for k in keys]
    for line in m.table(["proxy", "req/s", "CPU µs/req", "client CPU µs/req", "errors"], rows):
        b.note(line)
    rr = [[f"Juggler / {b.label(o)}"] + [m.fmt(m.paired(runs, keys[0], o, x), ".2f", "×") for x in cols]
          for o in keys[1:]]
    b.note("")
    for line in m.table(["ratio", "req/s", "CPU/req", "client CPU/req"], rr):
        b.note(line)
    b.results["scenarios"][f"{sid}-h2load"] = {"runs": runs, "medians": meds}
    for o in keys[1:]:
        r = m.paired(runs, keys[0], o, "rps")
        sc.verdict(f"{sid} cache HIT (h2load client)", f"(info) req/s and CPU/hit against {b.label(o)}",
                   f"{m.fmt(r, '.2f', '×')} (CPU/req {m.fmt(m.paired(runs, keys[0], o, 'cpu_us_per_req'), '.2f', '×')})",
                   None)


# What wrk does per response (information, one short run per proxy, not per round):
# its read() calls, FIONREAD ioctls and epoll_wait() wake-ups (the kernel's syscall
# tracepoints, counted for wrk only by `perf stat`), and the TCP data segments its
# sockets receive from the proxy (tcp:tcp_probe, dport = the proxy's port, counted
# machine-wide by an outer `perf stat -a`: the segments are processed in softirq,
# not always in wrk's context). Skipped when perf cannot count them. Halfway
# through, `ss` reads the receive state of wrk's sockets: loopback's 64 KB MSS
# against the initial 64 KB receive space leaves them at that space unless the
# kernel's autotuning grows it (a window below one 100 KB response: the body in
# half-window segments and a window update mid-response; docs/BENCHMARKS.md).
CLIENT_SYSCALLS = ("read", "ioctl", "epoll_wait")


def wrk_sockets(port: int) -> tuple[float | None, float | None, int]:
    """Median rcv_space (bytes) and rcv_rtt (µs) of the established sockets to port, and their count."""
    out = subprocess.run(["ss", "-tinH", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True).stdout
    space = [int(x) for x in re.findall(r"\brcv_space:(\d+)", out)]
    rtt = [float(x) * 1000 for x in re.findall(r"\brcv_rtt:([\d.]+)", out)]
    med = lambda v: statistics.median(v) if v else None
    return med(space), med(rtt), len(space)


def perf_counts(path: Path) -> dict[str, int]:
    counts = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        f = line.split(",")
        if len(f) > 2 and f[0].strip().isdigit():
            counts[f[2].split(":")[-1].removeprefix("sys_enter_")] = int(f[0])
    return counts


def client_work(sc, m, sid: str, path: str, keys: list[str], seconds: int = 2) -> None:
    b, s = sc.b, sc.s
    if not shutil.which("perf"):
        b.note(f"\n({sid}: no perf: wrk's syscalls and segments per response not counted)")
        return
    outer, inner = s.work / f"perf-{sid}-all.csv", s.work / f"perf-{sid}-wrk.csv"
    rows, per = [], {}
    for k in keys:
        t = b.target(k)
        argv = ["perf", "stat", "-x", ",", "-o", str(outer), "-a", "-e", "tcp:tcp_probe",
                "--filter", f"dport == {t.port} && data_len > 0",
                "--", "perf", "stat", "-x", ",", "-o", str(inner)]
        for c in CLIENT_SYSCALLS:
            argv += ["-e", f"syscalls:sys_enter_{c}"]
        argv += ["--", "wrk", "-t", str(s.wrk_threads), "-c", str(s.conns), "-d", f"{seconds}s",
                 "-s", str(m.HERE / "report.lua"), f"http://{m.HOST}:{t.port}{path}"]
        time.sleep(s.settle)
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(seconds / 2)
        space, rtt, nsock = wrk_sockets(t.port) if shutil.which("ss") else (None, None, 0)
        r = subprocess.CompletedProcess(argv, 0, *p.communicate(timeout=seconds + 60))
        r.returncode = p.returncode
        g = re.search(r"^BENCH .*\brequests=(\d+)", r.stdout, re.M)
        counts = perf_counts(outer) | perf_counts(inner)
        if r.returncode != 0 or not g or not int(g.group(1)) or len(counts) != len(CLIENT_SYSCALLS) + 1:
            b.note(f"\n({sid}: perf stat could not count wrk's syscalls and segments ({r.returncode}): "
                   f"{r.stderr.strip()[-300:]})")
            return
        n = int(g.group(1))
        per[k] = {c: counts[c] / n for c in (*CLIENT_SYSCALLS, "tcp_probe")} | {
            "requests": n, "rcv_space": space, "rcv_rtt_us": rtt, "sockets": nsock}
        rows.append([b.label(k), f"{n:,}", f"{per[k]['tcp_probe']:.2f}"]
                    + [f"{per[k][c]:.2f}" for c in CLIENT_SYSCALLS] + [m.fmt(space, ",.0f"), m.fmt(rtt, ".0f")])
    b.note(f"\n{sid}, information: what wrk receives and does per response ({seconds} s run of each under "
           "`perf stat`; wrk reads 8 KB at a time and asks FIONREAD before each next read; rcv_space and "
           "rcv_rtt: medians over wrk's sockets halfway through, from `ss -ti`)\n")
    for line in m.table(["proxy", "requests", "TCP data segments"] + [f"{c}()" for c in CLIENT_SYSCALLS]
                        + ["wrk rcv_space", "wrk rcv_rtt µs"], rows):
        b.note(line)
    b.results["scenarios"][f"{sid}-client"] = per


def allocations(sc, m) -> None:
    """Juggler's heap allocations per hit (and per miss, information), as scenario 7."""
    b, s = sc.b, sc.s
    name = "juggler-ext-alloc"
    port = m.PORTS[name]
    cnt = s.work / f"{name}.count"
    cnt.unlink(missing_ok=True)
    b.stop(name)
    p = b.start("juggler-ext", env={"LD_PRELOAD": str(s.malloc_so), "MALLOC_COUNT_FILE": str(cnt)},
                port=port, name=name)
    t = m.Target(name, "juggler-ext", port, p)
    rows, per_hit = [], {}
    try:
        if m.read_counts(cnt) is None:
            raise RuntimeError(f"malloc counter not active ({cnt} missing)")
        cases = [(f"HIT {n}", f"/c/{n}", None) for n in m.CACHE_OBJECTS] + [("MISS 1k (stored)", "/c/1k", MISSES_SCRIPT)]
        for what, path, script in cases:
            if script is None:
                status, head = head_of(m.HOST, port, path)
                status, head = head_of(m.HOST, port, path)
                if not answered_from_cache("juggler-ext", head):
                    raise RuntimeError(f"scenario 12: {path} not a hit under the malloc counter:\n{head}")
            b.wrk(port, path, s.conns, 2, script=script)      # warm-up
            time.sleep(0.3)
            c0 = m.read_counts(cnt)
            r = b.measure(t, path, s.conns, duration=s.alloc_duration, script=script)
            time.sleep(0.3)
            per_hit[what], row = m.allocation_row(b, "12", what, r, c0, m.read_counts(cnt), p.alive())
            rows.append(row)
    finally:
        b.stop(name)
    b.note("\n### 12. Juggler's heap allocations per request (LD_PRELOAD malloc counter, "
           f"{s.alloc_duration} s of keep-alive load after a 2 s warm-up)\n")
    for line in m.table(["requests", "count", "allocations", "frees", "allocs/request", "errors"], rows):
        b.note(line)
    b.results["scenarios"]["12-allocations"] = per_hit
    for n in m.CACHE_OBJECTS:
        v = per_hit.get(f"HIT {n}")
        sc.verdict(f"12 cache HIT {n}", "zero heap allocations per hit (< 0.001)", m.fmt(v, ".3f"),
                   v is not None and v < 0.001)
    sc.verdict("12 cache MISS", "(info) allocations per miss, response stored", m.fmt(per_hit.get("MISS 1k (stored)"),
                                                                                    ".3f"), None)


def instructions(sc, m) -> None:
    """User-space instructions per 1 KB hit under callgrind (the first request
    of each run is the miss that stores it; the difference of two runs is hits only)."""
    b = sc.b
    req = f"GET /c/1k HTTP/1.1\r\nHost: {m.HOST}:{m.PORTS['juggler-cg']}\r\n\r\n".encode()
    ins = sc.instructions(("juggler-ext",), lambda i: req)
    if ins:
        b.note(f"\nJuggler's user-space instructions per 1 KB HIT (callgrind, ({m.CG_REQUESTS[1]:,} − "
               f"{m.CG_REQUESTS[0]:,} keep-alive requests) / {m.CG_REQUESTS[1] - m.CG_REQUESTS[0]:,}): "
               f"{ins['juggler-ext']:,.0f}.")
        b.results["scenarios"]["12-instructions"] = ins


def misses(sc, m) -> None:
    b, s = sc.b, sc.s
    keys = ["juggler-miss", "juggler-nocache"]
    paths = {"juggler-miss": "/c/1k", "juggler-nocache": "/u/1k"}
    b.note(f"\n## 12c. Cache miss path: every request a different query string, 1 KB object, keep-alive, "
           f"{s.conns} connections: the cached route (a miss, the response stored) vs an uncached route")
    # The store is filled first: until it is full, each stored copy lands on fresh pages
    # (a minor fault per ≈ 4 KB, the kernel zeroing them), a cost per byte of the cache's
    # capacity paid once, not per miss; a full store evicts one entry per miss and reuses its
    # memory. Misses until a 3 s run takes < 0.05 faults per request (at most 12 runs).
    t = b.target("juggler-miss")
    fills = []
    for _ in range(12):
        fills.append(b.measure(t, paths["juggler-miss"], s.conns, script=MISSES_SCRIPT, duration=3))
        f = fills[-1]["faults_per_req"]
        m.log(f"  [12c fill {len(fills)}] {fills[-1]['rps']:>10.0f} req/s  cpu {fills[-1]['cpu_us_per_req'] or 0:.2f} µs/req  "
            f"faults {f if f is not None else float('nan'):.3f}/req")
        if f is None or f < 0.05:
            break
    runs = b.rounds("12c", keys, paths, s.conns, script=MISSES_SCRIPT)
    meds = {k: {x: m.med(runs[k], x) for x in ("rps", "p50", "p99", "cpu_us_per_req", "faults_per_req")}
            for k in keys}
    rows = [[b.label(k), m.fmt(meds[k]["rps"], ",.0f"), m.fmt(meds[k]["p50"], ".0f"), m.fmt(meds[k]["p99"], ".0f"),
             m.fmt(meds[k]["cpu_us_per_req"], ".2f"), m.fmt(meds[k]["faults_per_req"], ".3f"), m.errors_cell(runs[k])]
            for k in keys]
    r = {x: m.paired(runs, "juggler-miss", "juggler-nocache", x) for x in ("rps", "p50", "p99", "cpu_us_per_req")}
    rows.append(["miss / uncached"] + [m.fmt(r[x], ".3f", "×") for x in ("rps", "p50", "p99", "cpu_us_per_req")]
                + ["", ""])
    b.note(f"\n### 12c. cache miss vs uncached route, 1 KB (medians of {s.rounds}; ratios: the median of the "
           "per-round ratios)\n")
    for line in m.table(["route", "req/s", "p50 µs", "p99 µs", "CPU µs/req", "page faults/req", "errors"], rows):
        b.note(line)
    first, last = fills[0], fills[-1]
    full = last["faults_per_req"] is not None and last["faults_per_req"] < 0.05
    b.note(f"\nThe store filling first ({len(fills)} runs of 3 s{'' if full else ', NOT full after them'}): "
           f"the first run {m.fmt(first['cpu_us_per_req'], '.2f')} µs and {m.fmt(first['faults_per_req'], '.3f')} "
           f"page faults per miss, the last {m.fmt(last['cpu_us_per_req'], '.2f')} µs and "
           f"{m.fmt(last['faults_per_req'], '.3f')}; the rounds above ran on the full store (an eviction per miss).")
    b.results["scenarios"]["12c"] = {"runs": runs, "medians": meds, "ratios": r, "fill": fills}
    c = r["cpu_us_per_req"]
    sc.verdict("12c cache MISS", "CPU/request ≤ 1.05× the uncached route's (the store full)",
               f"{m.fmt(c, '.3f', '×')} ({m.fmt(meds['juggler-nocache']['cpu_us_per_req'], '.2f')} → "
               f"{m.fmt(meds['juggler-miss']['cpu_us_per_req'], '.2f')} µs)", c is not None and c <= 1.05)


def redis_hits(sc, m) -> None:
    """12d: 1 KB hits from Redis against the same hits from memory, same build."""
    b, s = sc.b, sc.s
    keys = ["juggler-ext", "juggler-redis"]
    path = "/c/1k"
    redis = b.ensure("redis")               # before the balancer: it connects at start
    b.note(f"\n## 12d. Cache HIT from Redis, 1 KB (GET {path}), keep-alive, {s.conns} connections: "
           f"`set cache redis` (redis-server on {m.HOST}, one connection per worker, pipelined) "
           "against the memory cache")
    for k in keys:
        prime(b, m, k, path)
    t0 = m.cpu_ticks(redis.refresh_pids())
    runs = b.rounds("12d", keys, path, s.conns)
    redis_cpu_s = (m.cpu_ticks(redis.pids) - t0) / m.CLK_TCK
    if not answered_from_cache("juggler-redis", head_of(m.HOST, b.target("juggler-redis").port, path)[1]):
        raise RuntimeError("scenario 12d: the Redis instance no longer answers from its cache")
    meds = {k: {x: m.med(runs[k], x) for x in ("rps", "p50", "p99", "cpu_us_per_req")} for k in keys}
    # redis-server's CPU over the rounds (and the 1 s warm-up: an upper bound) per hit it served
    served = sum(r["requests"] for r in runs["juggler-redis"])
    redis_us = redis_cpu_s * 1e6 / served if served else None
    rows = [[b.label(k), m.fmt(meds[k]["rps"], ",.0f"), m.fmt(meds[k]["p50"], ".0f"), m.fmt(meds[k]["p99"], ".0f"),
             m.fmt(meds[k]["cpu_us_per_req"], ".2f"), m.fmt(redis_us, ".2f") if k == "juggler-redis" else "",
             m.errors_cell(runs[k])] for k in keys]
    r = {x: m.paired(runs, "juggler-redis", "juggler-ext", x) for x in ("rps", "p50", "p99", "cpu_us_per_req")}
    rows.append(["Redis / memory"] + [m.fmt(r[x], ".2f", "×") for x in ("rps", "p50", "p99", "cpu_us_per_req")]
                + ["", ""])
    b.note(f"\n### 12d. cache HIT from Redis vs memory, 1 KB (medians of {s.rounds}; ratios: the median of the "
           "per-round ratios; redis-server CPU over the rounds and the warm-up / the hits of the rounds)\n")
    for line in m.table(["cache", "req/s", "p50 µs", "p99 µs", "Juggler CPU µs/req", "redis-server CPU µs/req",
                         "errors"], rows):
        b.note(line)
    b.results["scenarios"]["12d"] = {"runs": runs, "medians": meds, "ratios": r, "redis_cpu_us_per_hit": redis_us}
    for k in keys[1:] + ["redis"]:
        b.stop(k)
    sc.verdict("12d cache HIT from Redis", "(info) req/s and Juggler CPU/hit against the memory cache",
               f"{m.fmt(r['rps'], '.2f', '×')} req/s, CPU/hit {m.fmt(r['cpu_us_per_req'], '.2f', '×')}", None)


def run(sc, m) -> None:
    if sc.s.juggler_ext is None:
        raise RuntimeError("no extras build (JUGGLER_EXT_BIN): run through tools/bench/run.sh")
    hits(sc, m, "12a", "1k")
    hits(sc, m, "12b", "100k")
    for k in sc.keys(HIT_KEYS)[1:]:
        sc.b.stop(k)          # the competitors (and the base) are done: not beside the next runs
    misses(sc, m)
    redis_hits(sc, m)
    allocations(sc, m)
    instructions(sc, m)

#!/usr/bin/env python3
"""The driver of `make bench` (tools/bench/run.sh builds, then runs this).

Juggler against nginx and HAProxy over the same three nginx backends, on
loopback, every load bounded in time. See tools/bench/README.md for what each
number means. Python 3 stdlib only.

    bench.py gen-one OUT.def            write bench.def for BENCH_HOST (its address replaced)
    bench.py gen-routes OUT.def         write the 1,000-route routes file
    bench.py gen-ch OUT.def             write bench.def with pool web consistent_hash (scenario 8)
    bench.py gen-ext OUT.def            write bench.def + the extras of scenarios 9-12
    bench.py sync-tree NEW DST          make DST a copy of NEW, touching only the files that differ
    bench.py run                        run the scenarios (run.sh sets the env)
"""

from __future__ import annotations

import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CONF = HERE / "conf"

# ---------------------------------------------------------------- ports
# All on 127.0.0.1 (or BENCH_HOST, another loopback address: every server of the
# bench listens there, the routes files are generated for it), in a band nothing
# else here uses. run.sh and this script
# check that each is free before starting anything.
HOST = os.environ.get("BENCH_HOST", "").strip() or "127.0.0.1"
BACKENDS = (19101, 19102, 19103)      # fixed: compiled into tools/bench/bench.def
BACKEND_TLS = 19104                   # the backend nginx over TLS: scenario 3's direct limit
WS_BACKEND = 19105                    # scenario 11: wsbench's echo server (fixed: in bench.py gen-ext's pool)
PORTS = {
    "juggler": 19111, "juggler-1k": 19112, "juggler-ch": 19113,
    "nginx": 19121, "nginx-1k": 19122, "nginx-ws": 19123,
    "haproxy": 19131, "haproxy-1k": 19132, "haproxy-gz": 19133, "haproxy-ws": 19134,
    "haproxy-tcp": 19141,
    # scenario 3: the https listeners of the same juggler, nginx and haproxy processes
    "juggler-tls": 19171, "nginx-tls": 19172, "haproxy-tls": 19173,
    # scenario 7 (under the malloc counter) and scenario 5 (fresh instances)
    "juggler-alloc": 19151, "nginx-alloc": 19152, "haproxy-alloc": 19153,
    "juggler-cg": 19181,
    # scenarios 9 and 10: the extras build (gzip route, L4 listener; bench.py gen-ext)
    "juggler-ext": 19114, "juggler-l4": 19116,
    "juggler-idle": 19161, "nginx-idle": 19162, "haproxy-idle": 19163, "haproxy-tcp-idle": 19164,
    # scenario 12: the caches (Juggler's is the extras build's /c/ route)
    "nginx-cache": 19124, "varnish": 19125, "juggler-ext-alloc": 19154,
    # scenario 12d: the same cached route with `set cache redis` (the extras build started on
    # a table compiled from bench-redis.def, --table), and the redis-server it uses
    "juggler-redis": 19126, "redis": 19127,
    # scenario 13 (HTTP/2): the h2 listeners of the main nginx and haproxy (Juggler's is its
    # https listener, juggler-tls), the fresh instances of the idle measurement (plain port,
    # h2 port) and Juggler under the malloc counter
    "nginx-h2": 19174, "haproxy-h2": 19175,
    "juggler-h2idle": 19176, "juggler-h2idle-tls": 19177, "nginx-h2idle": 19178, "nginx-h2idle-tls": 19179,
    "haproxy-h2idle": 19182, "haproxy-h2idle-tls": 19183, "juggler-h2alloc": 19184, "juggler-h2alloc-tls": 19185,
    "juggler-h2cg": 19186, "juggler-h2cg-tls": 19187,     # under callgrind
}
# BENCH_BASE=REV: the base commit's Juggler, juggler@SHORT, beside Juggler in
# every scenario it runs in (checked free only when BENCH_BASE is set).
BASE_PORTS = {
    "juggler-base": 19191, "juggler-1k-base": 19192, "juggler-ch-base": 19193, "juggler-base-tls": 19194,
    "juggler-base-alloc": 19195, "juggler-base-idle": 19196, "juggler-base-cg": 19197,
    "juggler-base-h2cg": 19198, "juggler-base-h2cg-tls": 19199,
    "juggler-ext-base": 19190,      # scenario 12a/12b: the base's extras build
}
ALL_PORTS = list(BACKENDS) + [BACKEND_TLS, WS_BACKEND] + list(PORTS.values())
PORTS.update(BASE_PORTS)

SMALL_PATH = "/api/v1/items/42"       # the small GET (matches the last route of the 1k file)
BIG_PATH = "/big"
BIG_BYTES = 200 * 1024 * 1024
DISPATCH_HOST = "www.example.com"    # scenario 6's Host: none of the 999 host rules
CG_REQUESTS = (1000, 3000)           # scenario 6's (and 8's) callgrind runs
CH_POOL = "pool web consistent_hash key=header:X-User"   # scenario 8's variant of bench.def's pool line
CH_USERS = 1000                      # scenario 8: X-User: user-1 .. user-1000, in turn (users.lua)
USERS_SCRIPT = HERE / "users.lua"
GZ_PATH = "/gz/data.json"            # scenario 9: a 100 KB JSON body, compressed by the proxy
GZ_BYTES = 100 * 1024
EXT_L4_LISTEN = f"listen tcp {HOST}:{PORTS['juggler-l4']} pool=web"   # scenario 10 (gen-ext)
# Scenario 12 (gen-ext): the cache. The same TTL and memory for Juggler, Varnish and nginx
# proxy_cache; the backend serves each object under /c/ (cached route) and /u/ (not cached).
CACHE_TTL_S = 600
CACHE_MB = 256
CACHE_OBJECTS = {"1k": 1024, "100k": 100 * 1024}
EXT_CACHE_SET = f"set cache memory size={CACHE_MB}m max_object=1m"
EXT_CACHE_ROUTE = f"route GET,HEAD /c/* -> web cache={CACHE_TTL_S // 60}m"
REDIS_CACHE_SET = f"set cache redis {HOST}:{PORTS['redis']} prefix=bench:"   # scenario 12d (gen-redis)

# BENCH_BASE: the measures of a rate table compared Juggler / base (metric, label, value format)
RATE_MEASURES = [("rps", "req/s", ",.0f"), ("p50", "p50 µs", ".0f"), ("p99", "p99 µs", ".0f"),
                 ("cpu_us_per_req", "CPU µs/req", ".2f")]

N_SCENARIOS = 13
WS_SIZE = 1024                       # scenario 11: bytes per WebSocket message

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def env_int(name: str, default: int) -> int:
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


def env_seconds(name: str, default: int) -> int:
    v = os.environ.get(name, "").strip()
    if not v:
        return default
    m = re.fullmatch(r"([0-9]+)\s*(s|m)?", v)
    if not m:
        sys.exit(f"bench: {name}={v!r}: expected seconds, e.g. 10 or 10s or 1m")
    return int(m.group(1)) * (60 if m.group(2) == "m" else 1)


# ---------------------------------------------------------------- settings


@dataclass
class Settings:
    rounds: int
    duration: int
    workers: int
    scenarios: list[int]
    quick: bool
    conns: int
    wrk_threads: int
    dl_conns: int
    idle_conns: int
    alloc_duration: int
    settle: float
    work: Path
    results: Path
    juggler: Path | None        # bench.def's build (run.sh builds it for scenarios 1-8)
    juggler_1k: Path | None     # scenario 6's 1,000-route build (run.sh builds it only for scenario 6)
    juggler_ch: Path | None     # scenario 8's consistent_hash build (run.sh builds it only for scenario 8)
    juggler_ext: Path | None    # scenarios 9-11: bench.def + a gzip route, an L4 listener, a WebSocket pool
    redis_table: Path | None    # scenario 12d: bench-redis.def compiled as a table for --table (run.sh)
    wsbench: Path | None        # scenario 11's echo server and client (tools/bench/wsbench.c)
    malloc_so: Path
    cert: Path
    key: Path
    # BENCH_BASE=REV (run.sh builds it): the base commit's builds, None without BENCH_BASE
    base_short: str | None = None
    base_commit: str | None = None
    juggler_base: Path | None = None
    juggler_base_1k: Path | None = None     # only when scenario 6 runs
    juggler_base_ch: Path | None = None     # only when scenario 8 runs
    juggler_base_ext: Path | None = None    # only when scenario 12 runs

    @staticmethod
    def from_env() -> "Settings":
        quick = os.environ.get("QUICK", "") not in ("", "0")
        rounds = 1 if quick else env_int("ROUNDS", 3)
        duration = 3 if quick else env_seconds("DURATION", 10)
        sc = os.environ.get("SCENARIOS", "all").strip() or "all"
        if sc == "all":
            scenarios = list(range(1, N_SCENARIOS + 1))
        else:
            try:
                scenarios = sorted({int(x) for x in re.split(r"[ ,]+", sc) if x})
            except ValueError:
                sys.exit(f"bench: SCENARIOS={sc!r}: expected 'all' or numbers like 1,2,6")
            bad = [s for s in scenarios if not 1 <= s <= N_SCENARIOS]
            if bad:
                sys.exit(f"bench: SCENARIOS: no scenario {bad[0]} (1..{N_SCENARIOS})")
        if rounds < 1 or duration < 1:
            sys.exit("bench: ROUNDS and DURATION must be at least 1")
        work = Path(os.environ["BENCH_WORK"])
        opt = lambda name: Path(os.environ[name]) if os.environ.get(name) else None
        base = opt("JUGGLER_BASE_BIN")
        return Settings(
            rounds=rounds, duration=duration, workers=env_int("WORKERS", 1), scenarios=scenarios, quick=quick,
            conns=env_int("CONNS", 50), wrk_threads=env_int("WRK_THREADS", 1), dl_conns=env_int("DL_CONNS", 1),
            idle_conns=env_int("IDLE_CONNS", 5000),
            alloc_duration=3 if quick else env_seconds("ALLOC_DURATION", 5),
            settle=float(os.environ.get("SETTLE", "1")),
            work=work, results=Path(os.environ.get("BENCH_RESULTS", ROOT / "bench-results")),
            juggler=opt("JUGGLER_BIN"), juggler_1k=opt("JUGGLER_1K_BIN"),
            juggler_ch=Path(os.environ["JUGGLER_CH_BIN"]) if os.environ.get("JUGGLER_CH_BIN") else None,
            juggler_ext=opt("JUGGLER_EXT_BIN"), wsbench=opt("WSBENCH_BIN"), redis_table=opt("JUGGLER_REDIS_TABLE"),
            malloc_so=Path(os.environ["MALLOC_COUNT_SO"]),
            cert=Path(os.environ["BENCH_CERT_DIR"]) / "server.crt", key=Path(os.environ["BENCH_CERT_DIR"]) / "server.key",
            base_short=(os.environ.get("BENCH_BASE_SHORT") or "base") if base else None,
            base_commit=os.environ.get("BENCH_BASE_COMMIT") if base else None,
            juggler_base=base, juggler_base_1k=opt("JUGGLER_BASE_1K_BIN") if base else None,
            juggler_base_ch=opt("JUGGLER_BASE_CH_BIN") if base else None,
            juggler_base_ext=opt("JUGGLER_BASE_EXT_BIN") if base else None)

    def with_base(self, keys: list[str]) -> list[str]:
        """keys with each Juggler key's base twin (juggler-base, juggler-1k-base,
        juggler-base-tls, ...) right after it, when BENCH_BASE is set."""
        if not self.base_short:
            return list(keys)
        out = []
        for k in keys:
            out.append(k)
            if k.startswith("juggler") and not is_base(k):
                out.append(base_key(k))
        return out


def is_base(key: str) -> bool:
    return key.endswith("-base") or key.startswith("juggler-base")


def base_key(key: str) -> str:
    """juggler -> juggler-base, juggler-1k -> juggler-1k-base, juggler-tls -> juggler-base-tls,
    juggler-h2 -> juggler-base-h2."""
    for sfx in ("-tls", "-h2"):
        if key.endswith(sfx):
            return key.removesuffix(sfx) + "-base" + sfx
    return key + "-base"


# ---------------------------------------------------------------- 1,000 routes

N_PREFIX = 500      # route * /api/v1/sN/*              (nginx: prefix locations; HAProxy: path_beg ACLs)
N_HOST = 499        # route * /api/* host=hN.example.com (nginx: regex locations; HAProxy: hdr(host) ACLs)


def bench_def() -> str:
    """tools/bench/bench.def for BENCH_HOST: its addresses are 127.0.0.1."""
    return (HERE / "bench.def").read_text().replace("127.0.0.1", HOST)


def write_if_changed(out: Path, text: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists() or out.read_text() != text:   # keep the mtime: no rebuild when unchanged
        out.write_text(text)


def gen_routes_one(out: Path) -> None:
    """bench.def itself, on BENCH_HOST (scenarios 1-7: the build-bench/one build)."""
    write_if_changed(out, bench_def())


def gen_routes_1k(out: Path) -> None:
    """bench.def with 999 routes in front of its only route, none of which
    matches the benchmark request: it shares their /api/ and /api/v1/ prefixes
    and only the host or the last segment tells them apart."""
    base = bench_def()
    head, sep, tail = base.rpartition("route * /* -> web")
    assert sep, "tools/bench/bench.def must end with 'route * /* -> web'"
    lines = [f"# Generated by tools/bench/bench.py gen-routes: 999 routes that do not match",
             f"# GET {SMALL_PATH} Host: {DISPATCH_HOST}, then the one that does.", ""]
    for i in range(N_PREFIX):
        lines.append(f"route * /api/v1/s{i}/* -> web")
    for i in range(N_HOST):
        lines.append(f"route * /api/* host=h{i}.example.com -> web")
    out.parent.mkdir(parents=True, exist_ok=True)
    text = head + "\n".join(lines) + "\n" + sep + tail
    if not out.exists() or out.read_text() != text:   # keep the mtime: no rebuild when unchanged
        out.write_text(text)


def gen_routes_ch(out: Path) -> None:
    """bench.def with its pool line changed to consistent_hash on X-User, and
    nothing else (scenario 8: the cost of the strategy alone)."""
    base = bench_def()
    old = "pool web round_robin\n"
    assert base.count(old) == 1, "tools/bench/bench.def must have one 'pool web round_robin' line"
    text = ("# Generated by tools/bench/bench.py gen-ch from tools/bench/bench.def: the same file,\n"
            f"# but the pool is '{CH_POOL}' (scenario 8).\n" + base.replace(old, CH_POOL + "\n"))
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists() or out.read_text() != text:   # keep the mtime: no rebuild when unchanged
        out.write_text(text)


def gen_routes_ext(out: Path, redis: bool = False) -> None:
    """bench.def plus what scenarios 9 and 10 need and the other builds must not
    carry (a base commit may not know them): a gzip route in front of the
    catch-all and an L4 listener on the same pool. With `redis` (gen-redis,
    scenario 12d): the same file with the cache in Redis and without the L4
    listener (its port is the extras build's), compiled as a table for --table."""
    base = bench_def()
    catch_all = "route * /* -> web"
    listen = f"listen http {HOST}:19111\n"
    assert base.count(catch_all) == 1 and base.count(listen) == 1, "tools/bench/bench.def changed shape"
    text = (("# gen-redis: scenario 12d's table, the cache in Redis, no L4 listener.\n" if redis else "")
            + "# Generated by tools/bench/bench.py gen-ext from tools/bench/bench.def: the same file\n"
            "# plus a gzip route (scenario 9), an L4 listener (scenario 10), a WebSocket pool\n"
            "# (scenario 11) and a cached route (scenario 12; /u/ is the same objects uncached,\n"
            "# through the catch-all).\n"
            + base.replace(listen, f"{listen}{'' if redis else EXT_L4_LISTEN}\nset compress.level.gzip 5\n"
                                   f"{REDIS_CACHE_SET if redis else EXT_CACHE_SET}\n")
                  .replace(catch_all, f"route GET,HEAD {GZ_PATH.rsplit('/', 1)[0]}/* -> web gzip\n"
                                      f"route GET /ws -> ws\n{EXT_CACHE_ROUTE}\n\n"
                                      f"pool ws round_robin\n  server {HOST}:{WS_BACKEND}\n\n"
                                      f"{catch_all}"))
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists() or out.read_text() != text:   # keep the mtime: no rebuild when unchanged
        out.write_text(text)


def gen_json(out: Path, size: int) -> None:
    """A JSON document of about `size` bytes shaped like an API listing (ids,
    names, prices, tags, sentences): compresses about as well as real ones."""
    rnd = random.Random(9)
    words = ("alpha beta gamma delta load balancer request server pool route cache tunnel stream "
             "header body status retry health check weight drain metric latency window").split()
    items, n = [], 0
    while n < size - 200:
        item = {"id": len(items) + 1000, "name": f"item-{rnd.randrange(10**6)}",
                "price": round(rnd.uniform(1, 500), 2), "in_stock": rnd.random() < 0.8,
                "tags": rnd.sample(words, 3), "description": " ".join(rnd.choices(words, k=12))}
        items.append(item)
        n += len(json.dumps(item)) + 2
    out.write_text(json.dumps({"items": items, "count": len(items)}))


def sync_tree(new: Path, dst: Path) -> None:
    """Makes DST a copy of NEW (a `git archive` export). Files that differ are
    copied with a new modification time, the others are left alone: git archive
    stamps every file with the commit's time, which is older than the objects
    of an earlier build, so an export straight over DST would let ninja keep
    objects of another commit (BENCH_BASE, BENCH_SOURCE=HEAD)."""
    dst.mkdir(parents=True, exist_ok=True)
    def remove(path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    wanted: set[Path] = set()
    for root, dirs, files in os.walk(new):
        rel = Path(root).relative_to(new)
        for d in dirs:
            src, out = Path(root) / d, dst / rel / d
            wanted.add(rel / d)
            if src.is_symlink():        # os.walk lists a link to a directory among dirs
                files.append(d)
            elif not out.is_dir() or out.is_symlink():
                remove(out)
                out.mkdir()
        for f in files:
            src, out = Path(root) / f, dst / rel / f
            wanted.add(rel / f)
            if src.is_symlink():
                if not (out.is_symlink() and os.readlink(out) == os.readlink(src)):
                    remove(out)
                    os.symlink(os.readlink(src), out)
                continue
            same = (out.is_file() and not out.is_symlink() and out.stat().st_size == src.stat().st_size
                    and out.read_bytes() == src.read_bytes())
            if not same:
                remove(out)
                shutil.copyfile(src, out)       # a new mtime: ninja rebuilds what depends on it
            if (out.stat().st_mode & 0o777) != (src.stat().st_mode & 0o777):
                shutil.copymode(src, out)
    for root, dirs, files in os.walk(dst, topdown=False):
        rel = Path(root).relative_to(dst)
        for name in files + dirs:
            if rel / name not in wanted:
                remove(Path(root) / name)


def nginx_1k_locations() -> str:
    # nginx cannot test the Host in a location; its ordered, first-match rules
    # are regex locations, so the host rules become regex locations on the path
    # (each one is tried, in order, like Juggler's and HAProxy's rules).
    out = [f"        location /api/v1/s{i}/ {{ proxy_pass http://web; }}" for i in range(N_PREFIX)]
    out += [f"        location ~ ^/api/v1/r{i}/ {{ proxy_pass http://web; }}" for i in range(N_HOST)]
    return "\n".join(out)


def haproxy_1k_acls() -> str:
    out = ["    acl is_api path_beg /api/"]
    for i in range(N_PREFIX):
        out.append(f"    acl p{i} path_beg /api/v1/s{i}/")
        out.append(f"    use_backend web if p{i}")
    for i in range(N_HOST):
        out.append(f"    acl h{i} hdr(host) -i h{i}.example.com")
        out.append(f"    use_backend web if is_api h{i}")
    return "\n".join(out)


# ---------------------------------------------------------------- processes


def log(msg: str) -> None:
    print(msg, flush=True)


def port_free(port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def proc_tree(pid: int) -> list[int]:
    """pid and its descendants (nginx: the master and its workers)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def stat_sum(pids: list[int], fields: tuple[int, ...]) -> int:
    """The sum over the processes of /proc/PID/stat fields (0 = the state, the field
    after the command name; proc(5) numbers them from 1 at the pid: index + 3)."""
    total = 0
    for p in pids:
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        f = stat[stat.rindex(")") + 2:].split()
        total += sum(int(f[i]) for i in fields)
    return total


def cpu_ticks(pids: list[int]) -> int:
    """utime + stime (all threads) of the processes, in clock ticks."""
    return stat_sum(pids, (11, 12))      # fields 14 and 15 of proc(5)


def minor_faults(pids: list[int]) -> int:
    """Minor page faults (all threads) of the processes: memory the kernel had to
    map on first touch, CPU spent in the kernel that instruction counts do not show."""
    return stat_sum(pids, (7,))          # field 10 of proc(5)


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def http_get(port: int, path: str = "/", host: str | None = None, timeout: float = 2.0) -> int:
    """One GET on a new connection; returns the status code (0 if none)."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host or f'{HOST}:{port}'}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return int(m.group(1)) if m else 0


class Proc:
    """A server process in its own session (process group), so that it and its
    children are stopped together; its group id is written to WORK/pgids/ for
    run.sh's EXIT trap."""

    def __init__(self, name: str, argv: list[str], port: int, work: Path, env: dict | None = None,
                 ready_path: str | None = "/", cwd: Path | None = None):
        self.name, self.argv, self.port, self.work = name, argv, port, work
        self.logfile = work / "logs" / f"{name}.log"
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=open(self.logfile, "ab"),
                                      stderr=subprocess.STDOUT, env=full_env, start_new_session=True,
                                      cwd=cwd or work)
        (work / "pgids" / name).write_text(str(self.popen.pid))
        self.wait_ready(ready_path)
        self.pids = proc_tree(self.popen.pid)

    def wait_ready(self, path: str | None) -> None:
        """Until GET path answers 200 (path None: until the port accepts)."""
        deadline = time.time() + 15
        last = ""
        while time.time() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode} at start-up; "
                                   f"its log ({self.logfile}):\n{self.tail()}")
            try:
                if path is None:
                    socket.create_connection((HOST, self.port), timeout=1).close()
                    return
                code = http_get(self.port, path)
                if code == 200:
                    return
                last = f"answered {code}"
            except OSError as e:
                last = str(e)
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready on {HOST}:{self.port} after 15 s ({last}); "
                           f"its log:\n{self.tail()}")

    def tail(self) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""

    def refresh_pids(self) -> list[int]:
        self.pids = proc_tree(self.popen.pid)
        return self.pids

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.popen.poll() is None:
            for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.popen.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.popen.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)   # leftovers in the group (nginx workers)
        except ProcessLookupError:
            pass
        (self.work / "pgids" / self.name).unlink(missing_ok=True)


# ---------------------------------------------------------------- the cast


@dataclass
class Target:
    key: str            # juggler, nginx, haproxy, haproxy-tcp, direct, juggler-1k, ...
    label: str
    port: int
    proc: Proc | None   # None: the backend itself (direct)
    scheme: str = "http"


class Bench:
    def __init__(self, s: Settings):
        self.s = s
        self.procs: dict[str, Proc] = {}
        self.rendered: dict[str, Path] = {}
        (s.work / "logs").mkdir(parents=True, exist_ok=True)
        (s.work / "pgids").mkdir(exist_ok=True)
        (s.work / "tmp").mkdir(exist_ok=True)
        (s.work / "conf").mkdir(exist_ok=True)
        self.results: dict = {"scenarios": {}}
        self.report: list[str] = []     # the text written to the results file
        self.targets_met: list[tuple[str, str, str, str]] = []   # (scenario, target, measured, verdict)
        self.juggler_problems: list[str] = []   # socket errors, non-2xx answers, crashes: reported at the end
        self.base_problems: list[str] = []      # the same for BENCH_BASE's juggler@SHORT (information only)
        self.base_ratios: list[list[str]] = []  # (scenario, measure, Juggler, base, Juggler / base): the summary

    # ------------------------------------------------------------ configs

    def render(self, template: str, name: str, port: int, extra: dict[str, str] | None = None) -> Path:
        text = (CONF / template).read_text()
        subs = {"WORK": str(self.s.work), "NAME": name, "PORT": str(port), "WORKERS": str(self.s.workers),
                "BACKEND1": str(BACKENDS[0]), "BACKEND2": str(BACKENDS[1]), "BACKEND3": str(BACKENDS[2]),
                "USER": "user root;" if os.geteuid() == 0 else "", "LOCATIONS": "", "ACLS": "", "TLS": "",
                "BACKEND_TLS": str(BACKEND_TLS), "CERT": str(self.s.cert), "KEY": str(self.s.key),
                "CACHE": "", "CACHE_LOCATION": "", "TTL": str(CACHE_TTL_S)}
        subs.update(extra or {})
        for k, v in subs.items():
            text = text.replace(f"@{k}@", v)
        text = text.replace("127.0.0.1", HOST)     # the templates' address, BENCH_HOST's
        left = re.findall(r"@[A-Z0-9_]+@", text)
        assert not left, f"{template}: unreplaced {left}"
        out = self.s.work / "conf" / (name + Path(template).suffix)
        out.write_text(text)
        return out

    # ------------------------------------------------------------ starting

    def start_backends(self) -> None:
        big = self.s.work / "big.bin"
        if not big.exists() or big.stat().st_size != BIG_BYTES:
            with open(big, "wb") as f:       # real bytes (not a sparse file), written once
                block = os.urandom(1 << 20)
                for _ in range(BIG_BYTES >> 20):
                    f.write(block)
        gen_json(self.s.work / "data.json", GZ_BYTES)
        for d in ("c", "u"):                 # scenario 12: the same objects cached (/c/) and not (/u/)
            (self.s.work / "www" / d).mkdir(parents=True, exist_ok=True)
            for name, size in CACHE_OBJECTS.items():
                (self.s.work / "www" / d / name).write_bytes(random.Random(size).randbytes(size))
        conf = self.render("backend-nginx.conf", "backend", BACKENDS[0])
        p = Proc("backend", ["nginx", "-p", str(self.s.work), "-e", str(self.s.work / "logs/backend-error.log"),
                             "-c", str(conf)], BACKENDS[0], self.s.work)
        self.procs["backend"] = p
        for port in BACKENDS[1:]:
            if http_get(port) != 200:
                raise RuntimeError(f"backend {HOST}:{port} does not answer 200")

    def start(self, key: str, env: dict | None = None, port: int | None = None, name: str | None = None,
              wrapper: list[str] | None = None) -> Proc:
        """Starts one balancer: juggler[-1k|-ch][-base], nginx[-1k], haproxy[-1k], haproxy-tcp."""
        name = name or key
        port = port or PORTS[name]
        base = key.endswith("-base")          # BENCH_BASE: the base commit's build of the same routes file
        variant = key.removesuffix("-base")
        kind = (variant.removesuffix("-1k").removesuffix("-ch").removesuffix("-ext").removesuffix("-gz")
                .removesuffix("-ws").removesuffix("-cache").removesuffix("-redis"))
        big = variant.endswith("-1k")
        w = self.s.work
        if kind == "juggler":
            if base:
                binary = {"juggler": self.s.juggler_base, "juggler-1k": self.s.juggler_base_1k,
                          "juggler-ch": self.s.juggler_base_ch, "juggler-ext": self.s.juggler_base_ext}[variant]
                if binary is None:
                    raise RuntimeError(f"no base build for {key}: run through tools/bench/run.sh with BENCH_BASE=REV")
            else:
                binary = self.s.juggler_1k if big else self.s.juggler
            if key == "juggler-ch":
                if self.s.juggler_ch is None:
                    raise RuntimeError("no consistent_hash build (JUGGLER_CH_BIN): run through tools/bench/run.sh")
                binary = self.s.juggler_ch
            if key in ("juggler-ext", "juggler-redis"):
                if self.s.juggler_ext is None:
                    raise RuntimeError("no extras build (JUGGLER_EXT_BIN): run through tools/bench/run.sh")
                binary = self.s.juggler_ext
            if binary is None:
                raise RuntimeError(f"no build for {key} (JUGGLER_BIN, JUGGLER_1K_BIN): run through tools/bench/run.sh")
            # only the main instances get an https port of their own (scenario 3); the others any free one
            https = {"juggler": PORTS["juggler-tls"], "juggler-base": PORTS["juggler-base-tls"],
                     "juggler-h2idle": PORTS["juggler-h2idle-tls"],
                     "juggler-h2alloc": PORTS["juggler-h2alloc-tls"], "juggler-h2cg": PORTS["juggler-h2cg-tls"],
                     "juggler-base-h2cg": PORTS["juggler-base-h2cg-tls"]}.get(name, 0)
            argv = [str(binary), "--port", str(port), "--https-port", str(https), "--workers", str(self.s.workers),
                    "--access-log", "off", "--log-level", "warn"]
            if key == "juggler-redis":     # the extras build on bench-redis.def's table (cache in Redis)
                if self.s.redis_table is None:
                    raise RuntimeError("no Redis table (JUGGLER_REDIS_TABLE): run through tools/bench/run.sh")
                argv += ["--table", str(self.s.redis_table)]
        elif kind == "nginx":
            tls = ""
            if name in ("nginx", "nginx-h2idle"):   # scenario 3's TLS listener (main), 13's h2 one
                h2 = PORTS["nginx-h2" if name == "nginx" else "nginx-h2idle-tls"]
                tls = ((f"        listen {HOST}:{PORTS['nginx-tls']} ssl backlog=4096;\n" if name == "nginx" else "")
                       + f"        listen {HOST}:{h2} ssl http2 backlog=4096;\n"
                       f"        ssl_certificate {self.s.cert};\n        ssl_certificate_key {self.s.key};\n"
                       "        ssl_protocols TLSv1.2 TLSv1.3;\n")
            conf = self.render("proxy-nginx.conf", name, port, {"LOCATIONS": nginx_1k_locations() if big else "",
                                                                 "TLS": tls, **ws_backends(variant),
                                                                 **nginx_cache(variant, name, w)})
            argv = ["nginx", "-p", str(w), "-e", str(w / f"logs/{name}-error.log"), "-c", str(conf)]
        elif kind == "haproxy":
            tls = ""
            if name in ("haproxy", "haproxy-h2idle"):   # scenario 3's TLS bind (main), 13's h2 one
                pem = w / "bench.pem"        # HAProxy wants the certificate and its key in one file
                pem.write_text(self.s.cert.read_text() + self.s.key.read_text())
                h2 = PORTS["haproxy-h2" if name == "haproxy" else "haproxy-h2idle-tls"]
                tls = ((f"    bind {HOST}:{PORTS['haproxy-tls']} ssl crt {pem} alpn http/1.1 "
                        "ssl-min-ver TLSv1.2\n" if name == "haproxy" else "")
                       + f"    bind {HOST}:{h2} ssl crt {pem} alpn h2,http/1.1 ssl-min-ver TLSv1.2\n")
            # scenario 9's instance compresses (JSON only); the others carry no compression filter
            gz = "    compression algo gzip\n    compression type application/json\n" if variant.endswith("-gz") else ""
            conf = self.render("haproxy-http.cfg", name, port, {"ACLS": haproxy_1k_acls() if big else "",
                                                                "TLS": tls, "GZ": gz, **ws_backends(variant)})
            argv = ["haproxy", "-db", "-f", str(conf)]
        elif kind == "varnish":
            vcl = self.render("varnish.vcl", name, port)
            # its own working directory (-n), no jail (-j none: no user switch), no
            # management port (-T none), in the foreground (-F) in its process group
            argv = ["varnishd", "-F", "-j", "none", "-n", str(w / f"{name}-workdir"), "-T", "none",
                    "-a", f"{HOST}:{port}", "-f", str(vcl), "-s", f"malloc,{CACHE_MB}m",
                    "-p", "thread_pools=1"]
        elif kind == "haproxy-tcp":
            conf = self.render("haproxy-tcp.cfg", name, port)
            argv = ["haproxy", "-db", "-f", str(conf)]
        elif kind == "redis":               # scenario 12d's store: in memory only, no persistence
            argv = ["redis-server", "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no",
                    "--maxmemory", f"{CACHE_MB}mb", "--maxmemory-policy", "allkeys-lru", "--dir", str(w)]
        else:
            raise ValueError(key)
        try:
            p = Proc(name, (wrapper or []) + argv, port, w, env, ready_path=None if kind == "redis" else "/",
                     cwd=ROOT if kind == "juggler" else None)
        except RuntimeError as e:
            if base:
                raise RuntimeError(f"the base, {self.base_label()} (BENCH_BASE={os.environ.get('BENCH_BASE', '?')}), "
                                   f"did not start with the bench's command line ({' '.join(argv[1:])}): its "
                                   f"flags or routes support may differ from this tree's.\n{e}") from None
            raise
        self.procs[name] = p
        return p

    def base_label(self) -> str:
        return f"juggler@{self.s.base_short}"

    def ensure(self, key: str) -> Proc:
        p = self.procs.get(key)
        if p is None or not p.alive():
            if p is not None:
                self.note(f"!! {key} had exited (code {p.popen.returncode}); its log:\n{p.tail()}")
            p = self.start(key)
        return p

    def stop(self, name: str) -> None:
        p = self.procs.pop(name, None)
        if p:
            p.stop()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def target(self, key: str) -> Target:
        label = self.label(key)
        if key == "direct":
            return Target(key, label, BACKENDS[0], None)
        if key == "direct-tls":
            return Target(key, label, BACKEND_TLS, None, "https")
        if key == "juggler-l4":             # the extras build's `listen tcp`
            return Target(key, label, PORTS[key], self.ensure("juggler-ext"))
        if key == "juggler-ws":             # the extras build's `route GET /ws -> ws`
            return Target(key, label, PORTS["juggler-ext"], self.ensure("juggler-ext"))
        if key == "direct-ws":
            return Target(key, label, WS_BACKEND, None)
        if key in ("juggler-miss", "juggler-nocache"):   # scenario 12c: two routes of the extras build
            return Target(key, label, PORTS["juggler-ext"], self.ensure("juggler-ext"))
        if key.endswith("-tls"):
            return Target(key, label, PORTS[key], self.ensure(key.removesuffix("-tls")), "https")
        if key.endswith("-h2"):             # scenario 13: Juggler's h2 is its https listener
            port = PORTS.get(key) or PORTS[key.removesuffix("-h2") + "-tls"]
            return Target(key, label, port, self.ensure(key.removesuffix("-h2")), "https")
        return Target(key, label, PORTS[key], self.ensure(key))

    def label(self, key: str) -> str:
        """The name of a target in the tables (starts nothing, unlike target())."""
        labels = {"juggler-tls": "Juggler", "nginx-tls": "nginx", "haproxy-tls": "HAProxy",
                  "direct-tls": "direct to backend, TLS (limit)",
                  "juggler": "Juggler", "nginx": "nginx", "haproxy": "HAProxy", "haproxy-tcp": "HAProxy TCP (limit)",
                  "direct": "direct to backend (limit)", "juggler-1k": "Juggler, 1,000 routes",
                  "nginx-1k": "nginx, 1,000 locations", "haproxy-1k": "HAProxy, 1,000 ACLs",
                  "juggler-ch": "Juggler, consistent_hash", "juggler-ext": "Juggler",
                  "juggler-l4": "Juggler L4 (listen tcp)", "haproxy-gz": "HAProxy (libslz)",
                  "juggler-ws": "Juggler", "nginx-ws": "nginx", "haproxy-ws": "HAProxy",
                  "direct-ws": "direct to the echo server (limit)",
                  "varnish": "Varnish (-s malloc)", "nginx-cache": "nginx proxy_cache",
                  "juggler-redis": "Juggler, cache in Redis (set cache redis)",
                  "juggler-miss": "Juggler, cached route, every request a miss",
                  "juggler-nocache": "Juggler, uncached route",
                  "juggler-h2": "Juggler", "nginx-h2": "nginx (listen ssl http2)", "haproxy-h2": "HAProxy (alpn h2)"}
        if self.s.base_short:
            bl = self.base_label()
            labels.update({"juggler-base": bl, "juggler-base-tls": bl, "juggler-base-h2": bl, "juggler-1k-base": f"{bl}, 1,000 routes",
                           "juggler-ch-base": f"{bl}, consistent_hash", "juggler-ext-base": bl})
        return labels[key]

    # ------------------------------------------------------------ output

    def note(self, line: str = "") -> None:
        log(line)
        self.report.append(line)

    # ------------------------------------------------------------ wrk

    def wrk(self, port: int, path: str, conns: int, duration: int, headers: list[str] | None = None,
            timeout: str = "10s", threads: int | None = None, scheme: str = "http",
            script: Path | None = None) -> dict:
        """script: a wrk Lua script that reports like report.lua (users.lua loads it)."""
        threads = min(threads or self.s.wrk_threads, conns)
        argv = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{duration}s", "--timeout", timeout,
                "-s", str(script or HERE / "report.lua")]
        for h in headers or []:
            argv += ["-H", h]
        argv.append(f"{scheme}://{HOST}:{port}{path}")
        # wrk's own CPU: the rusage of the children reaped meanwhile (wrk only: the
        # servers are reaped when they are stopped, never during a run)
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 120)
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        m = re.search(r"^BENCH (.*)$", r.stdout, re.M)
        if r.returncode != 0 or not m:
            raise RuntimeError(f"wrk failed ({r.returncode}): {' '.join(argv)}\n{r.stdout}\n{r.stderr}")
        out = {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
        out["errors"] = out["connect"] + out["read"] + out["write"] + out["timeout"]
        out["wrk_cpu_s"] = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
        return out

    def measure(self, t: Target, path: str, conns: int, headers: list[str] | None = None,
                timeout: str = "10s", duration: int | None = None, script: Path | None = None) -> dict:
        """One wrk run against a target, with the proxy's CPU over the run."""
        duration = duration or self.s.duration
        pids = t.proc.refresh_pids() if t.proc else []
        t0, f0 = cpu_ticks(pids), minor_faults(pids)
        r = self.wrk(t.port, path, conns, duration, headers, timeout, scheme=t.scheme, script=script)
        t1, f1 = cpu_ticks(pids), minor_faults(pids)
        secs = r["duration_us"] / 1e6
        r["rps"] = r["requests"] / secs if secs else 0.0
        r["gbps"] = r["bytes"] / secs / 1e9 if secs else 0.0
        r["cpu_s"] = (t1 - t0) / CLK_TCK
        r["cpu_us_per_req"] = (r["cpu_s"] * 1e6 / r["requests"]) if (t.proc and r["requests"]) else None
        r["wrk_cpu_us_per_req"] = r["wrk_cpu_s"] * 1e6 / r["requests"] if r["requests"] else None
        r["faults_per_req"] = ((f1 - f0) / r["requests"]) if (t.proc and r["requests"]) else None
        r["cpu_s_per_gb"] = (r["cpu_s"] / (r["bytes"] / 1e9)) if (t.proc and r["bytes"]) else None
        if t.proc and not t.proc.alive():
            r["crashed"] = True
        return r

    def rounds(self, sid: str, keys: list[str], path: str | dict[str, str], conns: int,
               headers: list[str] | None = None, timeout: str = "10s", order_of=None,
               script: Path | None = None, run=None) -> dict[str, list[dict]]:
        """ROUNDS rounds; in each, every target once, the order rotated every
        round so that no target always runs first (or right after another).
        path: one for all, or one per key. run(target, path, seconds): another
        client than wrk (seconds None: the bench's duration); its result has at
        least requests, rps, errors, status and cpu_us_per_req."""
        path_of = (lambda k: path[k]) if isinstance(path, dict) else (lambda k: path)
        runs: dict[str, list[dict]] = {k: [] for k in keys}
        targets = [self.target(k) for k in keys]
        width = max(28, *(len(t.label) for t in targets))
        # a short warm-up of each (pools, caches, upstream connections), not measured
        for t in targets:
            if run:
                run(t, path_of(t.key), 1)
            else:
                self.wrk(t.port, path_of(t.key), conns, 1, headers, timeout, scheme=t.scheme, script=script)
        for rnd in range(self.s.rounds):
            order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
            if order_of:
                order = [targets[keys.index(k)] for k in order_of(rnd)]
            for t in order:
                time.sleep(self.s.settle)
                t = self.target(t.key)          # restarted if it had died
                r = (run(t, path_of(t.key), None) if run
                     else self.measure(t, path_of(t.key), conns, headers, timeout, script=script))
                runs[t.key].append(r)
                if t.key.startswith("juggler") and (r["errors"] or r["status"] or r.get("crashed")):
                    b_problem = (f"scenario {sid} round {rnd + 1}: {r['errors']:.0f} socket errors, "
                                 f"{r['status']:.0f} non-2xx{', crashed' if r.get('crashed') else ''}")
                    if is_base(t.key):
                        self.base_problems.append(f"{t.label}: {b_problem}")
                    else:
                        self.juggler_problems.append(b_problem)
                cpu = f"{r['cpu_us_per_req']:.2f} µs/req" if r["cpu_us_per_req"] is not None else "-"
                bad = ""
                if (r["errors"] or r["status"]) and "connect" in r:      # wrk's kinds of error
                    bad = (f"  ERRORS connect={r['connect']:.0f} read={r['read']:.0f} write={r['write']:.0f} "
                           f"timeout={r['timeout']:.0f} non-2xx/3xx={r['status']:.0f}")
                elif r["errors"] or r["status"]:
                    bad = f"  ERRORS {r['errors']:.0f}, non-2xx {r['status']:.0f}"
                if r.get("crashed"):
                    bad += f"  CRASHED: {t.proc.tail()}"
                lat = (f"p50 {r['p50']:>6.0f} µs  p99 {r['p99']:>6.0f} µs  {r['gbps']:.3f} GB/s  "
                       if "p50" in r else "")
                log(f"  [{sid} round {rnd + 1}/{self.s.rounds}] {t.label:<{width}} {r['rps']:>10.0f} req/s  "
                    f"{lat}cpu {cpu}{bad}")
        return runs


# ---------------------------------------------------------------- statistics / tables


def med(runs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt(v: float | None, spec: str, suffix: str = "") -> str:
    return "-" if v is None else format(v, spec) + suffix


def table(headers: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """A Markdown table; the first `left` columns aligned left, the others right."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    def line(cells):
        return "| " + " | ".join(c.ljust(widths[i]) if i < left else c.rjust(widths[i])
                                 for i, c in enumerate(cells)) + " |"
    sep = "|" + "|".join("-" * (w + 2) if i < left else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return [line(headers), sep] + [line(r) for r in rows]


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def paired(runs: dict[str, list[dict]], a: str, b: str, key: str) -> float | None:
    """The median over rounds of a's value / b's value in the same round: the
    two ran minutes apart at most, so a drift of the machine's load cancels
    out better than in the ratio of the two medians."""
    vals = [ratio(x.get(key), y.get(key)) for x, y in zip(runs[a], runs[b])]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def ratio_cell(r: float | None, a: float | None = None, b: float | None = None) -> str:
    """A Juggler / base ratio; "same" for two equal values it cannot divide (0 and 0)."""
    if r is None and a is not None and a == b:
        return "same"
    return fmt(r, ".3f", "×")


def errors_cell(runs: list[dict]) -> str:
    e = sum(r["errors"] for r in runs)
    st = sum(r["status"] for r in runs)
    crashed = any(r.get("crashed") for r in runs)
    if not e and not st and not crashed:
        return "0"
    parts = []
    if e:
        parts.append(f"{e:.0f} socket")
    if st:
        parts.append(f"{st:.0f} non-2xx")
    if crashed:
        parts.append("CRASHED")
    return ", ".join(parts)


# ---------------------------------------------------------------- scenarios


class Scenarios:
    def __init__(self, b: Bench):
        self.b = b
        self.s = b.s

    def verdict(self, scenario: str, what: str, measured: str, ok: bool | None) -> None:
        v = "n/a" if ok is None else ("met" if ok else "NOT met")
        self.b.targets_met.append((scenario, what, measured, v))

    # ------------------------------------------------------------ BENCH_BASE

    def keys(self, keys: list[str]) -> list[str]:
        """The scenario's targets, with juggler@SHORT beside each Juggler one under BENCH_BASE."""
        return self.s.with_base(keys)

    def base_value(self, sid: str, measure: str, j: float | None, b: float | None, spec: str,
                   r: float | None = None) -> float | None:
        """Records one Juggler / base comparison for the summary; r (default j / b)
        is the ratio, e.g. the median of the per-round ratios."""
        if r is None:
            r = ratio(j, b)
        self.b.base_ratios.append([sid, measure, fmt(j, spec), fmt(b, spec), ratio_cell(r, j, b)])
        return r

    def vs_base(self, sid: str, runs: dict[str, list[dict]], key: str,
                measures: list[tuple]) -> list[str]:
        """Juggler / base (key against its base twin) for each (metric, label,
        value format[, scale]): the median of the per-round ratios, recorded
        for the summary (the values multiplied by scale). Returns the ratio cells."""
        bk = base_key(key)
        cells = []
        for m, label, spec, *scale in measures:
            j, b = med(runs[key], m), med(runs[bk], m)
            if scale:
                j, b = (None if v is None else v * scale[0] for v in (j, b))
            r = paired(runs, key, bk, m)
            self.base_value(sid, label, j, b, spec, r)
            cells.append(ratio_cell(r, j, b))
        return cells

    def base_line(self, what: str, cells: list[tuple[str, str]]) -> None:
        """One line of Juggler / base ratios under a table that has no ratio table."""
        self.b.note(f"\n{what}: " + ", ".join(f"{l} {c}" for l, c in cells) + ".")

    def rate_table(self, title: str, runs: dict[str, list[dict]], keys: list[str],
                   sfx: str = "") -> dict[str, dict]:
        """The table of a request-rate scenario, then Juggler's ratios to nginx
        and HAProxy (keys juggler, nginx, haproxy, each + sfx)."""
        b = self.b
        meds = {k: {m: med(runs[k], m) for m in ("rps", "p50", "p99", "cpu_us_per_req")} for k in keys}
        rows = []
        for k in keys:
            d = meds[k]
            rows.append([b.label(k), fmt(d["rps"], ",.0f"), fmt(d["p50"], ".0f"), fmt(d["p99"], ".0f"),
                         fmt(d["cpu_us_per_req"], ".2f"), errors_cell(runs[k])])
        b.note(f"\n### {title}\n")
        for l in table(["proxy", "req/s", "p50 µs", "p99 µs", "CPU µs/req", "errors"], rows):
            b.note(l)
        rr = []
        for other in ("nginx", "haproxy"):
            rr.append([f"Juggler / {b.label(other)}"] +
                      [fmt(paired(runs, "juggler" + sfx, other + sfx, m), ".2f", "×")
                       for m in ("rps", "p50", "p99", "cpu_us_per_req")])
        if self.s.base_short:
            rr.append([f"Juggler / {b.base_label()}"] +
                      self.vs_base(title.split(".")[0], runs, "juggler" + sfx, RATE_MEASURES))
        b.note("\nRatios: the median over rounds of the ratio within each round.\n")
        for l in table(["ratio", "req/s", "p50", "p99", "CPU/req"], rr):
            b.note(l)
        return meds

    # 1 and 2 ----------------------------------------------------------------

    def s1(self) -> None:
        keys = self.keys(["juggler", "nginx", "haproxy", "haproxy-tcp", "direct"])
        self.b.note(f"\n## 1. Small GET, keep-alive, {self.s.conns} connections")
        runs = self.b.rounds("1", keys, SMALL_PATH, self.s.conns)
        meds = self.rate_table(f"1. small GET, keep-alive, {self.s.conns} connections (medians of {self.s.rounds})",
                               runs, keys)
        self.b.results["scenarios"]["1"] = {"runs": runs, "medians": meds}
        j, h = meds["juggler"], meds["haproxy"]
        for other, label in (("nginx", "nginx"), ("haproxy", "HAProxy")):
            r = paired(runs, "juggler", other, "rps")
            self.verdict("1 keep-alive", f"req/s ≥ 1.15× {label}", fmt(r, ".2f", "×"), r is not None and r >= 1.15)
        for other, label in (("nginx", "nginx"), ("haproxy", "HAProxy")):
            r = paired(runs, "juggler", other, "p99")
            self.verdict("1 keep-alive", f"p99 ≤ {label}'s", f"{fmt(r, '.2f', '×')} ({fmt(j['p99'], '.0f')} vs "
                         f"{fmt(meds[other]['p99'], '.0f')} µs)", r is not None and r <= 1.0)
        r = paired(runs, "juggler", "haproxy", "cpu_us_per_req")
        self.verdict("1 keep-alive", "CPU/request ≤ 0.75× HAProxy", f"{fmt(r, '.2f', '×')} "
                     f"({fmt(j['cpu_us_per_req'], '.2f')} vs {fmt(h['cpu_us_per_req'], '.2f')} µs)",
                     r is not None and r <= 0.75)

    def s2(self) -> None:
        keys = self.keys(["juggler", "nginx", "haproxy", "haproxy-tcp", "direct"])
        self.b.note(f"\n## 2. Small GET, a new connection per request, {self.s.conns} concurrent")
        runs = self.b.rounds("2", keys, SMALL_PATH, self.s.conns, headers=["Connection: close"])
        meds = self.rate_table(f"2. small GET, new connection per request (Connection: close), {self.s.conns} "
                               f"concurrent (medians of {self.s.rounds})", runs, keys)
        self.b.results["scenarios"]["2"] = {"runs": runs, "medians": meds}
        for other in ("nginx", "haproxy"):
            r = paired(runs, "juggler", other, "rps")
            self.verdict("2 new connection", f"req/s ≥ 1.15× {self.b.label(other)}", fmt(r, ".2f", "×"),
                         r is not None and r >= 1.15)

    # 3 ----------------------------------------------------------------------

    def s3(self) -> None:
        """TLS termination (plain HTTP to the backends): keep-alive (record
        encryption) and a new connection per request (a handshake each). The
        direct limit is the backend nginx answering over TLS itself."""
        keys = self.keys(["juggler-tls", "nginx-tls", "haproxy-tls", "direct-tls"])
        for sub_id, what, headers in (("3a", "keep-alive", None),
                                      ("3b", "a new connection (TLS handshake) per request", ["Connection: close"])):
            self.b.note(f"\n## {sub_id}. TLS (TLS 1.3, ECDSA P-256 certificate), small GET, {what}, "
                        f"{self.s.conns} connections")
            runs = self.b.rounds(sub_id, keys, SMALL_PATH, self.s.conns, headers=headers)
            meds = self.rate_table(f"{sub_id}. TLS, small GET, {what} (medians of {self.s.rounds})", runs, keys,
                                   sfx="-tls")
            self.b.results["scenarios"][sub_id] = {"runs": runs, "medians": meds}
            for other, label in (("nginx", "nginx"), ("haproxy", "HAProxy")):
                r = paired(runs, "juggler-tls", other + "-tls", "rps")
                self.verdict(f"{sub_id} TLS {what.split(' (')[0]}", f"(no target) req/s vs {label}",
                             fmt(r, ".2f", "×"), None)

    # 4 ----------------------------------------------------------------------

    def s4(self) -> None:
        keys = self.keys(["juggler", "nginx", "haproxy", "haproxy-tcp", "direct"])
        c = self.s.dl_conns
        self.b.note(f"\n## 4. 200 MB download, {c} connection{'s' if c > 1 else ''}, keep-alive")
        runs = self.b.rounds("4", keys, BIG_PATH, c, timeout="60s")
        b = self.b
        meds = {k: {m: med(runs[k], m) for m in ("gbps", "rps", "cpu_s_per_gb", "p50")} for k in keys}
        d = meds["direct"]["gbps"]
        rows = []
        for k in keys:
            m = meds[k]
            rows.append([b.label(k), fmt(m["gbps"], ".2f"), fmt(paired(runs, k, "direct", "gbps"), ".2f", "×"),
                         fmt(m["p50"] / 1000 if m["p50"] else None, ".0f"), fmt(m["cpu_s_per_gb"], ".3f"),
                         f"{sum(r['requests'] for r in runs[k]):.0f}", errors_cell(runs[k])])
        b.note(f"\n### 4. 200 MB download (medians of {self.s.rounds}; GB = 10^9 bytes)\n")
        for l in table(["proxy", "GB/s", "vs direct", "p50 ms/download", "proxy CPU s/GB", "downloads", "errors"],
                       rows):
            b.note(l)
        b.results["scenarios"]["4"] = {"runs": runs, "medians": meds}
        if self.s.base_short:
            ms = [("gbps", "GB/s", ".2f"), ("p50", "p50 ms/download", ",.0f", 1e-3), ("cpu_s_per_gb", "CPU s/GB", ".3f")]
            self.base_line(f"Juggler / {b.base_label()} (median of the per-round ratios)",
                           list(zip([m[1] for m in ms], self.vs_base("4", runs, "juggler", ms))))
        r = paired(runs, "juggler", "direct", "gbps")
        self.verdict("4 200 MB download", "≥ 0.9× direct GB/s", fmt(r, ".2f", "×"), r is not None and r >= 0.9)

    # 5 ----------------------------------------------------------------------

    def idle_once(self, key: str) -> dict:
        """A fresh instance: warm-up, RSS, IDLE_CONNS connections with one
        request each then idle, RSS again."""
        name = f"{key}-idle"
        port = PORTS[name]
        self.b.stop(name)
        p = self.b.start(key, port=port, name=name)
        try:
            warm = open_idle(port, 20, requests_each=10)
            close_all(warm)
            time.sleep(0.5)
            before = rss_bytes(p.refresh_pids())
            socks, bad = open_idle_checked(port, self.s.idle_conns)
            time.sleep(1.0)
            after = rss_bytes(p.refresh_pids())
            alive = p.alive()
            still_open = count_open(socks)
            close_all(socks)
        finally:
            self.b.stop(name)
        n = self.s.idle_conns
        return {"before": before, "after": after, "per_conn": (after - before) / n, "bad": bad,
                "still_open": still_open, "alive": alive}

    def s5(self) -> None:
        keys = self.keys(["juggler", "nginx", "haproxy", "haproxy-tcp"])
        n = self.s.idle_conns
        self.b.note(f"\n## 5. {n:,} idle keep-alive client connections (one request each, then idle)")
        runs: dict[str, list[dict]] = {k: [] for k in keys}
        for rnd in range(self.s.rounds):
            order = keys[rnd % len(keys):] + keys[:rnd % len(keys)]
            for k in order:
                r = self.idle_once(k)
                runs[k].append(r)
                if k.startswith("juggler") and (r["bad"] or r["still_open"] < n or not r["alive"]):
                    problem = (f"scenario 5: {r['bad']} failed, {n - r['still_open']} closed, "
                               f"{'alive' if r['alive'] else 'CRASHED'}")
                    if is_base(k):
                        self.b.base_problems.append(f"{self.b.label(k)}: {problem}")
                    else:
                        self.b.juggler_problems.append(problem)
                log(f"  [5 round {rnd + 1}/{self.s.rounds}] {k:<12} RSS {r['before'] / 1e6:.1f} → "
                    f"{r['after'] / 1e6:.1f} MB = {r['per_conn']:.0f} B/conn; failed {r['bad']}, "
                    f"open after 1 s {r['still_open']}/{n}{'' if r['alive'] else '  CRASHED'}")
        rows = []
        meds = {}
        for k in keys:
            m = {x: med(runs[k], x) for x in ("before", "after", "per_conn")}
            meds[k] = m
            bad = sum(r["bad"] for r in runs[k])
            closed = sum(n - r["still_open"] for r in runs[k])
            crashed = not all(r["alive"] for r in runs[k])
            err = ", ".join(x for x in (f"{bad} failed" if bad else "", f"{closed} closed by the proxy" if closed
                                        else "", "CRASHED" if crashed else "") if x) or "0"
            label = self.b.label(k) if k != "haproxy-tcp" else "HAProxy TCP (+1 backend conn each)"
            rows.append([label, fmt(m["before"] / 1e6, ".1f"), fmt(m["after"] / 1e6, ".1f"),
                         fmt(m["per_conn"], ",.0f"), fmt(m["per_conn"] / 1024, ".2f"), err])
        self.b.note(f"\n### 5. RSS of the proxy process(es), fresh start, {n:,} idle connections "
                    f"(medians of {self.s.rounds})\n")
        for l in table(["proxy", "RSS before MB", "RSS after MB", "bytes/conn", "KB/conn", "errors"], rows):
            self.b.note(l)
        self.b.results["scenarios"]["5"] = {"runs": runs, "medians": meds}
        if self.s.base_short:
            ms = [("per_conn", "RSS bytes/idle conn", ",.0f"), ("before", "RSS before, MB", ".1f", 1e-6),
                  ("after", "RSS after, MB", ".1f", 1e-6)]
            self.base_line(f"Juggler / {self.b.base_label()} (median of the per-round ratios)",
                           list(zip(["bytes/conn", "RSS before", "RSS after"], self.vs_base("5", runs, "juggler", ms))))
        pc = meds["juggler"]["per_conn"]
        self.verdict("5 idle connections", "≤ 0.5 KB RSS per idle connection", fmt(pc, ",.0f", " B"),
                     pc is not None and pc <= 512)

    # 6 ----------------------------------------------------------------------

    def s6(self) -> None:
        keys = ["juggler", "juggler-1k", "nginx", "nginx-1k", "haproxy", "haproxy-1k"]
        pairs = [["juggler", "juggler-1k"], ["nginx", "nginx-1k"], ["haproxy", "haproxy-1k"]]
        if self.s.base_short:
            keys[2:2] = ["juggler-base", "juggler-1k-base"]
            pairs.insert(1, ["juggler-base", "juggler-1k-base"])
        self.b.note(f"\n## 6. Dispatch: 1 route vs 1,000 routes (999 non-matching prefix and host rules first), "
                    f"keep-alive, {self.s.conns} connections")
        def order_of(rnd: int) -> list[str]:
            # each 1,000-route run right next to its 1-route run, which one first alternating
            ps = pairs[rnd % len(pairs):] + pairs[:rnd % len(pairs)]
            return [k for p in ps for k in (p if rnd % 2 == 0 else p[::-1])]
        runs = self.b.rounds("6", keys, SMALL_PATH, self.s.conns, headers=[f"Host: {DISPATCH_HOST}"],
                             order_of=order_of)
        meds = {k: {m: med(runs[k], m) for m in ("rps", "p50", "p99", "cpu_us_per_req")} for k in keys}
        base_label = {"juggler": "Juggler, 1 route", "nginx": "nginx, 1 location", "haproxy": "HAProxy, no ACL"}
        if self.s.base_short:
            base_label["juggler-base"] = f"{self.b.base_label()}, 1 route"
        rows = []
        for k in keys:
            d = meds[k]
            base = k.replace("-1k", "") if "-1k" in k else None     # the 1-route run it is paired with
            rows.append([base_label.get(k) or self.b.label(k), fmt(d["rps"], ",.0f"), fmt(d["p99"], ".0f"),
                         fmt(d["cpu_us_per_req"], ".2f"),
                         fmt(paired(runs, k, base, "rps"), ".3f", "×") if base else "",
                         fmt(paired(runs, k, base, "cpu_us_per_req"), ".3f", "×") if base else "",
                         errors_cell(runs[k])])
        self.b.note(f"\n### 6. GET {SMALL_PATH}, Host: {DISPATCH_HOST} (medians of {self.s.rounds}; "
                    "vs 1 = the median of the per-round ratios, each 1,000 run next to its 1 run)\n")
        for l in table(["proxy", "req/s", "p99 µs", "CPU µs/req", "req/s vs 1", "CPU/req vs 1", "errors"], rows):
            self.b.note(l)
        self.b.results["scenarios"]["6"] = {"runs": runs, "medians": meds}
        r = paired(runs, "juggler-1k", "juggler", "rps")
        c = paired(runs, "juggler-1k", "juggler", "cpu_us_per_req")
        cg_keys = ("juggler", "juggler-1k") + (("juggler-base", "juggler-1k-base") if self.s.base_short else ())
        ins = self.instructions(cg_keys)
        self.b.results["scenarios"]["6"]["instructions_per_request"] = ins
        if ins:
            i = ratio(ins["juggler-1k"], ins["juggler"])
            self.b.note(f"\nUser-space instructions per request (valgrind --tool=callgrind, the difference between "
                        f"{CG_REQUESTS[1]:,} and {CG_REQUESTS[0]:,} keep-alive requests, so start-up cancels out; "
                        f"not noisy): Juggler, 1 route {ins['juggler']:,.0f}; 1,000 routes {ins['juggler-1k']:,.0f} "
                        f"({fmt(i, '.3f', '×')}).")
            if self.s.base_short:
                ib = ratio(ins["juggler-1k-base"], ins["juggler-base"])
                self.b.note(f"{self.b.base_label()}: 1 route {ins['juggler-base']:,.0f}; 1,000 routes "
                            f"{ins['juggler-1k-base']:,.0f} ({fmt(ib, '.3f', '×')}).")
        if self.s.base_short:
            ms = [("rps", "req/s", ",.0f"), ("p99", "p99 µs", ".0f"), ("cpu_us_per_req", "CPU µs/req", ".2f")]
            for k, what in (("juggler", "1 route"), ("juggler-1k", "1,000 routes")):
                cells = list(zip([l for _, l, _ in ms], self.vs_base(f"6 {what}", runs, k, ms)))
                if ins:
                    r_i = self.base_value(f"6 {what}", "instructions/req", ins[k], ins[base_key(k)], ",.0f")
                    cells.append(("instructions/req", fmt(r_i, ".3f", "×")))
                self.base_line(f"Juggler / {self.b.base_label()}, {what}", cells)
            self.verdict("6 dispatch", "1,000 routes: instructions/request within 5% of 1 route's",
                         f"{fmt(i, '.3f', '×')} ({ins['juggler']:,.0f} → {ins['juggler-1k']:,.0f})",
                         i is not None and i <= 1.05)
        # The cost is the CPU per request; req/s on a shared machine moves more
        # with the neighbours' load than with 5 % of cost, so it is shown, not judged.
        self.verdict("6 dispatch", "1,000 routes: CPU/request within 5% of 1 route's (noisy)",
                     f"CPU/req {fmt(c, '.3f', '×')} (req/s {fmt(r, '.3f', '×')})",
                     c is not None and c <= 1.05)

    def instructions(self, keys: tuple[str, ...] = ("juggler", "juggler-1k"),
                     request=None) -> dict[str, float] | None:
        """Juggler's user-space instructions per request under callgrind, of each
        build in keys (scenario 6: 1 route and 1,000 routes): two runs of N1 and
        N2 requests on one connection, and (I2 - I1) / (N2 - N1). request(i) gives
        the bytes of the i-th request (default: scenario 6's GET)."""
        if request is None:
            fixed = f"GET {SMALL_PATH} HTTP/1.1\r\nHost: {DISPATCH_HOST}\r\n\r\n".encode()
            request = lambda i: fixed
        if not shutil.which("valgrind"):
            self.b.note("\n(valgrind not installed: no instruction counts)")
            return None
        out = {}
        for key in keys:
            totals = []
            # the base on a port of its own; the requests are the same bytes (request(i)'s Host included)
            cg = "juggler-base-cg" if is_base(key) else "juggler-cg"
            for n in CG_REQUESTS:
                f = self.s.work / f"callgrind.{key}.{n}"
                p = self.b.start(key, port=PORTS[cg], name=cg,
                                 wrapper=["valgrind", "--tool=callgrind", f"--callgrind-out-file={f}"])
                try:
                    c = socket.create_connection((HOST, PORTS[cg]), timeout=10)
                    for i in range(n):
                        c.sendall(request(i))
                        if read_response(c) != 200:
                            raise RuntimeError(f"{key} under callgrind: not 200")
                    c.close()
                finally:
                    self.b.stop(cg)
                m = re.search(r"^(?:summary|totals):\s*(\d+)", f.read_text(), re.M) if f.exists() else None
                if not m or p.popen.returncode not in (0, -15, 143):
                    self.b.note(f"\n(callgrind gave no total for {key}: exit {p.popen.returncode})")
                    return None
                totals.append(int(m.group(1)))
            out[key] = (totals[1] - totals[0]) / (CG_REQUESTS[1] - CG_REQUESTS[0])
        return out

    # 7 ----------------------------------------------------------------------

    def s7(self) -> None:
        keys = self.keys(["juggler", "nginx", "haproxy"])
        d = self.s.alloc_duration
        self.b.note(f"\n## 7. Heap allocations per request at steady state (LD_PRELOAD malloc counter, "
                    f"{d} s of load after a 2 s warm-up; one run each: the counts are not noisy)")
        rows = []
        res: dict[str, dict] = {}
        w = max(8, *(len(self.b.label(k)) for k in keys))
        for k in keys:
            name = f"{k}-alloc"
            port = PORTS[name]
            cnt = self.s.work / f"{name}.count"
            cnt.unlink(missing_ok=True)
            self.b.stop(name)
            p = self.b.start(k, env={"LD_PRELOAD": str(self.s.malloc_so), "MALLOC_COUNT_FILE": str(cnt)},
                             port=port, name=name)
            t = Target(name, k, port, p)
            try:
                if read_counts(cnt) is None:
                    raise RuntimeError(f"malloc counter not active in {k} ({cnt} missing)")
                for mode, headers in (("keep-alive", None), ("new connection", ["Connection: close"])):
                    self.b.wrk(port, SMALL_PATH, self.s.conns, 2, headers)     # warm-up
                    time.sleep(0.3)
                    c0 = read_counts(cnt)
                    r = self.b.measure(t, SMALL_PATH, self.s.conns, headers, duration=d)
                    time.sleep(0.3)
                    c1 = read_counts(cnt)
                    allocs = c1[0] - c0[0]
                    frees = c1[1] - c0[1]
                    per = allocs / r["requests"] if r["requests"] else None
                    res.setdefault(k, {})[mode] = {"allocs": allocs, "frees": frees, "requests": r["requests"],
                                                   "per_req": per, "errors": r["errors"] + r["status"]}
                    if k.startswith("juggler") and (r["errors"] or r["status"] or not p.alive()):
                        problem = (f"scenario 7 {mode}: {r['errors']:.0f} socket errors, {r['status']:.0f} non-2xx"
                                   f"{'' if p.alive() else ', crashed'}")
                        if is_base(k):
                            self.b.base_problems.append(f"{self.b.label(k)}: {problem}")
                        else:
                            self.b.juggler_problems.append(problem)
                    log(f"  [7] {self.b.label(k):<{w}} {mode:<15} {r['requests']:.0f} requests, {allocs} allocations, "
                        f"{frees} frees = {fmt(per, '.3f')} per request")
                    rows.append([self.b.label(k), mode, f"{r['requests']:,.0f}", f"{allocs:,}",
                                 f"{frees:,}", fmt(per, ".3f"), errors_cell([r])])
            finally:
                self.b.stop(name)
        self.b.note("\n### 7. malloc/calloc/realloc/aligned calls per proxied request at steady state\n")
        for l in table(["proxy", "connections", "requests", "allocations", "frees", "allocs/request", "errors"],
                       rows, left=2):
            self.b.note(l)
        self.b.results["scenarios"]["7"] = res
        if self.s.base_short:
            cells = []
            for mode in ("keep-alive", "new connection"):
                j = res.get("juggler", {}).get(mode, {}).get("per_req")
                bb = res.get("juggler-base", {}).get(mode, {}).get("per_req")
                r = self.base_value(f"7 {mode}", "allocs/request", j, bb, ".3f")
                cells.append((mode, f"{fmt(j, '.3f')} vs {fmt(bb, '.3f')} allocs/request ({ratio_cell(r, j, bb)})"))
            self.base_line(f"Juggler / {self.b.base_label()}", cells)
        per = res.get("juggler", {}).get("keep-alive", {}).get("per_req")
        self.verdict("7 allocations", "zero heap allocations per request, keep-alive (< 0.001)",
                     fmt(per, ".3f"), per is not None and per < 0.001)
        per = res.get("juggler", {}).get("new connection", {}).get("per_req")
        self.verdict("7 allocations", "(info) allocations per request, new connection", fmt(per, ".3f"), None)


    # 8 ----------------------------------------------------------------------

    def s8(self) -> None:
        """The cost of the strategy: scenario 1's load against two Juggler builds
        that differ only in the pool line (bench.def's round_robin, and
        consistent_hash key=header:X-User). Both get the same requests, from
        users.lua: X-User: user-1 .. user-1000 in turn. Juggler only: nginx and
        HAProxy have no compiled equivalent to compare."""
        keys = ["juggler", "juggler-ch"]
        if self.s.base_short:
            keys += ["juggler-base", "juggler-ch-base"]
        self.b.note(f"\n## 8. Strategy cost: round_robin vs {CH_POOL.split(' ', 2)[2]}, small GET, keep-alive, "
                    f"{self.s.conns} connections, X-User: user-1..{CH_USERS} in turn")
        # rounds() alternates the two: round 1 rr, ch; round 2 ch, rr; ...
        runs = self.b.rounds("8", keys, SMALL_PATH, self.s.conns, script=USERS_SCRIPT)
        meds = {k: {m: med(runs[k], m) for m in ("rps", "p50", "p99", "cpu_us_per_req")} for k in keys}

        def request(i: int, port: int = PORTS["juggler-cg"]) -> bytes:
            return (f"GET {SMALL_PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                    f"X-User: user-{i % CH_USERS + 1}\r\n\r\n").encode()
        ins = self.instructions(tuple(keys), request)
        labels = {"juggler": "Juggler, round_robin", "juggler-ch": "Juggler, consistent_hash key=header:X-User"}
        if self.s.base_short:
            bl = self.b.base_label()
            labels.update({"juggler-base": f"{bl}, round_robin", "juggler-ch-base": f"{bl}, consistent_hash"})
        rows = []
        for k in keys:
            d = meds[k]
            rows.append([labels[k], fmt(d["rps"], ",.0f"), fmt(d["p50"], ".0f"), fmt(d["p99"], ".0f"),
                         fmt(d["cpu_us_per_req"], ".2f"), fmt(ins[k], ",.0f") if ins else "-",
                         errors_cell(runs[k])])
        r = {m: paired(runs, "juggler-ch", "juggler", m) for m in ("rps", "p50", "p99", "cpu_us_per_req")}
        i = ratio(ins["juggler-ch"], ins["juggler"]) if ins else None
        rows.append(["consistent_hash / round_robin", fmt(r["rps"], ".3f", "×"), fmt(r["p50"], ".3f", "×"),
                     fmt(r["p99"], ".3f", "×"), fmt(r["cpu_us_per_req"], ".3f", "×"), fmt(i, ".3f", "×"), ""])
        if self.s.base_short:
            rb = [fmt(paired(runs, "juggler-ch-base", "juggler-base", m), ".3f", "×")
                  for m in ("rps", "p50", "p99", "cpu_us_per_req")]
            ib = ratio(ins["juggler-ch-base"], ins["juggler-base"]) if ins else None
            rows.append([f"{bl}: consistent_hash / round_robin"] + rb + [fmt(ib, ".3f", "×"), ""])
            for k, what in (("juggler", "round_robin"), ("juggler-ch", "consistent_hash")):
                cells = self.vs_base(f"8 {what}", runs, k, RATE_MEASURES)
                ri = self.base_value(f"8 {what}", "instructions/req", ins[k], ins[base_key(k)], ",.0f") if ins else None
                rows.append([f"Juggler / {bl}, {what}"] + cells + [fmt(ri, ".3f", "×"), ""])
        self.b.note(f"\n### 8. GET {SMALL_PATH} with X-User, keep-alive (medians of {self.s.rounds}; the ratios are "
                    "the median of the per-round ratios; instructions = user-space instructions per request under "
                    f"callgrind, ({CG_REQUESTS[1]:,} − {CG_REQUESTS[0]:,} requests on one connection) / "
                    f"{CG_REQUESTS[1] - CG_REQUESTS[0]:,}, the same X-User sequence)\n")
        for l in table(["build", "req/s", "p50 µs", "p99 µs", "CPU µs/req", "instructions/req", "errors"], rows):
            self.b.note(l)
        self.b.results["scenarios"]["8"] = {"runs": runs, "medians": meds, "ratios": r,
                                            "instructions_per_request": ins}
        if ins:
            self.verdict("8 strategy cost", "consistent_hash: instructions/request within 5% of round_robin's",
                         f"{fmt(i, '.3f', '×')} ({ins['juggler']:,.0f} → {ins['juggler-ch']:,.0f})",
                         i is not None and i <= 1.05)
        c = r["cpu_us_per_req"]
        self.verdict("8 strategy cost", "consistent_hash: CPU/request within 5% of round_robin's (noisy)",
                     f"CPU/req {fmt(c, '.3f', '×')} ({fmt(meds['juggler']['cpu_us_per_req'], '.2f')} → "
                     f"{fmt(meds['juggler-ch']['cpu_us_per_req'], '.2f')} µs; req/s {fmt(r['rps'], '.3f', '×')})",
                     c is not None and c <= 1.05)


# ---------------------------------------------------------------- idle sockets (scenario 5)

    # 9 ----------------------------------------------------------------------

    def s9(self) -> None:
        """gzip level 5 on a 100 KB JSON body (issue #12): Juggler's `gzip` route
        against nginx `gzip on; gzip_comp_level 5` (and HAProxy's libslz, no
        levels, for information). CPU per MB is per MB of the uncompressed body."""
        b = self.b
        keys = ["juggler-ext", "nginx", "haproxy-gz"]
        headers = ["Accept-Encoding: gzip"]
        b.note(f"\n## 9. gzip on a {GZ_BYTES // 1024} KB JSON body, keep-alive, {self.s.conns} connections")
        for k in keys:                      # each must really compress, or the row means nothing
            t = b.target(k)
            enc = content_encoding(t.port, GZ_PATH)
            if enc != "gzip":
                raise RuntimeError(f"scenario 9: {b.label(k)} answered {GZ_PATH} with Content-Encoding {enc!r}")
        runs = b.rounds("9", keys, GZ_PATH, self.s.conns, headers=headers)
        mb = GZ_BYTES / 1e6
        for rs in runs.values():
            for r in rs:
                r["cpu_ms_per_mb"] = r["cpu_us_per_req"] / 1000 / mb if r["cpu_us_per_req"] else None
                r["bytes_per_resp"] = r["bytes"] / r["requests"] if r["requests"] else None
        meds = {k: {m: med(runs[k], m) for m in ("rps", "p50", "p99", "cpu_us_per_req", "cpu_ms_per_mb",
                                                 "bytes_per_resp")} for k in keys}
        rows = [[b.label(k), fmt(meds[k]["rps"], ",.0f"),
                 fmt(meds[k]["p50"], ".0f"), fmt(meds[k]["p99"], ".0f"), fmt(meds[k]["cpu_ms_per_mb"], ".2f"),
                 fmt(meds[k]["bytes_per_resp"], ",.0f"), errors_cell(runs[k])] for k in keys]
        b.note(f"\n### 9. gzip, {GZ_BYTES:,}-byte JSON (medians of {self.s.rounds})\n")
        for l in table(["proxy", "req/s", "p50 µs", "p99 µs", "CPU ms per MB in", "bytes per response", "errors"],
                       rows):
            b.note(l)
        rr = [[f"Juggler / {b.label(o)}"] + [fmt(paired(runs, "juggler-ext", o, m), ".2f", "×")
                                              for m in ("rps", "cpu_ms_per_mb", "bytes_per_resp")]
              for o in ("nginx", "haproxy-gz")]
        b.note("\nRatios: the median over rounds of the ratio within each round.\n")
        for l in table(["ratio", "req/s", "CPU per MB", "bytes per response"], rr):
            b.note(l)
        b.results["scenarios"]["9"] = {"runs": runs, "medians": meds}
        r = paired(runs, "juggler-ext", "nginx", "rps")
        self.verdict("9 gzip 5, 100 KB JSON", "req/s ≥ nginx's", fmt(r, ".2f", "×"), r is not None and r >= 1.0)
        r = paired(runs, "juggler-ext", "nginx", "cpu_ms_per_mb")
        self.verdict("9 gzip 5, 100 KB JSON", "CPU per MB ≤ nginx's", fmt(r, ".2f", "×"), r is not None and r <= 1.0)

    # 10 ---------------------------------------------------------------------

    def s10(self) -> None:
        """L4 (issue #13): Juggler's `listen tcp` against HAProxy `mode tcp` and
        the backend itself; the HTTP inside is not parsed by either proxy."""
        b = self.b
        keys = ["juggler-l4", "haproxy-tcp", "direct"]
        b.note(f"\n## 10a. L4, small GET inside kept-alive tunnels, {self.s.conns} connections")
        runs = b.rounds("10a", keys, SMALL_PATH, self.s.conns)
        meds = {k: {m: med(runs[k], m) for m in ("rps", "p50", "p99", "cpu_us_per_req")} for k in keys}
        rows = [[b.label(k), fmt(meds[k]["rps"], ",.0f"), fmt(meds[k]["p50"], ".0f"), fmt(meds[k]["p99"], ".0f"),
                 fmt(meds[k]["cpu_us_per_req"], ".2f"), errors_cell(runs[k])] for k in keys]
        b.note(f"\n### 10a. L4, small GET, keep-alive (medians of {self.s.rounds})\n")
        for l in table(["proxy", "req/s", "p50 µs", "p99 µs", "CPU µs/exchange", "errors"], rows):
            b.note(l)
        rr = [["Juggler L4 / HAProxy TCP"] + [fmt(paired(runs, "juggler-l4", "haproxy-tcp", m), ".2f", "×")
                                             for m in ("rps", "p50", "p99", "cpu_us_per_req")]]
        b.note("\nRatios: the median over rounds of the ratio within each round.\n")
        for l in table(["ratio", "req/s", "p50", "p99", "CPU/exchange"], rr):
            b.note(l)
        b.results["scenarios"]["10a"] = {"runs": runs, "medians": meds}
        r = paired(runs, "juggler-l4", "haproxy-tcp", "cpu_us_per_req")
        self.verdict("10a L4 small exchanges", "CPU/exchange ≤ HAProxy mode tcp's", fmt(r, ".2f", "×"),
                     r is not None and r <= 1.0)
        r = paired(runs, "juggler-l4", "haproxy-tcp", "rps")
        self.verdict("10a L4 small exchanges", "req/s ≥ HAProxy mode tcp's", fmt(r, ".2f", "×"),
                     r is not None and r >= 1.0)
        c = self.s.dl_conns
        b.note(f"\n## 10b. L4, 200 MB download, {c} connection{'s' if c > 1 else ''}")
        runs = b.rounds("10b", keys, BIG_PATH, c, timeout="60s")
        meds = {k: {m: med(runs[k], m) for m in ("gbps", "cpu_s_per_gb")} for k in keys}
        rows = [[b.label(k), fmt(meds[k]["gbps"], ".2f"), fmt(paired(runs, k, "direct", "gbps"), ".2f", "×"),
                 fmt(meds[k]["cpu_s_per_gb"], ".3f"), errors_cell(runs[k])] for k in keys]
        b.note(f"\n### 10b. L4, 200 MB download (medians of {self.s.rounds}; GB = 10^9 bytes)\n")
        for l in table(["proxy", "GB/s", "vs direct", "proxy CPU s/GB", "errors"], rows):
            b.note(l)
        b.results["scenarios"]["10b"] = {"runs": runs, "medians": meds}
        r = paired(runs, "juggler-l4", "direct", "gbps")
        self.verdict("10b L4 200 MB", "≥ 0.9× direct GB/s", fmt(r, ".2f", "×"), r is not None and r >= 0.9)

    # 11 ---------------------------------------------------------------------

    def ws_measure(self, t: Target, conns: int) -> dict:
        """One wsbench client run against a target, with the proxy's CPU over it."""
        d = self.s.duration
        pids = t.proc.refresh_pids() if t.proc else []
        t0 = cpu_ticks(pids)
        argv = [str(self.s.wsbench), "client", str(t.port), str(conns), str(d), str(WS_SIZE)]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=d + 60)
        t1 = cpu_ticks(pids)
        m = re.search(r"^WSBENCH messages=(\d+) seconds=([\d.]+) errors=(\d+)", r.stdout, re.M)
        if r.returncode != 0 or not m:
            raise RuntimeError(f"wsbench failed ({r.returncode}): {' '.join(argv)}\n{r.stdout}\n{r.stderr}")
        msgs, secs, errors = int(m.group(1)), float(m.group(2)), int(m.group(3))
        cpu = (t1 - t0) / CLK_TCK
        return {"messages": msgs, "mps": msgs / secs, "errors": errors,
                "cpu_us_per_msg": cpu * 1e6 / msgs if t.proc and msgs else None}

    def s11(self) -> None:
        """WebSocket (issue #13): WS_SIZE-byte messages echoed over CONNS upgraded
        connections, one in flight per connection, through each proxy's tunnel."""
        b = self.b
        if HOST != "127.0.0.1":
            raise RuntimeError(f"scenario 11 runs on 127.0.0.1 only (wsbench's address), not BENCH_HOST={HOST}")
        if self.s.wsbench is None:
            raise RuntimeError("no wsbench (WSBENCH_BIN): run through tools/bench/run.sh")
        if "wsbench" not in b.procs:
            b.procs["wsbench"] = Proc("wsbench", [str(self.s.wsbench), "server", str(WS_BACKEND)], WS_BACKEND,
                                      self.s.work, ready_path=None)
        keys = ["juggler-ws", "nginx-ws", "haproxy-ws", "direct-ws"]
        conns = self.s.conns
        b.note(f"\n## 11. WebSocket, {WS_SIZE}-byte messages echoed over {conns} connections")
        runs: dict[str, list[dict]] = {k: [] for k in keys}
        targets = [b.target(k) for k in keys]
        for rnd in range(self.s.rounds):
            for t in targets[rnd % len(targets):] + targets[:rnd % len(targets)]:
                time.sleep(self.s.settle)
                t = b.target(t.key)
                r = self.ws_measure(t, conns)
                runs[t.key].append(r)
                if t.key.startswith("juggler") and r["errors"]:
                    b.juggler_problems.append(f"scenario 11 round {rnd + 1}: {r['errors']} connections lost")
                cpu = f"{r['cpu_us_per_msg']:.2f} µs/msg" if r["cpu_us_per_msg"] is not None else "-"
                log(f"  [11 round {rnd + 1}/{self.s.rounds}] {t.label:<34} {r['mps']:>10.0f} msg/s  cpu {cpu}  "
                    f"errors {r['errors']}")
        meds = {k: {m: med(runs[k], m) for m in ("mps", "cpu_us_per_msg")} for k in keys}
        rows = [[b.label(k), fmt(meds[k]["mps"], ",.0f"), fmt(meds[k]["cpu_us_per_msg"], ".2f"),
                 str(sum(r["errors"] for r in runs[k]))] for k in keys]
        b.note(f"\n### 11. WebSocket echo, {WS_SIZE} B messages, {conns} connections (medians of {self.s.rounds})\n")
        for l in table(["proxy", "messages/s", "CPU µs/message", "connections lost"], rows):
            b.note(l)
        rr = [[f"Juggler / {b.label(o)}"] + [fmt(paired(runs, "juggler-ws", o, m), ".2f", "×")
                                              for m in ("mps", "cpu_us_per_msg")] for o in ("nginx-ws", "haproxy-ws")]
        b.note("\nRatios: the median over rounds of the ratio within each round.\n")
        for l in table(["ratio", "messages/s", "CPU/message"], rr):
            b.note(l)
        b.results["scenarios"]["11"] = {"runs": runs, "medians": meds}
        for o in ("nginx-ws", "haproxy-ws"):
            r = paired(runs, "juggler-ws", o, "cpu_us_per_msg")
            self.verdict("11 WebSocket", f"(no target) CPU/message vs {b.label(o)}", fmt(r, ".2f", "×"), None)

    # 12 ---------------------------------------------------------------------

    def s12(self) -> None:
        """The cache (issue #12): hits against Varnish and nginx proxy_cache,
        allocations per hit, the miss path against an uncached route
        (tools/bench/scenario_cache.py)."""
        import scenario_cache     # beside this file (sys.path[0])
        scenario_cache.run(self, sys.modules[__name__])

    # 13 ---------------------------------------------------------------------

    def s13(self) -> None:
        """HTTP/2 to clients (issue #16): h2load against the three h2 listeners,
        RSS per idle h2 connection, Juggler's allocations per h2 request
        (tools/bench/scenario_h2.py)."""
        import scenario_h2
        scenario_h2.run(self, sys.modules[__name__])


def nginx_cache(variant: str, name: str, work: Path) -> dict[str, str]:
    """Scenario 12's nginx-cache: proxy_cache on /c/ with the TTL and size of
    Juggler's and Varnish's, buffered (proxy_cache stores what it buffers),
    misses for one key collapsed (proxy_cache_lock) as Juggler's are."""
    if not variant.endswith("-cache"):
        return {}
    return {"CACHE": f"    proxy_cache_path {work}/tmp/{name}-cache levels=1:2 keys_zone=bench:16m "
                     f"max_size={CACHE_MB}m inactive={CACHE_TTL_S}s use_temp_path=off;\n",
            "CACHE_LOCATION": ("        location /c/ {               # scenario 12\n"
                               "            proxy_pass http://web;\n"
                               "            proxy_buffering on;\n"
                               "            proxy_cache bench;\n"
                               f"            proxy_cache_valid 200 {CACHE_TTL_S}s;\n"
                               "            proxy_cache_lock on;\n"
                               "            sendfile on;\n"
                               "            add_header X-Cache-Status $upstream_cache_status;\n"
                               "        }\n")}


def ws_backends(variant: str) -> dict[str, str]:
    """Scenario 11's nginx-ws and haproxy-ws: the same config with the three
    servers being wsbench's echo server."""
    return {f"BACKEND{i}": str(WS_BACKEND) for i in (1, 2, 3)} if variant.endswith("-ws") else {}


def content_encoding(port: int, path: str) -> str | None:
    """The Content-Encoding of one GET with Accept-Encoding: gzip (the body read whole)."""
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept-Encoding: gzip\r\n"
                  "Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    m = re.search(rb"\r\ncontent-encoding:[ \t]*([^\r]*)\r\n", data.split(b"\r\n\r\n", 1)[0] + b"\r\n", re.I)
    return m.group(1).decode().strip() if m else None


def read_counts(path: Path) -> tuple[int, int] | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if len(data) < 64:
        return None
    import struct
    v = struct.unpack("<8Q", data[:64])
    return v[0], v[1]


def allocation_row(b: "Bench", sid: str, what: str, r: dict, c0: tuple[int, int], c1: tuple[int, int],
                   alive: bool) -> tuple[float | None, list[str]]:
    """One measurement under the malloc counter (counts c0 before, c1 after, r the load's
    result): allocations per request, and its table row (what, requests, allocations,
    frees, per request, errors); a failed request or a crash is a Juggler problem."""
    allocs, frees = c1[0] - c0[0], c1[1] - c0[1]
    per = allocs / r["requests"] if r["requests"] else None
    if r["errors"] or r["status"] or not alive:
        b.juggler_problems.append(f"scenario {sid} allocations {what}: {r['errors']:.0f} failed, "
                                  f"{r['status']:.0f} non-2xx{'' if alive else ', crashed'}")
    log(f"  [{sid}] {what:<34} {r['requests']:.0f} requests, {allocs} allocations, {frees} frees = "
        f"{fmt(per, '.3f')} per request")
    return per, [what, f"{r['requests']:,.0f}", f"{allocs:,}", f"{frees:,}", fmt(per, ".3f"), errors_cell([r])]


def read_response(s: socket.socket) -> int:
    """Reads one response with a Content-Length body; returns its status."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return 0
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
    need = int(m.group(1)) if m else 0
    while len(body) < need:
        chunk = s.recv(65536)
        if not chunk:
            return 0
        body += chunk
    st = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    return int(st.group(1)) if st else 0


def open_idle(port: int, n: int, requests_each: int = 1) -> list[socket.socket]:
    socks, _ = open_idle_checked(port, n, requests_each)
    return socks


def open_idle_checked(port: int, n: int, requests_each: int = 1) -> tuple[list[socket.socket], int]:
    socks, bad = [], 0
    req = f"GET {SMALL_PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    for _ in range(n):
        try:
            s = socket.create_connection((HOST, port), timeout=5)
            for _ in range(requests_each):
                s.sendall(req)
                if read_response(s) != 200:
                    raise OSError("not 200")
            socks.append(s)
        except OSError:
            bad += 1
    return socks, bad


def count_open(socks: list[socket.socket]) -> int:
    """Connections the proxy has not closed (a peek that would block = open)."""
    n = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1, socket.MSG_PEEK) == b"":
                continue
        except BlockingIOError:
            n += 1
        except OSError:
            continue
    return n


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


# ---------------------------------------------------------------- main


def machine() -> list[str]:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    def ver(argv, pat):
        try:
            r = subprocess.run(argv, capture_output=True, text=True)
            m = re.search(pat, r.stdout + r.stderr)
            return m.group(1) if m else "?"
        except OSError:
            return "?"
    nginx = ver(["nginx", "-v"], r"nginx/(\S+)")
    haproxy = ver(["haproxy", "-v"], r"version (\S+)")
    wrk = ver(["wrk", "-v"], r"wrk (\S+)")
    juggler = ver([os.environ.get("JUGGLER_BIN") or os.environ.get("JUGGLER_EXT_BIN") or "juggler", "--version"],
                  r"(\d+\.\d+\.\d+)")
    return [f"- machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}, "
            f"{int(mem) // 1024} MB RAM, Linux {platform.release()}",
            f"- nginx {nginx}, HAProxy {haproxy}, wrk {wrk}, Juggler {juggler}",
            f"- load average at start: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}"]


def run() -> int:
    s = Settings.from_env()
    b = Bench(s)
    sc = Scenarios(b)
    busy = [p for p in ALL_PORTS + (list(BASE_PORTS.values()) if s.base_short else []) if not port_free(p)]
    if busy:
        print(f"bench: port(s) {', '.join(map(str, busy))} on {HOST} are in use; stop what uses them "
              f"(ss -ltnp) and run again", file=sys.stderr)
        return 2
    started = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    cmd = " ".join(f"{k}={os.environ[k]}" for k in ("QUICK", "ROUNDS", "DURATION", "WORKERS", "SCENARIOS", "CONNS",
                                                     "IDLE_CONNS", "DL_CONNS", "WRK_THREADS", "ALLOC_DURATION",
                                                     "H2_CLIENTS", "H2_STREAMS", "H2_IDLE_CONNS",
                                                     "BENCH_SOURCE", "BENCH_BASE")
                   if os.environ.get(k)) or "(defaults)"
    b.note(f"# Juggler benchmark {time.strftime('%Y-%m-%d %H:%M:%S')}")
    b.note("")
    b.note(f"- command: make bench   env: {cmd}")
    b.note(f"- rounds {s.rounds}, {s.duration} s per run, {s.workers} worker(s) per proxy, wrk -t{s.wrk_threads} "
           f"-c{s.conns}, scenarios {','.join(map(str, s.scenarios))}")
    for line in machine():
        b.note(line)
    if s.base_short:
        subject = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%s", s.base_commit or "HEAD"],
                                 capture_output=True, text=True).stdout.strip()
        b.note(f"- base (BENCH_BASE={os.environ.get('BENCH_BASE', '?')}): {b.base_label()}, commit {s.base_commit} "
               f"\"{subject}\", built from the same routes files, run with the same flags beside Juggler in "
               "every scenario; Juggler / base ratios are the median of the per-round ratios")
    b.note(f"- backends: one nginx, 1 worker, {HOST}:{BACKENDS[0]}-{BACKENDS[-1]}; request GET {SMALL_PATH} "
           "→ `return 200` (29-byte body)")
    b.note("- latencies as wrk measures them (µs); CPU = utime+stime of the proxy's processes over the run "
           "/ requests completed")
    rc = 0
    try:
        b.start_backends()
        if s.base_short:     # a base that does not take the bench's flags or routes fails here, not mid-run
            b.start("juggler-base")
            b.stop("juggler-base")
        for n in s.scenarios:
            getattr(sc, f"s{n}")()
    except KeyboardInterrupt:
        b.note("\ninterrupted")
        rc = 130
    except Exception as e:   # report what we have, then fail
        b.note(f"\n!! bench failed: {e}")
        rc = 1
    finally:
        b.stop_all()
    elapsed = time.time() - started
    if s.base_short and (b.base_ratios or b.base_problems):
        b.note(f"\n## Juggler / {b.base_label()} (BENCH_BASE={os.environ.get('BENCH_BASE', '?')})\n")
        b.note("Above 1 is better for req/s and GB/s, below 1 for latency, CPU, instructions, allocations and RSS. "
               "Rates: the median of the per-round ratios; instructions, allocations: one count each.\n")
        if b.base_ratios:
            for l in table(["scenario", "measure", "Juggler", b.base_label(), "Juggler / base"], b.base_ratios,
                           left=2):
                b.note(l)
        b.note(f"\n{b.base_label()}'s socket errors, non-2xx answers, crashes: "
               f"{'; '.join(b.base_problems) or 'none'}")
    if b.targets_met:
        b.targets_met.append(("all", "Juggler: no socket error, non-2xx answer or crash",
                              "; ".join(b.juggler_problems) or "none", "NOT met" if b.juggler_problems else "met"))
        b.note("\n## Targets (issue #6; scenario 8: issue #3; 9, 12: #12; 10, 11: #13; 13: #16)\n")
        for l in table(["scenario", "target", "measured", "verdict"], [list(t) for t in b.targets_met], left=4):
            b.note(l)
    b.note(f"\nbench took {elapsed / 60:.1f} min")
    s.results.mkdir(parents=True, exist_ok=True)
    txt = s.results / f"bench-{stamp}.md"
    txt.write_text("\n".join(b.report) + "\n")
    b.results.update({"settings": {k: str(v) for k, v in vars(s).items()}, "targets": b.targets_met,
                      "elapsed_s": elapsed})
    if s.base_short:
        b.results["base"] = {"commit": s.base_commit, "label": b.base_label(), "problems": b.base_problems,
                             "ratios": [dict(zip(("scenario", "measure", "juggler", "base", "ratio"), r))
                                        for r in b.base_ratios]}
    (s.results / f"bench-{stamp}.json").write_text(json.dumps(b.results, indent=1, default=str))
    (s.results / "latest.md").write_text("\n".join(b.report) + "\n")
    log(f"\nresults: {txt} (and .json with every run)")
    return rc


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "gen-routes":
        gen_routes_1k(Path(sys.argv[2]))
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "gen-one":
        gen_routes_one(Path(sys.argv[2]))
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "gen-ch":
        gen_routes_ch(Path(sys.argv[2]))
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "gen-ext":
        gen_routes_ext(Path(sys.argv[2]))
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "gen-redis":
        gen_routes_ext(Path(sys.argv[2]), redis=True)
        return 0
    if len(sys.argv) == 4 and sys.argv[1] == "sync-tree":
        sync_tree(Path(sys.argv[2]), Path(sys.argv[3]))
        return 0
    if len(sys.argv) == 2 and sys.argv[1] == "run":
        def on_term(*_):
            raise KeyboardInterrupt
        signal.signal(signal.SIGTERM, on_term)
        return run()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""The client of the namespace topology (tests/scale/test_scale.py): run inside the client
namespace (`ip netns exec NS python3 client.py MODE ...`), it talks to the L4 front only and
prints one JSON object on stdout. Every loop is bounded in count and in time; sockets have
timeouts; responses are read off raw sockets (no retry, no fallback).

  keys FRONT N         two kept-alive connections through the front, one answered by each
                       instance (X-Served-By), and the N keys X-User: user-0... sent on both:
                       {"by": {INSTANCE: {KEY: X-Server}}, "xff": {INSTANCE: [values]}}
  loop FRONT SECS MAX [HOST PATH]
                       one request per new connection (Connection: close) until SECS pass
                       or MAX were sent, paced: {"results": [[t, ok, instance, detail]...]}
                       with t the CLOCK_MONOTONIC of the request's start (the same clock
                       across namespaces, so the driver can place its signals among them);
                       detail: the status, or "backend N" for a demo root's page
  cache FRONT TARGET REDIS
                       TARGET with Host: cache.test through the connection answered by lb1
                       (BYPASS until its Redis connection is up, then MISS), and once Redis
                       holds it, once through lb2's:
                       {"lb1": [X-Cache...], "lb2": X-Cache, "served_by": its X-Served-By}
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import jtest  # noqa: E402

TIMEOUT = 5.0  # one request, connect to last byte
PACE = 0.004   # between the loop's requests: ~200/s at most on a 2-core machine


def split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


def headers_seen(body: bytes) -> dict:
    """The request headers a testserver /headers answer lists (lower-case names)."""
    seen = {}
    for line in body.decode("latin-1").splitlines()[1:]:
        name, _, value = line.partition(":")
        seen.setdefault(name.strip().lower(), []).append(value.strip())
    return seen


def pair(front: str) -> dict:
    """{instance: (socket, reader)}: kept-alive connections through the front, one answered
    by each instance."""
    conns = {}
    for _ in range(20):  # the front alternates between the instances: a few tries find both
        s = socket.create_connection(split(front), timeout=TIMEOUT)
        reader = s.makefile("rb")
        s.sendall(b"GET /ping HTTP/1.1\r\nHost: scale.test\r\n\r\n")
        who = jtest.read_response(reader).header("X-Served-By")
        if who in conns:
            s.close()
        else:
            conns[who] = (s, reader)
        if len(conns) == 2:
            break
    return conns


def keys(front: str, n: int) -> dict:
    conns = pair(front)
    by = {who: {} for who in conns}
    xff = {who: set() for who in conns}
    for i in range(n):
        key = f"user-{i}"
        for who, (s, reader) in conns.items():
            s.sendall(f"GET /headers HTTP/1.1\r\nHost: scale.test\r\nX-User: {key}\r\n\r\n".encode())
            r = jtest.read_response(reader)
            if r.status != 200 or r.header("X-Served-By") != who:
                raise RuntimeError(f"{key} through {who}: {r.status} {r.headers}")
            by[who][key] = r.header("X-Server")
            xff[who].update(headers_seen(r.body).get("x-forwarded-for", ["(none)"]))
    for s, _ in conns.values():
        s.close()
    return {"by": by, "xff": {who: sorted(v) for who, v in xff.items()}}


def redis_dbsize(addr: str) -> int:
    with socket.create_connection(split(addr), timeout=TIMEOUT) as s:
        s.sendall(b"*1\r\n$6\r\nDBSIZE\r\n")
        reply = s.makefile("rb").readline()
    return int(reply[1:]) if reply.startswith(b":") else 0


def cache(front: str, target: str, redis: str) -> dict:
    conns = pair(front)
    get = f"GET {target} HTTP/1.1\r\nHost: cache.test\r\n\r\n".encode()

    def through(who):
        for _ in range(3):  # a connection the instance closed (after a cache answer): a new pair
            s, reader = conns[who]
            try:
                s.sendall(get)
                return jtest.read_response(reader)
            except (OSError, ConnectionError):
                conns.update(pair(front))
        raise ConnectionError(f"no answer through {who}")
    out = {"lb1": [], "lb2": None, "served_by": None}
    end = time.monotonic() + 10
    while time.monotonic() < end:  # BYPASS while the instance's Redis connection comes up
        out["lb1"].append(through("lb1").header("X-Cache"))
        if out["lb1"][-1] != "BYPASS":
            break
        time.sleep(0.05)
    # The store goes to Redis after lb1's answer: wait until Redis holds it (DBSIZE, the
    # cache.test route being its only user), then ask lb2 once: its first answer must be
    # the HIT (asked again, lb2 would hit its own copy of anything).
    end = time.monotonic() + 10
    while time.monotonic() < end and redis_dbsize(redis) == 0:
        time.sleep(0.05)
    r = through("lb2")
    out["lb2"], out["served_by"] = r.header("X-Cache"), r.header("X-Served-By")
    return out


def one(front: str, host: str, path: str) -> tuple[bool, str, str]:
    try:
        with socket.create_connection(split(front), timeout=TIMEOUT) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            r = jtest.read_response(s.makefile("rb"))
            backend = re.search(rb"Juggler demo backend (\d+)", r.body)
            detail = f"backend {backend.group(1).decode()}" if backend else str(r.status)
            ok = r.status == 200 and (path != "/ping" or r.body == b"pong\n")
            return ok, r.header("X-Served-By") or "", detail
    except (OSError, ConnectionError, ValueError) as e:
        return False, "", f"{type(e).__name__}: {e}"


def loop(front: str, seconds: float, most: int, host: str = "scale.test", path: str = "/ping") -> dict:
    results = []
    end = time.monotonic() + seconds
    while time.monotonic() < end and len(results) < most:
        t = time.monotonic()
        ok, who, detail = one(front, host, path)
        results.append([t, ok, who, detail])
        if len(results) == 1:
            print("loop: first answer", file=sys.stderr, flush=True)
        time.sleep(PACE)
    return {"results": results}


def main(argv: list[str]) -> int:
    mode = argv[1]
    if mode == "keys":
        out = keys(argv[2], int(argv[3]))
    elif mode == "loop":
        out = loop(argv[2], float(argv[3]), int(argv[4]), *argv[5:7])
    elif mode == "cache":
        out = cache(argv[2], argv[3], argv[4])
    else:
        print(f"client.py: unknown mode {mode}", file=sys.stderr)
        return 2
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

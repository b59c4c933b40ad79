#!/usr/bin/env bash
# The miss path's CPU split into user and kernel time, outside the bench: the
# extras build (build-bench/ext, built by `SCENARIOS=12 make bench` for the same
# BENCH_HOST) in front of three testservers serving a 1 KB object under /c/
# (cached route) and /u/ (uncached), then ROUNDS alternations of 4 s of misses
# (tools/bench/misses.lua: a new query string per request) on each route; per
# run: requests, user and system µs per request, minor faults per request
# (from /proc/PID/stat). The store starts empty: the first rounds show it
# growing (a fault per ≈ 4 KB stored), the later ones full (an eviction per miss).
#
#   BENCH_HOST=127.0.165.1 ROUNDS=8 bash tools/bench/miss-ab.sh
#   PREFIX="env GLIBC_TUNABLES=glibc.malloc.hugetlb=1" bash tools/bench/miss-ab.sh
#   ARGS="--table /tmp/small.so" bash tools/bench/miss-ab.sh   # a table compiled as make reload does
# Loopback only; every run bounded by wrk -d4s.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HOST=${BENCH_HOST:-127.0.0.1}
BIN=${BIN:-$ROOT/build-bench/ext/bin/app.out}
PREFIX=${PREFIX:-}
[ -x "$BIN" ] || { echo "miss-ab: $BIN missing (BENCH_HOST=$HOST SCENARIOS=12 make bench builds it)" >&2; exit 2; }
W=$(mktemp -d /tmp/juggler-missab.XXXXXX)
mkdir -p "$W/www/c" "$W/www/u"
python3 -c "
import random, sys
for d in ('c', 'u'): open(sys.argv[1] + '/' + d + '/1k', 'wb').write(random.Random(1024).randbytes(1024))" "$W/www"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT
for p in 19101 19102 19103; do
  "$ROOT/bin/testserver" --host "$HOST" --port $p --root "$W/www" --quiet >/dev/null 2>&1 &
  pids+=($!)
done
sleep 0.5
(cd "$ROOT" && exec $PREFIX "$BIN" --port 19111 --https-port 0 --workers 1 --access-log off --log-level warn ${ARGS:-}) >"$W/app.log" 2>&1 &
APP=$!
pids+=($APP)
sleep 1
st() { awk '{print $14, $15, $10}' "/proc/$APP/stat"; }
for i in $(seq 1 "${ROUNDS:-4}"); do
  for path in /c/1k /u/1k; do
    a=$(st)
    wrk -t1 -c50 -d4s -s "$ROOT/tools/bench/misses.lua" "http://$HOST:19111$path" >"$W/wrk.txt" 2>&1
    b=$(st)
    req=$(grep -oE 'BENCH requests=[0-9]+' "$W/wrk.txt" | grep -oE '[0-9]+')
    python3 - "$path" "$req" "$a" "$b" "$(getconf CLK_TCK)" <<'PY'
import sys
path, r, t = sys.argv[1], int(sys.argv[2]), int(sys.argv[5])
a, b = (list(map(int, x.split())) for x in sys.argv[3:5])
u, s = (b[0] - a[0]) * 1e6 / t / r, (b[1] - a[1]) * 1e6 / t / r
print(f"{path} requests={r} user_us/req={u:.2f} sys_us/req={s:.2f} total={u + s:.2f} minflt/req={(b[2] - a[2]) / r:.3f}")
PY
  done
done

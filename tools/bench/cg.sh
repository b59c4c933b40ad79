#!/usr/bin/env bash
# Instructions per request, counted by callgrind: the request-path cost that
# does not move with the machine's load (wrk's req/s and CPU per request do).
#
#   bash tools/bench/cg.sh [REV ...]     # default: the working tree
#   CG_CASES="ka new miss nocache hit" CG_N=2000 bash tools/bench/cg.sh HEAD~1 HEAD
#
# Each REV (or the working tree, `tree`) is built in Release into
# build-bench/cg-REV from tools/bench/cg.def (one pool on the testserver, an
# uncached route /u/*, a cached one /c/*, `set cache memory`), then run under
# valgrind --tool=callgrind twice per case, with N and 2N requests; the
# difference divided by N is one request's user-space instructions, the
# start and the stop cancelling out. Cases (a keep-alive python client, 1 KB
# files from the testserver, each request to 127.0.0.1:19231):
#   ka       GET /u/1k on one kept-alive connection (the proxy's plain path)
#   new      GET /u/1k, a new connection per request
#   nocache  GET /u/1k?n=I, a new query string each time (12c's uncached route)
#   miss     GET /c/1k?n=I: a lookup, a miss, the response stored (12c)
#   hit      GET /c/1k, every request a hit after the first
#   hit100k  GET /c/100k, a hit answered by sendfile
#   tls      GET /u/1k over HTTPS (TLS 1.3, 127.0.0.1:19233), one kept-alive connection
#   tls1m    GET /u/1m over HTTPS: the TLS layer's cost per MB
# CG_KEEP=DIR keeps callgrind's files (DIR/REV-CASE-COUNT.out) for
# callgrind_annotate: the difference of the two files of a case is N requests.
# Prints one row per case and REV. Loopback only; each run is bounded by N.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/tools/bench"
BUILD="${BENCH_BUILD:-$ROOT/build-bench}"
mkdir -p "$BUILD"
N="${CG_N:-2000}"
CASES="${CG_CASES:-ka new nocache miss hit}"
HOST=127.0.0.1 PORT=19231 BACKEND=19232 TLS_PORT=19233
command -v valgrind >/dev/null || { echo "cg: valgrind not found (tools/install-deps.sh bench installs it)" >&2; exit 2; }
[ $# -gt 0 ] || set -- tree

WORK=$(mktemp -d /tmp/juggler-cg.XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/cg.def" <<EOF
# tools/bench/cg.sh's routes: one worker, the testserver as the only server.
set workers 1
set access_log off
set cache memory size=256m max_object=1m
listen http $HOST:$PORT
listen https $HOST:$TLS_PORT cert=$WORK/server.crt key=$WORK/server.key
pool web round_robin
  server $HOST:$BACKEND
route GET,HEAD /c/* -> web cache=10m
route * /* -> web
EOF
bash "$ROOT/tools/make-cert.sh" "$WORK" >/dev/null
mkdir -p "$WORK/www/c" "$WORK/www/u"
python3 - "$WORK/www" <<'EOF'
import random, sys
for d in ("c", "u"):
    for name, size in (("1k", 1024), ("100k", 100 * 1024), ("1m", 1 << 20)):
        open(f"{sys.argv[1]}/{d}/{name}", "wb").write(random.Random(size).randbytes(size))
EOF

build() {  # build REV -> prints the binary
  local rev=$1 src dir
  if [ "$rev" = tree ]; then
    src="$ROOT" dir="$BUILD/cg-tree"
  else
    local c
    c=$(git -C "$ROOT" rev-parse --short "$rev^{commit}")
    src="$BUILD/cg-src-$c" dir="$BUILD/cg-$c"
    if [ ! -d "$src" ]; then
      mkdir -p "$src.new" && git -C "$ROOT" archive "$c" | tar -x -C "$src.new" && mv "$src.new" "$src"
    fi
  fi
  cmake -S "$src" -B "$dir" -G Ninja -DJUGGLER_USER_BUILD=OFF -DCMAKE_BUILD_TYPE=Release \
        -DJUGGLER_ROUTES="$WORK/cg.def" >"$dir.configure.log" 2>&1 || { cat "$dir.configure.log" >&2; exit 1; }
  cmake --build "$dir" --target app testserver >"$dir.build.log" 2>&1 || { tail -30 "$dir.build.log" >&2; exit 1; }
  echo "$dir/bin"
}

# client CASE COUNT: sends COUNT requests of CASE, checks every answer.
client() {
  python3 - "$1" "$2" "$HOST" "$PORT" "$TLS_PORT" <<'EOF'
import http.client, ssl, sys, time
case, count, host, port, tls_port = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
path = {"ka": "/u/1k", "new": "/u/1k", "nocache": "/u/1k", "miss": "/c/1k", "hit": "/c/1k", "hit100k": "/c/100k",
        "tls": "/u/1k", "tls1m": "/u/1m"}[case]
size = {"hit100k": 100 * 1024, "tls1m": 1 << 20}.get(case, 1024)
tls = ssl.create_default_context()
tls.check_hostname = False
tls.verify_mode = ssl.CERT_NONE
base = int(time.time() * 1000) % 10**9 * 10**6   # unique query strings across runs
conn = None
for i in range(count):
    if conn is None or case == "new":
        if conn: conn.close()
        conn = (http.client.HTTPSConnection(host, tls_port, timeout=30, context=tls) if case.startswith("tls")
                else http.client.HTTPConnection(host, port, timeout=30))
    target = f"{path}?n={base + i}" if case in ("miss", "nocache") else path
    conn.request("GET", target)
    r = conn.getresponse()
    body = r.read()
    if r.status != 200 or len(body) != size:
        sys.exit(f"cg: {case}: {target} -> {r.status}, {len(body)} bytes")
    if case == "miss" and r.getheader("X-Cache") != "MISS":
        sys.exit(f"cg: miss: {target} -> X-Cache {r.getheader('X-Cache')}")
conn.close()
EOF
}

wait_port() {
  local i
  for i in $(seq 1 200); do
    python3 -c "import socket,sys; socket.create_connection(('$HOST', int(sys.argv[1])), 1).close()" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "cg: nothing listens on $HOST:$1" >&2; exit 1
}

# run BIN CASE COUNT REV -> instructions of the whole process
run() {
  local bin=$1 out="$WORK/cg.out.$$.$RANDOM"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin/app.out" >"$WORK/app.log" 2>&1 &
  local vp=$!
  wait_port "$PORT"
  client "$2" 200          # warm-up: pools, the upstream connection, the first entry
  client "$2" "$3"
  kill -INT "$vp"; wait "$vp" 2>/dev/null || true
  awk '/^summary:/ {print $2}' "$out"
  if [ -n "${CG_KEEP:-}" ]; then mkdir -p "$CG_KEEP" && mv "$out" "$CG_KEEP/$4-$2-$3.out"; else rm -f "$out"; fi
}

printf '%-10s %-9s %12s\n' rev case instr/req
for rev in "$@"; do
  bin=$(build "$rev")
  "$bin/testserver" --host "$HOST" --port "$BACKEND" --root "$WORK/www" --quiet >"$WORK/ts.log" 2>&1 &
  pids+=($!)
  wait_port "$BACKEND"
  for c in $CASES; do
    a=$(run "$bin" "$c" "$N" "$rev") b=$(run "$bin" "$c" $((2 * N)) "$rev")
    printf '%-10s %-9s %12d\n' "$rev" "$c" $(((b - a) / N))
  done
  kill "${pids[-1]}" 2>/dev/null || true; wait "${pids[-1]}" 2>/dev/null || true
  unset 'pids[-1]'
done

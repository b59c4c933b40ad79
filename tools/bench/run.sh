#!/usr/bin/env bash
# `make bench`: Juggler against nginx and HAProxy (and HAProxy in TCP mode and
# direct-to-backend as the limits) over the same three nginx backends, all on
# 127.0.0.1. Builds Juggler twice (1 route and 1,000 routes) into build-bench/,
# three times when scenario 8 runs (+ consistent_hash), compiles the malloc
# counter, then hands over to tools/bench/bench.py.
#
# Environment (see tools/bench/README.md):
#   ROUNDS=3  DURATION=10  WORKERS=1  SCENARIOS=all (or e.g. 1,2,6; scenarios 1-13)  QUICK=1 (1 round, 3 s)
#   BENCH_HOST=127.0.0.1 (another loopback address for every server of the bench)
#   CONNS=50  DL_CONNS=1  IDLE_CONNS=5000  WRK_THREADS=1  ALLOC_DURATION=5
#   H2_CLIENTS=10  H2_STREAMS=10  H2_IDLE_CONNS=1000 (scenario 13)
#   BENCH_SOURCE=tree (the working tree) or HEAD (the last commit)
#   BENCH_BASE=REV (any git revision): also build REV and run it as one more proxy,
#     juggler@SHORT, beside Juggler in every scenario, with the ratios Juggler / base
# Results: bench-results/bench-DATE.md (+ .json with every run), bench-results/latest.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/tools/bench"
BUILD="${BENCH_BUILD:-$ROOT/build-bench}"
export BENCH_RESULTS="${BENCH_RESULTS:-$ROOT/bench-results}"

sc=$(printf '%s' "${SCENARIOS:-}" | tr -s ' ,' ',')   # as bench.py reads it: blank = all
sc=${sc#,} sc=${sc%,}
selected() {  # selected N: is scenario N among SCENARIOS?
  case ",${sc:-all}," in *,all,*|*,"$1",*) return 0 ;; *) return 1 ;; esac
}
tools="wrk nginx haproxy cmake ninja python3 cc"
selected 12 && tools="$tools varnishd redis-server"
selected 13 && tools="$tools h2load"
for tool in $tools; do
  command -v "$tool" >/dev/null || { echo "bench: '$tool' not found (make bench installs it: tools/install-deps.sh bench)" >&2; exit 2; }
done

# ---------------------------------------------------------------- clean-up
# bench.py starts every server in its own process group and writes the group id
# to $BENCH_WORK/pgids/NAME; whatever is still there at exit is stopped here.
BENCH_WORK=$(mktemp -d /tmp/juggler-bench.XXXXXX)
chmod 755 "$BENCH_WORK"            # nginx workers may run as another user
export BENCH_WORK
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local f pg
  for f in "$BENCH_WORK"/pgids/*; do
    [ -e "$f" ] || continue
    pg=$(cat "$f")
    kill -TERM -- "-$pg" 2>/dev/null || true
  done
  sleep 0.5
  for f in "$BENCH_WORK"/pgids/*; do
    [ -e "$f" ] || continue
    pg=$(cat "$f")
    kill -KILL -- "-$pg" 2>/dev/null || true
  done
  rm -f "$BENCH_WORK/big.bin"
  if [ "$rc" -eq 0 ]; then
    rm -rf "$BENCH_WORK"
  else
    echo "bench: exit $rc; logs and configs kept in $BENCH_WORK" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 5,000 idle connections need as many descriptors in the proxies and in the client.
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt 12000 ]; then
  echo "bench: note: the descriptor limit is $hard; IDLE_CONNS lowered to $((hard / 2 - 200))" >&2
  export IDLE_CONNS=$((hard / 2 - 200))
fi
ulimit -n "$hard" 2>/dev/null || true

# ---------------------------------------------------------------- build
# Two balancers, as a routes file is compiled into the binary: build-bench/one
# (tools/bench/bench.def, 1 route; scenarios 1-8) and build-bench/1k (999 more,
# generated; scenario 6), each built only when a selected scenario runs it.
# Scenario 8 adds a third, build-bench/ch: bench.def with its pool switched to
# consistent_hash key=header:X-User (generated), built only when 8 is selected.
# BENCH_SOURCE=HEAD builds the last commit (exported with `git archive` into
# build-bench/src) instead of the working tree, e.g. while the tree is mid-edit.
mkdir -p "$BUILD/routes"
python3 "$HERE/bench.py" gen-one "$BUILD/routes/bench-one.def"
python3 "$HERE/bench.py" gen-routes "$BUILD/routes/bench-1k.def"
python3 "$HERE/bench.py" gen-ch "$BUILD/routes/bench-ch.def"
python3 "$HERE/bench.py" gen-ext "$BUILD/routes/bench-ext.def"
# export_rev COMMIT DIR: DIR becomes COMMIT's tree (git archive). Only the files
# that differ from what DIR held get a new modification time: git archive stamps
# every file with the commit's time, older than an earlier build's objects, so
# an export straight into DIR would let ninja keep another commit's objects.
export_rev() {
  rm -rf "$2.new" && mkdir -p "$2.new"
  git -C "$ROOT" archive --format=tar "$1" | tar -x -C "$2.new"
  python3 "$HERE/bench.py" sync-tree "$2.new" "$2"
  rm -rf "$2.new"
}
SRC="$ROOT" SFX=""
case "${BENCH_SOURCE:-tree}" in
  tree) ;;
  HEAD|head)
    SRC="$BUILD/src" SFX="-head"
    head=$(git -C "$ROOT" rev-parse HEAD)
    if [ "$(cat "$BUILD/src.commit" 2>/dev/null)" != "$head" ]; then
      rm -f "$BUILD/src.commit"
      export_rev "$head" "$SRC"
      echo "$head" >"$BUILD/src.commit"
    fi
    echo "bench: building the last commit, ${head:0:7}" ;;
  *) echo "bench: BENCH_SOURCE is 'tree' (default) or 'HEAD'" >&2; exit 2 ;;
esac
build() {  # build DIR ROUTES [SOURCE [WHAT]]: WHAT names the source in the error messages
  local src="${3:-$SRC}" what="${4:-}"
  cmake -S "$src" -B "$BUILD/$1" -G Ninja -DJUGGLER_USER_BUILD=OFF -DCMAKE_BUILD_TYPE=Release \
        -DJUGGLER_ROUTES="$2" >"$BUILD/$1.configure.log" 2>&1 \
    || { cat "$BUILD/$1.configure.log" >&2; echo "bench: cmake configure failed ($BUILD/$1)${what:+ $what}" >&2; exit 1; }
  cmake --build "$BUILD/$1" --target app >"$BUILD/$1.build.log" 2>&1 \
    || { tail -40 "$BUILD/$1.build.log" >&2; echo "bench: build failed ($BUILD/$1)${what:+ $what}" >&2; exit 1; }
  [ -x "$BUILD/$1/bin/app.out" ] \
    || { echo "bench: no $BUILD/$1/bin/app.out after the build${what:+ $what}" >&2; exit 1; }
}
if selected 1 || selected 2 || selected 3 || selected 4 || selected 5 || selected 6 || selected 7 || selected 8 \
   || selected 13; then
  echo "bench: building Juggler (Release) into $BUILD/one$SFX"
  build "one$SFX" "$BUILD/routes/bench-one.def"
  export JUGGLER_BIN="$BUILD/one$SFX/bin/app.out"
fi
if selected 6; then
  echo "bench: building the 1,000-route variant (scenario 6) into $BUILD/1k$SFX"
  build "1k$SFX" "$BUILD/routes/bench-1k.def"
  export JUGGLER_1K_BIN="$BUILD/1k$SFX/bin/app.out"
fi
if selected 8; then
  echo "bench: building the consistent_hash variant (scenario 8) into $BUILD/ch$SFX"
  build "ch$SFX" "$BUILD/routes/bench-ch.def"
  export JUGGLER_CH_BIN="$BUILD/ch$SFX/bin/app.out"
fi
# Scenarios 9 (gzip), 10 (L4), 11 (WebSocket) and 12 (cache): bench.def plus a gzip
# route, a `listen tcp`, a WebSocket pool and a cached route, kept out of the other
# builds so that a BENCH_BASE older than them still builds.
if selected 9 || selected 10 || selected 11 || selected 12; then
  echo "bench: building the extras variant (scenarios 9-12) into $BUILD/ext$SFX"
  build "ext$SFX" "$BUILD/routes/bench-ext.def"
  export JUGGLER_EXT_BIN="$BUILD/ext$SFX/bin/app.out"
fi
# Scenario 12d: the same cached route with the cache in Redis. `set cache` is
# compiled into the table, so the extras build starts on a table compiled from
# bench-redis.def (--table, as `make reload` compiles one: tools/reload.sh).
if selected 12; then
  python3 "$HERE/bench.py" gen-redis "$BUILD/routes/bench-redis.def"
  table="$BUILD/ext$SFX/bench-redis.so"
  if [ ! -f "$table" ] || [ "$BUILD/routes/bench-redis.def" -nt "$table" ] || [ "$JUGGLER_EXT_BIN" -nt "$table" ]; then
    echo "bench: compiling the Redis variant's table (scenario 12d) into $table"
    python3 -B "$SRC/codegen/gen_distributer.py" "$BUILD/routes/bench-redis.def" -o "$table.cpp"
    abi=$(sha256sum "$SRC/include/juggler/route.hpp" | cut -c1-16)
    c++ -std=c++20 -O2 -fPIC -shared -fvisibility=hidden "-I$SRC/include" -DJUGGLER_RELOADABLE \
      "-DJUGGLER_TABLE_ABI=\"$abi\"" -o "$table" "$table.cpp"
  fi
  export JUGGLER_REDIS_TABLE="$table"
fi

# BENCH_BASE=REV: the commit to compare with ("each slice against the commit
# before it, in one run"). REV is exported with `git archive` into
# build-bench/base-src and built in Release from the same routes files
# (bench.def, and the generated 1k / ch files when scenarios 6 / 8 run) into
# build-bench/one-base (1k-base, ch-base); bench.py runs it as juggler@SHORT.
if [ -n "${BENCH_BASE:-}" ]; then
  base=$(git -C "$ROOT" rev-parse --verify --quiet "${BENCH_BASE}^{commit}") \
    || { echo "bench: BENCH_BASE=$BENCH_BASE is not a commit of $ROOT" >&2; exit 2; }
  short=$(git -C "$ROOT" rev-parse --short "$base")
  BASE_SRC="$BUILD/base-src"
  if [ "$(cat "$BUILD/base-src.commit" 2>/dev/null)" != "$base" ]; then
    rm -f "$BUILD/base-src.commit"
    export_rev "$base" "$BASE_SRC"
    echo "$base" >"$BUILD/base-src.commit"
  fi
  # What the bench needs from the base tree: the CMake project with its
  # JUGGLER_ROUTES setting and the app target (checked by the build). The
  # command-line flags are checked when bench.py starts it.
  grep -q 'JUGGLER_ROUTES' "$BASE_SRC/CMakeLists.txt" 2>/dev/null \
    || { echo "bench: BENCH_BASE=$BENCH_BASE ($short): its CMakeLists.txt has no JUGGLER_ROUTES setting;" \
              "the bench cannot compile bench.def into it" >&2; exit 2; }
  what="(BENCH_BASE=$BENCH_BASE, commit $short: it may not accept tools/bench/bench.def or the generated routes files of this tree)"
  echo "bench: building the base, $short ($(git -C "$ROOT" log -1 --format=%s "$base" | cut -c1-70)), into $BUILD/one-base"
  build one-base "$BUILD/routes/bench-one.def" "$BASE_SRC" "$what"
  export JUGGLER_BASE_BIN="$BUILD/one-base/bin/app.out"
  if selected 6; then
    echo "bench: building the base's 1,000-route variant (scenario 6) into $BUILD/1k-base"
    build 1k-base "$BUILD/routes/bench-1k.def" "$BASE_SRC" "$what"
    export JUGGLER_BASE_1K_BIN="$BUILD/1k-base/bin/app.out"
  fi
  if selected 8; then
    echo "bench: building the base's consistent_hash variant (scenario 8) into $BUILD/ch-base"
    build ch-base "$BUILD/routes/bench-ch.def" "$BASE_SRC" "$what"
    export JUGGLER_BASE_CH_BIN="$BUILD/ch-base/bin/app.out"
  fi
  if selected 12; then
    echo "bench: building the base's extras variant (scenario 12a/12b) into $BUILD/ext-base"
    build ext-base "$BUILD/routes/bench-ext.def" "$BASE_SRC" "$what"
    export JUGGLER_BASE_EXT_BIN="$BUILD/ext-base/bin/app.out"
  fi
  export BENCH_BASE_COMMIT="$base" BENCH_BASE_SHORT="$short"
fi

# Scenario 3's certificate: bench.def names build-bench/certs/ (relative to the
# repository root, where Juggler runs); nginx and HAProxy use the same files.
export BENCH_CERT_DIR="$ROOT/build-bench/certs"
if [ ! -f "$BENCH_CERT_DIR/server.crt" ] || [ ! -f "$BENCH_CERT_DIR/server.key" ]; then
  bash "$ROOT/tools/make-cert.sh" "$BENCH_CERT_DIR" >/dev/null
fi

# The LD_PRELOAD allocation counter of scenario 7.
export MALLOC_COUNT_SO="$BUILD/malloc_count.so"
if [ ! -f "$MALLOC_COUNT_SO" ] || [ "$HERE/malloc_count.c" -nt "$MALLOC_COUNT_SO" ]; then
  cc -O2 -Wall -Wextra -shared -fPIC -o "$MALLOC_COUNT_SO" "$HERE/malloc_count.c"
fi

# The WebSocket echo backend and load of scenario 11.
export WSBENCH_BIN="$BUILD/wsbench"
if [ ! -f "$WSBENCH_BIN" ] || [ "$HERE/wsbench.c" -nt "$WSBENCH_BIN" ]; then
  cc -O2 -Wall -Wextra -o "$WSBENCH_BIN" "$HERE/wsbench.c"
fi

# ---------------------------------------------------------------- run
python3 "$HERE/bench.py" run

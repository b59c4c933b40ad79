#!/usr/bin/env bash
# Runs each libFuzzer target for SECONDS (default 60) from its seed corpus.
#
#   tests/fuzz/run.sh [SECONDS]
#
# New inputs go to build-fuzz/corpus/<target>/ (the seeds in tests/fuzz/corpus/
# are only read); a crash is written to build-fuzz/crash-* and the script exits
# non-zero. Every file in tests/fuzz/regressions/<target>/ is replayed first.
# FUZZ_JOBS=N runs N workers per target (default 1). The strict framing
# reader's self-test (strict_framing_test) runs before anything else.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${FUZZ_OUT:-$ROOT/build-fuzz}"
SECONDS_PER_TARGET="${1:-60}"
JOBS="${FUZZ_JOBS:-1}"
status=0

[ -x "$OUT/strict_framing_test" ] || { echo "run.sh: $OUT/strict_framing_test missing: run tests/fuzz/build.sh first" >&2; exit 1; }
"$OUT/strict_framing_test" || exit 1

for t in request response proxy client_hello h2; do
  bin="$OUT/fuzz_$t"
  [ -x "$bin" ] || { echo "run.sh: $bin missing: run tests/fuzz/build.sh first" >&2; exit 1; }
  reg="$ROOT/tests/fuzz/regressions/$t"
  if [ -d "$reg" ] && [ -n "$(ls -A "$reg" 2>/dev/null)" ]; then
    echo "== $t: replaying regressions"
    "$bin" -runs=0 "$reg"/* >/dev/null 2>"$OUT/regressions-$t.log" || {
      echo "run.sh: a regression input of fuzz_$t fails again:" >&2
      tail -40 "$OUT/regressions-$t.log" >&2
      status=1
      continue
    }
  fi
  mkdir -p "$OUT/corpus/$t"
  echo "== $t: fuzzing for ${SECONDS_PER_TARGET}s"
  args=(-max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -max_len=4096
        $(case "$t" in proxy) echo "-dict=$ROOT/tests/fuzz/proxy.dict" ;; request|response) echo "-dict=$ROOT/tests/fuzz/http.dict" ;; esac) -artifact_prefix="$OUT/crash-$t-" -print_final_stats=1)
  if [ "$JOBS" -gt 1 ]; then args+=(-fork="$JOBS"); fi
  if ! (cd "$OUT" && "$bin" "${args[@]}" "$OUT/corpus/$t" "$ROOT/tests/fuzz/corpus/$t" 2>"$OUT/fuzz-$t.log"); then
    echo "run.sh: fuzz_$t found a crash:" >&2
    grep -E "ERROR|INVARIANT|runtime error|Test unit written" "$OUT/fuzz-$t.log" >&2 || tail -30 "$OUT/fuzz-$t.log" >&2
    status=1
  else
    grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "$OUT/fuzz-$t.log" | sed "s/^/  $t /"
  fi
done
exit $status

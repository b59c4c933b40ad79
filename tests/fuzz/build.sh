#!/usr/bin/env bash
# Builds the libFuzzer targets into build-fuzz/ (at the repository root) with
# clang++ directly: tests/fuzz/fuzz_request.cpp, fuzz_response.cpp, fuzz_h2.cpp (and
# strict_framing_test.cpp, the strict reader's self-test), the
# HTTP sources (src/http/*.cpp), llhttp's C sources and the distributer
# generated from tests/routes/hardening.def.
#
#   tests/fuzz/build.sh            # -fsanitize=fuzzer,address,undefined
#   CXX=clang++-14 CC=clang-14 tests/fuzz/build.sh
#
# Needs clang (14) and libclang-rt-14-dev (the libFuzzer and sanitizer
# runtimes), libuv1-dev, libnghttp2-dev, node-llhttp (llhttp's C in /usr/share/llhttp).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${FUZZ_OUT:-$ROOT/build-fuzz}"
CXX="${CXX:-clang++}"
CC="${CC:-clang}"
LLHTTP_SRC="${LLHTTP_SRC:-/usr/share/llhttp}"
LLHTTP_INC="${LLHTTP_INC:-/usr/share/include/llhttp}"
ROUTES="${FUZZ_ROUTES:-$ROOT/tests/routes/hardening.def}"
SAN="-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
FLAGS="-g -O1 -fno-omit-frame-pointer"

case "$("$CXX" --version 2>/dev/null | head -1)" in
  *clang*) ;;
  *) echo "build.sh: $CXX is not clang (libFuzzer needs clang: apt-get install clang libclang-rt-14-dev)" >&2; exit 1 ;;
esac
for f in api.c http.c llhttp.c; do
  [ -f "$LLHTTP_SRC/$f" ] || { echo "build.sh: $LLHTTP_SRC/$f missing (apt-get install node-llhttp)" >&2; exit 1; }
done

mkdir -p "$OUT/obj"
python3 "$ROOT/codegen/gen_distributer.py" "$ROUTES" -o "$OUT/distributer.cpp"

# Objects shared by both targets; instrumented for coverage (-fsanitize=fuzzer-no-link).
LIBSAN="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"
objs=()
for f in api http llhttp; do
  "$CC" $FLAGS $LIBSAN -I "$LLHTTP_INC" -c "$LLHTTP_SRC/$f.c" -o "$OUT/obj/llhttp_$f.o"
  objs+=("$OUT/obj/llhttp_$f.o")
done
for src in "$ROOT"/src/http/*.cpp "$OUT/distributer.cpp"; do
  o="$OUT/obj/$(basename "$src" .cpp).o"
  "$CXX" -std=c++20 $FLAGS $LIBSAN -I "$ROOT/include" -I "$LLHTTP_INC" -c "$src" -o "$o"
  objs+=("$o")
done

# The strict framing reader's self-test (no fuzzer runtime; run.sh runs it first).
"$CXX" -std=c++20 $FLAGS -Wall -Wextra -Werror -fsanitize=address,undefined -fno-sanitize-recover=undefined \
  "$ROOT/tests/fuzz/strict_framing_test.cpp" -o "$OUT/strict_framing_test"
echo "built $OUT/strict_framing_test"

# The PROXY protocol parser: one source, no llhttp.
"$CXX" -std=c++20 $FLAGS $SAN -Wall -Wextra -Werror -I "$ROOT/include" -I "$ROOT/src" \
  "$ROOT/tests/fuzz/fuzz_proxy.cpp" "$ROOT/src/stream/proxy_header.cpp" -o "$OUT/fuzz_proxy"
echo "built $OUT/fuzz_proxy"

# The ClientHello parser (SNI routing): one source.
"$CXX" -std=c++20 $FLAGS $SAN -Wall -Wextra -Werror -I "$ROOT/include" -I "$ROOT/src" \
  "$ROOT/tests/fuzz/fuzz_client_hello.cpp" "$ROOT/src/stream/client_hello.cpp" -o "$OUT/fuzz_client_hello"
echo "built $OUT/fuzz_client_hello"

# The HTTP/2 front: nghttp2 (the system's, not instrumented) and the mapping
# of a stream's fields to a request head.
"$CXX" -std=c++20 $FLAGS $SAN -Wall -Wextra -Werror -I "$ROOT/include" -I "$ROOT/src" -I "$LLHTTP_INC" \
  "$ROOT/tests/fuzz/fuzz_h2.cpp" "$ROOT/src/http2/request_head.cpp" "$ROOT/src/http2/session.cpp" "${objs[@]}" -luv -lnghttp2 -o "$OUT/fuzz_h2"
echo "built $OUT/fuzz_h2"

for t in fuzz_request fuzz_response; do
  "$CXX" -std=c++20 $FLAGS $SAN -Wall -Wextra -Werror -I "$ROOT/include" -I "$LLHTTP_INC" \
    "$ROOT/tests/fuzz/$t.cpp" "${objs[@]}" -luv -o "$OUT/$t"
  echo "built $OUT/$t"
done

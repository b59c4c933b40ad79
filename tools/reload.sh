#!/usr/bin/env bash
# Compile a routes file into a uniquely named shared object and ask a running
# balancer to swap it in. Two callers: `make reload` in the source tree, and
# the installed juggler-reload (deploy/juggler-reload.in, what `systemctl
# reload juggler` runs), which installs this file as PREFIX/share/juggler/
# reload.sh beside the generator and the header the table compiles against.
#   reload.sh ROUTES [BUILD_DIR]        the object goes to BUILD_DIR/reload;
#   once swapped in, BUILD_DIR/reload/current.so points at it
# Environment: JUGGLER_SHARE (where codegen/ and include/ are; default the
# source tree this file is in), JUGGLER_BIN (default ./bin/app.out),
# JUGGLER_CONTROL (the balancer's control socket, default juggler.sock),
# CXX (default c++).
# A routes file with an error stops here with the generator's FILE:LINE
# message: the running balancer is not touched.
set -euo pipefail
share=${JUGGLER_SHARE:-"$(cd "$(dirname "$0")/.." && pwd)"}
routes=${1:?usage: reload.sh ROUTES [BUILD_DIR]}
build=${2:-build}
bin=${JUGGLER_BIN:-./bin/app.out}
control=${JUGGLER_CONTROL:-juggler.sock}
cxx=${CXX:-c++}
test -f "$routes" || { echo "$routes: no such routes file" >&2; exit 2; }
test -x "$bin" || { echo "$bin: not built (make all)" >&2; exit 2; }
for tool in python3 "$cxx"; do
  command -v "$tool" >/dev/null ||
    { echo "reload: $tool is not installed: a reload compiles the routes (apt install python3 g++)" >&2; exit 2; }
done
dir="$build/reload"
mkdir -p "$dir"
# Unique per build: dlopen of a path already loaded would return the old object.
stamp="$(sha256sum "$routes" | cut -c1-12)-$(date +%s%N)"
cpp="$dir/distributer-$stamp.cpp"
so="$dir/routes-$stamp.so"
trap 'rm -f "$cpp" "$so.tmp"' EXIT
# -B: an installed generator lives in a read-only tree (ProtectSystem=strict).
python3 -B "$share/codegen/gen_distributer.py" "$routes" -o "$cpp"
# The table ABI, as CMakeLists.txt computes it for the balancer.
abi=$(sha256sum "$share/include/juggler/route.hpp" | cut -c1-16)
"$cxx" -std=c++20 -O2 -fPIC -shared -fvisibility=hidden "-I$share/include" -DJUGGLER_RELOADABLE \
  "-DJUGGLER_TABLE_ABI=\"$abi\"" -o "$so.tmp" "$cpp"
mv "$so.tmp" "$so"
rm -f "$cpp"
rc=0
"$bin" --reload "$so" --control "$control" || rc=$?
if [ "$rc" -ne 0 ]; then
  rm -f "$so"  # refused, or no balancer: nothing loaded it
  exit "$rc"
fi
# current.so names the table just swapped in, for the next start
# (`--table-if-exists DIR/current.so`, the unit's ExecStart): a restart keeps
# the reloaded routes. Relative, so the folder can move; replaced by rename,
# so a start never sees it half made.
previous=$(readlink "$dir/current.so" 2>/dev/null || true)
ln -sfn "$(basename "$so")" "$dir/current.so.tmp"
mv -Tf "$dir/current.so.tmp" "$dir/current.so"
# Objects of earlier reloads go, but the current and the previous one (a
# loaded one may be deleted anyway: its mapping lives on until unloaded).
for old in "$dir"/routes-*.so; do
  name=$(basename "$old")
  [ "$name" = "$(basename "$so")" ] || [ "$name" = "$previous" ] || rm -f "$old"
done

#!/usr/bin/env bash
# make reload: compile a routes file into a uniquely named shared object and
# ask the balancer started from this folder to swap it in.
#   tools/reload.sh ROUTES [BUILD_DIR]
# Environment: JUGGLER_BIN (default ./bin/app.out), JUGGLER_CONTROL (the
# balancer's control socket, default juggler.sock), CXX (default c++).
# A routes file with an error stops here with the generator's FILE:LINE
# message: the running balancer is not touched.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
routes=${1:?usage: tools/reload.sh ROUTES [BUILD_DIR]}
build=${2:-build}
bin=${JUGGLER_BIN:-./bin/app.out}
control=${JUGGLER_CONTROL:-juggler.sock}
test -f "$routes" || { echo "$routes: no such routes file" >&2; exit 2; }
test -x "$bin" || { echo "$bin: not built (make all)" >&2; exit 2; }
dir="$build/reload"
mkdir -p "$dir"
# Unique per build: dlopen of a path already loaded would return the old object.
stamp="$(sha256sum "$routes" | cut -c1-12)-$(date +%s%N)"
cpp="$dir/distributer-$stamp.cpp"
so="$dir/routes-$stamp.so"
trap 'rm -f "$cpp" "$so.tmp"' EXIT
python3 "$root/codegen/gen_distributer.py" "$routes" -o "$cpp"
abi=$(sha256sum "$root/include/juggler/route.hpp" | cut -c1-16)
"${CXX:-c++}" -std=c++20 -O2 -fPIC -shared -fvisibility=hidden "-I$root/include" -DJUGGLER_RELOADABLE \
  "-DJUGGLER_TABLE_ABI=\"$abi\"" -o "$so.tmp" "$cpp"
mv "$so.tmp" "$so"
rm -f "$cpp"
# Objects of earlier reloads: the newest few stay (a loaded one may be
# deleted anyway: its mapping lives on until the balancer unloads it).
ls -1t "$dir"/routes-*.so | tail -n +5 | xargs -r rm -f
exec "$bin" --reload "$so" --control "$control"

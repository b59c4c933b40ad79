#!/usr/bin/env bash
# Installs the Debian packages Juggler builds and tests with. Safe to run again:
# it only calls apt-get when a package is missing. `make` runs it on demand.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config python3 curl openssl ca-certificates
  libuv1-dev node-llhttp libssl-dev libcli11-dev catch2 zlib1g-dev libhiredis-dev
  redis-server clang-tidy libbrotli-dev libzstd-dev python3-brotli zstd
  libnghttp2-dev  # the HTTP/2 downstream (src/http2)
  python3-h2 nghttp2-client  # tests/e2e/test_h2*.py: hostile clients, and h2load
  chromium  # tests/e2e/test_admin.py drives the /stats page in headless Chromium
)
# Extra sets: `install-deps.sh asan` adds nothing today (gcc's sanitizers ship
# with gcc); `install-deps.sh bench` adds the comparison proxies (nginx, HAProxy, Varnish) and load tools;
# `install-deps.sh scale` what tests/scale/ runs (iproute2, HAProxy, keepalived for
# its config check only: the package's service is not started by the tests).
case "${1:-}" in
  bench) packages+=(wrk nginx-light haproxy nghttp2-client valgrind varnish) ;;
  fuzz) packages+=(clang libclang-rt-14-dev) ;;
  scale) packages+=(iproute2 haproxy keepalived) ;;  # make test-scale: namespaces, the L4 front, keepalived -t
esac

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"

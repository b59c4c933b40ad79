#!/usr/bin/env bash
# `make run`: three demo backends on 127.0.0.1:6901-6903 and the balancer in
# front of them on PORT (default 8080). Ctrl-C stops everything.
set -u
port="${1:-8080}"
https_port="${2:-8443}"
cd "$(dirname "$0")/.."
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
}
trap cleanup EXIT INT TERM
for i in 1 2 3; do
  ./bin/testserver --port "690$i" --root "tools/testserver/test_server_root_$i" --quiet &
  pids+=($!)
done
sleep 0.3
echo "demo: backends on 127.0.0.1:6901-6903; balancer on http://127.0.0.1:$port/ and https://localhost:$https_port/ (Ctrl-C stops)"
echo "demo: try  curl -i http://127.0.0.1:$port/  (repeat it: X-Server changes)"
echo "demo: and  curl -i --cacert certs/server.crt https://localhost:$https_port/"
./bin/app.out --port "$port" --https-port "$https_port" &
pids+=($!)
wait "${pids[-1]}"

#!/usr/bin/env bash
# Writes a self-signed ECDSA P-256 certificate for localhost into DIR/server.crt
# and its key into DIR/server.key (valid 825 days; SAN DNS:localhost, IP:127.0.0.1).
set -euo pipefail
dir="${1:-certs}"
mkdir -p "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$dir/server.key" -out "$dir/server.crt" -days 825 -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
chmod 600 "$dir/server.key"
echo "wrote $dir/server.crt and $dir/server.key"

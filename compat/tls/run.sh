#!/usr/bin/env bash
# TLS with real clients: makes a throw-away CA, a server certificate for
# localhost/127.0.0.1 and a client certificate (openssl), then runs the tests in
# test/ (which start Tidewire with --tls-port / --https-port) with the CA trusted by
# Node (NODE_EXTRA_CA_CERTS), as an application trusting a private CA would.
set -euo pipefail
cd "$(dirname "$0")"
if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi
pki="$(mktemp -d)"
trap 'rm -rf "$pki"' EXIT
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=tidewire compat CA" \
  -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
leaf() { # name extfile-lines
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$1" -keyout "$pki/$1.key" -out "$pki/$1.csr" 2>/dev/null
  printf '%s\n' "$2" > "$pki/$1.ext"
  openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -extfile "$pki/$1.ext" -out "$pki/$1.crt" 2>/dev/null
}
leaf server "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
leaf client "extendedKeyUsage=clientAuth"
export TLS_DIR="$pki"
NODE_EXTRA_CA_CERTS="$pki/ca.crt" npm test --silent

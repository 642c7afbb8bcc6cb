#!/usr/bin/env bash
# Runs the official @upstash/redis client against Tidewire's REST API.
# Builds the debug binary (unless TIDEWIRE_BIN is given), installs the pinned npm
# dependencies and runs `node --test`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if [[ -z "${TIDEWIRE_BIN:-}" ]]; then
  (cd "$root" && cargo build -q -p tidewire-server --bin tidewire)
  export TIDEWIRE_BIN="$root/target/debug/tidewire"
fi

cd "$here"
if [[ -f package-lock.json ]]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi
exec npm test --silent

#!/usr/bin/env bash
# Runs the ably SDK compatibility suite against Tidewire's realtime layer.
# Builds the realtime test server once (unless TIDEWIRE_REALTIME_BIN is given),
# installs the pinned npm dependencies and runs `node --test`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target-realtime}"

if [[ -z "${TIDEWIRE_REALTIME_BIN:-}" && -z "${TIDEWIRE_BIN:-}" ]]; then
  (cd "$root" && cargo build -q -p tidewire-realtime --example realtime_test_server)
  export TIDEWIRE_REALTIME_BIN="$CARGO_TARGET_DIR/debug/examples/realtime_test_server"
fi

cd "$here"
if [[ -f package-lock.json ]]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi
exec npm test --silent

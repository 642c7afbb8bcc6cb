#!/usr/bin/env bash
# Runs the official @upstash/qstash client, unmodified and pinned in package.json /
# package-lock.json, against Tidewire's QStash-compatible message API (/v2 on the
# HTTP port): publish, delays, retries, the DLQ, callbacks, cancel, deduplication,
# batch, signatures (Receiver.verify) and delivery after a restart.
# Builds the debug binary (unless TIDEWIRE_BIN is given), installs the pinned npm
# dependencies and runs `node --test`. Exits non-zero if a test fails.
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

#!/usr/bin/env bash
# Presence and continuity benchmark (issue 7), with the official ably SDK:
#   - presence enter / leave throughput (enterClient / leaveClient over CLIENTS connections),
#   - time to SYNC MEMBERS (default 10,000) members to a new subscriber,
#   - resume replay time for MISSED (default 1,000) messages published while the
#     subscriber's network was cut (TCP proxy), from the resumed CONNECTED to the last.
# Builds the release binary here (only here), installs compat/ably's pinned npm deps.
#
#   bench/presence.sh
#   MEMBERS=20000 CLIENTS=20 MISSED=5000 bench/presence.sh
#   TIDEWIRE_BIN=target/debug/tidewire bench/presence.sh   # skip the release build
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"

if [[ -z "${TIDEWIRE_BIN:-}" ]]; then
  (cd "$root" && cargo build --release -q -p tidewire-server --bin tidewire)
  TIDEWIRE_BIN="${CARGO_TARGET_DIR:-$root/target}/release/tidewire"
fi
(cd "$root/compat/ably" && npm ci --no-audit --no-fund --loglevel=error)
exec node "$here/presence-load.mjs" "$TIDEWIRE_BIN"

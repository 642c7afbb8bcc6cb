#!/usr/bin/env bash
# Drives the web dashboard of the real tidewire binary in headless Chromium:
# Debian's chromium (installed with apt-get when /usr/bin/chromium is missing),
# driven by the pinned playwright-core through `node --test`. Saves screenshots of
# the views to compat/dashboard/out/ (SHOTS_DIR=docs/dashboard refreshes the
# docs' pictures). Exits 77 (skipped) when Chromium cannot be had.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if [[ ! -x /usr/bin/chromium ]]; then
  if [[ "$(id -u)" = 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "/usr/bin/chromium missing and cannot install it (need root + apt-get): skipped"
    exit 77
  fi
fi

if [[ -z "${TIDEWIRE_BIN:-}" ]]; then
  (cd "$root" && cargo build -q -p tidewire-server)
  export TIDEWIRE_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/tidewire"
fi

cd "$here"
if [[ -f package-lock.json ]]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi
exec npm test --silent

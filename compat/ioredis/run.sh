#!/usr/bin/env bash
# ioredis (pinned in package.json) against a fresh tidewire per test file.
set -euo pipefail
cd "$(dirname "$0")"
if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi
npm test --silent

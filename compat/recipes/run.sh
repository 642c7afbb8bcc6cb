#!/usr/bin/env bash
# The recipes of docs/recipes/ (src/, written as an app would use them) against fresh
# tidewires, with Express and ioredis pinned in package.json / package-lock.json.
# Exits non-zero if a test fails.
set -euo pipefail
cd "$(dirname "$0")"
if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi
npm test --silent

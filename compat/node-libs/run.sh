#!/usr/bin/env bash
# Node.js libraries that apps use with Redis, unmodified and pinned in package.json /
# package-lock.json, against fresh tidewires: connect-redis + express-session,
# redlock (one and three servers), rate-limiter-flexible, node-redis v5 and v6, and
# Bull Board over BullMQ. Exits non-zero if a test fails.
set -euo pipefail
cd "$(dirname "$0")"
if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi
npm test --silent

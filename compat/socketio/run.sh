#!/usr/bin/env bash
# Socket.IO clusters on one tidewire with the official, unmodified Redis adapters
# (@socket.io/redis-streams-adapter over node-redis and ioredis, @socket.io/redis-adapter
# over ioredis), all pinned in package.json / package-lock.json.
set -euo pipefail
cd "$(dirname "$0")"
if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi
npm test --silent

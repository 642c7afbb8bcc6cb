#!/usr/bin/env bash
# Builds the Dockerfile's image and checks the container as a user would: it starts
# as a non-root user, turns healthy (HEALTHCHECK on /readyz), answers PING over RESP
# with the password from TIDEWIRE_REQUIREPASS, and keeps a key across a restart on
# its data volume. Needs a running Docker daemon that can pull rust:1-bookworm and
# debian:bookworm-slim; without one it says so and exits 77 (skipped).
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  echo "docker: SKIPPED: no Docker daemon reachable (docker info failed)"
  exit 77
fi
tag="tidewire-test:$$"
name="tidewire-test-$$"
vol="tidewire-test-data-$$"
cleanup() {
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker volume rm "$vol" >/dev/null 2>&1 || true
  docker image rm "$tag" >/dev/null 2>&1 || true
}
trap cleanup EXIT
# The plain build: what is checked here is the image, not the optimiser (the
# profile-guided build would take the test suite's time three times over).
docker build -q --build-arg BUILD=plain -t "$tag" . >/dev/null
start() {
  docker run -d --name "$name" -e TIDEWIRE_REQUIREPASS=pw -v "$vol:/data" -p 127.0.0.1::6379 "$tag" >/dev/null
  for _ in $(seq 1 60); do
    [ "$(docker inspect -f '{{.State.Health.Status}}' "$name")" = healthy ] && return 0
    sleep 1
  done
  echo "container did not turn healthy"; docker logs "$name" | tail -20; return 1
}
start
[ "$(docker exec "$name" id -u)" != 0 ] || { echo "runs as root"; exit 1; }
port="$(docker port "$name" 6379/tcp | head -1 | sed 's/.*://')"
[ "$(redis-cli -p "$port" -a pw --no-auth-warning PING)" = PONG ]
redis-cli -p "$port" -a pw --no-auth-warning SET docker:k v >/dev/null
docker stop "$name" >/dev/null && docker rm "$name" >/dev/null
start
port="$(docker port "$name" 6379/tcp | head -1 | sed 's/.*://')"
[ "$(redis-cli -p "$port" -a pw --no-auth-warning GET docker:k)" = v ] || { echo "key lost across restart"; exit 1; }
echo "docker: image builds, runs as non-root, healthy, PING and data across restart ok"

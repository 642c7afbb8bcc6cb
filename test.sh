#!/usr/bin/env bash
# Runs every Tidewire test on a fresh machine: installs what the suites need
# (Debian's redis-tools and redis-server, npm packages, a Python venv with
# redis-py), builds the workspace, runs the Rust tests, then the compat suites that
# drive a started tidewire with real, unmodified clients. Exits non-zero if
# anything failed.
set -uo pipefail
cd "$(dirname "$0")"
root="$(pwd)"

log() { printf '\n=== %s\n' "$*"; }

# redis-cli for its compat suite; redis-server for the DUMP/RESTORE test, which
# exchanges payloads with a real one (crates/server/tests/dump_restore_redis.rs),
# and both for the engine test, which builds a Redis Cluster
# (crates/server/tests/engine_cluster.rs).
missing=()
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "${missing[*]} missing and cannot install (need root + apt-get); the suites needing them will fail"
  fi
fi

log "building"
cargo build --workspace --all-targets || { echo "build: 0 passed, 1 failed"; exit 1; }

passed=0
failed=0
skipped=0
failed_names=()
skipped_names=()
# A suite that exits 77 could not run here (it says why) and is counted as skipped.
run_suite() {
  local name="$1"; shift
  log "$name"
  "$@"
  case $? in
    0) passed=$((passed + 1)) ;;
    77) skipped=$((skipped + 1)); skipped_names+=("$name") ;;
    *) failed=$((failed + 1)); failed_names+=("$name") ;;
  esac
}

export TIDEWIRE_BIN="$root/target/debug/tidewire"
export CARGO_TARGET_DIR="$root/target"

run_suite "rust: cargo test" cargo test --workspace --no-fail-fast
run_suite "compat: redis-cli" bash compat/redis-cli/test.sh
run_suite "compat: ioredis" bash compat/ioredis/run.sh
run_suite "compat: redis-py" bash compat/python/run.sh
for suite in compat/*/run.sh; do
  case "$suite" in
    compat/ioredis/run.sh|compat/python/run.sh) ;;
    *) run_suite "compat: $(basename "$(dirname "$suite")")" bash "$suite" ;;
  esac
done

log "summary"
if [ "$failed" -gt 0 ]; then
  printf 'failed suite: %s\n' "${failed_names[@]}"
fi
if [ "$skipped" -gt 0 ]; then
  printf 'skipped suite (could not run here, see its output): %s\n' "${skipped_names[@]}"
fi
echo "suites: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]

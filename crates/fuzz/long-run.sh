#!/usr/bin/env bash
# The long fuzz run (docs/fuzzing.md): every target, or the ones named, for
# TIDEWIRE_FUZZ_CASES inputs each (default 10,000,000) in a release build, one after
# the other. Each target's output goes to $TIDEWIRE_FUZZ_LOGS/fuzz-<target>.log
# (default /tmp); the summary line of each is printed. Exits non-zero on a finding.
set -euo pipefail
cd "$(dirname "$0")/../.."
export TIDEWIRE_FUZZ_CASES="${TIDEWIRE_FUZZ_CASES:-10000000}"
export TIDEWIRE_FUZZ_PROGRESS="${TIDEWIRE_FUZZ_PROGRESS:-1000000}"
logs="${TIDEWIRE_FUZZ_LOGS:-/tmp}"
cargo test --release -p tidewire-fuzz --test targets --no-run
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo test --release -p tidewire-fuzz --test targets -- --list 2>/dev/null \
    | sed -n 's/: test$//p' | grep -v '^every_target')
fi
failed=0
for t in "${targets[@]}"; do
  log="$logs/fuzz-$t.log"
  if cargo test --release -p tidewire-fuzz --test targets -- --exact "$t" --nocapture >"$log" 2>&1; then
    grep -o "fuzz $t: .*" "$log" | tail -1
  else
    echo "fuzz $t: FAILED, see $log"
    failed=1
  fi
done
exit "$failed"

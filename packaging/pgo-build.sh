#!/usr/bin/env bash
# The shipped build: the release binary optimised with a profile of a training run
# (profile-guided optimisation). The Docker image and the bench scripts use it.
#
#   packaging/pgo-build.sh          # -> target/pgo/release/tidewire (path printed last)
#
# Steps: an instrumented release build (target/pgo-gen), a training run of that
# binary (below), the profile merged with llvm-profdata (the `llvm-tools` rustup
# component, added if missing), then the release build that uses it (target/pgo).
# About three release builds' time on the first run; cargo reuses both builds while
# the sources do not change.
#
# Training covers what the server spends its time on, each part for a few seconds:
#  - RESP: redis-benchmark's commands (strings, lists, sets, hashes, sorted sets,
#    streams, MSET, LRANGE), one at a time and pipelined, 50 clients;
#  - scripts: the apps' own script shapes, EVALSHA of @upstash/ratelimit's sliding
#    window and a BullMQ-like moveToActive (bench/lua/, the same bench/scripting.sh
#    measures);
#  - Upstash REST: single commands and pipelines over keep-alive HTTP;
#  - realtime: 200 Ably subscribers on a channel and a publisher (tidewire-loadgen).
# Code the run never reaches is laid out as cold, so what users run most should be
# in it: add to it rather than measure around it.
#
# Env: CARGO_TARGET_DIR (default target), KEEP_PROFILE=1 keeps the raw profiles.
# Needs redis-benchmark and redis-cli (installed with apt-get when missing and run as
# root), python3.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
gen="$target/pgo-gen"
use="$target/pgo"
profiles="$target/pgo-profiles"

# Nothing changed since the last build (sources, lock file, this script): reuse it.
if [ -x "$use/release/tidewire" ] && [ -z "$(find crates Cargo.toml Cargo.lock bench/lua \
    bench/scripting-lib.sh packaging/pgo-build.sh -newer "$use/release/tidewire" -print -quit)" ]; then
  echo "$use/release/tidewire"
  exit 0
fi

if ! command -v redis-benchmark >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "installing redis-tools" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-tools >/dev/null
fi
sysroot="$(rustc --print sysroot)"
profdata="$(find "$sysroot" -name llvm-profdata -type f 2>/dev/null | head -n 1)"
if [ -z "$profdata" ]; then
  rustup component add llvm-tools >&2
  profdata="$(find "$sysroot" -name llvm-profdata -type f | head -n 1)"
fi
[ -n "$profdata" ] || { echo "llvm-profdata not found (rustup component add llvm-tools)" >&2; exit 1; }

rm -rf "$profiles"
mkdir -p "$profiles"
echo "instrumented build ($gen)" >&2
RUSTFLAGS="-Cprofile-generate=$profiles/raw" \
  cargo build --release -q --locked -p tidewire-server --bin tidewire --target-dir "$gen"
cargo build --release -q --locked -p tidewire-loadgen --target-dir "$target"
# (The build's own scripts ran instrumented too: their profiles are not the server's.)
rm -rf "$profiles/raw"

work="$(mktemp -d)"
trap 'kill "${pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
key="pgo.key:secret"
token="pgo-token"
cat >"$work/tw.toml" <<EOF
[redis]
appendonly = "no"

[[realtime.keys]]
key = "$key"
EOF
echo "training run" >&2
TIDEWIRE_REST_TOKEN="$token" "$gen/release/tidewire" --config "$work/tw.toml" --port 0 \
  --http-port 0 --print-ports --data-dir "$work/data" --log-level warn >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 1 100); do grep -q LISTENING "$work/out" && break; sleep 0.1; done
line="$(grep LISTENING "$work/out")" || { cat "$work/err" >&2; exit 1; }
port="$(sed -E 's/.*resp=([0-9]+).*/\1/' <<<"$line")"
http="$(sed -E 's/.*http=([0-9]+).*/\1/' <<<"$line")"

# RESP
for p in 1 16; do
  redis-benchmark -p "$port" -c 50 -P "$p" -n $((40000 * p)) -r 100000 -q \
    -t set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,zpopmin,lrange_100,mset,xadd >/dev/null
done
# Scripts
# shellcheck source=bench/scripting-lib.sh
. bench/scripting-lib.sh
for t in ratelimit move-active; do
  scripting_prepare "$port" "$t"
  sha="$(scripting_load "$port" "$t")"
  for p in 1 16; do
    # shellcheck disable=SC2046
    redis-benchmark -p "$port" -c 50 -P "$p" -n $((20000 * p)) -r 100000 -q \
      EVALSHA "$sha" $(scripting_args "$t") >/dev/null
  done
done
# Upstash REST, keep-alive
python3 - "$http" "$token" <<'PY'
import http.client, json, sys
port, token = int(sys.argv[1]), sys.argv[2]
c = http.client.HTTPConnection("127.0.0.1", port)
h = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
def post(path, body):
    c.request("POST", path, json.dumps(body), h)
    r = c.getresponse(); r.read()
    assert r.status == 200, (path, r.status)
for i in range(20000):
    post("/redis", ["SET", f"rest:{i % 1000}", str(i)])
    post("/redis", ["GET", f"rest:{i % 1000}"])
    if i % 10 == 0:
        post("/redis/pipeline", [["INCR", "rest:n"], ["HSET", "rest:h", "f", str(i)], ["LPUSH", "rest:l", "x"]])
PY
# Realtime (the load generator's own profile is not the server's: kept apart)
LLVM_PROFILE_FILE="$work/loadgen-%p.profraw" "$target/release/tidewire-loadgen" --mode ably \
  --url "ws://127.0.0.1:$http" --key "$key" -n 200 -r 200 -d 5 --label pgo >/dev/null \
  || echo "pgo-build: the realtime part of the training failed; going on without it" >&2
redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
wait "$pid" || true
pid=

"$profdata" merge -o "$profiles/tidewire.profdata" "$profiles"/raw/*.profraw
[ "${KEEP_PROFILE:-0}" = 1 ] || rm -rf "$profiles/raw"
echo "optimised build ($use)" >&2
RUSTFLAGS="-Cprofile-use=$profiles/tidewire.profdata" \
  cargo build --release -q --locked -p tidewire-server --bin tidewire --target-dir "$use"
echo "$use/release/tidewire"

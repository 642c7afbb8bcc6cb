#!/usr/bin/env bash
# Memory: resident set size after loading the same data into tidewire and into
# redis-server (same run, fresh server per dataset, no persistence on either side):
#   hashes  1M small hashes   HSET h:<i> name <i> age <i%100>
#   zset    one sorted set of 1M members
#   set     one set of 1M members
#   strings 1M plain strings  SET key:<i> value<i>
#   stream  one stream of 1M entries of 3 small fields
#           XADD events * user u<i%10000> action <one of 4> n <i>
# Prints RSS in MiB and the ratio tidewire/redis (target <= 1.2).
# Usage: bench/memory.sh [count]   (default 1000000; KINDS="zset stream" picks datasets)
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT="${1:-1000000}"
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
fi
cargo build --release -q -p tidewire-server
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
printf '[redis]\nappendonly = "no"\nsave = ""\n' > "$work/tw.toml"

rss_mib() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# Emits the dataset as RESP for redis-cli --pipe.
gen() {
  python3 - "$1" "$COUNT" <<'PY'
import sys
kind, n = sys.argv[1], int(sys.argv[2])
ACTIONS = ("view", "click", "buy", "share")
out = sys.stdout
def cmd(*a):
    out.write("*%d\r\n" % len(a))
    for x in a:
        x = str(x)
        out.write("$%d\r\n%s\r\n" % (len(x.encode()), x))
for i in range(n):
    if kind == "hashes":
        cmd("HSET", "h:%d" % i, "name", "user%d" % i, "age", i % 100)
    elif kind == "strings":
        cmd("SET", "key:%d" % i, "value%d" % i)
    elif kind == "zset":
        cmd("ZADD", "z", i, "member:%d" % i)
    elif kind == "stream":
        cmd("XADD", "events", "*", "user", "u%d" % (i % 10000), "action", ACTIONS[i % 4], "n", i)
    else:
        cmd("SADD", "s", "member:%d" % i)
PY
}

start_tidewire() {
  ./target/release/tidewire --config "$work/tw.toml" --port 0 --http-port 0 --print-ports \
    --data-dir "$work/tw-$1" --log-level warn >"$work/tw-$1.out" 2>/dev/null &
  pids+=($!); TW_PID=$!
  for _ in $(seq 1 100); do grep -qs LISTENING "$work/tw-$1.out" && break; sleep 0.1; done
  TW_PORT="$(grep -o 'resp=[0-9]*' "$work/tw-$1.out" | cut -d= -f2)"
}
start_redis() {
  RS_PORT=$(( 30000 + RANDOM % 20000 ))
  redis-server --port "$RS_PORT" --save "" --appendonly no --dir "$work" --logfile "$work/redis-$1.log" &
  pids+=($!); RS_PID=$!
  for _ in $(seq 1 100); do redis-cli -p "$RS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
}

printf '\n%-8s %10s | %14s %11s | %7s\n' dataset count "tidewire MiB" "redis MiB" ratio
printf '%s\n' "------------------------------------------------------------"
for kind in ${KINDS:-hashes zset set strings stream}; do
  gen "$kind" > "$work/$kind.resp"
  start_tidewire "$kind"; base_tw=$(rss_mib "$TW_PID")
  redis-cli -p "$TW_PORT" --pipe < "$work/$kind.resp" >/dev/null
  start_redis "$kind"; base_rs=$(rss_mib "$RS_PID")
  redis-cli -p "$RS_PORT" --pipe < "$work/$kind.resp" >/dev/null
  sleep 1
  tw=$(rss_mib "$TW_PID"); rs=$(rss_mib "$RS_PID")
  ratio=$(awk -v a="$tw" -v b="$rs" -v c="$base_tw" -v d="$base_rs" 'BEGIN { printf "%.2f", (a - c) / (b - d) }')
  printf '%-8s %10s | %14s %11s | %7s\n' "$kind" "$COUNT" "$tw" "$rs" "$ratio"
  kill "$TW_PID" "$RS_PID"; wait "$TW_PID" "$RS_PID" 2>/dev/null || true
done
echo
echo "RSS after loading (MiB); ratio = (tidewire - its empty RSS) / (redis - its empty RSS), target <= 1.2"

#!/usr/bin/env bash
# Memory: resident set size after loading the same data into tidewire and into
# redis-server (same run, fresh server per dataset, no persistence on either side):
#   hashes  1M small hashes   HSET h:<i> name <i> age <i%100>
#   zset    one sorted set of 1M members
#   set     one set of 1M members
#   strings 1M plain strings  SET key:<i> value<i>
#   stream  one stream of 1M entries of 3 small fields
#           XADD events * user u<i%10000> action <one of 4> n <i>
#   hfe     1M hash fields with TTLs: hashes of 100 fields (HSET hf:<h> f<j> v<j> …)
#           each field given a TTL (HPEXPIRE hf:<h> 3600000 FIELDS 100 …). Compared
#           with redis-server only if it has hash-field expiry (7.4+); otherwise the
#           row shows Tidewire's figure, the same fields without TTLs, and the
#           bytes a TTL adds per field.
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
    elif kind in ("hfe", "hfe-plain"):
        if i % 100 == 0:
            h = i // 100
            pairs = []
            for j in range(100):
                pairs += ["f%d" % j, "v%d" % (i + j)]
            cmd("HSET", "hf:%d" % h, *pairs)
            if kind == "hfe":
                cmd("HPEXPIRE", "hf:%d" % h, 3600000, "FIELDS", 100, *["f%d" % j for j in range(100)])
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
# Whether redis-server has hash-field expiry (7.4+).
redis_hfe() { redis-server --version | awk '{ split($3, v, "[=.]"); exit !(v[2] > 7 || (v[2] == 7 && v[3] >= 4)) }'; }

for kind in ${KINDS:-hashes zset set strings stream hfe}; do
  if [ "$kind" = hfe ] && ! redis_hfe; then
    # No peer: Tidewire with and without the TTLs.
    gen hfe > "$work/hfe.resp"; gen hfe-plain > "$work/hfe-plain.resp"
    start_tidewire hfe; base=$(rss_mib "$TW_PID")
    redis-cli -p "$TW_PORT" --pipe < "$work/hfe.resp" >/dev/null; sleep 1
    with=$(rss_mib "$TW_PID"); kill "$TW_PID"; wait "$TW_PID" 2>/dev/null || true
    start_tidewire hfe-plain; base_plain=$(rss_mib "$TW_PID")
    redis-cli -p "$TW_PORT" --pipe < "$work/hfe-plain.resp" >/dev/null; sleep 1
    plain=$(rss_mib "$TW_PID"); kill "$TW_PID"; wait "$TW_PID" 2>/dev/null || true
    per_ttl=$(awk -v a="$with" -v b="$plain" -v c="$base" -v d="$base_plain" -v n="$COUNT" \
      'BEGIN { printf "%.0f", ((a - c) - (b - d)) * 1048576 / n }')
    printf '%-8s %10s | %14s %11s | %7s   (same fields without TTLs: %s MiB; a TTL adds %s bytes per field; redis-server before 7.4 has no field TTLs)\n' \
      "$kind" "$COUNT" "$with" "n/a" "n/a" "$plain" "$per_ttl"
    continue
  fi
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

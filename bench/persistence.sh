#!/usr/bin/env bash
# Persistence benchmark: Tidewire vs redis-server, configured the same way, in one run.
#
#  1. SET throughput (redis-benchmark -t set -c 50 -n 200000) with
#     appendonly no / appendfsync everysec / appendfsync always; ratio Tidewire/Redis.
#  2. Loading 1M keys at startup: from the log as written, and after BGREWRITEAOF
#     (Tidewire's base file / Redis's RDB-preamble base); Tidewire's longest lock
#     hold during that rewrite (aof_rewrite_max_pause_ms).
#
# Usage: bench/persistence.sh        (installs redis-server via apt-get if missing)
# Env:   REQUESTS=200000 CLIENTS=50 KEYS=1000000 ROUNDS=5 (throughput runs per mode and
#        server, alternating; medians reported). Five, not three: under `always` the
#        disk's fsync time drifts over minutes (Redis alone: 41k-67k SETs/s in one
#        evening), and a median of three still followed single slow rounds.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-200000}
CLIENTS=${CLIENTS:-50}
KEYS=${KEYS:-1000000}
ROUNDS=${ROUNDS:-5}
OUT=bench/out/persistence
mkdir -p "$OUT"

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  echo "installing redis-server (Debian package)…"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq redis-server redis-tools
fi

echo "building tidewire (release)…"
cargo build --release -p tidewire-server -q
TW=target/release/tidewire

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_ready() { # port
  for _ in $(seq 1 6000); do
    if [ "$(redis-cli -p "$1" PING 2>/dev/null)" = "PONG" ]; then return 0; fi
    sleep 0.01
  done
  echo "server on port $1 did not become ready" >&2; return 1
}

now() { date +%s.%N; }

PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

start_tidewire() { # dir port appendonly fsync
  local dir=$1 port=$2 aof=$3 fsync=$4
  mkdir -p "$dir/data"
  cat >"$dir/tw.toml" <<TOML
[redis]
appendonly = "$aof"
appendfsync = "$fsync"
save = ""
auto-aof-rewrite-percentage = "0"
TOML
  TIDEWIRE_LOG_LEVEL=warn "$TW" --config "$dir/tw.toml" --port "$port" --http-port 0 \
    --data-dir "$dir/data" >"$dir/tw.log" 2>&1 &
  PID=$!
  PIDS+=("$PID")
}

start_redis() { # dir port appendonly fsync
  local dir=$1 port=$2 aof=$3 fsync=$4
  mkdir -p "$dir/redis"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir/redis" --appendonly "$aof" \
    --appendfsync "$fsync" --save "" --auto-aof-rewrite-percentage 0 --daemonize no \
    --logfile "$dir/redis.log" >/dev/null 2>&1 &
  PID=$!
  PIDS+=("$PID")
}

stop() { # pid
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 1 3000); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.01; done
  kill -9 "$1" 2>/dev/null || true
}

rps() { # port
  redis-benchmark -p "$1" -t set -c "$CLIENTS" -n "$REQUESTS" -r 1000000 -q --csv 2>/dev/null |
    awk -F, '/"SET"/ { gsub(/"/, "", $2); print $2 }'
}

printf '\n== SET throughput (redis-benchmark -t set -c %s -n %s) ==\n' "$CLIENTS" "$REQUESTS"
printf '%-22s %14s %14s %8s\n' mode tidewire_rps redis_rps ratio | tee "$OUT/throughput.txt"
# ROUNDS runs per mode and server (default 5), the servers taking turns and swapping
# who goes first each round; the median of each side is reported.
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
for mode in off everysec always; do
  aof=yes; fsync=$mode
  if [ "$mode" = off ]; then aof=no; fsync=everysec; fi
  : > "$OUT/tw.$mode"; : > "$OUT/rd.$mode"
  for round in $(seq 1 "$ROUNDS"); do
    for who in tidewire redis; do
      [ $((round % 2)) = 0 ] && who=$([ "$who" = tidewire ] && echo redis || echo tidewire)
      d=$(mktemp -d)
      p=$(free_port)
      if [ "$who" = tidewire ]; then start_tidewire "$d" "$p" "$aof" "$fsync"; else start_redis "$d" "$p" "$aof" "$fsync"; fi
      wait_ready "$p"
      r=$(rps "$p"); stop "$PID"
      if [ "$who" = tidewire ]; then echo "$r" >> "$OUT/tw.$mode"; else echo "$r" >> "$OUT/rd.$mode"; fi
      rm -rf "$d"
    done
  done
  tw=$(median < "$OUT/tw.$mode"); rd=$(median < "$OUT/rd.$mode")
  ratio=$(awk -v a="$tw" -v b="$rd" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
  label="appendonly $aof"; [ "$aof" = yes ] && label="appendfsync $fsync"
  printf '%-22s %14s %14s %8s\n' "$label" "$tw" "$rd" "$ratio" | tee -a "$OUT/throughput.txt"
done

# ---- loading 1M keys -------------------------------------------------------
gen_keys() { # count → RESP SET commands on stdout
  awk -v n="$1" 'BEGIN {
    for (i = 0; i < n; i++) {
      k = "key:" i; v = "value:" i
      printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(v), v
    }
  }'
}
gen_keys "$KEYS" >"$OUT/keys.resp"

start_kind() { # kind dir port
  if [ "$1" = tidewire ]; then start_tidewire "$2" "$3" yes everysec
  else start_redis "$2" "$3" yes everysec; fi
}

load_time() { # kind dir → LOADED="<seconds> s (<n> keys)": start until PING answers
  local kind=$1 dir=$2 port t0 t1 n
  port=$(free_port)
  t0=$(now)
  start_kind "$kind" "$dir" "$port"
  wait_ready "$port"
  t1=$(now)
  n=$(redis-cli -p "$port" DBSIZE)
  stop "$PID"
  LOADED=$(awk -v a="$t0" -v b="$t1" -v n="$n" 'BEGIN { printf "%.2f s (%d keys)", b - a, n }')
}

rewrite() { # port → wait for BGREWRITEAOF to finish
  redis-cli -p "$1" BGREWRITEAOF >/dev/null
  sleep 0.2
  for _ in $(seq 1 6000); do
    if redis-cli -p "$1" INFO persistence | grep -q '^aof_rewrite_in_progress:0'; then break; fi
    sleep 0.05
  done
}

printf '\n== loading %s keys (appendonly yes) ==\n' "$KEYS" | tee "$OUT/load.txt"
for kind in tidewire redis; do
  d=$(mktemp -d); p=$(free_port)
  start_kind "$kind" "$d" "$p"; wait_ready "$p"
  redis-cli -p "$p" --pipe <"$OUT/keys.resp" >/dev/null
  stop "$PID"
  load_time "$kind" "$d"
  printf '%-9s from the log as written:  %s\n' "$kind" "$LOADED" | tee -a "$OUT/load.txt"
  p=$(free_port)
  start_kind "$kind" "$d" "$p"; wait_ready "$p"
  t0=$(now); rewrite "$p"; t1=$(now)
  pause=$(redis-cli -p "$p" INFO persistence | awk -F: '/^aof_rewrite_max_pause_ms/ { gsub(/\r/, "", $2); print $2 }')
  stop "$PID"
  printf '%-9s BGREWRITEAOF took %.2f s%s\n' "$kind" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" \
    "${pause:+, aof_rewrite_max_pause_ms $pause}" | tee -a "$OUT/load.txt"
  load_time "$kind" "$d"
  printf '%-9s from the rewritten log:    %s\n' "$kind" "$LOADED" | tee -a "$OUT/load.txt"
  rm -rf "$d"
done
rm -f "$OUT/keys.resp"
echo
echo "results in $OUT/"

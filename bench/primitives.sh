#!/usr/bin/env bash
# Rate-limit decisions per second: Tidewire's native TW.THROTTLE against the Lua
# script apps run today, @upstash/ratelimit's sliding window by EVALSHA
# (bench/lua/sliding-window.lua, the script bench/scripting.sh also runs), on
# Tidewire and on redis-server in the same run, driven by redis-benchmark from C
# clients (default 50), unpipelined (-P 1) and pipelined (-P 16).
#
# A decision is the seeds' dual-tier limit: burst 10/s and sustained 100/min for one
# identifier. TW.THROTTLE checks and charges both tiers in one command (one call is
# one decision); with @upstash/ratelimit each tier is its own limiter, so a decision
# is two EVALSHA calls (decisions/s = calls/s / 2). Identifiers are random
# (-r 100000): TW.THROTTLE's tiers are the real ones (a random identifier stays
# under them), the script's limit is high enough that every call takes its full path.
#
# Each row runs ROUNDS times (default 3), the three rows taking turns in an order that
# rotates every round; the table shows each row's median round, and the ratio of
# TW.THROTTLE's decisions/s to the better of the two script rows (target >= 3.0).
# Results (CSV of every round) in bench/out/primitives/.
# Usage: bench/primitives.sh [-n requests] [-c clients]
# Env: ROUNDS, PIPELINED_REQUESTS.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
N=100000
C=50
while getopts "n:c:" opt; do case $opt in n) N=$OPTARG;; c) C=$OPTARG;; *) exit 2;; esac; done
ROUNDS="${ROUNDS:-3}"
OUT=bench/out/primitives
mkdir -p "$OUT"

prepare_release_bench
start_servers

NOW=1765000030000 # fixed "now" (ms): half way through a 60 s window
# The same script on both servers (same SHA).
sha_tw="$(redis-cli -p "$tw_port" -x SCRIPT LOAD < bench/lua/sliding-window.lua)"
sha_rs="$(redis-cli -p "$rs_port" -x SCRIPT LOAD < bench/lua/sliding-window.lua)"
[ "$sha_tw" = "$sha_rs" ] || { echo "SHA differs: $sha_tw / $sha_rs" >&2; exit 1; }

port_of() { case $1 in throttle|script-tw) echo "$tw_port";; script-redis) echo "$rs_port";; esac; }
command_of() { # row -> the command redis-benchmark sends
  case $1 in
    throttle) echo "TW.THROTTLE user:__rand_int__ TIER burst 9 10 1000 TIER minute 99 100 60000";;
    script-*) echo "EVALSHA $sha_tw 2 rl:__rand_int__:29416667 rl:__rand_int__:29416666 1000000000 $NOW 60000 1";;
  esac
}
calls_per_decision() { case $1 in throttle) echo 1;; *) echo 2;; esac; }
requests() { if [ "$1" = 1 ]; then echo "$N"; else echo "${PIPELINED_REQUESTS:-$((N * 3))}"; fi; }

# Each row must answer one call without an error on its server.
for row in throttle script-tw script-redis; do
  # shellcheck disable=SC2046
  r="$(redis-cli -p "$(port_of "$row")" $(command_of "$row" | sed 's/__rand_int__/000000000042/g') 2>&1)"
  case "$r" in *ERR*|"") echo "$row: $r" >&2; exit 1;; esac
done

one() { # row pipeline -> calls/s
  redis-cli -p "$(port_of "$1")" FLUSHALL >/dev/null
  # shellcheck disable=SC2046
  redis-benchmark -p "$(port_of "$1")" -n "$(requests "$2")" -c "$C" -P "$2" -r 100000 --csv -q \
    $(command_of "$1") 2>/dev/null | tail -n +2 | cut -d, -f2 | tr -d '"'
}
median() { sort -g | awk '{ l[NR] = $0 } END { print l[int((NR + 1) / 2)] }'; }

{
printf '\n%-4s | %-40s %12s %12s\n' P row "calls/s" "decisions/s"
printf '%s\n' "--------------------------------------------------------------------------"
} | tee "$OUT/table.txt"
rows=(throttle script-tw script-redis)
for P in 1 16; do
  for row in "${rows[@]}"; do : > "$OUT/$row.P$P.csv"; done
  for round in $(seq 1 "$ROUNDS"); do
    for i in 0 1 2; do
      row="${rows[$(( (i + round) % 3 ))]}"
      one "$row" "$P" >> "$OUT/$row.P$P.csv"
    done
  done
  best=0
  for row in "${rows[@]}"; do
    calls="$(median < "$OUT/$row.P$P.csv")"
    decisions="$(awk -v c="$calls" -v k="$(calls_per_decision "$row")" 'BEGIN { printf "%.0f", c / k }')"
    case $row in
      throttle) label="TW.THROTTLE, 2 tiers (tidewire)"; throttle="$decisions";;
      script-tw) label="sliding window EVALSHA x2 (tidewire)";;
      script-redis) label="sliding window EVALSHA x2 (redis)";;
    esac
    [ "$row" = throttle ] || [ "$decisions" -le "$best" ] || best="$decisions"
    printf '%-4s | %-40s %12.0f %12s\n' "$P" "$label" "$calls" "$decisions" | tee -a "$OUT/table.txt"
  done
  awk -v a="$throttle" -v b="$best" -v p="$P" \
    'BEGIN { printf "%-4s | TW.THROTTLE / best script: %.2fx (target >= 3.0)\n", p, (b > 0 ? a / b : 0) }' |
    tee -a "$OUT/table.txt"
done
echo
echo "calls/s of every round (in order):"
for P in 1 16; do
  for row in "${rows[@]}"; do
    printf '%-4s %-14s %s\n' "$P" "$row" "$(cut -d. -f1 "$OUT/$row.P$P.csv" | paste -sd/ -)"
  done
done
echo
echo "clients=$C requests=$N (pipelined: $(requests 16)) rounds=$ROUNDS (median round shown)"
echo "peer: $(redis-server --version | cut -d' ' -f3); results in $OUT/"

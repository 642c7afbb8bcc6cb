#!/usr/bin/env bash
# Scripting throughput: EVALSHA of two client-library-shaped Lua scripts, driven by
# redis-benchmark against tidewire and redis-server in the same run, same machine,
# same settings (no persistence on either side). Each script is loaded with
# SCRIPT LOAD on both servers (same text, same SHA) and called with EVALSHA,
# unpipelined (-P 1) and pipelined (-P 16), from C clients (default 50). The
# scripts are in bench/lua/, their data and arguments in bench/scripting-lib.sh
# (bench/instructions.sh counts the same calls' instructions).
#
#  ratelimit     @upstash/ratelimit's sliding-window limit: GET of the current and the
#                previous window's counter, the weighted check, INCRBY of the current
#                window and PEXPIRE the first time it is set; random identifiers
#                (-r 100000), a limit high enough that every call takes the full path.
#  move-active   a BullMQ-like moveToActive: HMGET of the queue's meta hash, RPOPLPUSH
#                wait -> active, SET of the job lock (PX), ZREM from the prioritized
#                set, HSET processedOn, HINCRBY ats, HGETALL of the job as the reply.
#                XADD of an "active" event to the events stream (MAXLEN ~ 10000), as
#                BullMQ does. All 50 clients work
#                one queue, as BullMQ's workers do. So that the wait list never runs
#                dry, the script then puts the job back (LPOP active, LPUSH wait, ZADD
#                prioritized): 11 commands per call, 8 of them writes.
#
# Both scripts start with a bare `#!lua` shebang. @upstash/ratelimit's own scripts
# say `#!lua flags=allow-key-locking`, an Upstash flag that redis-server rejects
# (Tidewire parses it and locks the same way with or without it), so it is left
# out on both sides: both servers run the identical text.
#
# Each round starts from the same data: FLUSHALL, SCRIPT LOAD, and for move-active a
# queue of JOBS jobs (default 1000). Each test runs ROUNDS times per server (default
# 3), the servers taking turns and swapping who goes first each round; the table shows
# the round with the median requests/s of each server and the ratio tidewire/redis,
# then every round's requests/s. Pipelined runs send three times as many requests
# (300k by default): a script call costs several commands, so even pipelined a round
# lasts seconds, and the whole run stays within a few minutes.
# Results (all rounds, CSV) in bench/out/scripting/.
# Usage: bench/scripting.sh [-n requests] [-c clients]
# Env: ROUNDS, PIPELINED_REQUESTS, JOBS, TESTS (ratelimit,move-active).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
N=100000
C=50
while getopts "n:c:" opt; do case $opt in n) N=$OPTARG;; c) C=$OPTARG;; *) exit 2;; esac; done
ROUNDS="${ROUNDS:-3}"
TESTS="${TESTS:-ratelimit,move-active}"
OUT=bench/out/scripting
mkdir -p "$OUT"

prepare_release_bench
# shellcheck source=bench/scripting-lib.sh
. bench/scripting-lib.sh

start_servers

requests() { # pipeline
  if [ "$1" = 1 ]; then echo "$N"; else echo "${PIPELINED_REQUESTS:-$((N * 3))}"; fi
}
# One CSV line: "test","rps","avg","min","p50","p95","p99","max"
one() { # port pipeline test
  scripting_prepare "$1" "$3"
  local sha; sha="$(scripting_load "$1" "$3")"
  # shellcheck disable=SC2046
  redis-benchmark -p "$1" -n "$(requests "$2")" -c "$C" -P "$2" -r 100000 --csv -q \
    EVALSHA "$sha" $(scripting_args "$3") 2>/dev/null | tail -n +2 | sed "s/^\"[^\"]*\"/\"$3\"/"
}

# Both servers must load the same SHA and answer one call alike, without an error.
for t in ${TESTS//,/ }; do
  for p in "$tw_port" "$rs_port"; do scripting_prepare "$p" "$t"; done
  a="$(scripting_load "$tw_port" "$t")"; b="$(scripting_load "$rs_port" "$t")"
  [ "$a" = "$b" ] || { echo "$t: SHA differs: tidewire $a, redis $b" >&2; exit 1; }
  # shellcheck disable=SC2046
  ra="$(redis-cli -p "$tw_port" EVALSHA "$a" $(scripting_args "$t" | sed 's/__rand_int__/000000000042/g') 2>&1)"
  # shellcheck disable=SC2046
  rb="$(redis-cli -p "$rs_port" EVALSHA "$b" $(scripting_args "$t" | sed 's/__rand_int__/000000000042/g') 2>&1)"
  # (sorted: HGETALL's order is the hash's own, and Redis keeps a job hash whose data
  # is over 64 bytes as a hash table, in no fixed order)
  [ "$(sort <<< "$ra")" = "$(sort <<< "$rb")" ] || { printf '%s: replies differ\ntidewire: %s\nredis: %s\n' "$t" "$ra" "$rb" >&2; exit 1; }
  case "$ra" in *ERR*|"") echo "$t: $ra" >&2; exit 1;; esac
done

field() { echo "$1" | tr -d '"' | cut -d, -f"$2"; }
# The CSV line of the median round by requests/s, from lines on stdin.
median() { tr -d '"' | awk 'NF' | sort -t, -k2 -g | awk '{ l[NR] = $0 } END { print l[int((NR + 1) / 2)] }'; }
rounds() { tr -d '"' | cut -d, -f2 | cut -d. -f1 | paste -sd/ -; }

{
printf '\n%-12s %4s | %12s %7s %7s | %12s %7s %7s | %6s\n' test P "tidewire rps" p50 p99 "redis rps" p50 p99 ratio
printf '%s\n' "-------------------------------------------------------------------------------------------"
} | tee "$OUT/table.txt"
: > "$OUT/rounds.txt"
for P in 1 16; do
  for t in ${TESTS//,/ }; do
    tw_csv="$OUT/tw.$t.P$P.csv"; rs_csv="$OUT/rs.$t.P$P.csv"
    : > "$tw_csv"; : > "$rs_csv"
    for round in $(seq 1 "$ROUNDS"); do
      if [ $((round % 2)) = 1 ]; then
        one "$tw_port" "$P" "$t" >> "$tw_csv"; one "$rs_port" "$P" "$t" >> "$rs_csv"
      else
        one "$rs_port" "$P" "$t" >> "$rs_csv"; one "$tw_port" "$P" "$t" >> "$tw_csv"
      fi
    done
    tw="$(median < "$tw_csv")"; rs="$(median < "$rs_csv")"
    [ -n "$tw" ] && [ -n "$rs" ] || { echo "$t: no result"; continue; }
    ratio="$(awk -v a="$(field "$tw" 2)" -v b="$(field "$rs" 2)" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
    printf '%-12s %4s | %12s %7s %7s | %12s %7s %7s | %6s\n' "$t" "$P" \
      "$(field "$tw" 2)" "$(field "$tw" 5)" "$(field "$tw" 7)" \
      "$(field "$rs" 2)" "$(field "$rs" 5)" "$(field "$rs" 7)" "$ratio" | tee -a "$OUT/table.txt"
    printf '%-12s %4s   tidewire %s   redis %s\n' "$t" "$P" "$(rounds < "$tw_csv")" "$(rounds < "$rs_csv")" >> "$OUT/rounds.txt"
  done
done
echo
echo "requests/s of every round (in order):"
cat "$OUT/rounds.txt"
echo
echo "clients=$C requests=$N (pipelined: $(requests 16)) rounds=$ROUNDS (median round shown); latencies in ms; ratio = tidewire rps / redis rps (target >= 1.0)"
echo "peer: $(redis-server --version | cut -d' ' -f1-3); results in $OUT/"

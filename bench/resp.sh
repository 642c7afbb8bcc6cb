#!/usr/bin/env bash
# RESP throughput: redis-benchmark against tidewire and redis-server in the same run,
# same machine, same settings (no persistence on either side), alternating so that
# neither gets a warmer machine. Prints requests/s, p50 and p99 per test and the
# ratio tidewire/redis. Each test runs ROUNDS times per server (default 5), the two
# servers taking turns and swapping who goes first each round; the table shows the
# round with the median requests/s of each server, so one noisy moment on a shared
# machine does not decide a row. Pipelined runs send ten times as many requests
# (2M by default): at over a million requests/s, 200k would last a fifth of a second,
# too short to tell a real difference from a scheduling hiccup. Five rounds, not
# three (2026-11-23): with three, single rows still moved ±10 % between runs of one
# binary (a median of three follows one slow round too easily); the run takes ~13 min.
# Custom rows (not redis-benchmark -t tests): zrange (ZRANGE 0 9 of a 100-member zset),
# xadd (XADD <stream> * field value, the stream deleted before each round) and xrange
# (XRANGE - + COUNT 10 of a 100-entry stream).
# Usage: bench/resp.sh [-n requests] [-c clients]
# Env: TESTS (comma list of redis-benchmark -t names and the custom rows above, e.g.
# TESTS=xadd,xrange runs only those), ROUNDS, PIPELINED_REQUESTS.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
N=200000
C=50
while getopts "n:c:" opt; do case $opt in n) N=$OPTARG;; c) C=$OPTARG;; *) exit 2;; esac; done
TESTS="${TESTS:-ping_mbulk,set,get,incr,mset,lpush,rpop,sadd,hset,zadd,lrange_100,zrange,xadd,xrange}"
ROUNDS="${ROUNDS:-5}"

prepare_release_bench
start_servers

# One CSV line per test: "test","rps","avg","min","p50","p95","p99","max"
requests() { # pipeline
  if [ "$1" = 1 ]; then echo "$N"; else echo "${PIPELINED_REQUESTS:-$((N * 10))}"; fi
}
bench() { # port pipeline test
  redis-benchmark -p "$1" -n "$(requests "$2")" -c "$C" -P "$2" -t "$3" --csv -q 2>/dev/null | tail -n 1
}
zrange() { # port pipeline
  redis-cli -p "$1" del tw:bench:z >/dev/null
  for i in $(seq 1 100); do echo "ZADD tw:bench:z $i m$i"; done | redis-cli -p "$1" >/dev/null
  redis-benchmark -p "$1" -n "$(requests "$2")" -c "$C" -P "$2" --csv -q zrange tw:bench:z 0 9 2>/dev/null | tail -n +2 | sed 's/^"[^"]*"/"ZRANGE 0 9"/'
}

field() { echo "$1" | tr -d '"' | cut -d, -f"$2"; }

# The CSV line of the median round by requests/s, from lines on stdin.
median() { tr -d '"' | awk 'NF' | sort -t, -k2 -g | awk '{ l[NR] = $0 } END { print l[int((NR + 1) / 2)] }'; }

xadd() { # port pipeline
  redis-cli -p "$1" del tw:bench:s >/dev/null
  redis-benchmark -p "$1" -n "$(requests "$2")" -c "$C" -P "$2" --csv -q xadd tw:bench:s '*' field value 2>/dev/null | tail -n +2 | sed 's/^"[^"]*"/"XADD"/'
}
xrange() { # port pipeline
  redis-cli -p "$1" del tw:bench:xs >/dev/null
  for i in $(seq 1 100); do echo "XADD tw:bench:xs * f$i v$i"; done | redis-cli -p "$1" >/dev/null
  redis-benchmark -p "$1" -n "$(requests "$2")" -c "$C" -P "$2" --csv -q xrange tw:bench:xs - + COUNT 10 2>/dev/null | tail -n +2 | sed 's/^"[^"]*"/"XRANGE_10"/'
}

one() { # port pipeline test
  case "$3" in
    zrange|xadd|xrange) "$3" "$1" "$2" ;;
    *) bench "$1" "$2" "$3" ;;
  esac
}

printf '\n%-12s %4s | %12s %7s %7s | %12s %7s %7s | %6s\n' test P "tidewire rps" p50 p99 "redis rps" p50 p99 ratio
printf '%s\n' "-------------------------------------------------------------------------------------------"
for P in 1 16; do
  for t in ${TESTS//,/ }; do
    : > "$work/tw.csv"; : > "$work/rs.csv"
    for round in $(seq 1 "$ROUNDS"); do
      if [ $((round % 2)) = 1 ]; then
        one "$tw_port" "$P" "$t" >> "$work/tw.csv"; one "$rs_port" "$P" "$t" >> "$work/rs.csv"
      else
        one "$rs_port" "$P" "$t" >> "$work/rs.csv"; one "$tw_port" "$P" "$t" >> "$work/tw.csv"
      fi
    done
    tw="$(median < "$work/tw.csv")"; rs="$(median < "$work/rs.csv")"
    [ -n "$tw" ] && [ -n "$rs" ] || { echo "$t: no result"; continue; }
    name="$(field "$tw" 1 | cut -d' ' -f1)"
    case "$t" in zrange) name="ZRANGE_0_9" ;; xadd) name="XADD" ;; xrange) name="XRANGE_10" ;; esac
    ratio="$(awk -v a="$(field "$tw" 2)" -v b="$(field "$rs" 2)" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
    printf '%-12s %4s | %12s %7s %7s | %12s %7s %7s | %6s\n' "$name" "$P" \
      "$(field "$tw" 2)" "$(field "$tw" 5)" "$(field "$tw" 7)" \
      "$(field "$rs" 2)" "$(field "$rs" 5)" "$(field "$rs" 7)" "$ratio"
  done
done
echo
echo "clients=$C requests=$N (pipelined: $(requests 16)) rounds=$ROUNDS (median round shown); latencies in ms; ratio = tidewire rps / redis rps (target >= 1.0)"

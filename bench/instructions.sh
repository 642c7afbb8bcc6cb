#!/usr/bin/env bash
# Instructions per call: the calls of bench/scripting.sh (same scripts, data and
# arguments), each server run under `valgrind --tool=callgrind`, Tidewire and
# redis-server in turn. Instruction counts do not drift as timings do on these VMs,
# so a change's CPU cost can be read from one run; they do not show how fast the
# instructions run (cache misses, mispredictions: CACHE=1 adds callgrind's
# simulation of both).
#
# Counting starts after WARM calls (default 12,000: past move-active's 10,000-entry
# stream cap, so its XADD trims as it does in a long run) and covers CALLS calls
# (default 5,000), from 50 clients with -P 16. Tidewire's busy polling is turned off
# first: its spinning between requests depends on timing, and under valgrind it
# can add more instructions than the calls themselves.
#
# queue-add and queue-add-bulk (not in the default TESTS; they need node and npm)
# count instructions per job of BullMQ's own add paths, Queue.add and Queue.addBulk
# (50 per call) with bullmq-bench's job data (bench/queues/add-jobs.js, BullMQ
# installed from bench/queues/package.json): QUEUE_JOBS jobs (default 5,000) after 2,000
# uncounted ones. Only the server is counted.
# Usage: bench/instructions.sh
# Env: TESTS (ratelimit,move-active; also queue-add,queue-add-bulk), CALLS, WARM,
# QUEUE_JOBS, CACHE=1.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
TESTS="${TESTS:-ratelimit,move-active}"
CALLS="${CALLS:-5000}"
WARM="${WARM:-12000}"
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
prepare_release_bench
BULLMQ_JOBS="${QUEUE_JOBS:-5000}"
if [[ ",$TESTS," == *,queue-add* ]]; then
  command -v node >/dev/null && command -v npm >/dev/null || { echo "node and npm are needed for the queue tests" >&2; exit 1; }
  mkdir -p "$work/bq"
  cp bench/queues/package.json bench/queues/package-lock.json "$work/bq/"
  (cd "$work/bq" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
# shellcheck source=bench/scripting-lib.sh
. bench/scripting-lib.sh
sim=()
[ "${CACHE:-0}" = 1 ] && sim=(--cache-sim=yes --branch-sim=yes)

count() { # server test -> "instructions [I1 misses, mispredicted indirect branches]" per call
  local out="$work/$1.$2.cg" port pid
  if [ "$1" = tidewire ]; then
    printf '[redis]\nappendonly = "no"\n' > "$work/tw.toml"
    port=$(( 20000 + RANDOM % 20000 ))
    valgrind --tool=callgrind --instr-atstart=no "${sim[@]}" --callgrind-out-file="$out" \
      "$TW" --config "$work/tw.toml" --port "$port" --http-port 0 --data-dir "$work/tw.$2" \
      --log-level warn >"$work/vg.log" 2>&1 &
  else
    port=$(( 40000 + RANDOM % 20000 ))
    valgrind --tool=callgrind --instr-atstart=no "${sim[@]}" --callgrind-out-file="$out" \
      redis-server --port "$port" --save "" --appendonly no --dir "$work" >"$work/vg.log" 2>&1 &
  fi
  pid=$!
  for _ in $(seq 1 600); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.2; done
  [ "$1" = tidewire ] && redis-cli -p "$port" CONFIG SET busy-poll-us 0 >/dev/null
  local n="$CALLS"
  if [[ "$2" == queue-add* ]]; then
    n="$BULLMQ_JOBS"
    node bench/queues/add-jobs.js "$work/bq/node_modules" "$port" "$2" 2000
    callgrind_control -i on "$pid" >/dev/null 2>&1
    node bench/queues/add-jobs.js "$work/bq/node_modules" "$port" "$2" "$n"
    callgrind_control -i off "$pid" >/dev/null 2>&1
  else
    scripting_prepare "$port" "$2"
    local sha; sha="$(scripting_load "$port" "$2")"
    # shellcheck disable=SC2046
    redis-benchmark -p "$port" -n "$WARM" -c 50 -P 16 -r 100000 -q EVALSHA "$sha" $(scripting_args "$2") >/dev/null
    callgrind_control -i on "$pid" >/dev/null 2>&1
    # shellcheck disable=SC2046
    redis-benchmark -p "$port" -n "$CALLS" -c 50 -P 16 -r 100000 -q EVALSHA "$sha" $(scripting_args "$2") >/dev/null
    callgrind_control -i off "$pid" >/dev/null 2>&1
  fi
  redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  wait "$pid" 2>/dev/null || true
  # The totals line: Ir, then (with the simulation) Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw Bc Bcm Bi Bim.
  callgrind_annotate "$out" 2>/dev/null | grep 'PROGRAM TOTALS' | tr -d ',' | sed 's/([^)]*)//g' |
    awk -v n="$n" '{ if (NF >= 13) printf "%.1fk %.0f %.0f", $1/n/1000, $4/n, $13/n; else printf "%.1fk", $1/n/1000 }'
}

if [ "${CACHE:-0}" = 1 ]; then
  printf '%-14s | %-28s | %-28s | %s\n' test "tidewire (instr, I1mr, Bim)" "redis (instr, I1mr, Bim)" "instr ratio"
else
  printf '%-14s | %-10s | %-10s | %s\n' test tidewire redis "instr ratio"
fi
for t in ${TESTS//,/ }; do
  a="$(count tidewire "$t")"; b="$(count redis "$t")"
  ratio="$(awk -v a="${a%%k*}" -v b="${b%%k*}" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')"
  if [ "${CACHE:-0}" = 1 ]; then
    printf '%-14s | %-28s | %-28s | %s\n' "$t" "$a" "$b" "$ratio"
  else
    printf '%-14s | %-10s | %-10s | %s\n' "$t" "$a" "$b" "$ratio"
  fi
done
echo "per call; $CALLS calls after $WARM, 50 clients, -P 16 (queue-add*: per job, $BULLMQ_JOBS jobs after 2000, one client); instr ratio = tidewire / redis (lower is cheaper)"
echo "peer: $(redis-server --version | cut -d' ' -f1-3)"

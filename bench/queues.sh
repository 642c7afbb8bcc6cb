#!/usr/bin/env bash
# Queue throughput: the four scenarios of BullMQ's own benchmark suite,
# taskforcesh/bullmq-bench, against tidewire and redis-server in the same run, same
# machine, same settings (no persistence on either side). Prints jobs/s per scenario
# per server and the ratio tidewire/redis.
#
#  queue-add          Queue.add, one job at a time, awaited (job data: a 10-wide,
#                     10-deep object of uuid keys)
#  queue-add-bulk     Queue.addBulk, 50 jobs per call (1-wide, 1-deep data)
#  worker-generic     one Worker, concurrency 1, no-op jobs that return a small result;
#                     the jobs are added (addBulk of 100) before the clock starts
#  worker-concurrent  the same with concurrency 100
#
# bullmq-bench is not stored here: it is cloned at run time (BULLMQ_BENCH_REPO,
# default https://github.com/taskforcesh/bullmq-bench; a local path or mirror works
# too), built with the pinned dependencies of bench/queues/package.json (+ lock), and
# its scenarios are run, one per node process, by bench/queues/driver.js, which takes
# the benchmarks from bullmq-bench's own BullMQSuite (its configurations, warm-up
# counts, timing code and BULLMQ_BENCH_REDIS_HOST/PORT) and prints the result as one
# JSON line instead of bullmq-bench's coloured log. Two departures:
#  - bullmq is 5.81.5, the last 5.x, not bullmq-bench's `latest`: bullmq-bench reads
#    `queue.client`, which bullmq 6 removed (every scenario fails its set-up on 6.x).
#    Its TypeScript is transpiled without type checks (tsc --noCheck), since its types
#    no longer match bullmq 5.81's declarations; the code runs unchanged.
#  - SCALE (default 10) multiplies each scenario's timed job count (and its timeout);
#    the warm-up counts stay bullmq-bench's. At bullmq-bench's own counts (SCALE=1:
#    1,000 / 10,000 / 1,000 / 10,000 timed jobs) the timed part lasts 0.15-0.9 s and
#    mostly measures node warming up (redis-server queue-add: ~6,400 jobs/s at 1,000
#    jobs, ~10,500 at 10,000). At SCALE=10 a round of the four lasts ~20-35 s per server.
# jobs/s = timed jobs / timed milliseconds. bullmq-bench's own printed `rate` divides
# warm-up plus timed jobs by the same time, so at SCALE=1 it reads 2x (queue-add,
# worker-generic) or 1.1x (the others) these numbers; it is kept in the CSVs as
# rate_upstream. The ratio is the same either way.
#
# Every run starts from FLUSHALL. Each scenario runs ROUNDS times per server (default
# 3), the servers taking turns and swapping who goes first each round; the table shows
# the median round of each server and the ratio tidewire/redis, then every round.
# A failed run (error or timeout) counts as 0 jobs/s and its log is kept.
# Results (all rounds, CSV; tidewire's stderr, redis-server's log) in bench/out/queues/.
# Usage: bench/queues.sh
# Env: ROUNDS, SCALE, SCENARIOS (comma list of the four above), BULLMQ_BENCH_REPO,
# BULLMQ_BENCH_REF (a commit or branch to check out; default the clone's HEAD).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
ROUNDS="${ROUNDS:-3}"
SCALE="${SCALE:-10}"
SCENARIOS="${SCENARIOS:-queue-add,queue-add-bulk,worker-generic,worker-concurrent}"
REPO="${BULLMQ_BENCH_REPO:-https://github.com/taskforcesh/bullmq-bench}"
OUT=bench/out/queues
mkdir -p "$OUT"
rm -f "$OUT"/failed.*.log

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "installing redis-server and redis-tools" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
fi
command -v node >/dev/null && command -v npm >/dev/null || { echo "node and npm are needed" >&2; exit 1; }
TW="$(shipped_binary)"
work="$(mktemp -d)"
cleanup() {
  kill "${tw_pid:-}" "${rs_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true
  cp "$work/tw.err" "$OUT/tidewire.err" 2>/dev/null || true
  cp "$work/redis.log" "$OUT/redis.log" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# bullmq-bench, built with the pinned dependencies (node_modules inside $work).
bb="$work/bullmq-bench"
git clone -q "$REPO" "$bb"
[ -z "${BULLMQ_BENCH_REF:-}" ] || git -C "$bb" checkout -q "$BULLMQ_BENCH_REF"
bb_commit="$(git -C "$bb" rev-parse --short HEAD)"
cp bench/queues/package.json bench/queues/package-lock.json "$bb/"
(cd "$bb" && npm ci --no-audit --no-fund --loglevel=error >/dev/null && ./node_modules/.bin/tsc -p . --noCheck)
bullmq_version="$(node -p "require('$bb/node_modules/bullmq/package.json').version")"

start_servers
tw_err_start="$(wc -l < "$work/tw.err")" # the start-up banner

# One CSV line: scenario,jobs_per_s,time_ms,jobs,rate_upstream,error
run=0
one() { # port scenario
  run=$((run + 1))
  local log="$work/run$run.log" line
  redis-cli -p "$1" FLUSHALL >/dev/null
  SCALE="$SCALE" FORCE_COLOR=0 BULLMQ_BENCH_REDIS_HOST=127.0.0.1 BULLMQ_BENCH_REDIS_PORT="$1" \
    timeout $((60 + 30 * SCALE)) node bench/queues/driver.js "$bb" "$2" >"$log" 2>&1 || true
  line="$(sed -n 's/^RESULT //p' "$log")"
  if [ -z "$line" ] || ! node -e 'const r = JSON.parse(process.argv[1]); process.exit(r.error || !(r.time_ms > 0) ? 1 : 0)' "$line"; then
    cp "$log" "$OUT/failed.$2.port$1.run$run.log"
    echo "$2 on port $1 failed: $(tail -n 3 "$log" | tr '\n' ' ')" >&2
    echo "$2,0,0,0,0,failed"
    return
  fi
  node -e 'const r = JSON.parse(process.argv[1]); console.log([r.scenario, r.jobs_per_s, r.time_ms, r.jobs, r.rate_upstream, ""].join(","))' "$line"
}

field() { echo "$1" | cut -d, -f"$2"; }
# The CSV line of the median round by jobs/s, from lines on stdin.
median() { awk 'NF' | sort -t, -k2 -g | awk '{ l[NR] = $0 } END { print l[int((NR + 1) / 2)] }'; }
rounds() { cut -d, -f2 | paste -sd/ -; }

{
printf '\n%-18s | %14s %8s | %14s %8s | %6s\n' scenario "tidewire job/s" ms "redis job/s" ms ratio
printf '%s\n' "-----------------------------------------------------------------------------"
} | tee "$OUT/table.txt"
: > "$OUT/rounds.txt"
for s in ${SCENARIOS//,/ }; do
  tw_csv="$OUT/tw.$s.csv"; rs_csv="$OUT/rs.$s.csv"
  : > "$tw_csv"; : > "$rs_csv"
  for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then
      one "$tw_port" "$s" >> "$tw_csv"; one "$rs_port" "$s" >> "$rs_csv"
    else
      one "$rs_port" "$s" >> "$rs_csv"; one "$tw_port" "$s" >> "$tw_csv"
    fi
  done
  tw="$(median < "$tw_csv")"; rs="$(median < "$rs_csv")"
  ratio="$(awk -v a="$(field "$tw" 2)" -v b="$(field "$rs" 2)" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
  printf '%-18s | %14s %8s | %14s %8s | %6s\n' "$s" \
    "$(field "$tw" 2)" "$(field "$tw" 3)" "$(field "$rs" 2)" "$(field "$rs" 3)" "$ratio" | tee -a "$OUT/table.txt"
  printf '%-18s   tidewire %s   redis %s\n' "$s" "$(rounds < "$tw_csv")" "$(rounds < "$rs_csv")" >> "$OUT/rounds.txt"
done
echo
echo "jobs/s of every round (in order):"
cat "$OUT/rounds.txt"
echo
echo "rounds=$ROUNDS (median round shown) scale=$SCALE (timed jobs: bullmq-bench's 1,000 / 10,000 / 1,000 / 10,000 x scale, after its 1,000 warm-up jobs); ms = timed part; ratio = tidewire jobs/s / redis jobs/s (target >= 1.0)"
echo "bullmq-bench $bb_commit, bullmq $bullmq_version, node $(node --version); peer: $(redis-server --version | cut -d' ' -f1-3); results in $OUT/"
tw_err_new=$(( $(wc -l < "$work/tw.err") - tw_err_start ))
echo "tidewire stderr: $tw_err_new line(s) after start-up (kept in $OUT/tidewire.err)"

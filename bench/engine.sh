#!/usr/bin/env bash
# What a node in front of the engine costs: SET and GET through a Tidewire node
# started with `--engine` (one standalone redis-server as the engine) against the
# same redis-server directly, in the same run, on the same machine. Driven by
# redis-benchmark, unpipelined (-P 1) and pipelined (-P 16), from C clients
# (default 50), random keys (-r 100000). Each test runs ROUNDS times per path
# (default 3), the two taking turns and swapping who goes first each round; the
# table shows the median round's requests/s and the ratio node/direct.
# There is no target: the numbers say what the extra hop costs (an unpipelined
# command is one round trip to the engine; a client's pipeline goes to the
# engine in one write per master, see crates/server/src/engine/pipeline.rs).
# Results (all rounds, CSV) in bench/out/engine/.
# Usage: bench/engine.sh [-n requests] [-c clients]
# Env: ROUNDS.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
N=100000
C=50
while getopts "n:c:" opt; do case $opt in n) N=$OPTARG;; c) C=$OPTARG;; *) exit 2;; esac; done
ROUNDS="${ROUNDS:-3}"
OUT=bench/out/engine
mkdir -p "$OUT"

prepare_release_bench

# The engine first (redis-server, no persistence), then the node in front of it.
rs_port=$(( (RANDOM % 20000) + 30000 ))
redis-server --port "$rs_port" --save "" --appendonly no --daemonize no --dir "$work" \
  --logfile "$work/redis.log" &
rs_pid=$!
for _ in $(seq 1 100); do redis-cli -p "$rs_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
printf '[redis]\nappendonly = "no"\n' > "$work/tw.toml"
"$TW" --config "$work/tw.toml" --port 0 --http-port 0 --print-ports --data-dir "$work/tw" \
  --engine "redis://127.0.0.1:$rs_port" --log-level warn >"$work/tw.out" 2>"$work/tw.err" &
tw_pid=$!
for _ in $(seq 1 100); do grep -q LISTENING "$work/tw.out" && break; sleep 0.1; done
tw_port="$(grep -o 'resp=[0-9]*' "$work/tw.out" | cut -d= -f2)"
[ -n "$tw_port" ] || { echo "tidewire did not start:" >&2; cat "$work/tw.err" >&2; exit 1; }

# One CSV line per test: "TEST","rps",...
one() { # port pipeline
  redis-benchmark -p "$1" -n "$N" -c "$C" -P "$2" -r 100000 -t set,get --csv -q 2>/dev/null | tail -n +2
}
rps() { # test <csv file> -> median requests/s
  grep "^\"$1\"" "$2" | tr -d '"' | cut -d, -f2 | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

printf '\n%-4s %4s | %12s | %12s | %6s\n' test P "node rps" "direct rps" ratio | tee "$OUT/table.txt"
printf '%s\n' "--------------------------------------------------" | tee -a "$OUT/table.txt"
for P in 1 16; do
  node_csv="$OUT/node.P$P.csv"; direct_csv="$OUT/direct.P$P.csv"
  : > "$node_csv"; : > "$direct_csv"
  for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then
      one "$tw_port" "$P" >> "$node_csv"; one "$rs_port" "$P" >> "$direct_csv"
    else
      one "$rs_port" "$P" >> "$direct_csv"; one "$tw_port" "$P" >> "$node_csv"
    fi
  done
  for t in SET GET; do
    a="$(rps "$t" "$node_csv")"; b="$(rps "$t" "$direct_csv")"
    ratio="$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
    printf '%-4s %4s | %12s | %12s | %6s\n' "$t" "$P" "$a" "$b" "$ratio" | tee -a "$OUT/table.txt"
  done
done
echo
echo "clients=$C requests=$N rounds=$ROUNDS (median round); ratio = through a node / direct"
echo "engine: $(redis-server --version | cut -d' ' -f1-3); results in $OUT/"

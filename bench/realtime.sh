#!/usr/bin/env bash
# Realtime fan-out: N subscriber WebSockets on one channel, one publisher at R msg/s
# for D seconds, against tidewire (Ably protocol) and Debian's nats-server (NATS
# protocol over its WebSocket listener) in the same run, same machine, same load
# generator (crates/loadgen). Each (peer, N) gets a freshly started server so RSS
# figures do not carry over. Reports deliveries/s, publish→deliver p50/p99 and server
# RSS per connection ((RSS with N idle subscribers − RSS before) / N), plus the
# ratios tidewire/nats and the issue-6 targets.
#
# After the two servers, for each N, the machine's fan-out floor: no server and no
# protocol, one blocking TCP send of a fan-out-sized frame per socket per message,
# from 1 and from 2 sender threads, to N loopback sockets read by a second process
# (`tidewire-loadgen --mode floor`, see docs/realtime.md). No server that writes once
# per subscriber can beat it on this machine.
#
# Env: NS="1000 10000" RATE=100 DURATION=10 FORMAT=json|msgpack CONCURRENCY=200
#      PAYLOAD=0 (extra data bytes) OUT=<file for RESULT lines>
#      PIN=1: server on CPU 0, load generator on CPU 1 (taskset), so they do not
#      compete for the same core (default: no pinning). The floor's senders are
#      pinned like the server, its receiver like the generator.
#      FLOOR=0: skip the floor runs. FLOOR_RATE=2 FLOOR_DURATION=10: its messages/s
#      and seconds (the default rate keeps one fan-out from overlapping the next).
#      ENGINE_NODES="1 2 3": after the embedded rows, the same run on the Redis
#      Cluster engine (--engine, a 3-master redis-server cluster started here)
#      with 1, 2 and 3 Tidewire nodes; subscribers spread over the nodes in
#      turn, the publisher on the first (rows engine-1n …; RSS and CPU are the
#      first node's). ENGINE_NODES="" skips them; they need redis-server and
#      redis-cli (skipped with a note when missing).
#      EMBEDDED=0: only the engine rows (no embedded Tidewire, NATS or floor runs).
# Everything listens on 127.0.0.1. Needs root only to apt-get install nats-server
# when it is missing and to raise the open-files limit.
set -euo pipefail
cd "$(dirname "$0")/.."
NS="${NS:-1000 10000}"
RATE="${RATE:-100}"
DURATION="${DURATION:-10}"
FORMAT="${FORMAT:-json}"
CONCURRENCY="${CONCURRENCY:-200}"
PAYLOAD="${PAYLOAD:-0}"
FLOOR="${FLOOR:-1}"
FLOOR_RATE="${FLOOR_RATE:-2}"
FLOOR_DURATION="${FLOOR_DURATION:-10}"
ENGINE_NODES="${ENGINE_NODES-1 2 3}"
EMBEDDED="${EMBEDDED:-1}"
if [ -n "$ENGINE_NODES" ] && ! { command -v redis-server && command -v redis-cli; } >/dev/null; then
  echo "redis-server/redis-cli missing: no engine rows" >&2
  ENGINE_NODES=""
fi
KEY="bench.key:secret"
SRV_PIN=(); GEN_PIN=()
if [ "${PIN:-0}" = 1 ] && command -v taskset >/dev/null; then SRV_PIN=(taskset -c 0); GEN_PIN=(taskset -c 1); fi

# 10,000 subscribers are 10,000 sockets in the load generator and as many in the
# server: the usual soft limit (1024) is far too low. Raise it for this shell and
# its children (needs root or a high enough hard limit).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
echo "open files limit: $(ulimit -n)" >&2

if ! command -v nats-server >/dev/null; then
  echo "installing nats-server" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
fi
cargo build --release -q -p tidewire-server -p tidewire-loadgen
LOADGEN=./target/release/tidewire-loadgen

work="$(mktemp -d)"
OUT="${OUT:-$work/results.txt}"
: > "$OUT"
srv_pid=""
stop_server() {
  if [ -n "$srv_pid" ]; then
    kill "$srv_pid" 2>/dev/null || true
    wait "$srv_pid" 2>/dev/null || true
    srv_pid=""
  fi
}
engine_pids=()
stop_engine_nodes() {
  for p in "${engine_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${engine_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  engine_pids=()
}
redis_pids=()
cleanup() {
  stop_server; stop_engine_nodes
  for p in "${redis_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$(( 20000 + RANDOM % 40000 ))
    if ! ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then echo "$p"; return; fi
  done
  echo "no free port" >&2; return 1
}

cat > "$work/tw.toml" <<EOF
[redis]
appendonly = "no"

[realtime]
max_connections = 200000
max_inbound_rate = 1000000
outbound_queue = 65536

[[realtime.keys]]
key = "$KEY"
EOF

start_tidewire() { # sets srv_pid, url
  rm -rf "$work/tw"; : > "$work/tw.out"
  "${SRV_PIN[@]}" ./target/release/tidewire --config "$work/tw.toml" --port 0 --http-port 0 --print-ports \
    --data-dir "$work/tw" --log-level warn >"$work/tw.out" 2>"$work/tw.err" &
  srv_pid=$!
  for _ in $(seq 1 100); do grep -q LISTENING "$work/tw.out" && break; sleep 0.1; done
  local http
  http="$(grep -o 'http=[0-9]*' "$work/tw.out" | cut -d= -f2)"
  [ -n "$http" ] || { echo "tidewire did not start:" >&2; cat "$work/tw.err" >&2; exit 1; }
  url="ws://127.0.0.1:$http"
}

start_nats() { # sets srv_pid, url
  local cport wport
  cport="$(free_port)"; wport="$(free_port)"
  cat > "$work/nats.conf" <<EOF
listen: "127.0.0.1:$cport"
max_connections: 200000
max_payload: 1MB
websocket {
  listen: "127.0.0.1:$wport"
  no_tls: true
}
EOF
  "${SRV_PIN[@]}" nats-server -c "$work/nats.conf" >"$work/nats.log" 2>&1 &
  srv_pid=$!
  for _ in $(seq 1 100); do
    ss -Hltn "sport = :$wport" 2>/dev/null | grep -q . && break; sleep 0.1
  done
  ss -Hltn "sport = :$wport" 2>/dev/null | grep -q . || { echo "nats-server did not start:" >&2; cat "$work/nats.log" >&2; exit 1; }
  url="ws://127.0.0.1:$wport"
}

run_one() { # peer N
  local peer=$1 n=$2 url mode
  if [ "$peer" = tidewire ]; then start_tidewire; mode=ably; else start_nats; mode=nats; fi
  echo "== $peer N=$n R=$RATE D=$DURATION ($url)" >&2
  if ! "${GEN_PIN[@]}" "$LOADGEN" --mode "$mode" --url "$url" --key "$KEY" --format "$FORMAT" \
      -n "$n" -r "$RATE" -d "$DURATION" --payload-bytes "$PAYLOAD" \
      --concurrency "$CONCURRENCY" --pid "$srv_pid" --label "$peer" >>"$OUT"; then
    echo "RESULT peer=$peer n=0 requested=$n failed=$n deliveries_per_s=0 p50_ms=na p99_ms=na rss_per_conn_kib=na" >>"$OUT"
  fi
  stop_server
}

start_redis_cluster() { # sets engine_url
  local ports=() p
  for _ in 1 2 3; do
    p="$(free_port)"; ports+=("$p")
    mkdir -p "$work/redis-$p"
    (cd "$work/redis-$p" && exec redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file nodes.conf --save '' --appendonly no >"$work/redis-$p/log" 2>&1) &
    redis_pids+=($!)
  done
  for p in "${ports[@]}"; do
    for _ in $(seq 1 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
  redis-cli --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") --cluster-yes >/dev/null
  for _ in $(seq 1 100); do
    redis-cli -p "${ports[0]}" cluster info | grep -q 'cluster_state:ok' && break; sleep 0.1
  done
  engine_url="redis://127.0.0.1:${ports[0]}"
}

start_engine_nodes() { # k: sets srv_pid (the first node), url (every node, comma-separated)
  local k=$1 i http urls=()
  for i in $(seq 1 "$k"); do
    rm -rf "$work/tw$i"; : > "$work/tw$i.out"
    "${SRV_PIN[@]}" ./target/release/tidewire --config "$work/tw.toml" --port 0 --http-port 0 --print-ports \
      --data-dir "$work/tw$i" --engine "$engine_url" --log-level warn >"$work/tw$i.out" 2>"$work/tw$i.err" &
    engine_pids+=($!)
  done
  for i in $(seq 1 "$k"); do
    for _ in $(seq 1 100); do grep -q LISTENING "$work/tw$i.out" && break; sleep 0.1; done
    http="$(grep -o 'http=[0-9]*' "$work/tw$i.out" | cut -d= -f2)"
    [ -n "$http" ] || { echo "tidewire node $i did not start:" >&2; cat "$work/tw$i.err" >&2; exit 1; }
    urls+=("ws://127.0.0.1:$http")
  done
  srv_pid="${engine_pids[0]}"
  url="$(IFS=,; echo "${urls[*]}")"
}

run_engine() { # nodes N
  local k=$1 n=$2 url label="engine-${1}n"
  redis-cli --cluster call "127.0.0.1:${engine_url##*:}" FLUSHALL >/dev/null 2>&1 || true
  start_engine_nodes "$k"
  echo "== $label N=$n R=$RATE D=$DURATION ($url)" >&2
  if ! "${GEN_PIN[@]}" "$LOADGEN" --mode ably --url "$url" --key "$KEY" --format "$FORMAT" \
      -n "$n" -r "$RATE" -d "$DURATION" --payload-bytes "$PAYLOAD" \
      --concurrency "$CONCURRENCY" --pid "$srv_pid" --label "$label" >>"$OUT"; then
    echo "RESULT peer=$label n=0 requested=$n failed=$n deliveries_per_s=0 p50_ms=na p99_ms=na rss_per_conn_kib=na" >>"$OUT"
  fi
  srv_pid=""
  stop_engine_nodes
}

floor_label() { if [ "$1" = 1 ]; then echo floor-1thread; else echo "floor-$1threads"; fi; }

run_floor() { # N senders
  local n=$1 s=$2 label recv=()
  label="$(floor_label "$s")"
  if [ "${#GEN_PIN[@]}" -gt 0 ]; then recv=(--recv-cpu 1); fi
  echo "== $label N=$n R=$FLOOR_RATE D=$FLOOR_DURATION (no server)" >&2
  if ! "${SRV_PIN[@]}" "$LOADGEN" --mode floor -n "$n" -r "$FLOOR_RATE" -d "$FLOOR_DURATION" \
      --payload-bytes "$PAYLOAD" --senders "$s" --concurrency "$CONCURRENCY" "${recv[@]}" \
      --label "$label" >>"$OUT"; then
    echo "RESULT peer=$label n=0 requested=$n failed=$n deliveries_per_s=0 p50_ms=na p99_ms=na rss_per_conn_kib=na" >>"$OUT"
  fi
}

if [ "$EMBEDDED" = 0 ]; then FLOOR=0; fi
for n in $NS; do
  [ "$EMBEDDED" = 0 ] && continue
  run_one tidewire "$n"
  run_one nats "$n"
  if [ "$FLOOR" != 0 ]; then
    run_floor "$n" 1
    run_floor "$n" 2
  fi
done
if [ -n "$ENGINE_NODES" ]; then
  start_redis_cluster
  for n in $NS; do
    for k in $ENGINE_NODES; do run_engine "$k" "$n"; done
  done
fi

get() { # field peer n
  grep "^RESULT peer=$2 .*requested=$3 " "$OUT" | tail -1 | tr ' ' '\n' | grep "^$1=" | cut -d= -f2
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else printf "na" }'; }

echo
echo "Realtime fan-out, one channel, R=$RATE msg/s for ${DURATION}s, format=$FORMAT, $(nproc) cores, $(date -u +%Y-%m-%d)"
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", 100 * a / b; else printf "na" }'; }
row='%-9s %6s %6s | %10s %6s %9s %9s %9s | %8s %8s | %7s %7s\n'
printf "$row" peer N ready deliv/s deliv% p50_ms p99_ms max_ms KiB/conn "load" srv_cpu gen_cpu
printf '%s\n' "-----------------------------------------------------------------------------------------------------------"
for n in $NS; do
  for peer in tidewire nats; do
    printf "$row" "$peer" "$n" "$(get n $peer $n)" \
      "$(get deliveries_per_s $peer $n)" "$(pct "$(get delivered $peer $n)" "$(get expected $peer $n)")" \
      "$(get p50_ms $peer $n)" "$(get p99_ms $peer $n)" "$(get max_ms $peer $n)" \
      "$(get rss_per_conn_kib $peer $n)" "$(get rss_per_conn_load_kib $peer $n)" \
      "$(get server_cpu_s $peer $n)" "$(get loadgen_cpu_s $peer $n)"
  done
  printf "$row" "tw/nats" "$n" "" \
    "$(ratio "$(get deliveries_per_s tidewire $n)" "$(get deliveries_per_s nats $n)")" "" \
    "$(ratio "$(get p50_ms tidewire $n)" "$(get p50_ms nats $n)")" \
    "$(ratio "$(get p99_ms tidewire $n)" "$(get p99_ms nats $n)")" "" \
    "$(ratio "$(get rss_per_conn_kib tidewire $n)" "$(get rss_per_conn_kib nats $n)")" "" \
    "$(ratio "$(get server_cpu_s tidewire $n)" "$(get server_cpu_s nats $n)")" ""
  for k in $ENGINE_NODES; do
    peer="engine-${k}n"
    printf "$row" "$peer" "$n" "$(get n $peer $n)" \
      "$(get deliveries_per_s $peer $n)" "$(pct "$(get delivered $peer $n)" "$(get expected $peer $n)")" \
      "$(get p50_ms $peer $n)" "$(get p99_ms $peer $n)" "$(get max_ms $peer $n)" \
      "$(get rss_per_conn_kib $peer $n)" "$(get rss_per_conn_load_kib $peer $n)" \
      "$(get server_cpu_s $peer $n)" "$(get loadgen_cpu_s $peer $n)"
  done
  if [ "$FLOOR" != 0 ]; then
    for s in 1 2; do
      peer="$(floor_label "$s")"
      printf "$row" "floor-${s}t" "$n" "$(get n $peer $n)" \
        "$(get deliveries_per_s $peer $n)" "$(pct "$(get delivered $peer $n)" "$(get expected $peer $n)")" \
        "$(get p50_ms $peer $n)" "$(get p99_ms $peer $n)" "$(get max_ms $peer $n)" \
        na na "$(get server_cpu_s $peer $n)" "$(get loadgen_cpu_s $peer $n)"
    done
  fi
done
echo "deliv% = deliveries received / (messages sent x subscribers), within ${DURATION}s + 5s drain."
echo "KiB/conn = (server RSS with N idle subscribers - RSS before) / N; load = same with peak RSS under load."
echo "srv_cpu / gen_cpu = CPU seconds used by the server / the load generator during publish + drain."
if [ -n "$ENGINE_NODES" ]; then
  echo "engine-Kn = K Tidewire nodes on a 3-master Redis Cluster engine (--engine), subscribers spread over"
  echo "  the nodes, publisher on the first; KiB/conn and srv_cpu are the first node's (the cluster's own"
  echo "  processes share the same cores)."
fi
if [ "$FLOOR" != 0 ]; then
  echo "floor-1t / floor-2t = machine floor, no server: one blocking send of a $((207 + PAYLOAD))-byte frame per socket"
  echo "  per message from 1 / 2 threads to N loopback TCP sockets read by a 1-thread tokio process,"
  echo "  R=$FLOOR_RATE msg/s for ${FLOOR_DURATION}s (one fan-out at a time; deliv/s is not comparable with the rows above);"
  echo "  srv_cpu = the senders, gen_cpu = the receiver."
fi
echo
echo "Targets (issue 6, at the largest N):"
big="$(echo $NS | tr ' ' '\n' | sort -n | tail -1)"
tw_d="$(get deliveries_per_s tidewire $big)"; na_d="$(get deliveries_per_s nats $big)"
tw_p99="$(get p99_ms tidewire $big)"; tw_rss="$(get rss_per_conn_kib tidewire $big)"
verdict() { if [ "$1" = 1 ]; then echo MET; else echo MISSED; fi; }
# At a fixed publish rate both peers are capped by the offered load (R x N): within
# 1 % of NATS counts as keeping up.
echo "  deliveries/s >= nats:   $tw_d vs $na_d  $(verdict "$(awk -v a="$tw_d" -v b="$na_d" 'BEGIN{print (a+0 >= 0.99 * b && a+0 > 0)}')")"
echo "  p99 < 50 ms:            $tw_p99  $(verdict "$(awk -v a="$tw_p99" 'BEGIN{print (a ~ /^[0-9.]+$/ && a+0 < 50)}')")"
echo "  RSS/idle conn <= 16 KiB: $tw_rss  $(verdict "$(awk -v a="$tw_rss" 'BEGIN{print (a ~ /^[0-9.]+$/ && a+0 <= 16)}')")"
if [ "$FLOOR" != 0 ]; then
  f1="$(get p99_ms floor-1thread $big)"; f2="$(get p99_ms floor-2threads $big)"
  reach="$(awk -v a="$f1" -v b="$f2" 'BEGIN {
    n = 0; m = 1e18
    if (a ~ /^[0-9.]+$/) { n++; if (a + 0 < m) m = a + 0 }
    if (b ~ /^[0-9.]+$/) { n++; if (b + 0 < m) m = b + 0 }
    if (n == 0) print "unknown"; else if (m < 50) print "is reachable here"; else print "is NOT reachable here, even with no server"
  }')"
  echo "  machine floor p99 (plain send loop, 2 threads): $f2 ms (1 thread: $f1 ms) -> p99 < 50 ms $reach"
fi
echo
echo "Raw results:"
cat "$OUT"

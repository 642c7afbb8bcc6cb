#!/usr/bin/env bash
# Upstash REST vs RESP on the same Tidewire process.
#
# Builds the release binary, starts it on free ports, then measures with keep-alive
# HTTP load (wrk, Lua scripts posting commands) GET, SET and a pipeline of 10 SETs
# against /redis, and with redis-benchmark GET and SET (and -P 10) against RESP.
# Prints requests/s (and commands/s for pipelines) and the REST/RESP ratio; the
# target is REST >= 0.4 x RESP without pipelining.
#
#   bench/rest.sh                  # defaults: 50 connections, 10 s per run
#   CONNS=100 DURATION=20 bench/rest.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
CONNS="${CONNS:-50}"
DURATION="${DURATION:-10}"
THREADS="${THREADS:-2}"
REQUESTS="${REQUESTS:-200000}"
TOKEN="bench-token"

need() {
  command -v "$1" >/dev/null 2>&1 && return
  echo "installing $2 (for $1)…" >&2
  if [[ $(id -u) -eq 0 ]]; then
    apt-get update -qq && apt-get install -y -qq "$2" >/dev/null
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq "$2" >/dev/null
  fi
}
need wrk wrk
need redis-benchmark redis-tools

(cd "$root" && cargo build --release -q -p tidewire-server --bin tidewire)
BIN="${CARGO_TARGET_DIR:-$root/target}/release/tidewire"

work="$(mktemp -d)"
cleanup() {
  [[ -n "${pid:-}" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

TIDEWIRE_REST_TOKEN="$TOKEN" TIDEWIRE_LOG_LEVEL=warn \
  "$BIN" --port 0 --http-port 0 --print-ports --data-dir "$work/data" >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 1 100); do
  grep -q LISTENING "$work/out" 2>/dev/null && break
  sleep 0.1
done
line="$(grep LISTENING "$work/out")" || { cat "$work/err"; exit 1; }
resp_port="$(sed -E 's/.*resp=([0-9]+).*/\1/' <<<"$line")"
http_port="$(sed -E 's/.*http=([0-9]+).*/\1/' <<<"$line")"
url="http://127.0.0.1:$http_port/redis"

lua() { # name body path
  cat >"$work/$1.lua" <<LUA
wrk.method = "POST"
wrk.path = "/redis$3"
wrk.body = '$2'
wrk.headers["Authorization"] = "Bearer $TOKEN"
wrk.headers["Content-Type"] = "application/json"
LUA
}
lua set '["SET","key:__rand_int__","xxx"]' ""
lua get '["GET","key:__rand_int__"]' ""
p10=$(printf '["SET","key:__rand_int__","xxx"],%.0s' $(seq 1 10))
lua pipeline "[${p10%,}]" "/pipeline"

# Sanity: the token works and the key exists for GET.
curl -fsS -H "Authorization: Bearer $TOKEN" -d '["SET","key:__rand_int__","xxx"]' "$url" >/dev/null

rest() { # script → requests/s (non-2xx answers would make the figure meaningless)
  wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" -s "$work/$1.lua" "http://127.0.0.1:$http_port" \
    >"$work/wrk-$1.txt"
  if grep -q "Non-2xx" "$work/wrk-$1.txt"; then
    echo "warning: $1: $(grep Non-2xx "$work/wrk-$1.txt")" >&2
  fi
  awk '/Requests\/sec/ {print $2}' "$work/wrk-$1.txt"
}
resp() { # redis-benchmark args → requests/s of the single test
  redis-benchmark -p "$resp_port" -c "$CONNS" -n "$REQUESTS" -q "$@" \
    | tr '\r' '\n' | awk '/requests per second/ {print $2}' | tail -1
}

echo "Tidewire $("$BIN" --version | awk '{print $2}')  RESP :$resp_port  HTTP :$http_port  conns=$CONNS  wrk ${DURATION}s  redis-benchmark n=$REQUESTS"
rest_set=$(rest set);       rest_get=$(rest get);       rest_p10=$(rest pipeline)
resp_set=$(resp -t set);    resp_get=$(resp -t get);    resp_p10=$(resp -t set -P 10)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
cmds_p10=$(awk -v r="$rest_p10" 'BEGIN { printf "%.0f", r * 10 }')
printf '\n%-22s %14s %14s %8s\n' "" "REST req/s" "RESP req/s" "ratio"
printf '%-22s %14.0f %14.0f %8s\n' "SET" "$rest_set" "$resp_set" "$(ratio "$rest_set" "$resp_set")"
printf '%-22s %14.0f %14.0f %8s\n' "GET" "$rest_get" "$resp_get" "$(ratio "$rest_get" "$resp_get")"
printf '%-22s %14.0f %14.0f %8s\n' "SET pipeline of 10*" "$cmds_p10" "$resp_p10" "$(ratio "$cmds_p10" "$resp_p10")"
echo "* commands/s: REST /pipeline with 10 SETs per request vs redis-benchmark -P 10"
echo "  load generators (wrk, redis-benchmark) share the machine with the server: on a"
echo "  small box they, not the server, may set the ceiling; compare ratios, not absolutes."
get_ratio=$(ratio "$rest_get" "$resp_get")
set_ratio=$(ratio "$rest_set" "$resp_set")
if awk -v g="$get_ratio" -v s="$set_ratio" 'BEGIN { exit !(g >= 0.4 && s >= 0.4) }'; then
  echo "target met: REST >= 0.4 x RESP without pipelining"
else
  echo "target missed: REST < 0.4 x RESP without pipelining"
fi

#!/usr/bin/env bash
# redis-cli (Debian's redis-tools) against a fresh tidewire: the commands people
# type by hand, including inline commands sent as plain text.
set -euo pipefail
bin="${TIDEWIRE_BIN:-$(dirname "$0")/../../target/debug/tidewire}"
data="$(mktemp -d)"
out="$(mktemp)"
"$bin" --port 0 --http-port 0 --print-ports --data-dir "$data" >"$out" 2>/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$data" "$out"' EXIT
for _ in $(seq 1 100); do grep -q LISTENING "$out" && break; sleep 0.1; done
port="$(grep -o 'resp=[0-9]*' "$out" | cut -d= -f2)"
[ -n "$port" ] || { echo "tidewire did not start"; exit 1; }

pass=0; fail=0
check() {
  local expected="$1"; shift
  local got
  got="$(redis-cli -p "$port" "$@" 2>&1)"
  if [ "$got" = "$expected" ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: redis-cli $* => '$got' (expected '$expected')"; fi
}
check PONG ping
check OK set greeting hello
check hello get greeting
check 1 incr counter
check "ERR unknown command 'nosuch', with args beginning with: 'x' " nosuch x
check "ERR wrong number of arguments for 'get' command" get
check "" get missing   # redis-cli prints nil as an empty line when not on a TTY
check 1 exists greeting
check 1 del greeting
check -2 ttl greeting
# Inline commands, as telnet would send them, over a raw socket.
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'SET inline "a b"\r\nGET inline\r\nQUIT\r\n' >&3
inline="$(timeout 5 cat <&3 | tr -d '\r' | tr '\n' '|')"
exec 3<&-
[ "$inline" = "+OK|\$3|a b|+OK|" ] && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL: inline => $inline"; }
# The append-only log a clean shutdown leaves is one Redis's own checker accepts:
# manifest (file numbers from 1) and the incremental file (under `appendfsync
# always` written into zeroed space, which the shutdown cuts off).
check OK config set appendfsync always
for i in $(seq 1 50); do echo "SET aof:$i $i"; done | redis-cli -p "$port" >/dev/null
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
manifest="$data/appendonlydir/appendonly.aof.manifest"
aof_check="$(redis-check-aof "$manifest" 2>&1)" || true
case "$aof_check" in
  *"All AOF files and manifest are valid"*) pass=$((pass + 1)) ;;
  *) fail=$((fail + 1)); echo "FAIL: redis-check-aof $manifest =>"; echo "$aof_check" | tail -n 5 ;;
esac
echo "redis-cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

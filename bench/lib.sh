# Sourced by the bench scripts that compare Tidewire with redis-server.
# shipped_binary: builds the binary the project ships (packaging/pgo-build.sh, the
# release build optimised with a training run's profile) and prints its path;
# BUILD=plain builds and prints plain `cargo build --release` instead.
shipped_binary() {
  if [ "${BUILD:-pgo}" = plain ]; then
    cargo build --release -q -p tidewire-server
    echo "${CARGO_TARGET_DIR:-target}/release/tidewire"
  else
    packaging/pgo-build.sh | tail -n 1
  fi
}

# prepare_release_bench: installs redis-server and redis-benchmark if missing, builds
# the shipped binary (above) and sets TW to it, makes the run's scratch dir ($work)
# and stops both servers and removes it on exit.
prepare_release_bench() {
  if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    echo "installing redis-server and redis-tools" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
  fi
  TW="$(shipped_binary)"
  work="$(mktemp -d)"
  trap 'kill "${tw_pid:-}" "${rs_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
}

# start_servers: Tidewire ($TW, embedded defaults without the append-only log) and
# redis-server (no persistence) side by side, their files under $work. Sets
# tw_pid, tw_port, rs_pid and rs_port; returns once both answer.
start_servers() {
  printf '[redis]\nappendonly = "no"\n' > "$work/tw.toml"
  "$TW" --config "$work/tw.toml" --port 0 --http-port 0 --print-ports --data-dir "$work/tw" \
    --log-level warn >"$work/tw.out" 2>"$work/tw.err" &
  tw_pid=$!
  for _ in $(seq 1 100); do grep -q LISTENING "$work/tw.out" && break; sleep 0.1; done
  tw_port="$(grep -o 'resp=[0-9]*' "$work/tw.out" | cut -d= -f2)"
  rs_port=$(( (tw_port % 20000) + 30000 ))
  redis-server --port "$rs_port" --save "" --appendonly no --daemonize no --dir "$work" \
    --logfile "$work/redis.log" &
  rs_pid=$!
  for _ in $(seq 1 100); do redis-cli -p "$rs_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
}

# Sourced by the bench scripts that compare Tidewire with redis-server.
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

# Sourced by the scripts that run a library's own test suite against Tidewire
# (compat/bull, compat/bullmq). Needs OUT_DIR.

# ensure_yarn: sets YARN to a yarn 1 (both checkouts pin yarn@1 and ship a
# yarn.lock): $YARN if set, else `yarn` on PATH, else one npm-installed into OUT_DIR.
ensure_yarn() {
  [[ -n "${YARN:-}" ]] && return 0
  if command -v yarn >/dev/null 2>&1; then
    YARN="$(command -v yarn)"
  else
    echo "installing yarn@1 from the npm registry into $OUT_DIR/yarn ..." >&2
    npm install --prefix "$OUT_DIR/yarn" --no-audit --no-fund --loglevel=error yarn@1 >&2
    YARN="$OUT_DIR/yarn/node_modules/.bin/yarn"
  fi
}

# wait_ping host port [pid]: 0 once a server on host:port answers PING (within
# ~10 s), 1 if it does not or process pid exits first.
wait_ping() {
  for _ in $(seq 1 100); do
    if python3 - "$1" "$2" <<'PY' 2>/dev/null
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)
s.sendall(b"PING\r\n")
sys.exit(0 if s.recv(64).startswith(b"+PONG") else 1)
PY
    then return 0; fi
    [[ -z "${3:-}" ]] || kill -0 "$3" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

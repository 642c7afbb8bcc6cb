#!/usr/bin/env bash
# Runs BullMQ's OWN test suite (upstream's `yarn test`, i.e. `vitest run --no-file-parallelism`
# with vitest.config.ts) UNMODIFIED against a fresh Tidewire instance -- or, for comparison,
# against a fresh redis-server or an already running server -- and summarises the result.
#
# Usage:
#   compat/bullmq/run-upstream-suite.sh <path-to-bullmq-checkout> [extra vitest args, e.g. test files]
#
# The suite source is NOT fetched by this script and is never committed here: check out
# the public repository yourself, e.g.
#   git clone https://github.com/taskforcesh/bullmq /tmp/bullmq
#   git -C /tmp/bullmq checkout v6.2.0          # the tag docs/bullmq.md reports
# Dependencies come from the npm registry only: yarn 1 (unless already on PATH) and the
# checkout's own `yarn install --frozen-lockfile` (into the checkout), then `yarn build`
# (upstream's CI does the same; it generates src/scripts from the Lua sources).
#
# Queue names are upstream's defaults (prefix `bull`, no hashtags: BULLMQ_TEST_PREFIX is
# left unset) and the server gets no special flags.
#
# Environment:
#   TARGET         tidewire (default) | redis-server (starts a fresh one on a free port:
#                  `--port P --save '' --appendonly no`) | HOST:PORT (an external server,
#                  which the suite will write to -- use a throw-away one)
#   TIDEWIRE_BIN   binary to test (default: target/debug/tidewire, built if missing)
#   REDIS_SERVER   redis-server executable for TARGET=redis-server (default: on PATH)
#   VITEST_CONFIG  vitest config of the checkout (default vitest.config.ts = `yarn test`;
#                  vitest.ioredis.config.ts = `yarn test:ioredis`, whose connection tests
#                  hard-code port 6379)
#   OUT_DIR        where vitest.json, vitest.log, results.tsv, summary.md go (default: a new temp dir)
#   BASELINE_DIR   OUT_DIR of an earlier run (e.g. against redis-server): also list tests
#                  that passed there but did not pass here
#   SUITE_TIMEOUT  hard limit in seconds for the whole vitest run (default 3600)
#   NETNS=1        run the server and vitest in a private network namespace (`unshare -rn`,
#                  loopback only) with the server on port 6379, so that the few tests that
#                  hard-code localhost:6379 (script_loader "when initializing a RedisClient",
#                  ioredis-client, and most of vitest.ioredis.config.ts) reach it too.
#                  TARGET=tidewire or redis-server only.
#   YARN           yarn executable (default: `yarn` on PATH, else npm-installed into OUT_DIR)
set -euo pipefail

suite="${1:?usage: $0 <path-to-bullmq-checkout> [extra vitest args]}"
shift
suite="$(cd "$suite" && pwd)"
[[ -f "$suite/package.json" ]] && grep -q '"name": "bullmq"' "$suite/package.json" \
  || { echo "error: $suite is not a checkout of taskforcesh/bullmq" >&2; exit 2; }

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=compat/lib/upstream-suite.sh
. "$root/compat/lib/upstream-suite.sh"
OUT_DIR="${OUT_DIR:-$(mktemp -d -t tidewire-bullmq-suite.XXXXXX)}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
TARGET="${TARGET:-tidewire}"
VITEST_CONFIG="${VITEST_CONFIG:-vitest.config.ts}"

# --- yarn 1 (the checkout pins yarn@1.22 and ships a yarn.lock) ---------------------
ensure_yarn

# --- suite dependencies + build (as upstream CI: install --frozen-lockfile, build) ---
if [[ ! -x "$suite/node_modules/.bin/vitest" ]]; then
  echo "yarn install (into $suite/node_modules) ..." >&2
  (cd "$suite" && "$YARN" install --ignore-engines --frozen-lockfile --non-interactive \
     --network-timeout 600000 >"$OUT_DIR/yarn-install.log" 2>&1) \
    || { tail -n 20 "$OUT_DIR/yarn-install.log" >&2; exit 1; }
fi
if [[ ! -d "$suite/src/scripts" || ! -d "$suite/dist" ]]; then
  echo "yarn build ..." >&2
  (cd "$suite" && "$YARN" build >"$OUT_DIR/yarn-build.log" 2>&1) \
    || { tail -n 20 "$OUT_DIR/yarn-build.log" >&2; exit 1; }
fi

# --- NETNS=1: re-run this script (deps are installed by now) in a network namespace --
if [[ "${NETNS:-}" == 1 && -z "${_BULLMQ_IN_NETNS:-}" ]]; then
  [[ "$TARGET" == tidewire || "$TARGET" == redis-server ]] \
    || { echo "error: NETNS=1 needs TARGET=tidewire or redis-server" >&2; exit 2; }
  export _BULLMQ_IN_NETNS=1 OUT_DIR TARGET YARN
  exec unshare -rn bash "$0" "$suite" "$@"
fi
tw_port=0
if [[ -n "${_BULLMQ_IN_NETNS:-}" ]]; then
  ip link set lo up
  tw_port=6379
fi

# --- the server under test ----------------------------------------------------------
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$OUT_DIR/data"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

host=127.0.0.1
case "$TARGET" in
  tidewire)
    if [[ -z "${TIDEWIRE_BIN:-}" ]]; then
      TIDEWIRE_BIN="$root/target/debug/tidewire"
      [[ -x "$TIDEWIRE_BIN" ]] || (cd "$root" && cargo build -q -p tidewire-server --bin tidewire)
    fi
    mkdir -p "$OUT_DIR/data"
    "$TIDEWIRE_BIN" --port "$tw_port" --http-port 0 --print-ports --data-dir "$OUT_DIR/data" \
      >"$OUT_DIR/server.out" 2>"$OUT_DIR/server.err" &
    server_pid=$!
    port=""
    for _ in $(seq 1 100); do
      port="$(sed -n 's/^LISTENING resp=\([0-9]*\).*/\1/p' "$OUT_DIR/server.out" | head -n1)"
      [[ -n "$port" ]] && break
      kill -0 "$server_pid" 2>/dev/null || { echo "tidewire exited:" >&2; cat "$OUT_DIR/server.err" >&2; exit 1; }
      sleep 0.1
    done
    [[ -n "$port" ]] || { echo "tidewire did not report its ports" >&2; exit 1; }
    server_desc="$("$TIDEWIRE_BIN" --version 2>/dev/null || echo tidewire) ($TIDEWIRE_BIN)"
    ;;
  redis-server)
    if [[ -n "${_BULLMQ_IN_NETNS:-}" ]]; then port=6379; else port="$(free_port)"; fi
    "${REDIS_SERVER:-redis-server}" --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
      >"$OUT_DIR/server.out" 2>&1 &
    server_pid=$!
    server_desc="$("${REDIS_SERVER:-redis-server}" --version)"
    ;;
  *:*)
    host="${TARGET%:*}"; port="${TARGET##*:}"
    server_desc="external server"
    ;;
  *) echo "error: TARGET must be tidewire, redis-server or HOST:PORT" >&2; exit 2 ;;
esac
wait_ping "$host" "$port" "$server_pid" || { echo "server at $host:$port does not answer PING" >&2; cat "$OUT_DIR/server."* >&2 || true; exit 1; }
export REDIS_HOST="$host" REDIS_PORT="$port"
unset BULLMQ_TEST_PREFIX
echo "server: $server_desc at $host:$port" | tee "$OUT_DIR/server.txt" >&2
echo "suite:  bullmq $(git -C "$suite" describe --tags 2>/dev/null || echo '?') $(git -C "$suite" rev-parse HEAD 2>/dev/null || echo '?'), config $VITEST_CONFIG" \
  | tee -a "$OUT_DIR/server.txt" >&2

# --- the suite: upstream's `vitest run --no-file-parallelism`, plus a JSON report ---
# `timeout` signals its whole process group, so vitest's workers and the sandboxed
# child processes go too.
set +e
(cd "$suite" && timeout --kill-after=30 "${SUITE_TIMEOUT:-3600}" node_modules/.bin/vitest run \
   --no-file-parallelism --config "$VITEST_CONFIG" \
   --reporter=verbose --reporter=json --outputFile.json="$OUT_DIR/vitest.json" "$@") \
   >"$OUT_DIR/vitest.log" 2>&1
rc=$?
set -e
[[ $rc -eq 124 || $rc -eq 137 ]] && echo "WARNING: suite hit SUITE_TIMEOUT; results are partial or missing" >&2
[[ -s "$OUT_DIR/vitest.json" ]] || { tail -n 30 "$OUT_DIR/vitest.log" >&2; echo "no vitest.json produced; see $OUT_DIR/vitest.log" >&2; exit 1; }

# --- summary: totals, per-file table, failing tests, regressions vs BASELINE_DIR ----
python3 - "$OUT_DIR" "$suite" "${BASELINE_DIR:-}" >"$OUT_DIR/summary.md" <<'PY'
import collections, json, os, re, sys

out, suite, baseline = sys.argv[1], sys.argv[2], sys.argv[3]
report = json.load(open(os.path.join(out, "vitest.json")))
ansi = re.compile(r"\x1b\[[0-9;]*m")
rows, files, total = [], collections.OrderedDict(), collections.Counter()
for tr in report.get("testResults", []):
    f = os.path.relpath(tr["name"], suite)
    d = files.setdefault(f, collections.Counter())
    if not tr.get("assertionResults") and tr.get("status") == "failed":
        # the file failed before any test ran (import error, hook failure ...)
        msg = ansi.sub("", tr.get("message") or "").strip().splitlines()
        rows.append(("failed", f, "(file)", msg[0][:300] if msg else ""))
        d["failed"] += 1; total["failed"] += 1
    for a in tr.get("assertionResults", []):
        st = {"passed": "passed", "failed": "failed"}.get(a["status"], "pending")
        name = re.sub(r"\s+", " ", " > ".join(a.get("ancestorTitles", []) + [a["title"]]))
        msg = ""
        if st == "failed":
            fm = ansi.sub("", "\n".join(a.get("failureMessages") or [])).strip().splitlines()
            msg = fm[0][:300] if fm else ""
        rows.append((st, f, name, msg))
        d[st] += 1; total[st] += 1

with open(os.path.join(out, "results.tsv"), "w") as fh:
    for st, f, name, msg in rows:
        fh.write("\t".join((st, f, name, re.sub(r"\s+", " ", msg))) + "\n")

print(f"**{total['passed']} passed, {total['failed']} failed, {total['pending']} pending/skipped** "
      f"({sum(total.values())} tests in {len(files)} files)\n")
print("| File | Passed | Failed | Pending |\n|---|---:|---:|---:|")
for f, d in sorted(files.items(), key=lambda kv: (-kv[1]["failed"], kv[0])):
    print(f"| `{f}` | {d['passed']} | {d['failed']} | {d['pending']} |")
failed = [r for r in rows if r[0] == "failed"]
if failed:
    print("\nFailing tests:\n")
    for _, f, name, msg in failed:
        print(f"- `{f}` — {name}: `{msg.replace('`', chr(39))}`")
if baseline:
    base = {}
    for line in open(os.path.join(baseline, "results.tsv")):
        st, f, name, _ = line.rstrip("\n").split("\t", 3)
        base[(f, name)] = st
    here = {(f, name): (st, msg) for st, f, name, msg in rows}
    reg = [(k, here.get(k, ("missing", ""))) for k, st in base.items()
           if st == "passed" and here.get(k, ("missing",))[0] != "passed"]
    print(f"\nPassed in baseline ({baseline}) but not here: {len(reg)}\n")
    for (f, name), (st, msg) in reg:
        print(f"- [{st}] `{f}` — {name}: `{msg.replace('`', chr(39))}`")
PY
cat "$OUT_DIR/summary.md"
echo "results in $OUT_DIR (vitest.json, vitest.log, results.tsv, summary.md)" >&2
# Exit status: 0 once a summary exists (failing tests are the expected report),
# 3 if the run hit SUITE_TIMEOUT (partial results).
if [[ $rc -eq 124 || $rc -eq 137 ]]; then exit 3; fi

#!/usr/bin/env bash
# Runs classic Bull v4's OWN test suite (upstream's `yarn test:nolint`, i.e.
# `NODE_ENV=test mocha 'test/test_*' --recursive --exit` with its .mocharc) UNMODIFIED
# against a fresh Tidewire instance -- or, for comparison, a fresh redis-server -- and
# summarises the result.
#
# Usage:
#   compat/bull/run-upstream-suite.sh <path-to-bull-checkout> [extra mocha args]
#
# The suite source is NOT fetched by this script and is never committed here: check out
# the public repository yourself, e.g.
#   git clone https://github.com/OptimalBits/bull /tmp/bull
#   git -C /tmp/bull checkout v4.15.0            # the tag docs/bullmq.md reports
# Dependencies come from the npm registry only: yarn 1 (unless on PATH) and the
# checkout's `yarn install --frozen-lockfile`; lib/scripts is generated as upstream's
# pretest does (clean:scripts, generate:raw:scripts, transform:commands; lint skipped).
#
# Bull's tests hard-code 127.0.0.1:6379. So that nothing on the host's 6379 is touched
# (and a busy 6379 does not matter), the server and mocha run in a private network
# namespace (`unshare -rn`, loopback only) in which the server listens on 6379.
# No special server flags; queue names are upstream's.
#
# Environment:
#   TARGET         tidewire (default) | redis-server (fresh, `--save '' --appendonly no`)
#                  | external (no namespace: whatever listens on the host's 127.0.0.1:6379,
#                  which the suite writes to -- use a throw-away one)
#   TIDEWIRE_BIN   binary to test (default: target/debug/tidewire, built if missing)
#   REDIS_SERVER   redis-server executable for TARGET=redis-server (default: on PATH)
#   OUT_DIR        where results.tsv, mocha.log, summary.md go (default: a new temp dir)
#   BASELINE_DIR   OUT_DIR of an earlier run (e.g. against redis-server): also list tests
#                  that passed there but did not pass here
#   SUITE_TIMEOUT  hard limit in seconds for the whole mocha run (default 1800)
#   YARN           yarn executable (default: `yarn` on PATH, else npm-installed into OUT_DIR)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=compat/lib/upstream-suite.sh
. "$root/compat/lib/upstream-suite.sh"

# --- inner part: runs inside the network namespace (or directly for TARGET=external) -
if [[ "${_BULL_SUITE_INNER:-}" == 1 ]]; then
  suite="$1"; shift
  server_pid=""
  trap '[[ -z "$server_pid" ]] || { kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; } || true' EXIT
  case "$TARGET" in
    tidewire)
      ip link set lo up
      mkdir -p "$OUT_DIR/data"
      "$TIDEWIRE_BIN" --port 6379 --http-port 0 --print-ports --data-dir "$OUT_DIR/data" \
        >"$OUT_DIR/server.out" 2>"$OUT_DIR/server.err" &
      server_pid=$! ;;
    redis-server)
      ip link set lo up
      "${REDIS_SERVER:-redis-server}" --port 6379 --bind 127.0.0.1 --save '' --appendonly no \
        >"$OUT_DIR/server.out" 2>&1 &
      server_pid=$! ;;
  esac
  wait_ping 127.0.0.1 6379 "$server_pid" \
    || { echo "server on 127.0.0.1:6379 does not answer PING" >&2; cat "$OUT_DIR"/server.* >&2 2>/dev/null; exit 1; }
  set +e
  (cd "$suite" && NODE_ENV=test BULL_SUITE_RESULTS="$OUT_DIR/results.raw.tsv" \
     timeout --kill-after=30 "${SUITE_TIMEOUT:-1800}" node_modules/.bin/mocha 'test/test_*' \
     --recursive --exit --reporter "$here/tsv-reporter.js" "$@") >"$OUT_DIR/mocha.log" 2>&1
  rc=$?
  set -e
  exit $rc
fi

# --- outer part -----------------------------------------------------------------------
suite="${1:?usage: $0 <path-to-bull-checkout> [extra mocha args]}"
shift
suite="$(cd "$suite" && pwd)"
[[ -f "$suite/package.json" ]] && grep -q '"name": "bull"' "$suite/package.json" \
  || { echo "error: $suite is not a checkout of OptimalBits/bull" >&2; exit 2; }
OUT_DIR="${OUT_DIR:-$(mktemp -d -t tidewire-bull-suite.XXXXXX)}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
TARGET="${TARGET:-tidewire}"
trap 'rm -rf "$OUT_DIR/data"' EXIT

ensure_yarn
if [[ ! -x "$suite/node_modules/.bin/mocha" ]]; then
  echo "yarn install (into $suite/node_modules) ..." >&2
  (cd "$suite" && "$YARN" install --frozen-lockfile --non-interactive --network-timeout 600000 \
     >"$OUT_DIR/yarn-install.log" 2>&1) || { tail -n 20 "$OUT_DIR/yarn-install.log" >&2; exit 1; }
fi
if [[ ! -d "$suite/lib/scripts" ]]; then
  (cd "$suite" && "$YARN" -s run clean:scripts && "$YARN" -s run generate:raw:scripts \
     && "$YARN" -s run transform:commands) >"$OUT_DIR/scripts.log" 2>&1 \
    || { tail -n 20 "$OUT_DIR/scripts.log" >&2; exit 1; }
fi

case "$TARGET" in
  tidewire)
    if [[ -z "${TIDEWIRE_BIN:-}" ]]; then
      TIDEWIRE_BIN="$root/target/debug/tidewire"
      [[ -x "$TIDEWIRE_BIN" ]] || (cd "$root" && cargo build -q -p tidewire-server --bin tidewire)
    fi
    server_desc="$("$TIDEWIRE_BIN" --version 2>/dev/null || echo tidewire) ($TIDEWIRE_BIN)" ;;
  redis-server) server_desc="$("${REDIS_SERVER:-redis-server}" --version)" ;;
  external) server_desc="external server on 127.0.0.1:6379" ;;
  *) echo "error: TARGET must be tidewire, redis-server or external" >&2; exit 2 ;;
esac
echo "server: $server_desc" | tee "$OUT_DIR/server.txt" >&2
echo "suite:  bull $(git -C "$suite" describe --tags 2>/dev/null || echo '?') $(git -C "$suite" rev-parse HEAD 2>/dev/null || echo '?')" \
  | tee -a "$OUT_DIR/server.txt" >&2
: >"$OUT_DIR/results.raw.tsv"
export _BULL_SUITE_INNER=1 TARGET OUT_DIR TIDEWIRE_BIN="${TIDEWIRE_BIN:-}" REDIS_SERVER="${REDIS_SERVER:-}"
[[ -n "$REDIS_SERVER" ]] || unset REDIS_SERVER
set +e
if [[ "$TARGET" == external ]]; then
  bash "$here/run-upstream-suite.sh" "$suite" "$@"
else
  unshare -rn bash "$here/run-upstream-suite.sh" "$suite" "$@"
fi
rc=$?
set -e
unset _BULL_SUITE_INNER
[[ $rc -eq 124 || $rc -eq 137 ]] && echo "WARNING: suite hit SUITE_TIMEOUT; results are partial" >&2
grep -q '^END$' "$OUT_DIR/mocha.log" 2>/dev/null || echo "WARNING: mocha did not reach its end (see $OUT_DIR/mocha.log)" >&2

# --- summary (a test that both passed and failed -- e.g. a failing afterEach hook or an
# error after completion -- counts as failed) -----------------------------------------
python3 - "$OUT_DIR" "${BASELINE_DIR:-}" >"$OUT_DIR/summary.md" <<'PY'
import collections, os, sys

out, baseline = sys.argv[1], sys.argv[2]
rank = {"pending": 0, "passed": 1, "failed": 2}
def load(p):
    res = collections.OrderedDict()
    for line in open(p):
        parts = line.rstrip("\n").split("\t", 3)
        if len(parts) < 4:
            continue
        st, f, name, msg = parts
        k = (f, name)
        if k not in res or rank[st] > rank[res[k][0]]:
            res[k] = (st, msg)
    return res

res = load(os.path.join(out, "results.raw.tsv"))
with open(os.path.join(out, "results.tsv"), "w") as fh:
    for (f, name), (st, msg) in res.items():
        fh.write("\t".join((st, f, name, msg)) + "\n")
total, files = collections.Counter(), collections.OrderedDict()
for (f, _), (st, _) in res.items():
    total[st] += 1
    files.setdefault(f, collections.Counter())[st] += 1
print(f"**{total['passed']} passed, {total['failed']} failed, {total['pending']} pending** "
      f"({sum(total.values())} tests in {len(files)} files)\n")
print("| File | Passed | Failed | Pending |\n|---|---:|---:|---:|")
for f, d in sorted(files.items(), key=lambda kv: (-kv[1]["failed"], kv[0])):
    print(f"| `{f}` | {d['passed']} | {d['failed']} | {d['pending']} |")
failed = [(k, v) for k, v in res.items() if v[0] == "failed"]
if failed:
    print("\nFailing tests:\n")
    for (f, name), (_, msg) in failed:
        print(f"- `{f}` — {name}: `{msg.replace('`', chr(39))}`")
if baseline:
    base = load(os.path.join(baseline, "results.tsv"))
    reg = [(k, res.get(k, ("missing", ""))) for k, (st, _) in base.items()
           if st == "passed" and res.get(k, ("missing",))[0] != "passed"]
    print(f"\nPassed in baseline ({baseline}) but not here: {len(reg)}\n")
    for (f, name), (st, msg) in reg:
        print(f"- [{st}] `{f}` — {name}: `{msg.replace('`', chr(39))}`")
PY
cat "$OUT_DIR/summary.md"
echo "results in $OUT_DIR (results.tsv, mocha.log, summary.md)" >&2
if [[ $rc -eq 124 || $rc -eq 137 ]]; then exit 3; fi

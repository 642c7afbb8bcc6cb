#!/usr/bin/env bash
# Runs the @upstash/redis package's OWN test suite (upstream's `bun test`) against a
# fresh Tidewire instance and summarises the result per file and per failure cause.
#
# Usage:
#   compat/upstash/run-upstream-suite.sh <path-to-redis-js-checkout> [extra bun test args]
#
# The suite source is NOT fetched by this script and is never committed here: check out
# the public repository yourself, e.g.
#   git clone https://github.com/upstash/redis-js /tmp/redis-js
#   git -C /tmp/redis-js checkout 777dc30585ae61e5826bb95f5a957e6dea277900   # the commit docs/upstash.md reports
# Only npm-registry packages are installed: `bun` (unless already on PATH) and the
# dependencies of packages/redis (installed into that checkout, --no-save).
#
# The suite runs FLUSHDB/FLUSHALL: it always gets its own Tidewire with a fresh data dir.
#
# Environment:
#   TIDEWIRE_BIN   binary to test (default: target/debug/tidewire, built if missing)
#   OUT_DIR        where junit.xml, bun.log, summary.md go (default: a new temp dir)
#   BUN            bun executable (default: `bun` on PATH, else npm-installed into OUT_DIR)
#   SUITE_TIMEOUT  hard limit in seconds for the whole `bun test` run (default 1500)
#   TEST_TIMEOUT   per-test timeout in ms (default 20000, as upstream's package.json)
set -euo pipefail

suite="${1:?usage: $0 <path-to-redis-js-checkout> [extra bun test args]}"
shift
suite="$(cd "$suite" && pwd)"
pkgdir="$suite/packages/redis"
[[ -d "$pkgdir/pkg" ]] || { echo "error: $pkgdir/pkg not found (is $suite a checkout of upstash/redis-js?)" >&2; exit 2; }

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
OUT_DIR="${OUT_DIR:-$(mktemp -d -t tidewire-upstream-suite.XXXXXX)}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"

if [[ -z "${TIDEWIRE_BIN:-}" ]]; then
  TIDEWIRE_BIN="$root/target/debug/tidewire"
  [[ -x "$TIDEWIRE_BIN" ]] || (cd "$root" && cargo build -q -p tidewire-server --bin tidewire)
fi

# --- bun (from the npm registry) ---------------------------------------------------
if [[ -z "${BUN:-}" ]]; then
  if command -v bun >/dev/null 2>&1; then
    BUN="$(command -v bun)"
  else
    echo "installing bun from the npm registry into $OUT_DIR/bun ..." >&2
    npm install --prefix "$OUT_DIR/bun" --no-audit --no-fund --loglevel=error bun >&2
    BUN="$OUT_DIR/bun/node_modules/.bin/bun"
  fi
fi
echo "bun $("$BUN" --version)" >&2

# --- suite dependencies (uncrypto + dev deps) ---------------------------------------
if [[ ! -d "$pkgdir/node_modules/uncrypto" ]]; then
  (cd "$pkgdir" && npm install --no-save --no-package-lock --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
fi

# --- Tidewire on ephemeral ports with a throw-away data dir -------------------------
data="$OUT_DIR/data"
mkdir -p "$data"
"$TIDEWIRE_BIN" --port 0 --http-port 0 --print-ports --data-dir "$data" >"$OUT_DIR/tidewire.out" 2>"$OUT_DIR/tidewire.err" &
tw_pid=$!
trap 'kill "$tw_pid" 2>/dev/null || true; wait "$tw_pid" 2>/dev/null || true' EXIT
http_port=""
for _ in $(seq 1 100); do
  http_port="$(sed -n 's/^LISTENING .*http=\([0-9]*\).*/\1/p' "$OUT_DIR/tidewire.out" | head -n1)"
  [[ -n "$http_port" && -s "$data/rest-token" ]] && break
  kill -0 "$tw_pid" 2>/dev/null || { echo "tidewire exited:" >&2; cat "$OUT_DIR/tidewire.err" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$http_port" ]] || { echo "tidewire did not report its ports" >&2; exit 1; }
export UPSTASH_REDIS_REST_URL="http://127.0.0.1:$http_port/redis"
UPSTASH_REDIS_REST_TOKEN="$(cat "$data/rest-token")"
export UPSTASH_REDIS_REST_TOKEN
echo "$("$TIDEWIRE_BIN" --version 2>/dev/null || echo tidewire) at $UPSTASH_REDIS_REST_URL" >&2
echo "suite commit: $(git -C "$suite" rev-parse HEAD 2>/dev/null || echo unknown)" >&2

# --- the suite: upstream's own command (`bun test pkg --timeout 20000`) without --bail,
# so every file runs; JUnit output for the per-file summary --------------------------
set +e
(cd "$pkgdir" && timeout "${SUITE_TIMEOUT:-1500}" "$BUN" test pkg --timeout "${TEST_TIMEOUT:-20000}" \
  --reporter=junit --reporter-outfile="$OUT_DIR/junit.xml" "$@") >"$OUT_DIR/bun.log" 2>&1
rc=$?
set -e
tail -n 6 "$OUT_DIR/bun.log" >&2
[[ $rc -eq 124 ]] && echo "WARNING: suite hit SUITE_TIMEOUT; results are partial" >&2
[[ -s "$OUT_DIR/junit.xml" ]] || { echo "no junit.xml produced; see $OUT_DIR/bun.log" >&2; exit 1; }

# --- summary: totals, failures grouped by cause, per-file table (Markdown) ----------
python3 - "$OUT_DIR/junit.xml" >"$OUT_DIR/summary.md" <<'PY'
import collections, re, sys, xml.etree.ElementTree as ET

def family(cmd):
    c = cmd.lower()
    if c in ("eval", "evalsha", "eval_ro", "evalsha_ro", "script", "function", "fcall", "fcall_ro"):
        return "Scripting (EVAL*, SCRIPT, FUNCTION)"
    if c.startswith("json."):
        return "RedisJSON module (JSON.*)"
    if c.startswith("search."):
        return "Upstash Search (SEARCH.*)"
    if c.startswith("x"):
        return "Streams (X*)"
    if c.startswith("geo"):
        return "Geo (GEO*)"
    if c in ("hexpire", "hpexpire", "hexpireat", "hpexpireat", "httl", "hpttl", "hexpiretime",
             "hpexpiretime", "hpersist", "hgetex", "hsetex", "hgetdel"):
        return "Hash-field TTL (HEXPIRE family, HGETEX/HSETEX/HGETDEL)"
    return "Other unknown command: " + c

def cause(msg):
    m = re.search(r"unknown subcommand '([^']+)'", msg)
    if m:
        return family("function" if "FUNCTION" in msg else m.group(1))
    m = re.search(r"unknown command '([^']+)'", msg)
    if m:
        return family(m.group(1))
    return "Behavioural difference"

root = ET.parse(sys.argv[1]).getroot()
files = collections.OrderedDict()
causes = collections.Counter()
cause_files = collections.defaultdict(set)
behavioural = []
total = collections.Counter()
for fs in root.findall("testsuite"):
    f = fs.get("file")
    d = files.setdefault(f, {"pass": 0, "fail": 0, "skip": 0, "causes": collections.Counter()})
    for tc in fs.iter("testcase"):
        failure, skipped = tc.find("failure"), tc.find("skipped")
        if skipped is not None:
            d["skip"] += 1; total["skip"] += 1; continue
        if failure is None:
            d["pass"] += 1; total["pass"] += 1; continue
        d["fail"] += 1; total["fail"] += 1
        msg = " ".join(((failure.get("message") or "") + " " + (failure.text or "")).split())
        c = cause(msg)
        d["causes"][c] += 1; causes[c] += 1; cause_files[c].add(f)
        if c == "Behavioural difference":
            behavioural.append((f, tc.get("name"), msg[:240]))

n = sum(total.values())
ran = total["pass"] + total["fail"]
print(f"**{total['pass']} passed, {total['fail']} failed, {total['skip']} skipped (by upstream) of {n} tests "
      f"in {len(files)} files: {100*total['pass']/n:.1f}% of all tests, {100*total['pass']/ran:.1f}% of tests run.** "
      f"Files with no failure: {sum(1 for d in files.values() if d['fail'] == 0)}/{len(files)}.\n")
print("| Failure cause | Failed tests | Files |\n|---|---:|---:|")
for c, k in causes.most_common():
    print(f"| {c} | {k} | {len(cause_files[c])} |")
print("\n| File | Passed | Failed | Skipped | Cause(s) |\n|---|---:|---:|---:|---|")
for f, d in sorted(files.items(), key=lambda kv: (-kv[1]["fail"], kv[0])):
    if d["fail"]:
        cs = "; ".join(f"{c} ({k})" for c, k in d["causes"].most_common())
        print(f"| `{f}` | {d['pass']} | {d['fail']} | {d['skip']} | {cs} |")
if behavioural:
    print("\nBehavioural differences:\n")
    for f, name, msg in behavioural:
        print(f"- `{f}` — {name}: `{msg.replace('`', chr(39))}`")
PY
cat "$OUT_DIR/summary.md"
# Exit status: 0 once a summary exists (the suite failing tests is the expected report),
# 3 if the run hit SUITE_TIMEOUT (partial results).
echo "results in $OUT_DIR (junit.xml, bun.log, summary.md)" >&2
if [[ $rc -eq 124 ]]; then exit 3; fi

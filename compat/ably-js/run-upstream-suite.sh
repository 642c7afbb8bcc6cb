#!/usr/bin/env bash
# Runs ably-js's OWN node test suite (upstream's `npm run test:node`, i.e. the build scripts
# then `mocha` with its .mocharc.js) UNMODIFIED against a fresh Tidewire in local-sandbox
# mode -- or against an already running sandbox -- and summarises the result.
#
# Usage:
#   ABLY_COMMON=<ably-common checkout> \
#     compat/ably-js/run-upstream-suite.sh <path-to-ably-js-checkout> [extra mocha args]
#
# Extra mocha args that name test files (anything ending in .test.js) replace the default
# file list; others (e.g. --grep 'rest/time') are added to it. Examples:
#   compat/ably-js/run-upstream-suite.sh /tmp/ably-js 'test/unit/*.test.js'   # needs no server
#   compat/ably-js/run-upstream-suite.sh /tmp/ably-js test/rest/time.test.js
# (paths are relative to the checkout; quote globs so that mocha expands them there).
#
# The suite source is NOT fetched by this script and is never committed here: check out the
# public repositories yourself, outside this repository, e.g.
#   git clone https://github.com/ably/ably-js /tmp/ably-js          # package.json 2.26.0
#   git clone https://github.com/ably/ably-common /tmp/ably-common
# ably-js's test/common/ably-common is a git submodule (test-resources/test-app-setup.json:
# the app the suite provisions; crypto and encoding fixtures). When that directory is empty
# it is filled from ABLY_COMMON: the submodule's pinned commit (`git archive`) if ABLY_COMMON
# is a git repository (bare or not) that has it, else a copy of ABLY_COMMON's files (a bare
# repository without it: its HEAD).
#
# Dependencies come from the npm registry only, installed once (when
# node_modules/.bin/mocha is missing) as upstream CI does (`npm ci`; `npm install` without
# a lock), but in a staging directory holding copies of package.json / package-lock.json
# without the root package's own lifecycle scripts (its `prepare` is the full browser +
# react build), then moved to <checkout>/node_modules: tracked files are left alone.
# Dependencies' install scripts and the `prepare` of git dependencies do run. ably-js has
# two GitHub-hosted dependencies (ably-forks/async, ably-forks/esbuild-plugin-umd-wrapper);
# without GitHub access give local git repositories for them in GIT_DEP_MIRRORS (below).
# Then, before every run, the builds `test:node` does: `npm run build:node`,
# `npm run build:push`, `npm run build:liveobjects` (a few seconds).
#
# Server: Tidewire on ephemeral ports (`--port 0 --http-port 0 --print-ports --bind
# 127.0.0.1`), a throw-away data dir and a generated config file enabling the local
# sandbox:
#     [realtime]
#     sandbox = true
# Mocha gets ABLY_LOCAL_SANDBOX_URL=http://127.0.0.1:<http port>, ABLY_TEST_TRANSPORTS=
# web_socket and ABLY_USE_TLS=false; ABLY_ENDPOINT / ABLY_PORT / ABLY_TLS_PORT default to
# the sandbox's host and port, so the few clients built before an app exists do not reach
# for Ably's cloud sandbox (each is kept if already set, like ABLY_LOG_LEVEL). With the
# sandbox, every test file's `before` hook provisions an app with `POST <sandbox>/apps`
# (body: ably-common's post_apps) and routes its clients at the endpoint/port/tls of the
# response; the root `after` hook deletes it (`DELETE <sandbox>/apps/<appId>`, Basic auth
# with keys[0].keyStr); test/rest/stats.test.js re-provisions and posts fixtures to
# `POST <sandbox>/stats`. Before the suite a preflight does the same POST /apps, GET /time
# at the returned endpoint, POST /stats and DELETE /apps once and writes what it found to
# preflight.txt: a sandbox that is missing or answers wrongly gives a warning there, not a
# hang (the tests that need an app then fail in their `before all` hooks).
#
# Excluded from the default file list (out of scope for Tidewire):
#   test/realtime/liveobjects.test.js  LiveObjects (state objects / counters / maps)
#   test/rest/liveobjects.test.js      LiveObjects REST API
#   test/rest/push.test.js             Push notifications (device registrations, push admin)
# i.e. every test/{realtime,rest,unit}/*.test.js whose name contains `liveobjects` or `push`;
# the rest of upstream's default list (test/realtime/*.test.js test/rest/*.test.js
# test/unit/*.test.js) runs. Naming files on the command line runs exactly those.
#
# Tests this machine cannot run -- Ably's echo server https://echo.ably.io and internet
# checks (no internet here), 10.255.255.1 that must be unroutable, TLS defaults and Ably's
# default port against a plain-HTTP sandbox on a free port, the comet transport -- are
# listed with their reasons in compat/ably-js/environment-exclusions.tsv and left out
# (mocha --grep <their titles> --invert) unless EXCLUDE_ENVIRONMENT=0 or a --grep is given.
# With them left out a full default run takes about 6 minutes; with them, about 40
# (their 60 s timeouts).
#
# Results in OUT_DIR: mocha.log (the raw run: one line per test from compat/ably-js/
# tsv-reporter.js, which replaces the checkout's spec+JUnit reporter, plus the suite's own
# output, e.g. client logs of failing tests), results.tsv (status <TAB> file <TAB> full
# title <TAB> first error line; failed `before all` hooks count as failed tests),
# summary.md, server.txt, preflight.txt, tidewire.toml, server.out/.err.
#
# Environment:
#   ABLY_COMMON      ably-common checkout or git repository; needed while
#                    <checkout>/test/common/ably-common is empty
#   TARGET           tidewire (default) | http(s)://HOST:PORT of an already running local
#                    sandbox (then no server is started; use a throw-away one)
#   TIDEWIRE_BIN     binary to test (default: target/debug/tidewire, built if missing)
#   TIDEWIRE_CONFIG  config file to start Tidewire with instead of the generated one
#                    (it must enable `[realtime] sandbox = true` itself)
#   TIDEWIRE_LOG_LEVEL  server log filter (default warn; server.err)
#   OUT_DIR          where results go (default: a new temp dir)
#   BASELINE_DIR     OUT_DIR of an earlier run: also list tests that passed there but did
#                    not pass here
#   SUITE_TIMEOUT    hard limit in seconds for the whole mocha run (default 3600); mocha's
#                    process group is killed when it passes (exit status 3)
#   GIT_DEP_MIRRORS  space-separated OWNER/NAME=GIT_DIR pairs: install those GitHub
#                    dependencies from local git repositories (any repository holding the
#                    locked commit, e.g. a bare mirror), e.g.
#                    'ably-forks/async=/srv/git/async.git
#                     ably-forks/esbuild-plugin-umd-wrapper=/srv/git/esbuild-plugin-umd-wrapper.git'
#   SKIP_BUILD=1     do not rebuild build/ (when it exists)
#   PREFLIGHT=0      skip the provisioning preflight
#
# Mocha runs with --exit (so that a client a failing test left open cannot keep it alive
# after the last test) and under `timeout`, in its own process group, which is killed at
# the end; Tidewire (and anything it started) is stopped and its data dir removed at exit.
set -euo pipefail

suite="${1:?usage: $0 <path-to-ably-js-checkout> [extra mocha args]}"
shift
suite="$(cd "$suite" && pwd)"
[[ -f "$suite/package.json" ]] && grep -q '"name": "ably"' "$suite/package.json" \
  && [[ -f "$suite/.mocharc.js" ]] \
  || { echo "error: $suite is not a checkout of ably/ably-js" >&2; exit 2; }

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=compat/lib/upstream-suite.sh
. "$root/compat/lib/upstream-suite.sh"
OUT_DIR="${OUT_DIR:-$(mktemp -d -t tidewire-ably-js-suite.XXXXXX)}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
TARGET="${TARGET:-tidewire}"
echo "results in $OUT_DIR" >&2

# --- cleanup: the suite's process group, the server and what it started, the data dir --
server_pid=""
suite_pid=""
descendants() {
  local p
  for p in $(pgrep -P "$1" 2>/dev/null); do
    echo "$p"
    descendants "$p"
  done
}
is_alive() {
  local s
  s="$(ps -o stat= -p "$1" 2>/dev/null)" && [[ -n "$s" && "$s" != Z* ]]
}
# stop_tree PID: SIGTERM to PID and its descendants, SIGKILL to what is left after 10 s.
stop_tree() {
  local pids p alive=""
  pids="$1 $(descendants "$1" | tr '\n' ' ')"
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null
  for _ in $(seq 1 100); do
    alive=""
    for p in $pids; do is_alive "$p" && alive+=" $p"; done
    [[ -z "$alive" ]] && break
    sleep 0.1
  done
  # shellcheck disable=SC2086
  [[ -z "$alive" ]] || kill -KILL $alive 2>/dev/null
  wait "$1" 2>/dev/null
}
# stop_suite: `timeout` passes SIGTERM on to mocha's process group (its own; SIGKILL after
# --kill-after), then whatever is left in that group is killed.
stop_suite() {
  [[ -n "$suite_pid" ]] || return 0
  kill -TERM "$suite_pid" 2>/dev/null
  wait "$suite_pid" 2>/dev/null
  kill -KILL -- "-$suite_pid" 2>/dev/null
  suite_pid=""
}
cleanup() {
  set +e
  stop_suite
  [[ -z "$server_pid" ]] || stop_tree "$server_pid"
  server_pid=""
  rm -rf "$OUT_DIR/data" "$OUT_DIR/npm-stage"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- test/common/ably-common (a git submodule) ---------------------------------------
common="$suite/test/common/ably-common"
pinned="$(git -C "$suite" ls-tree HEAD test/common/ably-common 2>/dev/null | awk '$2 == "commit" { print $3 }')"
if [[ -e "$common/.git" ]]; then
  common_desc="$(git -C "$common" rev-parse HEAD 2>/dev/null || echo '?') (initialised submodule)"
else
  common_desc="files already in test/common/ably-common (the submodule pins ${pinned:-?})"
fi
if [[ ! -f "$common/test-resources/test-app-setup.json" ]]; then
  if [[ -d "$common" && -n "$(ls -A "$common")" ]]; then
    echo "error: $common is not empty but has no test-resources/test-app-setup.json" >&2; exit 2
  fi
  [[ -n "${ABLY_COMMON:-}" && -d "${ABLY_COMMON:-}" ]] \
    || { echo "error: $common is empty: set ABLY_COMMON to an ably-common checkout" >&2; exit 2; }
  mkdir -p "$common"
  if [[ -n "$pinned" ]] && git -C "$ABLY_COMMON" cat-file -e "$pinned^{commit}" 2>/dev/null; then
    git -C "$ABLY_COMMON" archive "$pinned" | tar -x -C "$common"
    common_desc="$pinned (the submodule's pinned commit) from $ABLY_COMMON"
  elif [[ "$(git -C "$ABLY_COMMON" rev-parse --is-bare-repository 2>/dev/null)" == true ]]; then
    git -C "$ABLY_COMMON" archive HEAD | tar -x -C "$common"
    common_desc="$(git -C "$ABLY_COMMON" rev-parse HEAD) (HEAD of $ABLY_COMMON; the submodule pins ${pinned:-?})"
  else
    tar -C "$ABLY_COMMON" --exclude=.git -cf - . | tar -x -C "$common"
    common_desc="$(git -C "$ABLY_COMMON" rev-parse HEAD 2>/dev/null || echo '?') (copy of $ABLY_COMMON; the submodule pins ${pinned:-?})"
  fi
  [[ -f "$common/test-resources/test-app-setup.json" ]] \
    || { echo "error: $ABLY_COMMON has no test-resources/test-app-setup.json" >&2; exit 2; }
  echo "ably-common: $common_desc" >&2
fi

# --- dependencies (staged npm ci, see the header) -------------------------------------
if [[ ! -x "$suite/node_modules/.bin/mocha" ]]; then
  stage="$OUT_DIR/npm-stage"
  rm -rf "$stage"
  mkdir -p "$stage/git"
  cp "$suite/package.json" "$stage/"
  [[ ! -f "$suite/package-lock.json" ]] || cp "$suite/package-lock.json" "$stage/"
  mirrors=()
  read -r -a pairs <<<"${GIT_DEP_MIRRORS:-}"
  for pair in "${pairs[@]}"; do
    name="${pair%%=*}"
    src="${pair#*=}"
    [[ "$name" != "$pair" && "$name" == */* && -d "$src" ]] \
      || { echo "error: GIT_DEP_MIRRORS entry '$pair' is not OWNER/NAME=GIT_DIR" >&2; exit 2; }
    # a mirror clone has every ref of the source (also refs/remotes/*), so that the
    # locked commit is reachable over file://
    git clone -q --mirror "$src" "$stage/git/${name//\//+}.git"
    mirrors+=("$name=$stage/git/${name//\//+}.git")
  done
  node - "$stage" "${mirrors[@]}" <<'JS'
// Staged package.json / package-lock.json: no root lifecycle scripts; GitHub dependencies
// named in GIT_DEP_MIRRORS point at git+file:// URLs of the local mirrors (locked commit).
const fs = require('fs');
const [dir, ...pairs] = process.argv.slice(2);
const read = (f) => (fs.existsSync(`${dir}/${f}`) ? JSON.parse(fs.readFileSync(`${dir}/${f}`, 'utf8')) : null);
const pj = read('package.json');
const lock = read('package-lock.json');
delete pj.scripts;
const depTypes = ['dependencies', 'devDependencies', 'optionalDependencies', 'peerDependencies'];
for (const pair of pairs) {
  const i = pair.indexOf('=');
  const [repo, path] = [pair.slice(0, i), pair.slice(i + 1)];
  const esc = repo.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const resolvedRe = new RegExp(`github\\.com[:/]${esc}(\\.git)?#([0-9a-f]{40})$`);
  const specRe = new RegExp(`^(github:)?${esc}(#(.*))?$|github\\.com[:/]${esc}(\\.git)?(#(.*))?$`);
  let sha = null;
  for (const [k, p] of Object.entries((lock && lock.packages) || {})) {
    const m = k && p.resolved && p.resolved.match(resolvedRe);
    if (m) {
      sha = m[2];
      p.resolved = `git+file://${path}#${sha}`;
    }
  }
  let used = false;
  for (const obj of [pj, lock && lock.packages && lock.packages['']]) {
    for (const t of depTypes) {
      for (const [n, s] of Object.entries((obj && obj[t]) || {})) {
        const m = s.match(specRe);
        if (!m) continue;
        const ref = sha || m[3] || m[6] || '';
        obj[t][n] = `git+file://${path}${ref ? '#' + ref : ''}`;
        used = true;
      }
    }
  }
  if (!used) {
    console.error(`GIT_DEP_MIRRORS: no dependency of package.json comes from ${repo}`);
    process.exit(1);
  }
}
if (lock) delete lock.dependencies; // lockfile v2's legacy section; npm reads `packages`
fs.writeFileSync(`${dir}/package.json`, JSON.stringify(pj, null, 2) + '\n');
if (lock) fs.writeFileSync(`${dir}/package-lock.json`, JSON.stringify(lock, null, 2) + '\n');
JS
  if [[ -f "$stage/package-lock.json" ]]; then npm_cmd=(npm ci); else npm_cmd=(npm install); fi
  echo "${npm_cmd[*]} (staged, then moved to $suite/node_modules) ..." >&2
  (cd "$stage" && "${npm_cmd[@]}" --no-audit --no-fund --loglevel=error) >"$OUT_DIR/npm-install.log" 2>&1 \
    || { tail -n 20 "$OUT_DIR/npm-install.log" >&2
         echo "npm install failed (see $OUT_DIR/npm-install.log; without GitHub access set GIT_DEP_MIRRORS)" >&2
         exit 1; }
  rm -rf "$suite/node_modules"
  mv "$stage/node_modules" "$suite/node_modules"
  rm -f "$suite/node_modules/.package-lock.json" # describes the staged paths
  rm -rf "$stage"
fi

# --- build (as `npm run test:node` does before mocha) ---------------------------------
if [[ "${SKIP_BUILD:-}" == 1 && -f "$suite/build/ably-node.js" ]]; then
  echo "build: skipped (SKIP_BUILD=1)" >&2
else
  echo "npm run build:node && build:push && build:liveobjects ..." >&2
  (cd "$suite" && npm run build:node && npm run build:push && npm run build:liveobjects) \
    >"$OUT_DIR/build.log" 2>&1 || { tail -n 20 "$OUT_DIR/build.log" >&2; echo "build failed; see $OUT_DIR/build.log" >&2; exit 1; }
fi

# --- the sandbox under test ------------------------------------------------------------
case "$TARGET" in
  tidewire)
    if [[ -z "${TIDEWIRE_BIN:-}" ]]; then
      TIDEWIRE_BIN="$root/target/debug/tidewire"
      [[ -x "$TIDEWIRE_BIN" ]] || (cd "$root" && cargo build -q -p tidewire-server --bin tidewire)
    fi
    if [[ -n "${TIDEWIRE_CONFIG:-}" ]]; then
      config="$(cd "$(dirname "$TIDEWIRE_CONFIG")" && pwd)/$(basename "$TIDEWIRE_CONFIG")"
    else
      config="$OUT_DIR/tidewire.toml"
      printf '# generated by compat/ably-js/run-upstream-suite.sh\n[realtime]\nsandbox = true\n' >"$config"
    fi
    mkdir -p "$OUT_DIR/data"
    TIDEWIRE_LOG_LEVEL="${TIDEWIRE_LOG_LEVEL:-warn}" "$TIDEWIRE_BIN" --config "$config" \
      --bind 127.0.0.1 --port 0 --http-port 0 --print-ports --data-dir "$OUT_DIR/data" \
      >"$OUT_DIR/server.out" 2>"$OUT_DIR/server.err" </dev/null &
    server_pid=$!
    resp_port="" http_port=""
    for _ in $(seq 1 200); do
      read -r resp_port http_port < <(sed -n 's/^LISTENING resp=\([0-9]*\) http=\([0-9]*\).*/\1 \2/p' "$OUT_DIR/server.out" | head -n1) || true
      [[ -n "$http_port" ]] && break
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    if [[ -z "$http_port" ]]; then
      echo "tidewire did not start (config $config; see $OUT_DIR/server.err):" >&2
      sed '/^Stack backtrace:/,$d' "$OUT_DIR/server.err" | head -n 20 >&2
      exit 1
    fi
    wait_ping 127.0.0.1 "$resp_port" "$server_pid" \
      || { echo "tidewire on 127.0.0.1:$resp_port does not answer PING" >&2; tail -n 20 "$OUT_DIR/server.err" >&2; exit 1; }
    sandbox="http://127.0.0.1:$http_port"
    server_desc="$("$TIDEWIRE_BIN" --version 2>/dev/null || echo tidewire) ($TIDEWIRE_BIN, config $config)"
    ;;
  http://* | https://*)
    sandbox="${TARGET%/}"
    server_desc="external sandbox"
    ;;
  *) echo "error: TARGET must be tidewire or the http(s):// URL of a running sandbox" >&2; exit 2 ;;
esac
sandbox_hostport="${sandbox#*://}"
sandbox_hostport="${sandbox_hostport%%/*}"
sandbox_host="${sandbox_hostport%:*}"
sandbox_port="${sandbox_hostport##*:}"
if [[ "$sandbox_port" == "$sandbox_hostport" ]]; then
  if [[ "$sandbox" == https://* ]]; then sandbox_port=443; else sandbox_port=80; fi
fi
if [[ "$sandbox" == https://* ]]; then default_tls=true; else default_tls=false; fi
export ABLY_LOCAL_SANDBOX_URL="$sandbox"
export ABLY_TEST_TRANSPORTS="${ABLY_TEST_TRANSPORTS:-web_socket}"
export ABLY_USE_TLS="${ABLY_USE_TLS:-$default_tls}"
export ABLY_ENDPOINT="${ABLY_ENDPOINT:-$sandbox_host}"
export ABLY_PORT="${ABLY_PORT:-$sandbox_port}"
export ABLY_TLS_PORT="${ABLY_TLS_PORT:-$sandbox_port}"
{
  echo "server: $server_desc at $sandbox"
  echo "suite:  ably-js $(git -C "$suite" describe --tags 2>/dev/null || echo '?') $(git -C "$suite" rev-parse HEAD 2>/dev/null || echo '?'), ably-common $common_desc"
  echo "env:    ABLY_LOCAL_SANDBOX_URL=$ABLY_LOCAL_SANDBOX_URL ABLY_TEST_TRANSPORTS=$ABLY_TEST_TRANSPORTS ABLY_USE_TLS=$ABLY_USE_TLS ABLY_ENDPOINT=$ABLY_ENDPOINT ABLY_PORT=$ABLY_PORT ABLY_TLS_PORT=$ABLY_TLS_PORT${ABLY_LOG_LEVEL:+ ABLY_LOG_LEVEL=$ABLY_LOG_LEVEL}"
} | tee "$OUT_DIR/server.txt" >&2

# --- preflight: what the harness (test/common/modules/testapp_manager.js) needs -------
rm -f "$OUT_DIR/preflight.txt"
if [[ "${PREFLIGHT:-1}" != 0 ]]; then
  set +e
  python3 - "$sandbox" "$common/test-resources/test-app-setup.json" >"$OUT_DIR/preflight.txt" 2>&1 <<'PY'
import base64, json, re, sys, urllib.error, urllib.request

sandbox, setup_file = sys.argv[1].rstrip("/"), sys.argv[2]
post_apps = json.load(open(setup_file))["post_apps"]
problems = []

def req(method, url, body=None, auth=None):
    data = None if body is None else json.dumps(body).encode()
    r = urllib.request.Request(url, data=data, method=method)
    r.add_header("Accept", "application/json")
    if data is not None:
        r.add_header("Content-Type", "application/json")
    if auth:
        r.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(r, timeout=10) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except Exception as e:  # refused, timeout ...
        return None, f"{type(e).__name__}: {e}"

def show(what, status, text):
    print(f"{what}: {status if status is not None else 'no response'} {text[:400]}")
    return status is not None and status < 300  # testapp_manager treats >= 300 as failure

st, text = req("POST", sandbox + "/apps", post_apps)
if not show("POST /apps", st, text):
    problems.append(f"POST {sandbox}/apps failed ({st if st is not None else text[:120]}): no app can be provisioned")
else:
    try:
        app = json.loads(text)
    except ValueError:
        app = None
        problems.append("POST /apps: response is not JSON")
    if isinstance(app, dict):
        keys = app.get("keys")
        if not isinstance(keys, list) or len(keys) != len(post_apps["keys"]):
            problems.append(f"POST /apps: `keys` must be a list of {len(post_apps['keys'])} keys, as posted")
        else:
            for i, k in enumerate(keys):
                missing = [f for f in ("keyStr", "keyName", "keySecret", "capability") if f not in k]
                if missing:
                    problems.append(f"POST /apps: keys[{i}] lacks {', '.join(missing)}")
                elif k["keyStr"] != f"{k['keyName']}:{k['keySecret']}":
                    problems.append(f"POST /apps: keys[{i}].keyStr is not keyName:keySecret")
        ns = app.get("namespaces")
        if not isinstance(ns, list) or len(ns) != len(post_apps["namespaces"]):
            problems.append(f"POST /apps: `namespaces` must be a list of {len(post_apps['namespaces'])}, as posted")
        if not isinstance(app.get("appId"), str):
            problems.append("POST /apps: `appId` must be a string")
        ep, port, tls = app.get("endpoint"), app.get("port"), app.get("tls")
        if not isinstance(ep, str) or not ("." in ep or "::" in ep or ep == "localhost"):
            problems.append(f"POST /apps: `endpoint` must be a host name with a dot, an IP or localhost "
                            f"(ably-js turns anything else into <endpoint>.realtime.ably.net): {ep!r}")
        if not isinstance(port, int):
            problems.append(f"POST /apps: `port` must be a number: {port!r}")
        if not isinstance(tls, bool):
            problems.append(f"POST /apps: `tls` must be a boolean: {tls!r}")
        key0 = keys[0].get("keyStr") if isinstance(keys, list) and keys and isinstance(keys[0], dict) else None
        if isinstance(ep, str) and isinstance(port, int):
            host = f"[{ep}]" if ":" in ep else ep
            base = f"{'https' if tls else 'http'}://{host}:{port}"
            st, text = req("GET", base + "/time")
            if not show(f"GET {base}/time", st, text):
                problems.append(f"GET {base}/time failed ({st}): clients cannot reach the app's endpoint")
            if key0:
                st, text = req("GET", base + "/channels/preflight/messages", auth=key0)
                if not show(f"GET {base}/channels/preflight/messages (keys[0])", st, text):
                    problems.append(f"history with keys[0] failed ({st}): the app's keys are not accepted at its endpoint")
        if key0:
            fixture = [{"intervalId": "2000-02-03:15:03",
                        "inbound": {"realtime": {"messages": {"count": 50, "data": 5000}}}}]
            st, text = req("POST", sandbox + "/stats", fixture, auth=key0)
            if not show("POST /stats (keys[0])", st, text):
                problems.append(f"POST {sandbox}/stats failed ({st}): test/rest/stats.test.js cannot load its fixtures")
            if isinstance(app.get("appId"), str):
                st, text = req("DELETE", f"{sandbox}/apps/{app['appId']}", auth=key0)
                if not show(f"DELETE /apps/{app['appId']} (keys[0])", st, text):
                    problems.append(f"DELETE /apps/<appId> failed ({st}): the root after-all hook will fail")
print()
if problems:
    print("PREFLIGHT PROBLEMS:")
    for p in problems:
        print("- " + p)
    sys.exit(1)
print("preflight ok")
PY
  preflight_rc=$?
  set -e
  if [[ $preflight_rc -ne 0 ]]; then
    echo "WARNING: the sandbox does not do what ably-js's harness needs (see $OUT_DIR/preflight.txt):" >&2
    sed -n 's/^- /  - /p' "$OUT_DIR/preflight.txt" >&2
    [[ $preflight_rc -eq 1 ]] || tail -n 5 "$OUT_DIR/preflight.txt" >&2
  else
    echo "preflight: POST /apps, GET /time, POST /stats, DELETE /apps ok" >&2
  fi
fi

# --- the spec list: upstream's default minus LiveObjects and Push (see the header) ----
specs=()
excluded=()
named=0
for a in "$@"; do [[ "$a" == *.test.js ]] && named=1; done
if [[ $named == 0 ]]; then
  for f in "$suite"/test/realtime/*.test.js "$suite"/test/rest/*.test.js "$suite"/test/unit/*.test.js; do
    [[ -f "$f" ]] || continue
    rel="${f#"$suite"/}"
    case "${rel##*/}" in
      *liveobjects* | *push*) excluded+=("$rel") ;;
      *) specs+=("$rel") ;;
    esac
  done
  echo "files: ${#specs[@]} (excluded: ${excluded[*]:-none})" | tee -a "$OUT_DIR/server.txt" >&2
else
  echo "files: as given on the command line" | tee -a "$OUT_DIR/server.txt" >&2
fi

# --- tests this machine cannot run (compat/ably-js/environment-exclusions.tsv), left out
# with mocha's --grep … --invert unless EXCLUDE_ENVIRONMENT=0 or a --grep/-g is given -----
grep_args=()
user_grep=0
for a in "$@"; do [[ "$a" == --grep* || "$a" == -g || "$a" == --fgrep* ]] && user_grep=1; done
exclusions="$here/environment-exclusions.tsv"
if [[ "${EXCLUDE_ENVIRONMENT:-1}" != 0 && $user_grep == 0 && -f "$exclusions" ]]; then
  pattern="$(node -e '
    const lines = require("fs").readFileSync(process.argv[1], "utf8").split("\n");
    const titles = lines.filter((l) => l && !l.startsWith("#")).map((l) => l.split("\t")[2]);
    const esc = (t) => t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    // Titles are listed as the reporter writes them: trimmed (some end in a space).
    process.stdout.write("^(" + titles.map(esc).join("|") + ")\\s*$");
  ' "$exclusions")"
  grep_args=(--grep "$pattern" --invert)
  n_excluded="$(grep -cv '^#' "$exclusions" || true)"
  echo "environment exclusions: $n_excluded tests ($exclusions; EXCLUDE_ENVIRONMENT=0 runs them)" \
    | tee -a "$OUT_DIR/server.txt" >&2
fi

# --- the suite: mocha with the checkout's .mocharc.js (requires, root hooks) and our
# reporter; in the background so that INT/TERM reach the trap at once ----------------
: >"$OUT_DIR/results.raw.tsv"
echo "mocha (SUITE_TIMEOUT ${SUITE_TIMEOUT:-3600} s; log: $OUT_DIR/mocha.log) ..." >&2
set +e
(cd "$suite" && export ABLY_SUITE_RESULTS="$OUT_DIR/results.raw.tsv" && exec timeout --kill-after=15 "${SUITE_TIMEOUT:-3600}" \
   node node_modules/.bin/mocha --reporter "$here/tsv-reporter.js" --exit "${specs[@]}" "${grep_args[@]}" "$@") \
   >"$OUT_DIR/mocha.log" 2>&1 </dev/null &
suite_pid=$!
wait "$suite_pid"
rc=$?
set -e
kill -KILL -- "-$suite_pid" 2>/dev/null || true # strays of the run (its process group)
suite_pid=""
timed_out=0
[[ $rc -eq 124 || $rc -eq 137 ]] && timed_out=1
[[ $timed_out == 0 ]] || echo "WARNING: suite hit SUITE_TIMEOUT; results are partial" >&2
grep -q '^END ' "$OUT_DIR/mocha.log" || echo "WARNING: mocha did not reach its end (see $OUT_DIR/mocha.log)" >&2
if [[ -n "$server_pid" ]] && ! kill -0 "$server_pid" 2>/dev/null; then
  echo "WARNING: tidewire exited during the run (see $OUT_DIR/server.err)" >&2
fi

# --- summary (a test that both passed and failed -- e.g. an error after it completed --
# counts as failed) ----------------------------------------------------------------------
python3 - "$OUT_DIR" "${BASELINE_DIR:-}" "$timed_out" >"$OUT_DIR/summary.md" <<'PY'
import collections, os, re, sys

out, baseline, timed_out = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
rank = {"pending": 0, "passed": 1, "failed": 2}

def load(p):
    res = collections.OrderedDict()
    for line in open(p, encoding="utf-8", errors="replace"):
        parts = line.rstrip("\n").split("\t", 3)
        if len(parts) < 4 or parts[0] not in rank:
            continue
        st, f, name, msg = parts
        k = (f, name)
        if k not in res or rank[st] > rank[res[k][0]]:
            res[k] = (st, msg)
    return res

def md(s):
    return s.replace("`", "'").replace("|", "\\|")

res = load(os.path.join(out, "results.raw.tsv"))
with open(os.path.join(out, "results.tsv"), "w") as fh:
    for (f, name), (st, msg) in res.items():
        fh.write("\t".join((st, f, name, msg)) + "\n")
total, files = collections.Counter(), collections.OrderedDict()
for (f, _), (st, _) in res.items():
    total[st] += 1
    files.setdefault(f, collections.Counter())[st] += 1

log = open(os.path.join(out, "mocha.log"), encoding="utf-8", errors="replace").read()
for line in open(os.path.join(out, "server.txt")):
    print(f"- {md(line.rstrip())}")
notes = []
if timed_out:
    notes.append("the run hit SUITE_TIMEOUT: results are partial")
if not re.search(r"^END ", log, re.M):
    notes.append("mocha did not reach its end (see mocha.log)")
pf = os.path.join(out, "preflight.txt")
if os.path.exists(pf):
    probs = [l[2:].rstrip() for l in open(pf) if l.startswith("- ")]
    if probs:
        notes.append("preflight: " + "; ".join(probs))
for n in notes:
    print(f"- **{md(n)}**")
print()
print(f"**{total['passed']} passed, {total['failed']} failed, {total['pending']} pending** "
      f"({sum(total.values())} tests in {len(files)} files; a failed `before all` hook counts as one "
      f"failed test and the tests it skipped are not counted)\n")
print("| File | Passed | Failed | Pending |\n|---|---:|---:|---:|")
for f, d in sorted(files.items(), key=lambda kv: (-kv[1]["failed"], kv[0])):
    print(f"| `{f}` | {d['passed']} | {d['failed']} | {d['pending']} |")
failed = [(k, v) for k, v in res.items() if v[0] == "failed"]
if failed:
    causes = collections.Counter(re.sub(r"\d+", "N", msg)[:160] for _, (_, msg) in failed)
    print("\nMost frequent first error lines (digits as N):\n")
    print("| Failed | First error line |\n|---:|---|")
    for c, k in causes.most_common(15):
        print(f"| {k} | `{md(c) or '(no message)'}` |")
    print("\nFailing tests:\n")
    for (f, name), (_, msg) in failed:
        print(f"- `{f}` — {md(name)}: `{md(msg)}`")
if baseline:
    base = load(os.path.join(baseline, "results.tsv"))
    reg = [(k, res.get(k, ("missing", ""))) for k, (st, _) in base.items()
           if st == "passed" and res.get(k, ("missing",))[0] != "passed"]
    print(f"\nPassed in baseline ({baseline}) but not here: {len(reg)}\n")
    for (f, name), (st, msg) in reg:
        print(f"- [{st}] `{f}` — {md(name)}: `{md(msg)}`")
PY
cat "$OUT_DIR/summary.md"
echo "results in $OUT_DIR (results.tsv, mocha.log, summary.md, preflight.txt)" >&2
# Exit status: 0 once a summary exists (failing tests are the expected report),
# 3 if the run hit SUITE_TIMEOUT (partial results).
if [[ $timed_out == 1 ]]; then exit 3; fi

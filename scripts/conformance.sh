#!/usr/bin/env bash
# conformance.sh - run the public HTTP cache test suite (http-cache-tests, cache-tests.fyi)
# through edgecache and score it.
#
# Usage: scripts/conformance.sh [--floor FILE] [--update-floor] [--list OUTCOMES] [--id TEST]
#
#   Installs http-cache-tests@0.4.5 from npm (once, into $CACHE_DIR), builds the release
#   binary, starts the suite's test server and edgecache in front of it on free loopback ports,
#   runs the suite's client through edgecache and scores the results by kind.
#   --floor FILE     pass counts that must not drop (default: conformance-floor.txt at the
#                    repo root, lines required=N and optimal=N); below it: exit 1
#   --update-floor   rewrite the floor file with the new counts when they are higher
#   --list OUTCOMES  list these tests with their messages, e.g. fail or fail,optional_fail
#   --id TEST        run one test only, verbosely (requests, responses, server log)
# Environment: EDGECACHE_BIN (use this binary, skip cargo build),
#   CONFORMANCE_TIMEOUT (seconds for the suite's client, default 900),
#   CACHE_DIR (default ${XDG_CACHE_HOME:-$HOME/.cache}/edgecache/http-cache-tests-0.4.5).
# Writes target/conformance/{results.json,results.catalog.json,cli.log,server.log,edgecache.log}.
# Needs node, npm, curl, python3; listens on 127.0.0.1 only.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUITE_VERSION=0.4.5
CACHE_DIR=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/edgecache/http-cache-tests-$SUITE_VERSION}
SUITE=$CACHE_DIR/node_modules/http-cache-tests
OUT=$ROOT/target/conformance
TIMEOUT=${CONFORMANCE_TIMEOUT:-900}
FLOOR=$ROOT/conformance-floor.txt UPDATE_FLOOR="" LIST="" TEST_ID=""

die() { echo "conformance: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
while (($#)); do
    case $1 in
        --floor) FLOOR=$2; shift 2 ;;
        --update-floor) UPDATE_FLOOR=1; shift ;;
        --list) LIST=$2; shift 2 ;;
        --id) TEST_ID=$2; shift 2 ;;
        -h|--help) usage 0 ;;
        *) usage 1 >&2 ;;
    esac
done
for cmd in node npm curl python3; do command -v "$cmd" >/dev/null || die "$cmd is required"; done

# --- the suite: installed once, into a temp dir renamed into place ---
if [[ ! -f $SUITE/cli.mjs ]]; then
    echo "Installing http-cache-tests@$SUITE_VERSION into $CACHE_DIR ..." >&2
    mkdir -p "$(dirname "$CACHE_DIR")"
    BUILD=$(mktemp -d "$CACHE_DIR.tmp.XXXXXX")
    npm install --prefix "$BUILD" --no-audit --no-fund --loglevel=error \
        "http-cache-tests@$SUITE_VERSION" >&2
    rm -rf "$CACHE_DIR"
    mv -T "$BUILD" "$CACHE_DIR"
fi

# --- the proxy ---
if [[ -n ${EDGECACHE_BIN:-} ]]; then
    BIN=$EDGECACHE_BIN
else
    (cd "$ROOT" && cargo build --release --bin edgecache)
    BIN=$(cd "$ROOT" && realpath -m "${CARGO_TARGET_DIR:-target}/release/edgecache")
fi
[[ -x $BIN ]] || die "no executable at $BIN"

# --- two free loopback ports: origin (the suite's test server) and proxy ---
read -r ORIGIN_PORT PROXY_PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
[[ $PROXY_PORT =~ ^[0-9]+$ ]] || die "could not pick free ports"
PROXY=http://127.0.0.1:$PROXY_PORT

mkdir -p "$OUT"
TMP=$(mktemp -d)
SERVER_PID="" PROXY_PID=""
stop() { [[ -z $1 ]] || { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }; }
cleanup() { stop "$PROXY_PID"; stop "$SERVER_PID"; rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

(cd "$SUITE" && npm_config_protocol=http npm_config_port=$ORIGIN_PORT \
    npm_config_pidfile=$TMP/server.pid \
    exec node -r "$ROOT/scripts/conformance-loopback.cjs" server/server.mjs) >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
"$BIN" --listen "127.0.0.1:$PROXY_PORT" --origin "http://127.0.0.1:$ORIGIN_PORT" --no-access-log \
    >"$OUT/edgecache.log" 2>&1 &
PROXY_PID=$!

# Ready when the proxy returns the test server's 404 for /state/<unknown>, which names it.
PROBE=probe-$$-$RANDOM
for _ in $(seq 100); do
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$OUT/server.log" >&2; die "test server exited"; }
    kill -0 "$PROXY_PID" 2>/dev/null || { cat "$OUT/edgecache.log" >&2; die "edgecache exited"; }
    [[ $(curl -s --max-time 2 "$PROXY/state/$PROBE" || true) == *"$PROBE"* ]] && break
    sleep 0.2
done
[[ $(curl -s --max-time 2 "$PROXY/state/$PROBE" || true) == *"$PROBE"* ]] ||
    die "no answer from the test server through edgecache at $PROXY after 20 s"

run_client() {
    (cd "$SUITE" && npm_config_base=$PROXY npm_config_id=$TEST_ID npm_package_config_id="" \
        timeout "$TIMEOUT" node --no-warnings cli.mjs)
}
if [[ -n $TEST_ID ]]; then
    run_client || true
    echo "=== test server log"; cat "$OUT/server.log"
    exit 0
fi

echo "Running http-cache-tests@$SUITE_VERSION through edgecache at $PROXY ..." >&2
START=$SECONDS
run_client >"$TMP/results.json" 2>"$OUT/cli.log" || echo "client exited with status $?" >&2
python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$TMP/results.json" 2>/dev/null ||
    { tail -20 "$OUT/cli.log" >&2; die "the client produced no valid JSON (log: $OUT/cli.log)"; }
cp "$TMP/results.json" "$OUT/results.json"
echo "Wrote $OUT/results.json in $((SECONDS - START)) s" >&2

# The catalogue (group, kind, depends_on of every test) lives in the suite's test definitions;
# cli.mjs runs tests/index.mjs plus the surrogate-control group.
(cd "$SUITE" && node --input-type=module -e '
import { pathToFileURL } from "url"
const load = async f => (await import(pathToFileURL(f))).default
const groups = [...await load("tests/index.mjs"), await load("tests/surrogate-control.mjs")]
console.log(JSON.stringify({
  suite: "http-cache-tests@'"$SUITE_VERSION"'",
  groups: groups.map(g => ({
    id: g.id,
    tests: g.tests.map(t => ({
      id: t.id,
      kind: t.kind || "required",
      depends_on: t.depends_on || [],
      browser_only: t.browser_only === true
    }))
  }))
}))') >"$OUT/results.catalog.json"

SCORE=(python3 "$ROOT/scripts/conformance_score.py" "$OUT/results.json" "$OUT/results.catalog.json"
       --floor "$FLOOR")
[[ -n $LIST ]] && SCORE+=(--list "$LIST")
[[ -n $UPDATE_FLOOR ]] && SCORE+=(--update-floor)
"${SCORE[@]}"

#!/usr/bin/env bash
# purge.sh - issue 26's measurements, with the release binaries, a real redis-server and a small
# origin that counts what it sends (benches/purge_tool.py). Results: benches/RESULTS.md, "Purge
# (issue 26)". The hit-1k before/after comparison runs under the side-by-side harness instead
# (see RESULTS.md for the command).
#
#   cargo build --release
#   benches/purge.sh latency [N]     A->B: N URL purges made on node A (default 1000); for each,
#                                    the time from A's answer to B's first response that is not
#                                    a hit. A on CPU 0, B on CPU 1, Redis/origin/client on CPU 0.
#   benches/purge.sh restart [N]     two nodes holding N 16 KiB objects (default 2000) under load
#                                    (wrk on both, 10 s); Redis restarted empty 3 s in; what the
#                                    origin sent meanwhile. Once with BASE_BIN (default
#                                    /work/bin/edgecache-base: drops its memory tier), once with
#                                    EDGECACHE_BIN (this build: marks it stale).
#   benches/purge.sh tag [N]         one node (CPU 1) holding N objects tagged "big" (default
#                                    100000) and a hot object; wrk hits the hot object (CPU 0),
#                                    3 s without a purge, then 3 s during which the tag is purged;
#                                    the hits' p50/p99/max in each, and how long the purge took.
# Needs: redis-server, redis-cli, wrk, curl, taskset, python3. Everything on 127.0.0.1.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${EDGECACHE_BIN:-$ROOT/target/release/edgecache}
BASE_BIN=${BASE_BIN:-/work/bin/edgecache-base}
WHAT=${1:?usage: $0 latency|restart|tag [N]}
source "$ROOT/benches/lib.sh"
needs redis-server redis-cli wrk curl taskset python3
[[ -x $BIN ]] || { echo "build first: cargo build --release ($BIN)" >&2; exit 1; }
TOOL="python3 $ROOT/benches/purge_tool.py"

start_redis() { # PORT
  taskset -c 0 redis-server --port "$1" --bind 127.0.0.1 --save "" --appendonly no >>"$TMP/redis.log" 2>&1 &
  REDIS_PID=$!
  PIDS+=($REDIS_PID)
  for _ in $(seq 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && return; sleep 0.05; done
  echo "redis did not start" >&2; exit 1
}

start_origin() {
  OPORT=$(free_port)
  taskset -c 0 $TOOL origin "$OPORT" >"$TMP/origin.log" 2>&1 &
  PIDS+=($!)
  wait_http "127.0.0.1:$OPORT"
}

origin_stats() { curl -s "http://127.0.0.1:$OPORT/__stats"; }

node() { # NAME CPU BIN CONFIG -> sets PORT_<NAME>
  local port
  port=$(free_port)
  taskset -c "$2" "$3" --config "$4" --origin "http://127.0.0.1:$OPORT" --listen "127.0.0.1:$port" --no-access-log \
    >"$TMP/$1.log" 2>&1 &
  PIDS+=($!)
  eval "PID_$1=$!"
  wait_http "127.0.0.1:$port"
  eval "PORT_$1=$port"
}

cat >"$TMP/stats.lua" <<'EOF'
wrk.headers["Host"] = "www.example"
function done(summary, latency, requests)
  io.write(string.format("RESULT req/s=%.0f p50=%.3fms p99=%.3fms max=%.2fms errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.status + summary.errors.read + summary.errors.connect + summary.errors.timeout))
end
EOF

case $WHAT in
latency)
  N=${2:-1000}
  RPORT=$(free_port); start_redis "$RPORT"; start_origin
  APORT_ADMIN=$(free_port)
  printf '[redis]\nurl = "redis://127.0.0.1:%s"\n[admin]\nlisten = "127.0.0.1:%s"\n' "$RPORT" "$APORT_ADMIN" >"$TMP/a.toml"
  printf '[redis]\nurl = "redis://127.0.0.1:%s"\n' "$RPORT" >"$TMP/b.toml"
  node A 0 "$BIN" "$TMP/a.toml"
  node B 1 "$BIN" "$TMP/b.toml"
  taskset -c 0 $TOOL latency "127.0.0.1:$APORT_ADMIN" "127.0.0.1:$PORT_B" "$N"
  ;;
restart)
  N=${2:-2000}
  cat >"$TMP/load.lua" <<EOF
wrk.headers["Host"] = "www.example"
local n = $N
function init(args) math.randomseed(7) end
function request() return wrk.format(nil, "/obj/" .. math.random(0, n - 1)) end
EOF
  for which in before after; do
    bin=$BIN; [[ $which == before ]] && bin=$BASE_BIN
    RPORT=$(free_port); start_redis "$RPORT"; start_origin
    # One entry in the stream, as in any fleet that has invalidated something: the nodes' readers
    # start from a real position, so a restart is noticed.
    redis-cli -p "$RPORT" XADD ec:v1:invalidations '*' key 00 node bench >/dev/null
    printf '[cache]\nmemory = "1GiB"\n[redis]\nurl = "redis://127.0.0.1:%s"\n' "$RPORT" >"$TMP/n.toml"
    node A 0 "$bin" "$TMP/n.toml"
    node B 1 "$bin" "$TMP/n.toml"
    taskset -c 0 $TOOL prime "127.0.0.1:$PORT_A" "/obj/%d" "$N"
    taskset -c 0 $TOOL prime "127.0.0.1:$PORT_B" "/obj/%d" "$N"
    start=$(origin_stats)
    taskset -c 0 wrk -t1 -c16 -d10s -s "$TMP/load.lua" "http://127.0.0.1:$PORT_A" >"$TMP/wa.out" &
    wa=$!
    taskset -c 0 wrk -t1 -c16 -d10s -s "$TMP/load.lua" "http://127.0.0.1:$PORT_B" >"$TMP/wb.out" &
    wb=$!
    sleep 3
    kill "$REDIS_PID"; wait "$REDIS_PID" 2>/dev/null || true
    start_redis "$RPORT"
    wait "$wa" "$wb"
    end=$(origin_stats)
    python3 - "$which" "$N" "$start" "$end" "$(grep Requests/sec "$TMP/wa.out" | awk '{print $2}')" \
      "$(grep Requests/sec "$TMP/wb.out" | awk '{print $2}')" <<'EOF'
import json, sys
which, n, a, b, ra, rb = sys.argv[1:]
a, b = json.loads(a), json.loads(b)
d = {k: b[k] - a[k] for k in a}
print(f"RESULT {which}: {n} objects x 2 nodes; origin during the 10 s of load: requests={d['requests']} "
      f"full={d['full']} 304={d['not_modified']} body_bytes={d['body_bytes']} (node A {ra} req/s, node B {rb} req/s)")
EOF
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
  done
  ;;
tag)
  N=${2:-100000}
  start_origin
  ADMIN=$(free_port)
  printf '[cache]\nmemory = "1GiB"\n[admin]\nlisten = "127.0.0.1:%s"\n' "$ADMIN" >"$TMP/t.toml"
  node T 1 "$BIN" "$TMP/t.toml"
  cat >"$TMP/seq.lua" <<EOF
wrk.headers["Host"] = "www.example"
local i, n = -1, $N
function request() i = i + 1; if i >= n then i = 0 end; return wrk.format(nil, "/tag/" .. i) end
EOF
  echo "storing $N tagged objects ..." >&2
  taskset -c 0 $TOOL prime "127.0.0.1:$PORT_T" "/tag/%d" "$N" 16
  curl -s -H 'Host: www.example' "http://127.0.0.1:$PORT_T/hot" >/dev/null
  printf 'hits (wrk 1 thread, 16 connections, 3 s)\n'
  echo "no purge: $(taskset -c 0 wrk -t1 -c16 -d3s -s "$TMP/stats.lua" "http://127.0.0.1:$PORT_T/hot" | grep RESULT)"
  taskset -c 0 wrk -t1 -c16 -d3s -s "$TMP/stats.lua" "http://127.0.0.1:$PORT_T/hot" >"$TMP/during.out" &
  w=$!
  sleep 1
  took=$(curl -s -o "$TMP/purge.json" -w '%{time_total}' -X POST --data '{"tags":["big"]}' "http://127.0.0.1:$ADMIN/purge")
  wait "$w"
  echo "during the purge: $(grep RESULT "$TMP/during.out")"
  echo "RESULT purge of tag big: $(cat "$TMP/purge.json" | tr -d '\n'), answered in ${took}s"
  ;;
*) echo "usage: $0 latency|restart|tag [N]" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# redis-tier.sh - what a memory miss that hits the shared tier (Redis) costs, next to a memory hit
# and a miss that goes to the origin, on node B of a two-node fleet. One run, quoted as ratios.
#
#   cargo build --release && benches/redis-tier.sh [--keys N] [--duration S] [--conns N]
#
# Topology (2 cores): node B (the server measured) pinned alone on CPU 1; wrk, Redis, node A and
# the demo origin on CPU 0. Node A (with --demo) fills Redis with N distinct 1 KiB-ish objects;
# then wrk asks B for those URLs uniformly at random in three set-ups:
#   memory      B with a large memory tier, primed first: every request a memory hit
#   shared      B with a 1 MiB memory tier and [redis]: nearly every request is a memory miss
#               served from Redis (the Lua script counts Cache-Status "tier=shared")
#   origin      B with a 1 MiB memory tier and no Redis: memory misses go to the origin
# Needs: redis-server, wrk, curl, taskset. Everything on 127.0.0.1, ports picked free.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${EDGECACHE_BIN:-$ROOT/target/release/edgecache}
KEYS=10000 DURATION=10 CONNS=50
while [[ $# -gt 0 ]]; do
  case $1 in
    --keys) KEYS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    *) echo "usage: $0 [--keys N] [--duration S] [--conns N]" >&2; exit 2 ;;
  esac
done
source "$ROOT/benches/lib.sh"
needs redis-server wrk curl taskset
[[ -x $BIN ]] || { echo "build first: cargo build --release ($BIN)" >&2; exit 1; }


RPORT=$(free_port)
taskset -c 0 redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.05; done

cat >"$TMP/shared.toml" <<EOF
[cache]
memory = "1MiB"
max_object_size = "64KiB"
[redis]
url = "redis://127.0.0.1:$RPORT"
budget = "50ms"
EOF
cat >"$TMP/small.toml" <<EOF
[cache]
memory = "1MiB"
max_object_size = "64KiB"
EOF
cat >"$TMP/a.toml" <<EOF
[cache]
memory = "1GiB"
[redis]
url = "redis://127.0.0.1:$RPORT"
EOF

# Node A with the demo origin: fills Redis.
APORT=$(free_port)
taskset -c 0 "$BIN" --config "$TMP/a.toml" --demo --listen "127.0.0.1:$APORT" --no-access-log >"$TMP/a.log" 2>&1 &
PIDS+=($!)
wait_http "127.0.0.1:$APORT"
ORIGIN=$(sed 's/\x1b\[[0-9;]*m//g' "$TMP/a.log" | grep -o 'addr=127.0.0.1:[0-9]*' | head -1 | cut -d= -f2)

cat >"$TMP/seq.lua" <<EOF
local i, n = 0, $KEYS
function request() i = i % n + 1; return wrk.format(nil, "/articles/" .. i) end
EOF
cat >"$TMP/rand.lua" <<EOF
local n = $KEYS
local threads = {}
shared, hits, misses = 0, 0, 0
function setup(thread) table.insert(threads, thread) end
function init(args) math.randomseed(42) end
function request() return wrk.format(nil, "/articles/" .. math.random(1, n)) end
function response(status, headers, body)
  local cs = headers["cache-status"] or headers["Cache-Status"] or ""
  if cs:find("tier=shared", 1, true) then shared = shared + 1
  elseif cs:find("; hit", 1, true) then hits = hits + 1
  else misses = misses + 1 end
end
function done(summary, latency, requests)
  local s, h, m = 0, 0, 0
  for _, t in ipairs(threads) do s = s + t:get("shared"); h = h + t:get("hits"); m = m + t:get("misses") end
  local total = math.max(s + h + m, 1)
  io.write(string.format("RESULT req/s=%.0f p50=%.2fms p99=%.2fms errors=%d shared-hits=%.0f%% memory-hits=%.0f%% misses=%.0f%%\\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, summary.errors.status + summary.errors.read + summary.errors.connect,
    100 * s / total, 100 * h / total, 100 * m / total))
end
EOF

echo "priming $KEYS objects through node A into Redis ..." >&2
taskset -c 0 wrk -t1 -c8 -d3s -s "$TMP/seq.lua" "http://127.0.0.1:$APORT" >/dev/null
for _ in $(seq 100); do
  n=$(redis-cli -p "$RPORT" --scan --pattern 'ec:v1:{*' | wc -l)
  [[ $n -ge $KEYS ]] && break; sleep 0.1
done
echo "Redis holds $(redis-cli -p "$RPORT" --scan --pattern 'ec:v1:{*' | wc -l) URLs" >&2

run_b() { # name config
  local name=$1 cfg=$2 port
  port=$(free_port)
  taskset -c 1 "$BIN" ${cfg:+--config "$cfg"} --origin "http://$ORIGIN" --listen "127.0.0.1:$port" --no-access-log \
    >"$TMP/b-$name.log" 2>&1 &
  local pid=$!
  wait_http "127.0.0.1:$port"
  if [[ $name == memory ]]; then taskset -c 0 wrk -t1 -c8 -d3s -s "$TMP/seq.lua" "http://127.0.0.1:$port" >/dev/null; fi
  taskset -c 0 wrk -t1 -c"$CONNS" -d1s -s "$TMP/rand.lua" "http://127.0.0.1:$port" >/dev/null # warm-up
  local out
  out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$TMP/rand.lua" "http://127.0.0.1:$port")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$name $(grep RESULT <<<"$out" | cut -d' ' -f2-)"
}
printf 'B set-up   result (wrk 1 thread, %s connections, %s s, %s keys uniform)\n' "$CONNS" "$DURATION" "$KEYS"
run_b memory ""
run_b shared "$TMP/shared.toml"
run_b origin "$TMP/small.toml"

#!/usr/bin/env bash
# restart.sh - what a restart by socket hand-over (SIGUSR2) costs: failed requests (none
# expected) and origin requests, without and with the shared tier (Redis).
#
#   cargo build --release && benches/restart.sh [--keys N] [--duration S] [--conns N]
#   KEEP=DIR benches/restart.sh     also keeps each node's log and wrk's output in DIR
#
# An nginx origin (one 1 KiB body for every path, Cache-Control: public, max-age=3600; its
# stub_status counts requests) and one edgecache node. wrk asks for N distinct URLs uniformly at
# random. For each set-up (memory only; memory + Redis):
#   1. start the node, prime it with every URL (sequentially), read the origin's count;
#   2. wrk for S seconds; after a third of it, SIGUSR2: a new process takes the socket over,
#      the old one drains and exits;
#   3. read the origin's count again: what the restart cost, and wrk's errors (must be 0).
# With Redis, the new process starts with an empty memory tier and finds the objects in Redis.
# Needs: nginx, redis-server, wrk, curl. Everything on 127.0.0.1, ports picked free.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${EDGECACHE_BIN:-$ROOT/target/release/edgecache}
KEYS=2000 DURATION=9 CONNS=20
while [[ $# -gt 0 ]]; do
  case $1 in
    --keys) KEYS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    *) echo "usage: $0 [--keys N] [--duration S] [--conns N]" >&2; exit 2 ;;
  esac
done
source "$ROOT/benches/lib.sh"
needs nginx redis-server redis-cli wrk curl
[[ -x $BIN ]] || { echo "build first: cargo build --release ($BIN)" >&2; exit 1; }

# The origin: nginx, one 1 KiB file for every path, and its request counter.
OPORT=$(free_port)
nginx_origin "$OPORT" 3600
# COUNT := requests the origin served, less the status requests themselves (stub_status counts
# every request, its own included). Called as a command, not in $(...): a subshell would lose
# the increment of STATUS_READS, and each earlier status read would count as an origin request.
STATUS_READS=0
COUNT=0
origin_count() {
  STATUS_READS=$((STATUS_READS + 1))
  local n
  n=$(curl -s "http://127.0.0.1:$OPORT/__status" | awk 'NR==3{print $3}')
  COUNT=$((n - STATUS_READS))
}

RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.05; done

cat >"$TMP/seq.lua" <<EOF
local i, n = 0, $KEYS
function request() i = i + 1; if i > n then i = 1 end; return wrk.format(nil, "/k/" .. i) end
EOF
cat >"$TMP/rand.lua" <<EOF
local n = $KEYS
function init(args) math.randomseed(os.time() + math.random(1000)) end
function request() return wrk.format(nil, "/k/" .. math.random(1, n)) end
EOF

run() { # name [redis]
  local name=$1 redis=${2:-} port admin log
  port=$(free_port)
  admin=$(free_port)
  log="$TMP/node-$name.log"
  {
    printf 'listen = "127.0.0.1:%s"\norigin = "http://127.0.0.1:%s"\n[log]\naccess = false\n' "$port" "$OPORT"
    printf '[cache]\nmemory = "256MiB"\n[admin]\nlisten = "127.0.0.1:%s"\n' "$admin"
    [[ -n $redis ]] && printf '[redis]\nurl = "redis://127.0.0.1:%s"\nkey_prefix = "bench%s"\n' "$RPORT" "$RANDOM"
  } >"$TMP/$name.toml"
  RUST_LOG=info "$BIN" --config "$TMP/$name.toml" >"$log" 2>&1 &
  local old=$!
  wait_http "127.0.0.1:$port"
  # Every URL, until the origin saw each (and Redis holds them, when configured).
  local start
  origin_count
  start=$COUNT
  wrk -t1 -c1 -d30s -s "$TMP/seq.lua" "http://127.0.0.1:$port" >/dev/null 2>&1 &
  local primer=$!
  for _ in $(seq 300); do origin_count; [[ $COUNT -ge $((start + KEYS)) ]] && break; sleep 0.1; done
  kill $primer 2>/dev/null; wait $primer 2>/dev/null || true
  if [[ -n $redis ]]; then
    for _ in $(seq 100); do
      [[ $(redis-cli -p "$RPORT" --scan --pattern 'bench*:v1:{*' | wc -l) -ge $KEYS ]] && break; sleep 0.1
    done
  fi
  local before after out new
  origin_count
  before=$COUNT
  out="$TMP/wrk-$name.txt"
  wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$TMP/rand.lua" "http://127.0.0.1:$port" >"$out" 2>&1 &
  local load=$!
  sleep $((DURATION / 3))
  kill -USR2 $old
  wait $old # the old process drains and exits; wrk goes on against the new one
  wait $load
  origin_count
  after=$COUNT
  # What the new process did: its outcomes and shared tier lookups, from its metrics.
  curl -s "http://127.0.0.1:$admin/metrics" >"$TMP/metrics-$name.txt"
  local seen
  seen=$(grep -E '^edgecache_(requests_total\{outcome="(miss|shared-hit|collapsed)"\}|shared_(hits|misses|errors)_total)' \
    "$TMP/metrics-$name.txt" | sed 's/^edgecache_//; s/_total//; s/requests{outcome="\(.*\)"}/\1/' | tr '\n' ' ')
  new=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep 'edgecache started' | tail -1 | grep -o 'pid=[0-9]*' | cut -d= -f2)
  [[ -n $new && $new != "$old" ]] && kill "$new" 2>/dev/null
  local reqs errors non2xx
  reqs=$(awk '/requests in/{print $1}' "$out")
  errors=$(awk '/Socket errors/{gsub(",",""); print $4+$6+$8+$10}' "$out")
  non2xx=$(awk '/Non-2xx/{print $NF}' "$out")
  printf '%-8s %8s requests  %s socket errors  %s non-2xx  %5d origin requests for the restart (%d URLs)\n' \
    "$name" "$reqs" "${errors:-0}" "${non2xx:-0}" $((after - before)) "$KEYS"
  printf '         new process (pid %s, old %s): %s\n' "${new:-?}" "$old" "$seen"
  for _ in $(seq 100); do kill -0 "$new" 2>/dev/null || break; sleep 0.1; done
  if [[ -n ${KEEP:-} ]]; then mkdir -p "$KEEP"; cp "$log" "$out" "$TMP/metrics-$name.txt" "$KEEP/"; fi
}

printf 'restart by hand-over under load: wrk 1 thread, %s connections, %s s, SIGUSR2 at %s s, %s URLs\n' \
  "$CONNS" "$DURATION" $((DURATION / 3)) "$KEYS"
run memory
run shared redis

#!/usr/bin/env bash
# refresh-ahead.sh - one hot object with `max-age=2` under constant load, without and with
# refresh-ahead: how many requests reached the origin, and what the clients saw.
#
#   cargo build --release && benches/refresh-ahead.sh [--duration S] [--conns N] [--every MS]
#
# The origin is nginx serving one 1 KiB file with `Cache-Control: public, max-age=2` (and its
# ETag / Last-Modified, so a revalidation is answered 304), logging every request it receives.
# wrk asks edgecache for that one URL on N connections, each waiting MS between requests
# (constant load: about N * 1000 / MS requests a second), for S seconds, once per set-up:
#   off   no [refresh_ahead]
#   on    [refresh_ahead] enabled = true, min_hits = 10, fraction = 0.25 (the last 0.5 s of 2 s)
# wrk's Lua script classifies every response by its Cache-Status: a hit; a revalidation the
# client waited for (`fwd=stale`); a miss (`fwd=uri-miss`); a stale answer (a hit whose
# Cache-Status carries a stale `detail`); anything else. Needs: nginx, wrk, curl.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${EDGECACHE_BIN:-$ROOT/target/release/edgecache}
DURATION=60 CONNS=10 EVERY=10
while [[ $# -gt 0 ]]; do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --every) EVERY=$2; shift 2 ;;
    *) echo "usage: $0 [--duration S] [--conns N] [--every MS]" >&2; exit 2 ;;
  esac
done
source "$ROOT/benches/lib.sh"
needs nginx wrk curl
[[ -x $BIN ]] || { echo "build first: cargo build --release ($BIN)" >&2; exit 1; }

APORT=$(free_port)
nginx_origin "$APORT" 2 "$TMP/nginx/access.log"

cat >"$TMP/classify.lua" <<LUA
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) hit = 0; revalidated = 0; miss = 0; stale = 0; other = 0 end
function delay() return $EVERY end
function response(status, headers, body)
  local cs = headers["Cache-Status"] or headers["cache-status"] or ""
  if status ~= 200 then other = other + 1
  elseif cs:find("fwd=uri%-miss") then miss = miss + 1
  elseif cs:find("fwd=stale") then revalidated = revalidated + 1
  elseif cs:find("; hit") and cs:find("stale") then stale = stale + 1
  elseif cs:find("; hit") then hit = hit + 1
  else other = other + 1 end
end
function done(summary, latency, requests)
  local t = { hit = 0, revalidated = 0, miss = 0, stale = 0, other = 0 }
  for _, th in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + th:get(k) end
  end
  io.write(string.format("clients: %d hits, %d revalidations waited for, %d misses, %d stale, %d other; p99 %.2f ms\n",
    t.hit, t.revalidated, t.miss, t.stale, t.other, latency:percentile(99) / 1000))
end
LUA

run() {
  local name=$1 extra=$2
  local port
  port=$(free_port)
  printf '[cache]\nmemory = "64MiB"\n%b' "$extra" >"$TMP/$name.toml"
  "$BIN" --config "$TMP/$name.toml" --origin "http://127.0.0.1:$APORT" --listen "127.0.0.1:$port" \
    --no-access-log >"$TMP/$name.log" 2>&1 &
  local pid=$!
  wait_http "127.0.0.1:$port"
  : >"$TMP/nginx/access.log"
  local out
  out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$TMP/classify.lua" "http://127.0.0.1:$port/hot" 2>&1)
  local origin
  origin=$(grep -c ' /hot ' "$TMP/nginx/access.log" || true)
  local ims
  ims=$(grep -c '" 304 ' "$TMP/nginx/access.log" || true)
  printf '%-4s origin: %d requests (%d answered 304); %s\n' "$name" "$origin" "$ims" "$(echo "$out" | grep '^clients:')"
  echo "$out" | grep 'Requests/sec' | sed 's/^/     /'
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

echo "one URL, max-age=2, ${DURATION}s, $CONNS connections each asking every ${EVERY} ms ($BIN)"
run off ""
run on '[refresh_ahead]\nenabled = true\nmin_hits = 10\nfraction = 0.25\n'

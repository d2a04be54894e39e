#!/usr/bin/env bash
# budget.sh - does the memory tier's byte budget hold? Fills one edgecache far past its
# `[cache] memory` budget with distinct 1 KiB objects and reports its RSS against the budget.
#
#   cargo build --release && benches/budget.sh [--budget-mib N] [--times K] [--size BYTES] [--preallocate]
#
# With --preallocate, B claims its budget at start-up (cache.preallocate): RSS is the budget
# before the fill, and what counts is how far past it the fill takes it.
#
# Node B (the server measured, budget N MiB, default 64) is pinned on CPU 1; wrk and node A
# (`--demo`, serving /bytes/<size>/<i>, with a 1 MiB memory tier of its own) on CPU 0. wrk asks B
# once for each of K x (what the budget holds) distinct URLs (default K = 4), so B evicts for
# most of the run. RSS of B is read from /proc before and after. Needs: wrk, curl, taskset.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${EDGECACHE_BIN:-$ROOT/target/release/edgecache}
BUDGET=64 TIMES=4 SIZE=1024 PREALLOCATE=false
while [[ $# -gt 0 ]]; do
  case $1 in
    --budget-mib) BUDGET=$2; shift 2 ;;
    --times) TIMES=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --preallocate) PREALLOCATE=true; shift ;;
    *) echo "usage: $0 [--budget-mib N] [--times K] [--size BYTES] [--preallocate]" >&2; exit 2 ;;
  esac
done
source "$ROOT/benches/lib.sh"
needs wrk curl taskset
[[ -x $BIN ]] || { echo "build first: cargo build --release ($BIN)" >&2; exit 1; }

rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }

APORT=$(free_port) BPORT=$(free_port)
printf '[cache]\nmemory = "1MiB"\nmax_object_size = "64KiB"\n' >"$TMP/a.toml"
printf '[cache]\nmemory = "%sMiB"\npreallocate = %s\n' "$BUDGET" "$PREALLOCATE" >"$TMP/b.toml"
taskset -c 0 "$BIN" --config "$TMP/a.toml" --demo --listen "127.0.0.1:$APORT" --no-access-log >"$TMP/a.log" 2>&1 &
PIDS+=($!)
taskset -c 1 "$BIN" --config "$TMP/b.toml" --origin "http://127.0.0.1:$APORT" --listen "127.0.0.1:$BPORT" \
  --no-access-log >"$TMP/b.log" 2>&1 &
B=$!
PIDS+=($B)
wait_http "127.0.0.1:$APORT"
wait_http "127.0.0.1:$BPORT"

# Objects of SIZE bytes that the budget holds (body only), times TIMES.
KEYS=$(( BUDGET * 1024 * 1024 / SIZE * TIMES ))
cat >"$TMP/fill.lua" <<LUA
local n, got, keys = 0, 0, $KEYS
function request() n = n + 1; return wrk.format(nil, "/bytes/$SIZE/" .. n) end
function response(status, headers, body)
  got = got + 1
  if got == keys then local f = io.open("$TMP/done", "w"); f:write("done"); f:close() end
end
LUA
before=$(rss_kib $B)
# wrk's threads cannot end the run themselves: the script tells when every URL was answered.
taskset -c 0 wrk -t1 -c32 -d600s -s "$TMP/fill.lua" "http://127.0.0.1:$BPORT" >"$TMP/wrk.out" 2>&1 &
W=$!
PIDS+=($W)
for _ in $(seq 6000); do [[ -e $TMP/done ]] && break; kill -0 $W 2>/dev/null || break; sleep 0.1; done
kill -INT $W 2>/dev/null || true
wait $W 2>/dev/null || true
[[ -e $TMP/done ]] || { echo "the fill did not finish" >&2; cat "$TMP/wrk.out" >&2; exit 1; }
after=$(rss_kib $B)
reqs=$KEYS
status=$(curl -s -D - -o /dev/null "http://127.0.0.1:$BPORT/bytes/$SIZE/1" | tr -d '\r' | awk -F': ' 'tolower($1)=="cache-status"{print $2}')
python3 - "$BUDGET" "$SIZE" "$KEYS" "$reqs" "$before" "$after" "$status" <<'PY'
import sys
budget, size, keys, reqs, before, after, status = sys.argv[1:]
budget, size, keys, reqs, before, after = int(budget), int(size), int(keys), int(reqs), int(before), int(after)
held = budget * 1024 * 1024 / size
print(f"budget            {budget} MiB (bodies alone: {held:,.0f} objects of {size} B)")
print(f"requested         {reqs:,} distinct URLs ({reqs / held:.1f}x what the budget holds)")
print(f"RSS before        {before / 1024:.1f} MiB")
print(f"RSS after         {after / 1024:.1f} MiB")
print(f"growth            {(after - before) / 1024:.1f} MiB = {(after - before) / 1024 / budget:.2f}x the budget")
print(f"RSS after, beyond the budget  {after / 1024 - budget:.1f} MiB")
print(f"first URL now     {status}")
PY

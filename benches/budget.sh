#!/usr/bin/env bash
# budget.sh - does the memory tier's byte budget hold? Fills one edgecache far past its
# `[cache] memory` budget with distinct objects of one size (1 KiB unless --size) and reports its
# RSS against the budget: right after the fill, and again after --idle seconds without a request.
#
#   cargo build --release && benches/budget.sh [--budget-mib N] [--times K] [--size BYTES] [--idle S] [--preallocate]
#
# benches/budget-sizes.sh runs it for 1 KiB, 64 KiB, 1 MiB and 4 MiB and prints one table.
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
BUDGET=64 TIMES=4 SIZE=1024 IDLE=5 PREALLOCATE=false
while [[ $# -gt 0 ]]; do
  case $1 in
    --budget-mib) BUDGET=$2; shift 2 ;;
    --times) TIMES=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --idle) IDLE=$2; shift 2 ;;
    --preallocate) PREALLOCATE=true; shift ;;
    *) echo "usage: $0 [--budget-mib N] [--times K] [--size BYTES] [--idle S] [--preallocate]" >&2; exit 2 ;;
  esac
done
source "$ROOT/benches/lib.sh"
needs wrk curl taskset
[[ -x $BIN ]] || { echo "build first: cargo build --release ($BIN)" >&2; exit 1; }

rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/{print $2}' "/proc/$1/status"; }
# Minor page faults and CPU ticks (user + system) of a process so far: "faults ticks".
faults_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $8, $12 + $13}'; }

APORT=$(free_port) BPORT=$(free_port)
printf '[cache]\nmemory = "1MiB"\nmax_object_size = "64KiB"\n' >"$TMP/a.toml"
# B stores every object up to 8 MiB (its default max_object_size, spelled out).
(( SIZE <= 8 << 20 )) || { echo "--size: at most 8 MiB (B's max_object_size)" >&2; exit 2; }
printf '[cache]\nmemory = "%sMiB"\nmax_object_size = "8MiB"\npreallocate = %s\n' "$BUDGET" "$PREALLOCATE" >"$TMP/b.toml"
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
-- Past the last URL, until wrk is stopped, "/" (a few hundred bytes): no fill is left running
-- when the RSS is read.
function request()
  n = n + 1
  if n > keys then return wrk.format(nil, "/") end
  return wrk.format(nil, "/bytes/$SIZE/" .. n)
end
function response(status, headers, body)
  got = got + 1
  if got == keys then local f = io.open("$TMP/done", "w"); f:write("done"); f:close() end
end
LUA
before=$(rss_kib $B)
read -r faults0 ticks0 < <(faults_ticks $B)
# wrk's threads cannot end the run themselves: the script tells when every URL was answered.
taskset -c 0 wrk -t1 -c32 -d600s -s "$TMP/fill.lua" "http://127.0.0.1:$BPORT" >"$TMP/wrk.out" 2>&1 &
W=$!
PIDS+=($W)
for _ in $(seq 6000); do [[ -e $TMP/done ]] && break; kill -0 $W 2>/dev/null || break; sleep 0.1; done
kill -INT $W 2>/dev/null || true
wait $W 2>/dev/null || true
[[ -e $TMP/done ]] || { echo "the fill did not finish" >&2; cat "$TMP/wrk.out" >&2; exit 1; }
after=$(rss_kib $B)
read -r faults1 ticks1 < <(faults_ticks $B)
# Idle: no request reaches B (the status request below comes after the idle reading). The
# allocator hands memory back on its own schedule: RSS a quarter of a second after, too.
sleep 0.25
soon=$(rss_kib $B)
sleep "$IDLE"
idle=$(rss_kib $B)
peak=$(hwm_kib $B)
reqs=$KEYS
status=$(curl -s -D - -o /dev/null "http://127.0.0.1:$BPORT/bytes/$SIZE/1" | tr -d '\r' | awk -F': ' 'tolower($1)=="cache-status"{print $2}')
python3 - "$BUDGET" "$SIZE" "$KEYS" "$reqs" "$before" "$after" "$status" "$idle" "$IDLE" "$peak" "$soon" \
  $((faults1 - faults0)) $((ticks1 - ticks0)) "$(getconf CLK_TCK)" <<'PY'
import sys
budget, size, keys, reqs, before, after, status, idle, idle_s, peak, soon, faults, ticks, hz = sys.argv[1:]
faults, ticks, hz = int(faults), int(ticks), int(hz)
budget, size, keys, reqs, before, after = int(budget), int(size), int(keys), int(reqs), int(before), int(after)
idle, peak, soon = int(idle), int(peak), int(soon)
held = budget * 1024 * 1024 / size
print(f"budget            {budget} MiB (bodies alone: {held:,.0f} objects of {size} B)")
print(f"requested         {reqs:,} distinct URLs ({reqs / held:.1f}x what the budget holds)")
print(f"RSS before        {before / 1024:.1f} MiB")
print(f"RSS after         {after / 1024:.1f} MiB")
print(f"growth            {(after - before) / 1024:.1f} MiB = {(after - before) / 1024 / budget:.2f}x the budget")
print(f"RSS after, beyond the budget  {after / 1024 - budget:.1f} MiB")
print(f"RSS 0.25 s after  {soon / 1024:.1f} MiB")
print(f"RSS after {idle_s} s idle  {idle / 1024:.1f} MiB")
print(f"RSS peak (VmHWM)  {peak / 1024:.1f} MiB")
print(f"B's CPU per miss  {ticks / hz / reqs * 1e6:.1f} us ({ticks / hz:.2f} s for the fill)")
print(f"B's page faults   {faults / reqs:.1f} per miss")
print(f"first URL now     {status}")
PY

#!/usr/bin/env bash
# budget-sizes.sh - does the memory budget hold for every object size? Runs benches/budget.sh
# once per size (1 KiB, 64 KiB, 1 MiB, 4 MiB), each pushing --times K budgets (default 5) of
# distinct objects through a fresh node, and prints one table: RSS right after the fill, 0.25 s
# later, after --idle S seconds without a request (default 5), and the peak during the fill, against the
# limit 1.25 x budget + 32 MiB; and what a miss cost the node (CPU time and minor page faults per
# request during the fill).
#
#   cargo build --release && benches/budget-sizes.sh [--budget-mib N] [--times K] [--idle S] [--preallocate]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUDGET=64 TIMES=5 IDLE=5 MORE=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --budget-mib) BUDGET=$2; shift 2 ;;
    --times) TIMES=$2; shift 2 ;;
    --idle) IDLE=$2; shift 2 ;;
    --preallocate) MORE+=(--preallocate); shift ;;
    *) echo "usage: $0 [--budget-mib N] [--times K] [--idle S] [--preallocate]" >&2; exit 2 ;;
  esac
done
LIMIT=$(( BUDGET * 5 / 4 + 32 ))
printf '| object size | pushed | RSS after the fill | 0.25 s later | after %s s idle | peak (VmHWM) | limit | held | CPU per miss | faults per miss |\n' "$IDLE"
printf '|---|---|---|---|---|---|---|---|---|---|\n'
for size in 1024 65536 1048576 4194304; do
  out=$("$ROOT/benches/budget.sh" --budget-mib "$BUDGET" --times "$TIMES" --size "$size" --idle "$IDLE" "${MORE[@]}")
  python3 - "$size" "$BUDGET" "$TIMES" "$LIMIT" <<PY
import re, sys
size, budget, times, limit = map(int, sys.argv[1:])
out = """$out"""
def mib(label):
    m = re.search(r"^" + re.escape(label) + r"\s+([0-9.]+) MiB", out, re.M)
    return float(m.group(1))
after, soon, idle = mib("RSS after"), mib("RSS 0.25 s after"), mib("RSS after $IDLE s idle")
peak = mib("RSS peak (VmHWM)")
name = f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"
held = "yes" if max(after, soon, idle) <= limit else "no"
cpu = float(re.search(r"^B's CPU per miss\s+([0-9.]+) us", out, re.M).group(1))
faults = float(re.search(r"^B's page faults\s+([0-9.]+) per miss", out, re.M).group(1))
print(f"| {name} | {times * budget} MiB | {after:.1f} MiB | {soon:.1f} MiB | {idle:.1f} MiB | {peak:.1f} MiB | {limit} MiB | {held} "
      f"| {cpu:.1f} us | {faults:.1f} |")
PY
done

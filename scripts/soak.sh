#!/usr/bin/env bash
# Bounded soaks of the release binary (issue 23): scripts/soak.py runs each against its own
# edgecache, origin and Redis on free loopback ports, for --duration seconds, and prints its
# figures and whether it met its target; exit 1 when one missed.
#
#   scripts/soak.sh [--duration S] [--only hot-set,cache-busting,redis-chaos,expiry-storm,conn-abuse]
#
# Uses target/release/edgecache (built when missing), or EDGECACHE_BIN. Needs python3 and
# redis-server (for redis-chaos).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=${EDGECACHE_BIN:-}
if [[ -z $BIN ]]; then
    BIN=$(realpath -m "${CARGO_TARGET_DIR:-target}/release/edgecache")
    [[ -x $BIN ]] || cargo build --release --bin edgecache
fi
for tool in python3 redis-server; do
    command -v "$tool" >/dev/null || { echo "soak.sh needs $tool" >&2; exit 1; }
done
# Hundreds of connections at once from one process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 scripts/soak.py --binary "$BIN" "$@"

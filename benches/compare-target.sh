#!/usr/bin/env bash
# compare-target.sh - edgecache as a target of the shared side-by-side benchmark (bench/compare.sh,
# see its README, "Target contract"). Build first (cargo build --release), then, from the repo root:
#
#   bench/compare.sh --quick --only hit-1k,inm-304,miss-1k --targets varnish,nginx,upper,fwd \
#       --target edgecache='exec bash "$PWD/benches/compare-target.sh"'
#
# The harness sets LISTEN, ORIGIN, STATE_DIR (fresh, on tmpfs) and CACHE_MB. The proxy runs in
# the foreground (exec: SIGTERM reaches it), without access log; tokio sizes its workers from
# the CPU affinity compare.sh gives it. EDGECACHE_BIN overrides the binary.
#
# Configured as a dedicated cache node: the memory budget claimed and faulted in at start-up
# (cache.preallocate). EDGECACHE_PREALLOCATE=false turns that off: mem-100k measures what each
# stored object adds to the RSS, which a budget resident from the start hides, so it runs so.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${EDGECACHE_BIN:-$ROOT/target/release/edgecache}
PREALLOCATE=${EDGECACHE_PREALLOCATE:-true}
: "${LISTEN:?set by compare.sh}" "${ORIGIN:?set by compare.sh}" "${STATE_DIR:?set by compare.sh}"

cat >"$STATE_DIR/edgecache.toml" <<CONF
[cache]
memory = "${CACHE_MB:-4096}MiB"
max_object_size = "4MiB"
preallocate = $PREALLOCATE
CONF
exec "$BIN" --config "$STATE_DIR/edgecache.toml" --listen "$LISTEN" --origin "$ORIGIN" --no-access-log

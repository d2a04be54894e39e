#!/usr/bin/env bash
# instructions.sh - user-space instructions per request of edgecache, counted by callgrind:
# deterministic, so two builds can be compared on a shared, noisy machine where timings cannot.
#
#   cargo build --release && benches/instructions.sh [hit|inm|miss] [BIN ...]
#   ORIGIN=nginx benches/instructions.sh miss [BIN ...]
#   KEEP=DIR benches/instructions.sh hit BIN    also keeps each callgrind dump in DIR, for
#                                               callgrind_annotate --inclusive=yes
#   EXTRA='key_version = "r1"\n' benches/instructions.sh hit BIN
#                                               the measured node's file gets these lines after
#                                               its [cache] table
#
# The origin runs natively: node A (`--demo`, /bytes/1024/<path>, itself an edgecache, so its
# responses carry `Via` and `Cache-Status` as in a tiered setup), or with ORIGIN=nginx an nginx
# serving one 1 KiB file for every path with `Cache-Control: public, max-age=3600`, `ETag` and
# `Last-Modified`, as the side-by-side harness's origin does. The measured node runs under
# `valgrind --tool=callgrind`; wrk drives it for a warm-up, counters are zeroed, then 4 s are
# counted and divided by the requests wrk completed. Kernel work (the socket calls) is not
# counted, and SHA-256 runs its portable code under valgrind (no SHA extensions), so the key
# digest weighs more here than on the CPU. Needs: valgrind, wrk, curl.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SC=${1:-hit}
shift || true
BINS=("$@")
[[ ${#BINS[@]} -gt 0 ]] || BINS=("$ROOT/target/release/edgecache")
case $SC in hit | inm | miss) ;; *) echo "usage: $0 [hit|inm|miss] [BIN ...]" >&2; exit 2 ;; esac
source "$ROOT/benches/lib.sh"
needs valgrind callgrind_control callgrind_annotate wrk curl


APORT=$(free_port)
# EXTRA: more lines for the measured node's file, after its [cache] table (printf %b escapes).
printf '[cache]\nmemory = "1GiB"\n%b' "${EXTRA:-}" >"$TMP/b.toml"
case ${ORIGIN:-demo} in
  demo)
    printf '[cache]\nmemory = "1MiB"\nmax_object_size = "64KiB"\n' >"$TMP/a.toml"
    "${BINS[0]}" --config "$TMP/a.toml" --demo --listen "127.0.0.1:$APORT" --no-access-log >"$TMP/a.log" 2>&1 &
    PIDS+=($!)
    wait_http "127.0.0.1:$APORT"
    HOT=/bytes/1024/hot MISS=/bytes/1024/ ;;
  nginx)
    needs nginx
    nginx_origin "$APORT" 3600
    HOT=/hit/1k MISS=/u/ ;;
  *) echo "ORIGIN is demo or nginx" >&2; exit 2 ;;
esac
cat >"$TMP/miss.lua" <<LUA
local n = 0
local nonce = os.getenv("NONCE") or "0"
function request() n = n + 1; return wrk.format(nil, "$MISS" .. nonce .. "-" .. n) end
LUA

for bin in "${BINS[@]}"; do
  BPORT=$(free_port)
  valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.out" "$bin" --config "$TMP/b.toml" \
    --origin "http://127.0.0.1:$APORT" --listen "127.0.0.1:$BPORT" --no-access-log >"$TMP/b.log" 2>&1 &
  B=$!
  wait_http "127.0.0.1:$BPORT"
  url="http://127.0.0.1:$BPORT$HOT"
  etag=$(curl -s -D - -o /dev/null "$url" | tr -d '\r' | awk -F': ' 'tolower($1)=="etag"{print $2}')
  case $SC in
    hit) args=("$url") ;;
    inm) args=(-H "If-None-Match: $etag" "$url") ;;
    miss) args=(-s "$TMP/miss.lua" "http://127.0.0.1:$BPORT/") ;;
  esac
  NONCE=w$RANDOM wrk -t1 -c20 -d2s "${args[@]}" >/dev/null 2>&1
  rm -f "$TMP"/cg.out.*
  callgrind_control -z $B >/dev/null 2>&1
  out=$(NONCE=r$RANDOM wrk -t1 -c20 -d4s "${args[@]}" 2>&1)
  callgrind_control -d $B >/dev/null 2>&1
  reqs=$(echo "$out" | awk '/requests in/{print $1}')
  dump=$(ls "$TMP"/cg.out.* | head -1)
  if [[ -n ${KEEP:-} ]]; then mkdir -p "$KEEP"; cp "$dump" "$KEEP/$SC-$(basename "$bin").callgrind"; fi
  ir=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1; exit}')
  per=$(awk -v a="$ir" -v b="$reqs" 'BEGIN { printf "%.0f", a / b }')
  printf '%-5s %-40s %7d requests  %7s instructions/request\n' "$SC" "$bin" "$reqs" "$per"
  kill $B 2>/dev/null || true
  wait $B 2>/dev/null || true
done

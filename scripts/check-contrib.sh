#!/usr/bin/env bash
# check-contrib.sh - checks the deployment files in contrib/: the systemd units (service and
# socket) pass `systemd-analyze verify` (with the binary and configuration paths pointed at this
# checkout), and the configuration they name is valid.
#
#   scripts/check-contrib.sh [BIN]      BIN defaults to target/debug/edgecache (built if missing)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${1:-$ROOT/target/debug/edgecache}
[[ -x $BIN ]] || (cd "$ROOT" && cargo build --bin edgecache)
command -v systemd-analyze >/dev/null || { echo "systemd-analyze is required (Debian package systemd)" >&2; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
sed "s|/usr/local/bin/edgecache|$BIN|g; s|/etc/edgecache/proxy.toml|$ROOT/proxy.toml|g" \
    "$ROOT/contrib/edgecache.service" >"$TMP/edgecache.service"
cp "$ROOT/contrib/edgecache.socket" "$TMP/edgecache.socket"
systemd-analyze verify "$TMP/edgecache.service" "$TMP/edgecache.socket"
"$BIN" --config "$ROOT/proxy.toml" --check-config
echo "contrib/edgecache.service, contrib/edgecache.socket: ok"

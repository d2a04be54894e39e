#!/usr/bin/env bash
# The test command (README): makes sure redis-server is available — the shared-tier tests start
# their own on free loopback ports, and fail rather than skip without it — then runs cargo test.
# Arguments are passed to cargo test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v redis-server >/dev/null; then
    echo "redis-server not found; installing it (Debian/Ubuntu package redis-server)" >&2
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server </dev/null
    elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
        sudo apt-get update -qq
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server </dev/null
    else
        echo "cannot install redis-server here: install it (apt-get install redis-server, brew install redis) and rerun" >&2
        exit 1
    fi
fi
exec cargo test "$@"

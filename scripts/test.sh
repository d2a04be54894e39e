#!/usr/bin/env bash
# The test command (README): makes sure redis-server and memcached are available — the shared-tier
# tests start their own on free loopback ports, and fail rather than skip without it — then runs cargo test.
# Arguments are passed to cargo test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v memcached >/dev/null || missing+=(memcached)
if ((${#missing[@]})); then
    echo "${missing[*]} not found; installing (Debian/Ubuntu packages ${missing[*]})" >&2
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" </dev/null
    elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
        sudo apt-get update -qq
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" </dev/null
    else
        echo "cannot install ${missing[*]} here: install them (apt-get install redis-server memcached) and rerun" >&2
        exit 1
    fi
fi
exec cargo test "$@"

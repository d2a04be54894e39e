#!/usr/bin/env bash
# The test command (README): makes sure what the tests start is installed — redis-server and
# memcached (the shared-tier tests start their own on free loopback ports), openssl (RSA keys
# for the TLS tests) and chromium (the status page in a real browser) — installing the missing
# Debian packages, then runs cargo test. The tests fail rather than skip without them.
# Arguments are passed to cargo test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v memcached >/dev/null || missing+=(memcached)
command -v openssl >/dev/null || missing+=(openssl)
command -v chromium >/dev/null || missing+=(chromium)
if ((${#missing[@]})); then
    echo "not found: ${missing[*]}; installing the Debian/Ubuntu packages" >&2
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" </dev/null
    elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
        sudo apt-get update -qq
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" </dev/null
    else
        echo "cannot install ${missing[*]} here: install them (apt-get install ${missing[*]}) and rerun" >&2
        exit 1
    fi
fi
exec cargo test "$@"

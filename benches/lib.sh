# lib.sh - what the bench scripts share: a scratch directory and the processes to stop with it,
# free loopback ports, waiting for a server to answer, required tools. Sourced, not run.

TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

# needs TOOL...: exits with a message when one is missing.
needs() { for t in "$@"; do command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 1; }; done; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_http HOST:PORT: waits (up to 30 s) for an HTTP answer; on failure shows the logs in $TMP.
wait_http() {
  for _ in $(seq 300); do curl -s -o /dev/null "http://$1/" && return 0; sleep 0.1; done
  echo "no answer on $1" >&2
  cat "$TMP"/*.log >&2 2>/dev/null || true
  exit 1
}

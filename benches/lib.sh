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

# nginx_origin PORT MAX_AGE [ACCESS_LOG]: starts the origin the benchmarks share, an nginx on
# 127.0.0.1:PORT answering every path with one 1 KiB file (Cache-Control: public,
# max-age=MAX_AGE; nginx adds ETag and Last-Modified), its request count at /__status
# (stub_status) and, when ACCESS_LOG is a path, one log line per request there ("off" by
# default); waits until it answers. Its log is $TMP/origin.log.
nginx_origin() {
  local port=$1 max_age=$2 access_log=${3:-off} user=""
  mkdir -p "$TMP/nginx/tmp"
  head -c 1024 /dev/urandom >"$TMP/nginx/1k"
  # Workers run as root when the master does: the scratch directory is the caller's alone.
  [[ $(id -u) == 0 ]] && user="user root;"
  cat >"$TMP/nginx/nginx.conf" <<CONF
$user
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
    access_log $access_log;
    keepalive_requests 10000000;
    client_body_temp_path $TMP/nginx/tmp;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$port;
        root $TMP/nginx;
        location = /__status { stub_status; }
        location / { add_header Cache-Control "public, max-age=$max_age"; try_files /1k =404; }
    }
}
CONF
  nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' >"$TMP/origin.log" 2>&1 &
  PIDS+=($!)
  wait_http "127.0.0.1:$port"
}

#!/usr/bin/env bash
# tls.sh - edgecache's TLS listener against Debian's nginx (proxy_cache, ssl, http2) with the same
# certificate, in one run, quoted as ratios.
#
#   cargo build --release && benches/tls.sh [--rounds N] [--duration S] [--conns N] [--key ecdsa|rsa]
#
# Scenarios, each server alone on CPU 1 in turn (rounds interleave them: E N E N ...):
#   hit-1k-h1      wrk, 50 keep-alive HTTP/1.1 connections over TLS, one cached 1 KiB URL
#   hit-1k-h2      h2load, 50 HTTP/2 connections (ALPN h2), 10 streams each, the same URL
#   handshakes     wrk with "Connection: close": every request a new TCP connection and a full
#                  TLS handshake (wrk keeps no session), so req/s = new handshakes per second
# The origin (nginx, one worker, a 1 KiB file with max-age=3600) and the load generator share
# CPU 0. srv us/req is the server's CPU time (user + system, all its threads or workers) per
# request: when the load generator is the limit it is the figure to compare.
# Certificate: a test CA and a leaf for bench.test and 127.0.0.1 (ECDSA P-256, or RSA 2048 with
# --key rsa), made by openssl; clients connect to 127.0.0.1, so both servers answer with their
# default certificate. TLS 1.2 and 1.3 offered; the clients settle on TLS 1.3.
# Needs: nginx wrk h2load (apt-get install nghttp2-client) openssl curl taskset python3.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${EDGECACHE_BIN:-$ROOT/target/release/edgecache}
ROUNDS=3 DURATION=10 CONNS=50 KEY=ecdsa
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --key) KEY=$2; shift 2 ;;
    *) echo "usage: $0 [--rounds N] [--duration S] [--conns N] [--key ecdsa|rsa]" >&2; exit 2 ;;
  esac
done
source "$ROOT/benches/lib.sh"
needs nginx wrk h2load openssl curl taskset python3
[[ -x $BIN ]] || { echo "build first: cargo build --release ($BIN)" >&2; exit 1; }

# --- certificate -----------------------------------------------------------------------------
cd "$TMP"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=bench CA" \
  -keyout ca.key -out ca.pem 2>/dev/null
case $KEY in
  ecdsa) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out leaf.key 2>/dev/null ;;
  rsa) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out leaf.key 2>/dev/null ;;
  *) echo "--key ecdsa|rsa" >&2; exit 2 ;;
esac
openssl req -new -key leaf.key -subj "/CN=bench.test" -out leaf.csr 2>/dev/null
printf 'subjectAltName=DNS:bench.test,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >leaf.ext
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -extfile leaf.ext \
  -out leaf.pem 2>/dev/null
cd - >/dev/null

# --- origin ----------------------------------------------------------------------------------
OPORT=$(free_port)
mkdir -p "$TMP/www" "$TMP/origin"
head -c 1024 /dev/urandom >"$TMP/www/1k"
cat >"$TMP/origin.conf" <<EOF
worker_processes 1;
user root;
pid $TMP/origin/nginx.pid;
error_log stderr warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 10000000; keepalive_timeout 300s;
  client_body_temp_path $TMP/origin;
  server {
    listen 127.0.0.1:$OPORT backlog=4096;
    root $TMP/www;
    location ~ "/(?<obj>1k)\$" { add_header Cache-Control "public, max-age=3600"; try_files /\$obj =404; }
  }
}
EOF
taskset -c 0 nginx -e stderr -p "$TMP/origin" -c "$TMP/origin.conf" -g 'daemon off;' >"$TMP/origin.log" 2>&1 &
PIDS+=($!)
wait_http "127.0.0.1:$OPORT"

# --- servers ---------------------------------------------------------------------------------
PORT=$(free_port)
SERVER_PIDS=()

start_edgecache() {
  cat >"$TMP/edgecache.toml" <<EOF
origin = "http://127.0.0.1:$OPORT"
[cache]
memory = "256MiB"
[log]
access = false
[[listener]]
address = "127.0.0.1:$PORT"
tls = true
[[listener.certificate]]
chain = "$TMP/leaf.pem"
key = "$TMP/leaf.key"
EOF
  taskset -c 1 "$BIN" --config "$TMP/edgecache.toml" >"$TMP/edgecache.log" 2>&1 &
  SERVER_PIDS=($!)
}

start_nginx() {
  rm -rf "$TMP/nginx" && mkdir -p "$TMP/nginx"
  cat >"$TMP/nginx.conf" <<EOF
worker_processes 1;
user root;
pid $TMP/nginx/nginx.pid;
error_log stderr warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 10000000; keepalive_timeout 300s;
  client_body_temp_path $TMP/nginx/body;
  proxy_temp_path $TMP/nginx/ptmp;
  proxy_cache_path $TMP/nginx/cache levels=1:2 keys_zone=edge:16m use_temp_path=off;
  upstream origin { server 127.0.0.1:$OPORT; keepalive 64; }
  ssl_certificate $TMP/leaf.pem;
  ssl_certificate_key $TMP/leaf.key;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_cache shared:SSL:10m;
  ssl_session_tickets on;
  server {
    listen 127.0.0.1:$PORT ssl http2 backlog=4096;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache edge;
    }
  }
}
EOF
  taskset -c 1 nginx -e stderr -p "$TMP/nginx" -c "$TMP/nginx.conf" -g 'daemon off;' >"$TMP/nginx.log" 2>&1 &
  SERVER_PIDS=($!)
}

stop_server() {
  for p in "${SERVER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  SERVER_PIDS=()
}

wait_https() {
  for _ in $(seq 300); do
    curl -s -o /dev/null --cacert "$TMP/ca.pem" "https://127.0.0.1:$PORT/hit/1k" && return 0
    sleep 0.1
  done
  echo "no TLS answer on $PORT" >&2; cat "$TMP"/edgecache.log "$TMP"/nginx.log >&2 2>/dev/null || true; exit 1
}

# CPU ticks (user + system) of the server's processes: the process and its children (nginx's
# worker), all threads.
server_ticks() {
  local pids=("${SERVER_PIDS[@]}")
  for p in "${SERVER_PIDS[@]}"; do pids+=($(pgrep -P "$p" || true)); done
  python3 - "${pids[@]}" <<'PY'
import sys
total = 0
for pid in sys.argv[1:]:
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    except OSError:
        pass
print(total)
PY
}

TICK=$(getconf CLK_TCK)
# run SCENARIO: prints "req/s us/req" for the server running now.
run() {
  local out before after rps n
  before=$(server_ticks)
  case $1 in
    hit-1k-h1)
      out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" "https://127.0.0.1:$PORT/hit/1k")
      rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
      n=$(awk '/requests in/ {print $1}' <<<"$out") ;;
    handshakes)
      out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "Connection: close" "https://127.0.0.1:$PORT/hit/1k")
      rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
      n=$(awk '/requests in/ {print $1}' <<<"$out") ;;
    hit-1k-h2)
      out=$(taskset -c 0 h2load -t1 -c"$CONNS" -m10 -D"$DURATION" "https://127.0.0.1:$PORT/hit/1k")
      rps=$(awk '/^finished in/ {print $4}' <<<"$out")
      n=$(awk '/^requests:/ {print $8}' <<<"$out")
      awk '/^requests:/ && $10 + $12 > 0 {print "h2load: " $0; exit 1}' <<<"$out" >&2 || true ;;
  esac
  after=$(server_ticks)
  if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
    echo "$1: errors:" >&2; grep -E 'Non-2xx|Socket errors' <<<"$out" >&2
  fi
  python3 -c "import sys; r,n,t,hz=map(float,sys.argv[1:]); print(f'{r:.0f} {t/hz*1e6/max(n,1):.1f}')" \
    "$rps" "$n" "$((after - before))" "$TICK"
}

SCENARIOS=(hit-1k-h1 hit-1k-h2 handshakes)
declare -A RESULTS
for round in $(seq "$ROUNDS"); do
  for target in edgecache nginx; do
    "start_$target"
    wait_https
    # Stored before measuring; a short warm-up.
    for _ in 1 2 3; do curl -s -o /dev/null --cacert "$TMP/ca.pem" "https://127.0.0.1:$PORT/hit/1k"; done
    taskset -c 0 wrk -t1 -c"$CONNS" -d2s "https://127.0.0.1:$PORT/hit/1k" >/dev/null
    for sc in "${SCENARIOS[@]}"; do
      RESULTS[$sc,$target,$round]=$(run "$sc")
      echo "round $round $target $sc: ${RESULTS[$sc,$target,$round]}" >&2
    done
    stop_server
  done
done

# Median of the rounds per scenario and target, then the ratio edgecache / nginx.
echo
echo "TLS, $KEY certificate, $ROUNDS round(s) x ${DURATION}s, $CONNS connections, $(date -u '+%Y-%m-%d %H:%M UTC')"
printf '%-12s %14s %10s %14s %10s %8s\n' scenario edgecache_rps us/req nginx_rps us/req ratio
for sc in "${SCENARIOS[@]}"; do
  e=() n=()
  for round in $(seq "$ROUNDS"); do e+=("${RESULTS[$sc,edgecache,$round]}"); n+=("${RESULTS[$sc,nginx,$round]}"); done
  python3 - "$sc" "${#e[@]}" "${e[@]}" "${n[@]}" <<'PY'
import statistics, sys
sc, k = sys.argv[1], int(sys.argv[2])
vals = sys.argv[3:]
e = [tuple(map(float, v.split())) for v in vals[:k]]
n = [tuple(map(float, v.split())) for v in vals[k:]]
med = lambda xs, i: statistics.median(x[i] for x in xs)
print(f"{sc:<12} {med(e,0):14.0f} {med(e,1):10.1f} {med(n,0):14.0f} {med(n,1):10.1f} {med(e,0)/med(n,0):7.2f}x")
PY
done

#!/usr/bin/env bash
# What TLS costs Switchyard, beside nginx doing the same, in one run.
#
#   bash benches/tls.sh            (after `cargo build --release`; ~6 min)
#
# Placement as in ../shared/bench/peers.sh: the proxy alone on CPU 0 with one
# worker; wrk and the upstream nginx (one worker) on CPU 1. Each proxy serves
# cleartext and TLS from one process, proxying to the same upstream.
#
# Loads (wrk -t1, DURATION s measured after WARMUP s, ROUNDS rounds, the two
# proxies alternating):
#   http        GET /small over cleartext keep-alive connections (64)
#   https       GET /small over TLS keep-alive connections (64)
#   resumed     GET /small over TLS with `Connection: close` (wrk, 16
#               connections): every request is a new TCP connection and a
#               TLS handshake, which wrk resumes from its last session
#   full        the same with session resumption off, so every connection
#               is a full handshake with a certificate signature
#               (examples/handshakes.rs, 16 connections)
# In the last two, req/s is new connections per second.
# For each cell: req/s and the proxy's CPU per request (utime+stime from
# /proc/PID/stat over the measured run). Medians of the rounds are printed.
#
# Environment: ROUNDS=3 DURATION=10 WARMUP=2 KEY=ec (ec: ECDSA P-256; rsa:
# RSA 2048, what many CAs still issue by default).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
KEY=${KEY:-ec}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/../shared/bench
BIN=$ROOT/target/release/switchyard
WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-tls.XXXXXX")
CLK_TCK=$(getconf CLK_TCK)
trap 'pkill -P $$ 2>/dev/null || true; for p in "$WORK"/*/nginx.pid; do [ -f "$p" ] && kill "$(cat "$p" 2>/dev/null)" 2>/dev/null; done; true' EXIT

for tool in nginx wrk openssl curl taskset; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install -y nginx wrk openssl curl)" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }

# A CA of the run's own and a certificate for bench.test that it signs.
case $KEY in
  ec) NEWKEY=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
  rsa) NEWKEY=(-newkey rsa:2048) ;;
  *) echo "KEY is ec or rsa" >&2; exit 1 ;;
esac
openssl req -x509 "${NEWKEY[@]}" -nodes -keyout "$WORK/ca.key" -out "$WORK/ca.pem" \
  -days 30 -subj /CN=bench-ca 2>/dev/null
openssl req "${NEWKEY[@]}" -nodes -keyout "$WORK/key.pem" -out "$WORK/leaf.csr" \
  -subj /CN=bench.test 2>/dev/null
printf 'subjectAltName=DNS:bench.test\nbasicConstraints=CA:FALSE\n' > "$WORK/leaf.ext"
openssl x509 -req -in "$WORK/leaf.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
  -CAcreateserial -days 30 -extfile "$WORK/leaf.ext" -out "$WORK/cert.pem" 2>/dev/null
(cd "$ROOT" && cargo build --release --example handshakes -q)
HANDSHAKES=$ROOT/target/release/examples/handshakes

nginx_prefix() {
  mkdir -p "$WORK/$1/tmp" "$WORK/$1/www"
  echo "$WORK/$1"
}

start_upstream() {
  local prefix; prefix=$(nginx_prefix upstream)
  taskset -c 1 nginx -p "$prefix/" -e "$prefix/error.log" -c "$BENCH/conf/upstream.conf" -g 'daemon off;' &
  wait_for http://127.0.0.1:18081/small
}

start_nginx() {
  local prefix; prefix=$(nginx_prefix nginx-tls)
  sed -e "s#listen 127.0.0.1:18090 backlog=4096;#listen 127.0.0.1:18090 backlog=4096;\n        listen 127.0.0.1:18443 ssl backlog=4096;\n        ssl_certificate $WORK/cert.pem;\n        ssl_certificate_key $WORK/key.pem;\n        ssl_protocols TLSv1.2 TLSv1.3;#" \
    "$BENCH/conf/nginx-proxy.conf" > "$prefix/nginx.conf"
  taskset -c 0 nginx -p "$prefix/" -e "$prefix/error.log" -c "$prefix/nginx.conf" -g 'daemon off;' &
  PROXY_PID=$!
  wait_for http://127.0.0.1:18090/small
}

start_switchyard() {
  printf 'routes:\n  all:\n    prefix: /\n    upstream: http://127.0.0.1:18081\n' > "$WORK/routes.yaml"
  SWITCHYARD_LOG=warn taskset -c 0 "$BIN" --config "$WORK/routes.yaml" --workers 1 \
    --listen 127.0.0.1:18090 --admin 127.0.0.1:19901 --tls-listen 127.0.0.1:18443 \
    --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem" 2>"$WORK/switchyard.log" &
  PROXY_PID=$!
  wait_for http://127.0.0.1:18090/small
}

wait_for() {
  for _ in $(seq 1 100); do
    curl -sf -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "nothing answers at $1" >&2
  exit 1
}

cpu_ticks() {
  local total=0 pid
  for pid in $(pgrep -P "$PROXY_PID") "$PROXY_PID"; do
    # Fields 14 and 15 (utime, stime); the name in field 2 may hold spaces.
    total=$((total + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')))
  done
  echo "$total"
}

# run LOAD -> "req/s cpu_us_per_req"
run_load() {
  local url args=() before after out requests
  if [ "$1" = full ]; then
    taskset -c 1 "$HANDSHAKES" 127.0.0.1:18443 bench.test "$WORK/ca.pem" "$WARMUP" 16 >/dev/null
    before=$(cpu_ticks)
    out=$(taskset -c 1 "$HANDSHAKES" 127.0.0.1:18443 bench.test "$WORK/ca.pem" "$DURATION" 16)
    after=$(cpu_ticks)
    requests=$(awk '{print $1}' <<<"$out")
  else
    case $1 in
      http) url=http://127.0.0.1:18090/small; args=(-c64) ;;
      https) url=https://127.0.0.1:18443/small; args=(-c64) ;;
      resumed) url=https://127.0.0.1:18443/small; args=(-c16 -H 'Connection: close') ;;
    esac
    taskset -c 1 wrk -t1 "${args[@]}" -d"${WARMUP}s" "$url" >/dev/null
    before=$(cpu_ticks)
    out=$(taskset -c 1 wrk -t1 "${args[@]}" -d"${DURATION}s" "$url")
    after=$(cpu_ticks)
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
  fi
  awk -v r="$requests" -v d="$DURATION" -v t=$((after - before)) -v hz="$CLK_TCK" \
    'BEGIN { printf "%.0f %.1f\n", r / d, (t / hz) * 1e6 / r }'
}

RESULTS=$WORK/results.tsv
start_upstream
for round in $(seq 1 "$ROUNDS"); do
  targets=(switchyard nginx)
  [ $((round % 2)) -eq 0 ] && targets=(nginx switchyard)
  for target in "${targets[@]}"; do
    "start_$target"
    for load in http https resumed full; do
      read -r rate cpu < <(run_load "$load")
      printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$target" "$load" "$rate" "$cpu" | tee -a "$RESULTS" >&2
    done
    kill "$PROXY_PID"; wait "$PROXY_PID" 2>/dev/null || true
  done
done

echo
echo "key: $KEY; medians of $ROUNDS rounds of ${DURATION}s; proxy on CPU 0, wrk + upstream on CPU 1"
echo
echo "| target | load | req/s | CPU µs/req |"
echo "|---|---|---:|---:|"
for target in nginx switchyard; do
  for load in http https resumed full; do
    awk -F'\t' -v t="$target" -v l="$load" '$2 == t && $3 == l { print $4, $5 }' "$RESULTS" |
      sort -n | awk -v t="$target" -v l="$load" '{ r[NR] = $1; c[NR] = $2 } END {
        m = int((NR + 1) / 2); printf "| %s | %s | %d | %.1f |\n", t, l, r[m], c[m] }'
  done
done

#!/usr/bin/env bash
# Throughput and latency of Switchyard against nginx in the same run, on the
# same upstream, with the same load generator. Loopback only; every load run
# is bounded by wrk's --duration.
#
#   bash benches/vs_nginx.sh              # DURATION=10s CONNECTIONS=32
#
# Needs nginx and wrk (Debian: apt-get install -y nginx-light wrk).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
UP_PORT=19201 SY_PORT=19280 SY_ADMIN=19290 NGX_PORT=19380

command -v nginx >/dev/null && command -v wrk >/dev/null || {
  echo "needs nginx and wrk: apt-get install -y nginx-light wrk" >&2; exit 1; }
cargo build --release --quiet --bin switchyard --example upstream
work=$(mktemp -d)
cleanup() {
  kill "${router:-}" "${upstream:-}" 2>/dev/null || true
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/routes.yaml" <<YAML
routes:
  app:
    prefix: /
    upstream: http://127.0.0.1:$UP_PORT
  hello:
    prefix: /hello
    respond: { status: 200, body: "hello\n" }
YAML
# nginx set up the way a production proxy is: keep-alive to the upstream,
# HTTP/1.1, no access log (Switchyard's access log is off below the default
# info level too when SWITCHYARD_LOG=warn; see the note printed at the end).
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  upstream app { server 127.0.0.1:$UP_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGX_PORT;
    location /hello { return 200 "hello\n"; }
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
CONF

target/release/examples/upstream "127.0.0.1:$UP_PORT" 2>/dev/null & upstream=$!
SWITCHYARD_LOG=${SWITCHYARD_LOG:-warn} target/release/switchyard --config "$work/routes.yaml" \
  --listen "127.0.0.1:$SY_PORT" --admin "127.0.0.1:$SY_ADMIN" 2>/dev/null & router=$!
nginx -c "$work/nginx.conf" -p "$work" -e "$work/error.log"
for _ in $(seq 100); do
  curl -sf "127.0.0.1:$SY_ADMIN/readyz" >/dev/null && curl -sf "127.0.0.1:$NGX_PORT/hello" >/dev/null && break
  sleep 0.05
done

# Prints "requests/s p50_ms p99_ms" for one bounded wrk run.
measure() {
  wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$1" 2>/dev/null | awk '
    /Requests\/sec/ { rps = $2 }
    $1 == "50%" { p50 = $2 } $1 == "99%" { p99 = $2 }
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    END { printf "%.0f %.3f %.3f\n", rps, ms(p50), ms(p99) }'
}

printf "%-34s %10s %9s %9s\n" "target ($CONNECTIONS connections, $DURATION)" "req/s" "p50 ms" "p99 ms"
# row LABEL URL: measures and prints one row; leaves requests/s in $RPS.
row() {
  local p50 p99
  read -r RPS p50 p99 <<<"$(measure "$2")"
  printf "%-34s %10s %9s %9s\n" "$1" "$RPS" "$p50" "$p99"
}
row "upstream direct" "http://127.0.0.1:$UP_PORT/"
row "switchyard -> upstream" "http://127.0.0.1:$SY_PORT/"; sy_proxy=$RPS
row "nginx -> upstream" "http://127.0.0.1:$NGX_PORT/"; ngx_proxy=$RPS
row "switchyard respond route" "http://127.0.0.1:$SY_PORT/hello"; sy_respond=$RPS
row "nginx return 200" "http://127.0.0.1:$NGX_PORT/hello"; ngx_respond=$RPS
echo
awk -v a="$sy_proxy" -v b="$ngx_proxy" 'BEGIN { printf "proxying: switchyard/nginx throughput ratio %.2f\n", a / b }'
awk -v a="$sy_respond" -v b="$ngx_respond" 'BEGIN { printf "fixed response: switchyard/nginx throughput ratio %.2f\n", a / b }'
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); wrk, proxy and upstream share them"

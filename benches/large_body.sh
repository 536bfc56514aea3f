#!/usr/bin/env bash
# Streams a 1 GiB download and a 1 GiB upload through the release router and
# reports its peak resident memory (VmHWM), to show that bodies are streamed,
# never buffered whole. Loopback only; each transfer is bounded by --max-time.
#
#   bash benches/large_body.sh            # SIZE=1073741824 by default
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-1073741824}
UP_PORT=${UP_PORT:-19101}
PROXY_PORT=${PROXY_PORT:-19180}
ADMIN_PORT=${ADMIN_PORT:-19190}

cargo build --release --quiet --bin switchyard --example upstream
work=$(mktemp -d)
cleanup() { kill "${router:-}" "${upstream:-}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

cat > "$work/routes.yaml" <<YAML
routes:
  blob:
    prefix: /
    upstream: http://127.0.0.1:$UP_PORT
YAML
target/release/examples/upstream "127.0.0.1:$UP_PORT" 2>/dev/null & upstream=$!
SWITCHYARD_LOG=warn target/release/switchyard --config "$work/routes.yaml" \
  --listen "127.0.0.1:$PROXY_PORT" --admin "127.0.0.1:$ADMIN_PORT" & router=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$ADMIN_PORT/readyz" >/dev/null && break; sleep 0.05; done

hwm() { awk '/VmHWM/ {print $2 " " $3}' "/proc/$router/status"; }
echo "router VmHWM at start:        $(hwm)"

start=$(date +%s.%N)
got=$(curl -sS --max-time 120 "127.0.0.1:$PROXY_PORT/bytes/$SIZE" | wc -c)
end=$(date +%s.%N)
echo "download: $got bytes in $(echo "$end - $start" | bc) s; VmHWM $(hwm)"
[ "$got" = "$SIZE" ] || { echo "download size mismatch"; exit 1; }

start=$(date +%s.%N)
sunk=$(head -c "$SIZE" /dev/zero | curl -sS --max-time 120 -X POST -T - "127.0.0.1:$PROXY_PORT/sink")
end=$(date +%s.%N)
echo "upload:   $sunk bytes in $(echo "$end - $start" | bc) s; VmHWM $(hwm)"
[ "$sunk" = "$SIZE" ] || { echo "upload size mismatch"; exit 1; }

#!/usr/bin/env bash
# candidate.sh - what a shadow candidate table costs each request (SPEC 10.1).
#
# USAGE (from the project's root, after `cargo build --release`):
#   benches/candidate.sh
#
# ENVIRONMENT
#   SWITCHYARD=target/release/switchyard   DURATION=10 (seconds of the wrk load)
# NEEDS valgrind, nginx, h2load (for ../shared/bench/instructions.sh), wrk, curl, python3.
#
# 1. Instructions per small GET (../shared/bench/instructions.sh) with no candidate, with a
#    shadow candidate that routes every request as the live table does, and with one that
#    moves every request to another route (each request then counts a move). The candidate
#    is loaded before the first request with the hidden `--shadow-candidate PATH`, which
#    does what `POST /candidate?mode=shadow` does.
# 2. The moving candidate under `wrk -c64` for DURATION seconds with 2 workers: wrk's
#    errors and non-2xx answers, and what `GET /candidate` counted.
# Everything listens on 127.0.0.1; instruction runs take /tmp/bench.lock.
set -euo pipefail

SWITCHYARD=${SWITCHYARD:-target/release/switchyard}
DURATION=${DURATION:-10}
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=${SHARED:-$HERE/../../shared/bench}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

route() { printf '  %s:\n    prefix: %s\n    upstream: http://127.0.0.1:18081\n' "$1" "$2"; }
{ echo "routes:"; route all /; } > "$work/live.yaml"
{ echo "routes:"; route all /; route other /other; } > "$work/same.yaml"
{ echo "routes:"; route all /; route small /small; } > "$work/moves.yaml"

args=(--workers 1 --config "$work/live.yaml" --listen 127.0.0.1:18093 --admin 127.0.0.1:19901)
for candidate in none same moves; do
  extra=()
  [[ $candidate != none ]] && extra=(--shadow-candidate "$work/$candidate.yaml")
  printf '%-6s ' "$candidate"
  flock /tmp/bench.lock "$SHARED/instructions.sh" 18093 "$SWITCHYARD" "${args[@]}" "${extra[@]}" | tail -1
done

mkdir -p "$work"/tmp/{body,proxy,fastcgi,uwsgi,scgi} "$work/logs"
exec 9>/tmp/bench.lock
flock 9
nginx -p "$work/" -e "$work/error.log" -c "$SHARED/conf/upstream.conf" -g 'daemon off;' &
"$SWITCHYARD" --workers 2 --config "$work/live.yaml" --listen 127.0.0.1:18093 \
  --admin 127.0.0.1:19901 --shadow-candidate "$work/moves.yaml" > "$work/switchyard.log" 2>&1 &
for _ in $(seq 50); do
  curl -sf -o /dev/null http://127.0.0.1:18093/small && break
  sleep 0.1
done
wrk -t2 -c64 -d"${DURATION}s" http://127.0.0.1:18093/small | grep -E 'requests in|Non-2xx|Socket errors' || true
curl -s http://127.0.0.1:19901/candidate | python3 -c '
import json, sys
c = json.load(sys.stdin)
print("candidate: compared", c["compared"], "moved", c["moved"],
      [(m["from"], m["to"], m["count"]) for m in c["moves"]])'

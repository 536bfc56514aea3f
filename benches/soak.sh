#!/usr/bin/env bash
# The soak: the release binary under mixed traffic (small GETs, 1 MiB GETs,
# 64 KiB POSTs, WebSocket echoes) for SOAK_SECS (default 600) while the route
# file is rewritten every 100 ms, valid and invalid in turn, and one upstream
# flaps. Prints RSS every 10 s, outcomes by kind, and the gauges at the end;
# fails if RSS grew or the gauges did not come back to idle. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
SOAK_SECS="${SOAK_SECS:-600}" exec cargo test --release --test soak -- --ignored --nocapture

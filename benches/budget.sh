#!/usr/bin/env bash
# budget.sh - the performance budget: instructions per proxied request against
# benches/budget.toml, failing when a load costs more than its budget.
#
# Three loads, each counted by the shared bench's instructions.sh (callgrind,
# one keep-alive connection, 2,500 minus 500 requests, an nginx upstream; its
# header says more) on the release binary with one worker:
#   h1_get      GET /small (a 13-byte answer) over HTTP/1.1
#   h2c_get     the same over HTTP/2 with prior knowledge (h2c)
#   upload_64k  POST of 64 KiB to /echo, which the upstream reads whole
# A GET's count repeats to about 0.1%; an upload's moves by up to ~1.5% with
# how its bytes happen to arrive (an extra read and write now and then, never
# fewer), so a load over its budget is counted again, up to three times in
# all, and its least count is the one judged.
#
# USAGE (from anywhere; `.ci/run` calls it after the tests)
#   benches/budget.sh
# ENVIRONMENT
#   SWITCHYARD=path    measure this binary instead of building target/release/switchyard
#   INSTRUCTIONS=path  the counting script (default: ../shared/bench/instructions.sh
#                      beside the repository's root)
#   LOADS="h1_get upload_64k"  measure only these loads
# NEEDS valgrind, nginx, h2load (Debian: valgrind nginx nghttp2-client), python3 3.11+
# (tomllib), flock (util-linux). About two minutes once the release build is done.
# PRINTS one line per load (measured, budget, headroom) and exits 0 when every load is
# within its budget, 1 when one is over or cannot be measured.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
budget_file=$root/benches/budget.toml
counter=${INSTRUCTIONS:-$(cd "$root/.." && pwd)/shared/bench/instructions.sh}
LOADS=${LOADS:-h1_get h2c_get upload_64k}
# The port and admin port are those every instructions.sh run on this machine
# uses; the lock keeps two runs (ours or anyone's) from overlapping.
PORT=18093 ADMIN=19901 LOCK=/tmp/bench.lock

if [[ ! -f $counter ]]; then
  cat >&2 <<EOF
budget: FAILED: cannot measure: $counter is missing.
The budget is counted by the shared bench's instructions.sh (with its nginx
upstream config), which lives outside this repository, in ../shared/bench beside
the checkout. Run from a checkout that has it there, or set INSTRUCTIONS to its path.
EOF
  exit 1
fi

if [[ -z ${SWITCHYARD:-} ]]; then
  (cd "$root" && cargo build --release --quiet --bin switchyard)
  SWITCHYARD=$root/target/release/switchyard
fi

work=$(mktemp -d -t budget.XXXXXX)
trap 'rm -rf "$work"' EXIT
# The route file gets a directory of its own: the router watches the file's
# directory, and events from a busy one (such as /tmp) would be counted.
mkdir "$work/routes"
printf 'routes:\n  all:\n    prefix: /\n    upstream: http://127.0.0.1:18081\n' > "$work/routes/routes.yaml"
head -c 65536 /dev/zero > "$work/64k"

# budget_of LOAD FIELD: a field of a load's table in budget.toml.
budget_of() {
  python3 - "$budget_file" "$1" "$2" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print(tomllib.load(f)[sys.argv[2]][sys.argv[3]])
PY
}

# count LOAD: one instructions.sh run of the load; prints the count.
count() {
  local env=()
  case $1 in
    h1_get) env=(URLPATH=/small) ;;
    h2c_get) env=(URLPATH=/small H2=1) ;;
    upload_64k) env=(URLPATH=/echo "DATA=$work/64k") ;;
    *) echo "budget: unknown load $1" >&2; return 1 ;;
  esac
  local lock=(); command -v flock >/dev/null && lock=(flock "$LOCK")
  local out
  out=$(env "${env[@]}" "${lock[@]}" "$counter" "$PORT" "$SWITCHYARD" --workers 1 \
    --config "$work/routes/routes.yaml" --listen "127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN" 2>&1) || {
    echo "budget: $1 could not be counted: $out" >&2
    return 1
  }
  echo "$out" | sed -n 's/^instructions\/request: \([0-9]*\).*/\1/p'
}

printf 'Instructions per proxied request against benches/budget.toml (measured %s on %s):\n' \
  "$(budget_of measured date)" "$(budget_of measured machine)"
printf '  %-11s %9s %9s %9s  %s\n' load counted budget headroom runs
failed=0
for load in $LOADS; do
  budget=$(budget_of "$load" budget)
  runs=() best=
  for _ in 1 2 3; do
    n=$(count "$load") && [[ -n $n ]] || { failed=1; best=; break; }
    runs+=("$n")
    [[ -z $best || $n -lt $best ]] && best=$n
    ((best <= budget)) && break
  done
  if [[ -z $best ]]; then
    printf '  %-11s %9s %9s %9s  %s\n' "$load" - "$budget" - "not counted"
    continue
  fi
  headroom=$(python3 -c "print(f'{($budget - $best) / $budget * 100:+.1f}%')")
  verdict=ok
  ((best > budget)) && { verdict=OVER; failed=1; }
  printf '  %-11s %9s %9s %9s  %s %s\n' "$load" "$best" "$budget" "$headroom" "${runs[*]}" "$verdict"
done
if ((failed)); then
  echo "budget: FAILED: a load costs more than its budget, or could not be counted." >&2
  echo "If the cost is worth it, raise the budget in benches/budget.toml in a commit that says why." >&2
  exit 1
fi
echo "budget: every load within its budget"

#!/usr/bin/env bash
# Builds Switchyard with profile-guided optimization: target/pgo/release/switchyard.
#
# An instrumented build first runs the workload of examples/pgo_train.rs on
# loopback (small requests over HTTP/1.1, HTTP/2 and TLS, uploads, large
# downloads, a reload); the release build is then laid out by what that run
# counted: hot paths straight-line and packed together, cold ones out of the
# way. A proxied request runs 22% fewer instructions and misses the
# instruction cache 29% less often than in `cargo build --release`
# (README.md, "Performance"). The container image ships this build.
#
# Needs llvm-profdata of the active toolchain's LLVM (rustup's llvm-tools
# component, added when missing). Arguments are passed to every cargo build,
# e.g. `scripts/pgo-build.sh --locked`.
set -euo pipefail
cd "$(dirname "$0")/.."

profdata() {
  find "$(rustc --print sysroot)/lib/rustlib" -name llvm-profdata -type f 2>/dev/null | head -n1
}
if [ -z "$(profdata)" ]; then
  rustup component add llvm-tools
fi
PROFDATA=$(profdata)
if [ -z "$PROFDATA" ]; then
  echo "pgo-build: no llvm-profdata in $(rustc --print sysroot); install rustup's llvm-tools" >&2
  exit 1
fi

profile="$PWD/target/pgo-profile"
rm -rf "$profile"
mkdir -p "$profile"

RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$profile" \
  cargo build --release --target-dir target/pgo-generate "$@"
cargo build --release --example pgo_train "$@"
LLVM_PROFILE_FILE="$profile/switchyard-%p-%m.profraw" \
  target/release/examples/pgo_train target/pgo-generate/release/switchyard
# Only the router's own profile: the instrumented build's build scripts
# wrote theirs into the same directory when they ran.
"$PROFDATA" merge -o "$profile/switchyard.profdata" "$profile"/switchyard-*.profraw

RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$profile/switchyard.profdata" \
  cargo build --release --target-dir target/pgo "$@"
echo "pgo-build: target/pgo/release/switchyard"

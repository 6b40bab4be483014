#!/usr/bin/env bash
# The binary to deploy: a release build with profile-guided optimisation
# (PGO). Builds lanparty instrumented, runs it through bench/e2e.sh's
# workload in network namespaces (a relay, TAP and tun-l2 players and a
# gateway; TCP both ways, UDP, 64-byte frames, pings), merges the counts it
# wrote and builds again with them, then runs the same workload once more
# with the result as its check. The binary is target/pgo/lanparty;
# target/release is left alone. What it gains over `cargo build --release`:
# README, "Profile-guided release build".
#
# Run as root on Linux (the workload makes namespaces, TAP and TUN devices;
# it needs iproute2, ping and iperf3). Needs llvm-profdata of the LLVM
# major version rustc was built with (`rustc -vV` names it), found as
# $LLVM_PROFDATA, llvm-profdata-N on PATH, /usr/lib/llvm-N/bin/llvm-profdata
# or rustup's llvm-tools component; `--deps` installs Debian's llvm-N.
#
#   scripts/release.sh           build target/pgo/lanparty
#   scripts/release.sh --deps    only install llvm-N if no llvm-profdata is found
set -euo pipefail
cd "$(dirname "$0")/.."

major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
host=$(rustc -vV | sed -n 's/^host: //p')

# The llvm-profdata that reads what rustc's LLVM writes, or nothing.
find_profdata() {
  local candidate
  for candidate in "${LLVM_PROFDATA:-}" "$(command -v "llvm-profdata-$major" || true)" \
    "/usr/lib/llvm-$major/bin/llvm-profdata" \
    "$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

install_deps() {
  find_profdata >/dev/null && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "release.sh: no llvm-profdata for LLVM $major: install llvm-$major (Debian/Ubuntu, as root: scripts/release.sh --deps), or run 'rustup component add llvm-tools', or set LLVM_PROFDATA" >&2
    exit 1
  fi
  echo "release.sh: installing llvm-$major (llvm-profdata for rustc's LLVM $major)"
  apt-get update -qq
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "llvm-$major" >/dev/null; then
    echo "release.sh: apt-get could not install llvm-$major; run 'rustup component add llvm-tools' or set LLVM_PROFDATA to an llvm-profdata of LLVM $major" >&2
    exit 1
  fi
}

case "${1:-}" in
  --deps) install_deps; exit 0 ;;
  "") ;;
  *) echo "usage: scripts/release.sh [--deps]" >&2; exit 2 ;;
esac

if [ "$(id -u)" != 0 ]; then
  echo "release.sh: the training workload makes network namespaces and TAP devices; run as root" >&2
  exit 1
fi
profdata=$(find_profdata) || install_deps
profdata=$(find_profdata)

out=$PWD/target/pgo
profiles=$out/profiles
rm -rf "$profiles"
mkdir -p "$profiles"
# --target keeps RUSTFLAGS off build scripts and proc macros: only the
# binary is instrumented, and only its counts are written.
build() {
  local flags=$1 dir=$2
  RUSTFLAGS="${RUSTFLAGS:-} $flags" cargo build --release --bin lanparty \
    --target "$host" --target-dir "$out/$dir"
}

echo "release.sh: 1/4 instrumented build"
build "-Cprofile-generate=$profiles" build-generate
echo "release.sh: 2/4 training workload (bench/e2e.sh)"
LLVM_PROFILE_FILE="$profiles/%p-%m.profraw" LP_BIN="$out/build-generate/$host/release/lanparty" \
  bash bench/e2e.sh 3
shopt -s nullglob
raw=("$profiles"/*.profraw)
if [ ${#raw[@]} -eq 0 ]; then
  echo "release.sh: the workload wrote no profile to $profiles (did its lanparty processes exit on SIGTERM?)" >&2
  exit 1
fi
"$profdata" merge -o "$out/lanparty.profdata" "${raw[@]}"
echo "release.sh: 3/4 optimised build with $((${#raw[@]})) profiles"
build "-Cprofile-use=$out/lanparty.profdata" build-use
cp "$out/build-use/$host/release/lanparty" "$out/lanparty"
echo "release.sh: 4/4 the same workload through $out/lanparty"
LP_BIN="$out/lanparty" bash bench/e2e.sh 2
echo "release.sh: built $out/lanparty"

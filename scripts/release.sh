#!/usr/bin/env bash
# The binary to deploy: a release build with profile-guided optimisation
# (PGO) and a post-link layout by profile (BOLT). Builds lanparty
# instrumented, runs it through bench/e2e.sh's workload in network
# namespaces (a relay, TAP and tun-l2 players and a gateway; TCP both ways,
# UDP, 64-byte frames, pings), and builds again with the counts it wrote;
# then BOLT instruments that binary, the workload runs again, and BOLT lays
# the code out by what ran (hot code together, the rest apart); the same
# workload runs once more with the result as its check. The binary is
# target/pgo/lanparty; target/release is left alone. What each step gains
# over `cargo build --release`: README, "Profile-guided release build".
#
# Run as root on Linux (the workload makes namespaces, TAP and TUN devices;
# it needs iproute2, ping and iperf3). Needs LLVM's tools of the major
# version rustc was built with (`rustc -vV` names it, N below):
# llvm-profdata (Debian: llvm-N), llvm-bolt and merge-fdata (bolt-N), found
# as $LLVM_PROFDATA / $LLVM_BOLT / $MERGE_FDATA, TOOL-N on PATH or in
# /usr/lib/llvm-N/bin (llvm-profdata also in rustup's llvm-tools component);
# `--deps` installs llvm-N and bolt-N with apt-get.
#
#   scripts/release.sh           build target/pgo/lanparty
#   scripts/release.sh --deps    only install what is missing of those tools
set -euo pipefail
cd "$(dirname "$0")/.."

command -v rustc >/dev/null && command -v cargo >/dev/null ||
  { echo "release.sh: needs Rust: rustc and cargo on PATH (rustup installs both)" >&2; exit 1; }
version=$(rustc -vV)
major=$(sed -n 's/^LLVM version: \([0-9]*\).*/\1/p' <<<"$version")
host=$(sed -n 's/^host: //p' <<<"$version")
if [ -z "$major" ] || [ -z "$host" ]; then
  echo "release.sh: 'rustc -vV' names no LLVM version or host; cannot tell which LLVM tools match" >&2
  exit 1
fi
rustup_tools=$(rustc --print sysroot)/lib/rustlib/$host/bin

# find_tool TOOL OVERRIDE — the path of LLVM $major's TOOL, or nothing.
find_tool() {
  local tool=$1 override=$2 candidate
  for candidate in "$override" "$(command -v "$tool-$major" || true)" \
    "/usr/lib/llvm-$major/bin/$tool" \
    "$rustup_tools/$tool"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}
tools_found() {
  find_tool llvm-profdata "${LLVM_PROFDATA:-}" >/dev/null &&
    find_tool llvm-bolt "${LLVM_BOLT:-}" >/dev/null &&
    find_tool merge-fdata "${MERGE_FDATA:-}" >/dev/null
}

install_deps() {
  tools_found && return 0
  local packages=("llvm-$major" "bolt-$major")
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "release.sh: missing LLVM $major's llvm-profdata, llvm-bolt or merge-fdata: install ${packages[*]} (Debian/Ubuntu, as root: scripts/release.sh --deps), or set LLVM_PROFDATA, LLVM_BOLT and MERGE_FDATA" >&2
    exit 1
  fi
  echo "release.sh: installing ${packages[*]} (PGO and BOLT tools of rustc's LLVM $major)"
  apt-get update -qq
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null || ! tools_found; then
    echo "release.sh: apt-get could not install ${packages[*]}; set LLVM_PROFDATA, LLVM_BOLT and MERGE_FDATA to LLVM $major's tools" >&2
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
install_deps
profdata=$(find_tool llvm-profdata "${LLVM_PROFDATA:-}")
bolt=$(find_tool llvm-bolt "${LLVM_BOLT:-}")
merge_fdata=$(find_tool merge-fdata "${MERGE_FDATA:-}")

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
# need_profiles PATTERN — `found`: the files in $profiles the workload
# wrote, or a stop that says none were.
need_profiles() {
  shopt -s nullglob
  # shellcheck disable=SC2206 # PATTERN is a glob
  found=("$profiles"/$1)
  shopt -u nullglob
  if [ ${#found[@]} -eq 0 ]; then
    echo "release.sh: the workload wrote no profile ($profiles/$1): did its lanparty processes exit on SIGTERM?" >&2
    exit 1
  fi
}

echo "release.sh: 1/5 instrumented build (PGO)"
build "-Cprofile-generate=$profiles" build-generate
echo "release.sh: 2/5 training workload (bench/e2e.sh)"
LLVM_PROFILE_FILE="$profiles/%p-%m.profraw" LP_BIN="$out/build-generate/$host/release/lanparty" \
  bash bench/e2e.sh 3
need_profiles "*.profraw"
"$profdata" merge -o "$out/lanparty.profdata" "${found[@]}"
echo "release.sh: 3/5 optimised build with ${#found[@]} profiles, relocations kept for BOLT"
build "-Cprofile-use=$out/lanparty.profdata -Clink-arg=-Wl,--emit-relocs" build-use
pgo=$out/build-use/$host/release/lanparty
echo "release.sh: 4/5 BOLT: the same workload through an instrumented copy"
bolt_failed() {
  echo "release.sh: llvm-bolt failed; its output is in $out/bolt.log" >&2
  exit 1
}
"$bolt" "$pgo" -instrument -o "$out/lanparty-bolt-instrumented" \
  --instrumentation-file="$profiles/bolt" --instrumentation-file-append-pid \
  >"$out/bolt.log" 2>&1 || bolt_failed
LP_BIN="$out/lanparty-bolt-instrumented" bash bench/e2e.sh 3
need_profiles "bolt.*.fdata"
"$merge_fdata" -o "$out/lanparty.fdata" "${found[@]}"
"$bolt" "$pgo" -o "$out/lanparty" -data="$out/lanparty.fdata" -reorder-blocks=ext-tsp \
  -reorder-functions=cdsort -split-functions -split-all-cold -split-eh -update-debug-sections \
  >>"$out/bolt.log" 2>&1 || bolt_failed
echo "release.sh: 5/5 the same workload through $out/lanparty"
LP_BIN="$out/lanparty" bash bench/e2e.sh 2
echo "release.sh: built $out/lanparty"

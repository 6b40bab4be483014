#!/usr/bin/env bash
# The test command README gives a new user, and the one CI runs.
#
# Run as root on Debian/Ubuntu. First installs what the tests need, without
# starting any service: iproute2, ping, iperf3, dnsmasq, busybox (udhcpc),
# python3 (the sniffer/injector helper), tshark (reads captures), and for the
# Windows client the rustup target x86_64-pc-windows-gnu and mingw. Then runs
# the YAML pipeline tests and `cargo test --workspace` and prints one line with
# the totals over every test binary.
#
#   scripts/test.sh            install what is missing, then run every test
#   scripts/test.sh --deps     only install what is missing
#   scripts/test.sh -- ARGS    pass ARGS to `cargo test --workspace`
set -euo pipefail
cd "$(dirname "$0")/.."

install_deps() {
  local need=()
  command -v ip >/dev/null || need+=(iproute2)
  command -v ping >/dev/null || need+=(iputils-ping)
  command -v iperf3 >/dev/null || need+=(iperf3)
  command -v dnsmasq >/dev/null || need+=(dnsmasq)
  command -v busybox >/dev/null || need+=(busybox)
  [ -x /usr/bin/python3 ] || command -v python3 >/dev/null || need+=(python3)
  command -v tshark >/dev/null || need+=(tshark)
  command -v x86_64-w64-mingw32-gcc >/dev/null || need+=(gcc-mingw-w64-x86-64)
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "test.sh: missing ${need[*]}; run as root to install them (the end-to-end tests need root anyway)" >&2
      exit 1
    fi
    echo "test.sh: installing ${need[*]}"
    apt-get update -qq
    # Install only: no package may start a system service (dnsmasq would).
    local made_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
  fi
  if ! rustup target list --installed | grep -qx x86_64-pc-windows-gnu; then
    echo "test.sh: rustup target add x86_64-pc-windows-gnu"
    rustup target add x86_64-pc-windows-gnu
  fi
}

case "${1:-}" in
  --deps) install_deps; exit 0 ;;
  --) shift ;;
  "") ;;
  *) echo "usage: scripts/test.sh [--deps | -- CARGO_TEST_ARGS]" >&2; exit 2 ;;
esac

install_deps
if [ "$(id -u)" != 0 ]; then
  echo "test.sh: the end-to-end tests create network namespaces and TAP devices; run as root" >&2
  exit 1
fi

echo "test.sh: lanparty test tests/pipeline/*.yaml"
cargo run -q -- test tests/pipeline/*.yaml

echo "test.sh: cargo test --workspace $*"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "all-tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"

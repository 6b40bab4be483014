#!/usr/bin/env bash
# What one forwarded Gbit/s costs each lanparty process: TCP at a fixed
# rate (iperf3 -b, default 800M) from A to B through a relay in the A — R
# — B namespaces, and each process's CPU time over the middle 4 s of the
# run, as % of one core per Gbit/s moved. At a fixed rate below saturation
# the figure moves far less from minute to minute than saturated
# throughput does (the machine's drift changes how fast, not how much
# work), so two builds compare in a few alternating rounds: give two
# binaries and they alternate, a fresh topology each run. The steal column
# (hypervisor ticks over the window, both CPUs) marks runs to discard.
# Needs root, iproute2, ping, iperf3 and release builds.
#
#   bash bench/cpu-per-gbit.sh [ROUNDS] [RATE] [BIN_X] [BIN_Y]
#     ROUNDS rounds (default 3) at RATE (default 800M); BIN_X defaults to
#     target/release/lanparty, BIN_Y is optional; RELAY_SETS /
#     CLIENT_SETS add --set flags to lanparty.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}; rate=${2:-800M}
bin_x=${3:-$PWD/target/release/lanparty}; bin_y=${4:-}
for b in "$bin_x" ${bin_y:+"$bin_y"}; do
  [ -x "$b" ] || { echo "no binary $b: cargo build --release" >&2; exit 2; }
done
source bench/lib.sh
needs ip ping iperf3 python3
hz=$(getconf CLK_TCK)
window=4

# cpu_ticks PID — user + system ticks the process has used.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
steal_ticks() { awk '/^cpu / {print $9}' /proc/stat; }

# run NAME BIN — one topology, one fixed-rate TCP run, one result line.
run() {
  local name=$1 tag="cg$$$RANDOM" first=${#pids[@]}
  bin=$2
  make_arb "${tag}A" "${tag}R" "${tag}B"
  lanparty_arb "${tag}R" "${tag}A" "${tag}B" "${tag:0:10}"
  wait_ping "${tag}A" 10.77.0.2
  iperf_server "${tag}B" 10.77.0.2 "$tag"
  local relay=${pids[$first]} a=${pids[$((first + 1))]} b=${pids[$((first + 2))]}
  tcp_mbit "${tag}A" 10.77.0.2 $((window + 4)) -b "$rate" -C cubic >"$dir/$tag.mbit" &
  local client=$!
  sleep 2
  local r0 a0 b0 s0 r1 a1 b1 s1
  r0=$(cpu_ticks "$relay"); a0=$(cpu_ticks "$a"); b0=$(cpu_ticks "$b"); s0=$(steal_ticks)
  sleep "$window"
  r1=$(cpu_ticks "$relay"); a1=$(cpu_ticks "$a"); b1=$(cpu_ticks "$b"); s1=$(steal_ticks)
  wait "$client"
  python3 - "$(cat "$dir/$tag.mbit")" "$name" "$hz" "$window" $((r1 - r0)) $((a1 - a0)) $((b1 - b0)) $((s1 - s0)) <<'PY'
import sys
mbit, name, hz, window, relay, a, b, steal = sys.argv[1:]
gbit = float(mbit) / 1000
share = lambda ticks: int(ticks) / int(hz) / int(window) * 100
per = lambda ticks: share(ticks) / gbit if gbit else float("nan")
print(f"{name}: {gbit * 1000:.0f} Mbit/s; % of a core relay {share(relay):.0f}, A {share(a):.0f}, "
      f"B {share(b):.0f}; per Gbit/s relay {per(relay):.0f}, A {per(a):.0f}, B {per(b):.0f}; "
      f"steal {int(steal) / int(hz) / int(window) * 100:.0f} %")
PY
  for p in "${pids[@]:$first}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for n in "${tag}A" "${tag}R" "${tag}B"; do ip netns del "$n" 2>/dev/null || true; done
  pids=("${pids[@]:0:$first}")
}

for _ in $(seq "$rounds"); do
  run X "$bin_x"
  [ -z "$bin_y" ] || run Y "$bin_y"
done

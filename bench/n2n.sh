#!/usr/bin/env bash
# The peer baseline for bench/e2e.sh: n2n (Debian's n2n 1.3) in the same
# A — relay — B namespaces, A and B reaching each other only through the
# supernode in R. Reports ping RTT and TCP A→B, so lanparty and n2n can be
# compared in the same minute (this machine drifts ±30 % between minutes).
# Needs root, iproute2, iperf3, ping and n2n (apt-get install n2n).
#
#   bash bench/n2n.sh [SECONDS]
set -euo pipefail
secs=${1:-5}
for tool in ip iperf3 ping edge supernode; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install iproute2 iperf3 iputils-ping n2n)" >&2; exit 2; }
done
id=$$
ra="nbR$id"; na="nbA$id"; nb="nbB$id"
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for n in "$ra" "$na" "$nb"; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
for n in "$ra" "$na" "$nb"; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip link add ua netns "$na" type veth peer name ra netns "$ra"
ip link add ub netns "$nb" type veth peer name rb netns "$ra"
ip -n "$na" addr add 10.203.1.2/24 dev ua; ip -n "$ra" addr add 10.203.1.1/24 dev ra
ip -n "$nb" addr add 10.203.2.2/24 dev ub; ip -n "$ra" addr add 10.203.2.1/24 dev rb
for l in "$na:ua" "$ra:ra" "$ra:rb" "$nb:ub"; do ip -n "${l%%:*}" link set "${l##*:}" up; done
ip netns exec "$ra" supernode -l 7654 >"$dir/supernode.log" 2>&1 &
pids+=($!)
ip netns exec "$na" edge -d n2na -a 10.77.0.1 -c bench -k benchkey -l 10.203.1.1:7654 -m 02:00:00:00:0c:01 >"$dir/a.log" 2>&1 &
pids+=($!)
ip netns exec "$nb" edge -d n2nb -a 10.77.0.2 -c bench -k benchkey -l 10.203.2.1:7654 -m 02:00:00:00:0c:02 >"$dir/b.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  ip netns exec "$na" ping -c 1 -W 1 10.77.0.2 >/dev/null 2>&1 && break
  sleep 0.1
done
echo "n2n $(edge -h 2>&1 | awk '/n2n v/ {print $4}'), $(nproc) cores, ${secs}s per test"
rtt=$(ip netns exec "$na" ping -c 100 -i 0.01 -q 10.77.0.2 | awk -F/ '/^rtt/ {print $5}')
echo "ping RTT avg:        ${rtt} ms"

ip netns exec "$nb" iperf3 -s -D -B 10.77.0.2 --pidfile "$dir/iperf3.pid" >/dev/null
sleep 0.3
pids+=("$(cat "$dir/iperf3.pid")")
tcp=$(ip netns exec "$na" iperf3 -c 10.77.0.2 -t "$secs" -J | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))')
echo "TCP A→B:             ${tcp} Mbit/s"

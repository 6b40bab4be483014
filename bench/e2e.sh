#!/usr/bin/env bash
# End-to-end throughput and latency through a lanparty relay, in the
# A — relay — B topology of shared/NOTES.md: three network namespaces, A and
# B reach each other only through the relay in R (UDP underlay), over TAP
# adapters, plus a gateway (AF_PACKET) with a LAN host behind it. Reports TCP
# throughput, UDP throughput and loss, 64-byte packet rate and ping RTT. Needs root, iproute2, iperf3, ping, and a release
# build (cargo build --release).
#
#   bash bench/e2e.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
bin=$PWD/target/release/lanparty
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }
for tool in ip iperf3 ping; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install iproute2 iperf3 iputils-ping)" >&2; exit 2; }
done

id=$$
ra="lbR$id"; na="lbA$id"; nb="lbB$id"; ng="lbG$id"; nl="lbL$id"
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for n in "$ra" "$na" "$nb" "$ng" "$nl"; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

for n in "$ra" "$na" "$nb" "$ng" "$nl"; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip link add ua netns "$na" type veth peer name ra netns "$ra"
ip link add ub netns "$nb" type veth peer name rb netns "$ra"
ip -n "$na" addr add 10.203.1.2/24 dev ua; ip -n "$ra" addr add 10.203.1.1/24 dev ra
ip -n "$nb" addr add 10.203.2.2/24 dev ub; ip -n "$ra" addr add 10.203.2.1/24 dev rb
ip link add ug netns "$ng" type veth peer name rg netns "$ra"
ip -n "$ng" addr add 10.203.3.2/24 dev ug; ip -n "$ra" addr add 10.203.3.1/24 dev rg
# The gateway's LAN: one wire to a LAN host with the iperf3 server.
ip link add glan netns "$ng" type veth peer name lan0 netns "$nl"
ip -n "$nl" addr add 10.77.0.200/24 dev lan0
for l in "$na:ua" "$ra:ra" "$ra:rb" "$nb:ub" "$ng:ug" "$ra:rg" "$ng:glan" "$nl:lan0"; do ip -n "${l%%:*}" link set "${l##*:}" up; done

ip netns exec "$ra" "$bin" --log-level warn run configs/relay.yaml \
  --set ports.relay.self_signed_dir="$dir/tls" ${RELAY_SETS:-} >"$dir/relay.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -f "$dir/tls/relay-cert.der" ] && break; sleep 0.05; done

client() { # ns underlay-relay-ip mac device address
  ip netns exec "$1" "$bin" --log-level warn run configs/client.yaml \
    --set ports.relay.relay="$2:4433" --set ports.relay.trust.pin="$dir/tls/relay-cert.der" \
    --set ports.relay.room=BENCH --set ports.relay.mac="$3" --set ports.adapter.mac="$3" \
    --set ports.adapter.device="$4" --set "ports.adapter.addresses=[$5]" ${CLIENT_SETS:-} >"$dir/$4.log" 2>&1 &
  pids+=($!)
}
client "$na" 10.203.1.1 02:00:00:00:0b:01 lpbench-a 10.77.0.1/24
client "$nb" 10.203.2.1 02:00:00:00:0b:02 lpbench-b 10.77.0.2/24
ip netns exec "$ng" "$bin" --log-level warn run configs/gateway.yaml \
  --set ports.relay.relay=10.203.3.1:4433 --set ports.relay.trust.pin="$dir/tls/relay-cert.der" \
  --set ports.relay.room=BENCH --set ports.lan.interface=glan ${GATEWAY_SETS:-} >"$dir/gateway.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  ip netns exec "$na" ping -c 1 -W 1 10.77.0.2 >/dev/null 2>&1 && break
  sleep 0.1
done

echo "lanparty $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, ${secs}s per test"
rtt=$(ip netns exec "$na" ping -c 100 -i 0.01 -q 10.77.0.2 | awk -F/ '/^rtt/ {print $5}')
echo "ping RTT avg:        ${rtt} ms"

ip netns exec "$nb" iperf3 -s -D -B 10.77.0.2 --pidfile "$dir/iperf3.pid" >/dev/null
sleep 0.3
tcp=$(ip netns exec "$na" iperf3 -c 10.77.0.2 -t "$secs" -J | python3 -c 'import json,sys; print("%.0f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))')
echo "TCP A→B:             ${tcp} Mbit/s"
ip netns exec "$na" iperf3 -c 10.77.0.2 -u -b 2G -l 1300 -t "$secs" -J > "$dir/udp.json"
python3 - "$dir/udp.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["end"]["sum"]
print("UDP A→B (1300 B):    %.0f Mbit/s received, %.2f %% lost" % (s["bits_per_second"] / 1e6 * (1 - s["lost_percent"] / 100), s["lost_percent"]))
PY
ip netns exec "$na" iperf3 -c 10.77.0.2 -u -b 0 -l 18 -t "$secs" -J > "$dir/small.json"
python3 - "$dir/small.json" "$secs" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["end"]["sum"]
received = s["packets"] - s["lost_packets"]
print("64-byte frames A→B:  %.0f packets/s received (%.1f %% lost)" % (received / float(sys.argv[2]), s["lost_percent"]))
PY
kill "$(cat "$dir/iperf3.pid")" 2>/dev/null || true

# Through the gateway: A → relay → gateway (AF_PACKET) → LAN host.
for _ in $(seq 100); do
  ip netns exec "$na" ping -c 1 -W 1 10.77.0.200 >/dev/null 2>&1 && break
  sleep 0.1
done
lrtt=$(ip netns exec "$na" ping -c 100 -i 0.01 -q 10.77.0.200 | awk -F/ '/^rtt/ {print $5}')
echo "ping A→LAN host:     ${lrtt} ms (through the gateway)"
ip netns exec "$nl" iperf3 -s -D -B 10.77.0.200 --pidfile "$dir/iperf3-lan.pid" >/dev/null
sleep 0.3
for dir_flag in "" "-R"; do
  lan=$(ip netns exec "$na" iperf3 -c 10.77.0.200 $dir_flag -t "$secs" -J | python3 -c 'import json,sys; print("%.0f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))')
  if [ -z "$dir_flag" ]; then what="A→LAN host"; else what="LAN host→A"; fi
  echo "TCP ${what}:      ${lan} Mbit/s (through the gateway)"
done
kill "$(cat "$dir/iperf3-lan.pid")" 2>/dev/null || true

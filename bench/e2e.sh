#!/usr/bin/env bash
# End-to-end throughput and latency through a lanparty relay, in the
# A — relay — B topology of shared/NOTES.md: three network namespaces, A and
# B reach each other only through the relay in R (UDP underlay), over TAP
# adapters, plus a gateway (AF_PACKET) with a LAN host behind it and a
# tun-l2 player (TUN with Ethernet emulation, a static address). Reports TCP
# throughput, UDP throughput and loss (1300-byte and full 1472-byte
# datagrams), 64-byte packet rate and ping RTT. Needs root, iproute2, iperf3, ping, and a release
# build (cargo build --release). scripts/release.sh runs it as the training
# workload of its profile-guided build: what it leaves out runs slower there.
#
#   bash bench/e2e.sh [SECONDS]   (LP_BIN runs another lanparty binary)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
bin=${LP_BIN:-$PWD/target/release/lanparty}
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }
source bench/lib.sh
needs ip iperf3 ping

id=$$
ra="lbR$id"; na="lbA$id"; nb="lbB$id"; ng="lbG$id"; nl="lbL$id"; nt="lbT$id"
make_arb "$na" "$ra" "$nb"
make_ns "$ng" "$nl" "$nt"
# The gateway's and the tun-l2 player's wires to the relay.
wire "$ng" ug "$ra" rg 10.203.3
wire "$nt" ut "$ra" rt 10.203.4
# The gateway's LAN: one wire to a LAN host with the iperf3 server.
ip link add glan netns "$ng" type veth peer name lan0 netns "$nl"
ip -n "$nl" addr add 10.77.0.200/24 dev lan0
for l in "$ng:glan" "$nl:lan0"; do ip -n "${l%%:*}" link set "${l##*:}" up; done

lanparty_arb "$ra" "$na" "$nb" lpbench 10.77.0
# shellcheck disable=SC2086
bg "$ng" gateway.log "$bin" --log-level warn run configs/gateway.yaml \
  --set ports.relay.relay=10.203.3.1:4433 --set ports.relay.trust.pin="$dir/tls/relay-cert.der" \
  --set ports.relay.room=BENCH --set ports.lan.interface=glan ${GATEWAY_SETS:-}
# shellcheck disable=SC2086
bg "$nt" tun-l2.log "$bin" --log-level warn run configs/client-tun-l2.yaml \
  --set ports.relay.relay=10.203.4.1:4433 --set ports.relay.trust.pin="$dir/tls/relay-cert.der" \
  --set ports.relay.room=BENCH --set ports.adapter.device=lpbench-t \
  --set ports.adapter.address=10.77.0.3/24 ${CLIENT_SETS:-}
wait_ping "$na" 10.77.0.2

echo "lanparty $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, ${secs}s per test"
echo "ping RTT avg:        $(rtt "$na" 10.77.0.2) ms"
iperf_server "$nb" 10.77.0.2 iperf3
echo "TCP A→B:             $(tcp_mbit "$na" 10.77.0.2 "$secs") Mbit/s"
ip netns exec "$na" iperf3 -c 10.77.0.2 -u -b 2G -l 1300 -t "$secs" -J > "$dir/udp.json"
python3 - "$dir/udp.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["end"]["sum"]
print("UDP A→B (1300 B):    %.0f Mbit/s received, %.2f %% lost" % (s["bits_per_second"] / 1e6 * (1 - s["lost_percent"] / 100), s["lost_percent"]))
PY
# Full-size datagrams: 1472 bytes of UDP payload make 1514-byte frames,
# each two fragment datagrams on the 1414-byte QUIC path.
ip netns exec "$na" iperf3 -c 10.77.0.2 -u -b 2G -l 1472 -t "$secs" -J > "$dir/udp1472.json"
python3 - "$dir/udp1472.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["end"]["sum"]
print("UDP A→B (1472 B):    %.0f Mbit/s received, %.2f %% lost (1514-byte frames: 2 fragments each)" % (s["bits_per_second"] / 1e6 * (1 - s["lost_percent"] / 100), s["lost_percent"]))
PY
ip netns exec "$na" iperf3 -c 10.77.0.2 -u -b 0 -l 18 -t "$secs" -J > "$dir/small.json"
python3 - "$dir/small.json" "$secs" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["end"]["sum"]
received = s["packets"] - s["lost_packets"]
print("64-byte frames A→B:  %.0f packets/s received (%.1f %% lost)" % (received / float(sys.argv[2]), s["lost_percent"]))
PY

# Through the gateway: A → relay → gateway (AF_PACKET) → LAN host.
wait_ping "$na" 10.77.0.200
echo "ping A→LAN host:     $(rtt "$na" 10.77.0.200) ms (through the gateway)"
iperf_server "$nl" 10.77.0.200 iperf3-lan
echo "TCP A→LAN host:      $(tcp_mbit "$na" 10.77.0.200 "$secs") Mbit/s (through the gateway)"
echo "TCP LAN host→A:      $(tcp_mbit "$na" 10.77.0.200 "$secs" -R) Mbit/s (through the gateway)"

# To the tun-l2 player: A → relay → T (TUN with Ethernet emulation).
wait_ping "$na" 10.77.0.3
echo "ping A→tun-l2:       $(rtt "$na" 10.77.0.3) ms"
iperf_server "$nt" 10.77.0.3 iperf3-tun
echo "TCP A→tun-l2:        $(tcp_mbit "$na" 10.77.0.3 "$secs") Mbit/s"
echo "TCP tun-l2→A:        $(tcp_mbit "$na" 10.77.0.3 "$secs" -R) Mbit/s"

#!/usr/bin/env bash
# A player's home link shared with a household's download: B's link from
# the relay's namespace R is shaped (tbf RATE, 200 ms of buffer, as a home
# router's); a plain TCP download from a fourth namespace H to B (CUBIC,
# forwarded by R through the same tbf, not tunnelled) runs CROSS seconds; 4 s
# in, a TCP download A -> B through lanparty (TUN seconds) and pings through
# the tunnel every 50 ms. Prints both downloads' Mbit/s per second, their
# means while both run, and the tunnel's ping per second: whether the
# tunnel gets a share of the link beside the competitor, and how soon its
# queue is short again when the competitor stops (CROSS < TUN + 4).
# Needs root, iproute2 with tbf, iperf3, ping, python3 and a release build.
#
#   bash bench/cross-traffic.sh   (RATE=20mbit TUN=24 CROSS=TUN+8; LP_BIN
#                                  another binary; RELAY_SETS extra --set
#                                  flags for the relay, e.g.
#                                  "--set ports.relay.congestion=cubic")
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${LP_BIN:-$PWD/target/release/lanparty}
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }
source bench/lib.sh
needs ip iperf3 ping python3 tc
rate=${RATE:-20mbit}
tun=${TUN:-24}
cross=${CROSS:-$((tun + 8))}
id=$$
na="ctA$id"; ra="ctR$id"; nb="ctB$id"; nh="ctH$id"
make_arb "$na" "$ra" "$nb"
make_ns "$nh"
wire "$nh" uh "$ra" rh 10.203.3
ip -n "$nh" route add 10.203.2.0/24 via 10.203.3.1
ip -n "$nb" route add 10.203.3.0/24 via 10.203.2.1
ip netns exec "$ra" sysctl -qw net.ipv4.ip_forward=1
ip netns exec "$ra" tc qdisc add dev rb root tbf rate "$rate" burst 32k latency 200ms
lanparty_arb "$ra" "$na" "$nb" "ct$id"
wait_ping "$na" 10.77.0.2
iperf_server "$nb" 10.77.0.2 tunnel
iperf_server "$nb" 10.203.2.2 plain 5202
sleep 1
ip netns exec "$nh" iperf3 -c 10.203.2.2 -p 5202 -t "$cross" -C cubic -J >"$dir/cross.json" &
c=$!
sleep 4
ip netns exec "$na" ping -n -i 0.05 -c $((tun * 19)) 10.77.0.2 >"$dir/ping.txt" &
p=$!
ip netns exec "$na" iperf3 -c 10.77.0.2 -t "$tun" -C cubic -J >"$dir/tunnel.json" &
t=$!
wait "$t" "$c" "$p"
python3 - "$dir" <<'PY'
import json, re, sys
d = sys.argv[1]
def per_second(name):
    j = json.load(open(f"{d}/{name}.json"))
    return [round(i["sum"]["bits_per_second"] / 1e6, 1) for i in j["intervals"]]
cross, tunnel = per_second("cross"), per_second("tunnel")
both = list(zip(cross[4:], tunnel))
print("household download (plain TCP) Mbit/s per s:", cross)
print("tunnel download (lanparty) Mbit/s per s:     ", [None] * 4 + tunnel)
if both:
    print("while both run: household %.1f, tunnel %.1f Mbit/s; last 8 s: %.1f, %.1f" % (
        sum(c for c, _ in both) / len(both), sum(t for _, t in both) / len(both),
        sum(c for c, _ in both[-8:]) / len(both[-8:]), sum(t for _, t in both[-8:]) / len(both[-8:])))
rtts = {}
for m in re.finditer(r"icmp_seq=(\d+) ttl=\d+ time=([\d.]+)", open(f"{d}/ping.txt").read()):
    rtts.setdefault(int(m.group(1)) // 20, []).append(float(m.group(2)))
print("tunnel ping ms per s (from the tunnel's start):", [round(sum(v) / len(v), 1) for _, v in sorted(rtts.items())])
PY

#!/usr/bin/env bash
# Ping RTT of lanparty and n2n side by side: both overlays run in the same
# A — R — B namespaces at the same time (lanparty on 10.77.0.0/24 over TAP,
# n2n on 10.78.0.0/24), and ping rounds alternate between them, so machine
# drift hits both alike. Each round also times the floors of a relayed round
# trip without any overlay (transports/examples/quinn_floor.rs): a bare
# quinn datagram forwarder with an echo peer, the same forwarder driving
# quinn-proto from one loop, and the same over plain UDP.
# Needs root, iproute2, ping, n2n (apt-get install n2n) and a release build
# (cargo build --release --bin lanparty && cargo build --release -p lanparty-transports --example quinn_floor).
#
#   bash bench/ping-compare.sh [ROUNDS] [COUNT] [INTERVAL]
#     ROUNDS rounds (default 3) of COUNT pings (default 100) INTERVAL s apart
#     (default 0.01). RELAY_SETS / CLIENT_SETS add --set flags to lanparty;
#     LP_BIN runs another lanparty binary.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}; count=${2:-100}; interval=${3:-0.01}
bin=${LP_BIN:-$PWD/target/release/lanparty}
floor=$PWD/target/release/examples/quinn_floor
for b in "$bin" "$floor"; do
  [ -x "$b" ] || { echo "build first: cargo build --release --bin lanparty && cargo build --release -p lanparty-transports --example quinn_floor" >&2; exit 2; }
done
source bench/lib.sh
needs ip ping edge supernode
id=$$
ra="pcR$id"; na="pcA$id"; nb="pcB$id"
make_arb "$na" "$ra" "$nb"

lanparty_arb "$ra" "$na" "$nb" lpping 10.77.0
n2n_arb "$ra" "$na" "$nb" 10.78.0
bg "$ra" floor-quic-relay.log "$floor" quic relay 0.0.0.0:4500 "$dir/floor-tls"
bg "$ra" floor-udp-relay.log "$floor" udp relay 0.0.0.0:4501
bg "$ra" floor-proto-relay.log "$floor" proto relay 0.0.0.0:4502 "$dir/floor-tls-proto"
for _ in $(seq 100); do [ -f "$dir/floor-tls/relay-cert.der" ] && [ -f "$dir/floor-tls-proto/relay-cert.der" ] && break; sleep 0.05; done
bg "$nb" floor-quic-echo.log "$floor" quic echo 10.203.2.1:4500 "$dir/floor-tls"
bg "$nb" floor-proto-echo.log "$floor" quic echo 10.203.2.1:4502 "$dir/floor-tls-proto"
bg "$nb" floor-udp-echo.log "$floor" udp echo 10.203.2.1:4501
wait_ping "$na" 10.77.0.2
wait_ping "$na" 10.78.0.2

ping_avg() { # ns addr — avg and mdev of COUNT pings
  ip netns exec "$1" ping -c "$count" -i "$interval" -q "$2" | awk -F/ '/^rtt/ {printf "%s ms (mdev %s)", $5, $7}'
}
echo "lanparty $(git rev-parse --short HEAD 2>/dev/null || echo '?') vs n2n, $(nproc) cores, $rounds rounds of $count pings ${interval}s apart"
ms=$(python3 -c "print(max(1, round($interval * 1000)))")
floor_avg() { # quic|udp PORT [CERT_DIR] — the floor's average round trip
  ip netns exec "$na" "$floor" "$1" ping "10.203.1.1:$2" "${@:3}" "$count" "$ms" |
    sed -n 's/.*rtt avg \([0-9.]*\) ms.*/\1 ms/p'
}
for r in $(seq "$rounds"); do
  echo "round $r: lanparty $(ping_avg "$na" 10.77.0.2)   n2n $(ping_avg "$na" 10.78.0.2)   quinn floor $(floor_avg quic 4500 "$dir/floor-tls")   one-loop quinn-proto relay $(floor_avg quic 4502 "$dir/floor-tls-proto")   udp floor $(floor_avg udp 4501)"
done

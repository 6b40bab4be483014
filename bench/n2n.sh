#!/usr/bin/env bash
# The peer baseline for bench/e2e.sh: n2n (Debian's n2n 1.3) in the same
# A — relay — B namespaces, A and B reaching each other only through the
# supernode in R. Reports ping RTT and TCP A→B, so lanparty and n2n can be
# compared in the same minute (this machine drifts ±30 % between minutes).
# Needs root, iproute2, iperf3, ping and n2n (apt-get install n2n).
#
#   bash bench/n2n.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
source bench/lib.sh
needs ip iperf3 ping edge supernode
id=$$
ra="nbR$id"; na="nbA$id"; nb="nbB$id"
make_arb "$na" "$ra" "$nb"
n2n_arb "$ra" "$na" "$nb" 10.77.0
wait_ping "$na" 10.77.0.2
echo "n2n $(edge -h 2>&1 | awk '/n2n v/ {print $4}'), $(nproc) cores, ${secs}s per test"
echo "ping RTT avg:        $(rtt "$na" 10.77.0.2) ms"
iperf_server "$nb" 10.77.0.2 iperf3
echo "TCP A→B:             $(tcp_mbit "$na" 10.77.0.2 "$secs") Mbit/s"

#!/usr/bin/env bash
# shaped.sh — latency under load on a shaped player link, lanparty only,
# with the queue's own view: A — R — B (bench/lib.sh), a qdisc on R's link
# towards B (B's downlink) or on A's link towards R (A's uplink), one
# iperf3 TCP stream A→B and a ping A→B every 10 ms during it. Prints the
# download rate, the ping avg/p99 idle and under load, and the relay's and
# client A's egress queue counters (backlog, CoDel drops, CE marks), and
# the bottleneck qdisc's backlog, so you see where packets waited.
#
#   bash bench/shaped.sh [SECONDS]           (as root, release build)
#   RATE=20mbit DIR=down|up CC=cubic|bbr QUEUE=fq-codel|fifo CONGESTION=delay|bbr|cubic|newreno
#   bin=target/release/lanparty
#
# ../shared/bench/peers.sh measures the same scenario beside the peers;
# this script is for looking inside lanparty.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
needs ip iperf3 ping python3
secs=${1:-15}
bin=${bin:-target/release/lanparty}
RATE=${RATE:-20mbit} DIR=${DIR:-down} CC=${CC:-cubic}
QUEUE=${QUEUE:-fq-codel} CONGESTION=${CONGESTION:-delay}
shape="tbf rate $RATE burst 32k latency 200ms"
sets="--set ports.relay.queue.discipline=$QUEUE --set ports.relay.congestion=$CONGESTION ${EXTRA_SETS:-}"
RELAY_SETS="$sets --set admin.socket=$dir/relay.sock"
CLIENT_SETS="$sets"

make_arb sha shr shb
if [ "$DIR" = down ]; then ip netns exec shr tc qdisc add dev rb root $shape
else ip netns exec sha tc qdisc add dev ua root $shape; fi
lanparty_arb shr sha shb shp 10.79.0
wait_ping sha 10.79.0.2
iperf_server shb 10.79.0.2 iperf
idle=$(ip netns exec sha ping -c 100 -i 0.01 -q 10.79.0.2 | awk -F/ '/^rtt/ {print $5}')

ip netns exec sha iperf3 -c 10.79.0.2 -C "$CC" -t "$secs" -J >"$dir/iperf.json" &
ipid=$!
sleep 2
ip netns exec sha ping -i 0.01 -c $(( (secs - 4) * 100 )) 10.79.0.2 >"$dir/ping.txt" &
ppid=$!
for _ in 1 2 3; do
  sleep $(( (secs - 4) / 3 ))
  "$bin" status --socket "$dir/relay.sock" --json >"$dir/status.json" 2>/dev/null || true
  python3 - "$dir/status.json" <<'PY' || true
import json, sys
s = json.load(open(sys.argv[1]))
for port in s.get("ports", {}).values() if isinstance(s.get("ports"), dict) else []:
    for p in port.get("peers", []):
        q = p.get("queue", {})
        print(f"  relay peer {p.get('mac')}: backlog {q.get('backlog_frames')} frames / {q.get('backlog_bytes')} B, codel {q.get('codel_drops')}, ce {q.get('ce_marks')}, overflow {q.get('overflow_drops')}, rate {p.get('send_rate')} B/s, rtt {p.get('rtt_us')} us")
PY
  if [ "$DIR" = down ]; then ip netns exec shr tc -s qdisc show dev rb | awk '/backlog/ {print "  bottleneck qdisc: " $0}'
  else ip netns exec sha tc -s qdisc show dev ua | awk '/backlog/ {print "  bottleneck qdisc: " $0}'; fi
done
wait "$ppid" || true
wait "$ipid" || true
mbit=$(python3 -c 'import json,sys; print("%.1f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]/1e6))' "$dir/iperf.json")
python3 - "$dir/ping.txt" "$idle" "$mbit" "$RATE" "$DIR" "$CC" "$QUEUE" "$CONGESTION" <<'PY'
import re, sys
rtts = sorted(float(m) for m in re.findall(r"time=([0-9.]+)", open(sys.argv[1]).read()))
n = len(rtts)
avg = sum(rtts) / n if n else float("nan")
p99 = rtts[min(n - 1, int(n * 0.99))] if n else float("nan")
print(f"rate {sys.argv[4]} {sys.argv[5]} cc {sys.argv[6]} queue {sys.argv[7]} congestion {sys.argv[8]}: "
      f"download {sys.argv[3]} Mbit/s, ping idle {sys.argv[2]} ms, under load avg {avg:.2f} / p99 {p99:.2f} ms ({n} replies)")
PY

#!/usr/bin/env bash
# Where an idle ping's round trip goes, hop by hop: lanparty and n2n run in
# the same A — R — B namespaces at the same time (lanparty on
# 10.77.0.0/24 over TAP, n2n on 10.78.0.0/24), and rounds of pings
# alternate between them. Each round captures on all six interfaces of the
# path (A's adapter, A's and R's veths, B's veth and adapter) and matches
# every echo request and its reply across them, so each hop's share is
# measured apart: A out (adapter → wire), R forward, B in (wire → adapter),
# B's kernel answering, B out, R forward back, A in. Captures add their own
# cost to every hop alike; compare the two systems, not the totals with
# plain ping.
# Needs root, iproute2, ping, dumpcap and tshark (apt-get install tshark),
# n2n (apt-get install n2n) and a release build (cargo build --release).
#
#   bash bench/hops.sh [ROUNDS] [COUNT] [INTERVAL]
#     ROUNDS rounds (default 2) per system of COUNT pings (default 200)
#     INTERVAL s apart (default 0.02). LP_BIN runs another lanparty binary;
#     RELAY_SETS / CLIENT_SETS add --set flags to lanparty.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}; count=${2:-200}; interval=${3:-0.02}
bin=${LP_BIN:-$PWD/target/release/lanparty}
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }
source bench/lib.sh
needs ip ping dumpcap tshark python3 edge supernode
id=$$
ra="hpR$id"; na="hpA$id"; nb="hpB$id"
make_arb "$na" "$ra" "$nb"
lanparty_arb "$ra" "$na" "$nb" lphop 10.77.0
n2n_arb "$ra" "$na" "$nb" 10.78.0
wait_ping "$na" 10.77.0.2
wait_ping "$na" 10.78.0.2
sleep 2

# round SYSTEM N — captures on the six interfaces while COUNT pings run;
# the timestamps go to $dir/SYSTEM-N-IFACE.txt.
round() {
  local sys=$1 n=$2 ta tb net port caps=()
  if [ "$sys" = lanparty ]; then ta=lphop-a tb=lphop-b net=10.77.0 port=4433
  else ta=n2na tb=n2nb net=10.78.0 port=7654; fi
  local at
  for at in "$na:$ta:icmp" "$na:ua:udp port $port" "$ra:ra:udp port $port" \
            "$ra:rb:udp port $port" "$nb:ub:udp port $port" "$nb:$tb:icmp"; do
    local ns=${at%%:*} rest=${at#*:}
    local ifc=${rest%%:*} filter=${rest#*:}
    ip netns exec "$ns" dumpcap -q -i "$ifc" -f "$filter" -w "$dir/$sys-$n-$ifc.pcap" >/dev/null 2>&1 &
    caps+=($!)
  done
  sleep 1.5
  ip netns exec "$na" ping -c "$count" -i "$interval" -q "$net.2" | tail -1 | sed "s/^/$sys round $n: /"
  sleep 0.5
  kill -INT "${caps[@]}"
  wait "${caps[@]}" 2>/dev/null || true
  local i k=0
  for i in "$ta" ua ra rb ub "$tb"; do
    tshark -r "$dir/$sys-$n-$i.pcap" -T fields -e frame.time_epoch -e frame.len -e icmp.type \
      2>/dev/null >"$dir/$sys-$n-hop$k.txt"
    k=$((k + 1))
  done
}

for n in $(seq "$rounds"); do
  round lanparty "$n"
  round n2n "$n"
done

python3 - "$dir" "$rounds" <<'PY'
import statistics, sys
d, rounds = sys.argv[1], int(sys.argv[2])
NAMES = ["A out", "wire", "R forward", "wire", "B in", "B kernel", "B out", "wire",
         "R back", "wire", "A in", "total"]

def load(sys_, n, k):
    rows = []
    for line in open(f"{d}/{sys_}-{n}-hop{k}.txt"):
        f = line.rstrip("\n").split("\t")
        rows.append((float(f[0]), int(f[1]), f[2] if len(f) > 2 else ""))
    return rows

def first(rows, after, min_len=110, within=0.005, icmp=None):
    """The first packet at or after `after` (a data packet, not an ACK)."""
    for t, length, kind in rows:
        if t >= after and t - after < within and length >= min_len and (icmp is None or kind == icmp):
            return t
    return None

def hops(sys_, n):
    ta, ua, ra, rb, ub, tb = (load(sys_, n, k) for k in range(6))
    out = []
    for t1, _, kind in ta:
        if kind != "8":
            continue
        t = [t1]
        for rows, icmp, back in ((ua, None, 0), (ra, None, 1e-5), (rb, None, 0), (ub, None, 1e-5),
                                 (tb, "8", 1e-5), (tb, "0", 0), (ub, None, 0), (rb, None, 1e-5),
                                 (ra, None, 0), (ua, None, 1e-5), (ta, "0", 0)):
            nxt = first(rows, t[-1] - back, min_len=0 if icmp else 110, icmp=icmp)
            if nxt is None:
                break
            t.append(nxt)
        if len(t) == 12:
            out.append([b - a for a, b in zip(t, t[1:])] + [t[-1] - t[0]])
    return out

for sys_ in ("lanparty", "n2n"):
    rows = [r for n in range(1, rounds + 1) for r in hops(sys_, n)]
    if not rows:
        print(f"{sys_}: no ping matched on all six interfaces")
        continue
    print(f"{sys_}: {len(rows)} pings matched, microseconds: median (p10 / p90)")
    for k, name in enumerate(NAMES):
        v = sorted(r[k] * 1e6 for r in rows)
        print(f"  {name:10s} {statistics.median(v):7.1f}  ({v[len(v) // 10]:6.1f} / {v[len(v) * 9 // 10]:6.1f})")
PY

# Shared by bench/e2e.sh and bench/n2n.sh: the A — R — B namespaces of
# shared/NOTES.md and the measurements both report. Source it; it sets
# `dir` (a scratch folder) and `pids` (processes to stop) and cleans up
# namespaces, processes and the folder on exit.

# needs TOOL... — exits 2 naming what is missing.
needs() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install iproute2 iperf3 iputils-ping n2n)" >&2; exit 2; }
  done
}

dir=$(mktemp -d)
pids=()
namespaces=()
bench_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for n in "${namespaces[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap bench_cleanup EXIT

# make_ns NAME... — new namespaces with loopback up, removed on exit.
make_ns() {
  for n in "$@"; do ip netns add "$n"; namespaces+=("$n"); ip -n "$n" link set lo up; done
}

# wire NS DEV R RDEV NET — a veth from DEV in NS (NET.2/24) to RDEV in R
# (NET.1/24), both ends up.
wire() {
  local ns=$1 dev=$2 r=$3 rdev=$4 net=$5
  ip link add "$dev" netns "$ns" type veth peer name "$rdev" netns "$r"
  ip -n "$ns" addr add "$net.2/24" dev "$dev"; ip -n "$r" addr add "$net.1/24" dev "$rdev"
  ip -n "$ns" link set "$dev" up; ip -n "$r" link set "$rdev" up
}

# make_arb A R B — A (10.203.1.2) and B (10.203.2.2) each wired to R
# (10.203.1.1, 10.203.2.1); R does not forward, so A and B meet only
# through what runs in R.
make_arb() {
  local na=$1 ra=$2 nb=$3
  make_ns "$na" "$ra" "$nb"
  wire "$na" ua "$ra" ra 10.203.1
  wire "$nb" ub "$ra" rb 10.203.2
}

# wait_ping NS ADDR — until ADDR answers from NS (up to ~10 s).
wait_ping() {
  for _ in $(seq 100); do
    ip netns exec "$1" ping -c 1 -W 1 "$2" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
}

# rtt NS ADDR — average RTT in ms of 100 pings 10 ms apart.
rtt() {
  ip netns exec "$1" ping -c 100 -i 0.01 -q "$2" | awk -F/ '/^rtt/ {print $5}'
}

# tcp_mbit NS ADDR SECONDS [iperf3 flags] — TCP Mbit/s received.
tcp_mbit() {
  local ns=$1 addr=$2 secs=$3
  shift 3
  ip netns exec "$ns" iperf3 -c "$addr" "$@" -t "$secs" -J |
    python3 -c 'import json,sys; print("%.0f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))'
}

# iperf_server NS ADDR NAME [PORT] — an iperf3 server (on PORT, default
# iperf3's 5201), stopped on exit.
iperf_server() {
  ip netns exec "$1" iperf3 -s -D -B "$2" ${4:+-p "$4"} --pidfile "$dir/$3.pid" >/dev/null
  sleep 0.3
  pids+=("$(cat "$dir/$3.pid")")
}

# bg NS LOG CMD... — CMD in namespace NS in the background, output to
# $dir/LOG, stopped on exit.
bg() {
  local ns=$1 log=$2
  shift 2
  ip netns exec "$ns" "$@" >"$dir/$log" 2>&1 &
  pids+=($!)
}

# lanparty_arb R A B DEV_PREFIX [SUBNET] — a lanparty relay in R (shipped
# relay.yaml, self-signed certificate in $dir/tls) and a TAP client in A
# (SUBNET.1) and in B (SUBNET.2), room BENCH, devices DEV_PREFIX-a/-b.
# Uses $bin; RELAY_SETS / CLIENT_SETS add --set flags.
lanparty_arb() {
  local ra=$1 na=$2 nb=$3 dev=$4 net=${5:-10.77.0}
  # shellcheck disable=SC2086 # the *_SETS are lists of flags
  bg "$ra" relay.log "$bin" --log-level warn run configs/relay.yaml \
    --set ports.relay.self_signed_dir="$dir/tls" ${RELAY_SETS:-}
  for _ in $(seq 100); do [ -f "$dir/tls/relay-cert.der" ] && break; sleep 0.05; done
  lanparty_client "$na" 10.203.1.1 02:00:00:00:0b:01 "$dev-a" "$net.1/24"
  lanparty_client "$nb" 10.203.2.1 02:00:00:00:0b:02 "$dev-b" "$net.2/24"
}

# lanparty_client NS RELAY_IP MAC DEVICE ADDRESS — one TAP client (admin
# socket $dir/DEVICE.sock).
lanparty_client() {
  # shellcheck disable=SC2086
  bg "$1" "$4.log" "$bin" --log-level warn run configs/client.yaml \
    --set ports.relay.relay="$2:4433" --set ports.relay.trust.pin="$dir/tls/relay-cert.der" \
    --set ports.relay.room=BENCH --set ports.relay.mac="$3" \
    --set ports.adapter.device="$4" --set "ports.adapter.addresses=[$5]" \
    --set admin.socket="$dir/$4.sock" ${CLIENT_SETS:-}
}

# n2n_arb R A B SUBNET — a supernode in R and edges n2na (SUBNET.1) in A
# and n2nb (SUBNET.2) in B, community "bench".
n2n_arb() {
  local ra=$1 na=$2 nb=$3 net=$4
  bg "$ra" supernode.log supernode -l 7654
  bg "$na" n2na.log edge -d n2na -a "$net.1" -c bench -k benchkey -l 10.203.1.1:7654 -m 02:00:00:00:0c:01
  bg "$nb" n2nb.log edge -d n2nb -a "$net.2" -c bench -k benchkey -l 10.203.2.1:7654 -m 02:00:00:00:0c:02
}

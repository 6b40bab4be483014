#!/usr/bin/env bash
# Relay-added latency: the same load through a separate relay process and
# over one direct QUIC connection (no relay), RUNS times each, interleaved.
# Usage: bash bench/relay-latency.sh [RATE] [RUNS] [SECONDS]
# Needs a release build (cargo build --release). Prints p50/p99 per run.
set -euo pipefail
rate=${1:-75000}
runs=${2:-3}
secs=${3:-4}
bin=${LP_BIN:-target/release/lanparty}
dir=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
relay_pid=
cleanup() {
    if [ -n "$relay_pid" ]; then kill "$relay_pid" 2>/dev/null || true; wait "$relay_pid" 2>/dev/null || true; fi
    rm -rf "$dir"
}
trap cleanup EXIT
"$bin" run configs/relay.yaml --log-level warn \
    --set "ports.relay.listen=127.0.0.1:$port" \
    --set "ports.relay.self_signed_dir=$dir" ${RELAY_SETS:-} &
relay_pid=$!
for _ in $(seq 50); do [ -f "$dir/relay-cert.der" ] && break; sleep 0.1; done
sleep 0.5
summary() { python3 -c 'import json,sys; r=json.load(sys.stdin); print("delivered %.0f/s loss %.2f%% p50 %.0f us p99 %.0f us" % (r["frames_per_second"], r["loss"], r["latency_p50_us"], r["latency_p99_us"]))'; }
for i in $(seq "$runs"); do
    echo -n "relay  run $i: "
    "$bin" bench --relay "127.0.0.1:$port" --pin "$dir/relay-cert.der" --rate "$rate" --seconds "$secs" --json --log-level warn | summary
    echo -n "direct run $i: "
    "$bin" bench --direct --rate "$rate" --seconds "$secs" --json --log-level warn | summary
done

//! End to end on real interfaces: game traffic keeps its latency while a
//! player downloads. A — relay — B in network namespaces, B's downlink
//! shaped to 20 Mbit/s with a 200 ms FIFO (`tbf`, a home router), one
//! iperf3 TCP download A→B with CUBIC and a ping A→B every 10 ms during it.
//! The same link is measured with the relay's egress queue as `fifo` and as
//! `fq-codel` (the default), in the same test: the assertion is a ratio
//! between the two, never a clock. Needs root, iperf3 and ping (CI has
//! them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::{
    Netns, TempDir, client_sets, lanparty_in, ping, start_relay, status_of, unique, veth,
};

/// Ping RTTs (ms) and the download's Mbit/s on the shaped link, with the
/// relay's queue discipline `discipline`; also the relay's status after.
fn download_with_pings(discipline: &str) -> (Vec<f64>, f64, serde_json::Value) {
    let dir = TempDir::new("game");
    let (r, a, b) = (Netns::new("lgr"), Netns::new("lga"), Netns::new("lgb"));
    let (ra, ar) = (unique("ra"), unique("ar"));
    let (rb, br) = (unique("rb"), unique("br"));
    veth(&a, &ar, &r, &ra);
    veth(&b, &br, &r, &rb);
    a.ip(&["addr", "add", "10.205.1.2/24", "dev", &ar]);
    r.ip(&["addr", "add", "10.205.1.1/24", "dev", &ra]);
    b.ip(&["addr", "add", "10.205.2.2/24", "dev", &br]);
    r.ip(&["addr", "add", "10.205.2.1/24", "dev", &rb]);
    // B's downlink: the relay's side of B's wire.
    let tc = r.exec(&[
        "tc", "qdisc", "add", "dev", &rb, "root", "tbf", "rate", "20mbit", "burst", "32k",
        "latency", "200ms",
    ]);
    assert!(
        tc.status.success(),
        "tc: {}",
        String::from_utf8_lossy(&tc.stderr)
    );

    let tls = dir.0.join("tls");
    let discipline_set = format!("ports.relay.queue.discipline={discipline}");
    let mut relay = start_relay(&r, &dir, &tls, &[discipline_set]);
    let mut nodes = Vec::new();
    for (ns, relay_ip, mac, addr) in [
        (&a, "10.205.1.1", "02:00:00:00:0e:01", "10.206.0.1/24"),
        (&b, "10.205.2.1", "02:00:00:00:0e:02", "10.206.0.2/24"),
    ] {
        let dev = unique("lpg");
        let mut sets = client_sets(relay_ip, &tls, "GAME", mac, &dev);
        sets.push(format!("ports.adapter.addresses=[{addr}]"));
        let log = format!("client-{mac}.log").replace(':', "");
        nodes.push(lanparty_in(ns, &dir, &log, "client.yaml", &sets));
    }
    assert!(
        ping(&a, "10.206.0.2", 20),
        "no ping through the relay:\n{}",
        relay.log_text()
    );

    let iperf_pid = dir.0.join("iperf.pid");
    let server = b.exec(&[
        "iperf3",
        "-s",
        "-D",
        "-1",
        "-B",
        "10.206.0.2",
        "--pidfile",
        iperf_pid.to_str().unwrap(),
    ]);
    assert!(
        server.status.success(),
        "iperf3 -s: {}",
        String::from_utf8_lossy(&server.stderr)
    );
    std::thread::sleep(Duration::from_millis(300));
    let a_name = a.name.clone();
    let download = std::thread::spawn(move || {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &a_name,
                "iperf3",
                "-c",
                "10.206.0.2",
                "-C",
                "cubic",
                "-t",
                "9",
                "--connect-timeout",
                "3000",
                "-J",
            ])
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        report["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0)
            / 1e6
    });
    // Let the download fill whatever queue it will fill, then ping.
    std::thread::sleep(Duration::from_secs(2));
    let pings = a.exec(&["ping", "-i", "0.01", "-c", "500", "-W", "2", "10.206.0.2"]);
    let mbit = download.join().unwrap();
    let status = status_of(&dir, "relay.log");
    // The iperf3 server we started (its pid file), by PID; no `kill`
    // binary needed.
    if let Some(pid) = std::fs::read_to_string(&iperf_pid)
        .ok()
        .and_then(|p| p.trim().parse::<libc::pid_t>().ok())
        .filter(|pid| *pid > 0)
    {
        // SAFETY: sends a signal; no memory is touched.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let rtts: Vec<f64> = String::from_utf8_lossy(&pings.stdout)
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(
        rtts.len() > 250,
        "{discipline}: only {} ping replies during the download:\n{}",
        rtts.len(),
        relay.log_text()
    );
    drop(nodes);
    relay.terminate(Duration::from_secs(5));
    (rtts, mbit, status)
}

fn p99(mut rtts: Vec<f64>) -> f64 {
    rtts.sort_by(f64::total_cmp);
    rtts[(rtts.len() * 99 / 100).min(rtts.len() - 1)]
}

#[test]
fn fq_codel_keeps_pings_short_during_a_download() {
    let (fifo_rtts, fifo_mbit, _) = download_with_pings("fifo");
    let (fq_rtts, fq_mbit, status) = download_with_pings("fq-codel");
    let (fifo_p99, fq_p99) = (p99(fifo_rtts), p99(fq_rtts));
    eprintln!(
        "fifo: p99 {fifo_p99:.1} ms, {fifo_mbit:.1} Mbit/s; fq-codel: p99 {fq_p99:.1} ms, {fq_mbit:.1} Mbit/s"
    );
    assert!(
        fq_p99 * 4.0 < fifo_p99,
        "fq-codel p99 {fq_p99} ms is not far below fifo's {fifo_p99} ms"
    );
    // The short queue does not starve the download (a ratio in one run).
    assert!(
        fq_mbit > 0.6 * fifo_mbit,
        "fq-codel download {fq_mbit} Mbit/s vs fifo {fifo_mbit}"
    );
    // The relay says why: its queue towards B dropped or marked the bulk
    // flow, and nothing overflowed.
    let peers = status["ports"]["relay"]["peers"].as_array().unwrap();
    let towards_b = peers
        .iter()
        .find(|p| p["mac"] == "02:00:00:00:0e:02")
        .expect("B in the relay's status");
    let queue = &towards_b["queue"];
    let aqm = queue["codel_drops"].as_u64().unwrap() + queue["ce_marks"].as_u64().unwrap();
    assert!(aqm > 0, "no CoDel drops or marks: {queue}");
    assert_eq!(queue["overflow_drops"], 0, "{queue}");
    assert!(towards_b["send_rate"].as_u64().unwrap() > 0, "{towards_b}");
}

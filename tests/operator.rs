//! Operator features on a running relay process: `lanparty status` over
//! the admin socket (text and JSON), the Prometheus endpoint, a live
//! `lanparty capture` and the `capture` stage's files — both read back by
//! tshark — while `lanparty bench` peers send through the relay.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use support::*;

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn lp(args: &[&str]) -> std::process::Output {
    Command::new(lanparty()).args(args).output().unwrap()
}

fn metrics(port: u16) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

/// tshark's one line per frame, with the interface (link) name.
fn tshark(file: &std::path::Path) -> Vec<String> {
    let out = Command::new("tshark")
        .args(["-r"])
        .arg(file)
        .args([
            "-T",
            "fields",
            "-e",
            "frame.interface_name",
            "-e",
            "eth.src",
            "-e",
            "frame.len",
        ])
        .output()
        .expect("tshark is installed (apt-get install tshark)");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn status_metrics_and_captures_on_a_running_relay() {
    let dir = TempDir::new("operator");
    let (port, metrics_port) = (free_port(), free_tcp_port());
    let socket = dir.0.join("admin.sock");
    let captures = dir.0.join("captures");
    let config = dir.file(
        "relay.yaml",
        &format!(
            "node: {{ name: test-relay }}
ports:
  relay: {{ type: quic-server, listen: '127.0.0.1:{port}', self_signed_dir: {tls} }}
room:
  ingress:
    - {{ type: mac-guard }}
    - {{ type: capture, dir: {captures}, max_file_size: 65536, max_files: 2 }}
  router: {{ type: switch }}
  egress: [ {{ type: reflection }} ]
admin: {{ socket: {socket} }}
metrics: {{ listen: '127.0.0.1:{metrics_port}' }}
rooms: {{ policy_dir: {policies}, reload_interval: 200ms }}
",
            tls = dir.0.join("tls").display(),
            captures = captures.display(),
            socket = socket.display(),
            policies = dir.0.join("policies").display(),
        ),
    );
    std::fs::create_dir_all(dir.0.join("policies")).unwrap();
    let mut relay = spawn(
        &[
            lanparty().to_str().unwrap(),
            "run",
            config.to_str().unwrap(),
        ],
        &dir.0.join("relay.log"),
    );
    let cert = dir.0.join("tls/relay-cert.der");
    assert!(
        wait_until(Duration::from_secs(10), || socket.exists() && cert.exists()),
        "relay did not start: {}",
        relay.log_text()
    );
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the admin socket is owner-only");

    // The running relay picks up a new policy file by itself.
    dir.file("policies/BENCH0.yaml", "max_peers: 4\n");
    let sock = socket.to_str().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let out = lp(&["status", "--socket", sock, "--json"]);
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            report["policies"]["rooms"] == serde_json::json!(["BENCH0"])
        }),
        "the policy was never loaded: {}",
        relay.log_text()
    );

    let mut bench = spawn(
        &[
            lanparty().to_str().unwrap(),
            "bench",
            "--relay",
            &format!("127.0.0.1:{port}"),
            "--pin",
            cert.to_str().unwrap(),
            "--rate",
            "2000",
            "--seconds",
            "6",
            "--size",
            "200",
        ],
        &dir.0.join("bench.log"),
    );
    // Status: two bench peers in room BENCH0, with their details.
    let mut report = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(10), || {
            let out = lp(&["status", "--socket", sock, "--json"]);
            report = serde_json::from_slice(&out.stdout).unwrap_or_default();
            report["ports"]["relay"]["peers"]
                .as_array()
                .is_some_and(|p| p.len() == 2)
                && report["rooms"][0]["pipeline"]["frames_in"]
                    .as_u64()
                    .unwrap_or(0)
                    > 50
        }),
        "status never showed two busy peers: {report:#}\n{}",
        relay.log_text()
    );
    let peer = &report["ports"]["relay"]["peers"][0];
    assert_eq!(peer["room"], "BENCH0");
    assert_eq!(peer["role"], "client");
    assert!(
        peer["rtt_us"].as_u64().is_some() && peer["mtu"].as_u64() == Some(1500),
        "{peer}"
    );
    assert_eq!(report["node"], "test-relay");
    assert_eq!(report["rooms"][0]["links"].as_array().unwrap().len(), 2);
    let text = String::from_utf8(lp(&["status", "--socket", sock]).stdout).unwrap();
    for expect in [
        "node: test-relay",
        "port: relay (quic-server)",
        "in room BENCH0",
        "room: BENCH0",
        "ingress[1]:capture",
    ] {
        assert!(text.contains(expect), "`{expect}` missing from:\n{text}");
    }

    // Metrics.
    let m = metrics(metrics_port);
    assert!(m.starts_with("HTTP/1.1 200 OK"), "{m}");
    assert!(
        m.contains("lanparty_relay_peers{port=\"relay\",room=\"BENCH0\"} 2"),
        "{m}"
    );
    // OpenMetrics text (the prometheus-client crate's encoder).
    assert!(
        m.contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{m}"
    );
    assert!(m.contains("# TYPE lanparty_link_rx_frames counter"), "{m}");
    assert!(m.trim_end().ends_with("# EOF"), "{m}");
    assert!(
        m.contains("lanparty_relay_admitted_total{port=\"relay\"} 2"),
        "{m}"
    );

    // Bounded: other methods and paths, an oversized head, a silent client.
    let answer = |request: &[u8]| {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
        let _ = stream.write_all(request);
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    };
    assert!(answer(b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 405"));
    assert!(answer(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 404"));
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let refused = answer(huge.as_bytes());
    assert!(
        refused.is_empty() || refused.starts_with("HTTP/1.1 431"),
        "{refused}"
    );
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut rest = Vec::new();
    // The server hangs up on a client that sends no request.
    assert!(silent.read_to_end(&mut rest).is_ok());
    // And serves the next scrape as before.
    assert!(metrics(metrics_port).starts_with("HTTP/1.1 200 OK"));

    // A live capture through the admin socket, read back by tshark.
    let live = dir.0.join("live.pcapng");
    let out = lp(&[
        "capture",
        "BENCH0",
        "--socket",
        sock,
        "-w",
        live.to_str().unwrap(),
        "--count",
        "25",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = tshark(&live);
    assert_eq!(lines.len(), 25, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("relay/peer#") && l.ends_with("\t200")),
        "{lines:?}"
    );
    // No such room: a clear error.
    let out = lp(&[
        "capture",
        "NOPE",
        "--socket",
        sock,
        "-w",
        dir.0.join("x.pcapng").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no room `NOPE`"));

    // The capture stage's files, after the relay stops, rotated and capped.
    assert!(wait_until(Duration::from_secs(15), || !bench.running()));
    assert_eq!(
        relay.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        relay.log_text()
    );
    let mut files: Vec<_> = std::fs::read_dir(&captures)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "max_files keeps two: {files:?}");
    for file in &files {
        assert!(
            file.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("BENCH0-")
        );
        assert!(std::fs::metadata(file).unwrap().len() <= 65536);
        let lines = tshark(file);
        assert!(lines.len() > 50, "{file:?}: {} frames", lines.len());
        assert!(
            lines.iter().all(|l| l.starts_with("relay/peer#")),
            "{lines:?}"
        );
    }
    assert!(!socket.exists(), "the socket is removed on exit");
}

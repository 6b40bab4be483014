//! What a new user meets in the first hour, run as they would run it: the
//! `lanparty` binary on loopback, reading its stderr. Each test is one of
//! the silent failures of issue #13: a relay that cannot listen, a wrong
//! pinned certificate, a client started before its relay, an adapter that
//! cannot open, log files full of colour codes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{Proc, TempDir, lanparty, spawn, wait_until};

/// A UDP port on 127.0.0.1 that nothing listens on right now.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs")
        .join(name)
        .display()
        .to_string()
}

/// `lanparty --log-level info run CONFIG --set …`, waited for up to
/// `timeout` (killed after it).
fn run_to_end(config: &str, sets: &[String], timeout: Duration) -> Output {
    let mut args = vec!["run".to_string(), config.to_string()];
    for s in sets {
        args.extend(["--set".to_string(), s.clone()]);
    }
    let mut child = Command::new(lanparty())
        .args(&args)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < timeout {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    panic!(
        "still running after {timeout:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Starts the shipped relay on 127.0.0.1:`port` with its files in `dir`.
fn relay(dir: &TempDir, port: u16, tls: &Path) -> Proc {
    let args = [
        lanparty().display().to_string(),
        "run".into(),
        config("relay.yaml"),
        "--set".into(),
        format!("ports.relay.listen=127.0.0.1:{port}"),
        "--set".into(),
        format!("ports.relay.self_signed_dir={}", tls.display()),
        "--set".into(),
        format!("admin.socket={}", dir.0.join("relay.sock").display()),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let relay = spawn(&args, &dir.0.join("relay.log"));
    relay.wait_for_log("relay listening", "relay did not start");
    relay
}

/// `lanparty cert new --dir DIR`; returns the certificate to pin.
fn new_cert(dir: &Path) -> std::path::PathBuf {
    let made = Command::new(lanparty())
        .args(["cert", "new", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    dir.join("relay-cert.der")
}

/// A node with only a player's session: no adapter, nothing to set up.
fn session_only(dir: &TempDir, port: u16, pin: &Path, extra: &str) -> String {
    dir.file(
        &format!("session-{port}.yaml"),
        &format!(
            "node: {{ name: player }}\nadmin: {{ socket: off }}\nports:\n  relay:\n    type: quic-client\n    relay: 127.0.0.1:{port}\n    server_name: lanparty-relay.local\n    trust: {{ pin: {} }}\n    room: FIRST\n    role: client\n    mac: \"02:00:00:00:13:01\"\n{extra}",
            pin.display()
        ),
    )
    .display()
    .to_string()
}

#[test]
fn a_relay_that_cannot_listen_exits_1_naming_the_port_and_leaves_no_socket() {
    let dir = TempDir::new("firsthour-bind");
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let socket = dir.0.join("relay.sock");
    let out = run_to_end(
        &config("relay.yaml"),
        &[
            format!("ports.relay.listen=127.0.0.1:{port}"),
            format!(
                "ports.relay.self_signed_dir={}",
                dir.0.join("tls").display()
            ),
            format!("admin.socket={}", socket.display()),
        ],
        Duration::from_secs(15),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: port `relay`: cannot listen on 127.0.0.1:")
            && last.contains("in use"),
        "the last line names the port and the cause: {err}"
    );
    assert!(!socket.exists(), "the admin socket was left behind");
    // Not a terminal: no colour codes in what a log file would get.
    assert!(!err.contains('\x1b'), "colour codes in a pipe: {err:?}");
    // `shutting down` comes after the failure that caused it, once.
    let failed = err.find("cannot listen").unwrap();
    let down = err.find("shutting down").expect("a shutting down line");
    assert!(
        failed < down && err.matches("shutting down").count() == 1,
        "{err}"
    );
}

#[test]
fn a_wrong_pinned_certificate_is_final_and_says_which_file() {
    let dir = TempDir::new("firsthour-pin");
    let port = free_udp_port();
    let _relay = relay(&dir, port, &dir.0.join("tls"));
    // A certificate of some other relay.
    let pin = new_cert(&dir.0.join("other"));
    let client = session_only(&dir, port, &pin, "    reconnect_min: 100ms\n");
    let start = Instant::now();
    let out = run_to_end(&client, &[], Duration::from_secs(15));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("TLS with the relay")
            && last.contains(&pin.display().to_string())
            && last.contains("trust.pin"),
        "{err}"
    );
    // Final at once: one attempt, not a retry loop.
    assert!(!err.contains("retry_in"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_client_started_before_its_relay_says_the_relay_does_not_answer_and_joins_when_it_does() {
    let dir = TempDir::new("firsthour-early");
    let port = free_udp_port();
    let tls = dir.0.join("tls");
    let client = session_only(
        &dir,
        port,
        &new_cert(&tls),
        "    hello_timeout: 1s\n    reconnect_min: 100ms\n    reconnect_max: 300ms\n",
    );
    let client = spawn(
        &[lanparty().to_str().unwrap(), "run", &client],
        &dir.0.join("client.log"),
    );
    assert!(
        wait_until(Duration::from_secs(10), || client
            .log_text()
            .matches("does not answer")
            .count()
            >= 2),
        "{}",
        client.log_text()
    );
    let log = client.log_text();
    assert!(log.contains("connecting to the relay"), "{log}");
    assert!(
        log.contains(&format!("the relay at 127.0.0.1:{port}")),
        "says where it looked: {log}"
    );
    let _relay = relay(&dir, port, &tls);
    client.wait_for_log("joined the room", "the client did not join");
}

#[test]
fn an_adapter_that_cannot_open_is_named_by_its_port_and_nothing_joins_after_shutting_down() {
    let dir = TempDir::new("firsthour-adapter");
    let port = free_udp_port();
    let tls = dir.0.join("tls");
    let _relay = relay(&dir, port, &tls);
    // `lo` exists and is no TAP device: opening it as one fails at start,
    // as it does for a user who is not root.
    let out = run_to_end(
        &config("client.yaml"),
        &[
            format!("ports.relay.relay=127.0.0.1:{port}"),
            format!(
                "ports.relay.trust.pin={}",
                tls.join("relay-cert.der").display()
            ),
            "ports.adapter.device=lo".into(),
            format!("admin.socket={}", dir.0.join("client.sock").display()),
        ],
        Duration::from_secs(15),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: port `adapter`: device lo:"),
        "{err}"
    );
    let down = err.find("shutting down").expect("a shutting down line");
    assert!(!err[down..].contains("joined the room"), "{err}");
    assert!(!err[..down].contains("stopped"), "{err}");
    assert!(!dir.0.join("client.sock").exists());
}

#[test]
fn a_player_has_one_mac_the_adapter_takes_from_the_session() {
    let client = config("client.yaml");
    // The shipped client sets the MAC once; the adapter takes it, and the
    // default admin socket carries it, so two players never share one.
    let check = |sets: &[&str]| {
        let mut cmd = Command::new(lanparty());
        cmd.args(["check", &client]);
        for s in sets {
            cmd.args(["--set", s]);
        }
        cmd.output().unwrap()
    };
    let out = check(&["ports.relay.mac=02:00:00:00:00:52"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("/run/lanparty/client-02-00-00-00-00-52.sock"),
        "{text}"
    );
    // An adapter MAC that differs is refused, naming both keys.
    let out = check(&[
        "ports.relay.mac=02:00:00:00:00:52",
        "ports.adapter.mac=02:00:00:00:00:53",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--set ports.adapter.mac=02:00:00:00:00:53")
            && err.contains("`ports.adapter.mac`")
            && err.contains("`ports.relay.mac`"),
        "{err}"
    );
    // The same rule for the emulated adapters.
    for other in ["client-tun-l2.yaml", "client-windows.yaml"] {
        let out = Command::new(lanparty())
            .args(["check", &config(other), "--set"])
            .arg("ports.adapter.mac=02:00:00:00:00:53")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{other}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("`ports.relay.mac`"),
            "{}",
            stderr(&out)
        );
    }
}

//! The `lanparty` command line: stages, check, test, and their exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{TempDir, lanparty};

fn run(args: &[&str]) -> Output {
    Command::new(lanparty())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// Copies the shipped `configs/client.yaml` into `dir` beside a certificate
/// of its own at `dir/tls` (the file pins `tls/relay-cert.der`, which the
/// shipped relay makes on first start and a fresh clone does not have), and
/// returns the copy's path.
fn shipped_client_in(dir: &Path) -> std::path::PathBuf {
    let out = run(&["cert", "new", "--dir", dir.join("tls").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/client.yaml");
    let copy = dir.join("client.yaml");
    std::fs::copy(&shipped, &copy).unwrap();
    copy
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn stages_lists_exactly_the_linked_stage_kinds() {
    let out = run(&["stages"]);
    assert!(out.status.success());
    let names: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert_eq!(
        names,
        [
            "af-packet",
            "capture",
            "dhcp-server",
            "ethertype",
            "hub",
            "ipv6-ra",
            "jumbo",
            "mac-guard",
            "quic-client",
            "quic-server",
            "reflection",
            "storm",
            "switch",
            "switch-control",
            "tap",
            "tcp-mss",
            "tun-l2",
            "wintun",
        ]
    );
}

#[test]
fn stages_describes_one_kind_and_suggests_on_typos() {
    let out = run(&["stages", "storm"]);
    assert!(out.status.success());
    let t = text(&out);
    assert!(
        t.contains("rate") && t.contains("burst") && t.contains("example"),
        "{t}"
    );
    let out = run(&["stages", "strom"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("did you mean `storm`"));
}

#[test]
fn check_passes_on_every_shipped_config() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    // client.yaml pins the certificate the shipped relay makes on first
    // start; make it the same way if no relay has run here yet.
    if !dir.join("tls/relay-cert.der").exists() {
        let out = run(&["cert", "new", "--dir", dir.join("tls").to_str().unwrap()]);
        assert!(
            out.status.success() || dir.join("tls/relay-cert.der").exists(),
            "{}",
            text(&out)
        );
    }
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let out = run(&["check", path.to_str().unwrap()]);
            assert!(out.status.success(), "{}: {}", path.display(), text(&out));
            checked += 1;
        }
    }
    assert!(checked >= 1);
}

const GOOD: &str = "
ports:
  a: { type: tap, device: lpcheck0 }
room:
  ingress: [ { type: jumbo } ]
";

#[test]
fn check_names_file_and_key_for_a_misspelt_key() {
    let dir = TempDir::new("check");
    let file = dir.file("typo.yaml", &GOOD.replace("  ingress:", "  ingres:"));
    let out = run(&["check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(
        t.contains(&file.display().to_string())
            && t.contains("`room.ingres`")
            && t.contains("unknown key"),
        "{t}"
    );
    // Inside a stage entry too.
    let file = dir.file(
        "typo2.yaml",
        &GOOD.replace("device: lpcheck0", "device: lpcheck0, mtuu: 1400"),
    );
    let t = text(&run(&["check", file.to_str().unwrap()]));
    assert!(
        t.contains("`ports.a.mtuu`") && t.contains("typo2.yaml"),
        "{t}"
    );
}

#[test]
fn check_names_file_and_key_for_an_unknown_stage_type() {
    let dir = TempDir::new("check");
    let file = dir.file("unknown.yaml", &GOOD.replace("type: jumbo", "type: jumob"));
    let out = run(&["check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(
        t.contains("unknown.yaml")
            && t.contains("`room.ingress[0].type`")
            && t.contains("did you mean `jumbo`"),
        "{t}"
    );
}

#[test]
fn check_lists_every_error_at_once() {
    let dir = TempDir::new("check");
    let file = dir.file(
        "many.yaml",
        "ports:\n  a: { type: tapp, device: x }\nroom:\n  ingress: [ { type: storm, rate: 0 }, { type: nope } ]\n",
    );
    let t = text(&run(&["check", file.to_str().unwrap()]));
    assert!(t.contains("3 problems"), "{t}");
}

#[test]
fn overrides_from_set_and_environment() {
    let dir = TempDir::new("check");
    let file = dir.file("good.yaml", GOOD);
    let out = run(&["check", file.to_str().unwrap(), "--set", "room.mtu=1280"]);
    assert!(text(&out).contains("room MTU 1280"), "{}", text(&out));
    let out = Command::new(lanparty())
        .args(["check", file.to_str().unwrap()])
        .env("LANPARTY_ROOM__MTU", "1300")
        .output()
        .unwrap();
    assert!(text(&out).contains("room MTU 1300"), "{}", text(&out));
    let out = run(&["check", file.to_str().unwrap(), "--set", "room.mtu=12"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["check", file.to_str().unwrap(), "--set", "room.bogus=1"]);
    assert!(text(&out).contains("`room.bogus`"), "{}", text(&out));
}

#[test]
fn run_refuses_a_bad_config_with_exit_2() {
    let out = run(&["run", "/nonexistent/relay.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("cannot read config file"));
}

#[test]
fn pipeline_tests_pass_and_failures_are_reported() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files: Vec<String> = std::fs::read_dir(root.join("tests/pipeline"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    let mut args = vec!["test"];
    args.extend(files.iter().map(String::as_str));
    let out = run(&args);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(" passed, 0 failed"));

    let dir = TempDir::new("ptest");
    let file = dir.file(
        "wrong.yaml",
        "room: {}\nlinks:\n  a: { role: client, mac: \"02:00:00:00:00:01\" }\n  b: { role: client, mac: \"02:00:00:00:00:02\" }\n\
         cases:\n  - name: expects the wrong thing\n    steps:\n      - send: a\n        frame: { kind: arp-request }\n        expect: { to: [a] }\n",
    );
    let out = run(&["test", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let t = text(&out);
    assert!(
        t.contains("FAILED")
            && t.contains("expected the frame to leave on [\"a\"]")
            && t.contains("0 passed, 1 failed"),
        "{t}"
    );
}

#[test]
fn cert_new_writes_der_files_once() {
    let dir = TempDir::new("cert");
    let out = run(&[
        "cert",
        "new",
        "--dir",
        dir.0.to_str().unwrap(),
        "--name",
        "relay.test",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let der = std::fs::read(dir.0.join("relay-cert.der")).unwrap();
    assert_eq!(der[0], 0x30, "DER certificate");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.0.join("relay-key.der"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "private key readable by the owner only");
    let out = run(&["cert", "new", "--dir", dir.0.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "never overwrites");
    assert!(text(&out).contains("already exists"));
}

#[test]
fn log_format_json_and_bad_log_level() {
    let out = run(&["--log-level", "not=a=level", "stages"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["--log-format", "json", "stages"]);
    assert!(out.status.success());
}

#[test]
fn bench_carries_frames_through_an_in_process_relay_and_directly() {
    for extra in [&[][..], &["--direct"][..]] {
        let mut args = vec![
            "--log-level",
            "warn",
            "bench",
            "--seconds",
            "1",
            "--rate",
            "500",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = run(&args);
        assert!(out.status.success(), "{}", text(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let (sent, received) = (
            report["sent"].as_u64().unwrap(),
            report["received"].as_u64().unwrap(),
        );
        assert!(sent >= 400, "{report}");
        assert_eq!(received, sent, "frames lost at 500/s: {report}");
        assert!(report["latency_p50_us"].as_f64().unwrap() > 0.0);
    }
    let out = run(&["bench", "--size", "20"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--size"));
}

#[test]
fn check_validates_the_policy_folder() {
    let dir = TempDir::new("policies");
    let relay = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/relay.yaml");
    let relay = relay.to_str().unwrap();
    dir.file("FRIDAY.yaml", "max_peers: 8\ngateway: forbidden\n");
    // `lanparty check` of a closed relay with its policies in `dir`.
    let check_closed = |dir: &Path| {
        let set = format!("rooms.policy_dir={}", dir.display());
        run(&[
            "check",
            relay,
            "--set",
            &set,
            "--set",
            "rooms.require_policy=true",
        ])
    };
    let out = check_closed(&dir.0);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("1 room policy"), "{}", text(&out));
    let set = format!("rooms.policy_dir={}", dir.0.display());
    dir.file("BROKEN.yaml", "max_peers: 8\nstorm: 3\n");
    let out = run(&["check", relay, "--set", &set]);
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(
        t.contains("BROKEN.yaml") && t.contains("unknown key `storm`"),
        "{t}"
    );
    // The shipped example policy folder checks too.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/policies");
    let out = check_closed(&shipped);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // A closed relay needs a folder.
    let out = run(&["check", relay, "--set", "rooms.require_policy=true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("rooms.policy_dir"), "{}", text(&out));
}

#[test]
fn hash_password_prints_a_hash_that_a_policy_accepts() {
    use std::io::Write;
    let mut child = Command::new(lanparty())
        .args(["room", "hash-password"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hunter2\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    let hash = hash.trim();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$") && !hash.contains("hunter2"),
        "{hash}"
    );
    let parsed: lanparty_core::config::PasswordHash = hash.parse().unwrap();
    assert!(lanparty_transports::credentials::verify(
        &[parsed],
        "hunter2"
    ));
    // Costs below the floor are refused with what to use.
    let out = Command::new(lanparty())
        .args(["room", "hash-password", "--memory-kib", "1024"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("too cheap"));
}

#[cfg(not(windows))]
#[test]
fn the_windows_config_checks_everywhere_and_says_it_runs_on_windows_only() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/client-windows.yaml");
    let config = config.to_str().unwrap();
    let out = run(&["check", config]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = run(&["check", config, "--set", "ports.adapter.guid=nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("ports.adapter.guid"), "{}", text(&out));
    let out = run(&["run", config, "--set", "ports.relay.relay=127.0.0.1:9"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("Windows only"), "{}", text(&out));
}

#[test]
fn relative_paths_stay_relative_to_the_config_file_when_set_overrides_a_sibling_key() {
    let dir = TempDir::new("relpath");
    let sub = dir.0.join("conf");
    std::fs::create_dir_all(&sub).unwrap();
    shipped_client_in(&sub);
    // Run from elsewhere, overriding a key next to `trust.pin`.
    let out = Command::new(lanparty())
        .current_dir(&dir.0)
        .args([
            "check",
            "conf/client.yaml",
            "--set",
            "ports.relay.room=OTHER",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_numeric_room_code_is_taken_as_written_and_set_typos_name_the_flag() {
    let dir = TempDir::new("roomcode");
    let client = shipped_client_in(&dir.0);
    let client = client.to_str().unwrap();
    let out = run(&["check", client, "--set", "ports.relay.room=2024"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run(&["check", client, "--set", "ports.relay.credential=123456"]);
    assert!(out.status.success(), "{}", text(&out));
    // Not a whole number: the error says to quote it.
    let out = run(&["check", client, "--set", "ports.relay.room=1.5"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("quote"), "{}", text(&out));
    // A misspelt key given on the command line is the flag's, not the file's.
    let out = run(&["check", client, "--set", "ports.relay.rooom=X"]);
    let t = text(&out);
    assert!(
        t.contains("--set ports.relay.rooom=X: `ports.relay.rooom`: unknown key")
            && !t.contains("client.yaml:"),
        "{t}"
    );
    // So is a misspelt port name.
    let t = text(&run(&["check", client, "--set", "ports.relai.room=X"]));
    assert!(
        t.contains("--set ports.relai.room=X: `ports.relai`") && t.contains("misspelt"),
        "{t}"
    );
}

#[test]
fn check_recognises_a_room_policy_given_as_a_node_config() {
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/policies/FRIDAY.yaml");
    let out = run(&["check", policy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(
        t.contains("is a room policy")
            && t.contains("rooms.policy_dir=")
            && !t.contains("unknown key"),
        "{t}"
    );
}

#[test]
fn a_path_given_by_set_is_relative_to_the_working_directory() {
    let dir = TempDir::new("setpath");
    let out = run(&["cert", "new", "--dir", dir.0.join("tls").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/client.yaml");
    // From the temporary folder, `tls/relay-cert.der` is that folder's file
    // (in the file the same text means configs/tls/…).
    let out = Command::new(lanparty())
        .current_dir(&dir.0)
        .args(["check", client.to_str().unwrap(), "--set"])
        .arg("ports.relay.trust.pin=tls/relay-cert.der")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = Command::new(lanparty())
        .current_dir(&dir.0)
        .args(["check", client.to_str().unwrap(), "--set"])
        .arg("ports.relay.trust.pin=nope/relay-cert.der")
        .output()
        .unwrap();
    assert!(
        text(&out).contains("cannot read pinned certificate nope/relay-cert.der"),
        "{}",
        text(&out)
    );
}

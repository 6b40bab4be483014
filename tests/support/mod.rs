//! Helpers for end-to-end tests on real interfaces: network namespaces and
//! child processes that are removed and stopped on every exit path
//! (including a failing assertion), and names unique per test run.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The `lanparty` binary under test.
pub fn lanparty() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lanparty"))
}

/// A short name unique to this process and call: `{prefix}{pid%10000}{n}`,
/// short enough for an interface name.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}{n}", std::process::id() % 10000)
}

/// Runs a command and returns its output; panics with stderr on failure.
pub fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command and returns whether it succeeded.
pub fn try_sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A network namespace, deleted on drop.
pub struct Netns {
    /// Its name.
    pub name: String,
}

impl Netns {
    /// Creates a namespace with a unique name starting with `prefix`, with
    /// loopback up.
    pub fn new(prefix: &str) -> Netns {
        let name = unique(prefix);
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Runs `ip -n NS ARGS…`, panicking on failure.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        Command::new(full[0]).args(&full[1..]).output().unwrap()
    }

    /// Starts a command inside the namespace, logging to `log`.
    pub fn spawn(&self, args: &[&str], log: &Path) -> Proc {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        spawn(&full, log)
    }

    /// Waits until `ip -n NS link show DEV` succeeds.
    pub fn wait_for_link(&self, dev: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if try_sh(&["ip", "-n", &self.name, "link", "show", dev]) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace removes every interface inside it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Starts `args` (not in a namespace), logging to `log`.
pub fn spawn(args: &[&str], log: &Path) -> Proc {
    let file = std::fs::File::create(log).unwrap();
    let child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    Proc {
        child,
        log: log.to_path_buf(),
    }
}

/// A child process, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Proc {
    child: Child,
    /// Where it logs.
    pub log: PathBuf,
}

impl Proc {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `timeout`; returns the exit code if it
    /// exited.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to 10 s until its log holds `text`; panics with `what` and
    /// the log otherwise.
    pub fn wait_for_log(&self, text: &str, what: &str) {
        assert!(
            wait_until(Duration::from_secs(10), || self.log_text().contains(text)),
            "{what}:\n{}",
            self.log_text()
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() && self.terminate(Duration::from_secs(3)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory.
    pub fn new(prefix: &str) -> TempDir {
        let dir = std::env::temp_dir().join(unique(&format!("lanparty-{prefix}-")));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Writes a file and returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("LP_KEEP_TEST_DIR").is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Pings `addr` from `ns` up to `tries` times; true on the first reply.
pub fn ping(ns: &Netns, addr: &str, tries: u32) -> bool {
    let flag = if addr.contains(':') { "-6" } else { "-4" };
    (0..tries).any(|_| {
        ns.exec(&["ping", flag, "-c", "1", "-W", "1", addr])
            .status
            .success()
    })
}

/// Creates a veth pair with one end in each namespace, both up.
pub fn veth(a: &Netns, name_a: &str, b: &Netns, name_b: &str) {
    sh(&[
        "ip", "link", "add", name_a, "netns", &a.name, "type", "veth", "peer", "name", name_b,
        "netns", &b.name,
    ]);
    a.ip(&["link", "set", name_a, "up"]);
    b.ip(&["link", "set", name_b, "up"]);
}

/// Wires `ns` to the relay's namespace `r` over a veth pair on `NET.0/24`
/// (`NET.2` in `ns`, `NET.1` in `r`, e.g. `net` = `10.201.3`); returns the
/// relay's address on it.
pub fn underlay(ns: &Netns, r: &Netns, net: &str) -> String {
    let (here, there) = (unique("u"), unique("w"));
    veth(ns, &here, r, &there);
    ns.ip(&["addr", "add", &format!("{net}.2/24"), "dev", &here]);
    r.ip(&["addr", "add", &format!("{net}.1/24"), "dev", &there]);
    format!("{net}.1")
}

/// The python helper for sniffing, injecting and UDP games.
pub fn helper() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/e2e/lanhelper.py")
        .display()
        .to_string()
}

/// The python interpreter (Debian's, when present).
pub fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Waits until `check` is true, up to `timeout`.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Frames in a sniffer's output file (hex lines after "ready").
pub fn sniffed(path: &Path) -> Vec<Vec<u8>> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l != "ready")
        .filter_map(|l| lanparty_core::testing::frames::from_hex(l).ok())
        .collect()
}

/// The relay port of the shipped configs.
pub const PORT: &str = "4433";

/// Starts `lanparty run CONFIG --set …` in `ns`.
pub fn lanparty_in(ns: &Netns, dir: &TempDir, log: &str, config: &str, sets: &[String]) -> Proc {
    let config = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs")
        .join(config);
    let level = std::env::var("LP_TEST_LOG").unwrap_or_else(|_| "info".into());
    let mut args = vec![
        lanparty().display().to_string(),
        "--log-level".into(),
        level,
        "run".into(),
        config.display().to_string(),
    ];
    for s in sets {
        args.push("--set".into());
        args.push(s.clone());
    }
    // Each node its own admin socket, next to its log.
    args.push("--set".into());
    args.push(format!("admin.socket={}", admin_socket(dir, log).display()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ns.spawn(&args, &dir.0.join(log))
}

pub fn admin_socket(dir: &TempDir, log: &str) -> std::path::PathBuf {
    dir.0.join(format!("{log}.sock"))
}

/// `lanparty status --json` of the node that logs to `log`.
pub fn status_of(dir: &TempDir, log: &str) -> serde_json::Value {
    let out = std::process::Command::new(lanparty())
        .args(["status", "--json", "--socket"])
        .arg(admin_socket(dir, log))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn client_sets(relay_ip: &str, tls: &Path, room: &str, mac: &str, dev: &str) -> Vec<String> {
    let mut sets = relay_sets(relay_ip, tls, room);
    sets.extend([
        // The adapter takes the session's MAC (one identity per client).
        format!("ports.relay.mac={mac}"),
        format!("ports.adapter.device={dev}"),
    ]);
    sets
}

/// Starts the helper's UDP listener on port 27015 in `ns` (for `seconds`);
/// returns it and the file it writes `SRC_IP MESSAGE` lines to.
pub fn udp_listener(ns: &Netns, dir: &TempDir, name: &str, seconds: u32) -> (Proc, PathBuf) {
    let out = dir.0.join(format!("{name}.udp"));
    let proc = ns.spawn(
        &[
            python(),
            &helper(),
            "listen",
            "27015",
            &seconds.to_string(),
            out.to_str().unwrap(),
        ],
        &dir.0.join(format!("{name}-listen.log")),
    );
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.starts_with("ready"))
    }));
    (proc, out)
}

/// Broadcasts `DISCOVER ID` to BCAST:27015 out of `dev` in `ns`; returns
/// the first answer line.
pub fn discover(ns: &Netns, dev: &str, bcast: &str, id: &str) -> String {
    let out = ns.exec(&[python(), &helper(), "discover", dev, bcast, "27015", id]);
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// True once `file` (from [`udp_listener`]) holds `line` (within 3s).
pub fn heard(file: &Path, line: &str) -> bool {
    wait_until(Duration::from_secs(3), || {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .contains(line)
    })
}

/// `discover` from `ns`, asserting that the LAN game server (192.168.77.1)
/// answers and that the listener writing `heard_by` hears the broadcast
/// from `sender_ip`; returns the answer.
pub fn assert_discovery(
    ns: &Netns,
    dev: &str,
    bcast: &str,
    id: &str,
    sender_ip: &str,
    heard_by: &Path,
) -> String {
    let answer = discover(ns, dev, bcast, id);
    assert!(
        answer.contains(&format!("192.168.77.1 HERE {id}")),
        "discovery answer: {answer}"
    );
    assert!(
        heard(heard_by, &format!("{sender_ip} DISCOVER {id}")),
        "the listener never heard {sender_ip}'s broadcast"
    );
    answer
}

/// The LAN's services in `ns` on `iface`: dnsmasq handing out
/// 192.168.77.100–150 (leases in `dir`/dnsmasq.leases) and the helper's
/// game server on UDP 27015, for `seconds`.
pub fn lan_services(ns: &Netns, dir: &TempDir, iface: &str, seconds: u32) -> (Proc, Proc) {
    let dnsmasq = ns.spawn(
        &[
            "dnsmasq",
            "-k",
            "--conf-file=/dev/null",
            "--user=root",
            "--port=0",
            &format!("--interface={iface}"),
            "--bind-interfaces",
            "--dhcp-range=192.168.77.100,192.168.77.150,255.255.255.0,1h",
            &format!(
                "--dhcp-leasefile={}",
                dir.0.join("dnsmasq.leases").display()
            ),
            &format!("--pid-file={}", dir.0.join("dnsmasq.pid").display()),
            "--log-dhcp",
            "--log-facility=-",
        ],
        &dir.0.join("dnsmasq.log"),
    );
    let game = ns.spawn(
        &[
            python(),
            &helper(),
            "game-server",
            "27015",
            &seconds.to_string(),
        ],
        &dir.0.join("game.log"),
    );
    (dnsmasq, game)
}

/// The `--set`s of the shipped gateway config for this test run.
pub fn gateway_sets(relay_ip: &str, tls: &Path, room: &str, lan: &str) -> Vec<String> {
    let mut sets = relay_sets(relay_ip, tls, room);
    sets.push(format!("ports.lan.interface={lan}"));
    sets
}

/// The `--set`s that point a shipped client or gateway config's
/// `ports.relay` at this test run's relay and room.
fn relay_sets(relay_ip: &str, tls: &Path, room: &str) -> Vec<String> {
    vec![
        format!("ports.relay.relay={relay_ip}:{PORT}"),
        format!(
            "ports.relay.trust.pin={}",
            tls.join("relay-cert.der").display()
        ),
        format!("ports.relay.room={room}"),
    ]
}

/// Starts the shipped relay config in `ns` with its TLS files in `tls`
/// (plus `extra` `--set` values) and waits until it made its certificate.
pub fn start_relay(ns: &Netns, dir: &TempDir, tls: &Path, extra: &[String]) -> Proc {
    let mut sets = vec![format!("ports.relay.self_signed_dir={}", tls.display())];
    sets.extend_from_slice(extra);
    let relay = lanparty_in(ns, dir, "relay.log", "relay.yaml", &sets);
    assert!(
        wait_until(Duration::from_secs(10), || tls
            .join("relay-cert.der")
            .exists()),
        "relay made no certificate:
{}",
        relay.log_text()
    );
    relay
}

/// Starts the shipped gateway config in `ns` and waits until it joined.
pub fn start_gateway(ns: &Netns, dir: &TempDir, sets: &[String]) -> Proc {
    let gateway = lanparty_in(ns, dir, "gateway.log", "gateway.yaml", sets);
    gateway.wait_for_log("joined the room", "gateway did not join");
    gateway
}

/// One iperf3 TCP run of `seconds` from `client` to a one-shot server in
/// `server` on `addr` (`reverse`: the server sends); the bits/s received,
/// asserted to be more than a trickle. The server's log goes to `dir`.
pub fn iperf3_tcp(
    client: &Netns,
    server: &Netns,
    addr: &str,
    reverse: bool,
    seconds: u32,
    dir: &TempDir,
) -> f64 {
    let _server = server.spawn(
        &["iperf3", "-s", "-1", "-B", addr],
        &dir.0.join(format!("iperf3-server-{addr}-{reverse}.log")),
    );
    std::thread::sleep(Duration::from_millis(500));
    let seconds = seconds.to_string();
    let mut args = vec!["iperf3", "-c", addr, "-t", &seconds, "-J"];
    if reverse {
        args.push("-R");
    }
    let out = client.exec(&args);
    let json = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "iperf3 failed: {json}");
    let bps = json
        .split("\"sum_received\"")
        .nth(1)
        .and_then(|s| s.split("\"bits_per_second\":").nth(1))
        .and_then(|s| s.split([',', '}']).next())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .expect("iperf3 JSON has sum_received.bits_per_second");
    assert!(bps > 1e6, "{bps} bit/s to {addr} (reverse: {reverse})");
    bps
}

/// Checks that an adapter's status (`report["ports"]["adapter"]` of a node
/// that moved TCP both ways) shows GRO and TSO on and at work: TCP
/// segments written merged, super-packets read and cut, none dropped.
/// Returns a line saying what they did.
pub fn assert_offloads_worked(report: &serde_json::Value) -> String {
    let adapter = &report["ports"]["adapter"];
    let count = |k: &str| adapter[k].as_u64().unwrap_or(0);
    assert_eq!(adapter["gro"], true, "{report:#}");
    let (merged, supers) = (count("gro_merged_segments"), count("gro_super_packets"));
    assert!(supers > 0 && merged > 2 * supers, "{report:#}");
    assert_eq!(adapter["tso"], true, "{report:#}");
    let (cut, read) = (count("tso_segments"), count("tso_super_packets"));
    assert!(read > 0 && cut > 2 * read, "{report:#}");
    assert_eq!(adapter["tso_dropped"], 0, "{report:#}");
    format!(
        "wrote {merged} segments as {supers} super-packets (GRO), read {read} super-packets and cut them into {cut} segments (TSO)"
    )
}

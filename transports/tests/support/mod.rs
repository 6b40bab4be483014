//! In-process relay and peers on 127.0.0.1 with ephemeral ports.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lanparty_core::Bytes;
use lanparty_core::config::{RoomSpec, RoomsSection, RuntimeSettings, StageConfig};
use lanparty_core::control::{self, ControlMessage, Hello, PROTOCOL_VERSION, PeerRole, RejectCode};
use lanparty_core::registry::Registry;
use lanparty_core::runtime::{
    LinkHandle, LinkSpec, PolicyStore, PortContext, Rooms, ScanReport, ShutdownTrigger,
    StatusBoard, shutdown_pair,
};
use lanparty_core::runtime::{Port, PortError};
use lanparty_core::stage::LinkRole;
use lanparty_core::testing::template_from_yaml;
use lanparty_core::wire::MacAddr;
use lanparty_filters as _;
use lanparty_transports::client::{ClientCounters, QuicClient};
use lanparty_transports::server::{QuicServer, RelayCounters};
use lanparty_transports::tls;
use tokio::task::JoinHandle;

/// The relay's room pipeline in these tests: the shipped relay chain.
pub const RELAY_ROOM: &str = "
mtu: 1500
ingress:
  - { type: mac-guard }
  - { type: switch-control }
  - { type: dhcp-server }
  - { type: ipv6-ra }
  - { type: jumbo }
router: { type: switch }
egress:
  - { type: jumbo }
  - { type: reflection }
";

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "lanparty-quic-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub struct Relay {
    pub addr: SocketAddr,
    pub counters: Arc<RelayCounters>,
    pub cert: PathBuf,
    pub rooms: Arc<Rooms>,
    pub policies: Arc<PolicyStore>,
    board: Arc<StatusBoard>,
    trigger: ShutdownTrigger,
    task: Option<JoinHandle<Result<(), PortError>>>,
}

impl Relay {
    /// Starts a relay on `port` (0: a free one) with its TLS files in `dir`.
    pub async fn start(dir: &TempDir, port: u16, extra: &str) -> Relay {
        Relay::start_with_policies(dir, "127.0.0.1", port, extra, PolicyStore::none()).await
    }

    /// A relay listening on `[::]` as the shipped one does (IPv4 peers
    /// reach it at 127.0.0.1 and it sees them as `::ffff:127.0.0.1`).
    pub async fn dual_stack(dir: &TempDir, extra: &str) -> Relay {
        Relay::start_with_policies(dir, "[::]", 0, extra, PolicyStore::none()).await
    }

    /// A relay with room policies from `rooms` (a `rooms:` section in YAML)
    /// read from the folder it names.
    pub async fn with_policies(dir: &TempDir, extra: &str, rooms: &str) -> Relay {
        use figment::providers::Format;
        let section: RoomsSection =
            figment::Figment::from(lanparty_core::config::Yaml::string(rooms))
                .extract()
                .unwrap();
        let template: RoomSpec =
            figment::Figment::from(lanparty_core::config::Yaml::string(RELAY_ROOM))
                .extract()
                .unwrap();
        let store = PolicyStore::new(&section, template);
        Relay::start_with_policies(dir, "127.0.0.1", 0, extra, store).await
    }

    /// Reads the policy folder again and applies what changed.
    pub fn reload(&self) -> ScanReport {
        let report = self.policies.scan(Registry::global().unwrap());
        self.policies.apply(&report, &self.rooms);
        report
    }

    async fn start_with_policies(
        dir: &TempDir,
        host: &str,
        port: u16,
        extra: &str,
        policies: Arc<PolicyStore>,
    ) -> Relay {
        let port = if port == 0 { free_port() } else { port };
        let yaml = format!(
            "listen: \"{host}:{port}\"\nself_signed_dir: {}\n{extra}",
            dir.0.join("tls").display()
        );
        let config = StageConfig::from_yaml("quic-server", &yaml).unwrap();
        let server = QuicServer::from_config(&config).unwrap();
        let counters = server.counters();
        let rooms = Rooms::new(
            template_from_yaml(RELAY_ROOM).unwrap(),
            RuntimeSettings::default(),
        );
        let report = policies.scan(Registry::global().unwrap());
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        policies.apply(&report, &rooms);
        let (trigger, _) = shutdown_pair();
        let board = Arc::new(StatusBoard::default());
        let ctx = PortContext::new("relay", rooms.clone(), trigger.signal())
            .with_policies(policies.clone())
            .with_status_board(board.clone());
        let task = tokio::spawn(Box::new(server).run(ctx));
        let cert = dir.0.join("tls/relay-cert.der");
        wait_for("the relay certificate", Duration::from_secs(5), || {
            cert.exists()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        Relay {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            counters,
            cert,
            rooms,
            policies,
            board,
            trigger,
            task: Some(task),
        }
    }

    /// What `lanparty status` shows of the relay port now.
    pub fn status(&self) -> serde_json::Value {
        self.board.status_of("relay").unwrap_or_default()
    }

    pub async fn stop(mut self) {
        self.trigger.trigger("test stops the relay");
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.trigger.trigger("test over");
    }
}

/// A client or gateway node: a `quic-client` port and a fake local adapter
/// (a link the test drives) in a local room.
pub struct Peer {
    pub mac: MacAddr,
    pub local: LinkHandle,
    pub counters: Arc<ClientCounters>,
    trigger: ShutdownTrigger,
    pub task: JoinHandle<Result<(), PortError>>,
}

pub fn client_yaml(relay: &Relay, room: &str, role: &str, mac: MacAddr, extra: &str) -> String {
    format!(
        "relay: {}\nserver_name: lanparty-relay.local\ntrust: {{ pin: {} }}\nroom: {room}\nrole: {role}\nmac: \"{mac}\"\nreconnect_min: 50ms\nreconnect_max: 400ms\nhello_timeout: 3s\n{extra}",
        relay.addr,
        relay.cert.display()
    )
}

impl Peer {
    pub async fn start_with(yaml: &str, mac: MacAddr) -> Peer {
        let config = StageConfig::from_yaml("quic-client", yaml).unwrap();
        let client = QuicClient::from_config(&config).unwrap();
        let counters = client.counters();
        let rooms = Rooms::new(
            template_from_yaml("router: { type: hub }").unwrap(),
            RuntimeSettings::default(),
        );
        let (trigger, _) = shutdown_pair();
        let local = rooms.attach(
            "default",
            LinkSpec {
                name: "adapter".into(),
                role: LinkRole::Host,
                macs: vec![mac],
                mtu: None,
                sink: None,
            },
        );
        let ctx = PortContext::new("relay", rooms, trigger.signal());
        let task = tokio::spawn(Box::new(client).run(ctx));
        Peer {
            mac,
            local,
            counters,
            trigger,
            task,
        }
    }

    /// Starts a peer and waits until it joined.
    pub async fn join(relay: &Relay, room: &str, role: &str, mac: MacAddr) -> Peer {
        let peer = Peer::start_with(&client_yaml(relay, room, role, mac, ""), mac).await;
        peer.wait_sessions(1).await;
        peer
    }

    pub async fn wait_sessions(&self, n: u64) {
        let counters = self.counters.clone();
        wait_for("a session with the relay", Duration::from_secs(10), || {
            counters.sessions.load(Ordering::Relaxed) >= n
        })
        .await;
    }

    pub fn send(&self, frame: Vec<u8>) {
        assert!(self.local.send(Bytes::from(frame)));
    }

    /// The next frame that arrives within `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> Option<Bytes> {
        tokio::time::timeout(timeout, self.local.recv())
            .await
            .ok()
            .flatten()
    }

    /// Frames that arrive within `timeout`.
    pub async fn drain(&mut self, timeout: Duration) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(f) = self.recv(timeout).await {
            out.push(f);
        }
        out
    }

    pub fn stop(&self) {
        self.trigger.trigger("test stops the peer");
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.trigger.trigger("test over");
    }
}

/// `from` sends `frame`; it reaches `to` whole and unchanged (until `to`'s
/// MAC is learned the frame floods; either way it arrives).
pub async fn exchange(from: &Peer, to: &mut Peer, frame: Vec<u8>) {
    from.send(frame.clone());
    let got = to
        .recv(Duration::from_secs(3))
        .await
        .expect("the frame arrives");
    assert_eq!(&got[..], &frame[..], "whole and unchanged");
}

pub fn mac(last: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, last])
}

pub async fn rejected(relay: &Relay, room: &str, role: &str, m: MacAddr, extra: &str) -> String {
    let peer = Peer::start_with(&client_yaml(relay, room, role, m, extra), m).await;
    let mut peer = peer;
    let result = tokio::time::timeout(Duration::from_secs(10), &mut peer.task)
        .await
        .expect("a final reject ends the port");
    result.unwrap().expect_err("rejected").to_string()
}

/// A raw QUIC connection to the relay, trusting its certificate.
pub async fn raw_connect(relay: &Relay) -> quinn::Connection {
    let trust = tls::load_pinned(&relay.cert).unwrap();
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls::client_config(&trust).unwrap())
            .unwrap();
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(lanparty_transports::net::transport(
        Duration::from_secs(10),
        None,
        1452,
        lanparty_transports::net::Congestion::default(),
    )));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config);
    endpoint
        .connect(relay.addr, "lanparty-relay.local")
        .unwrap()
        .await
        .unwrap()
}

pub fn hello(room: &str, mac: MacAddr) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        role: PeerRole::Client,
        room: room.into(),
        mac,
        datagram_budget: 1414,
        credential: None,
        header_compression: false,
    }
}

pub async fn raw_hello(
    relay: &Relay,
    hello: Hello,
) -> (quinn::Connection, quinn::SendStream, Option<ControlMessage>) {
    let (conn, send, _recv, reply) = raw_hello_streams(relay, hello).await;
    (conn, send, reply)
}

pub async fn raw_hello_streams(
    relay: &Relay,
    hello: Hello,
) -> (
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
    Option<ControlMessage>,
) {
    let conn = raw_connect(relay).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    control::write_message(&mut send, &ControlMessage::Hello(hello))
        .await
        .unwrap();
    let reply = control::read_message(&mut recv, 1 << 16).await.unwrap();
    (conn, send, recv, reply)
}

pub async fn reject_code(relay: &Relay, hello: Hello) -> RejectCode {
    match raw_hello(relay, hello).await.2 {
        Some(ControlMessage::Reject(r)) => r.code,
        other => panic!("expected a reject, got {other:?}"),
    }
}

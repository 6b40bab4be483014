//! In-process relay and peers on 127.0.0.1 with ephemeral ports.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lanparty_core::Bytes;
use lanparty_core::config::{RuntimeSettings, StageConfig};
use lanparty_core::runtime::{
    LinkHandle, LinkSpec, PortContext, Rooms, ShutdownTrigger, shutdown_pair,
};
use lanparty_core::stage::{LinkRole, Port, PortError};
use lanparty_core::testing::template_from_yaml;
use lanparty_core::wire::MacAddr;
use lanparty_filters as _;
use lanparty_transports::client::{ClientCounters, QuicClient};
use lanparty_transports::server::{QuicServer, RelayCounters};
use tokio::task::JoinHandle;

/// The relay's room pipeline in these tests: the shipped relay chain.
pub const RELAY_ROOM: &str = "
mtu: 1394
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
    trigger: ShutdownTrigger,
    task: Option<JoinHandle<Result<(), PortError>>>,
}

impl Relay {
    /// Starts a relay on `port` (0: a free one) with its TLS files in `dir`.
    pub async fn start(dir: &TempDir, port: u16, extra: &str) -> Relay {
        let port = if port == 0 { free_port() } else { port };
        let yaml = format!(
            "listen: 127.0.0.1:{port}\nself_signed_dir: {}\n{extra}",
            dir.0.join("tls").display()
        );
        let config = StageConfig::from_yaml("quic-server", &yaml).unwrap();
        let server = QuicServer::from_config(&config).unwrap();
        let counters = server.counters();
        let rooms = Rooms::new(
            template_from_yaml(RELAY_ROOM).unwrap(),
            RuntimeSettings::default(),
        );
        let (trigger, _) = shutdown_pair();
        let ctx = PortContext::new("relay", rooms.clone(), trigger.signal());
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
            trigger,
            task: Some(task),
        }
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

pub fn mac(last: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, last])
}

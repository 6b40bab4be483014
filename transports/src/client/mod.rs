//! `quic-client`: a client's or gateway's session with the relay.
//!
//! Connects, says hello (room, role, MAC, datagram budget), and on welcome
//! sets the local room's MTU (a TAP port follows it) and carries frames
//! between its local link and QUIC datagrams. After any loss of the relay
//! it reconnects with exponential backoff and jitter while the local side
//! (TAP device, AF_PACKET socket) stays up with its addresses. A final
//! reject (bad room code, duplicate MAC, gateway present, unauthorized, …)
//! stops the node with a one-line error; others (relay full, shutting
//! down) are retried.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use lanparty_core::config::{ConfigDuration, ConfigError, StageConfig};
use lanparty_core::control::{
    ControlMessage, Credential, Hello, MAX_CONTROL_FRAME, PROTOCOL_VERSION, PeerRole, Welcome,
    validate_room_code,
};
use lanparty_core::registry::BuildResult;
use lanparty_core::runtime::MacIdentity;
use lanparty_core::runtime::{
    DEFAULT_ROOM, LinkHandle, LinkSpec, Metrics, PortContext, ShutdownSignal, StatusSource,
};
use lanparty_core::runtime::{Port, PortError};
use lanparty_core::stage::LinkRole;
use lanparty_core::wire::MacAddr;
use serde::Deserialize;

use crate::datapath::{
    DATAGRAM_BATCH, DataPath, DatapathCounters, PeerSender, datapath_metrics, reassembly_limits,
};
use crate::net;
use crate::session::{ClientEnd, ClientEvent, ClientSession, ControlInput};
use crate::tls::{self, Trust};
use quinn_proto::Event;

mod driver;
mod reconnect;
mod settings;
mod status;

use reconnect::Reconnect;
pub use settings::{ClientSettings, TrustSettings};
use status::{ClientStatus, SessionState};

/// Session counters of a client port.
#[derive(Debug, Default)]
pub struct ClientCounters {
    /// Sessions established (welcomes received).
    pub sessions: AtomicU64,
    /// Connection attempts that failed or were rejected with a retryable code.
    pub failed_attempts: AtomicU64,
    /// The data path (frames dropped between sessions are its
    /// `not_connected`).
    pub datapath: Arc<DatapathCounters>,
}

/// A configured relay session.
pub struct QuicClient {
    name: String,
    settings: ClientSettings,
    trust: Trust,
    /// Which setting `trust` came from, for a certificate refusal's error.
    trust_origin: String,
    server_name: String,
    counters: Arc<ClientCounters>,
}

impl std::fmt::Debug for QuicClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicClient")
            .field("name", &self.name)
            .field("relay", &self.settings.relay)
            .finish_non_exhaustive()
    }
}

/// Why an attempt failed before its session began.
enum Attempt {
    /// Stop the node: a person has to change something.
    Final(String),
    /// Try again after the backoff.
    Retry(String),
}

/// The host part of `host:port` or `[v6]:port`.
fn host_of(relay: &str) -> Option<&str> {
    let (host, port) = relay.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

impl QuicClient {
    /// Parses and checks a `quic-client` entry (reads the trust files).
    pub fn from_config(config: &StageConfig) -> BuildResult<QuicClient> {
        let settings: ClientSettings = config.parse()?;
        let mut errors: Vec<ConfigError> = Vec::new();
        let host = host_of(&settings.relay);
        if host.is_none() {
            errors.push(config.error(
                "relay",
                format!(
                    "`{}` is not host:port (e.g. relay.example.org:443 or 203.0.113.10:443)",
                    settings.relay
                ),
            ));
        }
        if let Err(e) = validate_room_code(&settings.room) {
            errors.push(config.error("room", e));
        }
        if let Err(e) = settings.mac.validate_adapter_mac() {
            errors.push(config.error("mac", e.to_string()));
        }
        if settings
            .credential
            .as_ref()
            .is_some_and(|c| c.is_empty() || c.len() > 256)
        {
            errors.push(config.error("credential", "must be 1..=256 bytes"));
        }
        if settings.reconnect_min.0.is_zero() || settings.reconnect_max.0 < settings.reconnect_min.0
        {
            errors.push(config.error("reconnect_max", "need 0 < reconnect_min <= reconnect_max"));
        }
        if let Err(e) = net::check_initial_mtu(settings.initial_mtu) {
            errors.push(config.error("initial_mtu", e));
        }
        for (key, e) in settings.queue.check() {
            errors.push(config.error(&format!("queue.{key}"), e));
        }
        let t = &settings.trust;
        let (trust, trust_origin) = match (&t.pin, &t.ca, t.system) {
            (Some(pin), None, false) => {
                let path = config.resolve_path("trust.pin", pin);
                let origin = format!("the pinned certificate {} (trust.pin)", path.display());
                (tls::load_pinned(&path).map_err(|e| config.error("trust.pin", e.to_string())), origin)
            }
            (None, Some(ca), false) => {
                let path = config.resolve_path("trust.ca", ca);
                let origin = format!("the CA file {} (trust.ca)", path.display());
                (tls::load_ca_file(&path).map_err(|e| config.error("trust.ca", e.to_string())), origin)
            }
            (None, None, true) => (
                tls::load_system_roots().map_err(|e| config.error("trust.system", e.to_string())),
                "the system's CAs (trust.system)".to_string(),
            ),
            _ => (
                Err(config.error(
                    "trust",
                    "give exactly one of `trust: { pin: relay-cert.der }` (the relay's self-signed certificate), `trust: { ca: ca.pem }` or `trust: { system: true }`",
                )),
                String::new(),
            ),
        };
        let trust = match trust {
            Ok(t) => Some(t),
            Err(e) => {
                errors.push(e);
                None
            }
        };
        match (trust, errors.is_empty()) {
            (Some(trust), true) => Ok(QuicClient {
                // Named by the runtime when it runs (`PortContext::port_name`).
                name: String::new(),
                server_name: settings
                    .server_name
                    .clone()
                    .or_else(|| host.map(str::to_string))
                    .unwrap_or_default(),
                settings,
                trust,
                trust_origin,
                counters: Arc::new(ClientCounters::default()),
            }),
            _ => Err(errors),
        }
    }

    /// The client's counters (shared with the running session).
    pub fn counters(&self) -> Arc<ClientCounters> {
        self.counters.clone()
    }

    fn client_config(&self) -> Result<quinn::ClientConfig, String> {
        let transport = net::transport(
            self.settings.idle_timeout.0,
            Some(self.settings.keepalive.0),
            self.settings.initial_mtu,
            self.settings.congestion,
        );
        tls::quic_client_config(&self.trust, transport).map_err(|e| e.to_string())
    }

    async fn run(mut self, ctx: PortContext) -> Result<(), PortError> {
        self.name = ctx.port_name().to_string();
        let quic = self
            .client_config()
            .map_err(|e| PortError::new(&self.name, e))?;
        let link_role = self.settings.link_role.unwrap_or(match self.settings.role {
            PeerRole::Client => LinkRole::Gateway,
            PeerRole::Gateway => LinkRole::Client,
        });
        let sender = PeerSender::new(self.counters.datapath.clone(), &self.settings.queue);
        if let Some(max) = self.settings.datagram_budget {
            sender.limit_datagrams(max as usize);
        }
        let mut link = ctx.attach(
            &self.settings.local_room,
            LinkSpec {
                name: format!("{}@{}", self.name, self.settings.relay),
                role: link_role,
                macs: vec![self.settings.mac],
                mtu: None,
                sink: Some(sender.clone()),
            },
        );
        let status = Arc::new(ClientStatus {
            relay: self.settings.relay.clone(),
            room: self.settings.room.clone(),
            role: self.settings.role,
            mac: self.settings.mac,
            counters: self.counters.clone(),
            sender: sender.clone(),
            state: Mutex::new(SessionState::default()),
        });
        ctx.publish_status(status.clone());
        let mut shutdown = ctx.shutdown();
        tracing::info!(port = %self.name, relay = %self.settings.relay, room = %self.settings.room, role = %self.settings.role, "connecting to the relay");
        let mut reconnect = Reconnect::new(
            self.settings.reconnect_min.0,
            self.settings.reconnect_max.0,
            Reconnect::seed(),
        );
        loop {
            reconnect.attempt(Instant::now());
            let attempt = tokio::select! {
                biased;
                // Stop at once, and never log a join after `shutting down`.
                _ = shutdown.wait() => return Ok(()),
                attempt = self.connect(&quic) => attempt,
            };
            let why = match attempt {
                Ok(connected) => {
                    let (end, joined) = self
                        .drive(connected, &mut link, &sender, &status, &mut shutdown)
                        .await;
                    sender.set_connection(None);
                    let why = match end {
                        ClientEnd::Shutdown => {
                            status.disconnected("shutting down".into());
                            return Ok(());
                        }
                        ClientEnd::Final(why) => {
                            status.disconnected(why.clone());
                            return Err(PortError::new(&self.name, why));
                        }
                        ClientEnd::Retry(why) => why,
                    };
                    if !joined {
                        self.counters
                            .failed_attempts
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    status.disconnected(why.clone());
                    why
                }
                Err(Attempt::Final(why)) => {
                    return Err(PortError::new(&self.name, why));
                }
                Err(Attempt::Retry(why)) => {
                    self.counters
                        .failed_attempts
                        .fetch_add(1, Ordering::Relaxed);
                    status.disconnected(why.clone());
                    why
                }
            };
            let delay = reconnect.ended(Instant::now());
            tracing::warn!(port = %self.name, relay = %self.settings.relay, retry_in = ?delay, "{why}");
            if self
                .wait_disconnected(delay, &mut link, &mut shutdown)
                .await
            {
                return Ok(());
            }
        }
    }

    /// Waits out a reconnect delay, dropping (and counting) local frames
    /// meant for the relay. Returns true on shutdown.
    async fn wait_disconnected(
        &self,
        delay: Duration,
        link: &mut LinkHandle,
        shutdown: &mut ShutdownSignal,
    ) -> bool {
        let deadline = tokio::time::sleep(delay);
        tokio::pin!(deadline);
        let mut batch = Vec::with_capacity(64);
        loop {
            tokio::select! {
                _ = shutdown.wait() => return true,
                _ = &mut deadline => return false,
                // Frames go to the sender (counted `not_connected` now);
                // the queue only says when the room is gone.
                n = link.recv_many(&mut batch, 64) => {
                    batch.clear();
                    if n == 0 {
                        return true;
                    }
                }
            }
        }
    }

    /// Resolves the relay and completes the QUIC handshake (within
    /// `hello_timeout`, which the welcome shares).
    async fn connect(&self, quic: &quinn::ClientConfig) -> Result<Connected, Attempt> {
        let relay = &self.settings.relay;
        let addr: SocketAddr = tokio::net::lookup_host(relay.as_str())
            .await
            .map_err(|e| Attempt::Retry(format!("cannot resolve {relay}: {e}")))?
            .next()
            .ok_or_else(|| Attempt::Retry(format!("{relay} resolves to no address")))?;
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0".parse()
        } else {
            "0.0.0.0:0".parse()
        }
        .map_err(|_| Attempt::Final("bad bind address".into()))?;
        let socket = net::bind_udp(bind, self.settings.socket_buffer)
            .map_err(|e| Attempt::Retry(format!("cannot open a UDP socket: {e}")))?;
        let mut connection =
            driver::Connection::start(socket, quic.clone(), addr, &self.server_name)?;
        let timeout = self.settings.hello_timeout.0;
        let deadline = Instant::now() + timeout;
        match connection.handshake(deadline).await {
            Ok(()) => Ok(Connected {
                connection,
                addr,
                deadline,
            }),
            Err(driver::Handshake::Failed(e)) => Err(self.handshake_failed(&e, addr)),
            Err(driver::Handshake::TimedOut) => Err(Attempt::Retry(format!(
                "the relay at {relay} ({addr}) does not answer: no QUIC handshake within {timeout:?}; is it running, and does UDP port {} reach it?",
                addr.port()
            ))),
        }
    }

    /// What a failed QUIC handshake means: the relay's certificate refused
    /// by our trust settings is final (retrying cannot fix it); anything
    /// else is retried.
    fn handshake_failed(&self, e: &quinn::ConnectionError, addr: SocketAddr) -> Attempt {
        let relay = &self.settings.relay;
        match e {
            // Raised here, by TLS: the certificate check (a TLS alert code).
            quinn::ConnectionError::TransportError(t) if u64::from(t.code) & !0xff == 0x100 => {
                Attempt::Final(format!(
                    "TLS with the relay at {relay} ({addr}) failed: {} (its certificate was checked against {}, server name `{}`); if the relay made a new certificate, ask its operator for the current relay-cert.der (or fix `server_name`), then start again",
                    t.reason.trim_start_matches("unexpected error: "),
                    self.trust_origin,
                    self.server_name
                ))
            }
            _ => Attempt::Retry(format!("cannot reach the relay at {relay} ({addr}): {e}")),
        }
    }

    /// Drives one [`ClientSession`] over the connection: the hello, the
    /// welcome (the local room takes its MTU, the sender the connection),
    /// then frames and control messages until the session ends. Returns
    /// how it ended and whether the relay had welcomed us.
    async fn drive(
        &self,
        connected: Connected,
        link: &mut LinkHandle,
        sender: &Arc<PeerSender>,
        status: &ClientStatus,
        shutdown: &mut ShutdownSignal,
    ) -> (ClientEnd, bool) {
        let Connected {
            mut connection,
            addr,
            deadline,
        } = connected;
        let conn = connection.conn.clone();
        let budget = conn.max_datagram_size().unwrap_or(0);
        let budget = self
            .settings
            .datagram_budget
            .map_or(budget, |b| (b as usize).min(budget));
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            role: self.settings.role,
            room: self.settings.room.clone(),
            mac: self.settings.mac,
            datagram_budget: u32::try_from(budget).unwrap_or(u32::MAX),
            credential: self.settings.credential.clone().map(Credential),
            header_compression: self.settings.header_compression,
        };
        let mut machine = ClientSession::new(
            hello,
            format!("{} ({addr})", self.settings.relay),
            deadline,
            self.settings.hello_timeout.0,
        );
        let mut control = connection.open_control();
        if control.id().is_none() {
            machine.connection_lost("the relay allows no control stream");
        }
        let mut data: Option<DataPath> = None;
        let mut inbox = Vec::with_capacity(DATAGRAM_BATCH);
        let mut joined = false;
        let mut leaving = false;
        let counters = &self.counters.datapath;
        let end = 'session: loop {
            while let Some(event) = machine.poll() {
                match event {
                    ClientEvent::Control(bytes) => control.write(&connection.conn, &bytes),
                    ClientEvent::Close { code, reason } => {
                        connection
                            .conn
                            .lock()
                            .close(Instant::now(), code.into(), reason.into());
                    }
                    ClientEvent::Joined(mut welcome) => {
                        tracing::info!(
                            port = %self.name, relay = %self.settings.relay, room = %self.settings.room, role = %self.settings.role,
                            peer = %welcome.peer_id, room_id = welcome.room_id, mtu = welcome.mtu, budget, "joined the room"
                        );
                        joined = true;
                        link.set_room_mtu(welcome.mtu);
                        self.counters.sessions.fetch_add(1, Ordering::Relaxed);
                        sender.set_connection(Some(conn.clone()));
                        welcome.header_compression &= self.settings.header_compression;
                        sender.compress(
                            welcome.header_compression,
                            self.settings.compress_below_mbps,
                        );
                        status.connected(conn.clone(), welcome);
                        let d = data.insert(DataPath::new(
                            reassembly_limits(welcome.mtu),
                            None,
                            welcome.header_compression,
                        ));
                        // Datagrams that came with the welcome.
                        connection.datagrams(&mut inbox, d, sender, link, counters);
                    }
                    ClientEvent::Notice(ControlMessage::PeerJoined { peer_id, role, mac }) => {
                        tracing::info!(port = %self.name, peer = %peer_id, %role, %mac, "peer joined the room");
                    }
                    ClientEvent::Notice(ControlMessage::PeerLeft { peer_id, reason }) => {
                        tracing::info!(port = %self.name, peer = %peer_id, "peer left the room: {reason}");
                    }
                    ClientEvent::Notice(other) => {
                        tracing::debug!(port = %self.name, ?other, "from the relay");
                    }
                    ClientEvent::Probe => {
                        tracing::debug!(port = %self.name, "no datagrams from the relay for a while: probing it");
                        connection.conn.lock().ping();
                    }
                    ClientEvent::StatsRequested => {
                        if let Some(d) = &data {
                            machine.send(&ControlMessage::Stats(d.peer_stats(&conn, sender)));
                        }
                    }
                    ClientEvent::Ended(end) => break 'session end,
                }
            }
            connection.send_out(Instant::now()).await;
            let next = machine.poll_timeout();
            let stop = tokio::select! {
                why = shutdown.wait(), if !leaving => Some(why),
                // The local room is gone: the node is stopping.
                () = link.closed(), if !leaving => Some("node stopping".to_string()),
                () = connection.wait(next) => None,
            };
            let now = Instant::now();
            if let Some(why) = stop {
                leaving = true;
                machine.shutdown(now, &why);
                continue;
            }
            machine.handle_timeout(now);
            let events = connection.take_in(now);
            for event in &events {
                match event {
                    Event::DatagramReceived => {
                        if machine.is_established()
                            && let Some(d) = data.as_mut()
                        {
                            machine.datagram_received(now, connection.conn.rtt());
                            connection.datagrams(&mut inbox, d, sender, link, counters);
                        }
                    }
                    Event::ConnectionLost { reason } => {
                        control.lost(&mut machine, &reason.to_string());
                    }
                    Event::Stream(event) => control.event(
                        &connection.conn,
                        MAX_CONTROL_FRAME,
                        &mut machine,
                        event,
                        now,
                    ),
                    _ => {}
                }
            }
            connection.give_back(events);
        };
        connection.finish().await;
        (end, joined)
    }
}

/// A QUIC connection to the relay, handshake done.
struct Connected {
    connection: driver::Connection,
    addr: SocketAddr,
    /// When the welcome is due (the handshake's deadline).
    deadline: Instant,
}

fn build(config: &StageConfig) -> BuildResult<Box<dyn Port>> {
    Ok(Box::new(QuicClient::from_config(config)?))
}

impl QuicClient {
    /// A player's session announces the node's one MAC; a gateway's MAC is
    /// its own, not its LAN's.
    fn mac_identity(&mut self) -> MacIdentity<'_> {
        match self.settings.role {
            PeerRole::Client => MacIdentity::Announces(self.settings.mac),
            PeerRole::Gateway => MacIdentity::None,
        }
    }
}

lanparty_core::impl_port!(QuicClient, mac_identity);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(host_of("relay.example.org:443"), Some("relay.example.org"));
        assert_eq!(host_of("[::1]:443"), Some("::1"));
        assert_eq!(host_of("127.0.0.1:4433"), Some("127.0.0.1"));
        assert_eq!(host_of("nope"), None);
        assert_eq!(host_of(":443"), None);
    }
}

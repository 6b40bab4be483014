//! `quic-server`: the relay. Accepts QUIC connections, admits each peer
//! into a room on its hello (or rejects it with a code and a sentence), and
//! moves its frames between QUIC datagrams and the room's pipeline. Peers
//! are told when others join and leave.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use lanparty_core::config::{ConfigDuration, ConfigError, StageConfig};
use lanparty_core::control::{
    CodecError, ControlMessage, DisconnectReason, Hello, PROTOCOL_VERSION, PeerId, PeerRole,
    Reject, RejectCode, Welcome, read_message_unvalidated, room_key, write_message,
};
use lanparty_core::queue::QueueSettings;
use lanparty_core::registry::{BuildResult, KeyDoc, StageBuild, StageRegistration};
use lanparty_core::runtime::{
    ActivePolicy, LinkSpec, Metrics, PolicyEvent, PortContext, ShutdownSignal, StatusSource,
};
use lanparty_core::stage::{LinkRole, Port, PortError};
use lanparty_core::wire::MacAddr;
use serde::Deserialize;
use tokio::sync::{Notify, mpsc};

use crate::admission::{Admissions, Limits};
use crate::credentials::{self, FailureLimiter};
use crate::datapath::{
    DataPath, DatapathCounters, PeerSender, RELAY_REASSEMBLY_BYTES, datapath_metrics,
    reassembly_limits,
};
use crate::gate::PerAddressRate;
use crate::net::{self, ReasonCounters, close};
use crate::tls::{self, Identity, SelfSignedFiles};
use lanparty_core::wire::fragment::ReassemblyBudget;

/// `quic-server` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// `listen`: `443/udp` (every address) or an address like `0.0.0.0:4433`.
    pub listen: String,
    /// `cert`: PEM certificate chain; with `key`, replaces the self-signed one.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// `key`: PEM private key for `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// `self_signed_dir`: where the self-signed certificate is generated on
    /// first start and reused after (`relay-cert.der` is the file players
    /// pin). Default `tls` next to the config file.
    #[serde(default = "default_tls_dir")]
    pub self_signed_dir: PathBuf,
    /// `names`: DNS names in the self-signed certificate. Default
    /// `[lanparty-relay.local]`.
    #[serde(default = "default_names")]
    pub names: Vec<String>,
    /// `max_rooms`: rooms at once. Default 256.
    #[serde(default = "default_max_rooms")]
    pub max_rooms: usize,
    /// `max_peers_per_room`: peers per room. Default 32.
    #[serde(default = "default_max_peers")]
    pub max_peers_per_room: usize,
    /// `max_connections`: connections past their handshake at once
    /// (admitted, or saying hello). Default 4096. Half-open handshakes are
    /// bounded separately (`max_handshakes`), so they never block a join.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// `handshake_timeout`: a QUIC handshake not complete by then is
    /// dropped. Default 3s.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: ConfigDuration,
    /// `max_handshakes`: handshakes in progress at once. Default 1024.
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: usize,
    /// `max_handshakes_per_address`: handshakes in progress from one IP
    /// address. Default 16.
    #[serde(default = "default_max_handshakes_per_address")]
    pub max_handshakes_per_address: usize,
    /// `retry_above`: with more handshakes than this in progress, a new
    /// connection must first prove its address with a QUIC Retry (one
    /// stateless packet back, no state kept). 0: always. Default 16.
    #[serde(default = "default_retry_above")]
    pub retry_above: usize,
    /// `handshake_packets_per_address`: QUIC long-header (handshake)
    /// packets accepted from one IP address per second; the rest are
    /// dropped before quinn decrypts them. Default 64 (a handshake takes a
    /// handful; a whole LAN party joining from behind one NAT fits).
    #[serde(default = "default_handshake_packets_per_address")]
    pub handshake_packets_per_address: u32,
    /// `hello_timeout`: a connection that has not said hello by then is
    /// closed. Default 5s.
    #[serde(default = "default_hello_timeout")]
    pub hello_timeout: ConfigDuration,
    /// `idle_timeout`: a silent peer is dropped after this. Default 30s.
    #[serde(default = "net::default_idle_timeout")]
    pub idle_timeout: ConfigDuration,
    /// `max_control_frame`: largest control message accepted. Default 16384.
    #[serde(default = "default_max_control")]
    pub max_control_frame: usize,
    /// `socket_buffer`: UDP socket buffer bytes. Default 4 MiB.
    #[serde(default = "net::default_socket_buffer")]
    pub socket_buffer: usize,
    /// `initial_mtu`: QUIC's initial path MTU. Default 1452.
    #[serde(default = "net::default_initial_mtu")]
    pub initial_mtu: u16,
    /// `congestion`: the congestion controller of every connection:
    /// `delay` (default), `bbr`, `cubic` or `newreno`.
    #[serde(default)]
    pub congestion: net::Congestion,
    /// `queue`: the egress queue in front of every peer's connection.
    #[serde(default)]
    pub queue: QueueSettings,
}

fn default_tls_dir() -> PathBuf {
    PathBuf::from("tls")
}
fn default_names() -> Vec<String> {
    vec!["lanparty-relay.local".into()]
}
fn default_max_rooms() -> usize {
    256
}
fn default_max_peers() -> usize {
    32
}
fn default_max_connections() -> usize {
    4096
}
fn default_handshake_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(3))
}
fn default_max_handshakes() -> usize {
    1024
}
fn default_max_handshakes_per_address() -> usize {
    16
}
fn default_retry_above() -> usize {
    16
}
fn default_handshake_packets_per_address() -> u32 {
    64
}
fn default_hello_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(5))
}
fn default_max_control() -> usize {
    lanparty_core::control::MAX_CONTROL_FRAME
}

/// Everything the relay counts.
#[derive(Debug, Default)]
pub struct RelayCounters {
    /// Connections that completed the QUIC handshake.
    pub connections: AtomicU64,
    /// Connections refused or failed before the handshake completed.
    pub handshake_failures: AtomicU64,
    /// Handshakes that did not complete within `handshake_timeout`.
    pub handshake_timeouts: AtomicU64,
    /// Connections asked to prove their address with a Retry first.
    pub retries: AtomicU64,
    /// Connection attempts ignored because too many handshakes were in
    /// progress (in all, or from their address).
    pub handshakes_refused: AtomicU64,
    /// Handshake packets dropped before quinn saw them: over
    /// `handshake_packets_per_address` from their address.
    pub handshake_packets_dropped: Arc<AtomicU64>,
    /// Peers admitted.
    pub admitted: AtomicU64,
    /// Rejects by code.
    pub rejects: ReasonCounters,
    /// Peers dropped for breaking the protocol, by reason.
    pub protocol_errors: ReasonCounters,
    /// The data path.
    pub datapath: Arc<DatapathCounters>,
}

enum Tls {
    Pem(PathBuf, PathBuf),
    SelfSigned(SelfSignedFiles, Vec<String>),
}

/// A configured relay.
pub struct QuicServer {
    name: String,
    settings: ServerSettings,
    listen: Vec<std::net::SocketAddr>,
    tls: Tls,
    counters: Arc<RelayCounters>,
}

impl std::fmt::Debug for QuicServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicServer")
            .field("name", &self.name)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl QuicServer {
    /// Parses and checks a `quic-server` entry (reads PEM files, if named,
    /// to prove they are usable; opens no socket).
    pub fn from_config(config: &StageConfig) -> BuildResult<QuicServer> {
        let settings: ServerSettings = config.parse()?;
        let mut errors: Vec<ConfigError> = Vec::new();
        let listen =
            net::parse_listen(&settings.listen).map_err(|e| vec![config.error("listen", e)]);
        let tls = match (&settings.cert, &settings.key) {
            (Some(cert), Some(key)) => {
                let (cert, key) = (
                    config.resolve_path("cert", cert),
                    config.resolve_path("key", key),
                );
                if let Err(e) = tls::load_pem_identity(&cert, &key).and_then(tls::server_config) {
                    errors.push(config.error("cert", e.to_string()));
                }
                Tls::Pem(cert, key)
            }
            (None, None) => {
                if settings.names.is_empty() {
                    errors.push(config.error(
                        "names",
                        "the self-signed certificate needs at least one name",
                    ));
                }
                Tls::SelfSigned(
                    SelfSignedFiles::in_dir(
                        &config.resolve_path("self_signed_dir", &settings.self_signed_dir),
                    ),
                    settings.names.clone(),
                )
            }
            _ => {
                errors.push(config.error(
                    "cert",
                    "give both `cert` and `key` (PEM), or neither for a self-signed certificate",
                ));
                Tls::SelfSigned(
                    SelfSignedFiles::in_dir(&settings.self_signed_dir),
                    settings.names.clone(),
                )
            }
        };
        for (key, value, min) in [
            ("max_rooms", settings.max_rooms, 1),
            ("max_peers_per_room", settings.max_peers_per_room, 1),
            ("max_connections", settings.max_connections, 1),
            ("max_handshakes", settings.max_handshakes, 1),
            (
                "max_handshakes_per_address",
                settings.max_handshakes_per_address,
                1,
            ),
            ("max_control_frame", settings.max_control_frame, 1024),
            (
                "handshake_packets_per_address",
                settings.handshake_packets_per_address as usize,
                8,
            ),
        ] {
            if value < min {
                errors.push(config.error(key, format!("must be at least {min}")));
            }
        }
        if let Err(e) = net::check_initial_mtu(settings.initial_mtu) {
            errors.push(config.error("initial_mtu", e));
        }
        for (key, e) in settings.queue.check() {
            errors.push(config.error(&format!("queue.{key}"), e));
        }
        let listen = match listen {
            Ok(l) => l,
            Err(e) => {
                errors.extend(e);
                Vec::new()
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(QuicServer {
            // Named by the runtime when it runs (`PortContext::port_name`).
            name: String::new(),
            settings,
            listen,
            tls,
            counters: Arc::new(RelayCounters::default()),
        })
    }

    /// The relay's counters (shared with the running relay).
    pub fn counters(&self) -> Arc<RelayCounters> {
        self.counters.clone()
    }

    fn identity(&self) -> Result<Identity, PortError> {
        let fail = |e: tls::TlsError| PortError::new(&self.name, e.to_string());
        match &self.tls {
            Tls::Pem(cert, key) => tls::load_pem_identity(cert, key).map_err(fail),
            Tls::SelfSigned(files, names) => {
                let (identity, generated) =
                    tls::load_or_generate_self_signed(files, names).map_err(fail)?;
                if generated {
                    tracing::info!(cert = %files.cert_der.display(), "generated a self-signed relay certificate; give this DER file to players to pin");
                } else {
                    tracing::info!(cert = %files.cert_der.display(), "using the stored self-signed relay certificate");
                }
                Ok(identity)
            }
        }
    }

    async fn run(mut self, ctx: PortContext) -> Result<(), PortError> {
        self.name = ctx.port_name().to_string();
        let fail = |m: String| PortError::new(&self.name, m);
        let identity = self.identity()?;
        let reset_secret = identity.key.secret_der().to_vec();
        let transport = net::transport(
            self.settings.idle_timeout.0,
            None,
            self.settings.initial_mtu,
            self.settings.congestion,
        );
        let server_config =
            tls::quic_server_config(identity, transport).map_err(|e| fail(e.to_string()))?;
        let mut last_error = String::from("no address to listen on");
        let mut endpoint = None;
        for addr in &self.listen {
            match net::bind_udp(*addr, self.settings.socket_buffer).and_then(|s| {
                net::server_endpoint(
                    s,
                    server_config.clone(),
                    &reset_secret,
                    self.settings.handshake_packets_per_address,
                    self.counters.handshake_packets_dropped.clone(),
                )
            }) {
                Ok(e) => {
                    endpoint = Some(e);
                    break;
                }
                Err(e) => last_error = format!("cannot listen on {addr}: {e}"),
            }
        }
        let endpoint = endpoint.ok_or_else(|| fail(last_error))?;
        let local = endpoint.local_addr().map_err(|e| fail(e.to_string()))?;
        tracing::info!(port = %self.name, listen = %local, max_rooms = self.settings.max_rooms, max_peers = self.settings.max_peers_per_room, "relay listening");
        let shared = Arc::new(Shared {
            name: self.name.clone(),
            admissions: Mutex::new(Admissions::new(Limits {
                max_rooms: self.settings.max_rooms,
                max_peers: self.settings.max_peers_per_room,
                mtu: ctx.rooms().template_mtu(),
            })),
            counters: self.counters.clone(),
            live: AtomicUsize::new(0),
            handshakes: Mutex::new(Handshakes::default()),
            settings: self.settings.clone(),
            ctx: ctx.clone(),
            limiter: Mutex::new(FailureLimiter::new(
                ctx.policies().auth_failures_per_minute(),
            )),
            credential_checks: tokio::sync::Semaphore::new(CONCURRENT_CREDENTIAL_CHECKS),
            reassembly: ReassemblyBudget::new(RELAY_REASSEMBLY_BYTES),
            peers: Mutex::new(BTreeMap::new()),
        });
        ctx.publish_status(shared.clone());
        let mut shutdown = ctx.shutdown();
        let mut policy_events = ctx.policies().subscribe();
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                event = policy_events.recv() => {
                    if let Ok(PolicyEvent::Removed(room)) = event
                        && ctx.policies().require_policy()
                    {
                        shared.close_room(&room);
                    }
                }
                incoming = endpoint.accept() => match incoming {
                    Some(incoming) => {
                        let Some((slot, incoming)) = shared.handshake_slot(incoming) else {
                            continue;
                        };
                        let shared = shared.clone();
                        tokio::spawn(async move { handle(&shared, slot, incoming).await });
                    }
                    None => break,
                },
            }
        }
        // Sessions see the same signal, say goodbye and close; give them a moment.
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        endpoint.close(close::SHUTDOWN.into(), b"relay shutting down");
        tracing::info!(port = %self.name, "relay stopped");
        Ok(())
    }
}

lanparty_core::impl_port!(QuicServer);

struct Shared {
    name: String,
    admissions: Mutex<Admissions>,
    counters: Arc<RelayCounters>,
    live: AtomicUsize,
    /// Handshakes in progress, in all and per source address.
    handshakes: Mutex<Handshakes>,
    settings: ServerSettings,
    ctx: PortContext,
    limiter: Mutex<FailureLimiter>,
    /// Slow hashes running at once: a flood of hellos with credentials
    /// queues here (each still bound by `hello_timeout`) instead of taking
    /// every core.
    credential_checks: tokio::sync::Semaphore,
    /// Bytes of partial frames every peer's reassembly may hold together.
    reassembly: Arc<ReassemblyBudget>,
    peers: Mutex<BTreeMap<PeerId, PeerEntry>>,
}

/// Credential checks (PBKDF2) that may run at once.
const CONCURRENT_CREDENTIAL_CHECKS: usize = 2;

impl StatusSource for Shared {
    fn status(&self) -> serde_json::Value {
        let peers: Vec<serde_json::Value> = self
            .peers()
            .iter()
            .map(|(id, p)| {
                let (frames_tx, bytes_tx, dropped_tx) = p.sender.totals();
                let (queue, send_rate) = p.sender.queue_status();
                let path = p.conn.stats().path;
                serde_json::json!({
                    "peer_id": id.0,
                    "room": p.room,
                    "role": p.role,
                    "mac": p.mac,
                    "remote": p.conn.remote_address().to_string(),
                    "rtt_us": p.conn.rtt().as_micros() as u64,
                    "cwnd": path.cwnd,
                    "congestion_events": path.congestion_events,
                    "lost_packets": path.lost_packets,
                    "mtu": p.mtu,
                    "uptime_s": p.since.elapsed().as_secs(),
                    "frames_tx": frames_tx,
                    "bytes_tx": bytes_tx,
                    "dropped_tx": dropped_tx,
                    "queue": queue,
                    "send_rate": send_rate,
                })
            })
            .collect();
        let c = &self.counters;
        serde_json::json!({
            "type": "quic-server",
            "connections": c.connections.load(Ordering::Relaxed),
            "live_connections": self.live.load(Ordering::Relaxed),
            "handshake_failures": c.handshake_failures.load(Ordering::Relaxed),
            "handshake_timeouts": c.handshake_timeouts.load(Ordering::Relaxed),
            "handshakes_in_progress": self.handshakes().total,
            "retries": c.retries.load(Ordering::Relaxed),
            "handshakes_refused": c.handshakes_refused.load(Ordering::Relaxed),
            "handshake_packets_dropped": c.handshake_packets_dropped.load(Ordering::Relaxed),
            "admitted": c.admitted.load(Ordering::Relaxed),
            "rejects": c.rejects.snapshot().into_iter().collect::<BTreeMap<_, _>>(),
            "protocol_errors": c.protocol_errors.snapshot().into_iter().collect::<BTreeMap<_, _>>(),
            "datapath": c.datapath.snapshot(),
            "peers": peers,
        })
    }

    fn metrics(&self, out: &mut Metrics) {
        let c = &self.counters;
        let port = [("port", self.name.as_str())];
        let mut per_room: BTreeMap<String, u64> = BTreeMap::new();
        for p in self.peers().values() {
            *per_room.entry(p.room.clone()).or_default() += 1;
        }
        for (room, n) in &per_room {
            out.gauge(
                "lanparty_relay_peers",
                "Admitted peers, by room",
                &[("port", self.name.as_str()), ("room", room.as_str())],
                *n,
            );
        }
        out.counter(
            "lanparty_relay_connections_total",
            "QUIC connections that completed the handshake",
            &port,
            c.connections.load(Ordering::Relaxed),
        );
        out.counter(
            "lanparty_relay_handshake_failures_total",
            "Connections refused or failed before the handshake completed",
            &port,
            c.handshake_failures.load(Ordering::Relaxed),
        );
        for (name, help, value) in [
            (
                "lanparty_relay_handshake_timeouts_total",
                "QUIC handshakes not complete within handshake_timeout",
                &c.handshake_timeouts,
            ),
            (
                "lanparty_relay_retries_total",
                "Connection attempts sent a QUIC Retry to prove their address",
                &c.retries,
            ),
            (
                "lanparty_relay_handshakes_refused_total",
                "Connection attempts ignored: too many handshakes in progress",
                &c.handshakes_refused,
            ),
            (
                "lanparty_relay_handshake_packets_dropped_total",
                "QUIC handshake packets dropped before decryption: over the per-address rate",
                &*c.handshake_packets_dropped,
            ),
        ] {
            out.counter(name, help, &port, value.load(Ordering::Relaxed));
        }
        out.counter(
            "lanparty_relay_admitted_total",
            "Peers admitted",
            &port,
            c.admitted.load(Ordering::Relaxed),
        );
        for (code, n) in c.rejects.snapshot() {
            out.counter(
                "lanparty_relay_rejects_total",
                "Hellos rejected, by code",
                &[("port", self.name.as_str()), ("code", code.as_str())],
                n,
            );
        }
        for (reason, n) in c.protocol_errors.snapshot() {
            out.counter(
                "lanparty_relay_protocol_errors_total",
                "Peers dropped for breaking the control protocol, by reason",
                &[("port", self.name.as_str()), ("reason", reason.as_str())],
                n,
            );
        }
        datapath_metrics(out, &c.datapath.snapshot(), &port);
    }
}

/// Handshakes in progress.
#[derive(Debug)]
struct Handshakes {
    total: usize,
    per_address: std::collections::HashMap<std::net::IpAddr, usize>,
    /// Retries sent per source address and second.
    retried: PerAddressRate,
}

impl Default for Handshakes {
    fn default() -> Self {
        Handshakes {
            total: 0,
            per_address: std::collections::HashMap::new(),
            retried: PerAddressRate::new(RETRIES_PER_ADDRESS_PER_SECOND, RETRY_TABLE_LIMIT),
        }
    }
}

/// Retries sent to one source address per second at most; beyond, its
/// unproven attempts are ignored (a Retry costs the relay an encryption
/// and a send, which a one-address flood must not buy by the thousand).
pub const RETRIES_PER_ADDRESS_PER_SECOND: u32 = 32;
/// Source addresses whose retries are counted at once (a spoofed flood
/// from many addresses starts the table over instead of growing it).
const RETRY_TABLE_LIMIT: usize = 4096;

/// A handshake that holds its place in [`Handshakes`] until dropped.
struct HandshakeSlot {
    shared: Arc<Shared>,
    ip: std::net::IpAddr,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut h = self.shared.handshakes();
        h.total = h.total.saturating_sub(1);
        if let std::collections::hash_map::Entry::Occupied(mut e) = h.per_address.entry(self.ip) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// An admitted peer, for status and for closing its room.
struct PeerEntry {
    room: String,
    role: PeerRole,
    mac: MacAddr,
    mtu: u16,
    since: Instant,
    conn: quinn::Connection,
    sender: Arc<PeerSender>,
    kick: Arc<Notify>,
    /// Ends the session: a new session of the same player replaces it.
    replace: Arc<Notify>,
    /// Woken when the peer answers a stats request (the stale-seat probe).
    answered: Arc<Notify>,
    /// The session's control messages to the peer.
    events: mpsc::Sender<ControlMessage>,
}

/// How long a seat's holder has to answer before a returning player with
/// the same MAC (and role) takes the seat.
pub const STALE_SEAT_PROBE: Duration = Duration::from_secs(1);

impl Shared {
    fn admissions(&self) -> std::sync::MutexGuard<'_, Admissions> {
        self.admissions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn handshakes(&self) -> std::sync::MutexGuard<'_, Handshakes> {
        self.handshakes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides about a new connection attempt before any state is kept
    /// for it: above `retry_above` handshakes in progress an unproven
    /// address gets a stateless Retry (at most
    /// [`RETRIES_PER_ADDRESS_PER_SECOND`] per address, then it is ignored);
    /// above `max_handshakes` (or
    /// `max_handshakes_per_address` from its address) it is ignored (no
    /// reply: a flood gets nothing back to amplify). Otherwise it takes a
    /// handshake slot.
    fn handshake_slot(
        self: &Arc<Self>,
        incoming: quinn::Incoming,
    ) -> Option<(HandshakeSlot, quinn::Incoming)> {
        let ip = incoming.remote_address().ip();
        let s = &self.settings;
        let mut h = self.handshakes();
        let from_here = h.per_address.get(&ip).copied().unwrap_or(0);
        // An address with a handshake already in progress proves itself
        // before it gets another: each full handshake costs the relay a
        // signature and a key exchange on the thread that carries every
        // frame, so a one-address flood buys one, not `retry_above` (the
        // 16 it bought before moved admitted players' p99 by 4-8 ms).
        let retry = (h.total >= s.retry_above || from_here > 0)
            && !incoming.remote_address_validated()
            && incoming.may_retry();
        let refuse = if retry {
            !h.retried.admit(ip, Instant::now())
        } else {
            h.total >= s.max_handshakes || from_here >= s.max_handshakes_per_address
        };
        if refuse {
            drop(h);
            self.counters
                .handshakes_refused
                .fetch_add(1, Ordering::Relaxed);
            incoming.ignore();
            return None;
        }
        if retry {
            drop(h);
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            if incoming.retry().is_err() {
                self.counters
                    .handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
            }
            return None;
        }
        h.total += 1;
        *h.per_address.entry(ip).or_default() += 1;
        let slot = HandshakeSlot {
            shared: self.clone(),
            ip,
        };
        Some((slot, incoming))
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, BTreeMap<PeerId, PeerEntry>> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// If `hello`'s seat (same room, MAC and role) is held by a session
    /// that does not answer a stats request within [`STALE_SEAT_PROBE`]
    /// (a crashed client, a dropped Wi-Fi, a closed laptop), ends that
    /// session so the returning player gets the seat at once instead of
    /// after the idle timeout. A holder that answers keeps it.
    async fn free_stale_seat(&self, hello: &Hello) {
        let holder = self
            .peers()
            .iter()
            .find(|(_, p)| p.room == hello.room && p.mac == hello.mac && p.role == hello.role)
            .map(|(id, p)| (*id, p.answered.clone(), p.replace.clone(), p.events.clone()));
        let Some((id, answered, replace, events)) = holder else {
            return;
        };
        let answer = answered.notified();
        tokio::pin!(answer);
        answer.as_mut().enable();
        if events.try_send(ControlMessage::StatsRequest).is_ok()
            && tokio::time::timeout(STALE_SEAT_PROBE, answer).await.is_ok()
        {
            return;
        }
        tracing::info!(peer = %id, room = %hello.room, mac = %hello.mac, "the seat's holder did not answer within {STALE_SEAT_PROBE:?}: replacing it with the returning player");
        replace.notify_one();
        let gone = async {
            while self.peers().contains_key(&id) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), gone).await;
    }

    /// Disconnects every peer of `room` (its policy was deleted on a
    /// closed relay).
    fn close_room(&self, room: &str) {
        let mut closed = 0;
        for entry in self.peers().values().filter(|p| p.room == room) {
            entry.kick.notify_one();
            closed += 1;
        }
        tracing::warn!(%room, peers = closed, "room closed: its policy was deleted");
    }

    /// The room rules that come from the room's policy file and need no
    /// room state: closed relay, credentials, failed-attempt limit.
    async fn check_policy(
        &self,
        conn: &quinn::Connection,
        hello: &Hello,
    ) -> Result<Option<Arc<ActivePolicy>>, Reject> {
        if hello.protocol_version != PROTOCOL_VERSION || hello.validate().is_err() {
            // `admit` says what is wrong.
            return Ok(None);
        }
        let policies = self.ctx.policies();
        let Some(policy) = policies.get(&hello.room) else {
            if policies.require_policy() {
                return Err(Reject {
                    code: RejectCode::NoSuchRoom,
                    message: format!(
                        "this relay hosts only the rooms it has policies for; room {} is not one of them",
                        hello.room
                    ),
                });
            }
            return Ok(None);
        };
        let gateway = hello.role == PeerRole::Gateway;
        if !policy.policy.needs_credential(gateway) {
            return Ok(Some(policy));
        }
        let ip = conn.remote_address().ip();
        let limited = self
            .limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_limited(ip, Instant::now());
        if limited {
            return Err(Reject {
                code: RejectCode::RateLimited,
                message: "too many failed credentials from this address; wait a minute".into(),
            });
        }
        let Some(credential) = hello.credential.clone() else {
            return Err(Reject {
                code: RejectCode::Unauthorized,
                message: format!(
                    "room {} needs a {} credential; set `credential:` in the quic-client port",
                    hello.room,
                    if gateway { "gateway" } else { "player" }
                ),
            });
        };
        let checked = policy.clone();
        let wait = self.settings.hello_timeout.0;
        let Ok(Ok(_permit)) = tokio::time::timeout(wait, self.credential_checks.acquire()).await
        else {
            return Err(Reject {
                code: RejectCode::RateLimited,
                message: "the relay is busy checking credentials; try again".into(),
            });
        };
        let ok = tokio::task::spawn_blocking(move || {
            let creds = &checked.policy.credentials;
            let hashes = if gateway {
                &creds.gateway
            } else {
                &creds.players
            };
            credentials::verify(hashes, &credential.0)
        })
        .await
        .unwrap_or(false);
        if ok {
            return Ok(Some(policy));
        }
        self.limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record_failure(ip, Instant::now());
        Err(Reject {
            code: RejectCode::Unauthorized,
            message: format!(
                "wrong {} credential for room {}",
                if gateway { "gateway" } else { "player" },
                hello.room
            ),
        })
    }

    fn protocol_error(&self, conn: &quinn::Connection, reason: &'static str, detail: &str) {
        self.counters.protocol_errors.add(reason);
        tracing::info!(remote = %conn.remote_address(), reason, "dropping peer: {detail}");
        conn.close(close::PROTOCOL_ERROR.into(), detail.as_bytes());
    }
}

async fn handle(shared: &Shared, slot: HandshakeSlot, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let failed = |e: quinn::ConnectionError| {
        shared
            .counters
            .handshake_failures
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%remote, "handshake failed: {e}");
    };
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(e) => return failed(e),
    };
    let conn = match tokio::time::timeout(shared.settings.handshake_timeout.0, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return failed(e),
        Err(_) => {
            // Dropping the handshake closes it and frees its state.
            shared
                .counters
                .handshake_timeouts
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%remote, "no complete handshake within {:?}", shared.settings.handshake_timeout.0);
            return;
        }
    };
    drop(slot);
    if shared.live.load(Ordering::Relaxed) >= shared.settings.max_connections {
        shared
            .counters
            .handshake_failures
            .fetch_add(1, Ordering::Relaxed);
        conn.close(
            close::REJECTED.into(),
            b"the relay has too many connections",
        );
        return;
    }
    shared.live.fetch_add(1, Ordering::Relaxed);
    shared.counters.connections.fetch_add(1, Ordering::Relaxed);
    established(shared, conn).await;
    shared.live.fetch_sub(1, Ordering::Relaxed);
}

/// A connection past its handshake: hello, then the session.
async fn established(shared: &Shared, conn: quinn::Connection) {
    let Some((send, recv, hello)) = read_hello(shared, &conn).await else {
        return;
    };
    session(shared, conn, send, recv, hello).await;
}

/// Waits for the hello, refusing datagrams that come before the welcome.
async fn read_hello(
    shared: &Shared,
    conn: &quinn::Connection,
) -> Option<(quinn::SendStream, quinn::RecvStream, Hello)> {
    let max = shared.settings.max_control_frame;
    let hello = async {
        let (send, mut recv) = conn
            .accept_bi()
            .await
            .map_err(|e| CodecError::Io(std::io::Error::other(e)))?;
        let message = read_message_unvalidated(&mut recv, max).await?;
        Ok::<_, CodecError>((send, recv, message))
    };
    let timeout = shared.settings.hello_timeout.0;
    tokio::select! {
        result = tokio::time::timeout(timeout, hello) => match result {
            Err(_) => {
                shared.protocol_error(conn, "hello-timeout", &format!("no hello within {timeout:?}"));
                None
            }
            Ok(Err(CodecError::Io(e))) => {
                tracing::debug!(remote = %conn.remote_address(), "connection ended before hello: {e}");
                None
            }
            Ok(Err(e)) => {
                shared.protocol_error(conn, e.reason(), &e.to_string());
                None
            }
            Ok(Ok((_, _, None))) => {
                shared.protocol_error(conn, "control-closed", "control stream closed before hello");
                None
            }
            Ok(Ok((send, recv, Some(ControlMessage::Hello(mut hello))))) => {
                // One room per code, whatever the case it was typed in.
                hello.room = room_key(&hello.room);
                Some((send, recv, hello))
            }
            Ok(Ok((_, _, Some(other)))) => {
                shared.protocol_error(conn, "expected-hello", &format!("expected hello, got {}", other.kind()));
                None
            }
        },
        _ = conn.read_datagram() => {
            shared.protocol_error(conn, "datagram-before-welcome", "sent a datagram before its welcome");
            None
        }
    }
}

async fn send_reject(
    shared: &Shared,
    conn: &quinn::Connection,
    mut send: quinn::SendStream,
    hello: &Hello,
    reject: Reject,
) {
    shared.counters.rejects.add(reject.code.as_str());
    tracing::info!(remote = %conn.remote_address(), room = %hello.room, role = %hello.role, mac = %hello.mac, code = %reject.code, "rejected: {}", reject.message);
    let code = reject.code;
    if write_message(&mut send, &ControlMessage::Reject(reject))
        .await
        .is_ok()
    {
        let _ = send.finish();
        // Let the reject arrive: the peer closes on reading it.
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    }
    conn.close(close::REJECTED.into(), code.as_str().as_bytes());
}

async fn session(
    shared: &Shared,
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    hello: Hello,
) {
    if shared.ctx.shutdown().is_triggered() {
        let reject = Reject {
            code: RejectCode::ShuttingDown,
            message: "the relay is shutting down".into(),
        };
        return send_reject(shared, &conn, send, &hello, reject).await;
    }
    let policy = match shared.check_policy(&conn, &hello).await {
        Ok(policy) => policy,
        Err(reject) => return send_reject(shared, &conn, send, &hello, reject).await,
    };
    if hello.role == PeerRole::Client
        && hello.validate().is_ok()
        && let Some(holder) = shared.ctx.rooms().mac_holder(&hello.room, hello.mac)
        && holder != LinkRole::Client
    {
        let reject = Reject {
            code: RejectCode::DuplicateMac,
            message: format!(
                "MAC {} belongs to a host on the room's LAN (behind its gateway); pick another MAC for this player (ports.relay.mac and the adapter's mac)",
                hello.mac
            ),
        };
        return send_reject(shared, &conn, send, &hello, reject).await;
    }
    shared.free_stale_seat(&hello).await;
    let path_budget = conn.max_datagram_size().unwrap_or(0);
    let (events_tx, events_rx) = mpsc::channel(64);
    let admitted = shared.admissions().admit(
        &hello,
        path_budget,
        events_tx.clone(),
        policy.as_ref().map(|p| &p.policy),
    );
    let admitted = match admitted {
        Ok(a) => a,
        Err(reject) => return send_reject(shared, &conn, send, &hello, reject).await,
    };
    let peer = admitted.peer_id;
    let sender = PeerSender::connected(
        shared.counters.datapath.clone(),
        &shared.settings.queue,
        conn.clone(),
        hello.datagram_budget as usize,
    );
    let link = shared.ctx.attach(
        &hello.room,
        LinkSpec {
            name: format!("{}/{peer}", shared.name),
            role: hello.role.link_role(),
            macs: vec![hello.mac],
            mtu: Some(admitted.mtu),
            sink: Some(sender.clone()),
        },
    );
    if admitted.created_room {
        link.set_room_mtu(admitted.mtu);
    }
    let welcome = ControlMessage::Welcome(Welcome {
        peer_id: peer,
        room_id: admitted.room_id,
        mtu: admitted.mtu,
    });
    if let Err(e) = write_message(&mut send, &welcome).await {
        tracing::debug!(%peer, "could not send welcome: {e}");
        shared
            .admissions()
            .leave(&hello.room, peer, "connection lost");
        return;
    }
    shared.counters.admitted.fetch_add(1, Ordering::Relaxed);
    let kick = Arc::new(Notify::new());
    let replace = Arc::new(Notify::new());
    let answered = Arc::new(Notify::new());
    shared.peers().insert(
        peer,
        PeerEntry {
            room: hello.room.clone(),
            role: hello.role,
            mac: hello.mac,
            mtu: admitted.mtu,
            since: Instant::now(),
            conn: conn.clone(),
            sender: sender.clone(),
            kick: kick.clone(),
            replace: replace.clone(),
            answered: answered.clone(),
            events: events_tx.clone(),
        },
    );
    tracing::info!(
        %peer, remote = %conn.remote_address(), room = %hello.room, role = %hello.role, mac = %hello.mac,
        mtu = admitted.mtu, budget = path_budget, others = admitted.others.len(), "peer admitted"
    );
    for (id, role, mac) in &admitted.others {
        let _ = events_tx.try_send(ControlMessage::PeerJoined {
            peer_id: *id,
            role: *role,
            mac: *mac,
        });
    }
    let mut control =
        crate::control_stream::spawn(send, recv, shared.settings.max_control_frame, events_rx);
    let mut link = link;
    let mut data = DataPath::new(
        reassembly_limits(admitted.mtu),
        Some(shared.reassembly.clone()),
    );
    let mut shutdown: ShutdownSignal = shared.ctx.shutdown();
    let counters = &shared.counters.datapath;
    let reason: String = loop {
        tokio::select! {
            why = shutdown.wait() => {
                let _ = events_tx.try_send(ControlMessage::Disconnect { reason: DisconnectReason::Shutdown, message: why.chars().take(200).collect() });
                tokio::time::sleep(Duration::from_millis(100)).await;
                conn.close(close::SHUTDOWN.into(), b"relay shutting down");
                break "relay shutting down".into();
            }
            _ = replace.notified() => {
                conn.close(close::NORMAL.into(), b"replaced by a new session of the same player");
                break "replaced: the same player joined again and this session did not answer".into();
            }
            _ = kick.notified() => {
                let _ = events_tx.try_send(ControlMessage::Disconnect { reason: DisconnectReason::PolicyChanged, message: format!("room {} was closed by the relay operator", hello.room) });
                tokio::time::sleep(Duration::from_millis(100)).await;
                conn.close(close::NORMAL.into(), b"room closed");
                break "room closed by its policy".into();
            }
            datagram = conn.read_datagram() => match datagram {
                Ok(datagram) => data.from_peer(datagram, &link, counters),
                Err(e) => break format!("connection lost: {e}"),
            },
            // Frames from the room go to `sender` directly.
            () = link.closed() => break "room closed".into(),
            message = control.recv() => match message {
                Some(Ok(Some(ControlMessage::StatsRequest))) => {
                    let _ = events_tx.try_send(ControlMessage::Stats(data.peer_stats(&conn, &sender)));
                }
                Some(Ok(Some(ControlMessage::Stats(_)))) => answered.notify_waiters(),
                Some(Ok(Some(ControlMessage::Disconnect { reason, message }))) => {
                    conn.close(close::NORMAL.into(), b"bye");
                    break format!("peer disconnected ({reason:?}): {}", message.chars().take(200).collect::<String>());
                }
                Some(Ok(Some(other))) => {
                    shared.protocol_error(&conn, "unexpected-control-message", &format!("unexpected {} from a peer", other.kind()));
                    break format!("protocol error: unexpected {}", other.kind());
                }
                Some(Ok(None)) | None => {
                    shared.protocol_error(&conn, "control-closed", "closed its control stream");
                    break "control stream closed".into();
                }
                Some(Err(CodecError::Io(e))) => break format!("connection lost: {e}"),
                Some(Err(e)) => {
                    shared.protocol_error(&conn, e.reason(), &e.to_string());
                    break format!("protocol error: {e}");
                }
            },
        }
    };
    shared.admissions().leave(&hello.room, peer, &reason);
    shared.peers().remove(&peer);
    // Frames still queued for this peer are dropped and counted (`flushed`).
    sender.set_connection(None);
    drop(link);
    let stats = data.peer_stats(&conn, &sender);
    tracing::info!(%peer, room = %hello.room, frames_rx = stats.frames_rx, frames_tx = stats.frames_tx, dropped = stats.dropped, "peer left: {reason}");
}

fn build(config: &StageConfig) -> BuildResult<Box<dyn Port>> {
    Ok(Box::new(QuicServer::from_config(config)?))
}

lanparty_core::inventory::submit! {
    StageRegistration {
        name: "quic-server",
        summary: "the relay: QUIC listener that admits peers into rooms and carries their frames as datagrams",
        keys: &[
            KeyDoc { name: "listen", ty: "PORT/udp or address:port", default: "required", doc: "where to listen, e.g. 443/udp or 0.0.0.0:4433" },
            KeyDoc { name: "cert", ty: "path", default: "none", doc: "PEM certificate chain (with `key`); without both, a self-signed certificate is used" },
            KeyDoc { name: "key", ty: "path", default: "none", doc: "PEM private key for `cert`" },
            KeyDoc { name: "self_signed_dir", ty: "path", default: "tls", doc: "where the self-signed certificate is made once and reused; players pin relay-cert.der from here" },
            KeyDoc { name: "names", ty: "list of strings", default: "[lanparty-relay.local]", doc: "DNS names in the self-signed certificate (clients' server_name)" },
            KeyDoc { name: "max_rooms", ty: "integer", default: "256", doc: "rooms at once; more get relay_full" },
            KeyDoc { name: "max_peers_per_room", ty: "integer", default: "32", doc: "peers per room; more get room_full" },
            KeyDoc { name: "max_connections", ty: "integer", default: "4096", doc: "connections past their handshake at once (half-open ones are bounded by max_handshakes)" },
            KeyDoc { name: "handshake_timeout", ty: "duration", default: "3s", doc: "drop QUIC handshakes not complete by then" },
            KeyDoc { name: "max_handshakes", ty: "integer", default: "1024", doc: "handshakes in progress at once; more are ignored" },
            KeyDoc { name: "max_handshakes_per_address", ty: "integer", default: "16", doc: "handshakes in progress from one IP address; more are ignored" },
            KeyDoc { name: "retry_above", ty: "integer", default: "16", doc: "with more handshakes in progress, new connections must prove their address with a stateless QUIC Retry first (0: always)" },
            KeyDoc { name: "handshake_packets_per_address", ty: "integer", default: "64", doc: "QUIC handshake (long-header) packets accepted per source IP and second; the rest are dropped before decryption" },
            KeyDoc { name: "hello_timeout", ty: "duration", default: "5s", doc: "close connections that do not say hello in time" },
            KeyDoc { name: "idle_timeout", ty: "duration", default: "30s", doc: "drop peers silent for this long" },
            KeyDoc { name: "max_control_frame", ty: "integer", default: "16384", doc: "largest control message accepted" },
            KeyDoc { name: "socket_buffer", ty: "bytes", default: "4194304", doc: "UDP socket buffer size" },
            KeyDoc { name: "initial_mtu", ty: "integer", default: "1452", doc: "QUIC initial MTU (1452 gives 1414-byte datagrams: IP packets up to 1394 bytes go whole, larger in fragments)" },
            KeyDoc { name: "congestion", ty: net::CONGESTION_TYPE, default: "delay", doc: "congestion controller of every connection; delay keeps a slow player's bottleneck queue short" },
            KeyDoc { name: "queue", ty: "map", default: "fq-codel", doc: crate::datapath::QUEUE_DOC },
        ],
        example: "ports:\n  relay: { type: quic-server, listen: 443/udp }",
        build: StageBuild::Port { build },
    }
}

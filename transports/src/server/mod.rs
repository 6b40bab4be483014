//! `quic-server`: the relay. Accepts QUIC connections, admits each peer
//! into a room on its hello (or rejects it with a code and a sentence), and
//! moves its frames between QUIC datagrams and the room's pipeline. Peers
//! are told when others join and leave. The socket, the QUIC endpoint and
//! every connection run in one loop per runtime thread (`driver.rs`, on
//! the socket group of [`crate::reuseport`]); this file holds the port,
//! the relay's shared state and its admission rules.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use lanparty_core::config::{ConfigError, StageConfig};
use lanparty_core::control::{
    ControlMessage, Hello, PROTOCOL_VERSION, PeerId, PeerRole, Reject, RejectCode, Welcome,
    room_key,
};
use lanparty_core::registry::BuildResult;
use lanparty_core::runtime::{ActivePolicy, LinkSpec, PolicyEvent, PortContext};
use lanparty_core::runtime::{Port, PortError};
use lanparty_core::stage::LinkRole;
use lanparty_core::wire::MacAddr;
use tokio::sync::{Notify, mpsc};

use crate::admission::{Admissions, Limits};
use crate::credentials::{self, FailureLimiter};
use crate::datapath::{
    DataPath, DatapathCounters, PeerSender, RELAY_REASSEMBLY_BYTES, reassembly_limits,
};
use crate::gate::{PerAddressRate, TABLE_LIMIT};
use crate::net::{self, ReasonCounters, close};
use crate::tls::{self, Identity, SelfSignedFiles};
use lanparty_core::wire::fragment::ReassemblyBudget;

mod driver;
mod session;
mod settings;
mod status;

pub use settings::ServerSettings;

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
        let mut sockets = None;
        let wanted = tokio::runtime::Handle::current().metrics().num_workers();
        for addr in &self.listen {
            match self.bind(*addr, wanted) {
                Ok(s) => {
                    sockets = Some(s);
                    break;
                }
                Err(e) => last_error = format!("cannot listen on {addr}: {e}"),
            }
        }
        let sockets = sockets.ok_or_else(|| fail(last_error))?;
        let loops = sockets.len();
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
            gate: Mutex::new(PerAddressRate::new(
                self.settings.handshake_packets_per_address,
                TABLE_LIMIT,
            )),
            loops,
        });
        let mut drivers = Vec::with_capacity(loops);
        for (index, socket) in sockets.into_iter().enumerate() {
            let (commands_tx, commands_rx) = mpsc::channel(driver::COMMAND_QUEUE);
            let driver = driver::Driver::new(
                shared.clone(),
                socket,
                net::server_endpoint_config(&reset_secret, index, loops),
                server_config.clone(),
                commands_tx,
                index,
            )
            .map_err(|e| fail(format!("cannot serve on the relay socket: {e}")))?;
            drivers.push((driver, commands_rx));
        }
        let mut drivers = drivers.into_iter();
        let (first, first_commands) = drivers
            .next()
            .ok_or_else(|| fail("no relay socket".into()))?;
        let local = first.local_addr().map_err(|e| fail(e.to_string()))?;
        tracing::info!(port = %self.name, listen = %local, loops, max_rooms = self.settings.max_rooms, max_peers = self.settings.max_peers_per_room, "relay listening");
        ctx.publish_status(shared.clone());
        let others: Vec<_> = drivers
            .map(|(driver, commands)| tokio::spawn(driver.run(commands)))
            .collect();
        first.run(first_commands).await;
        for other in others {
            if let Err(e) = other.await {
                tracing::error!(port = %self.name, "a relay loop failed: {e}");
            }
        }
        tracing::info!(port = %self.name, "relay stopped");
        Ok(())
    }

    /// The relay's sockets on `addr`: one per loop, `loops` of them as one
    /// group ([`crate::reuseport`]), or one socket (logged) where the group
    /// cannot be made.
    fn bind(
        &self,
        addr: std::net::SocketAddr,
        loops: usize,
    ) -> std::io::Result<Vec<std::net::UdpSocket>> {
        let buffer = self.settings.socket_buffer;
        match crate::reuseport::bind_group(addr, buffer, loops) {
            Ok(group) => Ok(group),
            Err(e) if loops > 1 => {
                tracing::warn!(port = %self.name, %addr, loops, "cannot bind one socket per runtime thread ({e}): one loop serves every connection");
                Ok(vec![net::bind_udp(addr, buffer)?])
            }
            Err(e) => Err(e),
        }
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
    /// Long-header packets per source address and second, over every
    /// loop ([`crate::gate`]).
    gate: Mutex<PerAddressRate>,
    /// Loops serving connections (one per runtime thread).
    loops: usize,
}

/// Credential checks (PBKDF2) that may run at once.
const CONCURRENT_CREDENTIAL_CHECKS: usize = 2;

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

/// What becomes of a connection attempt.
enum Attempt {
    /// No reply.
    Ignore,
    /// A stateless Retry: the address proves itself first.
    Retry,
    /// The handshake goes on, holding its slot.
    Accept(HandshakeSlot),
}

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
    /// The loop its connection runs on.
    loop_index: usize,
    conn: Arc<crate::quic_loop::LoopConn>,
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

    /// Decides about a new connection attempt from `remote` before any
    /// state is kept for it: above `retry_above` handshakes in progress an
    /// unproven address gets a stateless Retry (at most
    /// [`RETRIES_PER_ADDRESS_PER_SECOND`] per address, then it is ignored);
    /// above `max_handshakes` (or `max_handshakes_per_address` from its
    /// address) it is ignored (no reply: a flood gets nothing back to
    /// amplify). Otherwise it takes a handshake slot.
    fn handshake_slot(
        self: &Arc<Self>,
        remote: std::net::SocketAddr,
        validated: bool,
        may_retry: bool,
    ) -> Attempt {
        let ip = remote.ip();
        let s = &self.settings;
        let mut h = self.handshakes();
        let from_here = h.per_address.get(&ip).copied().unwrap_or(0);
        // An address with a handshake already in progress proves itself
        // before it gets another: each full handshake costs the relay a
        // signature and a key exchange on the thread that carries every
        // frame, so a one-address flood buys one, not `retry_above` (the
        // 16 it bought before moved admitted players' p99 by 4-8 ms).
        let retry = (h.total >= s.retry_above || from_here > 0) && !validated && may_retry;
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
            return Attempt::Ignore;
        }
        if retry {
            drop(h);
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            return Attempt::Retry;
        }
        h.total += 1;
        *h.per_address.entry(ip).or_default() += 1;
        Attempt::Accept(HandshakeSlot {
            shared: self.clone(),
            ip,
        })
    }

    fn gate(&self) -> std::sync::MutexGuard<'_, PerAddressRate> {
        self.gate.lock().unwrap_or_else(PoisonError::into_inner)
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
    async fn authorize(
        &self,
        ip: std::net::IpAddr,
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
}

fn build(config: &StageConfig) -> BuildResult<Box<dyn Port>> {
    Ok(Box::new(QuicServer::from_config(config)?))
}

//! The relay's one loop: the UDP socket (batched receive with GRO and GSO
//! sends, through quinn-udp), the `quinn_proto` endpoint, every
//! connection's QUIC state and control session, and their timers, driven
//! from one task with one wake-up per batch of events. A peer's datagram
//! goes from the socket through its connection to the room and into the
//! destination's connection without a task switch or a channel, and leaves
//! in the same pass. Other tasks (a sender's pump on a multi-threaded
//! runtime, a hello's decision, a seat's watcher) reach a connection
//! through its lock or the loop's command queue and wake the loop.

use std::collections::{BTreeSet, HashMap};
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;

use bytes::{Bytes, BytesMut};
use quinn_proto::{ConnectionHandle, DatagramEvent, Endpoint, Event};
use tokio::io::Interest;

use super::session::{Command, Session};
use super::*;
use crate::datapath::{DatagramRefused, QuicConn, share_of};
use crate::gate::{PerAddressRate, TABLE_LIMIT, is_long_header};
use crate::report::PathReport;
use crate::session::Leave;

/// Segments one GSO send carries at most: ten full-size packets stay under
/// the 64 kB a UDP send takes (more and quinn-udp drops the send with
/// EMSGSIZE; quinn's own cap).
const MAX_GSO_SEGMENTS: usize = 10;
/// Packets a connection sends per pass before the others get their turn.
const TRANSMITS_PER_PASS: usize = 20;
/// Receive batches per wake-up before timers and other work get a turn.
const RECEIVE_ROUNDS: usize = 8;
/// Commands queued for the loop at most (decisions, leaves, messages).
pub(super) const COMMAND_QUEUE: usize = 4096;
/// How long a stopping relay waits for its sessions to say goodbye.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What the loop has to look at: connections touched from anywhere, and
/// whether it is busy (then it sees them before sleeping without a wake-up).
#[derive(Debug, Default)]
pub(super) struct Wake {
    dirty: Mutex<Vec<ConnectionHandle>>,
    busy: AtomicBool,
    notify: Notify,
}

impl Wake {
    fn take(&self, into: &mut Vec<ConnectionHandle>) {
        into.clear();
        std::mem::swap(
            &mut *self.dirty.lock().unwrap_or_else(PoisonError::into_inner),
            into,
        );
    }
}

/// One connection, shared by the loop and whoever sends on it.
pub(super) struct LoopConn {
    handle: ConnectionHandle,
    inner: Mutex<quinn_proto::Connection>,
    /// On the loop's list of connections to look at.
    queued: AtomicBool,
    wake: Arc<Wake>,
}

impl std::fmt::Debug for LoopConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopConn")
            .field("handle", &self.handle.0)
            .finish_non_exhaustive()
    }
}

impl LoopConn {
    /// The connection's protocol state (never held across a call into
    /// the room, which may send on this same connection).
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, quinn_proto::Connection> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Something changed: the loop looks at this connection (transmits,
    /// timers, events) before it sleeps next.
    pub(super) fn touched(&self) {
        if self.queued.swap(true, Ordering::SeqCst) {
            return;
        }
        self.wake
            .dirty
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.handle);
        if !self.wake.busy.load(Ordering::SeqCst) {
            self.wake.notify.notify_one();
        }
    }

    /// The peer's address now.
    pub(super) fn remote(&self) -> SocketAddr {
        self.lock().remote_address()
    }
}

impl QuicConn for LoopConn {
    fn send_datagram(&self, datagram: Bytes) -> Result<(), DatagramRefused> {
        let sent = self.lock().datagrams().send(datagram, true);
        self.touched();
        sent.map_err(|e| match e {
            quinn_proto::SendDatagramError::TooLarge => DatagramRefused::TooLarge,
            _ => DatagramRefused::Failed,
        })
    }

    fn send_buffer_space(&self) -> usize {
        self.lock().datagrams().send_buffer_space()
    }

    fn max_datagram_size(&self) -> Option<usize> {
        self.lock().datagrams().max_size()
    }

    fn rtt(&self) -> Duration {
        self.lock().rtt()
    }

    fn controller_share(&self) -> Option<crate::congestion::ControllerShare> {
        share_of(self.lock().congestion_state().clone_box())
    }

    fn path(&self) -> PathReport {
        let conn = self.lock();
        PathReport::new(conn.remote_address(), conn.rtt(), &conn.stats().path)
    }
}

/// A connection in the loop's table.
struct Entry {
    conn: Arc<LoopConn>,
    /// Told apart from a later connection that gets the same handle.
    serial: u64,
    /// Where the entry stands in the timer set.
    timer: Option<Instant>,
    phase: Phase,
}

enum Phase {
    /// The QUIC handshake, holding its place among the handshakes in
    /// progress until `deadline`.
    Handshake {
        _slot: HandshakeSlot,
        deadline: Instant,
    },
    Session(Box<Session>),
    /// The session is over; the connection drains.
    Closing,
}

/// The loop's state.
pub(super) struct Driver {
    shared: Arc<Shared>,
    endpoint: Endpoint,
    socket: tokio::net::UdpSocket,
    udp: quinn_udp::UdpSocketState,
    conns: HashMap<ConnectionHandle, Entry>,
    timers: BTreeSet<(Instant, usize)>,
    wake: Arc<Wake>,
    commands: mpsc::Sender<Command>,
    gate: PerAddressRate,
    next_serial: u64,
    /// Receive buffers: `BATCH_SIZE` slots of `slot` bytes.
    rx: Box<[u8]>,
    slot: usize,
    meta: Vec<quinn_udp::RecvMeta>,
    tx: Vec<u8>,
    segments: usize,
    dirty: Vec<ConnectionHandle>,
    events: Vec<Event>,
    stopping: Option<Instant>,
}

impl Driver {
    /// A loop serving `server` on `socket`.
    pub(super) fn new(
        shared: Arc<Shared>,
        socket: std::net::UdpSocket,
        endpoint_config: quinn::EndpointConfig,
        server: quinn::ServerConfig,
        commands: mpsc::Sender<Command>,
    ) -> std::io::Result<Driver> {
        let udp = quinn_udp::UdpSocketState::new((&socket).into())?;
        let socket = tokio::net::UdpSocket::from_std(socket)?;
        let endpoint_config = Arc::new(endpoint_config);
        let slot = endpoint_config.get_max_udp_payload_size().min(64 * 1024) as usize
            * udp.gro_segments().max(1);
        let endpoint = Endpoint::new(
            endpoint_config,
            Some(Arc::new(server)),
            !udp.may_fragment(),
            None,
        );
        let per_second = shared.settings.handshake_packets_per_address;
        Ok(Driver {
            segments: udp.max_gso_segments().clamp(1, MAX_GSO_SEGMENTS),
            shared,
            endpoint,
            socket,
            udp,
            conns: HashMap::new(),
            timers: BTreeSet::new(),
            wake: Arc::new(Wake::default()),
            commands,
            gate: PerAddressRate::new(per_second, TABLE_LIMIT),
            next_serial: 0,
            rx: vec![0u8; slot * quinn_udp::BATCH_SIZE].into_boxed_slice(),
            slot,
            meta: vec![quinn_udp::RecvMeta::default(); quinn_udp::BATCH_SIZE],
            tx: Vec::with_capacity(64 * 1024),
            dirty: Vec::new(),
            events: Vec::new(),
            stopping: None,
        })
    }

    /// The address the socket is bound to.
    pub(super) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Runs until the relay stops and its sessions have said goodbye.
    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let ctx = self.shared.ctx.clone();
        let mut shutdown = ctx.shutdown();
        let mut policy_events = ctx.policies().subscribe();
        let mut policies_open = true;
        enum Woke {
            Socket(std::io::Result<()>),
            Timer,
            Touched,
            Command(Option<Command>),
            Shutdown(String),
            Policy(Result<PolicyEvent, tokio::sync::broadcast::error::RecvError>),
        }
        loop {
            self.wake.busy.store(false, Ordering::SeqCst);
            if !self
                .wake
                .dirty
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
            {
                self.wake.busy.store(true, Ordering::SeqCst);
                self.flush().await;
                continue;
            }
            if let Some(until) = self.stopping
                && (self.conns.is_empty() || Instant::now() >= until)
            {
                break;
            }
            let next = self.timers.first().map(|(t, _)| *t);
            let next = match (next, self.stopping) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let woke = tokio::select! {
                ready = self.socket.readable() => Woke::Socket(ready),
                () = crate::control_stream::sleep_until(next) => Woke::Timer,
                () = self.wake.notify.notified() => Woke::Touched,
                command = commands.recv() => Woke::Command(command),
                why = shutdown.wait(), if self.stopping.is_none() => Woke::Shutdown(why),
                event = policy_events.recv(), if policies_open => Woke::Policy(event),
            };
            self.wake.busy.store(true, Ordering::SeqCst);
            let now = Instant::now();
            match woke {
                Woke::Socket(Ok(())) => self.receive(now),
                Woke::Socket(Err(e)) => {
                    tracing::error!(port = %self.shared.name, "relay socket failed: {e}");
                    break;
                }
                Woke::Timer | Woke::Touched => {}
                Woke::Command(Some(command)) => self.command(command),
                Woke::Command(None) => {}
                Woke::Shutdown(why) => self.stop(now, why),
                Woke::Policy(Ok(PolicyEvent::Removed(room))) => {
                    if ctx.policies().require_policy() {
                        self.shared.close_room(&room);
                    }
                }
                Woke::Policy(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                    policies_open = false;
                }
                Woke::Policy(_) => {}
            }
            while let Ok(command) = commands.try_recv() {
                self.command(command);
            }
            self.expire(Instant::now());
            self.flush().await;
        }
        // Whoever is left is closed with the relay.
        let now = Instant::now();
        for entry in self.conns.values() {
            entry.conn.lock().close(
                now,
                close::SHUTDOWN.into(),
                Bytes::from_static(b"relay shutting down"),
            );
            entry.conn.touched();
        }
        self.flush().await;
    }

    /// The relay stops: sessions say goodbye, new connections are refused.
    fn stop(&mut self, now: Instant, why: String) {
        self.stopping = Some(now + STOP_GRACE);
        let handles: Vec<ConnectionHandle> = self.conns.keys().copied().collect();
        for ch in handles {
            if let Some(Entry {
                conn,
                phase: Phase::Session(session),
                ..
            }) = self.conns.get_mut(&ch)
            {
                session.leave(now, Leave::Shutdown(why.clone()));
                conn.touched();
            }
        }
    }

    /// Every datagram that is ready, into the endpoint and its connections.
    fn receive(&mut self, now: Instant) {
        let mut rx = std::mem::take(&mut self.rx);
        let mut meta = std::mem::take(&mut self.meta);
        for _ in 0..RECEIVE_ROUNDS {
            let mut bufs: [IoSliceMut; quinn_udp::BATCH_SIZE] = {
                let mut slots = rx.chunks_mut(self.slot);
                std::array::from_fn(|_| IoSliceMut::new(slots.next().unwrap_or_default()))
            };
            let received = self.socket.try_io(Interest::READABLE, || {
                self.udp.recv((&self.socket).into(), &mut bufs, &mut meta)
            });
            let n = match received {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // Undefined in QUIC, and anyone may cause one.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => continue,
                Err(e) => {
                    tracing::warn!(port = %self.shared.name, "relay socket receive failed: {e}");
                    break;
                }
            };
            for (m, buf) in meta.iter().zip(bufs.iter()).take(n) {
                let bytes = &buf[..m.len];
                if is_long_header(bytes) && !self.gate.admit(m.addr.ip(), now) {
                    // A GRO batch is one source's same-size datagrams: all go.
                    let segments = m.len.div_ceil(m.stride.max(1)) as u64;
                    self.shared
                        .counters
                        .handshake_packets_dropped
                        .fetch_add(segments, Ordering::Relaxed);
                    continue;
                }
                let ecn = m
                    .ecn
                    .and_then(|e| quinn_proto::EcnCodepoint::from_bits(e as u8));
                let mut data = BytesMut::from(bytes);
                while !data.is_empty() {
                    let datagram = data.split_to(m.stride.clamp(1, data.len()));
                    self.datagram(now, m.addr, m.dst_ip, ecn, datagram);
                }
            }
        }
        self.rx = rx;
        self.meta = meta;
    }

    /// One UDP datagram for the endpoint.
    fn datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local: Option<std::net::IpAddr>,
        ecn: Option<quinn_proto::EcnCodepoint>,
        data: BytesMut,
    ) {
        self.tx.clear();
        match self
            .endpoint
            .handle(now, remote, local, ecn, data, &mut self.tx)
        {
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                if let Some(entry) = self.conns.get(&ch) {
                    entry.conn.lock().handle_event(event);
                    entry.conn.touched();
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => self.incoming(now, incoming),
            Some(DatagramEvent::Response(t)) => self.respond(&t),
            None => {}
        }
    }

    /// A new connection attempt: refused while stopping, else the
    /// relay's handshake rules decide.
    fn incoming(&mut self, now: Instant, incoming: quinn_proto::Incoming) {
        self.tx.clear();
        if self.stopping.is_some() {
            let t = self.endpoint.refuse(incoming, &mut self.tx);
            return self.respond(&t);
        }
        let counters = &self.shared.counters;
        let attempt = self.shared.handshake_slot(
            incoming.remote_address(),
            incoming.remote_address_validated(),
            incoming.may_retry(),
        );
        match attempt {
            Attempt::Ignore => self.endpoint.ignore(incoming),
            Attempt::Retry => match self.endpoint.retry(incoming, &mut self.tx) {
                Ok(t) => self.respond(&t),
                Err(e) => {
                    counters.handshake_failures.fetch_add(1, Ordering::Relaxed);
                    self.endpoint.ignore(e.into_incoming());
                }
            },
            Attempt::Accept(slot) => {
                let remote = incoming.remote_address();
                match self.endpoint.accept(incoming, now, &mut self.tx, None) {
                    Ok((ch, conn)) => {
                        let conn = Arc::new(LoopConn {
                            handle: ch,
                            inner: Mutex::new(conn),
                            queued: AtomicBool::new(false),
                            wake: self.wake.clone(),
                        });
                        conn.touched();
                        self.next_serial += 1;
                        let deadline = now + self.shared.settings.handshake_timeout.0;
                        self.conns.insert(
                            ch,
                            Entry {
                                conn,
                                serial: self.next_serial,
                                timer: None,
                                phase: Phase::Handshake {
                                    _slot: slot,
                                    deadline,
                                },
                            },
                        );
                    }
                    Err(e) => {
                        counters.handshake_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%remote, "handshake failed: {}", e.cause);
                        if let Some(t) = e.response {
                            self.respond(&t);
                        }
                    }
                }
            }
        }
    }

    /// Sends an endpoint's own answer (a Retry, a refusal, a stateless
    /// reset) if the socket takes it now; dropped otherwise, like a packet
    /// lost on the way.
    fn respond(&mut self, t: &quinn_proto::Transmit) {
        let transmit = udp_transmit(t, &self.tx[..t.size]);
        let _ = self.socket.try_io(Interest::WRITABLE, || {
            self.udp.send((&self.socket).into(), &transmit)
        });
        self.tx.clear();
    }

    /// A command from another task.
    fn command(&mut self, command: Command) {
        let (ch, serial) = command.target();
        let Some(entry) = self.conns.get_mut(&ch).filter(|e| e.serial == serial) else {
            command.orphaned(&self.shared);
            return;
        };
        let Phase::Session(session) = &mut entry.phase else {
            command.orphaned(&self.shared);
            return;
        };
        session.command(&self.shared, &entry.conn, command);
        entry.conn.touched();
    }

    /// Runs the timers that are due.
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, ch)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let ch = ConnectionHandle(ch);
            let Some(entry) = self.conns.get_mut(&ch) else {
                continue;
            };
            entry.timer = None;
            {
                let mut conn = entry.conn.lock();
                if conn.poll_timeout().is_some_and(|t| t <= now) {
                    conn.handle_timeout(now);
                }
            }
            match &mut entry.phase {
                Phase::Handshake { deadline, .. } if *deadline <= now => {
                    // Closing the handshake frees its state.
                    self.shared
                        .counters
                        .handshake_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(remote = %entry.conn.remote(), "no complete handshake within {:?}", self.shared.settings.handshake_timeout.0);
                    entry.conn.lock().close(now, 0u32.into(), Bytes::new());
                    entry.phase = Phase::Closing;
                }
                Phase::Session(session) => session.handle_timeout(now),
                _ => {}
            }
            entry.conn.touched();
        }
    }

    /// Looks at every touched connection until none is left.
    async fn flush(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        loop {
            self.wake.take(&mut dirty);
            if dirty.is_empty() {
                break;
            }
            for &ch in &dirty {
                self.process(ch).await;
            }
        }
        self.dirty = dirty;
    }

    /// One connection's pass: endpoint bookkeeping, its events to its
    /// phase, its packets out, its timer, and its removal once drained.
    async fn process(&mut self, ch: ConnectionHandle) {
        let Some(entry) = self.conns.get_mut(&ch) else {
            return;
        };
        entry.conn.queued.store(false, Ordering::SeqCst);
        let conn = entry.conn.clone();
        let now = Instant::now();
        let mut events = std::mem::take(&mut self.events);
        {
            let mut c = conn.lock();
            while let Some(event) = c.poll_endpoint_events() {
                if let Some(back) = self.endpoint.handle_event(ch, event) {
                    c.handle_event(back);
                }
            }
            while let Some(event) = c.poll() {
                events.push(event);
            }
        }
        for event in events.drain(..) {
            self.event(ch, event, now);
        }
        self.events = events;
        if let Some(Entry {
            phase: Phase::Session(session),
            ..
        }) = self.conns.get_mut(&ch)
            && session.poll(&self.shared, &conn, now)
        {
            self.end_session(ch, now);
        }
        // Packets out, a share at a time.
        let mut sent = 0;
        loop {
            self.tx.clear();
            let transmit = conn.lock().poll_transmit(now, self.segments, &mut self.tx);
            let Some(t) = transmit else {
                break;
            };
            sent += t.segment_size.map_or(1, |s| t.size.div_ceil(s));
            self.send(&t).await;
            if sent >= TRANSMITS_PER_PASS {
                conn.touched();
                break;
            }
        }
        // Endpoint events the transmit may have raised, the timer, the end.
        let (timeout, drained) = {
            let mut c = conn.lock();
            while let Some(event) = c.poll_endpoint_events() {
                if let Some(back) = self.endpoint.handle_event(ch, event) {
                    c.handle_event(back);
                }
            }
            (c.poll_timeout(), c.is_drained())
        };
        let Some(entry) = self.conns.get_mut(&ch) else {
            return;
        };
        if drained {
            if let Phase::Session(_) = entry.phase {
                self.end_session(ch, now);
            }
            if let Some(entry) = self.conns.remove(&ch)
                && let Some(at) = entry.timer
            {
                self.timers.remove(&(at, ch.0));
            }
            return;
        }
        let phase_deadline = match &entry.phase {
            Phase::Handshake { deadline, .. } => Some(*deadline),
            Phase::Session(session) => session.deadline(),
            Phase::Closing => None,
        };
        let next = match (timeout, phase_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if next != entry.timer {
            if let Some(at) = entry.timer {
                self.timers.remove(&(at, ch.0));
            }
            if let Some(at) = next {
                self.timers.insert((at, ch.0));
            }
            entry.timer = next;
        }
    }

    /// One event of a connection, by its phase.
    fn event(&mut self, ch: ConnectionHandle, event: Event, now: Instant) {
        let Some(entry) = self.conns.get_mut(&ch) else {
            return;
        };
        let counters = &self.shared.counters;
        match (&mut entry.phase, event) {
            (Phase::Handshake { .. }, Event::Connected) => {
                let live = self.shared.live.load(Ordering::Relaxed);
                if live >= self.shared.settings.max_connections {
                    counters.handshake_failures.fetch_add(1, Ordering::Relaxed);
                    entry.conn.lock().close(
                        now,
                        close::REJECTED.into(),
                        Bytes::from_static(b"the relay has too many connections"),
                    );
                    entry.phase = Phase::Closing;
                    return;
                }
                self.shared.live.fetch_add(1, Ordering::Relaxed);
                counters.connections.fetch_add(1, Ordering::Relaxed);
                let mut session =
                    Session::new(&self.shared, now, ch, entry.serial, self.commands.clone());
                if self.stopping.is_some() {
                    session.leave(now, Leave::Shutdown("relay shutting down".into()));
                }
                entry.phase = Phase::Session(Box::new(session));
            }
            (Phase::Handshake { .. }, Event::ConnectionLost { reason }) => {
                counters.handshake_failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(remote = %entry.conn.remote(), "handshake failed: {reason}");
                entry.phase = Phase::Closing;
            }
            (Phase::Session(session), event) => {
                session.event(&self.shared, &entry.conn, event, now)
            }
            _ => {}
        }
    }

    /// A session is over: the connection closes (if its session did not
    /// close it) and drains.
    fn end_session(&mut self, ch: ConnectionHandle, now: Instant) {
        let Some(entry) = self.conns.get_mut(&ch) else {
            return;
        };
        if let Phase::Session(session) = std::mem::replace(&mut entry.phase, Phase::Closing) {
            session.end(&self.shared, &entry.conn);
            self.shared.live.fetch_sub(1, Ordering::Relaxed);
            let mut conn = entry.conn.lock();
            if !conn.is_closed() {
                // As quinn does when the last handle to a connection goes.
                conn.close(now, 0u32.into(), Bytes::new());
            }
        }
    }

    /// Sends one transmit, waiting while the socket's buffer is full.
    async fn send(&mut self, t: &quinn_proto::Transmit) {
        let transmit = udp_transmit(t, &self.tx[..t.size]);
        loop {
            if self.socket.writable().await.is_err() {
                return;
            }
            match self.socket.try_io(Interest::WRITABLE, || {
                self.udp.send((&self.socket).into(), &transmit)
            }) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    tracing::debug!(port = %self.shared.name, "relay socket send failed: {e}");
                    return;
                }
                Ok(()) => return,
            }
        }
    }
}

/// quinn-proto's transmit as quinn-udp sends it.
fn udp_transmit<'a>(t: &quinn_proto::Transmit, contents: &'a [u8]) -> quinn_udp::Transmit<'a> {
    quinn_udp::Transmit {
        destination: t.destination,
        ecn: t
            .ecn
            .and_then(|e| quinn_udp::EcnCodepoint::from_bits(e as u8)),
        contents,
        segment_size: t.segment_size,
        src_ip: t.src_ip,
    }
}

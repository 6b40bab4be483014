//! The relay's loop: the UDP socket (batched receive with GRO and GSO
//! sends, through quinn-udp), the `quinn_proto` endpoint, every
//! connection's QUIC state and control session, and their timers, driven
//! from one task with one wake-up per batch of events. A relay runs one
//! loop per runtime thread, each on its own socket of one port
//! ([`crate::reuseport`]); what they share (admission, handshake counts,
//! the handshake gate, rooms) lives in [`Shared`]. A peer's datagram
//! goes from the socket through its connection to the room and into the
//! destination's connection without a task switch or a channel, and leaves
//! in the same pass. Other tasks (a sender's pump on a multi-threaded
//! runtime, a hello's decision, a seat's watcher) reach a connection
//! through its lock or the loop's command queue and wake the loop.

use std::collections::BTreeSet;

use lanparty_core::keyed_hash::{KeyedMap, keyed_map};
use std::net::SocketAddr;

use bytes::Bytes;
use quinn_proto::{ConnectionHandle, DatagramEvent, Endpoint, Event};

use super::session::{Command, Session};
use super::*;
use crate::gate::is_long_header;
use crate::quic_loop::{Io, LoopConn, RecvBuffers, Wake, earliest, exchange, sleep_until};
use crate::session::Leave;

/// Commands queued for the loop at most (decisions, leaves, messages).
pub(super) const COMMAND_QUEUE: usize = 4096;
/// How long a stopping relay waits for its sessions to say goodbye.
const STOP_GRACE: Duration = Duration::from_secs(2);

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
    io: Io,
    rx: RecvBuffers,
    conns: KeyedMap<ConnectionHandle, Entry>,
    timers: BTreeSet<(Instant, usize)>,
    wake: Arc<Wake>,
    commands: mpsc::Sender<Command>,
    /// This loop's index among the relay's loops; loop 0 acts on policy
    /// events for the relay.
    index: usize,
    next_serial: u64,
    tx: Vec<u8>,
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
        index: usize,
    ) -> std::io::Result<Driver> {
        let io = Io::new(socket)?;
        let rx = RecvBuffers::new(
            &io,
            endpoint_config.get_max_udp_payload_size().min(64 * 1024) as u16,
        );
        let endpoint = Endpoint::new(
            Arc::new(endpoint_config),
            Some(Arc::new(server)),
            !io.may_fragment(),
            None,
        );
        Ok(Driver {
            shared,
            endpoint,
            io,
            rx,
            conns: keyed_map(),
            timers: BTreeSet::new(),
            wake: Arc::new(Wake::default()),
            commands,
            index,
            next_serial: 0,
            tx: Vec::with_capacity(64 * 1024),
            dirty: Vec::new(),
            events: Vec::new(),
            stopping: None,
        })
    }

    /// The address the socket is bound to.
    pub(super) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// Runs until the relay stops and its sessions have said goodbye.
    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let ctx = self.shared.ctx.clone();
        let mut shutdown = ctx.shutdown();
        let mut policy_events = ctx.policies().subscribe();
        let mut policies_open = self.index == 0;
        enum Woke {
            Socket(std::io::Result<()>),
            Timer,
            Touched,
            Command(Option<Command>),
            Shutdown(String),
            Policy(Result<PolicyEvent, tokio::sync::broadcast::error::RecvError>),
        }
        loop {
            self.wake.set_busy(false);
            if self.wake.pending() {
                self.wake.set_busy(true);
                self.flush().await;
                continue;
            }
            if let Some(until) = self.stopping
                && (self.conns.is_empty() || Instant::now() >= until)
            {
                break;
            }
            let next = earliest(self.timers.first().map(|(t, _)| *t), self.stopping);
            let woke = tokio::select! {
                ready = self.io.readable() => Woke::Socket(ready),
                () = sleep_until(next) => Woke::Timer,
                () = self.wake.touched() => Woke::Touched,
                command = commands.recv() => Woke::Command(command),
                why = shutdown.wait(), if self.stopping.is_none() => Woke::Shutdown(why),
                event = policy_events.recv(), if policies_open => Woke::Policy(event),
            };
            self.wake.set_busy(true);
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
        for entry in self.conns.values_mut() {
            if let Phase::Session(session) = &mut entry.phase {
                session.leave(now, Leave::Shutdown(why.clone()));
                entry.conn.touched();
            }
        }
    }

    /// Every datagram that is ready, into the endpoint and its connections
    /// (long-header packets through the gate first).
    fn receive(&mut self, now: Instant) {
        let mut incoming = Vec::new();
        let Driver {
            rx,
            io,
            endpoint,
            conns,
            tx,
            shared,
            ..
        } = self;
        let received = rx.receive(io, |mut r| {
            if is_long_header(r.bytes) && !shared.gate().admit(r.remote.ip(), now) {
                // A GRO batch is one source's same-size datagrams: all go.
                let segments = r.bytes.len().div_ceil(r.stride.max(1)) as u64;
                shared
                    .counters
                    .handshake_packets_dropped
                    .fetch_add(segments, Ordering::Relaxed);
                return;
            }
            let (remote, local, ecn) = (r.remote, r.local, r.ecn);
            for datagram in r.datagrams() {
                tx.clear();
                match endpoint.handle(now, remote, local, ecn, datagram, tx) {
                    Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                        if let Some(entry) = conns.get(&ch) {
                            entry.conn.lock().handle_event(event);
                            entry.conn.touched();
                        }
                    }
                    Some(DatagramEvent::NewConnection(attempt)) => incoming.push(attempt),
                    Some(DatagramEvent::Response(t)) => io.respond(&t, tx),
                    None => {}
                }
            }
        });
        if let Err(e) = received {
            tracing::warn!(port = %self.shared.name, "relay socket receive failed: {e}");
        }
        for attempt in incoming {
            self.incoming(now, attempt);
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
                        let conn = LoopConn::new(ch, conn, self.wake.clone());
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

    /// Sends an endpoint's own answer (written into `tx`).
    fn respond(&mut self, t: &quinn_proto::Transmit) {
        self.io.respond(t, &self.tx);
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
        entry.conn.looked_at();
        let conn = entry.conn.clone();
        let now = Instant::now();
        let mut events = std::mem::take(&mut self.events);
        {
            let mut c = conn.lock();
            exchange(&mut self.endpoint, ch, &mut c);
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
        self.io.transmit(&conn, &mut self.tx, now).await;
        // Endpoint events the transmit may have raised, the timer, the end.
        let (timeout, drained) = {
            let mut c = conn.lock();
            exchange(&mut self.endpoint, ch, &mut c);
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
        let next = earliest(timeout, phase_deadline);
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
                let mut session = Session::new(
                    &self.shared,
                    now,
                    ch,
                    entry.serial,
                    self.index,
                    self.commands.clone(),
                );
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
            entry.conn.close_unless_closed(now);
        }
    }
}

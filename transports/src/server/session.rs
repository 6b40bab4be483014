//! One connection's control session at the relay, driven by the relay's
//! loop ([`super::driver`]): the sans-IO [`RelaySession`] fed from the
//! connection's control stream and datagrams — the hello and its decision
//! (admission, or a reject with a code and a sentence, decided in a task
//! of its own that reports back), then the admitted peer's frames and
//! control messages until the session ends.

use bytes::Bytes;
use quinn_proto::{ConnectionHandle, Dir, Event, StreamEvent};

use super::*;
use crate::datapath::DATAGRAM_BATCH;
use crate::quic_loop::{ControlStream, LoopConn, datagram_batches};
use crate::session::{Leave, RelayEvent, RelaySession, RelayTimeouts};

/// What another task asks of a session, through the loop.
pub(super) enum Command {
    /// The decision on the hello.
    Decided(Target, Box<Result<Admission, (Hello, Reject)>>),
    /// The relay ends the session.
    Leave(Target, Leave),
    /// A control message for the peer (room events, the stale-seat probe).
    Message(Target, ControlMessage),
}

/// A session: its connection's handle, and the serial that tells it
/// apart from a later connection with the same handle.
pub(super) type Target = (ConnectionHandle, u64);

impl Command {
    pub(super) fn target(&self) -> Target {
        match self {
            Command::Decided(t, _) | Command::Leave(t, _) | Command::Message(t, _) => *t,
        }
    }

    /// Its session is gone: an admission made for it is undone.
    pub(super) fn orphaned(self, shared: &Shared) {
        if let Command::Decided(_, decided) = self
            && let Ok(admission) = *decided
        {
            let seat = admission.seat;
            shared
                .admissions()
                .leave(&seat.hello.room, seat.peer, "left before its welcome");
            seat.sender.set_connection(None);
        }
    }
}

/// An admitted peer's side of the session: its seat in the room and what
/// the relay's other parts use to reach it.
pub(super) struct Seat {
    peer: PeerId,
    hello: Hello,
    sender: Arc<PeerSender>,
    kick: Arc<Notify>,
    replace: Arc<Notify>,
    answered: Arc<Notify>,
    /// Control messages for the peer from the room (joins, leaves) and
    /// the stale-seat probe.
    events_tx: mpsc::Sender<ControlMessage>,
    mtu: u16,
    /// Peers already in the room, announced after the welcome.
    others: Vec<(PeerId, PeerRole, MacAddr)>,
    path_budget: usize,
}

/// An admitted hello: the seat, the link into the room and the peer's
/// control messages, and the welcome.
pub(super) struct Admission {
    seat: Seat,
    link: lanparty_core::runtime::LinkHandle,
    events_rx: mpsc::Receiver<ControlMessage>,
    welcome: Welcome,
}

/// One connection's session state in the loop.
pub(super) struct Session {
    machine: RelaySession,
    target: Target,
    commands: mpsc::Sender<Command>,
    /// The loop the connection runs on (shown in status).
    loop_index: usize,
    max_frame: usize,
    /// The control stream, once the peer opened it.
    control: ControlStream,
    seat: Option<Seat>,
    link: Option<lanparty_core::runtime::LinkHandle>,
    data: Option<DataPath>,
    /// The seat's watcher task (room events, kicks, replacement).
    watcher: Option<tokio::task::AbortHandle>,
    leaving: bool,
    /// Datagrams taken from the connection, handed to the room outside
    /// its lock.
    inbox: Vec<Bytes>,
}

impl Session {
    /// The session of a connection past its handshake.
    pub(super) fn new(
        shared: &Shared,
        now: Instant,
        ch: ConnectionHandle,
        serial: u64,
        loop_index: usize,
        commands: mpsc::Sender<Command>,
    ) -> Session {
        let timeouts = RelayTimeouts {
            hello: shared.settings.hello_timeout.0,
            ..RelayTimeouts::default()
        };
        let max_frame = shared.settings.max_control_frame;
        Session {
            machine: RelaySession::new(now, timeouts, max_frame),
            target: (ch, serial),
            commands,
            loop_index,
            max_frame,
            control: ControlStream::default(),
            seat: None,
            link: None,
            data: None,
            watcher: None,
            leaving: false,
            inbox: Vec::with_capacity(DATAGRAM_BATCH),
        }
    }

    /// When the session's own deadline is.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.machine.poll_timeout()
    }

    /// The session's deadline may have passed.
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        if self.machine.poll_timeout().is_some_and(|t| t <= now) {
            self.machine.handle_timeout(now);
        }
    }

    /// The relay ends the session (once).
    pub(super) fn leave(&mut self, now: Instant, leave: Leave) {
        if !self.leaving {
            self.leaving = true;
            self.machine.leave(now, leave);
        }
    }

    /// A QUIC event of the connection.
    pub(super) fn event(&mut self, shared: &Shared, conn: &LoopConn, event: Event, now: Instant) {
        match event {
            Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) if self.control.id().is_none() => {
                let accepted = conn.lock().streams().accept(Dir::Bi);
                self.control.open(accepted);
                self.control
                    .read(conn, self.max_frame, &mut self.machine, now);
            }
            Event::Stream(event) => {
                self.control
                    .event(conn, self.max_frame, &mut self.machine, &event, now);
            }
            Event::DatagramReceived => self.datagrams(shared, conn, now),
            Event::ConnectionLost { reason } => {
                self.control.lost(&mut self.machine, &reason.to_string());
            }
            _ => {}
        }
    }

    /// The datagrams that have arrived, to the room in batches.
    fn datagrams(&mut self, shared: &Shared, conn: &LoopConn, now: Instant) {
        let Session {
            machine,
            seat,
            link,
            data,
            inbox,
            ..
        } = self;
        datagram_batches(conn, inbox, |first, rest| {
            if machine.handle_datagram(now)
                && let (Some(s), Some(l), Some(d)) = (&*seat, &*link, data.as_mut())
            {
                d.from_peer_batch(first, rest, &s.sender, l, &shared.counters.datapath);
            }
        });
    }

    /// A command from another task.
    pub(super) fn command(&mut self, shared: &Shared, conn: &Arc<LoopConn>, command: Command) {
        let now = Instant::now();
        match command {
            Command::Decided(_, decided) => match *decided {
                Ok(admission) => {
                    let welcome = admission.welcome;
                    self.data = Some(DataPath::new(
                        reassembly_limits(welcome.mtu),
                        Some(shared.reassembly.clone()),
                        welcome.header_compression,
                    ));
                    self.machine.welcome(now, welcome);
                    let seat = seated(shared, conn, self.loop_index, admission.seat);
                    let mut link = admission.link;
                    self.watcher = Some(watch(
                        &seat,
                        admission.events_rx,
                        link.take_closed(),
                        self.target,
                        self.commands.clone(),
                    ));
                    self.seat = Some(seat);
                    self.link = Some(link);
                }
                Err((hello, reject)) => {
                    shared.counters.rejects.add(reject.code.as_str());
                    tracing::info!(remote = %conn.remote(), room = %hello.room, role = %hello.role, mac = %hello.mac, code = %reject.code, "rejected: {}", reject.message);
                    self.machine.reject(now, reject);
                }
            },
            Command::Leave(_, leave) => self.leave(now, leave),
            Command::Message(_, message) => self.machine.send(&message),
        }
    }

    /// Carries out what the session machine asks; true once it ended.
    pub(super) fn poll(
        &mut self,
        shared: &Arc<Shared>,
        conn: &Arc<LoopConn>,
        now: Instant,
    ) -> bool {
        while let Some(event) = self.machine.poll() {
            match event {
                RelayEvent::Control(bytes) => self.control.write(conn, &bytes),
                RelayEvent::FinishControl => self.control.finish(conn),
                RelayEvent::Close { code, reason } => {
                    conn.lock().close(now, code.into(), Bytes::from(reason));
                }
                RelayEvent::Hello(mut hello) => {
                    // One room per code, whatever the case it was typed in.
                    hello.room = room_key(&hello.room);
                    let (shared, conn, commands) =
                        (shared.clone(), conn.clone(), self.commands.clone());
                    let target = self.target;
                    tokio::spawn(async move {
                        let decided = decide(&shared, conn, hello).await;
                        let command = Command::Decided(target, Box::new(decided));
                        if let Err(unsent) = commands.send(command).await {
                            unsent.0.orphaned(&shared);
                        }
                    });
                }
                RelayEvent::StatsRequested => {
                    if let (Some(s), Some(d)) = (&self.seat, &self.data) {
                        let stats = d.peer_stats(conn, &s.sender);
                        self.machine.send(&ControlMessage::Stats(stats));
                    }
                }
                RelayEvent::StatsAnswered => {
                    if let Some(s) = &self.seat {
                        s.answered.notify_waiters();
                    }
                }
                RelayEvent::ProtocolError { reason, detail } => {
                    shared.counters.protocol_errors.add(reason);
                    tracing::info!(remote = %conn.remote(), reason, "dropping peer: {detail}");
                }
                RelayEvent::Ended(why) => {
                    self.ended(shared, conn, &why);
                    return true;
                }
            }
        }
        false
    }

    /// The session is over: the seat (if any) is freed.
    fn ended(&mut self, shared: &Shared, conn: &Arc<LoopConn>, why: &str) {
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
        match self.seat.take() {
            Some(seat) => unseat(
                shared,
                conn,
                seat,
                self.link.take(),
                self.data.as_ref(),
                why,
            ),
            None => {
                tracing::debug!(remote = %conn.remote(), "session ended before admission: {why}")
            }
        }
    }

    /// The connection is gone under the session (drained before the
    /// session saw it end): it ends now.
    pub(super) fn end(mut self, shared: &Shared, conn: &Arc<LoopConn>) {
        if self.seat.is_some() || self.watcher.is_some() {
            self.ended(shared, conn, "connection gone");
        }
    }
}

/// The seat's watcher: forwards the room's events for the peer, a kick
/// (its room's policy was deleted), a replacement (the same player came
/// back) and the room's end to the loop as commands.
fn watch(
    seat: &Seat,
    mut events: mpsc::Receiver<ControlMessage>,
    room_closed: impl std::future::Future<Output = ()> + Send + 'static,
    target: Target,
    commands: mpsc::Sender<Command>,
) -> tokio::task::AbortHandle {
    let kick = seat.kick.clone();
    let replace = seat.replace.clone();
    let room = seat.hello.room.clone();
    tokio::spawn(async move {
        tokio::pin!(room_closed);
        let mut left = false;
        loop {
            let command = tokio::select! {
                message = events.recv() => match message {
                    Some(m) => Command::Message(target, m),
                    None => return,
                },
                () = replace.notified(), if !left => Command::Leave(target, Leave::Replaced),
                () = kick.notified(), if !left => Command::Leave(target, Leave::RoomClosed(room.clone())),
                () = &mut room_closed, if !left => Command::Leave(target, Leave::RoomGone),
            };
            left |= matches!(command, Command::Leave(..));
            if commands.send(command).await.is_err() {
                return;
            }
        }
    })
    .abort_handle()
}

/// The decision on a hello: the relay's state, the room's policy and
/// credentials, the MAC's owner, a stale seat, the room's admission rules.
async fn decide(
    shared: &Shared,
    conn: Arc<LoopConn>,
    hello: Hello,
) -> Result<Admission, (Hello, Reject)> {
    let refuse =
        |hello: Hello, code: RejectCode, message: String| Err((hello, Reject { code, message }));
    if shared.ctx.shutdown().is_triggered() {
        return refuse(
            hello,
            RejectCode::ShuttingDown,
            "the relay is shutting down".into(),
        );
    }
    let policy = match shared.authorize(conn.remote().ip(), &hello).await {
        Ok(policy) => policy,
        Err(reject) => return Err((hello, reject)),
    };
    if hello.role == PeerRole::Client
        && hello.validate().is_ok()
        && let Some(holder) = shared.ctx.rooms().mac_holder(&hello.room, hello.mac)
        && holder != LinkRole::Client
    {
        let message = format!(
            "MAC {} belongs to a host on the room's LAN (behind its gateway); pick another MAC for this player (ports.relay.mac and the adapter's mac)",
            hello.mac
        );
        return refuse(hello, RejectCode::DuplicateMac, message);
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
        Err(reject) => return Err((hello, reject)),
    };
    let peer = admitted.peer_id;
    let sender = PeerSender::connected(
        shared.counters.datapath.clone(),
        &shared.settings.queue,
        conn,
        hello.datagram_budget as usize,
    );
    let compression = hello.header_compression && shared.settings.header_compression;
    sender.compress(compression, shared.settings.compress_below_mbps);
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
    let welcome = Welcome {
        peer_id: peer,
        room_id: link.room_id(),
        mtu: admitted.mtu,
        header_compression: compression,
    };
    let seat = Seat {
        peer,
        hello,
        sender,
        kick: Arc::new(Notify::new()),
        replace: Arc::new(Notify::new()),
        answered: Arc::new(Notify::new()),
        events_tx,
        mtu: admitted.mtu,
        others: admitted.others,
        path_budget,
    };
    Ok(Admission {
        seat,
        link,
        events_rx,
        welcome,
    })
}

/// The welcome is on its way: the peer is listed, counted, logged and
/// told who is already in the room.
fn seated(shared: &Shared, conn: &Arc<LoopConn>, loop_index: usize, seat: Seat) -> Seat {
    shared.counters.admitted.fetch_add(1, Ordering::Relaxed);
    let hello = &seat.hello;
    shared.peers().insert(
        seat.peer,
        PeerEntry {
            room: hello.room.clone(),
            role: hello.role,
            mac: hello.mac,
            mtu: seat.mtu,
            since: Instant::now(),
            loop_index,
            conn: conn.clone(),
            sender: seat.sender.clone(),
            kick: seat.kick.clone(),
            replace: seat.replace.clone(),
            answered: seat.answered.clone(),
            events: seat.events_tx.clone(),
        },
    );
    tracing::info!(
        peer = %seat.peer, remote = %conn.remote(), room = %hello.room, role = %hello.role, mac = %hello.mac,
        mtu = seat.mtu, budget = seat.path_budget, others = seat.others.len(), "peer admitted"
    );
    for (id, role, mac) in &seat.others {
        let _ = seat.events_tx.try_send(ControlMessage::PeerJoined {
            peer_id: *id,
            role: *role,
            mac: *mac,
        });
    }
    seat
}

/// The session is over: the seat is freed, queued frames are dropped
/// (and counted), and the peer's totals are logged.
fn unseat(
    shared: &Shared,
    conn: &Arc<LoopConn>,
    seat: Seat,
    link: Option<lanparty_core::runtime::LinkHandle>,
    data: Option<&DataPath>,
    why: &str,
) {
    shared.admissions().leave(&seat.hello.room, seat.peer, why);
    shared.peers().remove(&seat.peer);
    // Frames still queued for this peer are dropped and counted (`flushed`).
    seat.sender.set_connection(None);
    drop(link);
    if let Some(data) = data {
        let stats = data.peer_stats(conn, &seat.sender);
        tracing::info!(peer = %seat.peer, room = %seat.hello.room, frames_rx = stats.frames_rx, frames_tx = stats.frames_tx, dropped = stats.dropped, "peer left: {why}");
    }
}

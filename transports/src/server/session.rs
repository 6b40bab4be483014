//! One connection's life at the relay: the handshake slot, then the
//! control session ([`RelaySession`], sans-IO) driven over quinn — the
//! hello and its decision (admission, or a reject with a code and a
//! sentence), then the admitted peer's frames and control messages until
//! the session ends.

use super::*;
use crate::control_stream::{ControlWriter, deliver, read_chunk, sleep_until};
use crate::session::{ControlInput, Leave, RelayEvent, RelaySession, RelayTimeouts};

pub(super) async fn handle(shared: &Shared, slot: HandshakeSlot, incoming: quinn::Incoming) {
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

/// An admitted peer's side of the session: its seat in the room and what
/// the relay's other parts use to reach it.
struct Seat {
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
/// control messages, which the driver waits on, and the welcome.
struct Admission {
    seat: Seat,
    link: lanparty_core::runtime::LinkHandle,
    events_rx: mpsc::Receiver<ControlMessage>,
    welcome: Welcome,
}

/// What woke the session's driver.
enum Happened {
    Stream(Result<(quinn::SendStream, quinn::RecvStream), quinn::ConnectionError>),
    Control(Result<Option<bytes::Bytes>, quinn::ReadError>),
    Datagram(Result<bytes::Bytes, quinn::ConnectionError>),
    Deadline,
    Leave(Leave),
    Event(Option<ControlMessage>),
}

/// Drives one connection's [`RelaySession`] over quinn until it ends.
pub(super) async fn established(shared: &Shared, conn: quinn::Connection) {
    let timeouts = RelayTimeouts {
        hello: shared.settings.hello_timeout.0,
        ..RelayTimeouts::default()
    };
    let max_frame = shared.settings.max_control_frame;
    let mut machine = RelaySession::new(Instant::now(), timeouts, max_frame);
    let mut writer = ControlWriter::default();
    let mut recv: Option<quinn::RecvStream> = None;
    let mut stream_taken = false;
    let mut seat: Option<Seat> = None;
    let mut events_rx: Option<mpsc::Receiver<ControlMessage>> = None;
    let mut link: Option<lanparty_core::runtime::LinkHandle> = None;
    let mut data: Option<DataPath> = None;
    let mut shutdown: ShutdownSignal = shared.ctx.shutdown();
    let mut leaving = false;
    let counters = &shared.counters.datapath;
    loop {
        while let Some(event) = machine.poll() {
            match event {
                RelayEvent::Control(bytes) => {
                    writer.write(bytes);
                }
                RelayEvent::FinishControl => writer.finish(),
                RelayEvent::Close { code, reason } => conn.close(code.into(), &reason),
                RelayEvent::Hello(mut hello) => {
                    // One room per code, whatever the case it was typed in.
                    hello.room = room_key(&hello.room);
                    match decide(shared, &conn, hello).await {
                        Ok(admission) => {
                            let welcome = admission.welcome;
                            data = Some(DataPath::new(
                                reassembly_limits(welcome.mtu),
                                Some(shared.reassembly.clone()),
                                welcome.header_compression,
                            ));
                            machine.welcome(Instant::now(), welcome);
                            seat = Some(seated(shared, &conn, admission.seat));
                            events_rx = Some(admission.events_rx);
                            link = Some(admission.link);
                        }
                        Err((hello, reject)) => {
                            shared.counters.rejects.add(reject.code.as_str());
                            tracing::info!(remote = %conn.remote_address(), room = %hello.room, role = %hello.role, mac = %hello.mac, code = %reject.code, "rejected: {}", reject.message);
                            machine.reject(Instant::now(), reject);
                        }
                    }
                }
                RelayEvent::StatsRequested => {
                    if let (Some(s), Some(d)) = (&seat, &data) {
                        machine.send(&ControlMessage::Stats(d.peer_stats(&conn, &s.sender)));
                    }
                }
                RelayEvent::StatsAnswered => {
                    if let Some(s) = &seat {
                        s.answered.notify_waiters();
                    }
                }
                RelayEvent::ProtocolError { reason, detail } => {
                    shared.counters.protocol_errors.add(reason);
                    tracing::info!(remote = %conn.remote_address(), reason, "dropping peer: {detail}");
                }
                RelayEvent::Ended(why) => {
                    if let Some(s) = seat {
                        unseat(shared, &conn, s, link.take(), data.as_ref(), &why);
                    } else {
                        tracing::debug!(remote = %conn.remote_address(), "session ended before admission: {why}");
                    }
                    return;
                }
            }
        }
        let deadline = machine.poll_timeout();
        let happened = {
            let seat_ref = seat.as_ref();
            let notified = |pick: fn(&Seat) -> &Arc<Notify>| async move {
                match seat_ref {
                    Some(s) => pick(s).notified().await,
                    None => std::future::pending().await,
                }
            };
            let room_closed = async {
                match link.as_mut() {
                    Some(l) => l.closed().await,
                    None => std::future::pending().await,
                }
            };
            let events = async {
                match events_rx.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                accepted = conn.accept_bi(), if !stream_taken => Happened::Stream(accepted),
                chunk = read_chunk(&mut recv, max_frame) => Happened::Control(chunk),
                datagram = conn.read_datagram() => Happened::Datagram(datagram),
                () = sleep_until(deadline) => Happened::Deadline,
                why = shutdown.wait(), if !leaving => Happened::Leave(Leave::Shutdown(why)),
                () = notified(|s| &s.replace), if !leaving => Happened::Leave(Leave::Replaced),
                () = notified(|s| &s.kick), if !leaving => Happened::Leave(Leave::RoomClosed(
                    seat_ref.map(|s| s.hello.room.clone()).unwrap_or_default(),
                )),
                () = room_closed, if !leaving => Happened::Leave(Leave::RoomGone),
                message = events => Happened::Event(message),
            }
        };
        let now = Instant::now();
        match happened {
            Happened::Stream(Ok((send, r))) => {
                stream_taken = true;
                writer = ControlWriter::spawn(send);
                recv = Some(r);
            }
            Happened::Stream(Err(e)) => machine.connection_lost(&e.to_string()),
            Happened::Control(read) => deliver(&mut machine, now, &mut recv, read),
            Happened::Datagram(Ok(datagram)) => {
                if machine.handle_datagram(now)
                    && let (Some(s), Some(l), Some(d)) = (&seat, &link, &mut data)
                {
                    d.from_peer_batch(datagram, &conn, &s.sender, l, counters);
                }
            }
            Happened::Datagram(Err(e)) => machine.connection_lost(&e.to_string()),
            Happened::Deadline => machine.handle_timeout(now),
            Happened::Leave(leave) => {
                leaving = true;
                machine.leave(now, leave);
            }
            Happened::Event(Some(message)) => machine.send(&message),
            // Every sender is gone: the relay is dropping this peer anyway.
            Happened::Event(None) => events_rx = None,
        }
    }
}

/// The decision on a hello: the relay's state, the room's policy and
/// credentials, the MAC's owner, a stale seat, the room's admission rules.
async fn decide(
    shared: &Shared,
    conn: &quinn::Connection,
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
    let policy = match shared.authorize(conn, &hello).await {
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
        conn.clone(),
        hello.datagram_budget as usize,
    );
    let compression = hello.header_compression && shared.settings.header_compression;
    sender.compress(compression);
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
fn seated(shared: &Shared, conn: &quinn::Connection, seat: Seat) -> Seat {
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
            conn: conn.clone(),
            sender: seat.sender.clone(),
            kick: seat.kick.clone(),
            replace: seat.replace.clone(),
            answered: seat.answered.clone(),
            events: seat.events_tx.clone(),
        },
    );
    tracing::info!(
        peer = %seat.peer, remote = %conn.remote_address(), room = %hello.room, role = %hello.role, mac = %hello.mac,
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
    conn: &quinn::Connection,
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

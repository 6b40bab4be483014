//! Frames between a QUIC connection and a room link, in both directions,
//! with every drop counted: the peer → room path, and the room → peer
//! sender with its egress scheduler (FQ-CoDel) and pump. Shared by the
//! relay and the client session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use lanparty_core::control::PeerStats;
use lanparty_core::queue::{Feed, Feeder, QueueSettings, QueueStats, Scheduler};
use lanparty_core::runtime::{LinkHandle, LinkSink, Metrics};
use lanparty_core::time::MonotonicClock;
use lanparty_core::wire::overlay::{self, OverlayError, OverlayPayload};
use serde::Serialize;
use tokio::sync::Notify;

use crate::net::DatagramEncoder;

/// Datagram counters of one port (all its connections).
#[derive(Debug, Default)]
pub struct DatapathCounters {
    /// Datagrams received.
    pub datagrams_in: AtomicU64,
    /// Datagrams sent.
    pub datagrams_out: AtomicU64,
    /// Received datagrams with a truncated overlay header.
    pub overlay_truncated: AtomicU64,
    /// Received datagrams with an unknown overlay version.
    pub overlay_unknown_version: AtomicU64,
    /// Received datagrams with an unknown overlay context.
    pub overlay_unknown_context: AtomicU64,
    /// Frames not sent because the peer's QUIC datagram send buffer was full
    /// (a slow or stalled peer).
    pub send_buffer_full: AtomicU64,
    /// Frames larger than the peer's path can carry.
    pub too_large: AtomicU64,
    /// Frames not sent because the connection was gone or datagrams are
    /// disabled.
    pub send_failed: AtomicU64,
    /// Frames for the relay dropped while no session was up (a client
    /// between reconnects).
    pub not_connected: AtomicU64,
    /// Frames the egress queue dropped because it was over its byte limit.
    pub queue_overflow: AtomicU64,
    /// Frames CoDel dropped from a standing queue.
    pub queue_codel: AtomicU64,
    /// Frames still queued when their connection went away.
    pub queue_flushed: AtomicU64,
    /// ECN-capable frames CoDel marked CE instead of dropping (sent, not
    /// dropped).
    pub queue_ce_marked: AtomicU64,
}

/// A plain copy of [`DatapathCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DatapathSnapshot {
    /// See [`DatapathCounters::datagrams_in`].
    pub datagrams_in: u64,
    /// See [`DatapathCounters::datagrams_out`].
    pub datagrams_out: u64,
    /// See [`DatapathCounters::overlay_truncated`].
    pub overlay_truncated: u64,
    /// See [`DatapathCounters::overlay_unknown_version`].
    pub overlay_unknown_version: u64,
    /// See [`DatapathCounters::overlay_unknown_context`].
    pub overlay_unknown_context: u64,
    /// See [`DatapathCounters::send_buffer_full`].
    pub send_buffer_full: u64,
    /// See [`DatapathCounters::too_large`].
    pub too_large: u64,
    /// See [`DatapathCounters::send_failed`].
    pub send_failed: u64,
    /// See [`DatapathCounters::not_connected`].
    pub not_connected: u64,
    /// See [`DatapathCounters::queue_overflow`].
    pub queue_overflow: u64,
    /// See [`DatapathCounters::queue_codel`].
    pub queue_codel: u64,
    /// See [`DatapathCounters::queue_flushed`].
    pub queue_flushed: u64,
    /// See [`DatapathCounters::queue_ce_marked`].
    pub queue_ce_marked: u64,
}

impl DatapathCounters {
    /// A snapshot.
    pub fn snapshot(&self) -> DatapathSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DatapathSnapshot {
            datagrams_in: g(&self.datagrams_in),
            datagrams_out: g(&self.datagrams_out),
            overlay_truncated: g(&self.overlay_truncated),
            overlay_unknown_version: g(&self.overlay_unknown_version),
            overlay_unknown_context: g(&self.overlay_unknown_context),
            send_buffer_full: g(&self.send_buffer_full),
            too_large: g(&self.too_large),
            send_failed: g(&self.send_failed),
            not_connected: g(&self.not_connected),
            queue_overflow: g(&self.queue_overflow),
            queue_codel: g(&self.queue_codel),
            queue_flushed: g(&self.queue_flushed),
            queue_ce_marked: g(&self.queue_ce_marked),
        }
    }
}

/// The data path counters as Prometheus samples labelled `labels`.
pub fn datapath_metrics(out: &mut Metrics, d: &DatapathSnapshot, labels: &[(&str, &str)]) {
    out.counter(
        "lanparty_datagrams_in_total",
        "QUIC datagrams received",
        labels,
        d.datagrams_in,
    );
    out.counter(
        "lanparty_datagrams_out_total",
        "QUIC datagrams sent",
        labels,
        d.datagrams_out,
    );
    for (reason, n) in [
        ("overlay-truncated", d.overlay_truncated),
        ("overlay-unknown-version", d.overlay_unknown_version),
        ("overlay-unknown-context", d.overlay_unknown_context),
        ("send-buffer-full", d.send_buffer_full),
        ("too-large", d.too_large),
        ("send-failed", d.send_failed),
        ("not-connected", d.not_connected),
        ("queue-overflow", d.queue_overflow),
        ("queue-codel", d.queue_codel),
        ("queue-flushed", d.queue_flushed),
    ] {
        let mut l = labels.to_vec();
        l.push(("reason", reason));
        out.counter(
            "lanparty_datagram_drops_total",
            "Datagrams dropped by the QUIC data path, by reason",
            &l,
            n,
        );
    }
    out.counter(
        "lanparty_queue_ce_marks_total",
        "ECN-capable frames marked congestion-experienced by the egress queue",
        labels,
        d.queue_ce_marked,
    );
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The peer → room direction of one connection.
#[derive(Debug, Default)]
pub struct DataPath {
    /// This connection's received traffic, for `stats` replies.
    pub stats: PeerStats,
}

impl DataPath {
    /// A datagram from the peer: decode the overlay and hand the frame to
    /// the room (a slice of the datagram, no copy).
    pub fn from_peer(&mut self, datagram: Bytes, link: &LinkHandle, counters: &DatapathCounters) {
        bump(&counters.datagrams_in);
        let offset = match overlay::decode(&datagram) {
            Ok(OverlayPayload::Ethernet(frame)) => datagram.len() - frame.len(),
            Err(e) => {
                self.stats.dropped += 1;
                bump(match e {
                    OverlayError::Truncated => &counters.overlay_truncated,
                    OverlayError::UnknownVersion(_) => &counters.overlay_unknown_version,
                    OverlayError::UnknownContext(_) => &counters.overlay_unknown_context,
                });
                return;
            }
        };
        self.stats.frames_rx += 1;
        self.stats.bytes_rx += (datagram.len() - offset) as u64;
        if !link.send(datagram.slice(offset..)) {
            self.stats.dropped += 1;
        }
    }

    /// The stats to answer a `stats_request` with: this direction's
    /// counters plus the sender's.
    pub fn peer_stats(&self, conn: &quinn::Connection, sender: &PeerSender) -> PeerStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PeerStats {
            rtt_us: Some(conn.rtt().as_micros() as u64),
            frames_tx: g(&sender.frames_tx),
            bytes_tx: g(&sender.bytes_tx),
            dropped: self.stats.dropped + g(&sender.dropped),
            ..self.stats
        }
    }
}

/// The room → peer direction of a connection: the room hands frames to the
/// sender (a [`LinkSink`]), which never waits. An idle path takes them
/// straight into the QUIC connection; when the path is slower than the
/// room, they wait in this connection's [`Scheduler`] (FQ-CoDel by
/// default), and a small pump task hands them on as fast as the connection
/// drains, keeping quinn's own datagram buffer short ([`Feeder`]): the
/// queue lives where the scheduler can order it, bound it and see its
/// delay. Every drop is counted.
#[derive(Debug)]
pub struct PeerSender {
    state: Mutex<SenderState>,
    counters: Arc<DatapathCounters>,
    /// `queue.quic_buffer`: each connection's feeder starts from it.
    quic_buffer: Duration,
    clock: MonotonicClock,
    /// Wakes the pump.
    wake: Arc<Notify>,
    frames_tx: AtomicU64,
    bytes_tx: AtomicU64,
    dropped: AtomicU64,
}

/// What the pump task is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pump {
    /// Nothing queued; the next queued frame must wake it.
    Idle,
    /// Woken, or sleeping until the connection has drained: a queued frame
    /// needs no wake-up.
    Busy,
}

#[derive(Debug)]
struct SenderState {
    conn: Option<quinn::Connection>,
    encoder: DatagramEncoder,
    queue: Scheduler,
    feeder: Feeder,
    /// quinn's free datagram buffer space when it holds nothing.
    empty_space: usize,
    pump: Pump,
    /// Queue counters already added to the port's counters.
    synced: QueueStats,
}

/// The `queue` key's documentation, shared by both QUIC ports.
pub const QUEUE_DOC: &str = "egress queue in front of the connection: { discipline: fq-codel | fifo, target: 5ms (CoDel's acceptable standing delay), interval: 100ms (CoDel's interval), limit: 2MiB (bytes queued at most), flows: 1024 (flow queues), ecn: true (mark CE instead of dropping ECN-capable packets), quic_buffer: 1ms (what may wait inside quinn, in sending time) }";

/// Bytes of quinn's datagram send buffer (`datagram_send_buffer_size`):
/// the most the feeder may ever keep there.
pub const QUIC_DATAGRAM_BUFFER: usize = 1024 * 1024;

impl PeerSender {
    /// A sender with no connection yet (frames are counted `not_connected`);
    /// starts its pump task on the current tokio runtime.
    pub fn new(counters: Arc<DatapathCounters>, settings: &QueueSettings) -> Arc<PeerSender> {
        let sender = Arc::new(PeerSender {
            state: Mutex::new(SenderState {
                conn: None,
                encoder: DatagramEncoder::default(),
                queue: Scheduler::new(settings, MAX_FRAME),
                feeder: new_feeder(settings.quic_buffer.0),
                empty_space: 0,
                pump: Pump::Idle,
                synced: QueueStats::default(),
            }),
            counters,
            quic_buffer: settings.quic_buffer.0,
            clock: MonotonicClock::start(),
            wake: Arc::new(Notify::new()),
            frames_tx: AtomicU64::new(0),
            bytes_tx: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        tokio::spawn(pump(Arc::downgrade(&sender), sender.wake.clone()));
        sender
    }

    /// A sender bound to `conn`.
    pub fn connected(
        counters: Arc<DatapathCounters>,
        settings: &QueueSettings,
        conn: quinn::Connection,
    ) -> Arc<PeerSender> {
        let sender = PeerSender::new(counters, settings);
        sender.set_connection(Some(conn));
        sender
    }

    /// Binds the sender to a (new) connection, or to none between sessions.
    /// Frames still queued for the old connection are dropped (`flushed`),
    /// and the new connection starts with a fresh rate measurement.
    pub fn set_connection(&self, conn: Option<quinn::Connection>) {
        let mut state = self.lock();
        state.queue.flush();
        state.feeder = new_feeder(self.quic_buffer);
        state.empty_space = conn
            .as_ref()
            .map_or(0, quinn::Connection::datagram_send_buffer_space);
        state.conn = conn;
        self.sync(&mut state);
        drop(state);
        self.wake.notify_one();
    }

    /// Frames and bytes sent, and frames dropped, so far.
    pub fn totals(&self) -> (u64, u64, u64) {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (g(&self.frames_tx), g(&self.bytes_tx), g(&self.dropped))
    }

    /// The queue's counters and backlog now, and the measured send rate in
    /// bytes per second (0 until the path was busy once).
    pub fn queue_status(&self) -> (QueueStats, u64) {
        let state = self.lock();
        (state.queue.stats(), state.feeder.rate() as u64)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SenderState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn drop_frame(&self, counter: &AtomicU64) -> bool {
        bump(&self.dropped);
        bump(counter);
        false
    }

    /// Adds the queue's new drops and marks to the port's counters.
    fn sync(&self, state: &mut SenderState) {
        let now = state.queue.stats();
        let old = std::mem::replace(&mut state.synced, now);
        let c = &*self.counters;
        for (counter, new, old) in [
            (&c.queue_overflow, now.overflow_drops, old.overflow_drops),
            (&c.queue_codel, now.codel_drops, old.codel_drops),
            (&c.queue_flushed, now.flushed, old.flushed),
            (&c.queue_ce_marked, now.ce_marks, old.ce_marks),
        ] {
            if new > old {
                counter.fetch_add(new - old, Ordering::Relaxed);
            }
        }
        let dropped = (now.overflow_drops + now.codel_drops + now.flushed)
            .saturating_sub(old.overflow_drops + old.codel_drops + old.flushed);
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
    }

    /// Hands one frame to the connection (the feeder said there is room).
    fn push(&self, state: &mut SenderState, frame: &[u8]) -> bool {
        let counters = &*self.counters;
        let SenderState {
            conn,
            encoder,
            feeder,
            ..
        } = state;
        let Some(conn) = conn else {
            return self.drop_frame(&counters.not_connected);
        };
        let need = overlay::ETHERNET_HEADER_LEN + frame.len();
        if conn.max_datagram_size().is_none_or(|max| need > max) {
            return self.drop_frame(&counters.too_large);
        }
        if conn.datagram_send_buffer_space() < need {
            return self.drop_frame(&counters.send_buffer_full);
        }
        match conn.send_datagram(encoder.encode(frame)) {
            Ok(()) => {
                feeder.pushed(need);
                bump(&self.frames_tx);
                self.bytes_tx
                    .fetch_add(frame.len() as u64, Ordering::Relaxed);
                bump(&counters.datagrams_out);
                true
            }
            Err(quinn::SendDatagramError::TooLarge) => self.drop_frame(&counters.too_large),
            Err(_) => self.drop_frame(&counters.send_failed),
        }
    }

    /// Bytes waiting in quinn's datagram buffer.
    fn occupancy(state: &SenderState) -> usize {
        state.conn.as_ref().map_or(0, |c| {
            state
                .empty_space
                .saturating_sub(c.datagram_send_buffer_space())
        })
    }

    /// Moves queued frames to the connection while the feeder allows; says
    /// how long to sleep before looking again (`None`: the queue is empty).
    fn pump_once(&self) -> Option<Duration> {
        let mut state = self.lock();
        let result = loop {
            if state.queue.is_empty() {
                state.pump = Pump::Idle;
                break None;
            }
            if state.conn.is_none() {
                state.queue.flush();
                state.pump = Pump::Idle;
                break None;
            }
            let now = self.clock.now();
            let occupancy = Self::occupancy(&state);
            match state.feeder.decide(now, occupancy) {
                Feed::Push => {
                    if let Some(frame) = state.queue.dequeue(now) {
                        self.push(&mut state, &frame);
                    }
                }
                Feed::Wait(wait) => break Some(wait),
            }
        };
        self.sync(&mut state);
        result
    }
}

/// A feeder for a new connection: no rate measured yet.
fn new_feeder(quic_buffer: Duration) -> Feeder {
    Feeder::new(quic_buffer, QUIC_DATAGRAM_BUFFER)
}

/// A full-size frame (CoDel never drops from a flow queue holding at most
/// one: its `max_packet`).
const MAX_FRAME: usize =
    lanparty_core::config::DEFAULT_MTU as usize + lanparty_core::wire::mtu::L2_OVERHEAD;

impl Drop for PeerSender {
    fn drop(&mut self) {
        // The pump holds only a weak reference: wake it so it sees that.
        self.wake.notify_one();
    }
}

/// The pump task of one sender: runs while the sender lives.
async fn pump(sender: Weak<PeerSender>, wake: Arc<Notify>) {
    let mut sleep: Option<Duration> = None;
    loop {
        match sleep {
            None => wake.notified().await,
            Some(d) => {
                tokio::select! {
                    () = tokio::time::sleep(d) => {}
                    () = wake.notified() => {}
                }
            }
        }
        let Some(sender) = sender.upgrade() else {
            return;
        };
        sleep = sender.pump_once();
    }
}

impl LinkSink for PeerSender {
    fn deliver(&self, frame: Bytes) -> bool {
        let mut state = self.lock();
        if state.conn.is_none() {
            return self.drop_frame(&self.counters.not_connected);
        }
        let now = self.clock.now();
        let occupancy = Self::occupancy(&state);
        let idle = state.queue.is_empty();
        if (idle && state.feeder.decide(now, occupancy) == Feed::Push)
            || (state.queue.flow_is_idle(&frame) && state.feeder.may_bypass(occupancy))
        {
            // Straight to the connection: the path keeps up, or this is a
            // sparse flow's frame, which fq-codel would send first anyway,
            // so it does not wait for the pump's next wake-up.
            return self.push(&mut state, &frame);
        }
        state.queue.enqueue(now, frame);
        let wake = state.pump == Pump::Idle;
        state.pump = Pump::Busy;
        self.sync(&mut state);
        drop(state);
        if wake {
            self.wake.notify_one();
        }
        true
    }
}

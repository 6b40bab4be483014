//! The room → peer direction: the sender with its egress scheduler, the
//! pump that feeds quinn, and the window credit for sparse frames.

use std::net::SocketAddr;

use lanparty_core::wire::mtu;

use super::*;

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
    pub(super) frames_tx: AtomicU64,
    pub(super) bytes_tx: AtomicU64,
    pub(super) dropped: AtomicU64,
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
    conn: Option<Arc<LoopConn>>,
    encoder: DatagramEncoder,
    /// Header compression's contexts towards this peer, when both ends
    /// agreed to it on this connection.
    compressor: Option<Compressor>,
    /// Whether frames are compressed now: only while the connection is
    /// slower than `compress_below` ([`CompressGate`]).
    compress_gate: CompressGate,
    queue: Scheduler,
    feeder: Feeder,
    /// quinn's free datagram buffer space when it holds nothing.
    empty_space: usize,
    /// The number of the next frame sent in fragments.
    next_frame_id: u32,
    /// The largest datagram the peer asked for (its hello's
    /// `datagram_budget`, or a client's own setting); the path may carry
    /// less.
    max_datagram: usize,
    pump: Pump,
    /// Queue counters already added to the port's counters.
    synced: QueueStats,
    /// What the connection's controller shares (`congestion: delay` only):
    /// window credit, granted for a sparse flow's frame while other flows
    /// are queued so that it does not wait for the window to open behind
    /// theirs, and the delivery rate, which bounds how far the feeder lets
    /// quinn's buffer grow.
    share: Option<ControllerShare>,
    /// The path's remote address when `share` was taken. quinn gives a
    /// path a new controller when the peer's address changes (it keeps
    /// the old one only for a plain IPv4 address whose IP stays, so never
    /// on a relay listening on `[::]`); the share is then taken again, or
    /// the sender would read a window that no longer moves.
    share_remote: Option<SocketAddr>,
}

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
                compressor: None,
                compress_gate: CompressGate::new(0),
                queue: Scheduler::new(settings, MAX_FRAME),
                feeder: new_feeder(settings.quic_buffer.0),
                empty_space: 0,
                next_frame_id: 0,
                max_datagram: usize::MAX,
                pump: Pump::Idle,
                synced: QueueStats::default(),
                share: None,
                share_remote: None,
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

    /// A sender bound to `conn`, sending datagrams of at most
    /// `max_datagram` bytes (fewer if the path carries fewer).
    pub fn connected(
        counters: Arc<DatapathCounters>,
        settings: &QueueSettings,
        conn: Arc<LoopConn>,
        max_datagram: usize,
    ) -> Arc<PeerSender> {
        let sender = PeerSender::new(counters, settings);
        sender.limit_datagrams(max_datagram);
        sender.set_connection(Some(conn));
        sender
    }

    /// Sends datagrams of at most `max` bytes from now on (frames larger
    /// go in fragments).
    pub fn limit_datagrams(&self, max: usize) {
        self.lock().max_datagram = max;
    }

    /// Compresses headers on this connection from now on (both ends
    /// agreed), or not; a new connection starts without. Only while the
    /// connection delivers less than `below_mbps` Mbit/s (0: at any rate).
    pub fn compress(&self, on: bool, below_mbps: u32) {
        let mut state = self.lock();
        state.compressor = on.then(Compressor::default);
        state.compress_gate = CompressGate::new(below_mbps);
    }

    /// The peer took the install of compression context `slot` at
    /// `generation`.
    pub(super) fn context_acked(&self, slot: u8, generation: u8) {
        if let Some(c) = &mut self.lock().compressor {
            c.acked(slot, generation);
        }
    }

    /// Tells the peer that its install of `slot` at `generation` was taken.
    pub(super) fn ack_context(&self, slot: u8, generation: u8) {
        let mut state = self.lock();
        let SenderState { conn, encoder, .. } = &mut *state;
        if let Some(conn) = conn
            && conn
                .send_datagram(encoder.encode_ack(slot, generation))
                .is_ok()
        {
            bump(&self.counters.datagrams_out);
        }
    }

    /// Binds the sender to a (new) connection, or to none between sessions.
    /// Frames still queued for the old connection are dropped (`flushed`),
    /// and the new connection starts with a fresh rate measurement and no
    /// header compression until [`PeerSender::compress`].
    pub fn set_connection(self: &Arc<Self>, conn: Option<Arc<LoopConn>>) {
        let mut state = self.lock();
        state.queue.flush();
        state.compressor = None;
        state.feeder = new_feeder(self.quic_buffer);
        state.empty_space = conn.as_ref().map_or(0, |c| c.send_buffer_space());
        // The new connection's controller is taken at its first frame
        // ([`Self::follow_path`]).
        state.share = None;
        state.share_remote = None;
        if let Some(conn) = &conn {
            conn.set_pump(Arc::downgrade(self) as Weak<dyn Refill>);
        }
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

    /// The queue's counters and backlog now, the send rate in bytes per
    /// second (0 until measured) and whether frames go out compressed.
    pub fn send_report(&self) -> crate::report::SendReport {
        let state = self.lock();
        crate::report::SendReport {
            queue: state.queue.stats(),
            send_rate: Self::send_rate(&state) as u64,
            compressing: state.compressor.is_some() && state.compress_gate.is_open,
        }
    }

    /// The connection's delivery rate in bytes per second (0 until
    /// measured): its controller's when it shares one — a window-bound
    /// sender keeps quinn's buffer below the feeder's allowance, so the
    /// feeder seldom measures — else the feeder's.
    fn send_rate(state: &SenderState) -> f64 {
        state
            .share
            .as_ref()
            .map_or(state.feeder.rate(), |s| s.delivery_rate())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SenderState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn drop_frame(&self, counter: &AtomicU64) -> bool {
        bump(&self.dropped);
        bump(counter);
        false
    }

    /// Adds the queue's new drops and marks to the port's counters, and
    /// tells the controller whether frames wait in the queue.
    fn sync(&self, state: &mut SenderState) {
        if let Some(share) = &state.share {
            let backlogged = !state.queue.is_empty();
            share.set_backlogged(backlogged);
            if !backlogged {
                share.set_window_bound(false);
            }
        }
        let now = state.queue.stats();
        let old = std::mem::replace(&mut state.synced, now);
        let c = &*self.counters;
        add_deltas([
            (&c.queue_overflow, now.overflow_drops, old.overflow_drops),
            (&c.queue_codel, now.codel_drops, old.codel_drops),
            (&c.queue_flushed, now.flushed, old.flushed),
            (&c.queue_ce_marked, now.ce_marks, old.ce_marks),
        ]);
        let dropped = (now.overflow_drops + now.codel_drops + now.flushed)
            .saturating_sub(old.overflow_drops + old.codel_drops + old.flushed);
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
    }

    /// Hands one frame to the connection (the feeder said there is room):
    /// in one datagram when it fits, else in as few fragments as the path's
    /// datagram size allows.
    fn push(&self, state: &mut SenderState, frame: &[u8], now: Timestamp) -> bool {
        let counters = &*self.counters;
        // The gate is asked (and the rate read) only with a compressor.
        let compress = state.compressor.is_some() && {
            let rate = Self::send_rate(state);
            state.compress_gate.open(rate)
        };
        let SenderState {
            conn,
            encoder,
            compressor,
            feeder,
            next_frame_id,
            max_datagram,
            ..
        } = state;
        let Some(conn) = conn else {
            return self.drop_frame(&counters.not_connected);
        };
        let budget = conn.max_datagram_size().unwrap_or(0).min(*max_datagram);
        let Some((count, size)) = fragment::plan(frame.len(), budget) else {
            return self.drop_frame(&counters.too_large);
        };
        let sent = if count == 1 {
            let encoding = match compressor.as_mut() {
                Some(c) if compress => c.plan(frame, now),
                _ => Encoding::Plain,
            };
            let datagram = match (encoding, compressor.as_ref()) {
                (Encoding::Compressed { slot, .. }, Some(c)) => {
                    bump(&counters.compressed_out);
                    encoder.encode_compressed(c, slot, frame)
                }
                (Encoding::Install { slot, generation }, _)
                    if overlay::ETHERNET_HEADER_LEN + compress::INSTALL_OVERHEAD + frame.len()
                        <= budget =>
                {
                    encoder.encode_install(slot, generation, frame)
                }
                _ => encoder.encode(frame),
            };
            let need = datagram.len();
            if conn.send_buffer_space() < need {
                return self.drop_frame(&counters.send_buffer_full);
            }
            conn.send_datagram(datagram).map(|()| need)
        } else {
            let need = count * fragment::FRAGMENT_HEADER_LEN + frame.len();
            if conn.send_buffer_space() < need {
                return self.drop_frame(&counters.send_buffer_full);
            }
            let id = *next_frame_id;
            *next_frame_id = id.wrapping_add(1);
            bump(&counters.fragmented_out);
            fragment::split(frame, count, size, id)
                .try_for_each(|(header, payload)| {
                    conn.send_datagram(encoder.encode_fragment(&header, payload))
                })
                .map(|()| need)
        };
        match sent {
            Ok(need) => {
                feeder.pushed(need);
                bump(&self.frames_tx);
                self.bytes_tx
                    .fetch_add(frame.len() as u64, Ordering::Relaxed);
                counters
                    .datagrams_out
                    .fetch_add(count as u64, Ordering::Relaxed);
                true
            }
            Err(DatagramRefused::TooLarge) => self.drop_frame(&counters.too_large),
            Err(DatagramRefused::Failed) => self.drop_frame(&counters.send_failed),
        }
    }

    /// Asks the feeder about the next frame, with the delivery rate the
    /// connection's controller measured and whether its window is full,
    /// when it shares them; with a controller, also waits while quinn's
    /// buffer holds what the window can send now (and tells the controller
    /// that the window, not the sender, holds the frames back).
    fn decide(state: &mut SenderState, now: Timestamp, occupancy: usize) -> Feed {
        let Some(share) = &state.share else {
            return state.feeder.decide(now, occupancy);
        };
        state.feeder.use_delivery_rate(share.delivery_rate());
        state.feeder.use_window_full(share.window_full());
        match state.feeder.decide(now, occupancy) {
            // What the window cannot send now waits here, not in quinn's
            // buffer, where every later frame would wait behind it.
            Feed::Push if !share.sends_beyond(occupancy) => {
                share.set_window_bound(true);
                Feed::Wait(lanparty_core::queue::feed::MIN_WAIT)
            }
            Feed::Push => Feed::Push,
            wait => {
                share.set_window_bound(false);
                wait
            }
        }
    }

    /// Bytes waiting in quinn's datagram buffer. Also follows the
    /// connection to the new controller of a changed path
    /// (`share_remote`).
    fn occupancy(state: &mut SenderState) -> usize {
        let SenderState {
            conn: Some(conn),
            share,
            share_remote,
            empty_space,
            ..
        } = state
        else {
            return 0;
        };
        let (space, remote) = conn.send_buffer_space_and_remote();
        Self::follow_path(share, share_remote, conn, remote);
        empty_space.saturating_sub(space)
    }

    /// Reads the controller of `conn`'s path at `remote` from now on
    /// (`share`, taken at `share_remote`), if the share in hand is of
    /// another path or there is none yet.
    fn follow_path(
        share: &mut Option<ControllerShare>,
        share_remote: &mut Option<SocketAddr>,
        conn: &LoopConn,
        remote: SocketAddr,
    ) {
        if *share_remote == Some(remote) {
            return;
        }
        if let Some(old) = share_remote {
            tracing::debug!(%old, new = %remote, "the peer's address changed: following the new path's controller");
        }
        *share = conn.controller_share();
        *share_remote = Some(remote);
    }

    /// Has the connection's loop refill quinn's buffer from the queue when
    /// half the feeder's allowance has left it, between two of its sends
    /// (the pump's timer is only the fallback: on a busy thread it fires
    /// late, and the buffer runs dry).
    fn refill_at_mark(state: &SenderState) {
        if let Some(conn) = &state.conn {
            let mark = state.feeder.allowance() / 2;
            conn.refill_at_space(state.empty_space.saturating_sub(mark));
        }
    }

    /// Moves queued frames to the connection while the feeder allows; says
    /// how long to sleep before looking again (`None`: the queue is empty).
    fn pump_once(&self) -> Option<Duration> {
        let mut state = self.lock();
        // One clock read for the whole round: it takes microseconds.
        let now = self.clock.now();
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
            let occupancy = Self::occupancy(&mut state);
            match Self::decide(&mut state, now, occupancy) {
                Feed::Push => {
                    if let Some(frame) = state.queue.dequeue(now) {
                        self.push(&mut state, &frame, now);
                    }
                }
                Feed::Wait(wait) => {
                    Self::refill_at_mark(&state);
                    break Some(wait);
                }
            }
        };
        self.sync(&mut state);
        result
    }
}

/// Header compression by the connection's rate: it pays where bytes are
/// scarce, and costs where the CPU is — on a fast path, rebuilding and
/// re-compressing every frame (a copy of each at the receiver, the relay's
/// pipeline in between) takes more than the 2.4 % of bytes it saves.
/// Closes above `below` and opens again under 4/5 of it, so that a rate
/// near the mark does not switch at every frame.
#[derive(Debug, Clone, Copy)]
struct CompressGate {
    /// Bytes per second (`f64::INFINITY`: at every rate).
    below: f64,
    is_open: bool,
}

impl CompressGate {
    /// A gate for `below_mbps` Mbit/s (0: always open).
    fn new(below_mbps: u32) -> CompressGate {
        CompressGate {
            below: match below_mbps {
                0 => f64::INFINITY,
                mbps => f64::from(mbps) * 1e6 / 8.0,
            },
            is_open: true,
        }
    }

    /// Whether to compress at `rate` bytes per second.
    fn open(&mut self, rate: f64) -> bool {
        if self.is_open && rate > self.below {
            self.is_open = false;
        } else if !self.is_open && rate < self.below * 0.8 {
            self.is_open = true;
        }
        self.is_open
    }
}

/// A feeder for a new connection: no rate measured yet. It stops
/// [`PUSH_HEADROOM`] short of quinn's buffer, so a frame it lets go fits.
fn new_feeder(quic_buffer: Duration) -> Feeder {
    Feeder::new(quic_buffer, QUIC_DATAGRAM_BUFFER - PUSH_HEADROOM)
}

/// What one push may add to quinn's buffer, at most, with room to spare:
/// the largest frame of any room, in fragments, and quinn's bookkeeping of
/// each datagram.
const PUSH_HEADROOM: usize = 2 * mtu::max_frame_len(mtu::MAX_MTU);

/// How much more than the feeder's bypass bound quinn's buffer may hold
/// in front of a sparse frame that comes with window credit: a few full
/// frames (on a slow path the allowance is smaller than one frame; those
/// bytes leave with the sparse frame instead of before it, so they are no
/// later for it).
const CREDIT_SLACK: usize = 4 * MAX_FRAME;

/// A QUIC packet's bytes around one DATAGRAM frame, at most: short header
/// (flags, up to 20 bytes of connection id, packet number), the frame's
/// type and length, the overlay header and the AEAD tag.
const PACKET_OVERHEAD: usize = 1 + 20 + 4 + 1 + 2 + overlay::ETHERNET_HEADER_LEN + 16;

/// A full-size frame (CoDel never drops from a flow queue holding at most
/// one: its `max_packet`).
const MAX_FRAME: usize = mtu::max_frame_len(lanparty_core::config::DEFAULT_MTU);

impl Refill for PeerSender {
    fn refill(&self) {
        self.pump_once();
    }
}

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
        let occupancy = Self::occupancy(&mut state);
        let idle = state.queue.is_empty();
        if idle && Self::decide(&mut state, now, occupancy) == Feed::Push {
            // Straight to the connection: the path keeps up.
            return self.push(&mut state, &frame, now);
        }
        // A sparse flow's frame, which fq-codel would send first anyway,
        // does not wait for the pump's next wake-up; while other flows are
        // queued the window is likely full, so it comes with credit for
        // itself and the bytes in front of it in quinn's buffer.
        let credit = state.share.as_ref().filter(|_| !idle);
        let slack = if credit.is_some() { CREDIT_SLACK } else { 0 };
        // Without credit, a frame goes past the queue only if the window
        // can send it now: else it would wait in quinn's buffer all the
        // same, in front of the next sparse frame.
        let window_open = credit.is_some()
            || state
                .share
                .as_ref()
                .is_none_or(|s| s.sends_beyond(occupancy));
        if window_open
            && state.queue.flow_is_idle(&frame)
            && state.feeder.may_bypass(occupancy, slack)
        {
            if let Some(credit) = credit {
                // Every datagram is a packet of its own with its header
                // and tag; the grant is spent by packet bytes.
                let datagrams = occupancy / MAX_FRAME + 2;
                let bytes = occupancy + frame.len() + datagrams * PACKET_OVERHEAD;
                credit.grant(bytes as u64);
                state.feeder.emptied_on_purpose();
            }
            return self.push(&mut state, &frame, now);
        }
        state.queue.enqueue(now, frame);
        Self::refill_at_mark(&state);
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

#[cfg(test)]
mod tests {
    use super::CompressGate;

    const MBIT: f64 = 1e6 / 8.0;

    #[test]
    fn compression_stops_above_the_mark_and_resumes_well_below_it() {
        let mut gate = CompressGate::new(200);
        assert!(gate.open(0.0), "unmeasured: compress");
        assert!(gate.open(150.0 * MBIT));
        assert!(!gate.open(250.0 * MBIT), "faster than 200 Mbit/s: whole");
        assert!(!gate.open(190.0 * MBIT), "just under the mark: still whole");
        assert!(gate.open(150.0 * MBIT), "under 4/5 of it: compressed again");
        assert!(gate.open(199.0 * MBIT));
    }

    #[test]
    fn zero_compresses_at_every_rate() {
        let mut gate = CompressGate::new(0);
        assert!(gate.open(100e9));
    }
}

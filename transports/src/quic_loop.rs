//! The parts of a one-loop QUIC driver that the relay's loop
//! (`server/driver.rs`) and a client's (`client/driver.rs`) share: the UDP
//! socket with quinn-udp's batched receive (GRO) into reused buffers of one
//! datagram each ([`DatagramSlots`]) and segmented sends (GSO),
//! a connection shared between its loop and whoever sends on it
//! ([`LoopConn`], with the refill of its datagram buffer at a low-water
//! mark between two sends), the wake-up list that tells the loop which
//! connections to look at, and a control stream read and written through
//! `quinn_proto`'s stream API.

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn_proto::{ConnectionHandle, ReadError, ReadableError, StreamEvent, StreamId};
use tokio::io::Interest;
use tokio::sync::Notify;

use crate::congestion::{ControllerShare, DelayController};
use crate::datapath::DATAGRAM_BATCH;
use crate::report::PathReport;
use crate::session::ControlInput;

/// Bytes of packets one GSO send carries at most. The kernel refuses a
/// UDP send whose segments add up to more than a 64 kB IP packet (65,507
/// bytes of UDP payload over IPv4) with EMSGSIZE, so the segment count
/// follows the path's MTU: 44 packets of 1,452 bytes, 54 of 1,200 (what it
/// gained over quinn's cap of ten: README, "64 kB per send").
pub const GSO_BYTES: usize = 65_000;
/// Bytes a connection sends per pass before the others get their turn: two
/// full GSO sends.
const TRANSMIT_BYTES_PER_PASS: usize = 2 * GSO_BYTES;
/// Receive batches per wake-up before timers and other work get a turn.
const RECEIVE_ROUNDS: usize = 8;
/// Control bytes waiting for the peer to take them, at most (beyond, the
/// peer is not reading and further messages are dropped).
const UNSENT_CONTROL_BYTES: usize = 256 * 1024;

/// What a loop has to look at: connections touched from anywhere, and
/// whether it is busy (then it sees them before sleeping, without a
/// wake-up).
#[derive(Debug, Default)]
pub struct Wake {
    dirty: Mutex<Vec<ConnectionHandle>>,
    busy: AtomicBool,
    notify: Notify,
}

impl Wake {
    /// The connections touched since the last call, into `into`.
    pub fn take(&self, into: &mut Vec<ConnectionHandle>) {
        into.clear();
        std::mem::swap(
            &mut *self.dirty.lock().unwrap_or_else(PoisonError::into_inner),
            into,
        );
    }

    /// Whether a connection was touched since the last [`Wake::take`].
    pub fn pending(&self) -> bool {
        !self
            .dirty
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// The loop is working (true) or about to sleep (false).
    pub fn set_busy(&self, busy: bool) {
        self.busy.store(busy, Ordering::SeqCst);
    }

    /// Resolves when a connection is touched while the loop sleeps.
    pub async fn touched(&self) {
        self.notify.notified().await;
    }
}

/// One connection, shared by its loop and whoever sends on it.
pub struct LoopConn {
    handle: ConnectionHandle,
    inner: Mutex<quinn_proto::Connection>,
    /// On the loop's list of connections to look at.
    queued: AtomicBool,
    wake: Arc<Wake>,
    /// Who feeds the connection's datagram buffer, and the free space at
    /// which the loop has it refill ([`LoopConn::refill_at_space`]).
    drain: Drain,
}

/// The feeder's refill at a low-water mark: the loop, which sees quinn's
/// datagram buffer drain as it sends, has the sender refill it when it has
/// drained to the mark, right there between two sends — not a timer in a
/// task of its own, which on a busy thread runs late (measured on the relay
/// under TCP: waits of at most 1 ms took 1.7–2.3 ms, and 60 % of them found
/// the buffer dry, which doubled what the feeder lets wait there).
struct Drain {
    /// Free bytes at which to refill (`usize::MAX`: nothing waits).
    at_space: std::sync::atomic::AtomicUsize,
    pump: Mutex<Option<std::sync::Weak<dyn Refill>>>,
}

impl Default for Drain {
    fn default() -> Drain {
        Drain {
            at_space: usize::MAX.into(),
            pump: Mutex::new(None),
        }
    }
}

impl Drain {
    /// Whether a buffer with `space` free bytes has drained to the mark;
    /// the mark is cleared then (one refill per mark).
    fn due(&self, space: usize) -> bool {
        // Cleared only if unchanged: a mark the sender sets meanwhile stays.
        self.at_space
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |at| {
                (at != usize::MAX && space >= at).then_some(usize::MAX)
            })
            .is_ok()
    }
}

/// Who feeds a connection's datagram buffer from a queue of its own.
pub trait Refill: Send + Sync {
    /// Moves queued frames into the connection's buffer, as far as its
    /// feeder allows. Called by the loop, never under the connection's lock.
    fn refill(&self);
}

impl std::fmt::Debug for LoopConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopConn")
            .field("handle", &self.handle.0)
            .finish_non_exhaustive()
    }
}

impl LoopConn {
    /// `conn`, known to its loop as `handle`; listed to be looked at.
    pub fn new(
        handle: ConnectionHandle,
        conn: quinn_proto::Connection,
        wake: Arc<Wake>,
    ) -> Arc<LoopConn> {
        let conn = Arc::new(LoopConn {
            handle,
            inner: Mutex::new(conn),
            queued: AtomicBool::new(false),
            wake,
            drain: Drain::default(),
        });
        conn.touched();
        conn
    }

    /// The connection's protocol state (never held across a call into
    /// the room, which may send on this same connection).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, quinn_proto::Connection> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Something changed: the loop looks at this connection (transmits,
    /// timers, events) before it sleeps next.
    pub fn touched(&self) {
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

    /// The loop is looking at it now: a later touch lists it again.
    pub fn looked_at(&self) {
        self.queued.store(false, Ordering::SeqCst);
    }

    /// Its session is over: closes it (code 0, no reason) unless the
    /// session closed it with its own, as quinn does when the last handle
    /// to a connection goes.
    pub fn close_unless_closed(&self, now: Instant) {
        let mut conn = self.lock();
        if !conn.is_closed() {
            conn.close(now, 0u32.into(), Bytes::new());
        }
    }

    /// The peer's address now.
    pub fn remote(&self) -> SocketAddr {
        self.lock().remote_address()
    }
}

/// Why a datagram was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramRefused {
    /// Larger than the path carries.
    TooLarge,
    /// The connection is gone, or the peer takes no datagrams.
    Failed,
}

/// What the data path and status use of a connection.
impl LoopConn {
    /// Queues a datagram for sending and wakes the loop (never waits; the
    /// caller checked [`LoopConn::send_buffer_space`]).
    pub fn send_datagram(&self, datagram: Bytes) -> Result<(), DatagramRefused> {
        let sent = self.lock().datagrams().send(datagram, true);
        self.touched();
        sent.map_err(|e| match e {
            quinn_proto::SendDatagramError::TooLarge => DatagramRefused::TooLarge,
            _ => DatagramRefused::Failed,
        })
    }

    /// Free bytes in the connection's datagram send buffer.
    pub fn send_buffer_space(&self) -> usize {
        self.lock().datagrams().send_buffer_space()
    }

    /// [`LoopConn::send_buffer_space`] and the path's remote address, in
    /// one look.
    pub fn send_buffer_space_and_remote(&self) -> (usize, SocketAddr) {
        let mut c = self.lock();
        (c.datagrams().send_buffer_space(), c.remote_address())
    }

    /// `pump` feeds this connection's datagram buffer: the loop calls it
    /// at the mark [`LoopConn::refill_at_space`] sets.
    pub fn set_pump(&self, pump: std::sync::Weak<dyn Refill>) {
        *self
            .drain
            .pump
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(pump);
    }

    /// Has the loop refill the datagram buffer once, as soon as it has at
    /// least `space` bytes free.
    pub fn refill_at_space(&self, space: usize) {
        self.drain.at_space.store(space, Ordering::SeqCst);
    }

    /// The connection's next packet(s) to send, as
    /// `quinn_proto::Connection::poll_transmit` gives them — after a refill
    /// of its datagram buffer when that has drained to the mark
    /// ([`LoopConn::refill_at_space`]).
    ///
    /// `max_segments` is what the socket can send in one GSO send; fewer
    /// are built where the path's MTU would take them past [`GSO_BYTES`].
    pub fn poll_transmit(
        &self,
        now: Instant,
        max_segments: usize,
        tx: &mut Vec<u8>,
    ) -> Option<quinn_proto::Transmit> {
        let mut c = self.lock();
        if self.drain.due(c.datagrams().send_buffer_space()) {
            drop(c);
            self.refill();
            c = self.lock();
        }
        let segments = gso_segments(max_segments, c.current_mtu());
        c.poll_transmit(now, segments, tx)
    }

    /// Refills the buffer (not under the connection's lock).
    fn refill(&self) {
        let pump = self
            .drain
            .pump
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(pump) = pump.and_then(|p| p.upgrade()) {
            pump.refill();
        }
    }

    /// The largest datagram the path carries now (`None`: none at all).
    pub fn max_datagram_size(&self) -> Option<usize> {
        self.lock().datagrams().max_size()
    }

    /// The smoothed round-trip time.
    pub fn rtt(&self) -> Duration {
        self.lock().rtt()
    }

    /// What the connection's controller shares with the sender, when it
    /// is lanparty's delay controller.
    pub fn controller_share(&self) -> Option<ControllerShare> {
        self.lock()
            .congestion_state()
            .clone_box()
            .into_any()
            .downcast::<DelayController>()
            .ok()
            .map(|c| c.share())
    }

    /// The path as status shows it.
    pub fn path(&self) -> PathReport {
        let conn = self.lock();
        PathReport::new(conn.remote_address(), conn.rtt(), &conn.stats().path)
    }
}

/// Packets of `mtu` bytes one GSO send carries: as many as fit in
/// [`GSO_BYTES`], at most `max_segments` (the socket's own limit), at
/// least one.
pub fn gso_segments(max_segments: usize, mtu: u16) -> usize {
    (GSO_BYTES / usize::from(mtu).max(1))
        .min(max_segments)
        .max(1)
}

/// A loop's UDP socket.
#[derive(Debug)]
pub struct Io {
    socket: tokio::net::UdpSocket,
    udp: quinn_udp::UdpSocketState,
}

impl Io {
    /// Serves `socket` (bound, non-blocking) on the current runtime.
    pub fn new(socket: std::net::UdpSocket) -> std::io::Result<Io> {
        let udp = quinn_udp::UdpSocketState::new((&socket).into())?;
        let socket = tokio::net::UdpSocket::from_std(socket)?;
        Ok(Io { socket, udp })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Whether the kernel may fragment what is sent (then QUIC's path MTU
    /// discovery is off).
    pub fn may_fragment(&self) -> bool {
        self.udp.may_fragment()
    }

    /// Resolves when datagrams may be waiting.
    pub async fn readable(&self) -> std::io::Result<()> {
        self.socket.readable().await
    }

    /// Sends an endpoint's own answer (a Retry, a refusal, a stateless
    /// reset) if the socket takes it now; dropped otherwise, like a packet
    /// lost on the way.
    pub fn respond(&self, t: &quinn_proto::Transmit, contents: &[u8]) {
        let transmit = udp_transmit(t, &contents[..t.size]);
        let _ = self.socket.try_io(Interest::WRITABLE, || {
            self.udp.send((&self.socket).into(), &transmit)
        });
    }

    /// Sends one transmit, waiting while the socket's buffer is full.
    async fn send(&self, t: &quinn_proto::Transmit, contents: &[u8]) {
        let transmit = udp_transmit(t, &contents[..t.size]);
        loop {
            if self.socket.writable().await.is_err() {
                return;
            }
            match self.socket.try_io(Interest::WRITABLE, || {
                self.udp.send((&self.socket).into(), &transmit)
            }) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    tracing::debug!("QUIC socket send failed: {e}");
                    return;
                }
                Ok(()) => return,
            }
        }
    }

    /// Sends what `conn` has to send now, at most
    /// `TRANSMIT_BYTES_PER_PASS` (then it is listed again for the loop's
    /// next round).
    ///
    /// The socket's GSO limit is read at every send: quinn-udp lowers it
    /// to one for good when the kernel or the device refuses a segmented
    /// send.
    pub async fn transmit(&self, conn: &LoopConn, tx: &mut Vec<u8>, now: Instant) {
        let mut sent = 0;
        loop {
            tx.clear();
            let Some(t) = conn.poll_transmit(now, self.udp.max_gso_segments(), tx) else {
                return;
            };
            sent += t.size;
            self.send(&t, tx).await;
            if sent >= TRANSMIT_BYTES_PER_PASS {
                conn.touched();
                return;
            }
        }
    }
}

/// Receive buffers: one batch of messages of up to a GRO batch each.
pub struct RecvBuffers {
    rx: Box<[u8]>,
    slot: usize,
    meta: Vec<quinn_udp::RecvMeta>,
    datagrams: DatagramSlots,
}

impl std::fmt::Debug for RecvBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBuffers")
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

/// Buffers for received datagrams, taken in turn and used again once
/// nothing holds a piece of them any more: no allocation per datagram once
/// the ring has been round. A buffer still held (its frame waits in a
/// queue) is never written over: a datagram that fits in what is left
/// after the held bytes goes there, else the slot gets a new buffer and
/// the old one is its holders' alone.
///
/// One buffer per datagram, not one for a whole batch: every frame a
/// datagram carries is a slice of its buffer and keeps all of it alive
/// while it waits in a queue. Sharing one buffer, a frame queued for a
/// slow peer held up to 64 kB (a GRO batch of 45 datagrams, the others
/// long forwarded), so a hostile peer could make a queue counted at 2 MiB
/// of frames (the limit then) hold a gigabyte; alone, a frame holds at most
/// its own datagram.
#[derive(Debug)]
pub struct DatagramSlots {
    slots: Box<[BytesMut]>,
    next: usize,
}

/// Datagram buffers a loop keeps for reuse: more than the datagrams a
/// relay typically has in flight (received, queued for a peer, not yet
/// encoded) under a saturating download; about 1.5 MB once all are used.
pub const DATAGRAM_SLOTS: usize = 1024;
/// The smallest buffer a slot allocates: a full-size Ethernet frame's
/// datagram fits, so slots are not replaced as sizes vary.
const SLOT_BYTES: usize = 1536;

impl DatagramSlots {
    /// `count` slots (at least one), none allocated yet.
    pub fn new(count: usize) -> DatagramSlots {
        DatagramSlots {
            slots: (0..count.max(1)).map(|_| BytesMut::new()).collect(),
            next: 0,
        }
    }

    /// A copy of `datagram` in the next slot's buffer (in its free room,
    /// all of it once nothing holds the buffer, else a new buffer), for
    /// `quinn_proto` to decrypt in place.
    pub fn copy(&mut self, datagram: &[u8]) -> BytesMut {
        let at = self.next;
        self.next = (at + 1) % self.slots.len();
        let slot = &mut self.slots[at];
        if !slot.try_reclaim(datagram.len()) {
            *slot = BytesMut::with_capacity(datagram.len().max(SLOT_BYTES));
        }
        slot.extend_from_slice(datagram);
        slot.split()
    }
}

/// One received message: where from, to which local address, its ECN
/// mark, and its bytes (a GRO batch of datagrams `stride` bytes apart).
#[derive(Debug)]
pub struct Received<'a> {
    /// The sender.
    pub remote: SocketAddr,
    /// The local address it was sent to.
    pub local: Option<std::net::IpAddr>,
    /// Its ECN codepoint.
    pub ecn: Option<quinn_proto::EcnCodepoint>,
    /// The bytes: one datagram, or several `stride` bytes apart.
    pub bytes: &'a [u8],
    /// The size of each datagram but the last.
    pub stride: usize,
    /// Where its datagrams are copied to.
    pub slots: &'a mut DatagramSlots,
}

impl Received<'_> {
    /// Its datagrams, each copied once into a buffer of its own
    /// ([`DatagramSlots`]) that `quinn_proto` decrypts in place and hands
    /// out in slices.
    pub fn datagrams(&mut self) -> impl Iterator<Item = BytesMut> + use<'_> {
        let slots = &mut *self.slots;
        self.bytes
            .chunks(self.stride.max(1))
            .map(move |d| slots.copy(d))
    }
}

/// The datagrams that have arrived on `conn`, taken out under its lock in
/// batches of up to [`DATAGRAM_BATCH`] (into `inbox`) and handed to `batch`
/// outside it: the first, and a source of the rest.
pub fn datagram_batches(
    conn: &LoopConn,
    inbox: &mut Vec<Bytes>,
    mut batch: impl FnMut(Bytes, &mut dyn FnMut() -> Option<Bytes>),
) {
    loop {
        {
            let mut c = conn.lock();
            let mut datagrams = c.datagrams();
            while inbox.len() < DATAGRAM_BATCH {
                match datagrams.recv() {
                    Some(d) => inbox.push(d),
                    None => break,
                }
            }
        }
        let full = inbox.len() == DATAGRAM_BATCH;
        let mut rest = inbox.drain(..);
        let Some(first) = rest.next() else {
            return;
        };
        batch(first, &mut || rest.next());
        drop(rest);
        if !full {
            return;
        }
    }
}

/// Passes the connection's events for its endpoint (new connection IDs,
/// its end) to `endpoint`, and the endpoint's answers back.
pub fn exchange(
    endpoint: &mut quinn_proto::Endpoint,
    handle: ConnectionHandle,
    conn: &mut quinn_proto::Connection,
) {
    while let Some(event) = conn.poll_endpoint_events() {
        if let Some(back) = endpoint.handle_event(handle, event) {
            conn.handle_event(back);
        }
    }
}

impl RecvBuffers {
    /// Buffers for `io`, for datagrams of up to `max_udp_payload` bytes.
    pub fn new(io: &Io, max_udp_payload: u16) -> RecvBuffers {
        let slot = usize::from(max_udp_payload) * io.udp.gro_segments().max(1);
        RecvBuffers {
            rx: vec![0u8; slot * quinn_udp::BATCH_SIZE].into_boxed_slice(),
            slot,
            meta: vec![quinn_udp::RecvMeta::default(); quinn_udp::BATCH_SIZE],
            datagrams: DatagramSlots::new(DATAGRAM_SLOTS),
        }
    }

    /// Receives what is waiting (at most `RECEIVE_ROUNDS` (8) batches) and
    /// hands each message to `each`; an error other than "nothing more"
    /// ends the round and is returned.
    ///
    /// A batch that comes back short found the socket drained: the round
    /// ends there and the socket's readiness is cleared with it, with no
    /// second call that only says "nothing more" (one system call less per
    /// wake-up; a datagram that arrives meanwhile is a new edge of the
    /// edge-triggered poll, so it still wakes the loop).
    pub fn receive(&mut self, io: &Io, mut each: impl FnMut(Received<'_>)) -> std::io::Result<()> {
        for _ in 0..RECEIVE_ROUNDS {
            let mut bufs: [IoSliceMut; quinn_udp::BATCH_SIZE] = {
                let mut slots = self.rx.chunks_mut(self.slot);
                std::array::from_fn(|_| IoSliceMut::new(slots.next().unwrap_or_default()))
            };
            let mut short = 0;
            let received = io.socket.try_io(Interest::READABLE, || {
                let n = io
                    .udp
                    .recv((&io.socket).into(), &mut bufs, &mut self.meta)?;
                if n < quinn_udp::BATCH_SIZE {
                    // Reported as "nothing more" so that tokio clears the
                    // readiness; the `n` messages are handed on below.
                    short = n;
                    return Err(std::io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            let (n, last) = match received {
                Ok(n) => (n, false),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => (short, true),
                // Undefined in QUIC, and anyone may cause one.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => continue,
                Err(e) => return Err(e),
            };
            for (m, buf) in self.meta.iter().zip(bufs.iter()).take(n) {
                each(Received {
                    remote: m.addr,
                    local: m.dst_ip,
                    ecn: m
                        .ecn
                        .and_then(|e| quinn_proto::EcnCodepoint::from_bits(e as u8)),
                    bytes: &buf[..m.len],
                    stride: m.stride,
                    slots: &mut self.datagrams,
                });
            }
            if last {
                return Ok(());
            }
        }
        Ok(())
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

/// The control stream of a connection in a loop: read into a session
/// machine, written from it, in order, without ever waiting on the peer.
#[derive(Debug, Default)]
pub struct ControlStream {
    id: Option<StreamId>,
    /// The peer may still send on it.
    reading: bool,
    /// Bytes the stream has not taken yet.
    unsent: Vec<u8>,
    /// Finish the stream once `unsent` is written.
    finish: bool,
    /// Nothing more is written (finished, stopped or failed).
    write_closed: bool,
}

impl ControlStream {
    /// The stream is `id` (opened by us or accepted from the peer).
    pub fn open(&mut self, id: Option<StreamId>) {
        self.id = id;
        self.reading = id.is_some();
    }

    /// The stream, once there is one.
    pub fn id(&self) -> Option<StreamId> {
        self.id
    }

    /// Whatever the stream has, to `session` (chunks of at most `max`).
    pub fn read(
        &mut self,
        conn: &LoopConn,
        max: usize,
        session: &mut impl ControlInput,
        now: Instant,
    ) {
        let (Some(id), true) = (self.id, self.reading) else {
            return;
        };
        let mut c = conn.lock();
        let mut stream = c.recv_stream(id);
        let mut chunks = match stream.read(true) {
            Ok(chunks) => chunks,
            Err(ReadableError::ClosedStream | ReadableError::IllegalOrderedRead) => return,
        };
        loop {
            match chunks.next(max) {
                Ok(Some(chunk)) => session.handle_control(now, &chunk.bytes),
                Ok(None) => {
                    self.reading = false;
                    session.handle_control_finished(now);
                    break;
                }
                Err(ReadError::Blocked) => break,
                Err(ReadError::Reset(code)) => {
                    self.reading = false;
                    session.connection_lost(&format!("stream reset by peer: error {code}"));
                    break;
                }
            }
        }
        // Flow control credit goes out with the loop's transmit.
        let _ = chunks.finalize();
    }

    /// Queues bytes for the peer.
    pub fn write(&mut self, conn: &LoopConn, bytes: &[u8]) {
        if self.write_closed {
            return;
        }
        if self.unsent.len() + bytes.len() > UNSENT_CONTROL_BYTES {
            tracing::debug!(remote = %conn.remote(), "control message dropped: the peer does not read its control stream");
            return;
        }
        self.unsent.extend_from_slice(bytes);
        self.write_out(conn);
    }

    /// Finishes the stream once what is queued is written.
    pub fn finish(&mut self, conn: &LoopConn) {
        self.finish = true;
        self.write_out(conn);
    }

    /// A stream event of the connection, if it concerns this stream:
    /// what arrived goes to `session`, what waits is written, a stop ends
    /// the writing.
    pub fn event(
        &mut self,
        conn: &LoopConn,
        max: usize,
        session: &mut impl ControlInput,
        event: &StreamEvent,
        now: Instant,
    ) {
        let mine = |id: &StreamId| Some(*id) == self.id;
        match event {
            StreamEvent::Readable { id } if mine(id) => self.read(conn, max, session, now),
            StreamEvent::Writable { id } if mine(id) => self.write_out(conn),
            StreamEvent::Stopped { id, .. } if mine(id) => {
                self.write_closed = true;
                self.unsent.clear();
            }
            _ => {}
        }
    }

    /// The connection is gone (`why`): nothing more is read, and `session`
    /// is told.
    pub fn lost(&mut self, session: &mut impl ControlInput, why: &str) {
        self.reading = false;
        session.connection_lost(why);
    }

    /// Writes what the stream takes now, and finishes it when asked and
    /// everything is written.
    pub fn write_out(&mut self, conn: &LoopConn) {
        let Some(id) = self.id.filter(|_| !self.write_closed) else {
            return;
        };
        let mut c = conn.lock();
        let mut stream = c.send_stream(id);
        while !self.unsent.is_empty() {
            match stream.write(&self.unsent) {
                Ok(n) => {
                    self.unsent.drain(..n);
                }
                Err(quinn_proto::WriteError::Blocked) => return,
                Err(e) => {
                    tracing::debug!("control stream write failed: {e}");
                    self.unsent.clear();
                    self.write_closed = true;
                    return;
                }
            }
        }
        if self.finish {
            let _ = stream.finish();
            self.write_closed = true;
        }
    }
}

/// Sleeps until `deadline`; never without one.
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// The earlier of two optional instants.
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests;

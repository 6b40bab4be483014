//! Rooms at run time: created on the first link, dropped after the last
//! one leaves. On a one-thread runtime a room's pipeline runs in the task of
//! the port whose frame it is processing (run to completion); each room
//! also has a task for commands, its tick, and queued frames (all frames on
//! a multi-threaded runtime).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::RuntimeSettings;
use crate::pipeline::{Pipeline, PipelineStats, PipelineTemplate};
use crate::stage::{LinkId, LinkInfo, LinkRole};
use crate::time::MonotonicClock;
use crate::wire::MacAddr;
use crate::wire::ethernet::EthernetHeader;

/// Traffic counters of one link, shared by its port and its room.
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Frames the port handed to the room.
    pub rx_frames: AtomicU64,
    /// Bytes of those frames.
    pub rx_bytes: AtomicU64,
    /// Frames the port received but the room's queue was full.
    pub rx_queue_full: AtomicU64,
    /// Frames the room routed to this link and queued for the port.
    pub tx_frames: AtomicU64,
    /// Bytes of those frames.
    pub tx_bytes: AtomicU64,
    /// Frames routed to this link while its queue was full (a slow link).
    pub tx_queue_full: AtomicU64,
}

/// A plain copy of [`LinkCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkCountersSnapshot {
    /// See [`LinkCounters::rx_frames`].
    pub rx_frames: u64,
    /// See [`LinkCounters::rx_bytes`].
    pub rx_bytes: u64,
    /// See [`LinkCounters::rx_queue_full`].
    pub rx_queue_full: u64,
    /// See [`LinkCounters::tx_frames`].
    pub tx_frames: u64,
    /// See [`LinkCounters::tx_bytes`].
    pub tx_bytes: u64,
    /// See [`LinkCounters::tx_queue_full`].
    pub tx_queue_full: u64,
}

impl LinkCounters {
    /// A snapshot.
    pub fn snapshot(&self) -> LinkCountersSnapshot {
        LinkCountersSnapshot {
            rx_frames: self.rx_frames.load(Ordering::Relaxed),
            rx_bytes: self.rx_bytes.load(Ordering::Relaxed),
            rx_queue_full: self.rx_queue_full.load(Ordering::Relaxed),
            tx_frames: self.tx_frames.load(Ordering::Relaxed),
            tx_bytes: self.tx_bytes.load(Ordering::Relaxed),
            tx_queue_full: self.tx_queue_full.load(Ordering::Relaxed),
        }
    }
}

/// A port end that takes frames synchronously from the room, in place of
/// the link's queue: one task wake-up less per frame. The relay and the
/// QUIC client use it to hand frames straight to their connection, whose
/// datagram send buffer is the bounded per-peer queue; the TAP port writes
/// them straight to its device.
///
/// `deliver` runs wherever the room runs (the sending port's task or the
/// room's own): it must never block or wait.
pub trait LinkSink: Send + Sync + std::fmt::Debug {
    /// Takes one frame routed to the link; false when it was dropped (the
    /// room counts it as `tx_queue_full`, the sink says why in its own
    /// counters).
    fn deliver(&self, frame: Bytes) -> bool;
}

/// What a port says about a link it attaches.
#[derive(Debug, Clone)]
pub struct LinkSpec {
    /// Name for logs and status (e.g. `tap0` or `relay/peer#3`).
    pub name: String,
    /// What is behind the link.
    pub role: LinkRole,
    /// The link's MAC(s).
    pub macs: Vec<MacAddr>,
    /// The link's MTU; `None` means the room's.
    pub mtu: Option<u16>,
    /// Where the room delivers frames for this link: `None` queues them for
    /// [`LinkHandle::recv`]; a sink takes them directly.
    pub sink: Option<Arc<dyn LinkSink>>,
}

enum RoomCommand {
    Attach { info: LinkInfo, output: LinkOutput },
    Detach(LinkId),
    SetMtu(u16),
    Retune(PipelineTemplate),
    Capture(mpsc::Sender<CapturedFrame>),
    Stats(oneshot::Sender<RoomStats>),
}

/// The tracing target of per-frame debug logs: enable them with
/// `--log-level info,lanparty::frames=debug`.
pub const FRAME_LOG: &str = "lanparty::frames";

/// A frame as it entered a room, for a live capture.
#[derive(Debug, Clone)]
pub struct CapturedFrame {
    /// When the room took it.
    pub at: std::time::SystemTime,
    /// The link it came from.
    pub link: LinkId,
    /// That link's name.
    pub link_name: Arc<str>,
    /// The frame.
    pub frame: Bytes,
}

/// A room's state, for status and tests.
#[derive(Debug, Clone, Serialize)]
pub struct RoomStats {
    /// The room code (`default` on a client or gateway).
    pub room: String,
    /// The room instance id.
    pub room_id: u64,
    /// The room MTU.
    pub mtu: u16,
    /// Frames dropped because the room's queue was full.
    pub queue_full: u64,
    /// Live captures running now.
    pub captures: usize,
    /// Frames live captures could not take (a slow reader).
    pub capture_dropped: u64,
    /// Links with their counters.
    pub links: Vec<LinkStats>,
    /// The pipeline's counters.
    pub pipeline: PipelineStats,
}

/// One link's state.
#[derive(Debug, Clone, Serialize)]
pub struct LinkStats {
    /// Its id.
    pub id: LinkId,
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: LinkRole,
    /// Its MACs.
    pub macs: Vec<MacAddr>,
    /// Its counters.
    pub counters: LinkCountersSnapshot,
}

struct RoomEntry {
    core: SharedRoom,
    run_to_completion: bool,
    room_id: u64,
    control: mpsc::UnboundedSender<RoomCommand>,
    frames: mpsc::Sender<(LinkId, Bytes)>,
    queue_full: Arc<AtomicU64>,
    mtu: watch::Sender<u16>,
    links: usize,
}

/// Every room of a node.
pub struct Rooms {
    template: PipelineTemplate,
    /// Templates of rooms with a policy, by room code.
    room_templates: Mutex<HashMap<Arc<str>, PipelineTemplate>>,
    settings: RuntimeSettings,
    clock: MonotonicClock,
    rooms: Mutex<HashMap<Arc<str>, RoomEntry>>,
    next_link: AtomicU32,
    next_room: AtomicU64,
}

impl Rooms {
    /// A node's room table. Rooms are spawned on the current tokio runtime.
    pub fn new(template: PipelineTemplate, settings: RuntimeSettings) -> Arc<Rooms> {
        Arc::new(Rooms {
            template,
            room_templates: Mutex::new(HashMap::new()),
            settings,
            clock: MonotonicClock::start(),
            rooms: Mutex::new(HashMap::new()),
            next_link: AtomicU32::new(1),
            next_room: AtomicU64::new(1),
        })
    }

    /// The runtime settings.
    pub fn settings(&self) -> RuntimeSettings {
        self.settings
    }

    /// The MTU of the room template (the relay's ceiling for new rooms).
    pub fn template_mtu(&self) -> u16 {
        self.template.mtu()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, RoomEntry>> {
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Attaches a link to `room`, creating the room if needed.
    pub fn attach(self: &Arc<Self>, room: &str, spec: LinkSpec) -> LinkHandle {
        let id = LinkId(self.next_link.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel(self.settings.link_queue);
        let counters = Arc::new(LinkCounters::default());
        let mut rooms = self.lock();
        let key: Arc<str> = Arc::from(room);
        let entry = rooms
            .entry(key.clone())
            .or_insert_with(|| self.spawn_room(&key));
        let info = LinkInfo {
            id,
            name: spec.name.into(),
            role: spec.role,
            macs: spec.macs,
            mtu: spec.mtu.unwrap_or(self.template.mtu()),
        };
        tracing::debug!(room, link = %id, name = %info.name, role = %info.role, "link attached");
        // The worker lives as long as the entry; a send cannot fail here.
        let _ = entry.control.send(RoomCommand::Attach {
            info,
            output: LinkOutput {
                id,
                queue: tx,
                sink: spec.sink,
                counters: counters.clone(),
            },
        });
        entry.links += 1;
        LinkHandle {
            id,
            room: key,
            room_id: entry.room_id,
            core: entry.core.clone(),
            run_to_completion: entry.run_to_completion,
            to_room: entry.frames.clone(),
            room_queue_full: entry.queue_full.clone(),
            mtu: entry.mtu.subscribe(),
            from_room: rx,
            counters,
            rooms: self.clone(),
        }
    }

    fn spawn_room(&self, room: &Arc<str>) -> RoomEntry {
        let room_id = self.next_room.fetch_add(1, Ordering::Relaxed);
        let (control, control_rx) = mpsc::unbounded_channel();
        let (frames, frames_rx) = mpsc::channel(self.settings.room_queue);
        let queue_full = Arc::new(AtomicU64::new(0));
        let core = Arc::new(Mutex::new(RoomCore {
            room: room.clone(),
            room_id,
            pipeline: self.template_for(room).instantiate(room),
            outputs: Vec::new(),
            clock: self.clock,
            batch_limit: self.settings.batch,
            queue_full: queue_full.clone(),
            captures: Vec::new(),
            capture_dropped: 0,
            control: control_rx,
            frames: frames_rx,
            open: true,
            out: Vec::with_capacity(64),
        }));
        tracing::info!(room = %room, room_id, "room created");
        tokio::spawn(run_room(core.clone()));
        let run_to_completion = tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::CurrentThread;
        RoomEntry {
            core,
            run_to_completion,
            room_id,
            control,
            frames,
            queue_full,
            mtu: watch::Sender::new(self.template.mtu()),
            links: 0,
        }
    }

    fn template_for(&self, room: &str) -> PipelineTemplate {
        self.room_templates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(room)
            .unwrap_or(&self.template)
            .clone()
    }

    /// Gives `room` its own template (its policy), or back the node's
    /// (`None`). A room that exists now is retuned at once: its filters are
    /// rebuilt, its links, MAC table and MTU stay.
    pub fn set_room_template(&self, room: &str, template: Option<PipelineTemplate>) {
        {
            let mut templates = self
                .room_templates
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match template {
                Some(t) => templates.insert(Arc::from(room), t),
                None => templates.remove(room),
            };
        }
        if let Some(entry) = self.lock().get(room) {
            let _ = entry
                .control
                .send(RoomCommand::Retune(self.template_for(room)));
        }
    }

    /// The role of the link that has `mac` in `room` now (a client that
    /// owns it, or the link the room's switch learned it on), if any. The
    /// relay asks before admitting a player's MAC.
    pub fn mac_holder(&self, room: &str, mac: MacAddr) -> Option<LinkRole> {
        let core = self.lock().get(room)?.core.clone();
        let mut core = lock_room(&core);
        core.apply_commands();
        let now = core.clock.now();
        core.pipeline.mac_holder(mac, now).map(|link| link.role)
    }

    fn detach(&self, room: &Arc<str>, id: LinkId) {
        let mut rooms = self.lock();
        let Some(entry) = rooms.get_mut(room) else {
            return;
        };
        let _ = entry.control.send(RoomCommand::Detach(id));
        entry.links = entry.links.saturating_sub(1);
        if entry.links == 0 {
            tracing::info!(room = %room, room_id = entry.room_id, "last link left; room dropped");
            rooms.remove(room);
        }
    }

    /// Sets a room's MTU (before frames flow).
    pub fn set_mtu(&self, room: &str, mtu: u16) {
        if let Some(entry) = self.lock().get(room) {
            let _ = entry.control.send(RoomCommand::SetMtu(mtu));
            entry.mtu.send_replace(mtu);
        }
    }

    /// Starts a live capture of every frame entering `room`; `None` when
    /// the room does not exist. The capture ends when the receiver is
    /// dropped; frames it cannot take at once are dropped (the capture
    /// never slows the room) and counted in the room's `capture_dropped`.
    pub fn capture(&self, room: &str, queue: usize) -> Option<mpsc::Receiver<CapturedFrame>> {
        let rooms = self.lock();
        let entry = rooms.get(room)?;
        let (tx, rx) = mpsc::channel(queue.max(1));
        entry.control.send(RoomCommand::Capture(tx)).ok()?;
        Some(rx)
    }

    /// Names of the rooms that exist now.
    pub fn room_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().keys().map(|k| k.to_string()).collect();
        names.sort();
        names
    }

    /// A snapshot of every room.
    pub async fn stats(&self) -> Vec<RoomStats> {
        let waiting: Vec<_> = self
            .lock()
            .values()
            .filter_map(|entry| {
                let (tx, rx) = oneshot::channel();
                entry.control.send(RoomCommand::Stats(tx)).ok().map(|_| rx)
            })
            .collect();
        let mut out = Vec::new();
        for rx in waiting {
            if let Ok(stats) = rx.await {
                out.push(stats);
            }
        }
        out.sort_by(|a, b| a.room.cmp(&b.room));
        out
    }
}

/// A port's end of one link.
pub struct LinkHandle {
    id: LinkId,
    room: Arc<str>,
    room_id: u64,
    core: SharedRoom,
    /// Whether frames are processed in the sending task (one-thread runtime).
    run_to_completion: bool,
    to_room: mpsc::Sender<(LinkId, Bytes)>,
    room_queue_full: Arc<AtomicU64>,
    mtu: watch::Receiver<u16>,
    from_room: mpsc::Receiver<Bytes>,
    counters: Arc<LinkCounters>,
    rooms: Arc<Rooms>,
}

impl LinkHandle {
    /// The link's id.
    pub fn id(&self) -> LinkId {
        self.id
    }

    /// The room code.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// The room instance id.
    pub fn room_id(&self) -> u64 {
        self.room_id
    }

    /// Hands a received frame to the room. Never waits. On a one-thread
    /// runtime the frame is processed and delivered right here, in the
    /// caller's task (unless frames queued earlier must go first); on a
    /// multi-threaded runtime it joins the room's queue for the room's task.
    /// When that queue is full (or the room is gone) the frame is dropped,
    /// counted, and false returned.
    pub fn send(&self, frame: Bytes) -> bool {
        let len = frame.len() as u64;
        let direct = if !self.run_to_completion {
            Direct::Queue(frame)
        } else {
            match self.core.try_lock() {
                Ok(mut core) => core.direct(self.id, frame),
                Err(std::sync::TryLockError::Poisoned(poisoned)) => {
                    poisoned.into_inner().direct(self.id, frame)
                }
                Err(std::sync::TryLockError::WouldBlock) => Direct::Queue(frame),
            }
        };
        let taken = match direct {
            Direct::Processed => true,
            Direct::Queue(frame) => self.to_room.try_send((self.id, frame)).is_ok(),
            Direct::Closed => false,
        };
        if taken {
            self.counters.rx_frames.fetch_add(1, Ordering::Relaxed);
            self.counters.rx_bytes.fetch_add(len, Ordering::Relaxed);
        } else {
            self.counters.rx_queue_full.fetch_add(1, Ordering::Relaxed);
            self.room_queue_full.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// The next frame the room routed to this link; `None` once the room is
    /// gone.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.from_room.recv().await
    }

    /// Waits until the room is gone. A link with a sink gets no frames
    /// through its queue; the queue's end is how its port learns that the
    /// room closed.
    pub async fn closed(&mut self) {
        while self.from_room.recv().await.is_some() {}
    }

    /// Receives up to `limit` frames into `buf` (waiting for at least one);
    /// returns how many, 0 once the room is gone.
    pub async fn recv_many(&mut self, buf: &mut Vec<Bytes>, limit: usize) -> usize {
        self.from_room.recv_many(buf, limit).await
    }

    /// A frame routed to this link, if one is waiting.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        self.from_room.try_recv().ok()
    }

    /// The link's counters.
    pub fn counters(&self) -> &Arc<LinkCounters> {
        &self.counters
    }

    /// The room's MTU, updated when a port sets it (a TAP device follows
    /// the MTU the relay's welcome gave the QUIC client).
    pub fn mtu(&self) -> watch::Receiver<u16> {
        self.mtu.clone()
    }

    /// Sets the room's MTU (a client learns it from the relay's welcome).
    pub fn set_room_mtu(&self, mtu: u16) {
        self.rooms.set_mtu(&self.room, mtu);
    }
}

impl Drop for LinkHandle {
    fn drop(&mut self) {
        tracing::debug!(room = %self.room, link = %self.id, "link detached");
        self.rooms.detach(&self.room, self.id);
    }
}

/// Where the room puts a link's frames. The queue's sender is kept even
/// with a sink: dropping it is how the port learns the room is gone.
struct LinkOutput {
    id: LinkId,
    queue: mpsc::Sender<Bytes>,
    sink: Option<Arc<dyn LinkSink>>,
    counters: Arc<LinkCounters>,
}

/// A room's state, shared by its links and its task.
///
/// On a one-thread runtime frames run to completion: the port that received
/// a frame processes it right away, in its own task ([`LinkHandle::send`]),
/// with no task switch between the port and the room (the room is never
/// held across a wake-up there, so the port always finds it free). On a
/// multi-threaded runtime ports queue frames for the room's task, which
/// processes them in batches: ports on other threads never wait for the
/// room's lock (a thread preempted while holding it would stall them all).
type SharedRoom = Arc<Mutex<RoomCore>>;

fn lock_room(room: &SharedRoom) -> std::sync::MutexGuard<'_, RoomCore> {
    room.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether per-frame debug logs are on; checked once per frame or batch,
/// so they cost nothing when off.
fn frame_logs_enabled() -> bool {
    tracing::enabled!(target: FRAME_LOG, tracing::Level::DEBUG)
}

/// What became of a frame a port offered the room directly.
enum Direct {
    /// Processed (routed or dropped by a filter, and counted).
    Processed,
    /// Frames queued before it are still waiting; it must queue behind them.
    Queue(Bytes),
    /// The room is gone.
    Closed,
}

struct RoomCore {
    room: Arc<str>,
    room_id: u64,
    pipeline: Pipeline,
    /// Sorted by link id.
    outputs: Vec<LinkOutput>,
    clock: MonotonicClock,
    batch_limit: usize,
    queue_full: Arc<AtomicU64>,
    captures: Vec<mpsc::Sender<CapturedFrame>>,
    capture_dropped: u64,
    control: mpsc::UnboundedReceiver<RoomCommand>,
    frames: mpsc::Receiver<(LinkId, Bytes)>,
    /// False once the room table dropped the room.
    open: bool,
    out: Vec<(LinkId, Bytes)>,
}

impl RoomCore {
    /// One structured debug line per frame (target `lanparty::frames`).
    fn log_frame(
        &self,
        link: LinkId,
        header: Option<&EthernetHeader>,
        len: usize,
        verdict: &Result<usize, crate::pipeline::Dropped>,
        out: &[(LinkId, Bytes)],
    ) {
        let from = self.pipeline.link(link).map(|l| l.name.clone());
        let from = from.as_deref().unwrap_or("?");
        let (src, dst, ethertype) = header.map_or((MacAddr([0; 6]), MacAddr([0; 6]), 0), |h| {
            (h.src, h.dst, h.ethertype)
        });
        let ethertype_name = crate::wire::ethernet::ethertype::name(ethertype).unwrap_or("other");
        match verdict {
            Ok(_) => {
                let to: Vec<&str> = out
                    .iter()
                    .filter_map(|(dst, _)| self.pipeline.link(*dst).map(|l| &*l.name))
                    .collect();
                tracing::debug!(target: FRAME_LOG, room = %self.room, from, %src, %dst, ethertype = format_args!("{ethertype:#06x}"), ethertype_name, len, action = "forward", to = ?to, "frame");
            }
            Err(dropped) => {
                tracing::debug!(target: FRAME_LOG, room = %self.room, from, %src, %dst, ethertype = format_args!("{ethertype:#06x}"), ethertype_name, len, action = "drop", stage = %self.pipeline.stage_label(dropped.stage), reason = dropped.reason, "frame");
            }
        }
    }

    /// Hands a frame entering the room to every live capture.
    fn capture(&mut self, link: LinkId, frame: &Bytes) {
        let Some(name) = self.pipeline.link(link).map(|l| l.name.clone()) else {
            return;
        };
        let at = std::time::SystemTime::now();
        let mut dropped = 0;
        self.captures.retain(|tx| {
            let captured = CapturedFrame {
                at,
                link,
                link_name: name.clone(),
                frame: frame.clone(),
            };
            match tx.try_send(captured) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    dropped += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        self.capture_dropped += dropped;
    }

    /// Runs one frame through the pipeline and delivers what comes out.
    fn process(
        &mut self,
        now: crate::time::Timestamp,
        log_frames: bool,
        link: LinkId,
        frame: Bytes,
    ) {
        if !self.captures.is_empty() {
            self.capture(link, &frame);
        }
        let header = log_frames
            .then(|| EthernetHeader::parse(&frame).ok())
            .flatten();
        let len = frame.len();
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let verdict = self.pipeline.process(now, link, frame, &mut out);
        if log_frames {
            self.log_frame(link, header.as_ref(), len, &verdict, &out);
        }
        for (dst, frame) in out.drain(..) {
            self.deliver(dst, frame);
        }
        self.out = out;
    }

    /// Applies every waiting command (links come and go, MTU, policy).
    fn apply_commands(&mut self) {
        loop {
            match self.control.try_recv() {
                Ok(command) => self.handle(command),
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.open = false;
                    return;
                }
            }
        }
    }

    /// Processes up to `limit` queued frames; true when the queue is empty
    /// afterwards.
    fn drain_queue(&mut self, now: crate::time::Timestamp, log_frames: bool, limit: usize) -> bool {
        for _ in 0..limit {
            match self.frames.try_recv() {
                Ok((link, frame)) => self.process(now, log_frames, link, frame),
                Err(_) => return true,
            }
        }
        self.frames.is_empty()
    }

    /// A port's frame, processed in the port's task unless frames queued
    /// earlier must go first.
    fn direct(&mut self, link: LinkId, frame: Bytes) -> Direct {
        self.apply_commands();
        if !self.open {
            return Direct::Closed;
        }
        let now = self.clock.now();
        let log_frames = frame_logs_enabled();
        if !self.drain_queue(now, log_frames, self.batch_limit) {
            return Direct::Queue(frame);
        }
        self.process(now, log_frames, link, frame);
        Direct::Processed
    }

    /// The worker's side: commands and queued frames, registering for
    /// wake-ups; ready once the room is gone.
    fn poll_work(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        use std::task::Poll;
        loop {
            match self.control.poll_recv(cx) {
                Poll::Ready(Some(command)) => self.handle(command),
                Poll::Ready(None) => {
                    self.open = false;
                    return Poll::Ready(());
                }
                Poll::Pending => break,
            }
        }
        // The first frame through poll_recv, so an empty queue registers
        // for a wake-up; the rest of the batch without waiting.
        match self.frames.poll_recv(cx) {
            Poll::Ready(None) => Poll::Ready(()),
            Poll::Ready(Some((link, frame))) => {
                let now = self.clock.now();
                let log_frames = frame_logs_enabled();
                self.process(now, log_frames, link, frame);
                self.drain_queue(now, log_frames, self.batch_limit.saturating_sub(1));
                // One batch per poll; come back for the rest (and to
                // register for a wake-up once the queue is empty).
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn deliver(&self, dst: LinkId, frame: Bytes) {
        let Ok(i) = self.outputs.binary_search_by_key(&dst, |o| o.id) else {
            return;
        };
        let output = &self.outputs[i];
        let len = frame.len() as u64;
        let delivered = match &output.sink {
            Some(sink) => sink.deliver(frame),
            None => output.queue.try_send(frame).is_ok(),
        };
        if delivered {
            output.counters.tx_frames.fetch_add(1, Ordering::Relaxed);
            output.counters.tx_bytes.fetch_add(len, Ordering::Relaxed);
        } else {
            output
                .counters
                .tx_queue_full
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn handle(&mut self, command: RoomCommand) {
        match command {
            RoomCommand::Attach { info, output } => {
                self.pipeline.add_link(info);
                match self.outputs.binary_search_by_key(&output.id, |o| o.id) {
                    Ok(i) => self.outputs[i] = output,
                    Err(i) => self.outputs.insert(i, output),
                }
            }
            RoomCommand::Detach(id) => {
                self.pipeline.remove_link(id);
                self.outputs.retain(|o| o.id != id);
            }
            RoomCommand::Capture(tx) => {
                tracing::info!(room = %self.room, "live capture started");
                self.captures.push(tx);
            }
            RoomCommand::Retune(template) => {
                let (ingress, egress) = template.filter_kinds();
                tracing::info!(room = %self.room, ?ingress, ?egress, "room filters retuned");
                self.pipeline.retune(&template);
            }
            RoomCommand::SetMtu(mtu) => {
                tracing::info!(room = %self.room, mtu, "room MTU set");
                self.pipeline.set_mtu(mtu);
            }
            RoomCommand::Stats(reply) => {
                let links = self
                    .pipeline
                    .links()
                    .iter()
                    .map(|l| LinkStats {
                        id: l.id,
                        name: l.name.to_string(),
                        role: l.role,
                        macs: l.macs.clone(),
                        counters: self
                            .outputs
                            .iter()
                            .find(|o| o.id == l.id)
                            .map(|o| o.counters.snapshot())
                            .unwrap_or_default(),
                    })
                    .collect();
                let _ = reply.send(RoomStats {
                    room: self.room.to_string(),
                    room_id: self.room_id,
                    mtu: self.pipeline.mtu(),
                    queue_full: self.queue_full.load(Ordering::Relaxed),
                    captures: self.captures.iter().filter(|c| !c.is_closed()).count(),
                    capture_dropped: self.capture_dropped,
                    links,
                    pipeline: self.pipeline.stats(),
                });
            }
        }
    }
}

/// The room's task: frames that had to queue, commands, and the pipeline's
/// once-a-second tick. Ends when the room table drops the room.
async fn run_room(room: SharedRoom) {
    let mut ticker = tokio::time::interval(crate::pipeline::TICK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let name = lock_room(&room).room.clone();
    loop {
        tokio::select! {
            biased;
            () = std::future::poll_fn(|cx| lock_room(&room).poll_work(cx)) => break,
            _ = ticker.tick() => {
                let mut core = lock_room(&room);
                let now = core.clock.now();
                core.pipeline.tick(now);
            }
        }
    }
    tracing::debug!(room = %name, "room worker stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RoomSpec;
    use crate::registry::Registry;
    use crate::testing::frames::{Tags, ethernet};

    /// Collects what the room hands it; refuses everything once `full`.
    #[derive(Debug, Default)]
    struct RecordingSink {
        frames: Mutex<Vec<Bytes>>,
        full: std::sync::atomic::AtomicBool,
    }

    impl LinkSink for RecordingSink {
        fn deliver(&self, frame: Bytes) -> bool {
            if self.full.load(Ordering::Relaxed) {
                return false;
            }
            self.frames
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(frame);
            true
        }
    }

    fn rooms() -> Arc<Rooms> {
        let registry = Registry::global().unwrap();
        let template = PipelineTemplate::build(&RoomSpec::default(), None, registry).unwrap();
        Rooms::new(template, RuntimeSettings::default())
    }

    fn spec(name: &str, mac: MacAddr, sink: Option<Arc<dyn LinkSink>>) -> LinkSpec {
        LinkSpec {
            name: name.into(),
            role: LinkRole::Client,
            macs: vec![mac],
            mtu: None,
            sink,
        }
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_sink_takes_frames_in_place_of_the_queue_and_its_refusals_are_counted() {
        let rooms = rooms();
        let (a, b) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
        let sink = Arc::new(RecordingSink::default());
        let from = rooms.attach("r", spec("a", a, None));
        let mut to = rooms.attach("r", spec("b", b, Some(sink.clone())));
        settle().await;
        let frame = Bytes::from(ethernet(MacAddr::BROADCAST, a, Tags::None, 0x0800, 46));
        assert!(from.send(frame.clone()));
        settle().await;
        assert_eq!(
            sink.frames.lock().unwrap().as_slice(),
            std::slice::from_ref(&frame)
        );
        assert!(to.try_recv().is_none(), "nothing is queued for a sink link");
        sink.full.store(true, Ordering::Relaxed);
        assert!(from.send(frame));
        settle().await;
        let counters = to.counters().snapshot();
        assert_eq!((counters.tx_frames, counters.tx_queue_full), (1, 1));
    }

    fn frame_from(src: MacAddr, tag: u8) -> Bytes {
        let mut f = ethernet(MacAddr::BROADCAST, src, Tags::None, 0x0800, 46);
        let last = f.len() - 1;
        f[last] = tag;
        Bytes::from(f)
    }

    /// Room "r" with link "a" (a queue) and link "b" (a recording sink):
    /// a's handle, b's sink, the room itself, and b's handle.
    fn sender_and_sink() -> (LinkHandle, Arc<RecordingSink>, SharedRoom, LinkHandle) {
        let rooms = rooms();
        let (a, b) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
        let sink = Arc::new(RecordingSink::default());
        // No settling: the room applies the pending attaches itself before
        // it processes a frame.
        let to = rooms.attach("r", spec("b", b, Some(sink.clone())));
        let from = rooms.attach("r", spec("a", a, None));
        let core = rooms.lock().get("r").map(|e| e.core.clone()).unwrap();
        (from, sink, core, to)
    }

    fn recorded(sink: &RecordingSink) -> Vec<u8> {
        let frames = sink.frames.lock().unwrap();
        frames.iter().map(|f| f[f.len() - 1]).collect()
    }

    #[tokio::test]
    async fn a_frame_offered_to_a_free_room_is_delivered_before_send_returns() {
        let (from, sink, _core, _to) = sender_and_sink();
        assert!(from.run_to_completion, "one-thread runtime");
        let a = MacAddr([2, 0, 0, 0, 0, 1]);
        assert!(from.send(frame_from(a, 1)));
        assert_eq!(recorded(&sink), [1], "delivered in the sender's task");
        let counters = from.counters().snapshot();
        assert_eq!((counters.rx_frames, counters.rx_queue_full), (1, 0));
    }

    #[tokio::test]
    async fn a_busy_room_queues_frames_and_a_later_direct_frame_never_overtakes_them() {
        let (from, sink, core, _to) = sender_and_sink();
        let a = MacAddr([2, 0, 0, 0, 0, 1]);
        {
            // Another thread holds the room: frames 1 and 2 must queue.
            let _held = core.lock().unwrap();
            assert!(from.send(frame_from(a, 1)));
            assert!(from.send(frame_from(a, 2)));
        }
        assert!(recorded(&sink).is_empty(), "queued, not yet processed");
        // The room is free again: frame 3 goes direct, after the queue.
        assert!(from.send(frame_from(a, 3)));
        assert_eq!(recorded(&sink), [1, 2, 3]);
        assert_eq!(from.counters().snapshot().rx_frames, 3);
    }

    #[tokio::test]
    async fn the_room_task_processes_queued_frames_when_no_port_comes_back() {
        let (from, sink, core, _to) = sender_and_sink();
        let a = MacAddr([2, 0, 0, 0, 0, 1]);
        {
            let _held = core.lock().unwrap();
            assert!(from.send(frame_from(a, 7)));
        }
        settle().await;
        assert_eq!(recorded(&sink), [7]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_a_multi_threaded_runtime_frames_go_through_the_room_task_in_order() {
        let (from, sink, core, _to) = sender_and_sink();
        assert!(!from.run_to_completion, "ports never take the room's lock");
        let a = MacAddr([2, 0, 0, 0, 0, 1]);
        {
            // The room's task cannot run while we hold the room: every
            // frame must wait in the queue, none is processed here.
            let _held = core.lock().unwrap();
            for i in 0..10 {
                assert!(from.send(frame_from(a, i)));
            }
            assert!(recorded(&sink).is_empty());
        }
        for _ in 0..200 {
            if recorded(&sink).len() == 10 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(recorded(&sink), (0..10).collect::<Vec<u8>>());
    }

    #[tokio::test]
    async fn a_full_room_queue_drops_and_counts() {
        let registry = Registry::global().unwrap();
        let template = PipelineTemplate::build(&RoomSpec::default(), None, registry).unwrap();
        let settings = RuntimeSettings {
            room_queue: 2,
            ..RuntimeSettings::default()
        };
        let rooms = Rooms::new(template, settings);
        let a = MacAddr([2, 0, 0, 0, 0, 1]);
        let from = rooms.attach("r", spec("a", a, None));
        let core = rooms.lock().get("r").map(|e| e.core.clone()).unwrap();
        let _held = core.lock().unwrap();
        let taken: Vec<bool> = (0..3).map(|i| from.send(frame_from(a, i))).collect();
        assert_eq!(taken, [true, true, false]);
        let counters = from.counters().snapshot();
        assert_eq!((counters.rx_frames, counters.rx_queue_full), (2, 1));
    }
}

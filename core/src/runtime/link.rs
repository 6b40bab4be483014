//! A port's end of a room: what a port says about a link it attaches
//! ([`LinkSpec`]) and the handle it gets back ([`LinkHandle`]) to send the
//! link's frames into the room, receive what the room routes to it, and
//! follow the room's MTU. Dropping the handle detaches the link.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::room_task::{Direct, SharedRoom, lock_room};
use super::rooms::Rooms;
use crate::room::{LinkCounters, LinkSink};
use crate::stage::{LinkId, LinkRole};
use crate::wire::MacAddr;

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

/// A port's end of one link.
pub struct LinkHandle {
    pub(super) id: LinkId,
    pub(super) room: Arc<str>,
    pub(super) room_id: u64,
    pub(super) core: SharedRoom,
    /// Whether frames are processed in the sending task (one-thread runtime).
    pub(super) run_to_completion: bool,
    pub(super) to_room: mpsc::Sender<(LinkId, Bytes)>,
    pub(super) room_queue_full: Arc<AtomicU64>,
    pub(super) mtu: watch::Receiver<u16>,
    pub(super) from_room: mpsc::Receiver<Bytes>,
    pub(super) counters: Arc<LinkCounters>,
    pub(super) rooms: Arc<Rooms>,
    /// Inside [`LinkHandle::gathered`]: the batch ends there, not with
    /// each frame.
    pub(super) gathering: AtomicBool,
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
        // Inside `gathered` the batch ends when the port says so.
        let flush = !self.gathering.load(Ordering::Relaxed);
        let direct = if !self.run_to_completion {
            Direct::Queue(frame)
        } else {
            match self.core.try_lock() {
                Ok(mut core) => core.direct(self.id, frame, flush),
                Err(std::sync::TryLockError::Poisoned(poisoned)) => {
                    poisoned.into_inner().direct(self.id, frame, flush)
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

    /// Runs `send` calls as one batch: on the direct path the room's sinks
    /// flush once, after `f`, instead of after every frame — a TAP sink
    /// writes the TCP segments of the batch as super-packets. A port that
    /// reads many frames per wake-up (a QUIC session draining its
    /// datagrams) wraps them in this; the batch is over when `f` returns.
    pub fn gathered<R>(&self, f: impl FnOnce() -> R) -> R {
        self.gathering.store(true, Ordering::Relaxed);
        let result = f();
        self.gathering.store(false, Ordering::Relaxed);
        if self.run_to_completion {
            lock_room(&self.core).flush();
        }
        result
    }

    /// Hands every frame of `frames` to the room in order, emptying it: as
    /// one batch ([`LinkHandle::gathered`]) when there are several — the
    /// segments a port cut from one super-packet, which the receiving
    /// adapter writes merged again — and a lone frame on its own (no
    /// batch to flush). Drops are counted as by [`LinkHandle::send`].
    pub fn send_all(&self, frames: &mut Vec<Bytes>) {
        let several = frames.len() > 1;
        let mut send = || {
            for frame in frames.drain(..) {
                self.send(frame);
            }
        };
        if several {
            self.gathered(send);
        } else {
            send();
        }
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

    /// Ends when the room is gone, like [`LinkHandle::closed`], but owned
    /// apart from the handle (a task can wait on it while another uses
    /// the link). For a link with a sink, whose queue carries no frames:
    /// the queue moves into the future, and this handle's `closed` and
    /// `recv` end at once from then on.
    pub fn take_closed(&mut self) -> impl Future<Output = ()> + Send + 'static {
        let (_, empty) = mpsc::channel(1);
        let mut queue = std::mem::replace(&mut self.from_room, empty);
        async move { while queue.recv().await.is_some() {} }
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

//! The tokio side of a room: the only place a [`Room`] meets channels, a
//! task and the clock. Frames reach a room in one of two ways: on a
//! one-thread runtime the port that received a frame processes it right
//! away, in its own task (run to completion, [`RoomCore::direct`]); on a
//! multi-threaded runtime (and whenever the room is busy) it joins the
//! room's bounded queue, which the room's task drains in batches. Either
//! way a frame never overtakes one queued before it, and commands sent
//! before a frame apply before it. The task also applies commands and
//! ticks the pipeline once a second. Those rules are tested in
//! `room_task/tests.rs` by hand, on a simulated clock ([`Clock`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::CapturedFrame;
use crate::room::{FRAME_LOG, FrameTap, LinkSink, Room, RoomCommand, RoomStats, Tapped};
use crate::stage::LinkId;
use crate::time::{Clock, Timestamp};

/// What the room table sends a room's task.
#[derive(Debug)]
pub(super) enum Command {
    /// A change to the room.
    Room(RoomCommand),
    /// A snapshot, for status.
    Stats(oneshot::Sender<RoomStats>),
}

/// A link's frames go to its port's sink, or else to its queue. The
/// queue's sender is kept even with a sink: dropping it (the link left, or
/// the room is gone) is how the port learns that.
#[derive(Debug)]
pub(super) struct PortSink {
    pub(super) queue: mpsc::Sender<Bytes>,
    pub(super) sink: Option<Arc<dyn LinkSink>>,
}

impl LinkSink for PortSink {
    fn deliver(&self, frame: Bytes) -> bool {
        match &self.sink {
            Some(sink) => sink.deliver(frame),
            None => self.queue.try_send(frame).is_ok(),
        }
    }

    fn flush(&self) {
        if let Some(sink) = &self.sink {
            sink.flush();
        }
    }

    fn gathers(&self) -> bool {
        self.sink.as_ref().is_some_and(|sink| sink.gathers())
    }
}

/// A live capture's reader, stamped with the wall clock as frames pass.
#[derive(Debug)]
pub(super) struct CaptureTap(pub(super) mpsc::Sender<CapturedFrame>);

impl FrameTap for CaptureTap {
    fn offer(&self, link: LinkId, link_name: &Arc<str>, frame: &Bytes) -> Tapped {
        let captured = CapturedFrame {
            at: std::time::SystemTime::now(),
            link,
            link_name: link_name.clone(),
            frame: frame.clone(),
        };
        match self.0.try_send(captured) {
            Ok(()) => Tapped::Taken,
            Err(mpsc::error::TrySendError::Full(_)) => Tapped::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Tapped::Closed,
        }
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// A room's state, shared by its links and its task.
///
/// On a one-thread runtime frames run to completion: the port that received
/// a frame processes it right away, in its own task
/// ([`super::LinkHandle::send`]), with no task switch between the port and
/// the room (the room is never held across a wake-up there, so the port
/// always finds it free). On a multi-threaded runtime ports queue frames
/// for the room's task, which processes them in batches: ports on other
/// threads never wait for the room's lock (a thread preempted while holding
/// it would stall them all).
pub(super) type SharedRoom = Arc<Mutex<RoomCore>>;

pub(super) fn lock_room(room: &SharedRoom) -> std::sync::MutexGuard<'_, RoomCore> {
    room.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether per-frame debug logs are on; checked once per frame or batch,
/// so they cost nothing when off.
fn frame_logs_enabled() -> bool {
    tracing::enabled!(target: FRAME_LOG, tracing::Level::DEBUG)
}

/// What became of a frame a port offered the room directly.
pub(super) enum Direct {
    /// Processed (routed or dropped by a filter, and counted).
    Processed,
    /// Frames queued before it are still waiting; it must queue behind them.
    Queue(Bytes),
    /// The room is gone.
    Closed,
}

/// A room with its queues and clock.
pub(super) struct RoomCore {
    pub(super) room: Room,
    pub(super) clock: Clock,
    batch_limit: usize,
    queue_full: Arc<AtomicU64>,
    control: mpsc::UnboundedReceiver<Command>,
    frames: mpsc::Receiver<(LinkId, Bytes)>,
    /// False once the room table dropped the room.
    open: bool,
    /// The time of the batch of direct frames being processed: one clock
    /// read per batch, not per frame (a batch takes microseconds).
    batch_now: Option<Timestamp>,
}

impl RoomCore {
    /// A room fed by `control` and `frames`, processing up to `batch_limit`
    /// queued frames a turn; `queue_full` counts what its queue refused.
    pub(super) fn new(
        room: Room,
        clock: Clock,
        batch_limit: usize,
        queue_full: Arc<AtomicU64>,
        control: mpsc::UnboundedReceiver<Command>,
        frames: mpsc::Receiver<(LinkId, Bytes)>,
    ) -> RoomCore {
        RoomCore {
            room,
            clock,
            batch_limit,
            queue_full,
            control,
            frames,
            open: true,
            batch_now: None,
        }
    }

    /// Applies every waiting command (links come and go, MTU, policy).
    pub(super) fn apply_commands(&mut self) {
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

    fn handle(&mut self, command: Command) {
        match command {
            Command::Room(command) => self.room.apply(command),
            Command::Stats(reply) => {
                let _ = reply.send(self.room.stats(self.queue_full.load(Ordering::Relaxed)));
            }
        }
    }

    /// Processes up to `limit` queued frames; true when the queue is empty
    /// afterwards.
    fn drain_queue(&mut self, now: Timestamp, log_frames: bool, limit: usize) -> bool {
        for _ in 0..limit {
            match self.frames.try_recv() {
                Ok((link, frame)) => {
                    self.room.process(now, log_frames, link, frame);
                }
                Err(_) => return true,
            }
        }
        self.frames.is_empty()
    }

    /// A port's frame, processed in the port's task unless frames queued
    /// earlier must go first; with `flush`, the batch ends with it (else
    /// the port ends it with [`RoomCore::flush`]).
    pub(super) fn direct(&mut self, link: LinkId, frame: Bytes, flush: bool) -> Direct {
        self.apply_commands();
        if !self.open {
            return Direct::Closed;
        }
        let now = match (flush, self.batch_now) {
            (false, Some(now)) => now,
            (false, None) => *self.batch_now.insert(self.clock.now()),
            (true, _) => self.clock.now(),
        };
        let log_frames = frame_logs_enabled();
        if !self.drain_queue(now, log_frames, self.batch_limit) {
            self.room.flush();
            return Direct::Queue(frame);
        }
        self.room.process(now, log_frames, link, frame);
        if flush {
            self.room.flush();
        }
        Direct::Processed
    }

    /// Ends a batch of direct frames.
    pub(super) fn flush(&mut self) {
        self.batch_now = None;
        self.room.flush();
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
                self.room.process(now, log_frames, link, frame);
                self.drain_queue(now, log_frames, self.batch_limit.saturating_sub(1));
                self.room.flush();
                // One batch per poll; come back for the rest (and to
                // register for a wake-up once the queue is empty).
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The room's task: frames that had to queue, commands, and the pipeline's
/// once-a-second tick. Ends when the room table drops the room.
pub(super) async fn run_room(room: SharedRoom) {
    let mut ticker = tokio::time::interval(crate::pipeline::TICK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let name = lock_room(&room).room.name().clone();
    loop {
        tokio::select! {
            biased;
            () = std::future::poll_fn(|cx| lock_room(&room).poll_work(cx)) => break,
            _ = ticker.tick() => {
                let mut core = lock_room(&room);
                let now = core.clock.now();
                core.room.tick(now);
            }
        }
    }
    tracing::debug!(room = %name, "room worker stopped");
}

#[cfg(test)]
mod tests;

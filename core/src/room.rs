//! A room, sans-IO: its pipeline, where each link's frames go, live
//! captures and the per-frame debug log. Commands (links come and go, the
//! MTU, a policy, a capture) and frames go in with the time; frames leave
//! through each link's [`LinkSink`], and [`Room::process`] says what became
//! of each one. No tokio and no clock here: the runtime's driver
//! (`runtime/room_task.rs`) owns the queues, the task and the clock, and
//! tests drive a room with a simulated one.
//!
//! This file may not touch: channels, tasks, the wall clock, sockets.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::pipeline::{Dropped, Pipeline, PipelineStats, PipelineTemplate};
use crate::stage::{LinkId, LinkInfo, LinkRole};
use crate::time::Timestamp;
use crate::wire::MacAddr;
use crate::wire::ethernet::EthernetHeader;

/// The tracing target of per-frame debug logs: enable them with
/// `--log-level info,lanparty::frames=debug`.
pub const FRAME_LOG: &str = "lanparty::frames";

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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

/// Where a room delivers one link's frames. A port may give its own (the
/// relay and the QUIC client hand frames straight to their connection's
/// scheduler, the TAP port writes them to its device): one task wake-up
/// less per frame; otherwise the runtime queues them for the port.
///
/// `deliver` runs wherever the room runs (the sending port's task or the
/// room's own): it must never block or wait.
pub trait LinkSink: Send + Sync + std::fmt::Debug {
    /// Takes one frame routed to the link; false when it was dropped (the
    /// room counts it as `tx_queue_full`, the sink says why in its own
    /// counters).
    fn deliver(&self, frame: Bytes) -> bool;

    /// The room's batch is over: a sink that gathers frames (a TAP writing
    /// TCP super-packets) writes what it holds. The room calls it after
    /// every frame a port hands over alone and after every batch, so
    /// nothing waits past the batch it came in — on the sinks that say they
    /// gather ([`LinkSink::gathers`]) only, so a room of many links pays
    /// nothing per frame for it. Default: nothing held.
    fn flush(&self) {}

    /// Whether the sink holds frames until [`LinkSink::flush`]; asked once,
    /// when its link joins. Default: no.
    fn gathers(&self) -> bool {
        false
    }
}

/// What a live capture did with a frame offered to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tapped {
    /// Taken.
    Taken,
    /// Not taken: the reader is behind (the frame is counted, the capture
    /// stays).
    Full,
    /// The reader is gone: the capture ends.
    Closed,
}

/// A live capture's end in the room: it is offered every frame entering
/// the room and must never wait.
pub trait FrameTap: Send + std::fmt::Debug {
    /// Offers one frame that entered from `link` (named `link_name`).
    fn offer(&self, link: LinkId, link_name: &Arc<str>, frame: &Bytes) -> Tapped;
    /// Whether the reader is gone.
    fn is_closed(&self) -> bool;
}

/// One link's output: where its frames go and what is counted.
#[derive(Debug, Clone)]
pub struct RoomOutput {
    /// The link.
    pub id: LinkId,
    /// Where its frames go.
    pub sink: Arc<dyn LinkSink>,
    /// Its counters (shared with its port).
    pub counters: Arc<LinkCounters>,
}

/// A change to a room.
#[derive(Debug)]
pub enum RoomCommand {
    /// A link joins.
    Attach {
        /// What the pipeline knows of it.
        info: LinkInfo,
        /// Where its frames go.
        output: RoomOutput,
    },
    /// A link leaves.
    Detach(LinkId),
    /// The room MTU changes.
    SetMtu(u16),
    /// The room's filters are rebuilt from a (policy's) template; links,
    /// MAC table and MTU stay.
    Retune(PipelineTemplate),
    /// A live capture starts.
    Capture(Box<dyn FrameTap>),
}

/// What became of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Copies the links' sinks took.
    pub delivered: usize,
    /// Copies a sink refused (counted `tx_queue_full` on its link).
    pub refused: usize,
    /// Set when the pipeline dropped the frame before any destination;
    /// egress drops are in [`Pipeline::egress_drops`].
    pub dropped: Option<Dropped>,
}

/// A room's state, for status and tests.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// One room.
pub struct Room {
    name: Arc<str>,
    id: u64,
    pipeline: Pipeline,
    /// Sorted by link id.
    outputs: Vec<RoomOutput>,
    /// The outputs whose sinks gather ([`LinkSink::gathers`]): what a
    /// flush visits.
    gathering: Vec<RoomOutput>,
    captures: Vec<Box<dyn FrameTap>>,
    capture_dropped: u64,
    /// The pipeline's output, reused frame after frame.
    out: Vec<(LinkId, Bytes)>,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room")
            .field("name", &self.name)
            .field("id", &self.id)
            .field("links", &self.outputs.len())
            .field("captures", &self.captures.len())
            .finish()
    }
}

impl Room {
    /// The room `name` (instance `id`) running `pipeline`, with no links.
    pub fn new(name: Arc<str>, id: u64, pipeline: Pipeline) -> Room {
        Room {
            name,
            id,
            pipeline,
            outputs: Vec::new(),
            gathering: Vec::new(),
            captures: Vec::new(),
            capture_dropped: 0,
            out: Vec::with_capacity(64),
        }
    }

    /// Ends a batch: every link's sink writes what it gathered.
    pub fn flush(&self) {
        for output in &self.gathering {
            output.sink.flush();
        }
    }

    /// The room code.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The pipeline (for its egress drops and counters).
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Applies one change.
    pub fn apply(&mut self, command: RoomCommand) {
        match command {
            RoomCommand::Attach { info, output } => {
                self.pipeline.add_link(info);
                self.gathering.retain(|o| o.id != output.id);
                if output.sink.gathers() {
                    self.gathering.push(output.clone());
                }
                match self.outputs.binary_search_by_key(&output.id, |o| o.id) {
                    Ok(i) => self.outputs[i] = output,
                    Err(i) => self.outputs.insert(i, output),
                }
            }
            RoomCommand::Detach(id) => {
                self.pipeline.remove_link(id);
                self.outputs.retain(|o| o.id != id);
                self.gathering.retain(|o| o.id != id);
            }
            RoomCommand::Capture(tap) => {
                tracing::info!(room = %self.name, "live capture started");
                self.captures.push(tap);
            }
            RoomCommand::Retune(template) => {
                let (ingress, egress) = template.filter_kinds();
                tracing::info!(room = %self.name, ?ingress, ?egress, "room filters retuned");
                self.pipeline.retune(&template);
            }
            RoomCommand::SetMtu(mtu) => {
                tracing::info!(room = %self.name, mtu, "room MTU set");
                self.pipeline.set_mtu(mtu);
            }
        }
    }

    /// Runs one frame that entered from `link` through the pipeline at
    /// `now` and delivers what comes out; `log_frames` writes one debug
    /// line for it (target [`FRAME_LOG`]).
    pub fn process(
        &mut self,
        now: Timestamp,
        log_frames: bool,
        link: LinkId,
        frame: Bytes,
    ) -> Outcome {
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
        let mut outcome = Outcome {
            dropped: verdict.err(),
            ..Outcome::default()
        };
        for (dst, frame) in out.drain(..) {
            match self.deliver(dst, frame) {
                Some(true) => outcome.delivered += 1,
                Some(false) => outcome.refused += 1,
                None => {}
            }
        }
        self.out = out;
        outcome
    }

    /// Lets time-driven stages act (MAC aging, rate windows).
    pub fn tick(&mut self, now: Timestamp) {
        self.pipeline.tick(now);
    }

    /// The role of the link that has `mac` now (a client that owns it, or
    /// the link the switch learned it on), if any.
    pub fn mac_holder(&self, mac: MacAddr, now: Timestamp) -> Option<LinkRole> {
        self.pipeline.mac_holder(mac, now).map(|link| link.role)
    }

    /// The room's state; `queue_full` is what the driver's queue dropped.
    pub fn stats(&self, queue_full: u64) -> RoomStats {
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
        RoomStats {
            room: self.name.to_string(),
            room_id: self.id,
            mtu: self.pipeline.mtu(),
            queue_full,
            captures: self.captures.iter().filter(|c| !c.is_closed()).count(),
            capture_dropped: self.capture_dropped,
            links,
            pipeline: self.pipeline.stats(),
        }
    }

    /// Hands `frame` to `dst`'s sink: `None` when the link is gone, else
    /// whether the sink took it (counted either way).
    fn deliver(&self, dst: LinkId, frame: Bytes) -> Option<bool> {
        let i = self.outputs.binary_search_by_key(&dst, |o| o.id).ok()?;
        let output = &self.outputs[i];
        let len = frame.len() as u64;
        let taken = output.sink.deliver(frame);
        if taken {
            output.counters.tx_frames.fetch_add(1, Ordering::Relaxed);
            output.counters.tx_bytes.fetch_add(len, Ordering::Relaxed);
        } else {
            output
                .counters
                .tx_queue_full
                .fetch_add(1, Ordering::Relaxed);
        }
        Some(taken)
    }

    /// Hands a frame entering the room to every live capture.
    fn capture(&mut self, link: LinkId, frame: &Bytes) {
        let Some(name) = self.pipeline.link(link).map(|l| l.name.clone()) else {
            return;
        };
        let mut dropped = 0;
        self.captures
            .retain(|tap| match tap.offer(link, &name, frame) {
                Tapped::Taken => true,
                Tapped::Full => {
                    dropped += 1;
                    true
                }
                Tapped::Closed => false,
            });
        self.capture_dropped += dropped;
    }

    /// One structured debug line per frame (target [`FRAME_LOG`]).
    fn log_frame(
        &self,
        link: LinkId,
        header: Option<&EthernetHeader>,
        len: usize,
        verdict: &Result<usize, Dropped>,
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
                tracing::debug!(target: FRAME_LOG, room = %self.name, from, %src, %dst, ethertype = format_args!("{ethertype:#06x}"), ethertype_name, len, action = "forward", to = ?to, "frame");
            }
            Err(dropped) => {
                tracing::debug!(target: FRAME_LOG, room = %self.name, from, %src, %dst, ethertype = format_args!("{ethertype:#06x}"), ethertype_name, len, action = "drop", stage = %self.pipeline.stage_label(dropped.stage), reason = dropped.reason, "frame");
            }
        }
    }
}

/// A command attaching link `id` (`link{id}`, one MAC, MTU 1500) whose
/// frames go to `sink`: the tests' way in.
#[cfg(test)]
pub(crate) fn attach_command(
    id: u32,
    role: LinkRole,
    mac: MacAddr,
    sink: Arc<dyn LinkSink>,
) -> RoomCommand {
    RoomCommand::Attach {
        info: LinkInfo {
            id: LinkId(id),
            name: format!("link{id}").into(),
            role,
            macs: vec![mac],
            mtu: 1500,
        },
        output: RoomOutput {
            id: LinkId(id),
            sink,
            counters: Arc::new(LinkCounters::default()),
        },
    }
}

#[cfg(test)]
mod tests;

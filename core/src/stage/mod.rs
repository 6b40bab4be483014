//! The frame-level stage contracts: filters and routers, plus links and
//! the counters the pipeline keeps for each stage. Nothing here knows the
//! runtime; the port contract, which runs in it, is
//! [`crate::runtime::Port`] (with a client's one MAC identity,
//! [`crate::runtime::identity`]).

mod counters;
mod link;

use bytes::Bytes;

pub use counters::{DropReason, StageCounters};
pub use link::{LinkId, LinkInfo, LinkRole};

use crate::time::Timestamp;
use crate::wire::{FrameView, MacAddr};

/// A filter's judgement of a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let the frame through unchanged.
    Pass,
    /// Drop the frame; the reason is counted against the stage.
    Drop(DropReason),
    /// Let a rewritten frame through instead (e.g. an RA with its router
    /// lifetime set to 0). Allocates, so only for rare frames.
    Replace(Bytes),
}

/// What a filter knows about where a frame came from.
#[derive(Debug, Clone, Copy)]
pub struct FilterContext<'a> {
    /// The current time, handed in by the driver.
    pub now: Timestamp,
    /// The link the frame entered the room on.
    pub ingress: &'a LinkInfo,
    /// The room's MTU.
    pub room_mtu: u16,
    /// The room code (`default` on a client or gateway).
    pub room: &'a str,
}

/// Which lists of a pipeline a filter may be placed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterSides {
    /// Only under `pipeline.ingress`.
    Ingress,
    /// Only under `pipeline.egress`.
    Egress,
    /// Under either.
    Both,
}

impl FilterSides {
    /// True when the filter may be placed under `pipeline.ingress`.
    pub fn ingress(self) -> bool {
        matches!(self, FilterSides::Ingress | FilterSides::Both)
    }

    /// True when the filter may be placed under `pipeline.egress`.
    pub fn egress(self) -> bool {
        matches!(self, FilterSides::Egress | FilterSides::Both)
    }
}

/// A stage that judges frames. One instance exists per room; it may keep
/// per-room state (rate limiters, learned MACs).
///
/// Filters must not panic on any frame: the [`FrameView`] is length-checked,
/// and its L3 facts say [`crate::wire::L3Kind::Malformed`] where the bytes do
/// not parse. Each filter documents whether it fails open or closed on such
/// frames.
pub trait Filter: Send {
    /// Judges a frame before routing (when placed under `ingress`).
    fn ingress(&mut self, ctx: &FilterContext<'_>, frame: &FrameView<'_>) -> Verdict {
        let _ = (ctx, frame);
        Verdict::Pass
    }

    /// Judges a frame for one destination after routing (when placed under
    /// `egress`).
    fn egress(
        &mut self,
        ctx: &FilterContext<'_>,
        frame: &FrameView<'_>,
        dst: &LinkInfo,
    ) -> Verdict {
        let _ = (ctx, frame, dst);
        Verdict::Pass
    }

    /// A link joined the room.
    fn link_added(&mut self, link: &LinkInfo) {
        let _ = link;
    }

    /// A link left the room: forget everything about it.
    fn link_removed(&mut self, link: LinkId) {
        let _ = link;
    }

    /// Called at least once a second with the current time, for filters
    /// that expire state.
    fn tick(&mut self, now: Timestamp) {
        let _ = now;
    }
}

/// A stage that chooses the destination links of a frame.
pub trait Router: Send {
    /// Pushes the destinations of `frame` (entering on `ctx.ingress`) onto
    /// `out` (which arrives empty), or returns why it goes nowhere. `links`
    /// are the room's links, sorted by id.
    fn route(
        &mut self,
        ctx: &FilterContext<'_>,
        frame: &FrameView<'_>,
        links: &[LinkInfo],
        out: &mut Vec<LinkId>,
    ) -> Result<(), DropReason>;

    /// A link left the room: forget everything learned on it.
    fn link_removed(&mut self, link: LinkId);

    /// Called at least once a second with the current time.
    fn tick(&mut self, now: Timestamp) {
        let _ = now;
    }

    /// Number of entries in the router's table (learned MACs), for status.
    fn table_len(&self) -> usize {
        0
    }

    /// Client link `link` owns `macs` from now on: forget them wherever
    /// they were learned.
    fn macs_claimed(&mut self, macs: &[MacAddr], link: LinkId) {
        let _ = (macs, link);
    }

    /// The link `mac` was learned on and is still live on at `now`, for
    /// routers that learn (the relay asks before admitting a MAC).
    fn learned_on(&self, mac: MacAddr, now: Timestamp) -> Option<LinkId> {
        let _ = (mac, now);
        None
    }
}

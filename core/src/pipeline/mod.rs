//! The room pipeline: ingress filters, a router, egress filters — sans-IO.
//! This file is the per-frame engine; `template.rs` builds the checked
//! description every room's pipeline is made from (configuration in,
//! [`PipelineTemplate`] out).
//!
//! A [`Pipeline`] performs no I/O and never reads the clock: the runtime and
//! the test harness hand it frames and the current [`Timestamp`], and it
//! writes `(destination link, frame)` pairs into a caller-owned vector. Each
//! frame's L2 header is parsed once and its L3 facts at most once, and
//! flooding a frame to N links clones a refcount N times.

use crate::keyed_hash::KeyedMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::stage::{
    DropReason, Filter, FilterContext, LinkId, LinkInfo, LinkRole, Router, StageCounters, Verdict,
};
use crate::time::Timestamp;
use crate::wire::{FrameView, MacAddr};

mod template;

use template::FilterTemplate;
pub use template::PipelineTemplate;

/// Drop reason: the frame came from a link the room does not know.
pub const UNKNOWN_LINK: DropReason = "unknown-link";
/// Drop reason: the L2 header is truncated or has too many VLAN tags.
pub const MALFORMED_L2: DropReason = "malformed-l2";
/// Drop reason: the source MAC belongs to an admitted client on another
/// link (a gateway's LAN or another client tried to take it over).
pub const OWNED_MAC: DropReason = "owned-mac";
/// How often filters and routers are ticked, at least.
pub const TICK_INTERVAL: Duration = Duration::from_secs(1);

/// Where in the pipeline something happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StageId {
    /// The pipeline itself (unknown link, malformed header).
    Pipeline,
    /// The n-th ingress filter.
    Ingress(usize),
    /// The router.
    Router,
    /// The n-th egress filter.
    Egress(usize),
}

/// A frame the pipeline dropped before routing, or that the router sent
/// nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// Which stage dropped it.
    pub stage: StageId,
    /// Why.
    pub reason: DropReason,
}

struct FilterSlot {
    kind: &'static str,
    label: Arc<str>,
    filter: Box<dyn Filter>,
    counters: StageCounters,
}

/// One room's pipeline instance.
pub struct Pipeline {
    room: Arc<str>,
    mtu: u16,
    links: Vec<LinkInfo>,
    ingress: Vec<FilterSlot>,
    router_kind: &'static str,
    router: Box<dyn Router>,
    router_counters: StageCounters,
    egress: Vec<FilterSlot>,
    pipeline_counters: StageCounters,
    destinations: Vec<LinkId>,
    delivered: u64,
    last_tick: Option<Timestamp>,
    /// MACs owned by client links: an admitted player's MAC is theirs for
    /// as long as they are in the room, whatever any filter or router says.
    owners: KeyedMap<MacAddr, LinkId>,
    /// The egress drops of the last frame processed: (destination, where
    /// and why).
    egress_drops: Vec<(LinkId, Dropped)>,
}

/// Counters of one stage, for status and tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageStats {
    /// `ingress[0]:jumbo`, `router:switch`, … or `pipeline`.
    pub label: String,
    /// The stage kind's name.
    pub kind: String,
    /// Its counters.
    pub counters: StageCounters,
}

/// A snapshot of a pipeline's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineStats {
    /// Frames that entered.
    pub frames_in: u64,
    /// (frame, destination) pairs delivered.
    pub delivered: u64,
    /// Learned MAC table entries.
    pub table_len: usize,
    /// Per stage, in pipeline order, starting with the pipeline itself.
    pub stages: Vec<StageStats>,
}

impl PipelineStats {
    /// The stats of the stage labelled `label`.
    pub fn stage(&self, label: &str) -> Option<&StageStats> {
        self.stages.iter().find(|s| s.label == label)
    }

    /// Drops for `reason` summed over every stage.
    pub fn dropped(&self, reason: &str) -> u64 {
        self.stages.iter().map(|s| s.counters.dropped(reason)).sum()
    }
}

fn judge(slot: &mut FilterSlot, verdict: Verdict) -> Result<Option<Bytes>, DropReason> {
    slot.counters.rx += 1;
    match verdict {
        Verdict::Pass => {
            slot.counters.pass += 1;
            Ok(None)
        }
        Verdict::Drop(reason) => {
            slot.counters.record_drop(reason);
            Err(reason)
        }
        Verdict::Replace(bytes) => {
            slot.counters.pass += 1;
            slot.counters.rewritten += 1;
            Ok(Some(bytes))
        }
    }
}

impl Pipeline {
    /// The room MTU.
    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// Sets the room MTU. The runtime does this once, before the first frame.
    pub fn set_mtu(&mut self, mtu: u16) {
        self.mtu = mtu;
    }

    /// Replaces the filters with `template`'s (a policy was edited): new
    /// filter instances that know every link; counters are kept for stages
    /// whose label is unchanged. The router, its MAC table and the room MTU
    /// stay as they are.
    pub fn retune(&mut self, template: &PipelineTemplate) {
        let links = &self.links;
        let rebuild = |old: &mut Vec<FilterSlot>, new: &[FilterTemplate]| {
            let mut slots: Vec<FilterSlot> = new
                .iter()
                .map(|t| {
                    let mut filter = (t.factory)();
                    for link in links {
                        filter.link_added(link);
                    }
                    let counters = old
                        .iter_mut()
                        .find(|s| s.label == t.label)
                        .map(|s| std::mem::take(&mut s.counters))
                        .unwrap_or_default();
                    FilterSlot {
                        kind: t.kind,
                        label: t.label.clone(),
                        filter,
                        counters,
                    }
                })
                .collect();
            std::mem::swap(old, &mut slots);
        };
        rebuild(&mut self.ingress, &template.ingress);
        rebuild(&mut self.egress, &template.egress);
    }

    /// The link that has `mac` now: the client link that owns it, or the
    /// link the router learned it on (still live at `now`).
    pub fn mac_holder(&self, mac: MacAddr, now: Timestamp) -> Option<&LinkInfo> {
        let id = match self.owners.get(&mac) {
            Some(owner) => *owner,
            None => self.router.learned_on(mac, now)?,
        };
        self.link(id)
    }

    /// The room's links, sorted by id.
    pub fn links(&self) -> &[LinkInfo] {
        &self.links
    }

    /// The link with id `id`.
    pub fn link(&self, id: LinkId) -> Option<&LinkInfo> {
        self.links
            .binary_search_by_key(&id, |l| l.id)
            .ok()
            .map(|i| &self.links[i])
    }

    /// Adds a link (replacing one with the same id). A client link owns
    /// its MACs from now on.
    pub fn add_link(&mut self, link: LinkInfo) {
        for slot in self.ingress.iter_mut().chain(self.egress.iter_mut()) {
            slot.filter.link_added(&link);
        }
        self.owners.retain(|_, owner| *owner != link.id);
        if link.role == LinkRole::Client {
            for mac in &link.macs {
                self.owners.insert(*mac, link.id);
            }
            // Whatever the router learned of these MACs elsewhere is stale.
            self.router.macs_claimed(&link.macs, link.id);
        }
        match self.links.binary_search_by_key(&link.id, |l| l.id) {
            Ok(i) => self.links[i] = link,
            Err(i) => self.links.insert(i, link),
        }
    }

    /// Removes a link and everything any stage learned about it. Returns
    /// false if the link was not in the room.
    pub fn remove_link(&mut self, id: LinkId) -> bool {
        let Ok(i) = self.links.binary_search_by_key(&id, |l| l.id) else {
            return false;
        };
        self.links.remove(i);
        self.owners.retain(|_, owner| *owner != id);
        for slot in self.ingress.iter_mut().chain(self.egress.iter_mut()) {
            slot.filter.link_removed(id);
        }
        self.router.link_removed(id);
        true
    }

    /// Ticks every stage if a tick is due; `process` calls it too.
    pub fn tick(&mut self, now: Timestamp) {
        if self
            .last_tick
            .is_some_and(|last| now.saturating_since(last) < TICK_INTERVAL)
        {
            return;
        }
        self.last_tick = Some(now);
        for slot in self.ingress.iter_mut().chain(self.egress.iter_mut()) {
            slot.filter.tick(now);
        }
        self.router.tick(now);
    }

    /// Runs one frame that entered on `ingress` through the pipeline and
    /// appends `(destination, frame)` to `out`. Returns how many were
    /// appended, or where and why the frame was dropped before routing.
    /// Egress drops are per destination and show in the counters.
    pub fn process(
        &mut self,
        now: Timestamp,
        ingress: LinkId,
        frame: Bytes,
        out: &mut Vec<(LinkId, Bytes)>,
    ) -> Result<usize, Dropped> {
        self.tick(now);
        self.egress_drops.clear();
        self.pipeline_counters.rx += 1;
        let dropped = |stage, reason| Dropped { stage, reason };
        let Ok(link_index) = self.links.binary_search_by_key(&ingress, |l| l.id) else {
            self.pipeline_counters.record_drop(UNKNOWN_LINK);
            return Err(dropped(StageId::Pipeline, UNKNOWN_LINK));
        };
        let mut frame = frame;
        let mut first = 0;
        // Ingress filters. A rewrite restarts parsing for the filters after it.
        let view = loop {
            let Ok(view) = FrameView::parse(&frame) else {
                self.pipeline_counters.record_drop(MALFORMED_L2);
                return Err(dropped(StageId::Pipeline, MALFORMED_L2));
            };
            // An admitted client's MAC is theirs: nobody else sends as it,
            // so nobody else can make the router move it (checked on the
            // frame as it arrived, before any filter, whatever the room's
            // configuration).
            if first == 0
                && self
                    .owners
                    .get(&view.eth().src)
                    .is_some_and(|owner| *owner != ingress)
            {
                self.pipeline_counters.record_drop(OWNED_MAC);
                return Err(dropped(StageId::Pipeline, OWNED_MAC));
            }
            let ctx = FilterContext {
                now,
                ingress: &self.links[link_index],
                room_mtu: self.mtu,
                room: &self.room,
            };
            let mut replaced = None;
            for i in first..self.ingress.len() {
                let slot = &mut self.ingress[i];
                let verdict = slot.filter.ingress(&ctx, &view);
                match judge(slot, verdict) {
                    Ok(None) => {}
                    Ok(Some(bytes)) => {
                        replaced = Some((i + 1, bytes));
                        break;
                    }
                    Err(reason) => return Err(dropped(StageId::Ingress(i), reason)),
                }
            }
            match replaced {
                None => break view,
                Some((next, bytes)) => {
                    frame = bytes;
                    first = next;
                }
            }
        };
        self.pipeline_counters.pass += 1;
        let ctx = FilterContext {
            now,
            ingress: &self.links[link_index],
            room_mtu: self.mtu,
            room: &self.room,
        };

        // Router.
        self.destinations.clear();
        self.router_counters.rx += 1;
        if let Err(reason) = self
            .router
            .route(&ctx, &view, &self.links, &mut self.destinations)
        {
            self.router_counters.record_drop(reason);
            return Err(dropped(StageId::Router, reason));
        }
        self.router_counters.pass += 1;

        // Egress filters, per destination.
        let before = out.len();
        'destinations: for &dst in &self.destinations {
            let Ok(dst_index) = self.links.binary_search_by_key(&dst, |l| l.id) else {
                self.router_counters.record_drop(UNKNOWN_LINK);
                continue;
            };
            let dst_link = &self.links[dst_index];
            let mut outgoing: Option<Bytes> = None;
            for (index, slot) in self.egress.iter_mut().enumerate() {
                let verdict = match &outgoing {
                    None => slot.filter.egress(&ctx, &view, dst_link),
                    Some(rewritten) => match FrameView::parse(rewritten) {
                        Ok(v) => slot.filter.egress(&ctx, &v, dst_link),
                        Err(_) => Verdict::Drop(MALFORMED_L2),
                    },
                };
                match judge(slot, verdict) {
                    Ok(None) => {}
                    Ok(Some(bytes)) => outgoing = Some(bytes),
                    Err(reason) => {
                        self.egress_drops
                            .push((dst, dropped(StageId::Egress(index), reason)));
                        continue 'destinations;
                    }
                }
            }
            out.push((dst, outgoing.unwrap_or_else(|| frame.clone())));
        }
        let delivered = out.len() - before;
        self.delivered += delivered as u64;
        Ok(delivered)
    }

    /// What egress filters dropped of the last frame [`Pipeline::process`]
    /// took: one entry per (destination, drop), in routing order.
    pub fn egress_drops(&self) -> &[(LinkId, Dropped)] {
        &self.egress_drops
    }

    /// A snapshot of every stage's counters.
    pub fn stats(&self) -> PipelineStats {
        let filter_stats = |s: &FilterSlot| StageStats {
            label: s.label.to_string(),
            kind: s.kind.to_string(),
            counters: s.counters.clone(),
        };
        let mut stages = vec![StageStats {
            label: "pipeline".into(),
            kind: "pipeline".into(),
            counters: self.pipeline_counters.clone(),
        }];
        stages.extend(self.ingress.iter().map(filter_stats));
        stages.push(StageStats {
            label: format!("router:{}", self.router_kind),
            kind: self.router_kind.to_string(),
            counters: self.router_counters.clone(),
        });
        stages.extend(self.egress.iter().map(filter_stats));
        PipelineStats {
            frames_in: self.pipeline_counters.rx,
            delivered: self.delivered,
            table_len: self.router.table_len(),
            stages,
        }
    }

    /// The label of a stage, for messages.
    pub fn stage_label(&self, stage: StageId) -> String {
        match stage {
            StageId::Pipeline => "pipeline".into(),
            StageId::Ingress(i) => self
                .ingress
                .get(i)
                .map_or_else(|| format!("ingress[{i}]"), |s| s.label.to_string()),
            StageId::Router => format!("router:{}", self.router_kind),
            StageId::Egress(i) => self
                .egress
                .get(i)
                .map_or_else(|| format!("egress[{i}]"), |s| s.label.to_string()),
        }
    }
}

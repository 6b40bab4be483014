//! The built-in routers: `switch` (MAC learning) and `hub` (flood).

use crate::keyed_hash::{KeyedMap, keyed_map_with_capacity};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ConfigDuration, ConfigError, StageConfig};
use crate::registry::RouterFactory;
use crate::stage::{DropReason, FilterContext, LinkId, LinkInfo, Router};
use crate::time::Timestamp;
use crate::wire::{FrameView, MacAddr};

/// Drop reason: a known unicast destination sits on the link the frame came
/// from, so it needs no forwarding (LAN-local traffic on a gateway).
pub const LOCAL_DESTINATION: DropReason = "local-destination";
/// Drop reason: no link besides the ingress one is in the room.
pub const NO_DESTINATION: DropReason = "no-destination";

/// Learning switch: known unicast to one link, broadcast/multicast/unknown
/// flooded (never back to the ingress link).
#[crate::stage_kind(router, name = "switch", build = build_switch,
    example = "router: { type: switch, max_macs: 4096, ageing: 300s }")]
#[derive(Debug, Clone, Copy)]
pub struct SwitchSettings {
    /// Learned MACs per room; new MACs beyond it are flooded to, not
    /// learned.
    #[key(default = 4096)]
    pub max_macs: usize,
    /// Forget a MAC not seen for this long (the IEEE 802.1D default).
    #[key(default = "300s")]
    pub ageing: ConfigDuration,
}

/// Hub: every frame to every link except the one it came in on.
#[crate::stage_kind(router, name = "hub", build = build_hub, example = "router: { type: hub }")]
pub struct HubSettings {}

#[derive(Debug, Clone, Copy)]
struct Learned {
    link: LinkId,
    seen: Timestamp,
}

/// A learning switch: known unicast goes to one link, everything else is
/// flooded to every link but the one it came in on.
#[derive(Debug)]
pub struct Switch {
    table: KeyedMap<MacAddr, Learned>,
    max_macs: usize,
    ageing: Duration,
    learn_refused: u64,
}

impl Switch {
    /// A switch with the given settings and an empty table.
    pub fn new(settings: SwitchSettings) -> Switch {
        Switch {
            table: keyed_map_with_capacity(settings.max_macs.min(1024)),
            max_macs: settings.max_macs,
            ageing: settings.ageing.0,
            learn_refused: 0,
        }
    }

    /// The link `mac` was last seen on, if learned and not aged out at `now`.
    pub fn lookup(&self, mac: MacAddr, now: Timestamp) -> Option<LinkId> {
        self.table
            .get(&mac)
            .filter(|e| now.saturating_since(e.seen) < self.ageing)
            .map(|e| e.link)
    }

    /// How many new MACs were not learned because the table was full.
    pub fn learn_refused(&self) -> u64 {
        self.learn_refused
    }

    fn learn(&mut self, mac: MacAddr, link: LinkId, now: Timestamp) {
        if !mac.is_unicast() || mac.is_zero() {
            return;
        }
        if let Some(entry) = self.table.get_mut(&mac) {
            entry.link = link;
            entry.seen = now;
            return;
        }
        if self.table.len() >= self.max_macs {
            // Make room by dropping aged entries before refusing.
            let ageing = self.ageing;
            self.table
                .retain(|_, e| now.saturating_since(e.seen) < ageing);
            if self.table.len() >= self.max_macs {
                self.learn_refused += 1;
                return;
            }
        }
        self.table.insert(mac, Learned { link, seen: now });
    }
}

/// Pushes every link but `ingress` onto `out`.
pub fn flood(ingress: LinkId, links: &[LinkInfo], out: &mut Vec<LinkId>) -> Result<(), DropReason> {
    out.extend(links.iter().map(|l| l.id).filter(|id| *id != ingress));
    if out.is_empty() {
        Err(NO_DESTINATION)
    } else {
        Ok(())
    }
}

impl Router for Switch {
    fn route(
        &mut self,
        ctx: &FilterContext<'_>,
        frame: &FrameView<'_>,
        links: &[LinkInfo],
        out: &mut Vec<LinkId>,
    ) -> Result<(), DropReason> {
        let ingress = ctx.ingress.id;
        let eth = frame.eth();
        self.learn(eth.src, ingress, ctx.now);
        if eth.dst.is_unicast() {
            if let Some(link) = self.lookup(eth.dst, ctx.now) {
                if link == ingress {
                    return Err(LOCAL_DESTINATION);
                }
                out.push(link);
                return Ok(());
            }
        }
        flood(ingress, links, out)
    }

    fn link_removed(&mut self, link: LinkId) {
        self.table.retain(|_, e| e.link != link);
    }

    fn tick(&mut self, now: Timestamp) {
        let ageing = self.ageing;
        self.table
            .retain(|_, e| now.saturating_since(e.seen) < ageing);
    }

    fn table_len(&self) -> usize {
        self.table.len()
    }

    fn macs_claimed(&mut self, macs: &[MacAddr], link: LinkId) {
        for mac in macs {
            if self.table.get(mac).is_some_and(|e| e.link != link) {
                self.table.remove(mac);
            }
        }
    }

    fn learned_on(&self, mac: MacAddr, now: Timestamp) -> Option<LinkId> {
        self.lookup(mac, now)
    }
}

/// A hub: every frame to every link but the one it came in on.
#[derive(Debug, Default)]
pub struct Hub;

impl Router for Hub {
    fn route(
        &mut self,
        ctx: &FilterContext<'_>,
        _frame: &FrameView<'_>,
        links: &[LinkInfo],
        out: &mut Vec<LinkId>,
    ) -> Result<(), DropReason> {
        flood(ctx.ingress.id, links, out)
    }

    fn link_removed(&mut self, _link: LinkId) {}
}

fn build_switch(config: &StageConfig) -> Result<RouterFactory, Vec<ConfigError>> {
    let settings: SwitchSettings = config.parse()?;
    if settings.max_macs == 0 {
        return Err(vec![config.error("max_macs", "must be at least 1")]);
    }
    if settings.ageing.0.is_zero() {
        return Err(vec![config.error("ageing", "must be longer than 0s")]);
    }
    Ok(Arc::new(move || Box::new(Switch::new(settings))))
}

fn build_hub(config: &StageConfig) -> Result<RouterFactory, Vec<ConfigError>> {
    let HubSettings {} = config.parse()?;
    Ok(Arc::new(|| Box::new(Hub)))
}

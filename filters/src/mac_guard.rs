//! `mac-guard`: source MAC anti-spoofing.
//!
//! - Every role: a multicast/broadcast or all-zero source MAC is dropped.
//! - `client` links may only send with the MAC they were admitted with
//!   (the hello's MAC): nobody can impersonate another player or the LAN.
//! - `gateway`, `lan` and `host` links bridge whole segments and may use
//!   many source MACs, up to `max_macs` per link; a MAC not seen for
//!   `ageing` is forgotten and frees its slot.
//!
//! Decides on the L2 header only (validated by the pipeline), so it never
//! meets a frame it cannot classify.

use lanparty_core::keyed_hash::{KeyedMap, keyed_map};

use lanparty_core::config::{ConfigDuration, ConfigError, StageConfig};
use lanparty_core::registry::{FilterFactory, filter_factory};
use lanparty_core::stage::{DropReason, Filter, FilterContext, LinkId, LinkRole, Verdict};
use lanparty_core::time::Timestamp;
use lanparty_core::wire::{FrameView, MacAddr};

/// Drop reason: multicast or broadcast source MAC.
pub const MULTICAST_SOURCE: DropReason = "multicast-source";
/// Drop reason: all-zero source MAC.
pub const ZERO_SOURCE: DropReason = "zero-source";
/// Drop reason: a client sent with a MAC it was not admitted with.
pub const SPOOFED_SOURCE: DropReason = "spoofed-source";
/// Drop reason: a multi-MAC link exceeded its MAC limit.
pub const TOO_MANY_MACS: DropReason = "too-many-macs";

/// Anti-spoofing: clients send only with their admitted MAC; no
/// multicast/zero sources; MAC limit per gateway.
#[lanparty_core::stage_kind(filter(ingress), name = "mac-guard", build = build,
    example = "ingress: [ { type: mac-guard, max_macs: 1024 } ]")]
#[derive(Debug, Clone)]
pub struct MacGuardSettings {
    /// Source MACs per gateway/lan/host link.
    #[key(default = 1024)]
    pub max_macs: usize,
    /// A gateway-side MAC not seen this long frees its slot.
    #[key(default = "300s")]
    pub ageing: ConfigDuration,
}

/// The filter.
#[derive(Debug)]
pub struct MacGuard {
    max_macs: usize,
    ageing: std::time::Duration,
    seen: KeyedMap<LinkId, KeyedMap<MacAddr, Timestamp>>,
}

impl Filter for MacGuard {
    fn ingress(&mut self, ctx: &FilterContext<'_>, frame: &FrameView<'_>) -> Verdict {
        let src = frame.eth().src;
        if src.is_multicast() {
            return Verdict::Drop(MULTICAST_SOURCE);
        }
        if src.is_zero() {
            return Verdict::Drop(ZERO_SOURCE);
        }
        if ctx.ingress.role == LinkRole::Client {
            return if ctx.ingress.macs.contains(&src) {
                Verdict::Pass
            } else {
                Verdict::Drop(SPOOFED_SOURCE)
            };
        }
        if ctx.ingress.macs.contains(&src) {
            return Verdict::Pass;
        }
        let macs = self.seen.entry(ctx.ingress.id).or_default();
        if let Some(seen) = macs.get_mut(&src) {
            *seen = ctx.now;
            return Verdict::Pass;
        }
        if macs.len() >= self.max_macs {
            let ageing = self.ageing;
            macs.retain(|_, seen| ctx.now.saturating_since(*seen) < ageing);
            if macs.len() >= self.max_macs {
                return Verdict::Drop(TOO_MANY_MACS);
            }
        }
        macs.insert(src, ctx.now);
        Verdict::Pass
    }

    fn link_removed(&mut self, link: LinkId) {
        self.seen.remove(&link);
    }

    fn tick(&mut self, now: Timestamp) {
        let ageing = self.ageing;
        for macs in self.seen.values_mut() {
            macs.retain(|_, seen| now.saturating_since(*seen) < ageing);
        }
    }
}

fn build(config: &StageConfig) -> Result<FilterFactory, Vec<ConfigError>> {
    let settings: MacGuardSettings = config.parse()?;
    if settings.max_macs == 0 {
        return Err(vec![config.error("max_macs", "must be at least 1")]);
    }
    Ok(filter_factory(settings, |s| MacGuard {
        max_macs: s.max_macs,
        ageing: s.ageing.0,
        seen: keyed_map(),
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lanparty_core::stage::LinkRole;
    use lanparty_core::testing::Harness;
    use lanparty_core::testing::frames::{self, Tags};
    use lanparty_core::wire::MacAddr;

    const C: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const G: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn from(src: MacAddr) -> Vec<u8> {
        frames::ethernet(MacAddr::BROADCAST, src, Tags::None, 0x0806, 28)
    }

    fn harness(yaml: &str) -> Harness {
        let mut h = Harness::from_room_yaml(yaml).unwrap();
        h.add_link("client", LinkRole::Client, C);
        h.add_link("gw", LinkRole::Gateway, G);
        h
    }

    #[test]
    fn clients_only_send_as_themselves() {
        let mut h = harness("ingress: [ { type: mac-guard } ]");
        assert_eq!(h.send("client", from(C)).destinations(), ["gw"]);
        assert_eq!(
            h.send("client", from(G)).drop_reason(),
            Some("spoofed-source")
        );
        assert_eq!(
            h.send("client", from(MacAddr([2, 0, 0, 0, 0, 9])))
                .drop_reason(),
            Some("spoofed-source")
        );
        assert_eq!(
            h.send("client", from(MacAddr::BROADCAST)).drop_reason(),
            Some("multicast-source")
        );
        assert_eq!(
            h.send("gw", from(MacAddr([1, 0, 0x5e, 0, 0, 1])))
                .drop_reason(),
            Some("multicast-source")
        );
        assert_eq!(
            h.send("gw", from(MacAddr::ZERO)).drop_reason(),
            Some("zero-source")
        );
    }

    #[test]
    fn gateways_bridge_many_macs_up_to_the_limit() {
        let mut h = harness("ingress: [ { type: mac-guard, max_macs: 2, ageing: 10s } ]");
        let lan = |i| MacAddr([0, 0x1b, 0x21, 0, 0, i]);
        assert!(h.send("gw", from(lan(1))).dropped.is_none());
        assert!(h.send("gw", from(lan(2))).dropped.is_none());
        assert!(
            h.send("gw", from(G)).dropped.is_none(),
            "the gateway's own MAC never counts"
        );
        assert_eq!(
            h.send("gw", from(lan(3))).drop_reason(),
            Some("too-many-macs")
        );
        assert!(
            h.send("gw", from(lan(1))).dropped.is_none(),
            "known MACs still pass"
        );
        h.advance(Duration::from_secs(11));
        assert!(
            h.send("gw", from(lan(3))).dropped.is_none(),
            "aged MACs free their slots"
        );
    }

    #[test]
    fn leaving_forgets_the_links_macs() {
        use lanparty_core::stage::{Filter, FilterContext, LinkId, LinkInfo};
        use lanparty_core::time::Timestamp;
        use lanparty_core::wire::FrameView;
        let mut guard = super::MacGuard {
            max_macs: 8,
            ageing: Duration::from_secs(300),
            seen: Default::default(),
        };
        let link = LinkInfo {
            id: LinkId(4),
            name: "gw".into(),
            role: LinkRole::Gateway,
            macs: vec![G],
            mtu: 1394,
        };
        let ctx = FilterContext {
            now: Timestamp::ZERO,
            ingress: &link,
            room_mtu: 1394,
            room: "test",
        };
        let frame = from(MacAddr([0, 0x1b, 0x21, 0, 0, 1]));
        guard.ingress(&ctx, &FrameView::parse(&frame).unwrap());
        assert_eq!(guard.seen[&LinkId(4)].len(), 1);
        guard.link_removed(LinkId(4));
        assert!(guard.seen.is_empty());
    }
}

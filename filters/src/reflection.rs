//! `reflection`: an egress filter that never lets a frame leave on the link
//! it came in on. Routers already exclude the ingress link, so every drop
//! counted here points at a misbehaving router or a loop.
//!
//! Needs only link ids: it cannot meet a frame it fails to parse.

use lanparty_core::config::{ConfigError, StageConfig};
use lanparty_core::registry::{FilterFactory, filter_factory};
use lanparty_core::stage::{DropReason, Filter, FilterContext, LinkInfo, Verdict};
use lanparty_core::wire::FrameView;

/// Drop reason: the destination is the ingress link.
pub const REFLECTION: DropReason = "reflection";

/// Egress: never send a frame back out of the link it came in on (counts
/// router mistakes and loops).
#[lanparty_core::stage_kind(filter(egress), name = "reflection", build = build,
    example = "egress: [ { type: reflection } ]")]
#[derive(Debug, Clone, Default)]
pub struct ReflectionSettings {}

/// The filter.
#[derive(Debug, Default)]
pub struct Reflection;

impl Filter for Reflection {
    fn egress(
        &mut self,
        ctx: &FilterContext<'_>,
        _frame: &FrameView<'_>,
        dst: &LinkInfo,
    ) -> Verdict {
        if dst.id == ctx.ingress.id {
            Verdict::Drop(REFLECTION)
        } else {
            Verdict::Pass
        }
    }
}

fn build(config: &StageConfig) -> Result<FilterFactory, Vec<ConfigError>> {
    let settings: ReflectionSettings = config.parse()?;
    Ok(filter_factory(settings, |_| Reflection))
}

#[cfg(test)]
mod tests {
    use lanparty_core::stage::LinkRole;
    use lanparty_core::testing::Harness;
    use lanparty_core::testing::frames::{self, Tags};
    use lanparty_core::wire::MacAddr;

    #[test]
    fn drops_frames_a_hub_would_reflect_only_if_it_did() {
        // The built-in routers never reflect, so the counter stays at 0 …
        let mut h =
            Harness::from_room_yaml("router: { type: hub }\negress: [ { type: reflection } ]")
                .unwrap();
        let a = MacAddr([2, 0, 0, 0, 0, 1]);
        h.add_link("a", LinkRole::Client, a);
        h.add_link("b", LinkRole::Client, MacAddr([2, 0, 0, 0, 0, 2]));
        let d = h.send(
            "a",
            frames::ethernet(MacAddr::BROADCAST, a, Tags::None, 0x0806, 28),
        );
        assert_eq!(d.destinations(), ["b"]);
        assert!(d.egress_dropped.is_empty());
    }

    #[test]
    fn drops_when_destination_is_ingress() {
        use lanparty_core::stage::{Filter, FilterContext, LinkId, LinkInfo, Verdict};
        use lanparty_core::time::Timestamp;
        use lanparty_core::wire::FrameView;
        let link = LinkInfo {
            id: LinkId(1),
            name: "a".into(),
            role: LinkRole::Client,
            macs: vec![],
            mtu: 1394,
        };
        let other = LinkInfo {
            id: LinkId(2),
            ..link.clone()
        };
        let ctx = FilterContext {
            now: Timestamp::ZERO,
            ingress: &link,
            room_mtu: 1394,
            room: "test",
        };
        let bytes = frames::ethernet(
            MacAddr::BROADCAST,
            MacAddr([2, 0, 0, 0, 0, 1]),
            Tags::None,
            0x0800,
            46,
        );
        let view = FrameView::parse(&bytes).unwrap();
        let mut f = super::Reflection;
        assert_eq!(
            f.egress(&ctx, &view, &link),
            Verdict::Drop(super::REFLECTION)
        );
        assert_eq!(f.egress(&ctx, &view, &other), Verdict::Pass);
    }
}

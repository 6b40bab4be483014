//! `jumbo`: drops frames whose L3 payload exceeds the room MTU (ingress) or
//! the destination link's MTU (egress). VLAN-aware: the tags are part of
//! the L2 header, not of the MTU, so a tagged frame of full MTU passes.
//!
//! Needs only the L2 header, which the pipeline has already validated: it
//! never meets a frame it cannot measure.

use lanparty_core::config::{ConfigError, StageConfig};
use lanparty_core::registry::{FilterFactory, filter_factory};
use lanparty_core::stage::{DropReason, Filter, FilterContext, LinkInfo, Verdict};
use lanparty_core::wire::FrameView;

/// Drop reason: larger than the room MTU.
pub const OVER_ROOM_MTU: DropReason = "over-room-mtu";
/// Drop reason: larger than the destination link's MTU.
pub const OVER_LINK_MTU: DropReason = "over-link-mtu";

/// Drop frames over the room MTU (ingress) or the destination link's MTU
/// (egress); VLAN-aware.
#[lanparty_core::stage_kind(filter(both), name = "jumbo", build = build,
    example = "ingress: [ { type: jumbo } ]\negress: [ { type: jumbo } ]")]
#[derive(Debug, Clone, Default)]
pub struct JumboSettings {
    /// A stricter limit than the room MTU.
    #[key(shown = "the room MTU")]
    pub mtu: Option<u16>,
}

/// The filter.
#[derive(Debug)]
pub struct Jumbo {
    mtu: Option<u16>,
}

impl Jumbo {
    fn limit(&self, room_mtu: u16) -> usize {
        usize::from(self.mtu.map_or(room_mtu, |m| m.min(room_mtu)))
    }
}

impl Filter for Jumbo {
    fn ingress(&mut self, ctx: &FilterContext<'_>, frame: &FrameView<'_>) -> Verdict {
        if frame.l3_len() > self.limit(ctx.room_mtu) {
            Verdict::Drop(OVER_ROOM_MTU)
        } else {
            Verdict::Pass
        }
    }

    fn egress(
        &mut self,
        ctx: &FilterContext<'_>,
        frame: &FrameView<'_>,
        dst: &LinkInfo,
    ) -> Verdict {
        if frame.l3_len() > self.limit(ctx.room_mtu) {
            Verdict::Drop(OVER_ROOM_MTU)
        } else if frame.l3_len() > usize::from(dst.mtu) {
            Verdict::Drop(OVER_LINK_MTU)
        } else {
            Verdict::Pass
        }
    }
}

fn build(config: &StageConfig) -> Result<FilterFactory, Vec<ConfigError>> {
    let settings: JumboSettings = config.parse()?;
    if let Some(mtu) = settings.mtu {
        lanparty_core::wire::mtu::validate_mtu(u32::from(mtu))
            .map_err(|e| vec![config.error("mtu", e.to_string())])?;
    }
    Ok(filter_factory(settings, |s| Jumbo { mtu: s.mtu }))
}

#[cfg(test)]
mod tests {
    use lanparty_core::stage::LinkRole;
    use lanparty_core::testing::Harness;
    use lanparty_core::testing::frames::{Tags, ipv4_of_len};
    use lanparty_core::wire::MacAddr;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

    fn harness(room: &str) -> Harness {
        let mut h = Harness::from_room_yaml(room).unwrap();
        h.add_link("a", LinkRole::Client, A);
        h.add_link_with_mtu("small", LinkRole::Client, MacAddr([2, 0, 0, 0, 0, 2]), 1280);
        h.add_link("big", LinkRole::Gateway, MacAddr([2, 0, 0, 0, 0, 3]));
        h
    }

    #[test]
    fn ingress_limit_is_the_room_mtu_tagged_or_not() {
        let mut h = harness("mtu: 1394\ningress: [ { type: jumbo } ]");
        for tags in [Tags::None, Tags::Single(7), Tags::Double(1, 2)] {
            let d = h.send("a", ipv4_of_len(MacAddr::BROADCAST, A, tags, 1394));
            assert_eq!(d.destinations(), ["big", "small"], "{tags:?}");
            let d = h.send("a", ipv4_of_len(MacAddr::BROADCAST, A, tags, 1395));
            assert_eq!(d.drop_reason(), Some("over-room-mtu"), "{tags:?}");
        }
        assert_eq!(h.stats().dropped("over-room-mtu"), 3);
    }

    #[test]
    fn egress_checks_each_destination_link() {
        let mut h = harness("mtu: 1394\negress: [ { type: jumbo } ]");
        let d = h.send(
            "a",
            ipv4_of_len(MacAddr::BROADCAST, A, Tags::Single(3), 1300),
        );
        assert_eq!(d.destinations(), ["big"]);
        assert_eq!(
            d.egress_dropped,
            vec![("egress[0]:jumbo".into(), "over-link-mtu".into())]
        );
        let d = h.send("a", ipv4_of_len(MacAddr::BROADCAST, A, Tags::None, 1280));
        assert_eq!(d.destinations(), ["big", "small"]);
    }

    #[test]
    fn stricter_limit_and_bad_settings() {
        let mut h = harness("mtu: 1394\ningress: [ { type: jumbo, mtu: 1000 } ]");
        assert_eq!(
            h.send("a", ipv4_of_len(MacAddr::BROADCAST, A, Tags::None, 1001))
                .drop_reason(),
            Some("over-room-mtu")
        );
        assert!(Harness::from_room_yaml("ingress: [ { type: jumbo, mtu: 10 } ]").is_err());
        assert!(Harness::from_room_yaml("ingress: [ { type: jumbo, mt: 1000 } ]").is_err());
    }
}

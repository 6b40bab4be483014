//! `ipv6-ra`: only the LAN may advertise IPv6 routers. A router
//! advertisement (ICMPv6 type 134) entering on a link whose role is not
//! allowed (default: `gateway` and `lan`) is dropped (`mode: drop`), or kept
//! with its router lifetime rewritten to 0 (`mode: zero-lifetime`): hosts
//! still configure addresses from its prefixes, but the remote router never
//! becomes anyone's default route. The ICMPv6 checksum is updated
//! (RFC 1624). VLAN tags or not.
//!
//! Fails closed: what the frame view cannot judge from a role that may not
//! advertise is dropped under the frame view's reason — `unparseable` IPv6
//! headers, an RA in a fragment (`ra-fragment`, RFC 6980/7113), a first
//! fragment without its whole header chain (`fragment-header-chain`, RFC
//! 7112); see `lanparty_core::wire::frame`.

use etherparse::{EtherType, SlicedPacket, TransportSlice};
use lanparty_core::Bytes;
use lanparty_core::config::{ConfigError, StageConfig};
use lanparty_core::registry::{FilterFactory, filter_factory};
use lanparty_core::stage::{DropReason, Filter, FilterContext, LinkRole, Verdict};
use lanparty_core::wire::checksum::with_word;
use lanparty_core::wire::{FrameView, Judged, ethertype};
use serde::Deserialize;

use crate::roles::RoleSet;

/// Drop reason: an RA from a role that may not advertise.
pub const ROUTER_ADVERTISEMENT: DropReason = "router-advertisement";
/// Drop reason: IPv6 headers that do not parse, from a role that may not
/// advertise.
pub const UNPARSEABLE: DropReason = lanparty_core::wire::frame::UNPARSEABLE;

/// What to do with an RA from a role that may not advertise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RaMode {
    /// Drop it.
    #[default]
    Drop,
    /// Keep it with router lifetime 0.
    ZeroLifetime,
}

/// IPv6 router advertisements from roles that may not route: drop them,
/// or zero their router lifetime.
#[lanparty_core::stage_kind(filter(ingress), name = "ipv6-ra", build = build,
    example = "ingress: [ { type: ipv6-ra, mode: zero-lifetime } ]")]
#[derive(Debug, Clone)]
pub struct Ipv6RaSettings {
    /// Roles whose RAs pass untouched.
    #[key(default = "[gateway, lan]")]
    pub allow_roles: Vec<LinkRole>,
    /// `zero-lifetime` keeps the RA (SLAAC still works) but the sender
    /// never becomes a default router.
    #[key(default = "drop", ty = "drop | zero-lifetime")]
    pub mode: RaMode,
}

/// The filter.
#[derive(Debug)]
pub struct Ipv6Ra {
    allowed: RoleSet,
    mode: RaMode,
}

/// Offset of the RA's router lifetime field within the ICMPv6 message.
const ROUTER_LIFETIME_OFFSET: usize = 6;
/// Offset of the ICMPv6 checksum.
const CHECKSUM_OFFSET: usize = 2;

/// Returns a copy of the RA in `frame` with router lifetime 0, or `None`
/// if it already is 0 or the ICMPv6 message cannot be located.
pub fn zero_router_lifetime(frame: &FrameView<'_>) -> Option<Vec<u8>> {
    let packet =
        SlicedPacket::from_ether_type(EtherType(ethertype::IPV6), frame.l3_bytes()).ok()?;
    let Some(TransportSlice::Icmpv6(icmp)) = packet.transport else {
        return None;
    };
    let start = frame.offset_of(icmp.slice())?;
    let bytes = frame.bytes();
    let field = start + ROUTER_LIFETIME_OFFSET;
    let lifetime = u16::from_be_bytes([*bytes.get(field)?, *bytes.get(field + 1)?]);
    if lifetime == 0 {
        return None;
    }
    with_word(bytes, field, 0, start + CHECKSUM_OFFSET)
}

impl Filter for Ipv6Ra {
    fn ingress(&mut self, ctx: &FilterContext<'_>, frame: &FrameView<'_>) -> Verdict {
        if self.allowed.contains(ctx.ingress.role) || frame.eth().ethertype != ethertype::IPV6 {
            return Verdict::Pass;
        }
        match frame.router_advertisement() {
            Judged::IsNot => return Verdict::Pass,
            // A fragment that is or might be an RA is dropped in every
            // mode (RA-Guard, RFC 7113): it cannot be rewritten safely.
            Judged::Unknown(reason) => return Verdict::Drop(reason),
            Judged::Is => {}
        }
        match self.mode {
            RaMode::Drop => Verdict::Drop(ROUTER_ADVERTISEMENT),
            RaMode::ZeroLifetime => match zero_router_lifetime(frame) {
                Some(rewritten) => Verdict::Replace(Bytes::from(rewritten)),
                None => Verdict::Pass,
            },
        }
    }
}

fn build(config: &StageConfig) -> Result<FilterFactory, Vec<ConfigError>> {
    let settings: Ipv6RaSettings = config.parse()?;
    Ok(filter_factory(settings, |s| Ipv6Ra {
        allowed: s.allow_roles.iter().collect(),
        mode: s.mode,
    }))
}

#[cfg(test)]
mod tests {
    use lanparty_core::stage::LinkRole;
    use lanparty_core::testing::Harness;
    use lanparty_core::testing::frames::{self, Tags};
    use lanparty_core::wire::MacAddr;

    const C: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const G: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn harness(yaml: &str) -> Harness {
        let mut h = Harness::from_room_yaml(yaml).unwrap();
        h.add_link("client", LinkRole::Client, C);
        h.add_link("gw", LinkRole::Gateway, G);
        h
    }

    #[test]
    fn drops_client_ras_tagged_or_not() {
        let mut h = harness("ingress: [ { type: ipv6-ra } ]");
        for tags in [Tags::None, Tags::Single(10), Tags::Double(100, 10)] {
            assert_eq!(
                h.send("client", frames::ipv6_ra(C, tags, 1800))
                    .drop_reason(),
                Some("router-advertisement")
            );
            let d = h.send("gw", frames::ipv6_ra(G, tags, 1800));
            assert_eq!(
                (d.destinations(), d.frame_to("client").map(|b| b.to_vec())),
                (vec!["client"], Some(frames::ipv6_ra(G, tags, 1800)))
            );
            // Other ICMPv6 from clients passes.
            assert_eq!(
                h.send("client", frames::ipv6_echo(G, C, tags))
                    .destinations(),
                ["gw"]
            );
        }
    }

    #[test]
    fn zero_lifetime_rewrites_with_a_valid_checksum() {
        let mut h = harness("ingress: [ { type: ipv6-ra, mode: zero-lifetime } ]");
        for tags in [Tags::None, Tags::Single(10), Tags::Double(100, 10)] {
            for lifetime in [1, 1800, 9000, 0xffff] {
                let d = h.send("client", frames::ipv6_ra(C, tags, lifetime));
                let got = d.frame_to("gw").expect("RA delivered").to_vec();
                // The rewritten frame equals one built with lifetime 0 from
                // scratch, checksum included.
                assert_eq!(
                    got,
                    frames::ipv6_ra(C, tags, 0),
                    "{tags:?} lifetime {lifetime}"
                );
            }
            let zero = frames::ipv6_ra(C, tags, 0);
            assert_eq!(
                h.send("client", zero.clone())
                    .frame_to("gw")
                    .unwrap()
                    .to_vec(),
                zero
            );
        }
        let rewritten = h
            .stats()
            .stage("ingress[0]:ipv6-ra")
            .unwrap()
            .counters
            .rewritten;
        assert_eq!(rewritten, 12);
    }

    #[test]
    fn fails_closed_on_unparseable_ipv6() {
        let mut h = harness("ingress: [ { type: ipv6-ra } ]");
        let ra = frames::ipv6_ra(C, Tags::None, 1800);
        for cut in [20, 54, 60] {
            assert_eq!(
                h.send("client", ra[..cut].to_vec()).drop_reason(),
                Some("unparseable"),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn ras_in_fragments_are_dropped_in_every_mode() {
        for mode in ["drop", "zero-lifetime"] {
            let mut h = harness(&format!("ingress: [ {{ type: ipv6-ra, mode: {mode} }} ]"));
            let ra = frames::ipv6_ra_message(C, 1800);
            for tags in [Tags::None, Tags::Single(10)] {
                // The RA header in the first fragment.
                let (first, later) = frames::ipv6_fragments(C, tags, 58, &ra, 16, false);
                assert_eq!(
                    h.send("client", first).drop_reason(),
                    Some("ra-fragment"),
                    "{mode}"
                );
                assert!(h.send("client", later).dropped.is_none());
                // Split so that the first fragment holds no ICMPv6 header:
                // the receiver would reassemble an RA (RFC 7112 violation).
                let (first, _) = frames::ipv6_fragments(C, tags, 58, &ra, 0, true);
                assert_eq!(
                    h.send("client", first).drop_reason(),
                    Some("fragment-header-chain"),
                    "{mode}"
                );
            }
            // The gateway's fragments pass; a fragmented echo from a client too.
            let (first, _) = frames::ipv6_fragments(G, Tags::None, 58, &ra, 16, false);
            assert!(h.send("gw", first).dropped.is_none());
            let echo = frames::ipv6_echo(G, C, Tags::None);
            let (first, later) =
                frames::ipv6_fragments(C, Tags::None, 58, &echo[14 + 40..], 8, false);
            assert!(h.send("client", first).dropped.is_none());
            assert!(h.send("client", later).dropped.is_none());
        }
    }
}

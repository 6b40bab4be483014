//! `dhcp-server`: only the LAN may hand out addresses. Drops DHCPv4 server
//! messages (BOOTREPLY from UDP port 67: offers, acks, naks) and DHCPv6
//! server messages (ADVERTISE, REPLY, RECONFIGURE, RELAY-REPL from UDP port
//! 547) that enter on a link whose role is not allowed (default: `gateway`
//! and `lan`), VLAN tags or not. A player's misconfigured router or ICS
//! must not hand the host's LAN its addresses.
//!
//! Fails closed: an IPv4/IPv6 frame from a role that may not serve DHCP
//! whose headers do not parse is dropped as `unparseable`, since it cannot
//! be shown not to be a server message.

use lanparty_core::config::{ConfigError, StageConfig};
use lanparty_core::registry::{
    FilterFactory, KeyDoc, StageBuild, StageRegistration, filter_factory,
};
use lanparty_core::stage::{DropReason, Filter, FilterContext, FilterSides, LinkRole, Verdict};
use lanparty_core::wire::{FrameView, L3Kind};
use serde::Deserialize;

use crate::roles::{RoleSet, infrastructure_roles};

/// Drop reason: a DHCPv4 server message from a role that may not serve.
pub const DHCPV4_SERVER: DropReason = "dhcpv4-server";
/// Drop reason: a DHCPv6 server message from a role that may not serve.
pub const DHCPV6_SERVER: DropReason = "dhcpv6-server";
/// Drop reason: IP headers that do not parse, from a role that may not serve.
pub const UNPARSEABLE: DropReason = "unparseable";

/// `dhcp-server` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpServerSettings {
    /// `allow_roles`: roles whose DHCP server messages pass.
    #[serde(default = "infrastructure_roles")]
    pub allow_roles: Vec<LinkRole>,
    /// `v4`: police DHCPv4. Default true.
    #[serde(default = "yes")]
    pub v4: bool,
    /// `v6`: police DHCPv6. Default true.
    #[serde(default = "yes")]
    pub v6: bool,
}

fn yes() -> bool {
    true
}

/// The filter.
#[derive(Debug)]
pub struct DhcpServer {
    allowed: RoleSet,
    v4: bool,
    v6: bool,
}

impl Filter for DhcpServer {
    fn ingress(&mut self, ctx: &FilterContext<'_>, frame: &FrameView<'_>) -> Verdict {
        if self.allowed.contains(ctx.ingress.role) {
            return Verdict::Pass;
        }
        if frame.l3().kind == L3Kind::Malformed {
            return Verdict::Drop(UNPARSEABLE);
        }
        if self.v4 && frame.is_dhcpv4_server() {
            return Verdict::Drop(DHCPV4_SERVER);
        }
        if self.v6 && frame.is_dhcpv6_server() {
            return Verdict::Drop(DHCPV6_SERVER);
        }
        Verdict::Pass
    }
}

fn build(config: &StageConfig) -> Result<FilterFactory, Vec<ConfigError>> {
    let settings: DhcpServerSettings = config.parse()?;
    Ok(filter_factory(settings, |s| DhcpServer {
        allowed: s.allow_roles.iter().collect(),
        v4: s.v4,
        v6: s.v6,
    }))
}

lanparty_core::inventory::submit! {
    StageRegistration {
        name: "dhcp-server",
        summary: "drop DHCPv4/DHCPv6 server messages (offers, acks, advertise, reply) unless the ingress role may serve DHCP",
        keys: &[
            KeyDoc { name: "allow_roles", ty: "list of client | gateway | lan | host", default: "[gateway, lan]", doc: "roles whose DHCP server messages pass" },
            KeyDoc { name: "v4", ty: "bool", default: "true", doc: "police DHCPv4 (UDP 67 BOOTREPLY)" },
            KeyDoc { name: "v6", ty: "bool", default: "true", doc: "police DHCPv6 (UDP 547 advertise/reply/reconfigure/relay-reply)" },
        ],
        example: "ingress: [ { type: dhcp-server, allow_roles: [gateway, lan] } ]",
        build: StageBuild::Filter { sides: FilterSides::Ingress, build },
    }
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
        h.add_link("other", LinkRole::Client, MacAddr([2, 0, 0, 0, 0, 3]));
        h
    }

    #[test]
    fn client_offers_are_dropped_gateway_offers_pass() {
        let mut h = harness("ingress: [ { type: dhcp-server } ]");
        for tags in [Tags::None, Tags::Single(10), Tags::Double(100, 10)] {
            assert_eq!(
                h.send("client", frames::dhcp_offer(C, tags, C))
                    .drop_reason(),
                Some("dhcpv4-server"),
                "{tags:?}"
            );
            assert_eq!(
                h.send("client", frames::dhcpv6_advertise(G, C, tags))
                    .drop_reason(),
                Some("dhcpv6-server")
            );
            assert_eq!(
                h.send("gw", frames::dhcp_offer(G, tags, C)).destinations(),
                ["client", "other"]
            );
            // Clients may still ask.
            assert_eq!(
                h.send("client", frames::dhcp_discover(C, tags))
                    .destinations(),
                ["gw", "other"]
            );
        }
    }

    #[test]
    fn fails_closed_on_unparseable_ip_from_untrusted_roles() {
        let mut h = harness("ingress: [ { type: dhcp-server } ]");
        let offer = frames::dhcp_offer(C, Tags::Single(4), C);
        for cut in [19, 30, 40] {
            let d = h.send("client", offer[..cut].to_vec());
            assert_eq!(d.drop_reason(), Some("unparseable"), "cut {cut}");
        }
        // The gateway is trusted, so its truncated frames are not this filter's business.
        assert!(
            h.send("gw", frames::dhcp_offer(G, Tags::None, C)[..30].to_vec())
                .dropped
                .is_none()
        );
    }

    #[test]
    fn roles_and_families_are_configurable() {
        let mut h = harness("ingress: [ { type: dhcp-server, allow_roles: [client], v6: false } ]");
        assert!(
            h.send("client", frames::dhcp_offer(C, Tags::None, C))
                .dropped
                .is_none()
        );
        assert_eq!(
            h.send("gw", frames::dhcp_offer(G, Tags::None, C))
                .drop_reason(),
            Some("dhcpv4-server")
        );
        assert!(
            h.send("gw", frames::dhcpv6_advertise(C, G, Tags::None))
                .dropped
                .is_none()
        );
        assert!(
            Harness::from_room_yaml("ingress: [ { type: dhcp-server, allow_roles: [router] } ]")
                .is_err()
        );
    }
}

//! `dhcp-server`: only the LAN may hand out addresses. Drops DHCPv4 server
//! messages (BOOTREPLY from UDP port 67: offers, acks, naks) and DHCPv6
//! server messages (ADVERTISE, REPLY, RECONFIGURE, RELAY-REPL from UDP port
//! 547) that enter on a link whose role is not allowed (default: `gateway`
//! and `lan`), VLAN tags or not. A player's misconfigured router or ICS
//! must not hand the host's LAN its addresses.
//!
//! Fails closed: what the frame view cannot judge from a role that may not
//! serve DHCP is dropped under the frame view's reason — `unparseable` IP
//! headers, an IP first fragment of UDP to a DHCP port (`dhcp-fragment`),
//! a first fragment without its whole header chain
//! (`fragment-header-chain`); see `lanparty_core::wire::frame`.

use lanparty_core::config::{ConfigError, StageConfig};
use lanparty_core::registry::{FilterFactory, filter_factory};
use lanparty_core::stage::{DropReason, Filter, FilterContext, LinkRole, Verdict};
use lanparty_core::wire::{FrameView, Judged, L3Kind};

use crate::roles::RoleSet;

/// Drop reason: a DHCPv4 server message from a role that may not serve.
pub const DHCPV4_SERVER: DropReason = "dhcpv4-server";
/// Drop reason: a DHCPv6 server message from a role that may not serve.
pub const DHCPV6_SERVER: DropReason = "dhcpv6-server";
/// Drop reason: IP headers that do not parse, from a role that may not serve.
pub const UNPARSEABLE: DropReason = lanparty_core::wire::frame::UNPARSEABLE;

/// Drop DHCPv4/DHCPv6 server messages (offers, acks, advertise, reply)
/// unless the ingress role may serve DHCP.
#[lanparty_core::stage_kind(filter(ingress), name = "dhcp-server", build = build,
    example = "ingress: [ { type: dhcp-server, allow_roles: [gateway, lan] } ]")]
#[derive(Debug, Clone)]
pub struct DhcpServerSettings {
    /// Roles whose DHCP server messages pass.
    #[key(default = "[gateway, lan]")]
    pub allow_roles: Vec<LinkRole>,
    /// Police DHCPv4 (UDP 67 BOOTREPLY).
    #[key(default = true)]
    pub v4: bool,
    /// Police DHCPv6 (UDP 547 advertise/reply/reconfigure/relay-reply).
    #[key(default = true)]
    pub v6: bool,
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
        let policed = match frame.l3().kind {
            L3Kind::Ipv4 => self.v4,
            L3Kind::Ipv6 => self.v6,
            L3Kind::Malformed => self.v4 || self.v6,
            L3Kind::Arp | L3Kind::Other => false,
        };
        if !policed {
            return Verdict::Pass;
        }
        match frame.dhcp_server() {
            Judged::Is if frame.is_dhcpv4_server() => Verdict::Drop(DHCPV4_SERVER),
            Judged::Is => Verdict::Drop(DHCPV6_SERVER),
            Judged::Unknown(reason) => Verdict::Drop(reason),
            Judged::IsNot => Verdict::Pass,
        }
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
    fn fragmented_offers_cannot_sneak_through() {
        let mut h = harness("ingress: [ { type: dhcp-server } ]");
        for tags in [Tags::None, Tags::Single(10)] {
            let offer = frames::dhcp_offer(C, tags, C);
            // First fragment: the UDP header to port 68 and the start of BOOTP.
            let (first, later) = frames::ipv4_fragments(&offer, 64, None);
            assert_eq!(h.send("client", first).drop_reason(), Some("dhcp-fragment"));
            // A later fragment has no ports: without its first fragment it
            // never reassembles, so it is not this filter's to judge.
            assert!(h.send("client", later).dropped.is_none());
            // A first fragment too short for the UDP header.
            let (tiny, _) = frames::ipv4_fragments(&offer, 8, Some(0));
            assert_eq!(
                h.send("client", tiny).drop_reason(),
                Some("fragment-header-chain")
            );
            // The gateway's fragments pass (it may serve).
            let from_lan = frames::dhcp_offer(G, tags, C);
            let (first, _) = frames::ipv4_fragments(&from_lan, 64, None);
            assert!(h.send("gw", first).dropped.is_none());
        }
        // Fragmented UDP to any other port is a player's business.
        let game = frames::ipv4_udp(
            G,
            C,
            Tags::None,
            [10, 0, 0, 5],
            [10, 0, 0, 6],
            27015,
            27015,
            &[7; 2000],
        );
        let (first, later) = frames::ipv4_fragments(&game, 1400, None);
        assert!(h.send("client", first).dropped.is_none());
        assert!(h.send("client", later).dropped.is_none());
    }

    #[test]
    fn fragmented_dhcpv6_is_dropped_from_clients() {
        let mut h = harness("ingress: [ { type: dhcp-server } ]");
        let advertise = frames::dhcpv6_advertise(G, C, Tags::None);
        let udp = &advertise[14 + 40..];
        let (first, later) = frames::ipv6_fragments(C, Tags::None, 17, udp, 8, false);
        assert_eq!(h.send("client", first).drop_reason(), Some("dhcp-fragment"));
        assert!(h.send("client", later).dropped.is_none());
        // The UDP header pushed out of the first fragment (RFC 7112).
        let (first, _) = frames::ipv6_fragments(C, Tags::None, 17, udp, 0, true);
        assert_eq!(
            h.send("client", first).drop_reason(),
            Some("fragment-header-chain")
        );
    }

    #[test]
    fn server_messages_are_known_by_destination_port_not_source_port() {
        let mut h = harness("ingress: [ { type: dhcp-server } ]");
        let mut bootp = frames::dhcp_body(2, 2, C);
        bootp.truncate(300);
        // BOOTREPLY from port 9999 to a client's port 68.
        let sneaky = frames::ipv4_udp(
            MacAddr::BROADCAST,
            C,
            Tags::None,
            [10, 0, 0, 9],
            [255; 4],
            9999,
            68,
            &bootp,
        );
        assert_eq!(
            h.send("client", sneaky).drop_reason(),
            Some("dhcpv4-server")
        );
        // A BOOTREQUEST to 67 from a client still passes.
        let request = frames::ipv4_udp(
            MacAddr::BROADCAST,
            C,
            Tags::None,
            [0; 4],
            [255; 4],
            68,
            67,
            &frames::dhcp_body(1, 1, C),
        );
        assert!(h.send("client", request).dropped.is_none());
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

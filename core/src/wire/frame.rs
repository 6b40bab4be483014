//! The per-frame view: the L2 header parsed once when a frame enters a room,
//! and the L3/L4 facts that filters ask about computed at most once, on the
//! first question.
//!
//! IP fragments are judged here, once, for every filter (ours and third
//! parties'), so that all fail closed the same way:
//! - the ports and the first bytes of an upper-layer header live only in a
//!   datagram's first fragment (offset 0); a later fragment cannot turn a
//!   harmless datagram into a DHCP or RA message, because receivers discard
//!   overlapping fragments (RFC 5722; Linux does so for IPv4 too) and a
//!   datagram whose first fragment was dropped never reassembles. So later
//!   fragments are judged "is not", and first fragments are judged on the
//!   header they carry;
//! - an IPv6 first fragment must hold the whole header chain up to and
//!   including the upper-layer header (RFC 7112), and an IPv4 first fragment
//!   the whole UDP/TCP/ICMP header: if not, the fact is unknown
//!   ([`FRAGMENT_HEADER_CHAIN`]);
//! - DHCP is never fragmented in practice and ND must not be (RFC 6980):
//!   a first fragment of UDP to a DHCP port is unknown ([`DHCP_FRAGMENT`]),
//!   and a router advertisement in a fragment is unknown ([`RA_FRAGMENT`],
//!   RA-Guard's rule, RFC 7113).
//!
//! Guards drop unknown facts from roles that may not send the real thing.

use std::cell::OnceCell;

use etherparse::{EtherType, NetSlice, SlicedPacket, TransportSlice};

use super::ethernet::{EthernetError, EthernetHeader, ethertype};

/// UDP port of a DHCPv4 server.
pub const DHCPV4_SERVER_PORT: u16 = 67;
/// UDP port of a DHCPv4 client.
pub const DHCPV4_CLIENT_PORT: u16 = 68;
/// UDP port of a DHCPv6 server or relay agent.
pub const DHCPV6_SERVER_PORT: u16 = 547;
/// UDP port of a DHCPv6 client.
pub const DHCPV6_CLIENT_PORT: u16 = 546;
/// ICMPv6 type of a router advertisement.
pub const ICMPV6_ROUTER_ADVERTISEMENT: u8 = 134;

/// IP protocol numbers (IPv4 protocol, IPv6 next header) the code looks
/// for.
pub mod ip_proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
}

/// Unknown: the IP headers do not parse.
pub const UNPARSEABLE: &str = "unparseable";
/// Unknown: a first fragment without its whole header chain (RFC 7112).
pub const FRAGMENT_HEADER_CHAIN: &str = "fragment-header-chain";
/// Unknown: a first fragment of UDP to a DHCP port.
pub const DHCP_FRAGMENT: &str = "dhcp-fragment";
/// Unknown: a router advertisement in a fragment (RFC 6980, RFC 7113).
pub const RA_FRAGMENT: &str = "ra-fragment";

/// UDP ports whose messages the DHCP guard must see whole.
const DHCP_PORTS: [u16; 4] = [
    DHCPV4_SERVER_PORT,
    DHCPV4_CLIENT_PORT,
    DHCPV6_CLIENT_PORT,
    DHCPV6_SERVER_PORT,
];

/// A fact the frame view decides for the filters: it is so, it is not, or
/// it cannot be known (with the reason a guard drops it under).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judged {
    /// It is.
    Is,
    /// It is not.
    IsNot,
    /// It cannot be established from this frame.
    Unknown(&'static str),
}

/// Where an IP packet stands in fragmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// A whole packet.
    Whole,
    /// The first fragment (offset 0, more follow): it carries the
    /// upper-layer header, if the sender put all of it there.
    First,
    /// A later fragment (offset > 0): no upper-layer header.
    Later,
}

/// What the layer-3 part of a frame turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L3Kind {
    /// IPv4 with a header that parsed.
    Ipv4,
    /// IPv6 with a header that parsed.
    Ipv6,
    /// ARP.
    Arp,
    /// Some other ethertype; not looked into.
    Other,
    /// The ethertype says IPv4, IPv6 or ARP but the bytes do not parse.
    /// Filters that must see inside a packet treat this as suspect.
    Malformed,
}

/// Layer 3 and 4 facts about a frame, computed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L3Facts {
    /// The kind of layer-3 payload.
    pub kind: L3Kind,
    /// IP protocol / next header of the transport, when IP parsed.
    pub ip_protocol: Option<u8>,
    /// UDP or TCP source port.
    pub src_port: Option<u16>,
    /// UDP or TCP destination port.
    pub dst_port: Option<u16>,
    /// True when this is UDP.
    pub is_udp: bool,
    /// The first byte of the UDP payload (DHCPv4 `op`, DHCPv6 message type).
    pub udp_first_byte: Option<u8>,
    /// ICMPv6 type, when this is ICMPv6.
    pub icmpv6_type: Option<u8>,
    /// Whether this is a whole packet or a fragment.
    pub fragment: Fragment,
    /// A first fragment that does not hold the whole header chain and
    /// upper-layer header.
    pub header_chain_incomplete: bool,
}

impl L3Facts {
    fn other(kind: L3Kind) -> L3Facts {
        L3Facts {
            kind,
            ip_protocol: None,
            src_port: None,
            dst_port: None,
            is_udp: false,
            udp_first_byte: None,
            icmpv6_type: None,
            fragment: Fragment::Whole,
            header_chain_incomplete: false,
        }
    }

    fn compute(ethertype: u16, l3: &[u8]) -> L3Facts {
        if !matches!(
            ethertype,
            ethertype::IPV4 | ethertype::IPV6 | ethertype::ARP
        ) {
            return Self::other(L3Kind::Other);
        }
        let fragment = match ethertype {
            ethertype::IPV4 => ipv4_fragment(l3),
            ethertype::IPV6 => ipv6_fragment(l3),
            _ => None,
        };
        if let Some(facts) = fragment {
            return facts;
        }
        let Ok(packet) = SlicedPacket::from_ether_type(EtherType(ethertype), l3) else {
            return Self::other(L3Kind::Malformed);
        };
        let mut facts = match packet.net {
            Some(NetSlice::Ipv4(ref ip)) => {
                let mut f = Self::other(L3Kind::Ipv4);
                f.ip_protocol = Some(ip.header().protocol().0);
                f
            }
            Some(NetSlice::Ipv6(ref ip)) => {
                let mut f = Self::other(L3Kind::Ipv6);
                f.ip_protocol = Some(ip.payload().ip_number.0);
                f
            }
            Some(NetSlice::Arp(_)) => return Self::other(L3Kind::Arp),
            None => return Self::other(L3Kind::Malformed),
        };
        match packet.transport {
            Some(TransportSlice::Udp(udp)) => {
                facts.is_udp = true;
                facts.src_port = Some(udp.source_port());
                facts.dst_port = Some(udp.destination_port());
                facts.udp_first_byte = udp.payload().first().copied();
            }
            Some(TransportSlice::Tcp(tcp)) => {
                facts.src_port = Some(tcp.source_port());
                facts.dst_port = Some(tcp.destination_port());
            }
            Some(TransportSlice::Icmpv6(icmp)) => facts.icmpv6_type = Some(icmp.type_u8()),
            _ => {}
        }
        facts
    }
}

/// The facts of an IPv4 fragment, or `None` for a whole packet (or bytes
/// that etherparse will judge).
fn ipv4_fragment(ip: &[u8]) -> Option<L3Facts> {
    let header = ip.get(..20)?;
    let ihl = usize::from(header[0] & 0x0f) * 4;
    if header[0] >> 4 != 4 || ihl < 20 || ip.len() < ihl {
        return None;
    }
    let flags = u16::from_be_bytes([header[6], header[7]]);
    let (more, offset) = (flags & 0x2000 != 0, flags & 0x1fff);
    if !more && offset == 0 {
        return None;
    }
    let mut facts = L3Facts::other(L3Kind::Ipv4);
    facts.ip_protocol = Some(header[9]);
    if offset > 0 {
        facts.fragment = Fragment::Later;
        return Some(facts);
    }
    facts.fragment = Fragment::First;
    let total = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let payload = ip.get(ihl..total.clamp(ihl, ip.len())).unwrap_or_default();
    upper_facts(&mut facts, header[9], payload);
    Some(facts)
}

/// IPv6 extension headers that have the generic (next, length in 8-byte
/// units minus one) shape: hop-by-hop, routing, destination options,
/// mobility, HIP, shim6.
const IPV6_GENERIC_EXTENSIONS: [u8; 6] = [0, 43, 60, 135, 139, 140];
/// IPv6 fragment header.
const IPV6_FRAGMENT: u8 = 44;
/// IPv6 authentication header.
const IPV6_AUTH: u8 = 51;
/// Extension headers walked at most.
const IPV6_MAX_EXTENSIONS: usize = 16;

/// The facts of an IPv6 fragment (walking the extension header chain), or
/// `None` for a whole packet.
fn ipv6_fragment(ip: &[u8]) -> Option<L3Facts> {
    let header = ip.get(..40)?;
    if header[0] >> 4 != 6 {
        return None;
    }
    let total = 40 + usize::from(u16::from_be_bytes([header[4], header[5]]));
    let ip = &ip[..total.min(ip.len())];
    let (mut next, mut at) = (header[6], 40usize);
    let mut fragment = None;
    let mut incomplete = false;
    for _ in 0..IPV6_MAX_EXTENSIONS {
        let len = match next {
            n if IPV6_GENERIC_EXTENSIONS.contains(&n) => {
                ip.get(at + 1).map(|l| (usize::from(*l) + 1) * 8)
            }
            IPV6_AUTH => ip.get(at + 1).map(|l| (usize::from(*l) + 2) * 4),
            IPV6_FRAGMENT => {
                if let Some(f) = ip.get(at + 2..at + 4) {
                    let word = u16::from_be_bytes([f[0], f[1]]);
                    fragment = Some(word >> 3);
                }
                Some(8)
            }
            _ => break,
        };
        match (len, ip.get(at)) {
            (Some(len), Some(&following)) if at + len <= ip.len() => {
                next = following;
                at += len;
            }
            _ => {
                incomplete = true;
                break;
            }
        }
        if fragment.is_some_and(|offset| offset > 0) {
            break;
        }
    }
    if fragment.is_none() && !incomplete {
        return None;
    }
    let mut facts = L3Facts::other(L3Kind::Ipv6);
    facts.ip_protocol = Some(next);
    match fragment {
        Some(offset) if offset > 0 => facts.fragment = Fragment::Later,
        Some(_) => {
            facts.fragment = Fragment::First;
            facts.header_chain_incomplete = incomplete;
            if !incomplete {
                upper_facts(&mut facts, next, ip.get(at..).unwrap_or_default());
            }
        }
        // A chain that runs past the packet without a fragment header:
        // etherparse reports it as malformed.
        None => return None,
    }
    Some(facts)
}

/// Fills the upper-layer facts from a first fragment's payload, or marks
/// the chain incomplete when the header is not all there.
fn upper_facts(facts: &mut L3Facts, protocol: u8, payload: &[u8]) {
    use ip_proto::{ICMP, ICMPV6, TCP, UDP};
    let need = match protocol {
        UDP => 8,
        TCP => 20,
        ICMPV6 | ICMP => 4,
        _ => 0,
    };
    if payload.len() < need {
        facts.header_chain_incomplete = true;
        return;
    }
    match protocol {
        UDP | TCP => {
            facts.is_udp = protocol == UDP;
            facts.src_port = Some(u16::from_be_bytes([payload[0], payload[1]]));
            facts.dst_port = Some(u16::from_be_bytes([payload[2], payload[3]]));
            if protocol == UDP {
                facts.udp_first_byte = payload.get(8).copied();
            }
        }
        ICMPV6 => facts.icmpv6_type = payload.first().copied(),
        _ => {}
    }
}

/// A frame as every stage sees it: the bytes, the L2 header parsed once, and
/// lazily computed L3/L4 facts shared by every stage that asks.
#[derive(Debug)]
pub struct FrameView<'a> {
    bytes: &'a [u8],
    eth: EthernetHeader,
    l3: OnceCell<L3Facts>,
}

impl<'a> FrameView<'a> {
    /// Parses the L2 header. Fails on frames too short for their header or
    /// with more than two VLAN tags; such frames never enter a pipeline.
    pub fn parse(bytes: &'a [u8]) -> Result<FrameView<'a>, EthernetError> {
        Ok(FrameView {
            bytes,
            eth: EthernetHeader::parse(bytes)?,
            l3: OnceCell::new(),
        })
    }

    /// The whole frame.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Frame length in bytes (without FCS).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a parsed frame has at least a header.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The L2 header.
    pub fn eth(&self) -> &EthernetHeader {
        &self.eth
    }

    /// Where `part`, a slice of this frame's bytes (e.g. the transport
    /// header etherparse found in [`Self::l3_bytes`]), starts in the frame.
    pub fn offset_of(&self, part: &[u8]) -> Option<usize> {
        let offset = (part.as_ptr() as usize).checked_sub(self.bytes.as_ptr() as usize)?;
        (offset + part.len() <= self.bytes.len()).then_some(offset)
    }

    /// The bytes after the L2 header (and any VLAN tags).
    pub fn l3_bytes(&self) -> &'a [u8] {
        self.bytes.get(self.eth.header_len..).unwrap_or(&[])
    }

    /// Length of the L3 payload: what an interface MTU limits.
    pub fn l3_len(&self) -> usize {
        self.bytes.len().saturating_sub(self.eth.header_len)
    }

    /// The L3/L4 facts, computed on the first call.
    pub fn l3(&self) -> &L3Facts {
        self.l3
            .get_or_init(|| L3Facts::compute(self.eth.ethertype, self.l3_bytes()))
    }

    /// Destined to the IEEE 802.1D reserved range 01:80:C2:00:00:00–0F.
    pub fn is_ieee_link_local(&self) -> bool {
        self.eth.dst.is_ieee_link_local()
    }

    /// A whole DHCPv4 server message: UDP to port 68 (a client) or 67 (a
    /// relay agent) with BOOTP `op` = 2 (BOOTREPLY): offers, acks and naks.
    /// Recognised by destination port and op, not by source port: clients
    /// do not check where a reply came from.
    pub fn is_dhcpv4_server(&self) -> bool {
        let l3 = self.l3();
        l3.kind == L3Kind::Ipv4
            && l3.fragment == Fragment::Whole
            && l3.is_udp
            && matches!(l3.dst_port, Some(DHCPV4_CLIENT_PORT | DHCPV4_SERVER_PORT))
            && l3.udp_first_byte == Some(2)
    }

    /// A whole DHCPv6 server message: UDP to port 546 (a client) or 547 (a
    /// relay agent) with message type ADVERTISE (2), REPLY (7), RECONFIGURE
    /// (10) or RELAY-REPL (13).
    pub fn is_dhcpv6_server(&self) -> bool {
        let l3 = self.l3();
        l3.kind == L3Kind::Ipv6
            && l3.fragment == Fragment::Whole
            && l3.is_udp
            && matches!(l3.dst_port, Some(DHCPV6_CLIENT_PORT | DHCPV6_SERVER_PORT))
            && matches!(l3.udp_first_byte, Some(2 | 7 | 10 | 13))
    }

    /// A whole ICMPv6 router advertisement.
    pub fn is_ipv6_router_advertisement(&self) -> bool {
        let l3 = self.l3();
        l3.fragment == Fragment::Whole && l3.icmpv6_type == Some(ICMPV6_ROUTER_ADVERTISEMENT)
    }

    /// Whether the frame is, is not, or might be a DHCP server message
    /// (v4 or v6); see the module doc for fragments.
    pub fn dhcp_server(&self) -> Judged {
        let l3 = self.l3();
        if l3.kind == L3Kind::Malformed {
            return Judged::Unknown(UNPARSEABLE);
        }
        match l3.fragment {
            Fragment::Later => Judged::IsNot,
            Fragment::First if l3.header_chain_incomplete => Judged::Unknown(FRAGMENT_HEADER_CHAIN),
            Fragment::First
                if l3.is_udp && l3.dst_port.is_some_and(|p| DHCP_PORTS.contains(&p)) =>
            {
                Judged::Unknown(DHCP_FRAGMENT)
            }
            Fragment::First => Judged::IsNot,
            Fragment::Whole if self.is_dhcpv4_server() || self.is_dhcpv6_server() => Judged::Is,
            Fragment::Whole => Judged::IsNot,
        }
    }

    /// Whether the frame is, is not, or might be an IPv6 router
    /// advertisement; see the module doc for fragments.
    pub fn router_advertisement(&self) -> Judged {
        let l3 = self.l3();
        if self.eth.ethertype != ethertype::IPV6 {
            return Judged::IsNot;
        }
        if l3.kind == L3Kind::Malformed {
            return Judged::Unknown(UNPARSEABLE);
        }
        match l3.fragment {
            Fragment::Later => Judged::IsNot,
            Fragment::First if l3.header_chain_incomplete => Judged::Unknown(FRAGMENT_HEADER_CHAIN),
            Fragment::First if l3.icmpv6_type == Some(ICMPV6_ROUTER_ADVERTISEMENT) => {
                Judged::Unknown(RA_FRAGMENT)
            }
            Fragment::First => Judged::IsNot,
            Fragment::Whole if self.is_ipv6_router_advertisement() => Judged::Is,
            Fragment::Whole => Judged::IsNot,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    const SRC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const DST: [u8; 6] = [0xff; 6];

    fn udp(src_port: u16, dst_port: u16, payload: &[u8], vlan: Option<u16>) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(SRC, DST);
        let mut out = Vec::new();
        match vlan {
            Some(vid) => eth
                .single_vlan(vid.try_into().unwrap())
                .ipv4([10, 0, 0, 1], [255; 4], 64)
                .udp(src_port, dst_port)
                .write(&mut out, payload)
                .unwrap(),
            None => eth
                .ipv4([10, 0, 0, 1], [255; 4], 64)
                .udp(src_port, dst_port)
                .write(&mut out, payload)
                .unwrap(),
        }
        out
    }

    #[test]
    fn dhcp_offer_seen_through_vlan_tag() {
        let mut bootp = vec![0u8; 240];
        bootp[0] = 2;
        for vlan in [None, Some(42)] {
            let frame = udp(67, 68, &bootp, vlan);
            let view = FrameView::parse(&frame).unwrap();
            assert!(view.is_dhcpv4_server(), "vlan {vlan:?}");
            assert!(!view.is_ipv6_router_advertisement());
            assert_eq!(view.l3().kind, L3Kind::Ipv4);
        }
        bootp[0] = 1; // BOOTREQUEST
        let frame = udp(68, 67, &bootp, None);
        assert!(!FrameView::parse(&frame).unwrap().is_dhcpv4_server());
    }

    #[test]
    fn router_advertisement() {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(SRC, [0x33, 0x33, 0, 0, 0, 1])
            .ipv6(
                [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                255,
            )
            .icmpv6(etherparse::Icmpv6Type::RouterAdvertisement(
                etherparse::icmpv6::RouterAdvertisementHeader {
                    cur_hop_limit: 64,
                    managed_address_config: false,
                    other_config: false,
                    router_lifetime: 1800,
                },
            ))
            .write(&mut out, &[0u8; 8])
            .unwrap();
        let view = FrameView::parse(&out).unwrap();
        assert!(view.is_ipv6_router_advertisement());
        assert_eq!(view.l3().kind, L3Kind::Ipv6);
    }

    #[test]
    fn truncated_ip_is_malformed_not_a_panic() {
        let frame = udp(67, 68, &[2; 10], None);
        for cut in 14..frame.len() - 10 {
            let view = FrameView::parse(&frame[..cut]).unwrap();
            assert_eq!(view.l3().kind, L3Kind::Malformed, "cut at {cut}");
            assert!(!view.is_dhcpv4_server());
        }
    }

    #[test]
    fn other_ethertypes_are_not_parsed() {
        let mut frame = vec![0xffu8; 12];
        frame.extend_from_slice(&0x88b5u16.to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3]);
        let view = FrameView::parse(&frame).unwrap();
        assert_eq!(view.l3().kind, L3Kind::Other);
        assert_eq!(view.l3_len(), 3);
    }
}

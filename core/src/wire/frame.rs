//! The per-frame view: the L2 header parsed once when a frame enters a room,
//! and the L3/L4 facts that filters ask about computed at most once, on the
//! first question.

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
        }
    }

    fn compute(ethertype: u16, l3: &[u8]) -> L3Facts {
        if !matches!(
            ethertype,
            ethertype::IPV4 | ethertype::IPV6 | ethertype::ARP
        ) {
            return Self::other(L3Kind::Other);
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

    /// A DHCPv4 server message: UDP from port 67 with BOOTP `op` = 2
    /// (BOOTREPLY): offers, acks and naks, also from relay agents.
    pub fn is_dhcpv4_server(&self) -> bool {
        let l3 = self.l3();
        l3.kind == L3Kind::Ipv4
            && l3.is_udp
            && l3.src_port == Some(DHCPV4_SERVER_PORT)
            && l3.udp_first_byte == Some(2)
    }

    /// A DHCPv6 server message: UDP from port 547 to port 546 or 547 with
    /// message type ADVERTISE (2), REPLY (7), RECONFIGURE (10) or
    /// RELAY-REPL (13).
    pub fn is_dhcpv6_server(&self) -> bool {
        let l3 = self.l3();
        l3.kind == L3Kind::Ipv6
            && l3.is_udp
            && l3.src_port == Some(DHCPV6_SERVER_PORT)
            && matches!(l3.udp_first_byte, Some(2 | 7 | 10 | 13))
    }

    /// An ICMPv6 router advertisement.
    pub fn is_ipv6_router_advertisement(&self) -> bool {
        self.l3().icmpv6_type == Some(ICMPV6_ROUTER_ADVERTISEMENT)
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

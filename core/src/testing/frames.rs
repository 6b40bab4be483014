//! Builders for real frame bytes, for tests of every tier: plain Ethernet,
//! ARP, UDP, DHCP offers, IPv6 router advertisements, STP BPDUs, LLDP,
//! LACP and pause frames, each optionally VLAN-tagged (802.1Q or QinQ).

use etherparse::{Icmpv6Type, PacketBuilder};

use crate::wire::MacAddr;
use crate::wire::ethertype;

/// The MAC of STP BPDUs (01:80:C2:00:00:00).
pub const STP_MAC: MacAddr = MacAddr([0x01, 0x80, 0xc2, 0x00, 0x00, 0x00]);
/// The MAC of slow protocols: LACP, marker (01:80:C2:00:00:02).
pub const SLOW_PROTOCOLS_MAC: MacAddr = MacAddr([0x01, 0x80, 0xc2, 0x00, 0x00, 0x02]);
/// The MAC of MAC control / pause frames (01:80:C2:00:00:01).
pub const PAUSE_MAC: MacAddr = MacAddr([0x01, 0x80, 0xc2, 0x00, 0x00, 0x01]);
/// The nearest-bridge MAC of LLDP (01:80:C2:00:00:0E).
pub const LLDP_MAC: MacAddr = MacAddr([0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e]);
/// The all-nodes IPv6 multicast MAC (33:33:00:00:00:01).
pub const IPV6_ALL_NODES_MAC: MacAddr = MacAddr([0x33, 0x33, 0, 0, 0, 1]);

/// VLAN tags to put on a frame, outermost first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tags {
    /// Untagged.
    #[default]
    None,
    /// One 802.1Q tag.
    Single(u16),
    /// An 802.1ad outer tag and an 802.1Q inner tag.
    Double(u16, u16),
}

impl Tags {
    /// Tags from a list of VLAN ids (0, 1 or 2 of them).
    pub fn from_ids(ids: &[u16]) -> Option<Tags> {
        match ids {
            [] => Some(Tags::None),
            [a] => Some(Tags::Single(*a)),
            [a, b] => Some(Tags::Double(*a, *b)),
            _ => None,
        }
    }

    fn write_header(self, dst: MacAddr, src: MacAddr, ethertype: u16, out: &mut Vec<u8>) {
        out.extend_from_slice(&dst.0);
        out.extend_from_slice(&src.0);
        match self {
            Tags::None => {}
            Tags::Single(vid) => {
                out.extend_from_slice(&ethertype::VLAN.to_be_bytes());
                out.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
            }
            Tags::Double(outer, inner) => {
                out.extend_from_slice(&ethertype::QINQ.to_be_bytes());
                out.extend_from_slice(&(outer & 0x0fff).to_be_bytes());
                out.extend_from_slice(&ethertype::VLAN.to_be_bytes());
                out.extend_from_slice(&(inner & 0x0fff).to_be_bytes());
            }
        }
        out.extend_from_slice(&ethertype.to_be_bytes());
    }
}

/// An Ethernet II frame with `payload_len` zero bytes of payload.
pub fn ethernet(
    dst: MacAddr,
    src: MacAddr,
    tags: Tags,
    ethertype: u16,
    payload_len: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(22 + payload_len);
    tags.write_header(dst, src, ethertype, &mut out);
    out.resize(out.len() + payload_len, 0);
    out
}

/// Writes the L2 header with etherparse and the L3 packet after it.
fn with_l3(dst: MacAddr, src: MacAddr, tags: Tags, ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(22 + l3.len());
    tags.write_header(dst, src, ethertype, &mut out);
    out.extend_from_slice(l3);
    out
}

/// An IPv4 UDP packet (no L2 header) with valid checksums.
pub fn ipv4_udp_packet(
    src_ip: [u8; 4],
    dst_ip: [u8; 4],
    src_port: u16,
    dst_port: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail; a payload too large for IPv4 yields an
    // empty packet, which the caller's frame-level checks will notice.
    let _ = PacketBuilder::ipv4(src_ip, dst_ip, 64)
        .udp(src_port, dst_port)
        .write(&mut out, payload);
    out
}

/// An IPv4 UDP frame.
#[allow(clippy::too_many_arguments)]
pub fn ipv4_udp(
    dst: MacAddr,
    src: MacAddr,
    tags: Tags,
    src_ip: [u8; 4],
    dst_ip: [u8; 4],
    src_port: u16,
    dst_port: u16,
    payload: &[u8],
) -> Vec<u8> {
    with_l3(
        dst,
        src,
        tags,
        ethertype::IPV4,
        &ipv4_udp_packet(src_ip, dst_ip, src_port, dst_port, payload),
    )
}

/// An IPv4 packet of exactly `l3_len` bytes (UDP with zero payload), for
/// MTU tests.
pub fn ipv4_of_len(dst: MacAddr, src: MacAddr, tags: Tags, l3_len: usize) -> Vec<u8> {
    let payload = vec![0u8; l3_len.saturating_sub(28)];
    ipv4_udp(
        dst,
        src,
        tags,
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        40000,
        40001,
        &payload,
    )
}

/// A BOOTP/DHCP message body: `op` (1 request, 2 reply) and DHCP message
/// type (option 53: 1 discover, 2 offer, 5 ack …).
pub fn dhcp_body(op: u8, message_type: u8, client: MacAddr) -> Vec<u8> {
    let mut body = vec![0u8; 236];
    body[0] = op;
    body[1] = 1; // Ethernet
    body[2] = 6; // MAC length
    body[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    body[28..34].copy_from_slice(&client.0);
    body.extend_from_slice(&[99, 130, 83, 99]); // magic cookie
    body.extend_from_slice(&[53, 1, message_type, 255]);
    body
}

/// A DHCPv4 offer from a server (UDP 67 → 68, BOOTREPLY) to broadcast.
pub fn dhcp_offer(src: MacAddr, tags: Tags, client: MacAddr) -> Vec<u8> {
    ipv4_udp(
        MacAddr::BROADCAST,
        src,
        tags,
        [192, 168, 1, 1],
        [255; 4],
        67,
        68,
        &dhcp_body(2, 2, client),
    )
}

/// A DHCPv4 discover from a client (UDP 68 → 67, BOOTREQUEST) to broadcast.
pub fn dhcp_discover(src: MacAddr, tags: Tags) -> Vec<u8> {
    ipv4_udp(
        MacAddr::BROADCAST,
        src,
        tags,
        [0; 4],
        [255; 4],
        68,
        67,
        &dhcp_body(1, 1, src),
    )
}

fn link_local(mac: MacAddr) -> [u8; 16] {
    let m = mac.0;
    [
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 2,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ]
}

/// A DHCPv6 ADVERTISE from a server (UDP 547 → 546).
pub fn dhcpv6_advertise(dst: MacAddr, src: MacAddr, tags: Tags) -> Vec<u8> {
    let mut l3 = Vec::new();
    let _ = PacketBuilder::ipv6(link_local(src), link_local(dst), 64)
        .udp(547, 546)
        .write(&mut l3, &[2, 0, 0, 1]);
    with_l3(dst, src, tags, ethertype::IPV6, &l3)
}

/// An ICMPv6 router advertisement to all nodes with the given router
/// lifetime (seconds) and a source link-layer address option.
pub fn ipv6_ra(src: MacAddr, tags: Tags, router_lifetime: u16) -> Vec<u8> {
    let mut l3 = Vec::new();
    let mut options = vec![1u8, 1];
    options.extend_from_slice(&src.0);
    let _ = PacketBuilder::ipv6(
        link_local(src),
        [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        255,
    )
    .icmpv6(Icmpv6Type::RouterAdvertisement(
        etherparse::icmpv6::RouterAdvertisementHeader {
            cur_hop_limit: 64,
            managed_address_config: false,
            other_config: false,
            router_lifetime,
        },
    ))
    .write(&mut l3, &[&[0u8; 8][..], &options].concat());
    with_l3(IPV6_ALL_NODES_MAC, src, tags, ethertype::IPV6, &l3)
}

/// A TCP segment between 10.0.0.1 and 10.0.0.2 (IPv4) or two link-local
/// addresses (IPv6), with valid checksums: `syn`/`ack` flags, an MSS option
/// when given (after a NOP and a window scale, as Linux writes them), and
/// `payload`.
#[allow(clippy::too_many_arguments)]
pub fn tcp_segment(
    dst: MacAddr,
    src: MacAddr,
    tags: Tags,
    ipv6: bool,
    syn: bool,
    ack: bool,
    mss: Option<u16>,
    payload: &[u8],
) -> Vec<u8> {
    use etherparse::TcpOptionElement::{MaximumSegmentSize, Noop, WindowScale};
    let ip = if ipv6 {
        PacketBuilder::ipv6(link_local(src), link_local(dst), 64)
    } else {
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
    };
    let mut tcp = ip.tcp(40000, 5201, 1000, 64240);
    if syn {
        tcp = tcp.syn();
    }
    if ack {
        tcp = tcp.ack(2000);
    }
    if let Some(mss) = mss {
        // Options always fit in a builder's 40 bytes.
        tcp = match tcp.options(&[Noop, WindowScale(7), MaximumSegmentSize(mss)]) {
            Ok(with) => with,
            Err(_) => return Vec::new(),
        };
    }
    let mut l3 = Vec::new();
    let _ = tcp.write(&mut l3, payload);
    let ethertype = if ipv6 {
        ethertype::IPV6
    } else {
        ethertype::IPV4
    };
    with_l3(dst, src, tags, ethertype, &l3)
}

/// An ICMPv6 echo request between link-local addresses.
pub fn ipv6_echo(dst: MacAddr, src: MacAddr, tags: Tags) -> Vec<u8> {
    let mut l3 = Vec::new();
    let _ = PacketBuilder::ipv6(link_local(src), link_local(dst), 64)
        .icmpv6_echo_request(1, 1)
        .write(&mut l3, b"lanparty");
    with_l3(dst, src, tags, ethertype::IPV6, &l3)
}

/// Splits the IP payload of a whole IPv4 frame (as built by
/// [`ipv4_udp`]) at `split` bytes (a multiple of 8) into a first and a
/// later fragment, each a frame with the same L2 header. `first_len` cuts
/// the first fragment's payload shorter (a "tiny fragment").
pub fn ipv4_fragments(whole: &[u8], split: usize, first_len: Option<usize>) -> (Vec<u8>, Vec<u8>) {
    let l2 = crate::wire::EthernetHeader::parse(whole).map_or(14, |h| h.header_len);
    let ip = &whole[l2..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let payload = &ip[ihl..];
    let make = |part: &[u8], offset: usize, more: bool| {
        let mut out = whole[..l2].to_vec();
        let mut header = ip[..ihl].to_vec();
        let total = (ihl + part.len()) as u16;
        header[2..4].copy_from_slice(&total.to_be_bytes());
        let flags = ((offset / 8) as u16) | if more { 0x2000 } else { 0 };
        header[6..8].copy_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(part);
        out
    };
    let first = &payload[..first_len.unwrap_or(split).min(split)];
    (make(first, 0, true), make(&payload[split..], split, false))
}

/// An IPv6 frame from `src` to the all-nodes group carrying `upper` (the
/// upper-layer header and payload, next header `next`) in fragments: the
/// first fragment holds `first_len` bytes of it after a fragment header
/// (and, with `dest_opts`, a destination options header before that); the
/// later one the rest at offset `first_len` (a multiple of 8).
pub fn ipv6_fragments(
    src: MacAddr,
    tags: Tags,
    next: u8,
    upper: &[u8],
    first_len: usize,
    dest_opts: bool,
) -> (Vec<u8>, Vec<u8>) {
    let make = |part: &[u8], offset: usize, more: bool| {
        let mut ext = Vec::new();
        if dest_opts {
            // Destination options (60): next = fragment, 8 bytes of PadN.
            ext.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]);
        }
        let flags = ((offset / 8) as u16) << 3 | u16::from(more);
        ext.extend_from_slice(&[next, 0]);
        ext.extend_from_slice(&flags.to_be_bytes());
        ext.extend_from_slice(&0x4c50_0001u32.to_be_bytes());
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend_from_slice(&((ext.len() + part.len()) as u16).to_be_bytes());
        ip.push(if dest_opts { 60 } else { 44 });
        ip.push(255);
        ip.extend_from_slice(&link_local(src));
        ip.extend_from_slice(&[0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        ip.extend_from_slice(&ext);
        ip.extend_from_slice(part);
        with_l3(IPV6_ALL_NODES_MAC, src, tags, ethertype::IPV6, &ip)
    };
    let first_len = first_len.min(upper.len());
    (
        make(&upper[..first_len], 0, true),
        make(&upper[first_len..], first_len, false),
    )
}

/// The ICMPv6 message (header and body) of a router advertisement, as in
/// [`ipv6_ra`].
pub fn ipv6_ra_message(src: MacAddr, router_lifetime: u16) -> Vec<u8> {
    let frame = ipv6_ra(src, Tags::None, router_lifetime);
    frame[14 + 40..].to_vec()
}

/// An ARP request from `src` (with `sender_ip`) for `target_ip`, broadcast.
pub fn arp_request(src: MacAddr, tags: Tags, sender_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    let mut l3 = vec![0, 1, 8, 0, 6, 4, 0, 1];
    l3.extend_from_slice(&src.0);
    l3.extend_from_slice(&sender_ip);
    l3.extend_from_slice(&[0; 6]);
    l3.extend_from_slice(&target_ip);
    with_l3(MacAddr::BROADCAST, src, tags, ethertype::ARP, &l3)
}

/// An 802.3 frame with an LLC header (DSAP, SSAP, control) and payload.
fn llc(dst: MacAddr, src: MacAddr, tags: Tags, dsap: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![dsap, dsap, 0x03];
    body.extend_from_slice(payload);
    // The ethertype position holds the 802.3 length.
    with_l3(dst, src, tags, body.len() as u16, &body)
}

/// An STP configuration BPDU (802.3 + LLC 0x42) to 01:80:C2:00:00:00.
pub fn stp_bpdu(src: MacAddr, tags: Tags) -> Vec<u8> {
    let mut bpdu = vec![0u8; 35];
    bpdu[5..11].copy_from_slice(&[0x80, 0, src.0[0], src.0[1], src.0[2], src.0[3]]);
    llc(STP_MAC, src, tags, 0x42, &bpdu)
}

/// An LLDP frame (ethertype 0x88CC) with chassis-id, port-id, TTL and end
/// TLVs.
pub fn lldp(src: MacAddr, tags: Tags) -> Vec<u8> {
    let mut tlvs = vec![0x02, 0x07, 0x04];
    tlvs.extend_from_slice(&src.0);
    tlvs.extend_from_slice(&[0x04, 0x02, 0x07, b'1', 0x06, 0x02, 0x00, 0x78, 0x00, 0x00]);
    with_l3(LLDP_MAC, src, tags, ethertype::LLDP, &tlvs)
}

/// A LACPDU (slow protocols ethertype 0x8809, subtype 1).
pub fn lacp(src: MacAddr, tags: Tags) -> Vec<u8> {
    let mut pdu = vec![0u8; 110];
    pdu[0] = 0x01;
    pdu[1] = 0x01;
    with_l3(
        SLOW_PROTOCOLS_MAC,
        src,
        tags,
        ethertype::SLOW_PROTOCOLS,
        &pdu,
    )
}

/// An 802.3x pause frame (MAC control ethertype 0x8808, opcode 1).
pub fn pause(src: MacAddr, quanta: u16) -> Vec<u8> {
    let mut body = vec![0x00, 0x01];
    body.extend_from_slice(&quanta.to_be_bytes());
    body.resize(46, 0);
    with_l3(PAUSE_MAC, src, Tags::None, ethertype::MAC_CONTROL, &body)
}

/// An EAPOL-Start frame (802.1X) to the PAE group address.
pub fn eapol_start(src: MacAddr) -> Vec<u8> {
    let mut body = vec![0x02, 0x01, 0x00, 0x00];
    body.resize(46, 0);
    with_l3(
        MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x03]),
        src,
        Tags::None,
        ethertype::EAPOL,
        &body,
    )
}

/// Parses a hex string (whitespace, `:` and `-` ignored) into bytes.
pub fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b':' && *b != b'-')
        .collect();
    if digits.len() % 2 != 0 {
        return Err("hex has an odd number of digits".into());
    }
    digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(|| format!("`{}` is not a hex byte", String::from_utf8_lossy(pair)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{FrameView, L3Kind};

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

    #[test]
    fn builders_produce_what_the_view_recognises() {
        for tags in [Tags::None, Tags::Single(10), Tags::Double(100, 10)] {
            let offer = dhcp_offer(A, tags, A);
            let view = FrameView::parse(&offer).unwrap();
            assert!(view.is_dhcpv4_server(), "{tags:?}");
            assert_eq!(
                view.eth().vlan_count(),
                match tags {
                    Tags::None => 0,
                    Tags::Single(_) => 1,
                    Tags::Double(..) => 2,
                }
            );
            assert!(
                !FrameView::parse(&dhcp_discover(A, tags))
                    .unwrap()
                    .is_dhcpv4_server()
            );
            assert!(
                FrameView::parse(&ipv6_ra(A, tags, 1800))
                    .unwrap()
                    .is_ipv6_router_advertisement()
            );
            assert!(
                FrameView::parse(&dhcpv6_advertise(A, A, tags))
                    .unwrap()
                    .is_dhcpv6_server()
            );
            assert!(
                FrameView::parse(&stp_bpdu(A, tags))
                    .unwrap()
                    .is_ieee_link_local()
            );
            assert!(
                FrameView::parse(&lldp(A, tags))
                    .unwrap()
                    .is_ieee_link_local()
            );
            assert!(
                FrameView::parse(&lacp(A, tags))
                    .unwrap()
                    .is_ieee_link_local()
            );
            assert_eq!(
                FrameView::parse(&arp_request(A, tags, [10, 0, 0, 1], [10, 0, 0, 2]))
                    .unwrap()
                    .l3()
                    .kind,
                L3Kind::Arp
            );
            assert_eq!(
                FrameView::parse(&ipv6_echo(A, A, tags)).unwrap().l3().kind,
                L3Kind::Ipv6
            );
        }
        assert_eq!(
            FrameView::parse(&ipv4_of_len(A, A, Tags::None, 1394))
                .unwrap()
                .l3_len(),
            1394
        );
        assert!(
            FrameView::parse(&pause(A, 10))
                .unwrap()
                .is_ieee_link_local()
        );
        assert!(
            FrameView::parse(&eapol_start(A))
                .unwrap()
                .is_ieee_link_local()
        );
    }

    #[test]
    fn hex() {
        assert_eq!(from_hex("ff ff:00-01").unwrap(), vec![0xff, 0xff, 0, 1]);
        assert!(from_hex("f").is_err());
        assert!(from_hex("zz").is_err());
    }
}

//! The link-layer packets the Ethernet emulation reads and writes: ARP,
//! IPv6 neighbour solicitation / advertisement, and multicast MAC mapping.
//! Builders return whole Ethernet frames (padded to 60 bytes); parsers are
//! length-checked and return `None` on anything they do not understand.

use std::net::{Ipv4Addr, Ipv6Addr};

use lanparty_core::wire::MacAddr;
use lanparty_core::wire::ip_proto::ICMPV6 as IPPROTO_ICMPV6;

use crate::inet::{fold, sum};

/// Ethernet header length.
pub const ETH_HLEN: usize = 14;
/// Ethertype IPv4.
pub const ETH_IPV4: u16 = 0x0800;
/// Ethertype ARP.
pub const ETH_ARP: u16 = 0x0806;
/// Ethertype IPv6.
pub const ETH_IPV6: u16 = 0x86dd;
/// ICMPv6 neighbour solicitation.
pub const ND_SOLICIT: u8 = 135;
/// ICMPv6 neighbour advertisement.
pub const ND_ADVERT: u8 = 136;

/// An Ethernet frame around `payload`, padded to the 60-byte minimum.
pub fn ethernet(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity((ETH_HLEN + payload.len()).max(60));
    frame.extend_from_slice(&dst.0);
    frame.extend_from_slice(&src.0);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    if frame.len() < 60 {
        frame.resize(60, 0);
    }
    frame
}

/// The MAC an IPv4 multicast group maps to (01:00:5e + low 23 bits).
pub fn ipv4_multicast_mac(ip: Ipv4Addr) -> MacAddr {
    let o = ip.octets();
    MacAddr([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]])
}

/// The MAC an IPv6 multicast group maps to (33:33 + low 32 bits).
pub fn ipv6_multicast_mac(ip: Ipv6Addr) -> MacAddr {
    let o = ip.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// The solicited-node multicast group of `ip` (ff02::1:ffXX:XXXX).
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// An ARP packet (Ethernet / IPv4 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// 1 request, 2 reply.
    pub op: u16,
    /// Sender MAC.
    pub sha: MacAddr,
    /// Sender IPv4.
    pub spa: Ipv4Addr,
    /// Target MAC.
    pub tha: MacAddr,
    /// Target IPv4.
    pub tpa: Ipv4Addr,
}

/// ARP request.
pub const ARP_REQUEST: u16 = 1;
/// ARP reply.
pub const ARP_REPLY: u16 = 2;

/// The IPv4 address at `at`, if `b` is long enough.
pub fn ipv4_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let o: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(o))
}

/// The IPv6 address at `at`, if `b` is long enough.
pub fn ipv6_at(b: &[u8], at: usize) -> Option<Ipv6Addr> {
    let o: [u8; 16] = b.get(at..at + 16)?.try_into().ok()?;
    Some(Ipv6Addr::from(o))
}

fn mac_at(b: &[u8], at: usize) -> Option<MacAddr> {
    let o: [u8; 6] = b.get(at..at + 6)?.try_into().ok()?;
    Some(MacAddr(o))
}

impl Arp {
    /// Parses an ARP payload (after the Ethernet header).
    pub fn parse(p: &[u8]) -> Option<Arp> {
        if p.get(0..6)? != [0, 1, 8, 0, 6, 4] {
            return None;
        }
        Some(Arp {
            op: u16::from_be_bytes(p.get(6..8)?.try_into().ok()?),
            sha: mac_at(p, 8)?,
            spa: ipv4_at(p, 14)?,
            tha: mac_at(p, 18)?,
            tpa: ipv4_at(p, 24)?,
        })
    }

    /// The frame carrying this packet to `dst`.
    pub fn frame(&self, dst: MacAddr) -> Vec<u8> {
        let mut p = Vec::with_capacity(28);
        p.extend_from_slice(&[0, 1, 8, 0, 6, 4]);
        p.extend_from_slice(&self.op.to_be_bytes());
        p.extend_from_slice(&self.sha.0);
        p.extend_from_slice(&self.spa.octets());
        p.extend_from_slice(&self.tha.0);
        p.extend_from_slice(&self.tpa.octets());
        ethernet(dst, self.sha, ETH_ARP, &p)
    }
}

/// A neighbour solicitation or advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbor {
    /// [`ND_SOLICIT`] or [`ND_ADVERT`].
    pub kind: u8,
    /// The IPv6 source.
    pub src: Ipv6Addr,
    /// The target address.
    pub target: Ipv6Addr,
    /// The source (NS) or target (NA) link-layer address option.
    pub lladdr: Option<MacAddr>,
}

impl Neighbor {
    /// Parses an IPv6 packet that is an NS or NA without extension headers.
    pub fn parse(ip: &[u8]) -> Option<Neighbor> {
        if ip.first()? >> 4 != 6 || *ip.get(6)? != IPPROTO_ICMPV6 || *ip.get(7)? != 255 {
            return None;
        }
        let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        let icmp = ip.get(40..40 + payload_len)?;
        let kind = *icmp.first()?;
        if (kind != ND_SOLICIT && kind != ND_ADVERT) || *icmp.get(1)? != 0 {
            return None;
        }
        let target = ipv6_at(icmp, 8)?;
        let mut lladdr = None;
        let mut opts = icmp.get(24..)?;
        while opts.len() >= 8 {
            let len = usize::from(opts[1]) * 8;
            if len == 0 || len > opts.len() {
                break;
            }
            if (opts[0] == 1 || opts[0] == 2) && len == 8 {
                lladdr = mac_at(opts, 2);
            }
            opts = &opts[len..];
        }
        Some(Neighbor {
            kind,
            src: ipv6_at(ip, 8)?,
            target,
            lladdr,
        })
    }
}

fn icmpv6_frame(
    eth_dst: MacAddr,
    eth_src: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    icmp: &mut [u8],
) -> Vec<u8> {
    let len = icmp.len() as u16;
    let mut acc = sum(&src.octets(), 0);
    acc = sum(&dst.octets(), acc);
    acc += u32::from(len) + u32::from(IPPROTO_ICMPV6);
    icmp[2] = 0;
    icmp[3] = 0;
    let checksum = fold(sum(icmp, acc));
    icmp[2..4].copy_from_slice(&checksum.to_be_bytes());
    let mut ip = Vec::with_capacity(40 + icmp.len());
    ip.extend_from_slice(&[0x60, 0, 0, 0]);
    ip.extend_from_slice(&len.to_be_bytes());
    ip.extend_from_slice(&[IPPROTO_ICMPV6, 255]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(icmp);
    ethernet(eth_dst, eth_src, ETH_IPV6, &ip)
}

/// A solicited neighbour advertisement for `target` (ours, at `mac`) to the
/// soliciting node.
pub fn neighbor_advertisement(
    mac: MacAddr,
    target: Ipv6Addr,
    to: Ipv6Addr,
    to_mac: MacAddr,
) -> Vec<u8> {
    let mut icmp = [0u8; 32];
    icmp[0] = ND_ADVERT;
    // Solicited + override.
    icmp[4] = 0x60;
    icmp[8..24].copy_from_slice(&target.octets());
    icmp[24] = 2;
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(&mac.0);
    icmpv6_frame(to_mac, mac, target, to, &mut icmp)
}

/// A neighbour solicitation for `target` from `src` (ours, at `mac`), to
/// the target's solicited-node group.
pub fn neighbor_solicitation(mac: MacAddr, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let mut icmp = [0u8; 32];
    icmp[0] = ND_SOLICIT;
    icmp[8..24].copy_from_slice(&target.octets());
    icmp[24] = 1;
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(&mac.0);
    let group = solicited_node(target);
    icmpv6_frame(ipv6_multicast_mac(group), mac, src, group, &mut icmp)
}

/// True when the ICMPv6 checksum of an IPv6 packet (no extension headers)
/// is right. For tests and for refusing forged ND.
pub fn icmpv6_checksum_ok(ip: &[u8]) -> bool {
    let (Some(src), Some(dst)) = (ipv6_at(ip, 8), ipv6_at(ip, 24)) else {
        return false;
    };
    let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let Some(icmp) = ip.get(40..40 + len) else {
        return false;
    };
    let mut acc = sum(&src.octets(), 0);
    acc = sum(&dst.octets(), acc);
    acc += len as u32 + u32::from(IPPROTO_ICMPV6);
    fold(sum(icmp, acc)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

    #[test]
    fn multicast_macs_follow_the_rfcs() {
        assert_eq!(
            ipv4_multicast_mac(Ipv4Addr::new(239, 255, 128, 7)),
            MacAddr([1, 0, 0x5e, 0x7f, 128, 7])
        );
        let ip: Ipv6Addr = "ff02::1:ff12:3456".parse().unwrap();
        assert_eq!(
            ipv6_multicast_mac(ip),
            MacAddr([0x33, 0x33, 0xff, 0x12, 0x34, 0x56])
        );
        let node: Ipv6Addr = "fe80::aa:bb12:3456".parse().unwrap();
        assert_eq!(solicited_node(node), ip);
    }

    #[test]
    fn arp_round_trips() {
        let arp = Arp {
            op: ARP_REQUEST,
            sha: MAC,
            spa: Ipv4Addr::new(10, 0, 0, 1),
            tha: MacAddr([0; 6]),
            tpa: Ipv4Addr::new(10, 0, 0, 2),
        };
        let frame = arp.frame(MacAddr::BROADCAST);
        assert_eq!(frame.len(), 60);
        assert_eq!(Arp::parse(&frame[ETH_HLEN..]), Some(arp));
        assert_eq!(Arp::parse(&frame[ETH_HLEN..20]), None);
    }

    #[test]
    fn nd_packets_carry_valid_checksums_and_parse_back() {
        let ours: Ipv6Addr = "fe80::1".parse().unwrap();
        let them: Ipv6Addr = "fe80::2".parse().unwrap();
        let ns = neighbor_solicitation(MAC, ours, them);
        assert!(icmpv6_checksum_ok(&ns[ETH_HLEN..]));
        let parsed = Neighbor::parse(&ns[ETH_HLEN..]).unwrap();
        assert_eq!(
            (parsed.kind, parsed.target, parsed.lladdr),
            (ND_SOLICIT, them, Some(MAC))
        );
        let na = neighbor_advertisement(MAC, ours, them, MacAddr([2, 0, 0, 0, 0, 2]));
        assert!(icmpv6_checksum_ok(&na[ETH_HLEN..]));
        let parsed = Neighbor::parse(&na[ETH_HLEN..]).unwrap();
        assert_eq!(
            (parsed.kind, parsed.target, parsed.lladdr),
            (ND_ADVERT, ours, Some(MAC))
        );
        // etherparse agrees with our checksum.
        let sliced = etherparse::SlicedPacket::from_ethernet(&na).unwrap();
        match sliced.transport {
            Some(etherparse::TransportSlice::Icmpv6(icmp)) => assert_eq!(icmp.type_u8(), ND_ADVERT),
            other => panic!("{other:?}"),
        }
    }
}

//! Completing TCP/UDP checksums that the kernel left for the NIC.
//!
//! Frames that the gateway machine itself sends (its own game server, or a
//! bridge/veth on it) reach an `AF_PACKET` socket with checksum offload
//! pending (`TP_STATUS_CSUMNOTREADY`): the L4 checksum field holds only the
//! pseudo-header sum. Forwarded as is, every receiver would drop them (a
//! DHCP client silently ignores such offers). The port computes the
//! checksum in software for those frames only.

use lanparty_core::wire::ethertype;
use lanparty_core::wire::ip_proto::{TCP as PROTO_TCP, UDP as PROTO_UDP};

use crate::inet::{Framing, fold, sum};

/// Computes the TCP or UDP checksum of an IPv4 or IPv6 (no extension
/// headers) frame or packet in place. Returns false (and changes nothing)
/// for others or ones too short to be what their headers claim.
pub fn complete_l4_checksum(framing: Framing, frame: &mut [u8]) -> bool {
    let Some((l3, ether)) = framing.network(frame) else {
        return false;
    };
    let (proto, l4, pseudo) = match ether {
        ethertype::IPV4 => {
            let Some(ip) = frame.get(l3..l3 + 20) else {
                return false;
            };
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
            if ip[0] >> 4 != 4
                || ihl < 20
                || total < ihl
                || fragment != 0
                || frame.len() < l3 + total
            {
                return false;
            }
            let proto = ip[9];
            let len = total - ihl;
            let mut acc = sum(&ip[12..20], 0);
            acc += u32::from(proto) + len as u32;
            (proto, l3 + ihl..l3 + total, acc)
        }
        ethertype::IPV6 => {
            let Some(ip) = frame.get(l3..l3 + 40) else {
                return false;
            };
            let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            if ip[0] >> 4 != 6 || frame.len() < l3 + 40 + len {
                return false;
            }
            let proto = ip[6];
            let mut acc = sum(&ip[8..40], 0);
            acc += u32::from(proto) + len as u32;
            (proto, l3 + 40..l3 + 40 + len, acc)
        }
        _ => return false,
    };
    let field = match proto {
        PROTO_UDP => 6,
        PROTO_TCP => 16,
        _ => return false,
    };
    let segment = &mut frame[l4];
    if segment.len() < field + 2 {
        return false;
    }
    segment[field..field + 2].copy_from_slice(&[0, 0]);
    let mut checksum = fold(sum(segment, pseudo));
    if proto == PROTO_UDP && checksum == 0 {
        checksum = 0xffff;
    }
    segment[field..field + 2].copy_from_slice(&checksum.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use lanparty_core::testing::frames::{self, Tags};
    use lanparty_core::wire::{EthernetHeader, MacAddr};

    #[test]
    fn restores_what_etherparse_computed() {
        let a = MacAddr([2, 0, 0, 0, 0, 1]);
        for tags in [Tags::None, Tags::Single(7), Tags::Double(1, 2)] {
            for good in [
                frames::dhcp_offer(a, tags, a),
                frames::ipv4_udp(
                    MacAddr::BROADCAST,
                    a,
                    tags,
                    [10, 0, 0, 1],
                    [10, 0, 0, 2],
                    1,
                    2,
                    b"odd",
                ),
                frames::dhcpv6_advertise(a, a, tags),
            ] {
                let mut broken = good.clone();
                let l4 = broken.len() - 1;
                // Simulate a pending offload: garbage in the checksum field.
                let eth = EthernetHeader::parse(&good).unwrap();
                let at = eth.header_len
                    + if eth.ethertype == ethertype::IPV4 {
                        20
                    } else {
                        40
                    }
                    + 6;
                broken[at] ^= 0x5a;
                broken[at + 1] ^= 0xa5;
                assert_ne!(broken, good);
                // The same packet as a TUN device carries it.
                let (mut broken_ip, good_ip) = (
                    broken[eth.header_len..].to_vec(),
                    good[eth.header_len..].to_vec(),
                );
                assert!(
                    complete_l4_checksum(Framing::Ethernet, &mut broken),
                    "{tags:?}"
                );
                assert_eq!(broken, good, "{tags:?} len {l4}");
                assert!(
                    complete_l4_checksum(Framing::Ip, &mut broken_ip),
                    "{tags:?}"
                );
                assert_eq!(broken_ip, good_ip, "{tags:?}");
            }
        }
    }

    #[test]
    fn leaves_other_frames_alone() {
        let a = MacAddr([2, 0, 0, 0, 0, 1]);
        let mut arp = frames::arp_request(a, Tags::None, [1, 1, 1, 1], [2, 2, 2, 2]);
        let copy = arp.clone();
        assert!(!complete_l4_checksum(Framing::Ethernet, &mut arp));
        assert_eq!(arp, copy);
        let mut short = frames::dhcp_offer(a, Tags::None, a);
        short.truncate(40);
        assert!(!complete_l4_checksum(Framing::Ethernet, &mut short));
        let mut ra = frames::ipv6_ra(a, Tags::None, 5);
        assert!(
            !complete_l4_checksum(Framing::Ethernet, &mut ra),
            "ICMPv6 is not TCP/UDP"
        );
        assert!(
            !complete_l4_checksum(Framing::Ip, &mut ra[14..]),
            "ICMPv6 is not TCP/UDP"
        );
        assert!(!complete_l4_checksum(Framing::Ip, &mut arp[14..]), "not IP");
    }
}

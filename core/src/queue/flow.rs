//! Which inner flow a frame belongs to, for flow-fair queuing.
//!
//! The key is the inner 5-tuple (addresses, IP protocol, ports) of IPv4 and
//! IPv6 frames, with every VLAN id in front, so a flow on VLAN 10 and the
//! same 5-tuple on VLAN 20 are two flows; non-IP frames (ARP, discovery
//! broadcasts of other protocols, …) are keyed by their MAC pair and
//! ethertype. IP fragments are keyed without ports (a later fragment has
//! none), so every fragment of one datagram lands in the same queue. The
//! key is hashed with a per-scheduler random key (SipHash through
//! `RandomState`), so a peer cannot aim frames at another flow's queue.
//!
//! Reads only fixed header offsets after one bounds check each; a frame
//! too short for a header falls back to the part of the key it has.

use std::hash::{BuildHasher, Hasher};

use crate::wire::ethernet::{EthernetHeader, ethertype};

/// IP protocol numbers whose first four payload bytes are ports.
const PORTED: [u8; 4] = [6, 17, 33, 132]; // TCP, UDP, DCCP, SCTP

/// The hasher's keys: random per scheduler, so a peer cannot aim its flows
/// at another's queue; fixed in this crate's unit tests, so a test's flows
/// land in the same queues on every run (a random key made two test flows
/// share a queue about once in a thousand runs).
#[cfg(not(test))]
type Keys = std::collections::hash_map::RandomState;
#[cfg(test)]
type Keys = std::hash::BuildHasherDefault<std::hash::DefaultHasher>;

/// A keyed flow hasher.
#[derive(Debug, Clone, Default)]
pub struct FlowHasher {
    state: Keys,
}

impl FlowHasher {
    /// The flow hash of an Ethernet frame.
    pub fn hash(&self, frame: &[u8]) -> u64 {
        let mut h = self.state.build_hasher();
        write_flow_key(frame, &mut h);
        h.finish()
    }

    /// The flow hash of a bare IPv4 or IPv6 packet (a TUN device's), by
    /// the same key as the IP part of [`FlowHasher::hash`].
    pub fn hash_ip(&self, packet: &[u8]) -> u64 {
        let mut h = self.state.build_hasher();
        let written = match packet.first().map(|b| b >> 4) {
            Some(4) => write_ipv4(packet, &mut h),
            Some(6) => write_ipv6(packet, &mut h),
            _ => false,
        };
        if !written {
            h.write_u8(0xff);
        }
        h.finish()
    }
}

/// Feeds the flow key of `frame` into `h`.
fn write_flow_key(frame: &[u8], h: &mut impl Hasher) {
    let Ok(eth) = EthernetHeader::parse(frame) else {
        // Not even an Ethernet header: one bucket for all such frames.
        h.write_u8(0xff);
        return;
    };
    for tag in eth.vlans.iter().flatten() {
        h.write_u16(tag.vid);
    }
    h.write_u16(eth.ethertype);
    let l3 = frame.get(eth.header_len..).unwrap_or_default();
    let written = match eth.ethertype {
        ethertype::IPV4 => write_ipv4(l3, h),
        ethertype::IPV6 => write_ipv6(l3, h),
        _ => false,
    };
    if !written {
        h.write(&eth.src.0);
        h.write(&eth.dst.0);
    }
}

fn write_ipv4(ip: &[u8], h: &mut impl Hasher) -> bool {
    let Some(header) = ip.get(..20) else {
        return false;
    };
    let ihl = usize::from(header[0] & 0x0f) * 4;
    let proto = header[9];
    h.write_u8(proto);
    h.write(&header[12..20]);
    let fragment = u16::from_be_bytes([header[6], header[7]]) & 0x3fff != 0;
    if !fragment && PORTED.contains(&proto) {
        if let Some(ports) = ip.get(ihl..ihl + 4) {
            h.write(ports);
        }
    }
    true
}

fn write_ipv6(ip: &[u8], h: &mut impl Hasher) -> bool {
    let Some(header) = ip.get(..40) else {
        return false;
    };
    let next = header[6];
    h.write_u8(next);
    h.write(&header[8..40]);
    // The flow label names the flow where the sender set one.
    h.write(&[header[1] & 0x0f, header[2], header[3]]);
    if PORTED.contains(&next) {
        if let Some(ports) = ip.get(40..44) {
            h.write(ports);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::frames::{self, Tags};
    use crate::wire::MacAddr;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    #[test]
    fn bare_ip_packets_hash_by_their_five_tuple() {
        let f = FlowHasher::default();
        let packet =
            |sport| frames::ipv4_udp_packet([10, 0, 0, 1], [10, 0, 0, 2], sport, 7777, b"x");
        assert_eq!(f.hash_ip(&packet(1000)), f.hash_ip(&packet(1000)));
        assert_ne!(f.hash_ip(&packet(1000)), f.hash_ip(&packet(1001)));
        assert_eq!(f.hash_ip(&[]), f.hash_ip(&[0x10]), "not IP: one bucket");
    }

    #[test]
    fn five_tuple_and_vlan_separate_flows() {
        let f = FlowHasher::default();
        let udp = |sport, tags| {
            frames::ipv4_udp(B, A, tags, [10, 0, 0, 1], [10, 0, 0, 2], sport, 7777, b"x")
        };
        let none = Tags::None;
        assert_eq!(f.hash(&udp(1000, none)), f.hash(&udp(1000, none)));
        assert_ne!(f.hash(&udp(1000, none)), f.hash(&udp(1001, none)));
        assert_ne!(
            f.hash(&udp(1000, Tags::Single(10))),
            f.hash(&udp(1000, Tags::Single(20)))
        );
        assert_ne!(
            f.hash(&udp(1000, none)),
            f.hash(&udp(1000, Tags::Single(10)))
        );
    }

    #[test]
    fn payload_does_not_change_the_flow() {
        let f = FlowHasher::default();
        let a = frames::ipv4_udp(B, A, Tags::None, [10, 0, 0, 1], [10, 0, 0, 2], 5, 6, b"one");
        let b = frames::ipv4_udp(
            B,
            A,
            Tags::None,
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            5,
            6,
            b"other",
        );
        assert_eq!(f.hash(&a), f.hash(&b));
    }

    #[test]
    fn non_ip_keyed_by_macs_and_short_frames_do_not_panic() {
        let f = FlowHasher::default();
        let arp_ab = frames::arp_request(A, Tags::None, [10, 0, 0, 1], [10, 0, 0, 2]);
        let arp_ba = frames::arp_request(B, Tags::None, [10, 0, 0, 2], [10, 0, 0, 1]);
        assert_ne!(f.hash(&arp_ab), f.hash(&arp_ba));
        for len in 0..80 {
            let frame =
                frames::ipv4_udp(B, A, Tags::None, [10, 0, 0, 1], [10, 0, 0, 2], 5, 6, b"abc");
            let _ = f.hash(&frame[..len.min(frame.len())]);
        }
    }

    #[test]
    fn fragments_share_one_flow() {
        let f = FlowHasher::default();
        let mut first = frames::ipv4_udp(
            B,
            A,
            Tags::None,
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            5,
            6,
            b"abcdefgh",
        );
        first[14 + 6] = 0x20; // more fragments, offset 0
        let mut later = first.clone();
        later[14 + 6] = 0x00;
        later[14 + 7] = 0x10; // offset 128, ports not at the front
        later[14 + 20] = 0xee;
        assert_eq!(f.hash(&first), f.hash(&later));
    }
}

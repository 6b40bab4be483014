//! Setting ECN "congestion experienced" on the inner IP packet of a frame
//! (RFC 3168), the AQM's alternative to dropping an ECN-capable packet.
//!
//! IPv4: the two low bits of the TOS byte; the header checksum is updated
//! incrementally (RFC 1624). IPv6: the two low bits of the traffic class.
//! VLAN tags (802.1Q, QinQ) are skipped. Only a packet that says it is
//! ECN-capable (ECT(0) or ECT(1)) is marked; one already CE is left as is.

use bytes::{Bytes, BytesMut};

use crate::wire::checksum::set_word;
use crate::wire::ethernet::{EthernetHeader, ethertype};

/// The ECN field of an IP packet.
const ECN_MASK: u8 = 0b11;
/// Not ECN-capable transport.
const NOT_ECT: u8 = 0b00;
/// Congestion experienced.
const CE: u8 = 0b11;

/// Where the ECN bits of a frame live.
enum EcnField {
    /// The IPv4 TOS byte at this offset; the header checksum follows 10 bytes later.
    V4(usize),
    /// The IPv6 traffic class straddles bytes `at` and `at + 1`.
    V6(usize),
}

fn locate(frame: &[u8]) -> Option<(EcnField, u8)> {
    let eth = EthernetHeader::parse(frame).ok()?;
    let at = eth.header_len;
    match eth.ethertype {
        ethertype::IPV4 => {
            let header = frame.get(at..at + 20)?;
            (header[0] >> 4 == 4).then_some((EcnField::V4(at + 1), header[1] & ECN_MASK))
        }
        ethertype::IPV6 => {
            let header = frame.get(at..at + 40)?;
            (header[0] >> 4 == 6).then_some((EcnField::V6(at), (header[1] >> 4) & ECN_MASK))
        }
        _ => None,
    }
}

/// Whether the frame's inner IP packet is ECN-capable (ECT or already CE).
pub fn is_ecn_capable(frame: &[u8]) -> bool {
    locate(frame).is_some_and(|(_, ecn)| ecn != NOT_ECT)
}

/// The frame with CE set, or the frame unchanged in `Err` when it is not
/// an ECN-capable IP packet. Copies the frame once unless this is the only
/// reference to it.
pub fn mark_ce(frame: Bytes) -> Result<Bytes, Bytes> {
    let Some((field, ecn)) = locate(&frame) else {
        return Err(frame);
    };
    if ecn == NOT_ECT {
        return Err(frame);
    }
    if ecn == CE {
        return Ok(frame);
    }
    let mut bytes = match frame.try_into_mut() {
        Ok(unique) => unique,
        Err(shared) => BytesMut::from(&shared[..]),
    };
    match field {
        EcnField::V4(tos_at) => {
            // The checksum covers the word of version/IHL and TOS.
            let word = u16::from_be_bytes([bytes[tos_at - 1], bytes[tos_at] | CE]);
            let _ = set_word(&mut bytes, tos_at - 1, word, tos_at + 9);
        }
        EcnField::V6(at) => bytes[at + 1] |= CE << 4,
    }
    Ok(bytes.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::frames::{self, Tags};
    use crate::wire::MacAddr;
    use etherparse::{PacketBuilder, SlicedPacket};

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn tcp4(ecn: u8, tags: Tags) -> Vec<u8> {
        let mut ip = Vec::new();
        let mut builder = PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).tcp(1, 2, 3, 1000);
        builder = builder.ack(5);
        builder.write(&mut ip, b"payload").unwrap();
        // Set the ECN bits and recompute the header checksum from scratch.
        ip[1] = (ip[1] & !ECN_MASK) | ecn;
        ip[10] = 0;
        ip[11] = 0;
        let header = etherparse::Ipv4HeaderSlice::from_slice(&ip)
            .unwrap()
            .to_header();
        let sum = header.calc_header_checksum();
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut frame = frames::ethernet(B, A, tags, ethertype::IPV4, 0);
        frame.extend_from_slice(&ip);
        frame
    }

    fn udp6(ecn: u8) -> Vec<u8> {
        let mut ip = Vec::new();
        PacketBuilder::ipv6([0xfe; 16], [0xfd; 16], 64)
            .udp(1, 2)
            .write(&mut ip, b"payload")
            .unwrap();
        ip[1] |= ecn << 4;
        let mut frame = frames::ethernet(B, A, Tags::None, ethertype::IPV6, 0);
        frame.extend_from_slice(&ip);
        frame
    }

    fn ipv4_checksum_ok(frame: &[u8]) -> bool {
        let packet = SlicedPacket::from_ethernet(frame).unwrap();
        let Some(etherparse::NetSlice::Ipv4(v4)) = packet.net else {
            return false;
        };
        let header = v4.header().to_header();
        header.calc_header_checksum() == v4.header().header_checksum()
    }

    #[test]
    fn ect_ipv4_gets_ce_with_a_valid_checksum() {
        for tags in [Tags::None, Tags::Single(42), Tags::Double(5, 6)] {
            for ect in [0b01, 0b10] {
                let frame = tcp4(ect, tags);
                assert!(ipv4_checksum_ok(&frame));
                let marked = mark_ce(Bytes::from(frame.clone())).unwrap();
                let at = EthernetHeader::parse(&marked).unwrap().header_len;
                assert_eq!(marked[at + 1] & ECN_MASK, CE);
                assert_eq!(marked[at + 1] >> 2, frame[at + 1] >> 2, "DSCP untouched");
                assert!(ipv4_checksum_ok(&marked), "{tags:?} ect {ect}");
                assert_eq!(marked.len(), frame.len());
            }
        }
    }

    #[test]
    fn not_ect_and_non_ip_are_left_alone() {
        let frame = Bytes::from(tcp4(NOT_ECT, Tags::None));
        assert_eq!(mark_ce(frame.clone()), Err(frame));
        let arp = Bytes::from(frames::arp_request(
            A,
            Tags::None,
            [1, 2, 3, 4],
            [1, 2, 3, 5],
        ));
        assert!(!is_ecn_capable(&arp));
        assert_eq!(mark_ce(arp.clone()), Err(arp));
        let short = Bytes::from_static(&[0u8; 20]);
        assert_eq!(mark_ce(short.clone()), Err(short));
    }

    #[test]
    fn already_ce_is_unchanged_and_ipv6_is_marked() {
        let ce = Bytes::from(tcp4(CE, Tags::None));
        assert_eq!(mark_ce(ce.clone()), Ok(ce));
        let frame = udp6(0b10);
        assert!(is_ecn_capable(&frame));
        let marked = mark_ce(Bytes::from(frame.clone())).unwrap();
        assert_eq!((marked[15] >> 4) & ECN_MASK, CE);
        assert_eq!(
            marked[14], frame[14],
            "version and upper traffic class kept"
        );
        assert_eq!(marked[15] & 0x0f, frame[15] & 0x0f, "flow label kept");
        let ipv6 = etherparse::Ipv6HeaderSlice::from_slice(&marked[14..]).unwrap();
        assert_eq!(ipv6.traffic_class() & 0b11, CE);
    }

    #[test]
    fn shared_frames_are_copied_not_changed_in_place() {
        let original = Bytes::from(tcp4(0b10, Tags::None));
        let keep = original.clone();
        let marked = mark_ce(original).unwrap();
        assert_eq!(keep[15] & ECN_MASK, 0b10);
        assert_eq!(marked[15] & ECN_MASK, CE);
    }
}

//! Software segmentation of TCP and UDP super-packets.
//!
//! An `AF_PACKET` socket can receive frames far larger than the wire MTU:
//! GRO on the NIC coalesces received TCP segments, and a veth or bridge
//! peer with TSO hands over unsegmented packets. A room can only carry
//! MTU-sized frames, so the gateway cuts such packets back into segments of
//! the size the kernel reports (`gso_size` from the virtio-net header), the
//! way a NIC would: headers copied, IP length/id/checksum and TCP sequence
//! number/flags/checksum (UDP length/checksum) set per segment. A TAP or
//! TUN device with USO hands over UDP super-packets the same way.

use lanparty_core::wire::ethertype;
use lanparty_core::wire::ip_proto::{TCP as PROTO_TCP, UDP as PROTO_UDP};

use super::checksum::complete_l4_checksum;
use crate::inet::{Framing, set_ipv4_header_checksum};

/// `virtio_net_hdr.gso_type` values.
pub mod gso_type {
    /// Not a super-packet.
    pub const NONE: u8 = 0;
    /// TCP over IPv4.
    pub const TCPV4: u8 = 1;
    /// UDP fragmentation offload.
    pub const UDP: u8 = 3;
    /// TCP over IPv6.
    pub const TCPV6: u8 = 4;
    /// UDP segmentation offload.
    pub const UDP_L4: u8 = 5;
    /// ECN bit, or-ed into the others.
    pub const ECN: u8 = 0x80;
}

/// `virtio_net_hdr.flags`: the L4 checksum still has to be computed.
pub const NEEDS_CSUM: u8 = 1;
/// Size of `struct virtio_net_hdr`.
pub const VNET_HDR_LEN: usize = 10;

/// `struct virtio_net_hdr`: what the kernel puts in front of each frame
/// read with `PACKET_VNET_HDR` / `IFF_VNET_HDR`, and what a TAP write of a
/// super-packet carries ([`super::gro`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHeader {
    /// Flags (`NEEDS_CSUM`).
    pub flags: u8,
    /// Segmentation kind.
    pub gso_type: u8,
    /// Length of the headers in front of the payload.
    pub hdr_len: u16,
    /// Segment payload size.
    pub gso_size: u16,
    /// Where the checksummed bytes start (with `NEEDS_CSUM`).
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHeader {
    /// Reads the header (native endian, as the kernel writes it on this host).
    pub fn parse(bytes: &[u8]) -> Option<VnetHeader> {
        let b = bytes.get(..VNET_HDR_LEN)?;
        let word = |at: usize| u16::from_ne_bytes([b[at], b[at + 1]]);
        Some(VnetHeader {
            flags: b[0],
            gso_type: b[1],
            hdr_len: word(2),
            gso_size: word(4),
            csum_start: word(6),
            csum_offset: word(8),
        })
    }

    /// The header's bytes (native endian, as the kernel reads them).
    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut out = [0; VNET_HDR_LEN];
        out[0] = self.flags;
        out[1] = self.gso_type;
        for (at, word) in [
            (2, self.hdr_len),
            (4, self.gso_size),
            (6, self.csum_start),
            (8, self.csum_offset),
        ] {
            out[at..at + 2].copy_from_slice(&word.to_ne_bytes());
        }
        out
    }
}

/// Cuts a TCP or UDP super-packet (a frame or, on a TUN device, an IP
/// packet: `framing`) into segments of at most `gso_size` payload bytes
/// and hands each to `emit` (built in `scratch`). Returns the number of
/// segments, or why the packet cannot be segmented.
pub fn segment(
    framing: Framing,
    frame: &[u8],
    gso_size: usize,
    scratch: &mut Vec<u8>,
    emit: &mut dyn FnMut(&[u8]),
) -> Result<usize, &'static str> {
    if gso_size == 0 {
        return Err("gso_size 0");
    }
    let (l3, ether) = framing.network(frame).ok_or("no IP header")?;
    let (ipv4, l4, proto) = match ether {
        ethertype::IPV4 => {
            let ihl = usize::from(frame.get(l3).ok_or("short")? & 0x0f) * 4;
            if ihl < 20 {
                return Err("bad IPv4 header");
            }
            (true, l3 + ihl, frame.get(l3 + 9).copied())
        }
        // TCP or UDP right behind (no extension headers).
        ethertype::IPV6 => (false, l3 + 40, frame.get(l3 + 6).copied()),
        _ => return Err("not IP"),
    };
    let udp = match proto {
        Some(PROTO_TCP) => false,
        Some(PROTO_UDP) => true,
        _ => return Err("neither TCP nor UDP right behind the IP header"),
    };
    let header_len = if udp {
        8
    } else {
        usize::from(frame.get(l4 + 12).ok_or("short")? >> 4) * 4
    };
    let payload_at = l4 + header_len;
    if (!udp && header_len < 20) || frame.len() < payload_at {
        return Err("bad TCP or UDP header");
    }
    let seq0 = u32::from_be_bytes([frame[l4 + 4], frame[l4 + 5], frame[l4 + 6], frame[l4 + 7]]);
    let flags = if udp { 0 } else { frame[l4 + 13] };
    let id0 = if ipv4 {
        u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]])
    } else {
        0
    };
    let chunks = frame[payload_at..].chunks(gso_size);
    let count = chunks.len();
    for (i, chunk) in chunks.enumerate() {
        scratch.clear();
        scratch.extend_from_slice(&frame[..payload_at]);
        scratch.extend_from_slice(chunk);
        let l3_len = scratch.len() - l3;
        if ipv4 {
            scratch[l3 + 2..l3 + 4].copy_from_slice(&(l3_len as u16).to_be_bytes());
            scratch[l3 + 4..l3 + 6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            set_ipv4_header_checksum(&mut scratch[l3..l4]);
        } else {
            scratch[l3 + 4..l3 + 6].copy_from_slice(&((l3_len - 40) as u16).to_be_bytes());
        }
        if udp {
            let udp_len = (8 + chunk.len()) as u16;
            scratch[l4 + 4..l4 + 6].copy_from_slice(&udp_len.to_be_bytes());
        } else {
            let seq = seq0.wrapping_add((i * gso_size) as u32);
            scratch[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
            let mut f = flags;
            if i + 1 < count {
                f &= !(0x01 | 0x08); // FIN and PSH only on the last segment
            }
            if i > 0 {
                f &= !0x80; // CWR only on the first
            }
            scratch[l4 + 13] = f;
        }
        complete_l4_checksum(framing, scratch);
        emit(scratch);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp_frame(v6: bool, seq: u32, payload: &[u8], fin: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let tcp = |b: etherparse::PacketBuilderStep<etherparse::IpHeaders>| {
            let t = b.tcp(40000, 5201, seq, 1000).ack(77);
            if fin { t.fin() } else { t }
        };
        if v6 {
            tcp(eth.ipv6([0xfd; 16], [0xfe; 16], 64))
                .write(&mut out, payload)
                .unwrap();
        } else {
            tcp(eth.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64))
                .write(&mut out, payload)
                .unwrap();
        }
        out
    }

    #[test]
    fn segments_equal_what_a_sender_would_have_sent() {
        for (framing, v6) in [
            (Framing::Ethernet, false),
            (Framing::Ethernet, true),
            (Framing::Ip, false),
            (Framing::Ip, true),
        ] {
            // A TUN device's packet is the frame without its Ethernet header.
            let strip = 14 - framing.header_len();
            let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
            let big = tcp_frame(v6, 1000, &payload, true);
            let mut scratch = Vec::new();
            let mut got = Vec::new();
            let n = segment(framing, &big[strip..], 1400, &mut scratch, &mut |s| {
                got.push(s.to_vec())
            })
            .unwrap();
            assert_eq!(n, 3);
            for (i, seg) in got.iter().enumerate() {
                let start = i * 1400;
                let end = (start + 1400).min(3000);
                let mut want = tcp_frame(v6, 1000 + start as u32, &payload[start..end], i == 2);
                if !v6 {
                    // IP id increments per segment.
                    let id = u16::from_be_bytes([want[18], want[19]]).wrapping_add(i as u16);
                    want[18..20].copy_from_slice(&id.to_be_bytes());
                    set_ipv4_header_checksum(&mut want[14..34]);
                }
                assert_eq!(seg, &want[strip..], "{framing:?} v6={v6} segment {i}");
            }
        }
    }

    #[test]
    fn refuses_what_it_cannot_cut() {
        let mut scratch = Vec::new();
        let arp = lanparty_core::testing::frames::arp_request(
            lanparty_core::wire::MacAddr([2, 0, 0, 0, 0, 1]),
            lanparty_core::testing::frames::Tags::None,
            [1; 4],
            [2; 4],
        );
        let eth = Framing::Ethernet;
        assert!(segment(eth, &arp, 100, &mut scratch, &mut |_| {}).is_err());
        assert!(segment(Framing::Ip, &arp[14..], 100, &mut scratch, &mut |_| {}).is_err());
        assert!(segment(eth, &[0u8; 10], 100, &mut scratch, &mut |_| {}).is_err());
        let big = tcp_frame(false, 1, &[0; 100], false);
        assert!(segment(eth, &big, 0, &mut scratch, &mut |_| {}).is_err());
        assert!(segment(eth, &big[..40], 10, &mut scratch, &mut |_| {}).is_err());
        assert!(segment(Framing::Ip, &big[14..40], 10, &mut scratch, &mut |_| {}).is_err());
    }
}

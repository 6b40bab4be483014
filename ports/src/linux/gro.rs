//! Software GRO for a TAP or TUN device: consecutive in-order TCP segments
//! of one flow, handed over in one batch, are written as one super-packet
//! behind a virtio-net header (`IFF_VNET_HDR`), so the receiving kernel's
//! TCP handles one packet of up to 64 kB instead of dozens — what GRO does
//! on a NIC, and what wireguard-go does for its TUN. Frames (TAP) and IP
//! packets (TUN) alike: [`Framing`].
//!
//! The merge rules are Linux's (`tcp_gro_receive`, `inet_gro_receive`):
//! the same Ethernet header (on a TAP), addresses, ports, ACK number,
//! window, IP TOS/TTL (traffic class/flow label/hop limit) and TCP options
//! byte for byte; the next sequence number; nothing but ACK set (PSH on the last);
//! every segment as long as the first but a shorter last one; an IPv4 ID
//! one above the last unless DF is set. Everything else — other protocols,
//! VLAN tags, IP options or extension headers, fragments, SYN/FIN/RST/URG,
//! empty segments — goes out alone, after whatever was pending, so order is
//! kept.
//!
//! On a device with USO, UDP datagrams of one flow merge the same way
//! (Linux's `udp_gro_receive`): the same headers and ports, every datagram
//! as long as the first but a shorter last one, at most
//! [`UDP_MAX_SEGMENTS`]; the super-packet goes out as `gso_type` UDP_L4
//! and the receiving kernel cuts it back into the datagrams (or hands it
//! whole to a socket that asked for UDP GRO).
//!
//! Sans-IO: [`Gro::push`] and [`Gro::flush`] hand finished buffers to a
//! writer, which [`super::offload`] points at the device.

use lanparty_core::wire::ethertype;
use lanparty_core::wire::ip_proto::{TCP as PROTO_TCP, UDP as PROTO_UDP};

use super::gso::{NEEDS_CSUM, VNET_HDR_LEN, VnetHeader, gso_type};
use crate::inet::{Framing, fold, set_ipv4_header_checksum, sum};

const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
/// UDP datagrams merged into one super-packet at most (Linux's
/// `UDP_MAX_SEGMENTS` of the kernels that first had UDP GSO).
pub const UDP_MAX_SEGMENTS: usize = 64;
/// The most an IP packet can carry (IPv4 total length, IPv6 payload).
pub const MAX_IP_LEN: usize = 65_535;

/// The header in front of a frame that needs nothing done to it.
pub const PLAIN_HEADER: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];

/// What [`Gro::push`] and [`Gro::flush`] write: one buffer, or a header and
/// a frame (written together, e.g. with `writev`). True when written.
pub type Writer<'a> = dyn FnMut(&[&[u8]]) -> bool + 'a;

/// A TCP segment's or UDP datagram's offsets and numbers, as far as
/// merging needs them.
#[derive(Debug, Clone, Copy)]
struct Segment {
    v6: bool,
    udp: bool,
    /// Offset of the TCP or UDP header.
    l4: usize,
    /// Offset of the payload (headers' length).
    payload: usize,
    seq: u32,
    flags: u8,
    len: usize,
    ip_id: u16,
    dont_fragment: bool,
}

impl Segment {
    /// A segment that may be merged, or `None` for anything that goes out
    /// alone.
    fn parse(framing: Framing, frame: &[u8], udp_merges: bool) -> Option<Segment> {
        let (ip_at, ether) = framing.network(frame)?;
        // No VLAN tags.
        if ip_at != framing.header_len() {
            return None;
        }
        let (v6, l4, ip_id, dont_fragment, proto) = match ether {
            ethertype::IPV4 => {
                let ip = frame.get(ip_at..ip_at + 20)?;
                let fragment = u16::from_be_bytes([ip[6], ip[7]]);
                // IHL 5 (no options), not a fragment (MF clear, offset 0).
                if ip[0] != 0x45 || fragment & 0x3fff != 0 {
                    return None;
                }
                let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
                if total != frame.len() - ip_at {
                    return None;
                }
                let id = u16::from_be_bytes([ip[4], ip[5]]);
                (false, ip_at + 20, id, fragment & 0x4000 != 0, ip[9])
            }
            ethertype::IPV6 => {
                let ip = frame.get(ip_at..ip_at + 40)?;
                // No extension headers: TCP or UDP right behind.
                if ip[0] >> 4 != 6 {
                    return None;
                }
                let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
                if payload != frame.len() - ip_at - 40 {
                    return None;
                }
                (true, ip_at + 40, 0, true, ip[6])
            }
            _ => return None,
        };
        if proto == PROTO_UDP && udp_merges {
            let udp = frame.get(l4..l4 + 8)?;
            let len = frame.len() - l4;
            if usize::from(u16::from_be_bytes([udp[4], udp[5]])) != len || len <= 8 {
                return None;
            }
            return Some(Segment {
                v6,
                udp: true,
                l4,
                payload: l4 + 8,
                seq: 0,
                flags: 0,
                len: len - 8,
                ip_id,
                dont_fragment,
            });
        }
        if proto != PROTO_TCP {
            return None;
        }
        let tcp = frame.get(l4..l4 + 20)?;
        let header = usize::from(tcp[12] >> 4) * 4;
        let flags = tcp[13];
        // ACK, maybe PSH, nothing else; no urgent pointer.
        if header < 20 || flags & !TCP_PSH != TCP_ACK || tcp[18] != 0 || tcp[19] != 0 {
            return None;
        }
        let payload = l4 + header;
        let len = frame.len().checked_sub(payload).filter(|&n| n > 0)?;
        Some(Segment {
            v6,
            udp: false,
            l4,
            payload,
            seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
            flags,
            len,
            ip_id,
            dont_fragment,
        })
    }
}

/// The super-packet being built.
#[derive(Debug)]
struct Pending {
    first: Segment,
    next_seq: u32,
    next_ip_id: u16,
    segments: usize,
    /// A short segment or PSH ended it: nothing more joins.
    closed: bool,
    psh: bool,
}

/// Merge counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroStats {
    /// Super-packets written (two segments or more).
    pub super_packets: u64,
    /// Segments that went into them.
    pub merged_segments: u64,
}

/// Gathers TCP segments (and UDP datagrams) into super-packets; see the
/// module docs.
#[derive(Debug)]
pub struct Gro {
    framing: Framing,
    /// UDP datagrams merge too (the device has USO).
    udp: bool,
    /// The virtio-net header's room, then the first segment's frame, then
    /// the payloads of the others.
    buf: Vec<u8>,
    pending: Option<Pending>,
    stats: GroStats,
}

impl Gro {
    /// A merger of frames (TAP) or IP packets (TUN); of UDP datagrams too
    /// with `udp` (only for a device that takes UDP super-packets: USO).
    pub fn new(framing: Framing, udp: bool) -> Gro {
        Gro {
            framing,
            udp,
            buf: Vec::with_capacity(VNET_HDR_LEN + framing.header_len() + MAX_IP_LEN),
            pending: None,
            stats: GroStats::default(),
        }
    }

    /// Takes `frame`: merged into the pending super-packet, or the pending
    /// one written and `frame` starting a new one, or written alone. False
    /// when a write of `frame` itself failed.
    pub fn push(&mut self, frame: &[u8], write: &mut Writer<'_>) -> bool {
        let segment = Segment::parse(self.framing, frame, self.udp);
        if let Some(seg) = segment
            && self.merges(frame, &seg)
        {
            self.merge(frame, &seg);
            return true;
        }
        self.flush(write);
        match segment {
            Some(seg) => {
                self.buf.clear();
                self.buf.extend_from_slice(&PLAIN_HEADER);
                self.buf.extend_from_slice(frame);
                self.pending = Some(Pending {
                    first: seg,
                    next_seq: seg.seq.wrapping_add(seg.len as u32),
                    next_ip_id: seg.ip_id.wrapping_add(1),
                    segments: 1,
                    closed: seg.flags & TCP_PSH != 0,
                    psh: seg.flags & TCP_PSH != 0,
                });
                true
            }
            None => write(&[&PLAIN_HEADER, frame]),
        }
    }

    /// Writes the pending super-packet, if any. False when that failed.
    pub fn flush(&mut self, write: &mut Writer<'_>) -> bool {
        let Some(pending) = self.pending.take() else {
            return true;
        };
        if pending.segments > 1 {
            self.finish(&pending);
            self.stats.super_packets += 1;
            self.stats.merged_segments += pending.segments as u64;
        }
        write(&[&self.buf])
    }

    /// What was merged so far.
    pub fn stats(&self) -> GroStats {
        self.stats
    }

    fn merges(&self, frame: &[u8], seg: &Segment) -> bool {
        let Some(p) = &self.pending else {
            return false;
        };
        let first = &self.buf[VNET_HDR_LEN..];
        let f = &p.first;
        let ip = self.framing.header_len();
        if p.closed
            || seg.v6 != f.v6
            || seg.udp != f.udp
            || seg.payload != f.payload
            || (!f.udp && seg.seq != p.next_seq)
            || (f.udp && p.segments >= UDP_MAX_SEGMENTS)
            || seg.len > f.len
            || self.buf.len() - VNET_HDR_LEN - ip + seg.len > MAX_IP_LEN + usize::from(f.v6) * 40
        {
            return false;
        }
        let same = |a: usize, b: usize| first.get(a..b) == frame.get(a..b);
        let headers_match = if f.v6 {
            // Version, traffic class, flow label; next header, hop limit;
            // addresses.
            same(0, ip + 4) && same(ip + 6, ip + 40)
        } else {
            let ids_follow = seg.dont_fragment || seg.ip_id == p.next_ip_id;
            // Version/IHL, TOS; flags; TTL, protocol; addresses.
            same(0, ip + 2)
                && same(ip + 6, ip + 7)
                && same(ip + 8, ip + 10)
                && same(ip + 12, ip + 20)
                && ids_follow
                && seg.dont_fragment == f.dont_fragment
        };
        if f.udp {
            // Ports.
            return headers_match && same(f.l4, f.l4 + 4);
        }
        // Ports; ACK number, data offset; window; options.
        headers_match
            && same(f.l4, f.l4 + 4)
            && same(f.l4 + 8, f.l4 + 13)
            && same(f.l4 + 14, f.l4 + 16)
            && same(f.l4 + 20, f.payload)
    }

    fn merge(&mut self, frame: &[u8], seg: &Segment) {
        self.buf.extend_from_slice(&frame[seg.payload..]);
        if let Some(p) = &mut self.pending {
            p.next_seq = seg.seq.wrapping_add(seg.len as u32);
            p.next_ip_id = seg.ip_id.wrapping_add(1);
            p.segments += 1;
            p.psh |= seg.flags & TCP_PSH != 0;
            p.closed = seg.len < p.first.len || p.psh;
        }
    }

    /// Sets the super-packet's lengths, checksums and virtio-net header.
    fn finish(&mut self, p: &Pending) {
        let f = &p.first;
        let frame = &mut self.buf[VNET_HDR_LEN..];
        let ip = self.framing.header_len();
        let l4_len = frame.len() - f.l4;
        let (proto, check_at, gso) = match (f.udp, f.v6) {
            (true, _) => (PROTO_UDP, 6, gso_type::UDP_L4),
            (false, false) => (PROTO_TCP, 16, gso_type::TCPV4),
            (false, true) => (PROTO_TCP, 16, gso_type::TCPV6),
        };
        if f.udp {
            frame[f.l4 + 4..f.l4 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        }
        let pseudo = u32::from(proto) + l4_len as u32;
        let pseudo = if f.v6 {
            let payload = (frame.len() - ip - 40) as u16;
            frame[ip + 4..ip + 6].copy_from_slice(&payload.to_be_bytes());
            sum(&frame[ip + 8..ip + 40], pseudo)
        } else {
            let total = (frame.len() - ip) as u16;
            frame[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
            set_ipv4_header_checksum(&mut frame[ip..ip + 20]);
            sum(&frame[ip + 12..ip + 20], pseudo)
        };
        if p.psh {
            frame[f.l4 + 13] |= TCP_PSH;
        }
        // CHECKSUM_PARTIAL: the field holds the pseudo-header's sum, the
        // kernel adds each segment's bytes.
        let check = f.l4 + check_at;
        frame[check..check + 2].copy_from_slice(&(!fold(pseudo)).to_be_bytes());
        let header = VnetHeader {
            flags: NEEDS_CSUM,
            gso_type: gso,
            hdr_len: f.payload as u16,
            gso_size: f.len as u16,
            csum_start: f.l4 as u16,
            csum_offset: check_at as u16,
        };
        self.buf[..VNET_HDR_LEN].copy_from_slice(&header.encode());
    }
}

#[cfg(test)]
mod tests;

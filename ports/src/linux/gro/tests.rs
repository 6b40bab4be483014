//! The GRO rules, checked by cutting each super-packet back with the
//! gateway's own segmenter (`gso::segment`): what comes out must be,
//! byte for byte, what went in.

#![allow(clippy::unwrap_used)]

use etherparse::{PacketBuilder, TcpOptionElement};

use super::*;
use crate::linux::gso::{VnetHeader, segment as segmenter};

/// One TCP segment of flow `port`, with timestamps (as iperf3's are).
fn segment(v6: bool, port: u16, seq: u32, payload: &[u8], ip_id: u16, psh: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let options = [
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::Timestamp(7, 9),
    ];
    if v6 {
        let t = eth
            .ipv6([0xfd; 16], [0xfe; 16], 64)
            .tcp(port, 5201, seq, 1000)
            .ack(77);
        let t = t.options(&options).unwrap();
        let t = if psh { t.psh() } else { t };
        t.write(&mut out, payload).unwrap();
    } else {
        let t = eth
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(port, 5201, seq, 1000)
            .ack(77);
        let t = t.options(&options).unwrap();
        let t = if psh { t.psh() } else { t };
        t.write(&mut out, payload).unwrap();
        // An ID per packet, as a sender without DF numbers them.
        out[18..20].copy_from_slice(&ip_id.to_be_bytes());
        out[20] &= !0x40;
        crate::inet::set_ipv4_header_checksum(&mut out[14..34]);
    }
    out
}

/// `n` full segments of `size` bytes and a last one of `last` bytes.
fn stream(v6: bool, n: usize, size: usize, last: usize) -> Vec<Vec<u8>> {
    let mut seq = 1000u32;
    (0..=n)
        .filter_map(|i| {
            let len = if i < n { size } else { last };
            (len > 0).then(|| {
                let payload: Vec<u8> = (0..len).map(|b| (b + i) as u8).collect();
                let s = segment(v6, 40000, seq, &payload, 100 + i as u16, i == n);
                seq += len as u32;
                s
            })
        })
        .collect()
}

/// Everything written: (virtio-net header, frame).
fn run(gro: &mut Gro, frames: &[Vec<u8>]) -> Vec<(VnetHeader, Vec<u8>)> {
    let mut out = Vec::new();
    let mut write = |parts: &[&[u8]]| {
        let whole: Vec<u8> = parts.concat();
        out.push((
            VnetHeader::parse(&whole).unwrap(),
            whole[VNET_HDR_LEN..].to_vec(),
        ));
        true
    };
    for f in frames {
        assert!(gro.push(f, &mut write));
    }
    assert!(gro.flush(&mut write));
    out
}

/// The segments a super-packet stands for, as the kernel would cut it.
fn cut(header: &VnetHeader, frame: &[u8]) -> Vec<Vec<u8>> {
    cut_as(Framing::Ethernet, header, frame)
}

/// [`cut`] of a frame or IP packet.
fn cut_as(framing: Framing, header: &VnetHeader, frame: &[u8]) -> Vec<Vec<u8>> {
    if header.gso_type == gso_type::NONE {
        return vec![frame.to_vec()];
    }
    let mut scratch = Vec::new();
    let mut segments = Vec::new();
    segmenter(
        framing,
        frame,
        usize::from(header.gso_size),
        &mut scratch,
        &mut |s| {
            segments.push(s.to_vec());
        },
    )
    .unwrap();
    segments
}

#[test]
fn ip_packets_of_a_tun_device_merge_as_frames_do() {
    for v6 in [false, true] {
        let packets: Vec<Vec<u8>> = stream(v6, 20, 1342, 500)
            .into_iter()
            .map(|f| f[14..].to_vec())
            .collect();
        let mut gro = Gro::new(Framing::Ip, false);
        let out = run(&mut gro, &packets);
        assert_eq!(out.len(), 1, "v6={v6}");
        let (header, packet) = &out[0];
        let ip_len = if v6 { 40 } else { 20 };
        assert_eq!(header.csum_start, ip_len, "offsets from the IP header");
        assert_eq!(header.hdr_len, ip_len + 32, "IP and TCP with timestamps");
        assert_eq!(cut_as(Framing::Ip, header, packet), packets, "v6={v6}");
        // An Ethernet frame is not an IP packet: it goes out alone.
        let frame = stream(v6, 1, 100, 0).remove(0);
        let out = run(
            &mut Gro::new(Framing::Ip, false),
            &[frame.clone(), frame.clone()],
        );
        assert!(out.iter().all(|(h, _)| h.gso_type == gso_type::NONE));
    }
}

#[test]
fn a_burst_of_one_flow_becomes_one_super_packet_that_cuts_back_into_it() {
    for v6 in [false, true] {
        let frames = stream(v6, 20, 1342, 500);
        let mut gro = Gro::new(Framing::Ethernet, false);
        let out = run(&mut gro, &frames);
        assert_eq!(out.len(), 1, "v6={v6}");
        let (header, frame) = &out[0];
        assert_eq!(header.flags, NEEDS_CSUM);
        assert_eq!(
            header.gso_type,
            if v6 { gso_type::TCPV6 } else { gso_type::TCPV4 }
        );
        assert_eq!(header.gso_size, 1342);
        assert_eq!(cut(header, frame), frames, "v6={v6}");
        assert_eq!(
            gro.stats(),
            GroStats {
                super_packets: 1,
                merged_segments: 21
            }
        );
    }
}

#[test]
fn a_lone_segment_goes_out_untouched_with_a_plain_header() {
    let frames = stream(false, 0, 0, 700);
    let out = run(&mut Gro::new(Framing::Ethernet, false), &frames);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, VnetHeader::default());
    assert_eq!(out[0].1, frames[0]);
}

#[test]
fn order_is_kept_around_what_cannot_merge() {
    let frames = stream(false, 6, 1000, 0);
    let arp = lanparty_core::testing::frames::arp_request(
        lanparty_core::wire::MacAddr([2, 0, 0, 0, 0, 2]),
        lanparty_core::testing::frames::Tags::None,
        [10, 0, 0, 2],
        [10, 0, 0, 1],
    );
    let other_flow = segment(false, 40001, 5, &[1; 1000], 7, false);
    let mut input = frames[..3].to_vec();
    input.push(arp.clone());
    input.extend_from_slice(&frames[3..5]);
    input.push(other_flow.clone());
    input.extend_from_slice(&frames[5..]);
    let out = run(&mut Gro::new(Framing::Ethernet, false), &input);
    let mut unrolled = Vec::new();
    for (header, frame) in &out {
        unrolled.extend(cut(header, frame));
    }
    assert_eq!(unrolled, input, "every frame, in the order given");
    assert_eq!(out.len(), 5, "3 segments | ARP | 2 | other flow | the rest");
}

#[test]
fn gaps_short_segments_and_psh_end_a_super_packet() {
    // A gap in the sequence.
    let mut frames = stream(false, 4, 1000, 0);
    frames.remove(2);
    let out = run(&mut Gro::new(Framing::Ethernet, false), &frames);
    assert_eq!(out.len(), 2);
    // A short segment ends it; the next full one starts another.
    let a = stream(false, 3, 1000, 400);
    let mut frames = a[..3].to_vec();
    let short = segment(false, 40000, 1000 + 3000, &[9; 400], 103, false);
    let next = segment(false, 40000, 1000 + 3400, &[9; 1000], 104, false);
    frames.push(short);
    frames.push(next);
    let out = run(&mut Gro::new(Framing::Ethernet, false), &frames);
    assert_eq!(out.len(), 2);
    assert_eq!(cut(&out[0].0, &out[0].1).len(), 4);
    // PSH on the last merged segment is kept.
    let frames = stream(false, 3, 1000, 1000);
    let out = run(&mut Gro::new(Framing::Ethernet, false), &frames);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1[14 + 20 + 13] & TCP_PSH, TCP_PSH);
}

#[test]
fn ids_that_do_not_follow_and_other_flags_go_alone() {
    let mut frames = stream(false, 3, 1000, 0);
    // The third segment's IP id jumps (DF clear): no merge.
    frames[2][18..20].copy_from_slice(&999u16.to_be_bytes());
    let out = run(&mut Gro::new(Framing::Ethernet, false), &frames);
    assert_eq!(out.len(), 2);
    // A FIN segment never merges.
    let mut frames = stream(false, 2, 1000, 0);
    frames[1][14 + 20 + 13] |= 0x01;
    assert!(Segment::parse(Framing::Ethernet, &frames[1], false).is_none());
    // Nor an empty one, a fragment, or garbage.
    let empty = segment(false, 40000, 1, &[], 1, false);
    assert!(Segment::parse(Framing::Ethernet, &empty, false).is_none());
    let mut fragment = segment(false, 40000, 1, &[1; 100], 1, false);
    fragment[20] |= 0x20;
    assert!(Segment::parse(Framing::Ethernet, &fragment, false).is_none());
    assert!(Segment::parse(Framing::Ethernet, &[0u8; 20], false).is_none());
    assert!(Segment::parse(Framing::Ethernet, &[], false).is_none());
}

#[test]
fn a_super_packet_stays_within_what_ip_can_carry() {
    let frames = stream(false, 60, 1342, 0);
    let out = run(&mut Gro::new(Framing::Ethernet, false), &frames);
    assert_eq!(out.len(), 2);
    for (_, frame) in &out {
        assert!(frame.len() - 14 <= MAX_IP_LEN);
    }
    let mut unrolled = Vec::new();
    for (header, frame) in &out {
        unrolled.extend(cut(header, frame));
    }
    assert_eq!(unrolled, frames);
}

#[test]
fn a_failed_write_is_reported_for_the_frame_that_was_written() {
    let arp = lanparty_core::testing::frames::arp_request(
        lanparty_core::wire::MacAddr([2, 0, 0, 0, 0, 2]),
        lanparty_core::testing::frames::Tags::None,
        [10, 0, 0, 2],
        [10, 0, 0, 1],
    );
    let mut gro = Gro::new(Framing::Ethernet, false);
    assert!(!gro.push(&arp, &mut |_| false));
    assert!(
        gro.push(&stream(false, 1, 100, 0)[0], &mut |_| false),
        "held, not written yet"
    );
    assert!(!gro.flush(&mut |_| false));
}

#[test]
fn the_partial_checksum_completes_to_the_right_one_as_the_kernel_does_it() {
    for v6 in [false, true] {
        let frames = stream(v6, 5, 1000, 321);
        let out = run(&mut Gro::new(Framing::Ethernet, false), &frames);
        let (header, frame) = &out[0];
        let start = usize::from(header.gso_type == gso_type::TCPV6) * 20 + 34;
        assert_eq!(usize::from(header.csum_start), start, "v6={v6}");
        assert_eq!(header.csum_offset, 16, "v6={v6}");
        // CHECKSUM_PARTIAL: the kernel sums from csum_start to the end,
        // starting from what the field holds, and stores the complement.
        let completed = crate::inet::fold(crate::inet::sum(&frame[start..], 0));
        let mut whole = frame.clone();
        crate::linux::checksum::complete_l4_checksum(Framing::Ethernet, &mut whole);
        let want = u16::from_be_bytes([whole[start + 16], whole[start + 17]]);
        assert_eq!(completed, want, "v6={v6}");
    }
}

#[test]
fn a_vlan_tagged_segment_goes_out_alone_and_untouched() {
    let mut tagged = segment(false, 40000, 1000, &[5; 1000], 1, false);
    tagged.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
    assert!(Segment::parse(Framing::Ethernet, &tagged, false).is_none());
    let frames = vec![tagged.clone(), tagged.clone()];
    let out = run(&mut Gro::new(Framing::Ethernet, false), &frames);
    assert_eq!(out.len(), 2);
    assert!(
        out.iter()
            .all(|(h, f)| *h == VnetHeader::default() && *f == tagged)
    );
}

/// One UDP datagram of flow `port` (IPv4 with an ID per packet, or IPv6).
fn datagram(v6: bool, port: u16, payload: &[u8], ip_id: u16) -> Vec<u8> {
    let mut out = Vec::new();
    let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    if v6 {
        eth.ipv6([0xfd; 16], [0xfe; 16], 64)
            .udp(port, 5201)
            .write(&mut out, payload)
            .unwrap();
    } else {
        eth.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(port, 5201)
            .write(&mut out, payload)
            .unwrap();
        out[18..20].copy_from_slice(&ip_id.to_be_bytes());
        out[20] &= !0x40;
        crate::inet::set_ipv4_header_checksum(&mut out[14..34]);
    }
    out
}

/// `n` datagrams of `size` bytes and a last one of `last` bytes.
fn datagrams(v6: bool, n: usize, size: usize, last: usize) -> Vec<Vec<u8>> {
    (0..=n)
        .filter_map(|i| {
            let len = if i < n { size } else { last };
            (len > 0).then(|| {
                let payload: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
                datagram(v6, 40000, &payload, 300 + i as u16)
            })
        })
        .collect()
}

#[test]
fn with_uso_a_burst_of_udp_datagrams_becomes_one_super_packet_that_cuts_back_into_it() {
    for framing in [Framing::Ethernet, Framing::Ip] {
        let strip = 14 - framing.header_len();
        for v6 in [false, true] {
            let frames: Vec<Vec<u8>> = datagrams(v6, 20, 64, 30)
                .into_iter()
                .map(|f| f[strip..].to_vec())
                .collect();
            let mut gro = Gro::new(framing, true);
            let out = run(&mut gro, &frames);
            assert_eq!(out.len(), 1, "{framing:?} v6={v6}");
            let (header, frame) = &out[0];
            assert_eq!(header.gso_type, gso_type::UDP_L4);
            assert_eq!(header.gso_size, 64);
            assert_eq!(header.csum_offset, 6);
            assert_eq!(
                cut_as(framing, header, frame),
                frames,
                "{framing:?} v6={v6}"
            );
            assert_eq!(gro.stats().merged_segments, 21);
            // Without USO on the device, every datagram goes out alone.
            let out = run(&mut Gro::new(framing, false), &frames);
            assert_eq!(out.len(), frames.len());
            assert!(out.iter().all(|(h, _)| h.gso_type == gso_type::NONE));
        }
    }
}

#[test]
fn udp_merging_stops_at_the_segment_limit_a_longer_datagram_and_another_flow() {
    let frames = datagrams(false, 150, 100, 0);
    let out = run(&mut Gro::new(Framing::Ethernet, true), &frames);
    let counts: Vec<usize> = out.iter().map(|(h, f)| cut(h, f).len()).collect();
    assert_eq!(
        counts,
        vec![
            UDP_MAX_SEGMENTS,
            UDP_MAX_SEGMENTS,
            150 - 2 * UDP_MAX_SEGMENTS
        ]
    );
    let all: Vec<Vec<u8>> = out.iter().flat_map(|(h, f)| cut(h, f)).collect();
    assert_eq!(all, frames);
    // A longer datagram, another flow, a TCP segment: each starts anew.
    let mut mixed = datagrams(false, 3, 100, 0);
    mixed.push(datagram(false, 40000, &[1; 200], 303));
    mixed.push(datagram(false, 40001, &[2; 100], 304));
    mixed.push(segment(false, 40000, 1, &[3; 100], 305, false));
    let out = run(&mut Gro::new(Framing::Ethernet, true), &mixed);
    let all: Vec<Vec<u8>> = out.iter().flat_map(|(h, f)| cut(h, f)).collect();
    assert_eq!(out.len(), 4);
    assert_eq!(all, mixed);
}

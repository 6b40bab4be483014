//! Header compression: every compressed frame rebuilds byte for byte, and
//! nothing the rules forbid is ever compressed.

use super::*;

const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn ethernet(ethertype: u16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&B);
    f.extend_from_slice(&A);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// An IPv4 frame: protocol `proto`, `l4` after the header, TOS `tos`, ID `id`.
fn ipv4(proto: u8, tos: u8, id: u16, l4: &[u8]) -> Vec<u8> {
    let mut f = ethernet(0x0800);
    let total = (20 + l4.len()) as u16;
    f.extend_from_slice(&[0x45, tos]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&[0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    set_ipv4_header_checksum(&mut f[14..34]);
    f.extend_from_slice(l4);
    f
}

fn ipv6(next: u8, tc: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = ethernet(0x86dd);
    f.extend_from_slice(&[0x60 | tc >> 4, tc << 4, 0x12, 0x34]);
    f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    f.extend_from_slice(&[next, 64]);
    f.extend_from_slice(&[0xfd; 16]);
    f.extend_from_slice(&[0xfe; 16]);
    f.extend_from_slice(l4);
    f
}

/// A TCP segment with timestamps: sequence `seq`, `payload` bytes.
fn tcp(seq: u32, payload: usize) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51]);
    s.extend_from_slice(&seq.to_be_bytes());
    s.extend_from_slice(&7u32.to_be_bytes());
    s.extend_from_slice(&[0x80, 0x10, 0x01, 0xf5, 0xab, 0xcd, 0, 0]);
    s.extend_from_slice(&[1, 1, 8, 10]);
    s.extend_from_slice(&seq.wrapping_mul(3).to_be_bytes());
    s.extend_from_slice(&9u32.to_be_bytes());
    s.extend((0..payload).map(|i| (i as u32).wrapping_add(seq) as u8));
    s
}

fn udp(port: u16, payload: usize) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&port.to_be_bytes());
    s.extend_from_slice(&27015u16.to_be_bytes());
    s.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    s.extend_from_slice(&[0x5a, 0xa5]);
    s.extend((0..payload).map(|i| i as u8));
    s
}

const T0: Timestamp = Timestamp::ZERO;

/// Sends `frame` from `tx` to `rx` the way the data path does and returns
/// the frame the receiver hands on and the bytes on the wire (after the
/// overlay header).
fn send(
    tx: &mut Compressor,
    rx: &mut Decompressor,
    frame: &[u8],
    now: Timestamp,
) -> (Encoding, Vec<u8>, usize) {
    let encoding = tx.plan(frame, now);
    match encoding {
        Encoding::Plain => (encoding, frame.to_vec(), frame.len()),
        Encoding::Install { slot, generation } => {
            rx.install(slot, generation, frame).expect("install");
            tx.acked(slot, generation);
            (encoding, frame.to_vec(), INSTALL_OVERHEAD + frame.len())
        }
        Encoding::Compressed { slot, generation } => {
            let mut wire = BytesMut::new();
            tx.write_compressed(slot, frame, &mut wire);
            let mut out = BytesMut::new();
            rx.decompress(wire[0], wire[1], &wire[2..], &mut out)
                .expect("decompress");
            assert_eq!((wire[0], wire[1]), (slot, generation));
            (encoding, out.to_vec(), wire.len())
        }
    }
}

#[test]
fn a_tcp_flow_is_compressed_from_its_third_frame_and_rebuilds_exactly() {
    let (mut tx, mut rx) = (Compressor::default(), Decompressor::default());
    let mut kinds = Vec::new();
    for i in 0..200u32 {
        // IDs, TOS (ECN marks), sequence numbers, options and sizes change.
        let frame = ipv4(
            TCP,
            (i % 4) as u8,
            i as u16,
            &tcp(i * 1342, 1342 - (i % 7) as usize),
        );
        let (encoding, rebuilt, wire) = send(&mut tx, &mut rx, &frame, T0);
        assert_eq!(rebuilt, frame, "frame {i}");
        if let Encoding::Compressed { .. } = encoding {
            // Ethernet 14, IPv4 17 of 20 (TOS and ID travel), ports 4,
            // less slot and generation.
            assert_eq!(frame.len() - wire, 14 + 17 + 4 - 2, "frame {i}");
        }
        kinds.push(encoding);
    }
    assert_eq!(kinds[0], Encoding::Plain);
    assert!(matches!(kinds[1], Encoding::Install { .. }));
    assert!(
        kinds[2..]
            .iter()
            .all(|k| matches!(k, Encoding::Compressed { .. }))
    );
}

#[test]
fn udp_ipv6_and_other_protocols_rebuild_exactly() {
    let (mut tx, mut rx) = (Compressor::default(), Decompressor::default());
    let frames = [
        ipv4(UDP, 0, 1, &udp(5000, 40)),
        ipv4(UDP, 0, 2, &udp(5000, 1200)),
        ipv4(1, 0, 3, &[8, 0, 0xf7, 0xff, 0, 1, 0, 1, 1, 2, 3]),
        ipv6(TCP, 0, &tcp(1, 100)),
        ipv6(TCP, 3, &tcp(101, 7)),
        ipv6(UDP, 0, &udp(6000, 30)),
        ipv6(UDP, 0, &udp(6000, 0)),
        ipv6(58, 0, &[128, 0, 0, 0, 0, 1, 0, 1]),
    ];
    let mut compressed = 0;
    for round in 0..4 {
        for frame in &frames {
            let (encoding, rebuilt, wire) = send(&mut tx, &mut rx, frame, T0);
            assert_eq!(&rebuilt, frame, "round {round}");
            if let Encoding::Compressed { .. } = encoding {
                assert!(wire < frame.len());
                compressed += 1;
            }
        }
    }
    assert!(compressed >= frames.len() * 2, "{compressed}");
}

#[test]
fn frames_that_would_not_rebuild_exactly_always_go_whole() {
    let good = ipv4(TCP, 0, 1, &tcp(1, 10));
    let mut bad_sum = good.clone();
    bad_sum[24] ^= 1;
    let mut padded = ipv4(TCP, 0, 1, &tcp(1, 0));
    padded.extend_from_slice(&[0; 6]);
    let mut options = good.clone();
    options[14] = 0x46;
    let mut udp_len = ipv4(UDP, 0, 1, &udp(1, 10));
    udp_len[39] += 1;
    set_ipv4_header_checksum(&mut udp_len[14..34]);
    let mut vlan = ethernet(0x8100);
    vlan.extend_from_slice(&[0, 5, 8, 0]);
    vlan.extend_from_slice(&good[14..]);
    let mut arp = ethernet(0x0806);
    arp.extend_from_slice(&[0; 28]);
    let mut v6_len = ipv6(TCP, 0, &tcp(1, 10));
    v6_len[19] += 1;
    let cases = [
        bad_sum,
        padded,
        options,
        vlan,
        arp,
        v6_len,
        good[..20].to_vec(),
        Vec::new(),
    ];
    for (i, frame) in cases.iter().enumerate() {
        let mut tx = Compressor::default();
        for _ in 0..5 {
            assert_eq!(tx.plan(frame, T0), Encoding::Plain, "case {i}");
        }
        assert_eq!(
            Decompressor::default().install(0, 1, frame),
            Err(CompressError::NotCompressible),
            "case {i}"
        );
    }
    // A UDP length that disagrees with the IP length is kept as it is:
    // the frame compresses as "another protocol" and rebuilds exactly.
    let (mut tx, mut rx) = (Compressor::default(), Decompressor::default());
    for _ in 0..3 {
        assert_eq!(send(&mut tx, &mut rx, &udp_len, T0).1, udp_len);
    }
    assert!(matches!(tx.plan(&udp_len, T0), Encoding::Compressed { .. }));
}

#[test]
fn nothing_is_compressed_before_the_receiver_acknowledges() {
    let mut tx = Compressor::default();
    let frame = ipv4(TCP, 0, 1, &tcp(1, 100));
    assert_eq!(tx.plan(&frame, T0), Encoding::Plain);
    let Encoding::Install { slot, generation } = tx.plan(&frame, T0) else {
        panic!("second frame installs");
    };
    for _ in 0..10 {
        assert_eq!(tx.plan(&frame, T0), Encoding::Install { slot, generation });
    }
    // An acknowledgement for another generation or slot changes nothing.
    tx.acked(slot, generation.wrapping_add(1));
    tx.acked(slot + 1, generation);
    tx.acked(200, generation);
    assert_eq!(tx.plan(&frame, T0), Encoding::Install { slot, generation });
    tx.acked(slot, generation);
    assert_eq!(
        tx.plan(&frame, T0),
        Encoding::Compressed { slot, generation }
    );
}

#[test]
fn a_slot_goes_to_a_new_flow_only_after_it_has_rested_and_stale_frames_are_refused() {
    let (mut tx, mut rx) = (Compressor::default(), Decompressor::default());
    let flow = |port: u16, seq: u32| {
        let mut segment = tcp(seq, 50);
        segment[0..2].copy_from_slice(&port.to_be_bytes());
        ipv4(TCP, 0, 1, &segment)
    };
    // Fill every slot.
    for port in 0..SLOTS as u16 {
        for seq in 0..3 {
            send(&mut tx, &mut rx, &flow(port, seq), T0);
        }
    }
    // Every slot was used just now: a new flow goes whole.
    let newcomer = flow(9999, 0);
    for _ in 0..3 {
        assert_eq!(tx.plan(&newcomer, T0), Encoding::Plain);
    }
    // Keep all but flow 5 busy; once flow 5's slot has rested, the
    // newcomer gets it with the next generation.
    let later = T0 + SLOT_REUSE_AFTER;
    for port in (0..SLOTS as u16).filter(|p| *p != 5) {
        send(&mut tx, &mut rx, &flow(port, 10), later);
    }
    let old = flow(5, 77);
    let Encoding::Compressed {
        slot,
        generation: old_generation,
    } = tx.clone().plan(&old, T0)
    else {
        panic!("flow 5 is compressed");
    };
    let mut stale = BytesMut::new();
    tx.write_compressed(slot, &old, &mut stale);
    let Encoding::Install {
        slot: reused,
        generation,
    } = tx.plan(&newcomer, later)
    else {
        panic!("the rested slot is given out");
    };
    assert_eq!((reused, generation), (slot, old_generation.wrapping_add(1)));
    rx.install(slot, generation, &newcomer).expect("install");
    // Flow 5's old install, reordered behind the new one, is ignored ...
    rx.install(slot, old_generation, &old).expect("still whole");
    // ... and its compressed frame, late, is refused, not rebuilt wrongly.
    let mut out = BytesMut::new();
    assert_eq!(
        rx.decompress(stale[0], stale[1], &stale[2..], &mut out),
        Err(CompressError::Stale)
    );
    tx.acked(slot, generation);
    assert_eq!(send(&mut tx, &mut rx, &newcomer, later).1, newcomer);
}

#[test]
fn a_flood_of_one_frame_flows_takes_no_context() {
    let mut tx = Compressor::default();
    for port in 0..10_000u16 {
        let frame = ipv4(UDP, 0, 1, &udp(port, 20));
        assert_eq!(tx.plan(&frame, T0), Encoding::Plain);
    }
    assert!(tx.slots.iter().all(|s| s.key.is_none()));
}

#[test]
fn hostile_compressed_frames_are_refused_without_panicking() {
    let mut rx = Decompressor::default();
    let mut out = BytesMut::new();
    assert_eq!(
        rx.decompress(0, 0, &[1, 2, 3], &mut out),
        Err(CompressError::Unknown)
    );
    assert_eq!(
        rx.decompress(SLOTS as u8, 0, &[], &mut out),
        Err(CompressError::BadSlot)
    );
    assert_eq!(
        rx.install(255, 0, &ipv4(TCP, 0, 1, &tcp(1, 1))),
        Err(CompressError::BadSlot)
    );
    rx.install(3, 9, &ipv4(TCP, 0, 1, &tcp(1, 1)))
        .expect("install");
    assert_eq!(
        rx.decompress(3, 9, &[1, 2], &mut out),
        Err(CompressError::Truncated)
    );
    assert_eq!(
        rx.decompress(3, 8, &[0; 40], &mut out),
        Err(CompressError::Stale)
    );
    assert!(out.is_empty());
    // Any body at least as long as the changing bytes rebuilds a frame
    // with consistent lengths and checksum.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for len in 0..300 {
        let body: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        out.clear();
        if rx.decompress(3, 9, &body, &mut out).is_ok() {
            assert_eq!(usize::from(be16(&out, 16).unwrap()), out.len() - 14);
            assert_eq!(ipv4_header_checksum(&out[14..34]), be16(&out, 24).unwrap());
        }
    }
}

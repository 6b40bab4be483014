//! The Ethernet emulation driven by hand: ARP/ND answers, broadcast
//! mapping and the DHCP client, frames and packets in, no device.

use super::*;

const OURS: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x10]);
const PEER: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x20]);
const ROUTER: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x01]);
const ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 10);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 20);
const ROUTER_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);

fn static_emulation(now: Instant) -> Emulation {
    Emulation::new(
        EmulationConfig::new(
            OURS,
            Addressing::Static(Ipv4Config {
                addr: ADDR,
                prefix: 24,
                router: Some(ROUTER_IP),
            }),
        ),
        1,
        now,
    )
}

fn udp4(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Bytes {
    let builder = etherparse::PacketBuilder::ipv4(src.octets(), dst.octets(), 64).udp(1000, 2000);
    let mut out = Vec::new();
    builder.write(&mut out, payload).unwrap();
    Bytes::from(out)
}

fn udp6(src: Ipv6Addr, dst: Ipv6Addr) -> Bytes {
    let builder = etherparse::PacketBuilder::ipv6(src.octets(), dst.octets(), 64).udp(1000, 2000);
    let mut out = Vec::new();
    builder.write(&mut out, b"hello").unwrap();
    Bytes::from(out)
}

fn dst_of(frame: &[u8]) -> MacAddr {
    MacAddr(frame[0..6].try_into().unwrap())
}

fn arp_from(sha: MacAddr, spa: Ipv4Addr, op: u16, tpa: Ipv4Addr, dst: MacAddr) -> Bytes {
    Bytes::from(
        Arp {
            op,
            sha,
            spa,
            tha: MacAddr([0; 6]),
            tpa,
        }
        .frame(dst),
    )
}

#[test]
fn arp_requests_for_us_are_answered_and_teach_the_table() {
    let t = Instant::now();
    let mut e = static_emulation(t);
    let (mut os, mut room) = (Vec::new(), Vec::new());
    e.inbound(
        t,
        &arp_from(PEER, PEER_IP, ARP_REQUEST, ADDR, MacAddr::BROADCAST),
        &mut os,
        &mut room,
    );
    assert!(os.is_empty(), "ARP never reaches an IP-only adapter");
    assert_eq!(room.len(), 1);
    let reply = Arp::parse(&room[0][ETH_HLEN..]).unwrap();
    assert_eq!(
        (reply.op, reply.sha, reply.spa, reply.tpa),
        (ARP_REPLY, OURS, ADDR, PEER_IP)
    );
    assert_eq!(dst_of(&room[0]), PEER);
    assert_eq!(e.neighbor(IpAddr::V4(PEER_IP)), Some(PEER));
    // Requests for someone else are not answered, but still teach.
    room.clear();
    let other = Ipv4Addr::new(192, 168, 77, 99);
    e.inbound(
        t,
        &arp_from(ROUTER, ROUTER_IP, ARP_REQUEST, other, MacAddr::BROADCAST),
        &mut os,
        &mut room,
    );
    assert!(room.is_empty());
    assert_eq!(e.neighbor(IpAddr::V4(ROUTER_IP)), Some(ROUTER));
    assert_eq!(e.counters().arp_answered, 1);
}

#[test]
fn unknown_neighbours_are_resolved_while_the_packet_waits() {
    let t = Instant::now();
    let mut e = static_emulation(t);
    let (mut os, mut room) = (Vec::new(), Vec::new());
    e.outbound(t, udp4(ADDR, PEER_IP, b"game"), &mut room);
    assert_eq!(room.len(), 1, "an ARP request, not the packet");
    let request = Arp::parse(&room[0][ETH_HLEN..]).unwrap();
    assert_eq!(
        (request.op, request.spa, request.tpa),
        (ARP_REQUEST, ADDR, PEER_IP)
    );
    assert_eq!(dst_of(&room[0]), MacAddr::BROADCAST);
    room.clear();
    // A second packet to the same hop waits without a second request.
    e.outbound(t, udp4(ADDR, PEER_IP, b"game2"), &mut room);
    assert!(room.is_empty());
    // The reply releases both, addressed to the peer.
    e.inbound(
        t,
        &arp_from(PEER, PEER_IP, ARP_REPLY, ADDR, OURS),
        &mut os,
        &mut room,
    );
    assert_eq!(room.len(), 2);
    assert!(
        room.iter()
            .all(|f| dst_of(f) == PEER && f[12..14] == [8, 0])
    );
    assert_eq!(e.counters().outbound, 2);
    // Now known: straight out.
    room.clear();
    e.outbound(t, udp4(ADDR, PEER_IP, b"x"), &mut room);
    assert_eq!(dst_of(&room[0]), PEER);
}

#[test]
fn off_lan_destinations_go_to_the_router_and_broadcasts_map() {
    let t = Instant::now();
    let mut e = static_emulation(t);
    let (mut os, mut room) = (Vec::new(), Vec::new());
    e.inbound(
        t,
        &arp_from(ROUTER, ROUTER_IP, ARP_REPLY, ADDR, OURS),
        &mut os,
        &mut room,
    );
    e.outbound(t, udp4(ADDR, Ipv4Addr::new(8, 8, 8, 8), b"x"), &mut room);
    assert_eq!(dst_of(room.last().unwrap()), ROUTER);
    for (dst, mac) in [
        (Ipv4Addr::BROADCAST, MacAddr::BROADCAST),
        (Ipv4Addr::new(192, 168, 77, 255), MacAddr::BROADCAST),
        (
            Ipv4Addr::new(239, 255, 1, 2),
            MacAddr([1, 0, 0x5e, 0x7f, 1, 2]),
        ),
    ] {
        room.clear();
        e.outbound(t, udp4(ADDR, dst, b"discover"), &mut room);
        assert_eq!(dst_of(&room[0]), mac, "{dst}");
    }
    room.clear();
    let ll: Ipv6Addr = "fe80::10".parse().unwrap();
    e.outbound(t, udp6(ll, "ff02::1".parse().unwrap()), &mut room);
    assert_eq!(dst_of(&room[0]), MacAddr([0x33, 0x33, 0, 0, 0, 1]));
}

#[test]
fn neighbour_solicitations_for_our_addresses_are_answered() {
    let t = Instant::now();
    let mut e = static_emulation(t);
    let ours: Ipv6Addr = "fe80::10".parse().unwrap();
    let theirs: Ipv6Addr = "fe80::20".parse().unwrap();
    let (mut os, mut room) = (Vec::new(), Vec::new());
    // The OS uses `ours` as a source: the emulation now owns it.
    e.outbound(t, udp6(ours, theirs), &mut room);
    assert_eq!(room.len(), 1, "a solicitation for the unknown neighbour");
    let ns = Neighbor::parse(&room[0][ETH_HLEN..]).unwrap();
    assert_eq!(
        (ns.kind, ns.src, ns.target, ns.lladdr),
        (ND_SOLICIT, ours, theirs, Some(OURS))
    );
    room.clear();
    // The neighbour solicits us: we advertise, and learn it (the waiting
    // packet leaves).
    let solicit = Bytes::from(packets::neighbor_solicitation(PEER, theirs, ours));
    e.inbound(t, &solicit, &mut os, &mut room);
    assert!(os.is_empty());
    let na = room
        .iter()
        .find(|f| Neighbor::parse(&f[ETH_HLEN..]).is_some_and(|n| n.kind == ND_ADVERT))
        .unwrap();
    assert!(packets::icmpv6_checksum_ok(&na[ETH_HLEN..]));
    assert_eq!(dst_of(na), PEER);
    assert!(room.iter().any(|f| dst_of(f) == PEER
        && f[12..14] == [0x86, 0xdd]
        && Neighbor::parse(&f[ETH_HLEN..]).is_none()));
    assert_eq!(e.counters().ns_answered, 1);
}

#[test]
fn inbound_frames_are_stripped_trimmed_and_filtered() {
    let t = Instant::now();
    let mut e = static_emulation(t);
    let (mut os, mut room) = (Vec::new(), Vec::new());
    let packet = udp4(PEER_IP, ADDR, b"hi");
    let mut frame = packets::ethernet(OURS, PEER, ETH_IPV4, &packet);
    assert!(frame.len() > packet.len() + ETH_HLEN, "padded to 60");
    e.inbound(t, &Bytes::from(frame.clone()), &mut os, &mut room);
    assert_eq!(os, vec![packet.clone()], "padding never reaches the OS");
    // Another station's unicast, and our own echo, are not for us.
    frame[0..6].copy_from_slice(&PEER.0);
    e.inbound(t, &Bytes::from(frame), &mut os, &mut room);
    let echo = packets::ethernet(MacAddr::BROADCAST, OURS, ETH_IPV4, &packet);
    e.inbound(t, &Bytes::from(echo), &mut os, &mut room);
    assert_eq!(os.len(), 1);
    assert_eq!(e.counters().not_for_us, 2);
}

#[test]
fn resolution_gives_up_and_the_queue_is_bounded() {
    let t = Instant::now();
    let mut config = EmulationConfig::new(
        OURS,
        Addressing::Static(Ipv4Config {
            addr: ADDR,
            prefix: 24,
            router: None,
        }),
    );
    config.pending_max = 4;
    let mut e = Emulation::new(config, 1, t);
    let mut room = Vec::new();
    for i in 0..6 {
        e.outbound(
            t,
            udp4(ADDR, Ipv4Addr::new(192, 168, 77, 100 + i), b"x"),
            &mut room,
        );
    }
    assert_eq!(e.counters().pending_full, 2);
    // Re-solicited once a second while waiting, then dropped.
    room.clear();
    e.poll(t + Duration::from_millis(1100), &mut room);
    assert_eq!(room.len(), 4, "one retry per waiting next hop");
    e.poll(t + Duration::from_secs(4), &mut room);
    assert_eq!(e.counters().unresolved, 4);
    // No router: off-LAN packets cannot leave.
    e.outbound(t, udp4(ADDR, Ipv4Addr::new(1, 1, 1, 1), b"x"), &mut room);
    assert_eq!(e.counters().outbound_dropped, 1);
}

#[test]
fn neighbours_expire() {
    let t = Instant::now();
    let mut e = static_emulation(t);
    let (mut os, mut room) = (Vec::new(), Vec::new());
    e.inbound(
        t,
        &arp_from(PEER, PEER_IP, ARP_REPLY, ADDR, OURS),
        &mut os,
        &mut room,
    );
    e.poll(t + Duration::from_secs(299), &mut room);
    assert_eq!(e.neighbor_count(), 1);
    e.poll(t + Duration::from_secs(301), &mut room);
    assert_eq!(e.neighbor_count(), 0);
}

#[test]
fn dhcp_configures_the_adapter() {
    let t = Instant::now();
    let mut e = Emulation::new(
        EmulationConfig::new(OURS, Addressing::Dhcp { hostname: None }),
        9,
        t,
    );
    let (mut os, mut room) = (Vec::new(), Vec::new());
    assert_eq!(e.poll(t, &mut room), None);
    let discover = room.pop().unwrap();
    assert_eq!(dst_of(&discover), MacAddr::BROADCAST);
    let reply = |request: &[u8], kind: u8| -> Bytes {
        let xid = &request[ETH_HLEN + 28 + 4..ETH_HLEN + 28 + 8];
        let mut m = vec![0u8; 240];
        m[0] = 2;
        m[1] = 1;
        m[2] = 6;
        m[4..8].copy_from_slice(xid);
        m[16..20].copy_from_slice(&ADDR.octets());
        m[28..34].copy_from_slice(&OURS.0);
        m[236..240].copy_from_slice(&[99, 130, 83, 99]);
        m.extend_from_slice(&[
            53, 1, kind, 54, 4, 192, 168, 77, 1, 1, 4, 255, 255, 255, 0, 3, 4, 192, 168, 77, 1, 51,
            4, 0, 0, 14, 16, 255,
        ]);
        let builder = etherparse::PacketBuilder::ethernet2(ROUTER.0, MacAddr::BROADCAST.0)
            .ipv4(ROUTER_IP.octets(), [255; 4], 64)
            .udp(67, 68);
        let mut out = Vec::new();
        builder.write(&mut out, &m).unwrap();
        Bytes::from(out)
    };
    assert_eq!(e.inbound(t, &reply(&discover, 2), &mut os, &mut room), None);
    let request = room.pop().unwrap();
    let event = e.inbound(t, &reply(&request, 5), &mut os, &mut room);
    assert_eq!(
        event,
        Some(Event::Configure(Ipv4Config {
            addr: ADDR,
            prefix: 24,
            router: Some(ROUTER_IP)
        }))
    );
    assert!(
        os.is_empty(),
        "DHCP replies are the emulation's, not the OS's"
    );
    assert_eq!(e.dhcp_state(), "bound");
    // Now it answers ARP for the leased address.
    room.clear();
    e.inbound(
        t,
        &arp_from(PEER, PEER_IP, ARP_REQUEST, ADDR, MacAddr::BROADCAST),
        &mut os,
        &mut room,
    );
    assert_eq!(room.len(), 1);
}

#[test]
fn hostile_input_never_panics() {
    let t = Instant::now();
    let mut e = static_emulation(t);
    let (mut os, mut room) = (Vec::new(), Vec::new());
    let mut seed = 0x1234_5678u32;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    let samples = [
        arp_from(PEER, PEER_IP, ARP_REQUEST, ADDR, MacAddr::BROADCAST),
        Bytes::from(packets::ethernet(
            OURS,
            PEER,
            ETH_IPV4,
            &udp4(PEER_IP, ADDR, b"x"),
        )),
        Bytes::from(packets::neighbor_solicitation(
            PEER,
            "fe80::20".parse().unwrap(),
            "fe80::10".parse().unwrap(),
        )),
    ];
    for i in 0..30_000u32 {
        let mut bytes = samples[(i % 3) as usize].to_vec();
        match next() % 3 {
            0 => bytes.truncate((next() as usize) % (bytes.len() + 1)),
            1 => {
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] ^= 1 << (next() % 8);
                }
            }
            _ => bytes = (0..next() % 120).map(|_| next() as u8).collect(),
        }
        let b = Bytes::from(bytes);
        e.inbound(t, &b, &mut os, &mut room);
        e.outbound(t, b.slice(b.len().min(14)..), &mut room);
        os.clear();
        room.clear();
    }
}

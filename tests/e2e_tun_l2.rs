//! The Ethernet emulation end to end: a Linux client on a TUN device
//! (`tun-l2`, the Windows client's layer) next to a TAP client, through the
//! shipped relay and gateway, on real interfaces in network namespaces.
//!
//! ```text
//!  T (client, tun-l2) ─┐                    ┌─ G (gateway) ── AF_PACKET ── LAN bridge ── L (dnsmasq, game server)
//!  A (client, TAP)    ─┴── underlay ── R (relay)
//! ```
//!
//! T leases its address from the LAN's dnsmasq with the emulation's own
//! DHCP client, pings the LAN host and A (ARP answered by the emulation on
//! both sides of the exchange), and its UDP broadcast discovery reaches the
//! LAN's game server and A, with the answer coming back. TCP between T and
//! A runs through the TUN device's offloads: T's sends read as
//! super-packets and cut, A's segments written to T merged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::*;

fn address_of(ns: &Netns, dev: &str) -> Option<String> {
    let out = ns.exec(&["ip", "-4", "-o", "addr", "show", "dev", dev]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .map(|cidr| cidr.split('/').next().unwrap_or_default().to_string())
}

#[test]
fn a_tun_l2_client_leases_pings_and_discovers() {
    let dir = TempDir::new("tunl2");
    let tls = dir.0.join("tls");
    let r = Netns::new("ltR");
    let g = Netns::new("ltG");
    let l = Netns::new("ltL");
    let t = Netns::new("ltT");
    let a = Netns::new("ltA");
    let t_relay = underlay(&t, &r, "10.202.0");
    let a_relay = underlay(&a, &r, "10.202.1");
    let g_relay = underlay(&g, &r, "10.202.2");
    let (glan, lg) = (unique("gl"), unique("lg"));
    veth(&g, &glan, &l, &lg);
    l.ip(&["addr", "add", "192.168.77.1/24", "dev", &lg]);

    let _relay = start_relay(&r, &dir, &tls, &[]);
    let _lan = lan_services(&l, &dir, &lg, 60);
    let _gateway = start_gateway(&g, &dir, &gateway_sets(&g_relay, &tls, "TUNPARTY", &glan));

    // A: a TAP client with a static address. T: the TUN client, DHCP.
    let (dev_a, dev_t) = (unique("lpa"), unique("lpt"));
    let mut a_sets = client_sets(&a_relay, &tls, "TUNPARTY", "02:00:00:00:00:aa", &dev_a);
    a_sets.push("ports.adapter.addresses=[192.168.77.50/24]".into());
    let a_node = lanparty_in(&a, &dir, "a.log", "client.yaml", &a_sets);
    let mut t_sets = client_sets(&t_relay, &tls, "TUNPARTY", "02:00:00:00:00:77", &dev_t);
    t_sets.push("ports.adapter.hostname=tunplayer".into());
    let t_node = lanparty_in(&t, &dir, "t.log", "client-tun-l2.yaml", &t_sets);

    // 1. The lease, from the LAN's dnsmasq, set on the TUN device.
    let mut leased = None;
    assert!(
        wait_until(Duration::from_secs(30), || {
            leased = address_of(&t, &dev_t);
            leased.is_some()
        }),
        "no DHCP lease on the TUN device:\n{}\n{}",
        t_node.log_text(),
        std::fs::read_to_string(dir.0.join("dnsmasq.log")).unwrap_or_default()
    );
    let ip_t = leased.unwrap();
    assert!(ip_t.starts_with("192.168.77.1"), "{ip_t}");
    let leases = std::fs::read_to_string(dir.0.join("dnsmasq.leases")).unwrap_or_default();
    assert!(
        leases.contains("02:00:00:00:00:77") && leases.contains("tunplayer"),
        "{leases}"
    );
    eprintln!("1. tun-l2 client leased {ip_t} from the LAN's dnsmasq");

    // 2. Ping the LAN host and the TAP client.
    assert!(
        ping(&t, "192.168.77.1", 10),
        "T cannot ping the LAN host:\n{}",
        t_node.log_text()
    );
    assert!(
        ping(&t, "192.168.77.50", 10),
        "T cannot ping A:\n{}",
        a_node.log_text()
    );
    assert!(ping(&a, &ip_t, 5), "A cannot ping T");
    eprintln!("2. ping: T ↔ LAN host, T ↔ A (ARP answered by the emulation)");

    // 3. Broadcast discovery: T's broadcast reaches the game server and A.
    let (_a_listen, a_udp) = udp_listener(&a, &dir, "a", 20);
    let answer = assert_discovery(&t, &dev_t, "255.255.255.255", "t1", &ip_t, &a_udp);
    eprintln!(
        "3. discovery: T's broadcast reached the LAN game server and A; answer: {}",
        answer.trim()
    );

    // 4. A forgets T's MAC and asks again: the emulation answers the ARP.
    a.exec(&["ip", "neigh", "flush", "dev", &dev_a]);
    assert!(
        ping(&a, &ip_t, 5),
        "A cannot ping T after flushing its neighbours"
    );
    let mut report = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(3), || {
            report = status_of(&dir, "t.log");
            report["ports"]["adapter"]["counters"]["arp_answered"].as_u64() >= Some(1)
        }),
        "no ARP answered: {report:#}"
    );
    let adapter = &report["ports"]["adapter"];
    assert_eq!(adapter["dhcp"], "bound", "{report:#}");
    assert!(adapter["neighbors"].as_u64() >= Some(2), "{report:#}");
    assert!(
        adapter["counters"]["solicitations_sent"].as_u64() >= Some(1),
        "{report:#}"
    );
    eprintln!(
        "4. ARP for T answered by the emulation; status: {}",
        adapter["counters"]
    );

    // 5. TCP both ways between T and A: T's kernel hands its sends to the
    // TUN device as super-packets (TSO), cut by the port; A's segments
    // reach T's device merged (GRO).
    for reverse in [false, true] {
        let bps = iperf3_tcp(&t, &a, "192.168.77.50", reverse, 2, &dir);
        let what = if reverse { "A → T" } else { "T → A" };
        eprintln!("5. iperf3 TCP {what}: {:.0} Mbit/s", bps / 1e6);
    }
    let report = status_of(&dir, "t.log");
    eprintln!("   T's TUN {}", assert_offloads_worked(&report));

    // 6. A UDP burst A → T: T's device has USO, so the datagrams of one
    // flow that reach it together are written as UDP super-packets, which
    // T's kernel cuts back into the datagrams iperf3 counts.
    let adapter = &report["ports"]["adapter"];
    assert_eq!(adapter["uso"], true, "{report:#}");
    let merged_before = adapter["gro_super_packets"].as_u64().unwrap_or(0);
    let _server = t.spawn(
        &["iperf3", "-s", "-1", "-B", &ip_t],
        &dir.0.join("iperf3-udp.log"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let out = a.exec(&[
        "iperf3", "-c", &ip_t, "-u", "-b", "100M", "-l", "1000", "-t", "2", "-J",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let sum = &json["end"]["sum"];
    let sent = sum["packets"].as_u64().unwrap_or(0);
    let lost = sum["lost_packets"].as_u64().unwrap_or(u64::MAX);
    // A debug build drops some at this rate; what matters is that they
    // arrive as datagrams.
    assert!(sent > lost + 1000, "UDP A → T: {json:#}");
    let report = status_of(&dir, "t.log");
    let merged = report["ports"]["adapter"]["gro_super_packets"]
        .as_u64()
        .unwrap_or(0);
    assert!(merged > merged_before, "no UDP super-packet: {report:#}");
    eprintln!(
        "6. UDP A → T: {} of {sent} datagrams arrived; T wrote {} super-packets",
        sent - lost,
        merged - merged_before
    );
}

//! A whole LAN party end to end on real kernel interfaces, in network
//! namespaces: the shipped relay, gateway and client configs, run as
//! processes.
//!
//! ```text
//!  A (client, TAP) ─┐                    ┌─ G (gateway) ── AF_PACKET ── LAN bridge ── L (dnsmasq, game server)
//!  B (client, TAP) ─┼── underlay ── R (relay)                                     └── L2 (another LAN host)
//!  C (other room)  ─┘
//! ```
//!
//! Needs root, `ip`, `ping`, `iperf3`, `dnsmasq`, busybox `udhcpc` and
//! python3 (CI installs them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use lanparty_core::testing::frames::{self, Tags};
use lanparty_core::wire::{FrameView, MacAddr};
use support::*;

struct Node {
    ns: Netns,
    underlay: String,
}

fn mac_of(s: &str) -> MacAddr {
    s.parse().unwrap()
}

fn udhcpc_script(dir: &TempDir) -> String {
    let path = dir.file(
        "udhcpc.sh",
        "#!/bin/sh\ncase \"$1\" in bound|renew) ip addr add \"$ip/${mask:-24}\" dev \"$interface\"; echo \"LEASE $ip\" ;; esac\nexit 0\n",
    );
    sh(&["chmod", "+x", path.to_str().unwrap()]);
    path.display().to_string()
}

fn lease(ns: &Netns, dev: &str, script: &str) -> Option<String> {
    let out = ns.exec(&[
        "busybox", "udhcpc", "-i", dev, "-n", "-q", "-f", "-t", "8", "-T", "1", "-s", script,
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("LEASE ").map(str::to_string))
}

fn sniff(ns: &Netns, dev: &str, seconds: u32, out: &Path, dir: &TempDir, log: &str) -> Proc {
    let p = ns.spawn(
        &[
            python(),
            &helper(),
            "sniff",
            dev,
            &seconds.to_string(),
            out.to_str().unwrap(),
        ],
        &dir.0.join(log),
    );
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_to_string(out)
            .is_ok_and(|t| t.starts_with("ready"))),
        "sniffer on {dev} did not start"
    );
    p
}

fn inject(ns: &Netns, dev: &str, frame: &[u8], count: u32) {
    let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
    let out = ns.exec(&[python(), &helper(), "inject", dev, &hex, &count.to_string()]);
    assert!(
        out.status.success(),
        "inject on {dev}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn lan_party_end_to_end() {
    let dir = TempDir::new("party");
    let tls = dir.0.join("tls");
    let r = Netns::new("lpR");
    let g = Netns::new("lpG");
    let l = Netns::new("lpL");
    let l2 = Netns::new("lpM");
    let mut clients: Vec<Node> = Vec::new();
    for (i, prefix) in ["lpA", "lpB", "lpC", "lpD", "lpE"].iter().enumerate() {
        let ns = Netns::new(prefix);
        let underlay = underlay(&ns, &r, &format!("10.201.{i}"));
        clients.push(Node { ns, underlay });
    }
    let gateway_underlay = underlay(&g, &r, "10.201.9");
    // The LAN: a bridge in L with the gateway's wire, L's own port and L2.
    let (glan, lg) = (unique("gl"), unique("lg"));
    veth(&g, &glan, &l, &lg);
    l.ip(&["link", "add", "br0", "type", "bridge"]);
    l.ip(&["link", "set", "br0", "type", "bridge", "stp_state", "0"]);
    l.ip(&["link", "set", &lg, "master", "br0"]);
    let (l2a, l2b) = (unique("ma"), unique("mb"));
    veth(&l2, &l2a, &l, &l2b);
    l.ip(&["link", "set", &l2b, "master", "br0"]);
    l.ip(&["link", "set", "br0", "up"]);
    l.ip(&["addr", "add", "192.168.77.1/24", "dev", "br0"]);
    l2.ip(&["addr", "add", "192.168.77.2/24", "dev", &l2a]);

    // The shipped relay config, TLS files in the test's directory.
    let relay_sets = vec![format!("ports.relay.self_signed_dir={}", tls.display())];
    let mut relay = start_relay(&r, &dir, &tls, &[]);

    // DHCP server and game server on the LAN.
    let leases = dir.0.join("dnsmasq.leases");
    let _lan = lan_services(&l, &dir, "br0", 120);

    // The gateway, from the shipped config.
    let gw_sets = gateway_sets(&gateway_underlay, &tls, "PARTY", &glan);
    let mut gateway = start_gateway(&g, &dir, &gw_sets);

    // Two players in PARTY, one in ANOTHER.
    let (mac_a, mac_b, mac_c) = (
        "02:00:00:00:00:0a",
        "02:00:00:00:00:0b",
        "02:00:00:00:00:0c",
    );
    let (dev_a, dev_b, dev_c) = (unique("lpta"), unique("lptb"), unique("lptc"));
    let mut a = lanparty_in(
        &clients[0].ns,
        &dir,
        "a.log",
        "client.yaml",
        &client_sets(&clients[0].underlay, &tls, "PARTY", mac_a, &dev_a),
    );
    let mut b = lanparty_in(
        &clients[1].ns,
        &dir,
        "b.log",
        "client.yaml",
        &client_sets(&clients[1].underlay, &tls, "PARTY", mac_b, &dev_b),
    );
    let mut c = lanparty_in(
        &clients[2].ns,
        &dir,
        "c.log",
        "client.yaml",
        &client_sets(&clients[2].underlay, &tls, "ANOTHER", mac_c, &dev_c),
    );
    for (p, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        p.wait_for_log("joined the room", &format!("client {name} did not join"));
    }
    let (na, nb, nc) = (&clients[0].ns, &clients[1].ns, &clients[2].ns);
    assert!(na.wait_for_link(&dev_a, Duration::from_secs(5)));
    let link = String::from_utf8(na.ip(&["link", "show", &dev_a]).stdout).unwrap();
    assert!(
        link.contains("mtu 1500") && link.contains(mac_a),
        "TAP follows the welcome (Ethernet's MTU, whatever the path): {link}"
    );

    // C listens to everything during the rest of the test.
    let c_sniff = dir.0.join("c.sniff");
    let _c_sniffer = sniff(nc, &dev_c, 40, &c_sniff, &dir, "c-sniff.log");

    // 1. DHCP leases from the LAN's dnsmasq, through gateway and relay.
    let script = udhcpc_script(&dir);
    let ip_a = lease(na, &dev_a, &script).expect("client A got no DHCP lease");
    let ip_b = lease(nb, &dev_b, &script).expect("client B got no DHCP lease");
    assert!(
        ip_a.starts_with("192.168.77.1") && ip_b.starts_with("192.168.77.1"),
        "{ip_a} {ip_b}"
    );
    let lease_file = std::fs::read_to_string(&leases).unwrap();
    assert!(
        lease_file.contains(mac_a) && lease_file.contains(mac_b),
        "dnsmasq leases: {lease_file}"
    );
    eprintln!("1. DHCP: A got {ip_a}, B got {ip_b} from the LAN's dnsmasq");

    // 2. Ping client ↔ LAN host, client ↔ client, IPv4 and IPv6 link-local.
    assert!(ping(na, "192.168.77.1", 5), "A cannot ping the LAN host");
    assert!(ping(&l, &ip_a, 5), "the LAN host cannot ping A");
    assert!(ping(na, &ip_b, 5), "A cannot ping B");
    assert!(ping(nb, &ip_a, 5), "B cannot ping A");
    let ll_b = format!("fe80::ff:fe00:b%{dev_a}");
    assert!(
        wait_until(Duration::from_secs(10), || na
            .exec(&["ping", "-6", "-c", "1", "-W", "1", &ll_b])
            .status
            .success()),
        "IPv6 link-local A → B"
    );
    eprintln!("2. ping: A ↔ LAN host, A ↔ B over IPv4, A → B over IPv6 link-local");

    // 2b. Full 1500-byte frames: DF pings with 1472 bytes of payload both
    // ways between a player and the LAN host and between players (the
    // QUIC path carries 1414-byte datagrams: each goes as two fragments),
    // and a 1472-byte UDP datagram (DF) to the LAN's game server and back.
    let full = |from: &Netns, to: &str| {
        from.exec(&[
            "ping", "-M", "do", "-s", "1472", "-c", "3", "-i", "0.2", "-W", "2", to,
        ])
        .status
        .success()
    };
    assert!(full(na, "192.168.77.1"), "A → LAN host, 1500-byte DF ping");
    assert!(full(&l, &ip_a), "LAN host → A, 1500-byte DF ping");
    assert!(full(na, &ip_b), "A → B, 1500-byte DF ping");
    assert!(full(nb, &ip_a), "B → A, 1500-byte DF ping");
    let big = "x".repeat(1472 - "DISCOVER ".len());
    let answer = discover(na, &dev_a, "192.168.77.1", &big);
    assert!(
        answer.contains(&format!("192.168.77.1 HERE {big}")),
        "a 1472-byte UDP datagram to the LAN's game server and its 1468-byte answer: {answer}"
    );
    eprintln!(
        "2b. full frames: 1472-byte DF pings A ↔ LAN host and A ↔ B, a 1472-byte UDP datagram each way"
    );

    // 3. UDP broadcast discovery reaches the LAN's game server and B; the answer comes back.
    let (_b_listen, b_udp) = udp_listener(nb, &dir, "b", 20);
    let answer = assert_discovery(na, &dev_a, "192.168.77.255", "a1", &ip_a, &b_udp);
    eprintln!(
        "3. discovery: A's broadcast reached the LAN game server and B; answer: {}",
        answer.trim()
    );

    // 4. Rogue DHCP and RA from A never reach the LAN or B; a BPDU from the LAN never leaves it.
    let (l_sniff, b_sniff, a_sniff) = (
        dir.0.join("l.sniff"),
        dir.0.join("b.sniff"),
        dir.0.join("a.sniff"),
    );
    let ls = sniff(&l, "br0", 4, &l_sniff, &dir, "l-sniff.log");
    let bs = sniff(nb, &dev_b, 4, &b_sniff, &dir, "b-sniff.log");
    let as_ = sniff(na, &dev_a, 4, &a_sniff, &dir, "a-sniff.log");
    let rogue_offer = frames::dhcp_offer(mac_of(mac_a), Tags::None, mac_of(mac_b));
    let rogue_ra = frames::ipv6_ra(mac_of(mac_a), Tags::None, 1800);
    inject(na, &dev_a, &rogue_offer, 3);
    inject(na, &dev_a, &rogue_ra, 3);
    let lan_host: MacAddr =
        String::from_utf8(l.exec(&["cat", "/sys/class/net/br0/address"]).stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    inject(&l, "br0", &frames::stp_bpdu(lan_host, Tags::None), 3);
    // A VLAN-tagged broadcast from the LAN keeps its tag on the way to A.
    let tagged = frames::ethernet(MacAddr::BROADCAST, lan_host, Tags::Single(42), 0x88b5, 46);
    inject(&l, "br0", &tagged, 2);
    drop((ls, bs, as_));
    std::thread::sleep(Duration::from_secs(4));
    for (place, file) in [("the LAN", &l_sniff), ("B", &b_sniff)] {
        for f in sniffed(file) {
            let Ok(v) = FrameView::parse(&f) else {
                continue;
            };
            assert!(
                !(v.eth().src == mac_of(mac_a)
                    && (v.is_dhcpv4_server() || v.is_ipv6_router_advertisement())),
                "A's rogue DHCP/RA reached {place}"
            );
        }
    }
    let a_frames = sniffed(&a_sniff);
    assert!(
        !a_frames
            .iter()
            .any(|f| f.len() >= 6 && f[..6] == frames::STP_MAC.0),
        "a BPDU left the LAN"
    );
    let tagged_arrived = a_frames
        .iter()
        .filter_map(|f| FrameView::parse(f).ok())
        .any(|v| v.eth().src == lan_host && v.eth().inner_vid() == Some(42));
    assert!(tagged_arrived, "the VLAN tag did not survive the gateway");
    eprintln!(
        "4. rogue DHCP offer and RA from A and a BPDU from the LAN were stopped; a VLAN 42 frame kept its tag"
    );

    // No loop: A never receives its own frames back (the gateway does not read what it injects).
    let loops = a_frames
        .iter()
        .filter(|f| f.len() >= 12 && f[6..12] == mac_of(mac_a).0)
        .count();
    assert_eq!(loops, 0, "A's frames came back to A");

    // LAN-local unicast stays on the LAN: L ↔ L2 pings are not seen by A.
    let a2 = dir.0.join("a2.sniff");
    let a2s = sniff(na, &dev_a, 3, &a2, &dir, "a2-sniff.log");
    assert!(ping(&l2, "192.168.77.1", 3));
    l2.exec(&["ping", "-c", "5", "-i", "0.2", "192.168.77.1"]);
    drop(a2s);
    std::thread::sleep(Duration::from_secs(2));
    let l2_mac: MacAddr = String::from_utf8(
        l2.exec(&["cat", &format!("/sys/class/net/{l2a}/address")])
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    let unicast_seen = sniffed(&a2)
        .iter()
        .filter_map(|f| FrameView::parse(f).ok().map(|v| (v.eth().src, v.eth().dst)))
        .filter(|(s, d)| (*s == l2_mac && *d == lan_host) || (*s == lan_host && *d == l2_mac))
        .count();
    assert_eq!(unicast_seen, 0, "LAN-local unicast went through the relay");

    // 5. C, in another room, saw nothing of PARTY.
    std::thread::sleep(Duration::from_millis(500));
    let party_macs = [mac_of(mac_a), mac_of(mac_b), lan_host, l2_mac];
    let leaked = sniffed(&c_sniff)
        .iter()
        .filter(|f| f.len() >= 12 && party_macs.iter().any(|m| f[6..12] == m.0))
        .count();
    assert_eq!(leaked, 0, "frames from PARTY reached a client in ANOTHER");
    eprintln!("5. the client in another room saw none of PARTY's frames");

    // 6. A second gateway and a duplicate client MAC are rejected with their codes.
    let (nd, ne) = (&clients[3].ns, &clients[4].ns);
    // (This kernel has no dummy interfaces: a veth pair stands in for a LAN.)
    nd.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    nd.ip(&["link", "set", "d0", "up"]);
    let mut second_gw_sets = gw_sets.clone();
    second_gw_sets[0] = format!("ports.relay.relay={}:{PORT}", clients[3].underlay);
    second_gw_sets[3] = "ports.lan.interface=d0".into();
    second_gw_sets.push("ports.relay.mac=02:00:00:00:00:99".into());
    let mut gw2 = lanparty_in(nd, &dir, "gw2.log", "gateway.yaml", &second_gw_sets);
    let mut dup = lanparty_in(
        ne,
        &dir,
        "dup.log",
        "client.yaml",
        &client_sets(&clients[4].underlay, &tls, "PARTY", mac_a, &unique("lpte")),
    );
    assert!(
        wait_until(Duration::from_secs(10), || !gw2.running()),
        "second gateway still running"
    );
    assert!(
        wait_until(Duration::from_secs(10), || !dup.running()),
        "duplicate client still running"
    );
    assert!(
        gw2.log_text().contains("gateway_present"),
        "{}",
        gw2.log_text()
    );
    assert!(
        dup.log_text().contains("duplicate_mac"),
        "{}",
        dup.log_text()
    );
    assert_eq!(gw2.terminate(Duration::from_secs(1)), Some(1));
    assert_eq!(dup.terminate(Duration::from_secs(1)), Some(1));
    eprintln!(
        "6. a second gateway (gateway_present) and a duplicate MAC (duplicate_mac) were rejected; both exited 1"
    );

    // 7. Kill the relay (no goodbye) and start it again: everyone comes back.
    let killed = Instant::now();
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(relay.pid() as libc::pid_t, libc::SIGKILL);
    }
    assert!(wait_until(Duration::from_secs(5), || !relay.running()));
    drop(relay);
    let restarted = Instant::now();
    let relay = lanparty_in(&r, &dir, "relay2.log", "relay.yaml", &relay_sets);
    let back = wait_until(Duration::from_secs(30), || {
        na.exec(&["ping", "-c", "1", "-W", "1", "192.168.77.1"])
            .status
            .success()
            && nb
                .exec(&["ping", "-c", "1", "-W", "1", &ip_a])
                .status
                .success()
    });
    assert!(
        back,
        "no ping after the relay restart:\n{}\n{}",
        relay.log_text(),
        a.log_text()
    );
    eprintln!(
        "7. relay killed and restarted: pings work again {:.1?} after the restart ({:.1?} after the kill; default idle_timeout 30s, keepalive 5s)",
        restarted.elapsed(),
        killed.elapsed()
    );
    assert!(a.log_text().matches("joined the room").count() >= 2);
    assert!(gateway.log_text().matches("joined the room").count() >= 2);
    // Client and gateway status: connected again, one reconnect counted.
    for log in ["a.log", "gateway.log"] {
        let report = status_of(&dir, log);
        let session = &report["ports"]["relay"];
        assert_eq!(session["state"], "connected", "{log}: {report:#}");
        assert!(
            session["reconnects"].as_u64() >= Some(1),
            "{log}: {report:#}"
        );
        assert_eq!(session["room"], "PARTY");
        assert!(session["session"]["rtt_us"].as_u64().is_some());
    }
    let relay_report = status_of(&dir, "relay2.log");
    let in_party = relay_report["ports"]["relay"]["peers"]
        .as_array()
        .map_or(0, |p| p.iter().filter(|p| p["room"] == "PARTY").count());
    assert_eq!(in_party, 3, "{relay_report:#}");
    eprintln!(
        "   status: a and the gateway report `connected` with their reconnect; the relay lists PARTY's 3 peers"
    );

    // 8. iperf3 TCP both ways between A and the LAN host through the relay.
    // The LAN side's TSO hands the gateway 64 KiB super-packets, which it
    // must cut back into segments for the reverse direction to work.
    for reverse in [false, true] {
        let bps = iperf3_tcp(na, &l, "192.168.77.1", reverse, 3, &dir);
        let what = if reverse {
            "LAN host → A"
        } else {
            "A → LAN host"
        };
        eprintln!(
            "8. iperf3 TCP {what} through the relay: {:.0} Mbit/s",
            bps / 1e6
        );
    }
    // A's TAP wrote the download's segments merged (software GRO); A's
    // kernel handed A's upload to the TAP as super-packets (TSO), which
    // the port cut into the segments that crossed the room.
    let report = status_of(&dir, "a.log");
    eprintln!("   A's TAP {}", assert_offloads_worked(&report));
    // The download's headers crossed both hops compressed (the shipped
    // configs agree on it), and every frame rebuilt: nothing refused.
    let relay = &report["ports"]["relay"];
    assert_eq!(relay["session"]["header_compression"], true, "{report:#}");
    let d = &relay["datapath"];
    let count = |k: &str| d[k].as_u64().unwrap_or(0);
    assert!(
        count("compressed_out") > 1000 && count("compressed_in") > 1000,
        "{report:#}"
    );
    for refused in ["compress_unknown", "compress_stale", "compress_malformed"] {
        assert_eq!(count(refused), 0, "{report:#}");
    }
    eprintln!(
        "   A's session: {} frames sent and {} received header-compressed",
        count("compressed_out"),
        count("compressed_in")
    );

    for (p, name) in [
        (&mut a, "a"),
        (&mut b, "b"),
        (&mut c, "c"),
        (&mut gateway, "gateway"),
    ] {
        assert_eq!(
            p.terminate(Duration::from_secs(10)),
            Some(0),
            "{name} did not stop cleanly:\n{}",
            p.log_text()
        );
    }
}

//! Pipeline-harness tests of the built-in routers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lanparty_core::stage::LinkRole;
use lanparty_core::testing::Harness;
use lanparty_core::testing::frames::{self, Tags};
use lanparty_core::wire::{MacAddr, ethertype};

fn mac(last: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, last])
}

fn unicast(dst: MacAddr, src: MacAddr) -> Vec<u8> {
    frames::ethernet(dst, src, Tags::None, ethertype::IPV4, 46)
}

fn broadcast(src: MacAddr) -> Vec<u8> {
    frames::ethernet(MacAddr::BROADCAST, src, Tags::None, ethertype::ARP, 28)
}

fn three_links(room: &str) -> Harness {
    let mut h = Harness::from_room_yaml(room).unwrap();
    h.add_link("alice", LinkRole::Client, mac(1));
    h.add_link("bob", LinkRole::Client, mac(2));
    h.add_link("gw", LinkRole::Gateway, mac(3));
    h
}

#[test]
fn broadcast_floods_to_everyone_but_the_sender() {
    let mut h = three_links("router: { type: switch }");
    for from in ["alice", "bob", "gw"] {
        let src = h.link_mac(from).unwrap();
        let d = h.send(from, broadcast(src));
        let mut want = vec!["alice", "bob", "gw"];
        want.retain(|n| *n != from);
        assert_eq!(d.destinations(), want, "from {from}");
    }
    let multicast = frames::ethernet(
        MacAddr([1, 0, 0x5e, 0, 0, 0xfb]),
        mac(1),
        Tags::None,
        ethertype::IPV4,
        46,
    );
    assert_eq!(h.send("alice", multicast).destinations(), ["bob", "gw"]);
}

#[test]
fn learns_and_forwards_known_unicast_to_one_link() {
    let mut h = three_links("router: { type: switch }");
    // Unknown destination: flooded.
    assert_eq!(
        h.send("bob", unicast(mac(1), mac(2))).destinations(),
        ["alice", "gw"]
    );
    // alice speaks; now known.
    h.send("alice", broadcast(mac(1)));
    assert_eq!(
        h.send("bob", unicast(mac(1), mac(2))).destinations(),
        ["alice"]
    );
    // bob was learned from the first frame.
    assert_eq!(
        h.send("alice", unicast(mac(2), mac(1))).destinations(),
        ["bob"]
    );
    // A MAC behind the gateway is learned on the gateway's link.
    let lan_host = MacAddr([0, 0x1b, 0x21, 0, 0, 9]);
    h.send("gw", broadcast(lan_host));
    assert_eq!(
        h.send("alice", unicast(lan_host, mac(1))).destinations(),
        ["gw"]
    );
    assert_eq!(h.stats().table_len, 3);
}

#[test]
fn entries_age_out_on_the_simulated_clock() {
    let mut h = three_links("router: { type: switch, ageing: 10s }");
    h.send("alice", broadcast(mac(1)));
    h.advance(Duration::from_secs(9));
    assert_eq!(
        h.send("bob", unicast(mac(1), mac(2))).destinations(),
        ["alice"]
    );
    h.advance(Duration::from_secs(10));
    // bob was refreshed 10 s ago: gone too; alice aged out and was swept.
    assert_eq!(h.stats().table_len, 0);
    assert_eq!(
        h.send("bob", unicast(mac(1), mac(2))).destinations(),
        ["alice", "gw"]
    );
}

#[test]
fn a_moved_mac_is_relearned() {
    let mut h = three_links("router: { type: switch }");
    // A LAN host's MAC, first behind the gateway …
    h.send("gw", broadcast(mac(9)));
    assert_eq!(
        h.send("alice", unicast(mac(9), mac(1))).destinations(),
        ["gw"]
    );
    // … now shows up behind bob's link (no mac-guard in this room).
    h.send("bob", broadcast(mac(9)));
    assert_eq!(
        h.send("alice", unicast(mac(9), mac(1))).destinations(),
        ["bob"]
    );
}

#[test]
fn an_admitted_clients_mac_never_moves() {
    let mut h = three_links("router: { type: switch }");
    h.send("alice", broadcast(mac(1)));
    // Neither the gateway's LAN nor another client can take alice's MAC,
    // even with no filter in the room: the pipeline owns the rule.
    for from in ["gw", "bob"] {
        assert_eq!(
            h.send(from, broadcast(mac(1))).drop_reason(),
            Some("owned-mac")
        );
    }
    assert_eq!(
        h.send("gw", unicast(mac(1), mac(3))).destinations(),
        ["alice"]
    );
    assert_eq!(h.stats().dropped("owned-mac"), 2);
}

#[test]
fn leaving_cleans_the_table() {
    let mut h = three_links("router: { type: switch }");
    h.send("alice", broadcast(mac(1)));
    h.send("bob", broadcast(mac(2)));
    assert_eq!(h.stats().table_len, 2);
    assert!(h.remove_link("alice"));
    assert_eq!(h.stats().table_len, 1);
    // Unicast to the departed MAC floods to who is left, never to a stale link.
    assert_eq!(
        h.send("gw", unicast(mac(1), mac(3))).destinations(),
        ["bob"]
    );
    assert!(!h.remove_link("alice"));
}

#[test]
fn table_limit_is_respected() {
    let mut h = three_links("router: { type: switch, max_macs: 2 }");
    h.send("alice", broadcast(mac(1)));
    h.send("bob", broadcast(mac(2)));
    h.send("gw", broadcast(mac(3)));
    assert_eq!(h.stats().table_len, 2);
    // mac(3) was not learned: unicast to it floods.
    assert_eq!(
        h.send("alice", unicast(mac(3), mac(1))).destinations(),
        ["bob", "gw"]
    );
    // Known ones still forward.
    assert_eq!(
        h.send("gw", unicast(mac(2), mac(3))).destinations(),
        ["bob"]
    );
}

#[test]
fn aged_entries_make_room_when_the_table_is_full() {
    let mut h = three_links("router: { type: switch, max_macs: 1, ageing: 5s }");
    h.send("alice", broadcast(mac(1)));
    h.advance(Duration::from_millis(5_500));
    h.send("bob", broadcast(mac(2)));
    assert_eq!(
        h.send("gw", unicast(mac(2), mac(3))).destinations(),
        ["bob"]
    );
}

#[test]
fn lan_local_unicast_is_not_sent_back() {
    let mut h = three_links("router: { type: switch }");
    let (a, b) = (
        MacAddr([0, 0x1b, 0x21, 0, 0, 1]),
        MacAddr([0, 0x1b, 0x21, 0, 0, 2]),
    );
    h.send("gw", broadcast(a));
    h.send("gw", broadcast(b));
    let d = h.send("gw", unicast(b, a));
    assert!(d.delivered.is_empty());
    assert_eq!(d.drop_reason(), Some("local-destination"));
    assert_eq!(
        h.stats()
            .stage("router:switch")
            .unwrap()
            .counters
            .dropped("local-destination"),
        1
    );
}

#[test]
fn a_lonely_link_has_nowhere_to_send() {
    let mut h = Harness::from_room_yaml("{}").unwrap();
    h.add_link("alice", LinkRole::Client, mac(1));
    let d = h.send("alice", broadcast(mac(1)));
    assert_eq!(d.drop_reason(), Some("no-destination"));
}

#[test]
fn hub_floods_even_known_unicast() {
    let mut h = three_links("router: { type: hub }");
    h.send("alice", broadcast(mac(1)));
    assert_eq!(
        h.send("bob", unicast(mac(1), mac(2))).destinations(),
        ["alice", "gw"]
    );
    assert_eq!(
        h.send("alice", broadcast(mac(1))).destinations(),
        ["bob", "gw"]
    );
}

#[test]
fn pipeline_drops_unknown_links_and_malformed_frames() {
    let mut h = three_links("router: { type: switch }");
    let d = h.send("mallory", broadcast(mac(9)));
    assert_eq!(d.dropped, Some(("pipeline".into(), "unknown-link".into())));
    for len in [0, 5, 13] {
        let d = h.send("alice", vec![0xffu8; len]);
        assert_eq!(d.drop_reason(), Some("malformed-l2"), "len {len}");
    }
    let d = h.send(
        "alice",
        frames::ethernet(MacAddr::BROADCAST, mac(1), Tags::Single(5), 0x8100, 1),
    );
    assert_eq!(
        d.drop_reason(),
        Some("malformed-l2"),
        "a second tag cut short"
    );
    let stats = h.stats();
    assert_eq!(stats.frames_in, 5);
    assert_eq!(
        stats
            .stage("pipeline")
            .unwrap()
            .counters
            .dropped("malformed-l2"),
        4
    );
    assert_eq!(stats.dropped("unknown-link"), 1);
}

#[test]
fn flooding_shares_the_frame_bytes() {
    let mut h = three_links("router: { type: switch }");
    let d = h.send("alice", broadcast(mac(1)));
    let (a, b) = (&d.delivered[0].1, &d.delivered[1].1);
    assert_eq!(
        a.as_ptr(),
        b.as_ptr(),
        "flooding must clone a refcount, not the bytes"
    );
}

#[test]
fn bad_router_settings_are_config_errors() {
    for (yaml, key) in [
        (
            "router: { type: switch, max_macs: 0 }",
            "room.router.max_macs",
        ),
        ("router: { type: switch, ageing: 0s }", "room.router.ageing"),
        ("router: { type: switch, agin: 5s }", "room.router.agin"),
        ("router: { type: hub, x: 1 }", "room.router.x"),
        ("router: { type: swich }", "room.router.type"),
    ] {
        let err = match Harness::from_room_yaml(yaml) {
            Ok(_) => panic!("{yaml} accepted"),
            Err(e) => e,
        };
        assert_eq!(err.0[0].key, key, "{yaml}: {err}");
    }
}

//! In-process QUIC: full 1500-byte frames (and QinQ-tagged 1522-byte ones)
//! cross a relay between peers whose datagrams are smaller, in overlay
//! fragments that the relay reassembles before its pipeline and fragments
//! again for each destination; hostile fragments are dropped and counted
//! while honest peers carry on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use lanparty_core::control::ControlMessage;
use lanparty_core::testing::frames::{self, Tags};
use lanparty_core::wire::MacAddr;
use lanparty_core::wire::fragment::FragmentHeader;
use support::*;

const LONG: Duration = Duration::from_secs(3);

fn full(dst: MacAddr, src: MacAddr, tags: Tags) -> Vec<u8> {
    frames::ipv4_of_len(dst, src, tags, 1500)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_frames_cross_the_relay_in_fragments() {
    let dir = TempDir::new();
    let relay = Relay::start(&dir, 0, "").await;
    // A's path carries 600-byte datagrams: every full frame to or from it
    // goes in three fragments; B's carries the usual 1414.
    let (ma, mb) = (mac(1), mac(2));
    let mut a = Peer::start_with(
        &client_yaml(&relay, "R", "client", ma, "datagram_budget: 600"),
        ma,
    )
    .await;
    a.wait_sessions(1).await;
    let mut b = Peer::join(&relay, "R", "client", mb).await;
    for tags in [Tags::None, Tags::Single(10), Tags::Double(100, 10)] {
        exchange(&a, &mut b, full(mb, ma, tags)).await;
        exchange(&b, &mut a, full(ma, mb, tags)).await;
    }
    // Small frames still go whole.
    exchange(&a, &mut b, frames::ipv4_of_len(mb, ma, Tags::None, 100)).await;
    let relay_counts = relay.counters.datapath.snapshot();
    let a_counts = a.counters.datapath.snapshot();
    assert_eq!(
        a_counts.fragmented_out, 3,
        "A fragments its three full frames"
    );
    assert_eq!(a_counts.reassembled, 3, "and reassembles B's");
    // B's 1414-byte datagrams hold none of the 1514..1522-byte frames
    // either: the relay reassembles all six and fragments all six again,
    // each for its destination's budget.
    assert_eq!(relay_counts.reassembled, 6);
    assert_eq!(relay_counts.fragmented_out, 6);
    assert_eq!(
        (
            relay_counts.fragment_malformed,
            relay_counts.fragment_timeout,
            relay_counts.too_large
        ),
        (0, 0, 0)
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_fragments_are_dropped_and_counted_while_others_carry_on() {
    let dir = TempDir::new();
    let relay = Relay::start(&dir, 0, "").await;
    let (ma, mb) = (mac(1), mac(2));
    let mut a = Peer::join(&relay, "R", "client", ma).await;
    let mut b = Peer::join(&relay, "R", "client", mb).await;
    let (conn, _send, reply) = raw_hello(&relay, hello("R", mac(3))).await;
    assert!(matches!(reply, Some(ControlMessage::Welcome(_))));
    let fragment = |frame_id: u32, index: u8, count: u8, total: u16, len: usize| {
        let mut d = FragmentHeader {
            frame_id,
            index,
            count,
            total,
        }
        .encode()
        .to_vec();
        d.extend(std::iter::repeat_n(0u8, len));
        lanparty_core::Bytes::from(d)
    };
    // Headers no sender writes.
    for d in [
        fragment(1, 0, 0, 1000, 500),
        fragment(2, 5, 2, 1000, 500),
        fragment(3, 0, 200, 1000, 500),
        fragment(4, 0, 2, 60000, 500),
    ] {
        conn.send_datagram_wait(d).await.unwrap();
    }
    // Counted before the flood: quinn's send buffer drops its oldest
    // datagrams when full, and these would be the oldest.
    let c = relay.counters.clone();
    let deadline = tokio::time::Instant::now() + LONG;
    while c.datapath.snapshot().fragment_malformed < 4 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A flood of frames that never complete: one fragment of two each.
    for id in 0..5000u32 {
        while conn
            .send_datagram(fragment(100 + id, 0, 2, 1500, 750))
            .is_err()
        {
            tokio::task::yield_now().await;
        }
        if id % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let counted = || {
        let s = c.datapath.snapshot();
        s.fragment_malformed == 4 && s.fragment_overflow > 1000
    };
    let deadline = tokio::time::Instant::now() + LONG;
    while !counted() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(counted(), "{:?}", c.datapath.snapshot());
    let s = c.datapath.snapshot();
    eprintln!("hostile: {s:?}");
    assert!(
        conn.close_reason().is_none(),
        "bad fragments do not end the session"
    );
    // The honest peers still exchange full frames.
    exchange(&a, &mut b, full(mb, ma, Tags::None)).await;
    exchange(&b, &mut a, full(ma, mb, Tags::None)).await;
    assert_eq!(b.counters.datapath.snapshot().fragment_overflow, 0);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_too_small_for_sixteen_fragments_is_refused_at_the_door() {
    // A's budget is below what 16 fragments of a 1522-byte frame need:
    // the relay refuses it at the door, instead of dropping every frame.
    let dir = TempDir::new();
    let relay = Relay::start(&dir, 0, "").await;
    let e = rejected(&relay, "R", "client", mac(1), "datagram_budget: 100").await;
    assert!(e.contains("budget_too_small"), "{e}");
    assert_eq!(relay.counters.admitted.load(Ordering::Relaxed), 0);
    relay.stop().await;
}

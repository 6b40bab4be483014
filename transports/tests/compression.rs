//! In-process QUIC: header compression between peers and the relay.
//! Repeated flows cross the relay compressed on both hops and arrive byte
//! for byte; either end can turn it off; a fast connection sends whole
//! frames; hostile installs and compressed frames are dropped and counted
//! while honest peers carry on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use lanparty_core::control::ControlMessage;
use lanparty_core::testing::frames::{self, Tags};
use lanparty_core::wire::MacAddr;
use lanparty_core::wire::overlay::{CONTEXT_COMPRESSED, CONTEXT_INSTALL, context_header};
use support::*;

const LONG: Duration = Duration::from_secs(3);

/// The frames of a few flows, as a download, a game and a ping would
/// send them: TCP over IPv4 and IPv6, UDP, ICMP; sizes and contents vary.
fn flows(dst: MacAddr, src: MacAddr, round: usize) -> Vec<Vec<u8>> {
    let payload: Vec<u8> = (0..(100 + round * 37) % 1300)
        .map(|i| (i + round) as u8)
        .collect();
    vec![
        frames::tcp_segment(dst, src, Tags::None, false, false, true, None, &payload),
        frames::tcp_segment(
            dst,
            src,
            Tags::None,
            true,
            false,
            true,
            None,
            &payload[..payload.len() / 2],
        ),
        frames::ipv4_udp(
            dst,
            src,
            Tags::None,
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            40000,
            27015,
            &payload[..payload.len().min(200)],
        ),
        frames::ipv4_of_len(dst, src, Tags::None, 84 + round % 3),
        // VLAN-tagged: always whole.
        frames::ipv4_of_len(dst, src, Tags::Single(10), 200),
    ]
}

/// One round of every flow from `from` to `to`, each frame arriving whole
/// and unchanged.
async fn flows_across(from: &Peer, to: &mut Peer, round: usize) {
    for frame in flows(to.mac, from.mac, round) {
        exchange(from, to, frame).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_flows_cross_the_relay_compressed_and_unchanged() {
    let dir = TempDir::new();
    let relay = Relay::start(&dir, 0, "").await;
    let (ma, mb) = (mac(1), mac(2));
    let mut a = Peer::join(&relay, "R", "client", ma).await;
    let mut b = Peer::join(&relay, "R", "client", mb).await;
    for round in 0..40 {
        flows_across(&a, &mut b, round).await;
        flows_across(&b, &mut a, round).await;
    }
    let r = relay.counters.datapath.snapshot();
    let (sa, sb) = (
        a.counters.datapath.snapshot(),
        b.counters.datapath.snapshot(),
    );
    // Each of the four compressible flows is installed on its second frame
    // and compressed once the install was acknowledged: most of 40 rounds.
    for (who, s) in [("A", &sa), ("B", &sb), ("relay", &r)] {
        assert!(s.compressed_out >= 4 * 30, "{who} compresses: {s:?}");
        assert!(s.compressed_in >= 4 * 30, "{who} rebuilds: {s:?}");
        assert_eq!(
            (s.compress_unknown, s.compress_stale, s.compress_malformed),
            (0, 0, 0),
            "{who}: {s:?}"
        );
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_connection_sends_headers_whole() {
    let dir = TempDir::new();
    // The relay compresses only below 1 Mbit/s; the peers at any rate.
    let relay = Relay::start(&dir, 0, "compress_below_mbps: 1").await;
    let (ma, mb) = (mac(1), mac(2));
    let a = Peer::join(&relay, "R", "client", ma).await;
    let mut b = Peer::join(&relay, "R", "client", mb).await;
    // One TCP flow, as fast as it goes: several MB/s through the relay.
    let payload = vec![7u8; 1200];
    let frame = frames::tcp_segment(mb, ma, Tags::None, false, false, true, None, &payload);
    let mut arrived = 0;
    for _ in 0..20 {
        for _ in 0..200 {
            a.send(frame.clone());
        }
        for got in b.drain(Duration::from_millis(50)).await {
            assert_eq!(&got[..], &frame[..], "arrives unchanged");
            arrived += 1;
        }
    }
    let (r, sa) = (
        relay.counters.datapath.snapshot(),
        a.counters.datapath.snapshot(),
    );
    assert!(arrived > 2000, "most of 4000 frames arrive: {arrived}");
    // A (no mark) compresses the flow; the relay, measuring its path to B
    // far above 1 Mbit/s, forwards it whole once it has measured that
    // (500 of 4000 frames went compressed before, in the first run).
    assert!(sa.compressed_out > 3000, "A compresses: {sa:?}");
    assert!(
        r.compressed_out < r.compressed_in / 2 && r.compressed_in > 3000,
        "the relay rebuilds A's frames and sends them whole: {r:?}"
    );
    // Status says so per peer: towards B not now, towards A (nothing
    // fast went that way) still.
    let status = relay.status();
    let compressing = |m: MacAddr| {
        status["peers"]
            .as_array()
            .and_then(|peers| peers.iter().find(|p| p["mac"] == m.to_string()))
            .map(|p| p["compressing"].clone())
    };
    assert_eq!(compressing(mb), Some(false.into()), "{status}");
    assert_eq!(compressing(ma), Some(true.into()), "{status}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn either_end_turns_compression_off() {
    let dir = TempDir::new();
    // The relay says no: nobody compresses.
    let relay = Relay::start(&dir, 0, "header_compression: false").await;
    let (ma, mb, mc) = (mac(1), mac(2), mac(3));
    let a = Peer::join(&relay, "R", "client", ma).await;
    let mut b = Peer::join(&relay, "R", "client", mb).await;
    for round in 0..10 {
        flows_across(&a, &mut b, round).await;
    }
    assert_eq!(relay.counters.datapath.snapshot().compressed_out, 0);
    assert_eq!(a.counters.datapath.snapshot().compressed_out, 0);
    relay.stop().await;

    // A client says no: nothing to or from it is compressed; the others
    // still compress between themselves and the relay.
    let dir = TempDir::new();
    let relay = Relay::start(&dir, 0, "").await;
    let mut a = Peer::join(&relay, "R", "client", ma).await;
    let mut c = Peer::start_with(
        &client_yaml(&relay, "R", "client", mc, "header_compression: false"),
        mc,
    )
    .await;
    c.wait_sessions(1).await;
    for round in 0..10 {
        flows_across(&a, &mut c, round).await;
        flows_across(&c, &mut a, round).await;
    }
    let (sa, sc) = (
        a.counters.datapath.snapshot(),
        c.counters.datapath.snapshot(),
    );
    assert_eq!((sc.compressed_out, sc.compressed_in), (0, 0), "{sc:?}");
    assert!(sa.compressed_out > 0 && sa.compressed_in > 0, "{sa:?}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_compressed_frames_are_counted_while_others_carry_on() {
    let dir = TempDir::new();
    let relay = Relay::start(&dir, 0, "").await;
    let (ma, mb, mh) = (mac(1), mac(2), mac(3));
    let a = Peer::join(&relay, "R", "client", ma).await;
    let mut b = Peer::join(&relay, "R", "client", mb).await;
    let mut h = hello("R", mh);
    h.header_compression = true;
    let (conn, _send, reply) = raw_hello(&relay, h).await;
    let Some(ControlMessage::Welcome(w)) = reply else {
        panic!("welcome: {reply:?}")
    };
    assert!(w.header_compression, "the relay agrees to compress");
    let datagram = |context: u64, slot: u8, generation: u8, body: &[u8]| {
        let mut d = context_header(context, slot, generation).to_vec();
        d.extend_from_slice(body);
        lanparty_core::Bytes::from(d)
    };
    let frame = frames::tcp_segment(mb, mh, Tags::None, false, false, true, None, &[7; 100]);
    for d in [
        // Never installed; a slot past the table; not compressible (ARP);
        // cut short after a real install; an older generation.
        datagram(CONTEXT_COMPRESSED, 0, 1, &[0; 60]),
        datagram(CONTEXT_INSTALL, 200, 1, &frame),
        datagram(
            CONTEXT_INSTALL,
            1,
            1,
            &frames::arp_request(mh, Tags::None, [10, 0, 0, 3], [10, 0, 0, 1]),
        ),
        datagram(CONTEXT_INSTALL, 2, 5, &frame),
        datagram(CONTEXT_COMPRESSED, 2, 5, &[1, 2]),
        datagram(CONTEXT_COMPRESSED, 2, 4, &[0; 60]),
    ] {
        conn.send_datagram_wait(d).await.unwrap();
    }
    let c = relay.counters.clone();
    wait_for("the hostile datagrams counted", LONG, || {
        let s = c.datapath.snapshot();
        s.compress_unknown == 1 && s.compress_malformed == 3 && s.compress_stale == 1
    })
    .await;
    // The one good install went through as a whole frame (B got it), and
    // the session and everybody else carry on.
    let got = b.recv(LONG).await.expect("the installed frame arrives");
    assert_eq!(&got[..], &frame[..]);
    assert!(conn.close_reason().is_none());
    for round in 0..5 {
        flows_across(&a, &mut b, round).await;
    }
    relay.stop().await;
}

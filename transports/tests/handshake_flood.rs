//! In-process QUIC: a flood of QUIC Initials that never complete their
//! handshake (what a hostile host can send in a fraction of a second) does
//! not lock players out. The relay's socket gate drops handshake packets
//! over 64 per address and second before quinn decrypts them; an address
//! with a handshake in progress (or any address above `retry_above`
//! handshakes) must answer a stateless Retry first, so the flood buys one
//! handshake, gets back less than it sent and leaves no state behind, while
//! a real player still joins.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lanparty_transports::{net, tls};
use support::*;

/// `count` QUIC Initials, each of a new connection that will never
/// answer (made before the flood, so that making them does not compete
/// with the relay for the CPU while it is measured).
fn initials(relay: std::net::SocketAddr, cert: &std::path::Path, count: usize) -> Vec<Vec<u8>> {
    let trust = tls::load_pinned(cert).unwrap();
    let transport = net::transport(
        Duration::from_secs(30),
        None,
        net::DEFAULT_INITIAL_MTU,
        net::Congestion::default(),
    );
    let config = tls::quic_client_config(&trust, transport).unwrap();
    let mut endpoint = quinn_proto::Endpoint::new(
        Arc::new(quinn_proto::EndpointConfig::default()),
        None,
        false,
        None,
    );
    let mut packets = Vec::with_capacity(count);
    for _ in 0..count {
        let now = Instant::now();
        let (_, mut conn) = endpoint
            .connect(now, config.clone(), relay, "lanparty-relay.local")
            .unwrap();
        let mut buf = Vec::new();
        if let Some(t) = conn.poll_transmit(now, 1, &mut buf) {
            buf.truncate(t.size);
            packets.push(buf);
        }
    }
    packets
}

/// Sends the packets from one UDP socket of another host (another loopback
/// address than the players') over about `spread` (the flood the issue
/// measured: 5,000 Initials, 6 MB in 0.4 s); returns the socket and the
/// bytes sent.
fn flood(
    relay: std::net::SocketAddr,
    packets: &[Vec<u8>],
    spread: Duration,
) -> (std::net::UdpSocket, u64) {
    let socket = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    let started = Instant::now();
    let mut sent = 0u64;
    for (i, p) in packets.iter().enumerate() {
        sent += socket.send_to(p, relay).unwrap() as u64;
        let due = spread.mul_f64((i + 1) as f64 / packets.len() as f64);
        if let Some(ahead) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
    (socket, sent)
}

/// The resident memory of this process, in kB (the relay runs in it).
fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Bytes that arrive on `socket` until it has been quiet for `quiet`.
fn drain(socket: &std::net::UdpSocket, quiet: Duration) -> u64 {
    socket.set_read_timeout(Some(quiet)).unwrap();
    let mut buf = [0u8; 65_536];
    let mut got = 0u64;
    while let Ok(n) = socket.recv(&mut buf) {
        got += n as u64;
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_handshakes_do_not_lock_players_out() {
    let dir = TempDir::new();
    let relay = Relay::start(&dir, 0, "handshake_timeout: 1s").await;
    let mut a = Peer::join(&relay, "FLOOD", "client", mac(2)).await;

    let mut b0 = Peer::join(&relay, "FLOOD", "client", mac(5)).await;
    let quiet = round_trips(&mut a, &mut b0, 100).await;

    let addr = relay.addr;
    let packets = initials(addr, &relay.cert, 5000);
    let rss_before = rss_kb();
    let flooder = std::thread::spawn(move || {
        let (socket, sent) = flood(addr, &packets, Duration::from_millis(400));
        let back = drain(&socket, Duration::from_millis(500));
        (sent, back)
    });
    // Admitted players keep talking during the flood (measured, printed).
    let flooded = round_trips(&mut a, &mut b0, 100).await;
    eprintln!(
        "admitted peers' round trip p99: {:?} before, {:?} during the flood",
        p99(quiet),
        p99(flooded)
    );
    // A player joins while the flood is on, and frames keep flowing.
    let started = Instant::now();
    let b = Peer::join(&relay, "FLOOD", "client", mac(3)).await;
    eprintln!("joined during the flood in {:?}", started.elapsed());
    b.send(frames_arp(b.mac));
    assert!(a.recv(Duration::from_secs(3)).await.is_some());
    let (sent, back) = tokio::task::spawn_blocking(move || flooder.join().unwrap())
        .await
        .unwrap();
    let c = &relay.counters;
    eprintln!(
        "flood: {sent} bytes sent, {back} bytes back; dropped before decryption {}, retries {}, refused {}, timeouts {}",
        c.handshake_packets_dropped.load(Ordering::Relaxed),
        c.retries.load(Ordering::Relaxed),
        c.handshakes_refused.load(Ordering::Relaxed),
        c.handshake_timeouts.load(Ordering::Relaxed)
    );
    assert!(sent >= 5000 * 1200, "the flood was sent: {sent}");
    // Stateless Retry: the relay sends back less than the flood sent.
    assert!(back <= sent, "amplification: {back} bytes back for {sent}");
    // Nearly all of the flood is dropped before quinn decrypts it (64
    // handshake packets per address and second pass); of what passes, one
    // gets a handshake, a few get Retries, the rest are ignored.
    assert!(c.handshake_packets_dropped.load(Ordering::Relaxed) > 4800);
    let retries = c.retries.load(Ordering::Relaxed);
    assert!((1..=32).contains(&retries), "{retries}");
    // The one handshake that got a slot times out and frees its state.
    wait_for(
        "the half-open handshakes to time out",
        Duration::from_secs(5),
        || {
            c.handshake_timeouts.load(Ordering::Relaxed)
                + c.handshake_failures.load(Ordering::Relaxed)
                >= 1
        },
    )
    .await;
    eprintln!(
        "relay process memory: {} kB before the flood, {} kB after its handshakes timed out",
        rss_before,
        rss_kb()
    );
    // Another player still gets in after the flood.
    let _c = Peer::join(&relay, "FLOOD", "client", mac(4)).await;
    relay.stop().await;
}

fn frames_arp(src: lanparty_core::wire::MacAddr) -> Vec<u8> {
    lanparty_core::testing::frames::arp_request(
        src,
        lanparty_core::testing::frames::Tags::None,
        [10, 0, 0, 1],
        [10, 0, 0, 2],
    )
}

/// `n` round trips a → relay → b → relay → a, each timed.
async fn round_trips(a: &mut Peer, b: &mut Peer, n: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        a.send(frames_arp(a.mac));
        if b.recv(Duration::from_secs(2)).await.is_none() {
            continue;
        }
        b.send(frames_arp(b.mac));
        if a.recv(Duration::from_secs(2)).await.is_some() {
            times.push(t.elapsed());
        }
    }
    assert!(
        times.len() >= n * 9 / 10,
        "frames were lost: {} of {n}",
        times.len()
    );
    times
}

fn p99(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[(times.len() * 99 / 100).min(times.len() - 1)]
}

//! The load generator behind `lanparty bench`: N synthetic peers in M rooms
//! on a relay (an in-process one, or a running relay on this machine),
//! each sending unicast frames to the next peer of its room at a fixed
//! offered rate or as fast as the relay takes them. Reports forwarded
//! frames/s, Gbit/s, loss, and one-way latency (p50/p99/max; sender and
//! receiver share this process's clock).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lanparty_core::control::{
    ControlMessage, Hello, MAX_CONTROL_FRAME, PROTOCOL_VERSION, PeerRole, read_message,
    write_message,
};
use lanparty_core::testing::frames::{self, Tags};
use lanparty_core::wire::MacAddr;
use lanparty_core::wire::overlay;
use serde::Serialize;

use crate::net::{self, Chunks};
use crate::tls::{self, Trust};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The relay to load.
    pub relay: SocketAddr,
    /// The relay's certificate name.
    pub server_name: String,
    /// How to trust it.
    pub trust: Trust,
    /// Synthetic peers in all.
    pub peers: usize,
    /// Rooms they are spread over (round robin).
    pub rooms: usize,
    /// Ethernet frame size in bytes (at least 60).
    pub frame_size: usize,
    /// Offered frames per second over all peers; 0 = as fast as possible.
    pub rate: u64,
    /// How long to send.
    pub duration: Duration,
    /// At a fixed rate, each peer sends what is due every `tick`, from its
    /// own thread (tokio's timer has 1 ms granularity: coarser ticks send
    /// longer bursts, whose queueing shows up as latency).
    pub tick: Duration,
}

/// The results.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Peers, rooms, frame size, offered rate (0 = saturation), seconds.
    pub peers: usize,
    /// Rooms.
    pub rooms: usize,
    /// Frame size.
    pub frame_size: usize,
    /// Offered rate.
    pub offered_rate: u64,
    /// Pacing tick in microseconds (each peer sends a burst per tick).
    pub tick_us: u64,
    /// Frames the peers handed to QUIC.
    pub sent: u64,
    /// Frames the peers could not hand to QUIC (their send buffer was full).
    pub send_dropped: u64,
    /// Frames that arrived.
    pub received: u64,
    /// `1 - received / sent`.
    pub loss: f64,
    /// Received frames per second.
    pub frames_per_second: f64,
    /// Received Ethernet bits per second.
    pub gbit_per_second: f64,
    /// One-way latency percentiles in microseconds.
    pub latency_p50_us: f64,
    /// 99th percentile.
    pub latency_p99_us: f64,
    /// Maximum.
    pub latency_max_us: f64,
}

/// Offset of the bench payload (sequence and timestamp) inside a frame:
/// after the Ethernet header.
const STAMP_AT: usize = 14;

/// Peer MACs carry this process's id, so that two benches on one relay
/// never collide.
fn peer_mac(index: usize) -> MacAddr {
    let pid = std::process::id();
    MacAddr([
        0x02,
        (pid >> 16) as u8,
        (pid >> 8) as u8,
        pid as u8,
        (index >> 8) as u8,
        index as u8,
    ])
}

async fn join(
    options: &BenchOptions,
    room: &str,
    mac: MacAddr,
) -> Result<(quinn::Endpoint, quinn::Connection), String> {
    let config = bench_client_config(&options.trust)?;
    let bind: SocketAddr = if options.relay.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()
    .map_err(|_| "bind")?;
    let socket = net::bind_udp(bind, net::DEFAULT_SOCKET_BUFFER).map_err(|e| e.to_string())?;
    let endpoint = net::endpoint(socket, None).map_err(|e| e.to_string())?;
    let conn = endpoint
        .connect_with(config, options.relay, &options.server_name)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", options.relay))?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        role: PeerRole::Client,
        room: room.to_string(),
        mac,
        datagram_budget: conn.max_datagram_size().unwrap_or(0) as u32,
        credential: None,
        // Synthetic peers read and write plain frames.
        header_compression: false,
    };
    write_message(&mut send, &ControlMessage::Hello(hello))
        .await
        .map_err(|e| e.to_string())?;
    match read_message(&mut recv, MAX_CONTROL_FRAME).await {
        Ok(Some(ControlMessage::Welcome(_))) => {}
        other => return Err(format!("not admitted: {other:?}")),
    }
    // Keep the control stream open for the connection's life.
    tokio::spawn(async move {
        let _keep = send;
        while let Ok(Some(_)) = read_message(&mut recv, MAX_CONTROL_FRAME).await {}
    });
    Ok((endpoint, conn))
}

/// The QUIC client config every synthetic peer uses.
fn bench_client_config(trust: &Trust) -> Result<quinn::ClientConfig, String> {
    let transport = net::transport(
        Duration::from_secs(30),
        Some(Duration::from_secs(5)),
        net::DEFAULT_INITIAL_MTU,
        net::Congestion::default(),
    );
    tls::quic_client_config(trust, transport).map_err(|e| e.to_string())
}

fn datagram(dst: MacAddr, src: MacAddr, size: usize) -> Vec<u8> {
    let frame = frames::ethernet(
        dst,
        src,
        Tags::None,
        0x88b5,
        size.saturating_sub(14).max(46),
    );
    let mut out = Vec::new();
    overlay::encode_ethernet(&frame, &mut out);
    out
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

/// Runs the benchmark.
pub async fn run(options: BenchOptions) -> Result<BenchReport, String> {
    if options.peers < 2 || options.rooms == 0 || options.peers < options.rooms * 2 {
        return Err("need at least two peers per room".into());
    }
    let mut conns = Vec::new();
    let mut endpoints = Vec::new();
    for i in 0..options.peers {
        let room = format!("BENCH{}", i % options.rooms);
        let (endpoint, conn) = join(&options, &room, peer_mac(i)).await?;
        endpoints.push(endpoint);
        conns.push(conn);
    }
    measure(&options, conns, endpoints).await
}

/// The same measurement with no relay: two peers with one QUIC connection
/// between them (one side serving). What `run` reports beyond this is what
/// the relay adds.
pub async fn run_direct(options: BenchOptions) -> Result<BenchReport, String> {
    let options = BenchOptions {
        peers: 2,
        rooms: 1,
        ..options
    };
    let identity = tls::ephemeral_identity(std::slice::from_ref(&options.server_name))
        .map_err(|e| e.to_string())?;
    let cert = identity.chain[0].clone();
    let server_config = tls::quic_server_config(
        identity,
        net::transport(
            Duration::from_secs(30),
            None,
            net::DEFAULT_INITIAL_MTU,
            net::Congestion::default(),
        ),
    )
    .map_err(|e| e.to_string())?;
    let socket = net::bind_udp(
        "127.0.0.1:0".parse().map_err(|_| "bind")?,
        net::DEFAULT_SOCKET_BUFFER,
    )
    .map_err(|e| e.to_string())?;
    let server = net::endpoint(socket, Some(server_config)).map_err(|e| e.to_string())?;
    let addr = server.local_addr().map_err(|e| e.to_string())?;
    let config = bench_client_config(&Trust::Pinned(cert))?;
    let socket = net::bind_udp(
        "127.0.0.1:0".parse().map_err(|_| "bind")?,
        net::DEFAULT_SOCKET_BUFFER,
    )
    .map_err(|e| e.to_string())?;
    let client = net::endpoint(socket, None).map_err(|e| e.to_string())?;
    let connecting = client
        .connect_with(config, addr, &options.server_name)
        .map_err(|e| e.to_string())?;
    let incoming = server.accept();
    let (client_conn, server_conn) = tokio::join!(connecting, async {
        incoming
            .await
            .ok_or("no connection")?
            .await
            .map_err(|_| "handshake")
    });
    let client_conn = client_conn.map_err(|e| e.to_string())?;
    let server_conn = server_conn?;
    measure(
        &options,
        vec![client_conn, server_conn],
        vec![client, server],
    )
    .await
}

/// One synthetic peer's sending side.
struct Sender {
    conn: quinn::Connection,
    template: Vec<u8>,
    sent: Arc<AtomicU64>,
    send_dropped: Arc<AtomicU64>,
    origin: Instant,
}

impl Sender {
    /// Stamps the next frame (sequence, send time) into `chunks`; one
    /// allocation per chunk of datagrams, not per frame.
    fn next(&self, chunks: &mut Chunks, seq: u64) -> Bytes {
        let buf = chunks.room(self.template.len());
        let at = buf.len() + overlay::ETHERNET_HEADER_LEN + STAMP_AT;
        buf.extend_from_slice(&self.template);
        buf[at..at + 8].copy_from_slice(&seq.to_be_bytes());
        buf[at + 8..at + 16]
            .copy_from_slice(&(self.origin.elapsed().as_nanos() as u64).to_be_bytes());
        chunks.take()
    }

    /// As fast as QUIC takes them.
    async fn flood(self, duration: Duration) {
        let mut chunks = Chunks::default();
        let started = Instant::now();
        let mut seq = 0u64;
        while started.elapsed() < duration {
            for _ in 0..64 {
                let d = self.next(&mut chunks, seq);
                seq += 1;
                if self.conn.send_datagram_wait(d).await.is_err() {
                    return;
                }
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Sends one frame now; a frame QUIC cannot take at once is dropped
    /// and counted, never queued.
    fn send_now(&self, chunks: &mut Chunks, seq: u64) {
        let d = self.next(chunks, seq);
        if self.conn.datagram_send_buffer_space() >= d.len() && self.conn.send_datagram(d).is_ok() {
            self.sent.fetch_add(1, Ordering::Relaxed);
        } else {
            self.send_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Every peer at `rate` frames/s each, from one thread: each `tick`, every
/// peer sends what is due (one thread, so that pacing 32 peers does not
/// take 32 threads' wake-ups from the relay).
fn paced(senders: Vec<Sender>, duration: Duration, rate: u64, tick: Duration) {
    let mut chunks = Chunks::default();
    let started = Instant::now();
    let (mut seq, mut due) = (0u64, 0u64);
    while started.elapsed() < duration {
        std::thread::sleep(tick);
        let should = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        for n in due..should {
            for sender in &senders {
                sender.send_now(&mut chunks, seq + n - due);
            }
        }
        seq += should - due;
        due = should;
    }
}

async fn measure(
    options: &BenchOptions,
    conns: Vec<quinn::Connection>,
    endpoints: Vec<quinn::Endpoint>,
) -> Result<BenchReport, String> {
    // Every peer speaks once so the relay's switch learns it.
    for (i, conn) in conns.iter().enumerate() {
        let _ = conn.send_datagram(Bytes::from(datagram(MacAddr::BROADCAST, peer_mac(i), 60)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for conn in &conns {
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(1), conn.read_datagram()).await
        {}
    }

    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let send_dropped = Arc::new(AtomicU64::new(0));
    let mut receivers = Vec::new();
    for conn in &conns {
        let conn = conn.clone();
        let stop = stop.clone();
        receivers.push(tokio::spawn(async move {
            let mut received = 0u64;
            let mut bytes = 0u64;
            let mut latencies: Vec<u32> = Vec::with_capacity(1 << 16);
            loop {
                let next =
                    tokio::time::timeout(Duration::from_millis(500), conn.read_datagram()).await;
                match next {
                    Ok(Ok(d)) => {
                        received += 1;
                        bytes += (d.len() - overlay::ETHERNET_HEADER_LEN) as u64;
                        let at = overlay::ETHERNET_HEADER_LEN + STAMP_AT + 8;
                        if let Some(stamp) = d.get(at..at + 8) {
                            let sent_ns = u64::from_be_bytes(stamp.try_into().unwrap_or([0; 8]));
                            let now = origin.elapsed().as_nanos() as u64;
                            if latencies.len() < 4_000_000 {
                                latencies.push(
                                    now.saturating_sub(sent_ns).min(u64::from(u32::MAX)) as u32,
                                );
                            }
                        }
                    }
                    Ok(Err(_)) => break,
                    Err(_) if stop.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
            (received, bytes, latencies)
        }));
    }
    let per_peer_rate = if options.rate == 0 {
        0
    } else {
        (options.rate / options.peers as u64).max(1)
    };
    let (mut floods, mut pace) = (Vec::new(), Vec::new());
    for (i, conn) in conns.iter().enumerate() {
        let conn = conn.clone();
        let room_peers: Vec<usize> = (0..options.peers)
            .filter(|p| p % options.rooms == i % options.rooms)
            .collect();
        let pos = room_peers.iter().position(|p| *p == i).unwrap_or(0);
        let dst = peer_mac(room_peers[(pos + 1) % room_peers.len()]);
        let template = datagram(dst, peer_mac(i), options.frame_size);
        let (sent, send_dropped) = (sent.clone(), send_dropped.clone());
        let sender = Sender {
            conn,
            template,
            sent,
            send_dropped,
            origin,
        };
        if per_peer_rate == 0 {
            floods.push(tokio::spawn(sender.flood(options.duration)));
        } else {
            pace.push(sender);
        }
    }
    if !pace.is_empty() {
        let (duration, tick) = (
            options.duration,
            options.tick.max(Duration::from_micros(10)),
        );
        let thread = std::thread::Builder::new()
            .name("bench-pacer".into())
            .spawn(move || paced(pace, duration, per_peer_rate, tick))
            .map_err(|e| format!("cannot start the pacing thread: {e}"))?;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    for task in floods {
        let _ = task.await;
    }
    let elapsed = origin.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (mut received, mut bytes, mut latencies) = (0u64, 0u64, Vec::new());
    for r in receivers {
        if let Ok((n, b, l)) = r.await {
            received += n;
            bytes += b;
            latencies.extend(l);
        }
    }
    for conn in &conns {
        conn.close(0u32.into(), b"bench done");
    }
    // Let the close frames leave, so the relay frees the peers' seats now.
    for endpoint in &endpoints {
        let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    }
    latencies.sort_unstable();
    let sent = sent.load(Ordering::Relaxed);
    let secs = elapsed.as_secs_f64();
    Ok(BenchReport {
        peers: options.peers,
        rooms: options.rooms,
        frame_size: options.frame_size,
        offered_rate: options.rate,
        tick_us: options.tick.as_micros() as u64,
        sent,
        send_dropped: send_dropped.load(Ordering::Relaxed),
        received,
        loss: if sent == 0 {
            0.0
        } else {
            1.0 - received as f64 / sent as f64
        },
        frames_per_second: received as f64 / secs,
        gbit_per_second: bytes as f64 * 8.0 / secs / 1e9,
        latency_p50_us: percentile(&latencies, 0.50),
        latency_p99_us: percentile(&latencies, 0.99),
        latency_max_us: percentile(&latencies, 1.0),
    })
}

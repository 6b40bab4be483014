//! The latency floor of a relayed round trip, with nothing of lanparty's
//! data path in it: a minimal datagram forwarder ("relay") between two
//! peers, one of which echoes what it gets ("echo") while the other sends
//! numbered datagrams at a fixed interval and times their return ("ping").
//! Each role runs on a one-thread tokio runtime, like lanparty's shipped
//! configs. Two flavours share the roles:
//!
//! - `quic`: quinn with lanparty's transport settings (TLS 1.3, datagrams,
//!   the same ACK frequency), so the round trip pays what any quinn-based
//!   relay pays: four QUIC sends and receives at the peers, a decrypt and
//!   re-encrypt at the relay;
//! - `proto` (relay only; its peers are the `quic` ones): the same
//!   forwarder driving `quinn_proto` itself from one task, the endpoint,
//!   every connection and the socket in one loop with one wake-up per
//!   batch of datagrams, instead of quinn's endpoint task, one driver task
//!   per connection and the reader tasks between them;
//! - `udp`: plain tokio UDP sockets, the same forwarding without QUIC
//!   (what a relay that forwards without decrypting, like n2n's
//!   supernode, pays in a tokio program).
//!
//! `flood` sends SIZE-byte datagrams to the echo as fast as quinn lets it
//! for SECONDS and counts what comes back: a relay's cost per forwarded
//! datagram at saturation (read its CPU time around the run).
//!
//! `bench/ping-compare.sh` runs both in the A — R — B namespaces of
//! `bench/e2e.sh`, beside lanparty and n2n. Usage:
//!
//! ```text
//! quinn_floor quic relay LISTEN CERT_DIR
//! quinn_floor quic echo  RELAY CERT_DIR
//! quinn_floor quic ping  RELAY CERT_DIR COUNT INTERVAL_MS
//! quinn_floor quic flood RELAY CERT_DIR SECONDS SIZE
//! quinn_floor proto relay LISTEN CERT_DIR
//! quinn_floor udp  relay LISTEN
//! quinn_floor udp  echo  RELAY
//! quinn_floor udp  ping  RELAY COUNT INTERVAL_MS
//! ```

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lanparty_transports::{net, quic_loop, tls};

type Error = Box<dyn std::error::Error>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => fail(&format!("cannot start tokio: {e}")),
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = runtime.block_on(async {
        match args.as_slice() {
            ["quic", "relay", listen, dir] => quic_relay(listen.parse()?, Path::new(dir)).await,
            ["quic", "echo", relay, dir] => quic_echo(relay.parse()?, Path::new(dir)).await,
            ["quic", "ping", relay, dir, count, ms] => {
                let conn = quic_connect(relay.parse()?, Path::new(dir)).await?;
                ping(Pinger::Quic(conn), count.parse()?, ms.parse()?).await
            }
            ["proto", "relay", listen, dir] => proto_relay(listen.parse()?, Path::new(dir)).await,
            ["quic", "flood", relay, dir, secs, size] => {
                let conn = quic_connect(relay.parse()?, Path::new(dir)).await?;
                flood(conn, Duration::from_secs(secs.parse()?), size.parse()?).await
            }
            ["udp", "relay", listen] => udp_relay(listen.parse()?).await,
            ["udp", "echo", relay] => udp_echo(relay.parse()?).await,
            ["udp", "ping", relay, count, ms] => {
                let socket = udp_connect(relay.parse()?).await?;
                ping(Pinger::Udp(socket), count.parse()?, ms.parse()?).await
            }
            _ => Err("usage: see the module documentation of quinn_floor.rs".into()),
        }
    });
    if let Err(e) = result {
        fail(&e.to_string());
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}

fn transport() -> quinn::TransportConfig {
    net::transport(
        Duration::from_secs(30),
        Some(Duration::from_secs(5)),
        1452,
        net::Congestion::default(),
    )
}

/// Forwards every datagram of a connection to every other connection.
async fn quic_relay(listen: SocketAddr, dir: &Path) -> Result<(), Error> {
    let files = tls::SelfSignedFiles::in_dir(dir);
    let (identity, _) = tls::load_or_generate_self_signed(&files, &["relay".to_string()])?;
    let socket = net::bind_udp(listen, 4 << 20)?;
    let endpoint = net::endpoint(
        socket,
        Some(tls::quic_server_config(identity, transport())?),
    )?;
    let peers: Arc<Mutex<Vec<quinn::Connection>>> = Arc::default();
    while let Some(incoming) = endpoint.accept().await {
        let conn = incoming.await?;
        peers.lock().map_err(|_| "poisoned")?.push(conn.clone());
        let peers = peers.clone();
        tokio::spawn(async move {
            while let Ok(datagram) = conn.read_datagram().await {
                let Ok(peers) = peers.lock() else { return };
                for other in peers.iter().filter(|p| p.stable_id() != conn.stable_id()) {
                    let _ = other.send_datagram(datagram.clone());
                }
            }
        });
    }
    Ok(())
}

/// [`quic_relay`] without quinn's tasks: one loop owns the socket (batched
/// receive with GRO and segmented sends with GSO through quinn-udp, as
/// quinn does), the `quinn_proto` endpoint and its connections.
async fn proto_relay(listen: SocketAddr, dir: &Path) -> Result<(), Error> {
    use quinn_proto::{ConnectionHandle, DatagramEvent, Endpoint, EndpointConfig, Event};
    use std::collections::HashMap;
    use std::io::IoSliceMut;
    use tokio::io::Interest;

    let files = tls::SelfSignedFiles::in_dir(dir);
    let (identity, _) = tls::load_or_generate_self_signed(&files, &["relay".to_string()])?;
    let server = Arc::new(tls::quic_server_config(identity, transport())?);
    let socket = tokio::net::UdpSocket::from_std(net::bind_udp(listen, 4 << 20)?)?;
    let state = quinn_udp::UdpSocketState::new((&socket).into())?;
    let mut endpoint = Endpoint::new(
        Arc::new(EndpointConfig::default()),
        Some(server),
        true,
        None,
    );
    let mut conns: HashMap<ConnectionHandle, quinn_proto::Connection> = HashMap::new();
    let slot = 65536 * state.gro_segments().max(1);
    let mut rx = vec![0u8; slot * quinn_udp::BATCH_SIZE];
    let mut meta = vec![quinn_udp::RecvMeta::default(); quinn_udp::BATCH_SIZE];
    let mut tx = Vec::with_capacity(65536);
    let mut forward: Vec<(ConnectionHandle, Bytes)> = Vec::new();
    // A full socket buffer waits, as quinn's driver does.
    async fn send(
        socket: &tokio::net::UdpSocket,
        state: &quinn_udp::UdpSocketState,
        t: &quinn_proto::Transmit,
        contents: &[u8],
    ) {
        let transmit = quinn_udp::Transmit {
            destination: t.destination,
            ecn: None,
            contents,
            segment_size: t.segment_size,
            src_ip: t.src_ip,
        };
        loop {
            if socket.writable().await.is_err() {
                return;
            }
            match socket.try_io(Interest::WRITABLE, || state.send(socket.into(), &transmit)) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                _ => return,
            }
        }
    }
    loop {
        let deadline = conns.values_mut().filter_map(|c| c.poll_timeout()).min();
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ready = socket.readable() => ready?,
            () = sleep => {}
        }
        let now = Instant::now();
        // Every datagram that is ready, into the endpoint and its connections.
        for _ in 0..4 {
            let mut bufs: Vec<IoSliceMut> = rx.chunks_mut(slot).map(IoSliceMut::new).collect();
            let n = match socket.try_io(Interest::READABLE, || {
                state.recv((&socket).into(), &mut bufs, &mut meta)
            }) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            };
            for (m, buf) in meta.iter().zip(bufs.iter()).take(n) {
                for d in buf[..m.len].chunks(m.stride.max(1)) {
                    let data = bytes::BytesMut::from(d);
                    match endpoint.handle(now, m.addr, m.dst_ip, None, data, &mut tx) {
                        Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                            if let Some(conn) = conns.get_mut(&ch) {
                                conn.handle_event(event);
                            }
                        }
                        Some(DatagramEvent::NewConnection(incoming)) => {
                            if let Ok((ch, conn)) = endpoint.accept(incoming, now, &mut tx, None) {
                                conns.insert(ch, conn);
                            }
                        }
                        Some(DatagramEvent::Response(t)) => {
                            send(&socket, &state, &t, &tx[..t.size]).await
                        }
                        None => {}
                    }
                    tx.clear();
                }
            }
        }
        for conn in conns.values_mut() {
            if conn.poll_timeout().is_some_and(|t| t <= now) {
                conn.handle_timeout(now);
            }
        }
        // Application events: datagrams to forward; endpoint bookkeeping.
        for (ch, conn) in conns.iter_mut() {
            while let Some(event) = conn.poll() {
                let _: Event = event;
            }
            while let Some(d) = conn.datagrams().recv() {
                forward.push((*ch, d));
            }
            while let Some(event) = conn.poll_endpoint_events() {
                if let Some(back) = endpoint.handle_event(*ch, event) {
                    conn.handle_event(back);
                }
            }
        }
        for (from, d) in forward.drain(..) {
            for (_, conn) in conns.iter_mut().filter(|(ch, _)| **ch != from) {
                let _ = conn.datagrams().send(d.clone(), true);
            }
        }
        conns.retain(|_, c| !c.is_drained());
        // As the relay's loop: as many packets per send as fit in 64 kB.
        for conn in conns.values_mut() {
            let segments = quic_loop::gso_segments(state.max_gso_segments(), conn.current_mtu());
            while let Some(t) = conn.poll_transmit(now, segments, &mut tx) {
                send(&socket, &state, &t, &tx[..t.size]).await;
                tx.clear();
            }
        }
    }
}

async fn quic_connect(relay: SocketAddr, dir: &Path) -> Result<quinn::Connection, Error> {
    let trust = tls::load_pinned(&tls::SelfSignedFiles::in_dir(dir).cert_der)?;
    let socket = net::bind_udp("0.0.0.0:0".parse()?, 4 << 20)?;
    let mut endpoint = net::endpoint(socket, None)?;
    endpoint.set_default_client_config(tls::quic_client_config(&trust, transport())?);
    Ok(endpoint.connect(relay, "relay")?.await?)
}

async fn quic_echo(relay: SocketAddr, dir: &Path) -> Result<(), Error> {
    let conn = quic_connect(relay, dir).await?;
    while let Ok(datagram) = conn.read_datagram().await {
        conn.send_datagram(datagram)?;
    }
    Ok(())
}

/// Sends `size`-byte datagrams for `secs`, as fast as the connection takes
/// them; prints what was sent and echoed per second.
async fn flood(conn: quinn::Connection, secs: Duration, size: usize) -> Result<(), Error> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let echoed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = echoed.clone();
    let reader = conn.clone();
    tokio::spawn(async move {
        while reader.read_datagram().await.is_ok() {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let payload = Bytes::from(vec![0x5a; size]);
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < secs {
        conn.send_datagram_wait(payload.clone()).await?;
        sent += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let back = echoed.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "sent {:.0}/s, echoed {:.0}/s ({:.0} Mbit/s each way through the relay)",
        sent as f64 / elapsed,
        back as f64 / elapsed,
        back as f64 * size as f64 * 8.0 / elapsed / 1e6
    );
    Ok(())
}

/// Forwards every datagram to the other peer it has heard from.
async fn udp_relay(listen: SocketAddr) -> Result<(), Error> {
    let socket = tokio::net::UdpSocket::from_std(net::bind_udp(listen, 4 << 20)?)?;
    let mut peers: Vec<SocketAddr> = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await?;
        if !peers.contains(&from) {
            peers.push(from);
        }
        for to in peers.iter().filter(|p| **p != from) {
            let _ = socket.try_send_to(&buf[..n], *to);
        }
    }
}

async fn udp_connect(relay: SocketAddr) -> Result<tokio::net::UdpSocket, Error> {
    let socket = tokio::net::UdpSocket::from_std(net::bind_udp("0.0.0.0:0".parse()?, 4 << 20)?)?;
    socket.connect(relay).await?;
    Ok(socket)
}

async fn udp_echo(relay: SocketAddr) -> Result<(), Error> {
    let socket = udp_connect(relay).await?;
    // Announce ourselves so the relay knows where the echo is.
    socket.send(b"hello").await?;
    let mut buf = vec![0u8; 65536];
    loop {
        let n = socket.recv(&mut buf).await?;
        if n >= 8 {
            socket.send(&buf[..n]).await?;
        }
    }
}

enum Pinger {
    Quic(quinn::Connection),
    Udp(tokio::net::UdpSocket),
}

impl Pinger {
    async fn send(&self, payload: [u8; 100]) -> Result<(), Error> {
        match self {
            Pinger::Quic(c) => c.send_datagram(Bytes::copy_from_slice(&payload))?,
            Pinger::Udp(s) => {
                s.send(&payload).await?;
            }
        }
        Ok(())
    }

    /// The sequence number of the next echoed datagram.
    async fn recv(&self) -> Result<u64, Error> {
        let mut buf = [0u8; 2048];
        let bytes = match self {
            Pinger::Quic(c) => {
                let d = c.read_datagram().await?;
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                n
            }
            Pinger::Udp(s) => s.recv(&mut buf).await?,
        };
        let seq = buf[..bytes]
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .ok_or("short datagram")?;
        Ok(u64::from_be_bytes(seq))
    }
}

/// Sends `count` datagrams `interval_ms` apart, each waiting for its echo
/// (up to a second); prints the average and quartiles of the round trips.
async fn ping(pinger: Pinger, count: u64, interval_ms: u64) -> Result<(), Error> {
    // Let the echo peer connect and the path warm up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut rtts = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(interval_ms));
    for seq in 0..count {
        ticker.tick().await;
        let mut payload = [0u8; 100];
        payload[..8].copy_from_slice(&seq.to_be_bytes());
        let start = Instant::now();
        pinger.send(payload).await?;
        let answer = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                if pinger.recv().await? == seq {
                    return Ok::<(), Error>(());
                }
            }
        })
        .await;
        if let Ok(Ok(())) = answer {
            rtts.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    if rtts.is_empty() {
        return Err("no echo came back".into());
    }
    let avg = rtts.iter().sum::<f64>() / rtts.len() as f64;
    rtts.sort_by(f64::total_cmp);
    let q = |p: f64| rtts[((rtts.len() - 1) as f64 * p) as usize];
    println!(
        "{} of {count} answered, rtt avg {avg:.3} ms, p10 {:.3}, p50 {:.3}, p90 {:.3}",
        rtts.len(),
        q(0.1),
        q(0.5),
        q(0.9)
    );
    Ok(())
}

//! A connection driven the loop's way against a real `quinn_proto` peer,
//! as quinn-proto tests its own connections: two endpoints, packets
//! carried in memory, and a clock that moves only when the test moves it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};

use lanparty_core::queue::QueueSettings;
use lanparty_core::room::LinkSink;
use lanparty_core::testing::frames;
use quinn_proto::{DatagramEvent, Endpoint, EndpointConfig, Event};

use super::*;
use crate::datapath::{DatapathCounters, PeerSender};
use crate::{net, tls};

const CLIENT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 40001);
const SERVER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 40002);
const NAME: &str = "lanparty-relay.local";
/// Linux's limit of segments in one UDP GSO send (`UDP_MAX_SEGMENTS`).
const KERNEL_SEGMENTS: usize = 64;

/// A client connection in a [`LoopConn`] and the server's end of it.
struct Pair {
    now: Instant,
    client: Endpoint,
    server: Endpoint,
    conn: Arc<LoopConn>,
    server_conn: Option<(ConnectionHandle, quinn_proto::Connection)>,
    /// Datagrams the server's end received.
    received: Vec<Bytes>,
    connected: bool,
}

impl Pair {
    fn connected() -> Pair {
        let identity = tls::ephemeral_identity(&[NAME.into()]).unwrap();
        let trust = tls::Trust::Pinned(identity.chain[0].clone());
        let transport = || {
            net::transport(
                Duration::from_secs(30),
                None,
                net::DEFAULT_INITIAL_MTU,
                net::Congestion::default(),
            )
        };
        let server_config = tls::quic_server_config(identity, transport()).unwrap();
        let client_config = tls::quic_client_config(&trust, transport()).unwrap();
        let config = Arc::new(EndpointConfig::default());
        let mut client = Endpoint::new(config.clone(), None, true, Some([1; 32]));
        let server = Endpoint::new(config, Some(Arc::new(server_config)), true, Some([2; 32]));
        let now = Instant::now();
        let (handle, conn) = client.connect(now, client_config, SERVER, NAME).unwrap();
        let mut pair = Pair {
            now,
            client,
            server,
            conn: LoopConn::new(handle, conn, Arc::new(Wake::default())),
            server_conn: None,
            received: Vec::new(),
            connected: false,
        };
        for _ in 0..100 {
            pair.step();
            if pair.connected && pair.server_conn.is_some() {
                return pair;
            }
        }
        panic!("no handshake in 100 steps");
    }

    /// Everything either end has to send, delivered; both ends' events
    /// and timers handled; then the clock moves on by 100 µs.
    fn step(&mut self) {
        let mut tx = Vec::new();
        for packet in self.client_flight() {
            self.deliver_to_server(packet);
        }
        let mut to_client = Vec::new();
        if let Some((_, c)) = &mut self.server_conn {
            while let Some(t) = c.poll_transmit(
                self.now,
                gso_segments(KERNEL_SEGMENTS, c.current_mtu()),
                &mut tx,
            ) {
                to_client.extend(packets(&tx[..t.size], t.segment_size));
                tx.clear();
            }
        }
        for packet in to_client {
            let event = self
                .client
                .handle(self.now, SERVER, None, None, packet, &mut tx);
            if let Some(DatagramEvent::ConnectionEvent(_, event)) = event {
                self.conn.lock().handle_event(event);
            }
        }
        self.events();
        self.now += Duration::from_micros(100);
        let now = self.now;
        let mut c = self.conn.lock();
        if c.poll_timeout().is_some_and(|t| t <= now) {
            c.handle_timeout(now);
        }
        drop(c);
        if let Some((_, c)) = &mut self.server_conn
            && c.poll_timeout().is_some_and(|t| t <= now)
        {
            c.handle_timeout(now);
        }
    }

    /// Every packet the client's end sends now, the loop's way.
    fn client_flight(&mut self) -> Vec<BytesMut> {
        let mut tx = Vec::new();
        let mut flight = Vec::new();
        while let Some(t) = self.conn.poll_transmit(self.now, KERNEL_SEGMENTS, &mut tx) {
            flight.extend(packets(&tx[..t.size], t.segment_size));
            tx.clear();
        }
        flight
    }

    fn deliver_to_server(&mut self, packet: BytesMut) {
        let mut buf = Vec::new();
        match self
            .server
            .handle(self.now, CLIENT, None, None, packet, &mut buf)
        {
            Some(DatagramEvent::NewConnection(incoming)) => {
                let accepted = self.server.accept(incoming, self.now, &mut buf, None);
                self.server_conn = Some(accepted.unwrap());
            }
            Some(DatagramEvent::ConnectionEvent(_, event)) => {
                if let Some((_, c)) = &mut self.server_conn {
                    c.handle_event(event);
                }
            }
            Some(DatagramEvent::Response(_)) | None => {}
        }
    }

    fn events(&mut self) {
        {
            let mut c = self.conn.lock();
            exchange(&mut self.client, self.conn.handle, &mut c);
            while let Some(event) = c.poll() {
                if matches!(event, Event::Connected) {
                    self.connected = true;
                }
            }
        }
        if let Some((handle, c)) = &mut self.server_conn {
            exchange(&mut self.server, *handle, c);
            while c.poll().is_some() {}
            while let Some(d) = c.datagrams().recv() {
                self.received.push(d);
            }
        }
    }
}

/// The packets of one transmit (several when segmented).
fn packets(bytes: &[u8], segment: Option<usize>) -> Vec<BytesMut> {
    bytes
        .chunks(segment.unwrap_or(bytes.len()).max(1))
        .map(BytesMut::from)
        .collect()
}

/// A 1000-byte frame of one UDP flow (the same for all `seq`).
fn frame(seq: u16) -> Bytes {
    flow_frame(5000, seq)
}

/// A 1000-byte frame of the UDP flow from `port`, numbered `seq`.
fn flow_frame(port: u16, seq: u16) -> Bytes {
    let mut f = frames::ipv4_udp(
        "02:00:00:00:00:02".parse().unwrap(),
        "02:00:00:00:00:01".parse().unwrap(),
        frames::Tags::default(),
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        port,
        5001,
        &[0u8; 958],
    );
    let n = f.len();
    f[n - 2..].copy_from_slice(&seq.to_be_bytes());
    Bytes::from(f)
}

/// The sender's pump task never runs in this test (it never awaits, on a
/// one-thread runtime): only the loop's sends can move the frames that
/// wait in the sender's queue into quinn's buffer — at the low-water mark
/// the sender set when the feeder said wait.
#[tokio::test(flavor = "current_thread")]
async fn the_loop_refills_quinns_buffer_from_the_queue_as_it_sends() {
    const FRAMES: usize = 200;
    let mut pair = Pair::connected();
    let counters = Arc::new(DatapathCounters::default());
    let sender =
        PeerSender::connected(counters, &QueueSettings::default(), pair.conn.clone(), 1400);
    for seq in 0..FRAMES {
        assert!(sender.deliver(frame(seq as u16)));
    }
    let queued = sender.send_report().queue;
    assert!(
        queued.backlog_frames > 100,
        "most frames wait in the queue: {queued:?}"
    );
    for _ in 0..2000 {
        pair.step();
        if pair.received.len() == FRAMES {
            break;
        }
    }
    let seqs: Vec<u16> = pair
        .received
        .iter()
        .map(|d| u16::from_be_bytes([d[d.len() - 2], d[d.len() - 1]]))
        .collect();
    assert_eq!(
        seqs,
        (0..FRAMES as u16).collect::<Vec<_>>(),
        "every frame, in order"
    );
    let queued = sender.send_report().queue;
    assert_eq!(queued.backlog_frames, 0);
}

/// With the delay controller, what its window cannot send now waits in
/// the sender's queue, not in quinn's buffer: once the window is full,
/// quinn's buffer is empty, and a sparse flow's frame leaves with the next
/// packet, ahead of every queued bulk frame.
#[tokio::test(flavor = "current_thread")]
async fn frames_the_window_cannot_send_wait_in_the_queue_and_a_sparse_one_goes_first() {
    const BULK: u16 = 300;
    let mut pair = Pair::connected();
    let share = pair.conn.controller_share().expect("the delay controller");
    let sender = PeerSender::connected(
        Arc::new(DatapathCounters::default()),
        &QueueSettings::default(),
        pair.conn.clone(),
        1400,
    );
    let empty = pair.conn.send_buffer_space();
    for seq in 0..BULK {
        assert!(sender.deliver(flow_frame(5000, seq)));
    }
    let first = pair.client_flight();
    assert!(share.window_full(), "the bulk frames filled the window");
    assert_eq!(
        empty - pair.conn.send_buffer_space(),
        0,
        "nothing waits in quinn's buffer while the window is full"
    );
    assert!(sender.deliver(flow_frame(6000, 0)));
    let second = pair.client_flight();
    for packet in first {
        pair.deliver_to_server(packet);
    }
    pair.events();
    let in_first = pair.received.len();
    assert!(
        in_first < usize::from(BULK) / 2,
        "{in_first} in the first flight"
    );
    for packet in second {
        pair.deliver_to_server(packet);
    }
    pair.events();
    let ports: Vec<u16> = pair.received[in_first..]
        .iter()
        .map(|d| {
            let frame = &d[d.len() - 1000..];
            u16::from_be_bytes([frame[34], frame[35]])
        })
        .collect();
    assert_eq!(
        ports,
        [6000],
        "the sparse frame, and nothing in front of it"
    );
}

#[test]
fn a_mark_is_due_once_when_the_buffer_has_drained_to_it() {
    let drain = Drain::default();
    assert!(!drain.due(usize::MAX - 1), "no mark, never due");
    drain.at_space.store(1000, Ordering::SeqCst);
    assert!(!drain.due(999));
    assert!(drain.due(1000));
    assert!(!drain.due(5000), "due once per mark");
}

/// A GRO batch's datagrams come out in buffers of their own: a frame
/// kept from one of them (queued for a slow peer) holds that datagram,
/// not the whole batch; the others' buffers are used again for the next
/// batch, and the kept one is not.
#[test]
fn each_datagram_of_a_batch_has_a_buffer_of_its_own() {
    let bytes: Vec<u8> = (0..3 * 1400 + 500).map(|i| i as u8).collect();
    let mut slots = DatagramSlots::new(4);
    let mut received = Received {
        remote: CLIENT,
        local: None,
        ecn: None,
        bytes: &bytes,
        stride: 1400,
        slots: &mut slots,
    };
    let datagrams: Vec<Bytes> = received.datagrams().map(BytesMut::freeze).collect();
    assert_eq!(
        datagrams.iter().map(Bytes::len).collect::<Vec<_>>(),
        [1400, 1400, 1400, 500]
    );
    assert_eq!(datagrams.concat(), bytes);
    let starts: Vec<*const u8> = datagrams.iter().map(|d| d.as_ptr()).collect();
    // One frame kept, the other datagrams done with.
    let frame = datagrams[1].slice(2..);
    drop(datagrams);
    let next: Vec<u8> = (0..4 * 1400).map(|i| (i % 251) as u8).collect();
    let mut received = Received {
        remote: CLIENT,
        local: None,
        ecn: None,
        bytes: &next,
        stride: 1400,
        slots: &mut slots,
    };
    let again: Vec<Bytes> = received.datagrams().map(BytesMut::freeze).collect();
    assert_eq!(again.concat(), next);
    for (i, d) in again.iter().enumerate() {
        if i == 1 {
            assert_ne!(d.as_ptr(), starts[1], "the kept frame's buffer was reused");
        } else {
            assert_eq!(d.as_ptr(), starts[i], "a free buffer was not reused");
        }
    }
    assert_eq!(&frame[..], &bytes[1402..2800]);
    // Its slot has a new buffer: the kept frame's is its own alone.
    assert!(
        frame.is_unique(),
        "a frame shares its buffer with the ring or another datagram"
    );
}

#[test]
fn a_gso_send_carries_as_many_packets_as_fit_in_64_kb() {
    assert_eq!(gso_segments(KERNEL_SEGMENTS, 1452), 44);
    assert_eq!(gso_segments(KERNEL_SEGMENTS, 1200), 54);
    assert_eq!(gso_segments(KERNEL_SEGMENTS, 9000), 7);
    assert_eq!(gso_segments(KERNEL_SEGMENTS, 1000), KERNEL_SEGMENTS);
    // A socket without GSO (or one quinn-udp turned it off on): one.
    assert_eq!(gso_segments(1, 1452), 1);
    assert_eq!(gso_segments(0, 0), 1);
    for mtu in [1200, 1452, 1500, 9000] {
        assert!(gso_segments(KERNEL_SEGMENTS, mtu) * usize::from(mtu) <= GSO_BYTES);
    }
}

/// What `gso_segments` allows, the kernel takes: a full send of every
/// MTU the overlay uses leaves a real socket and arrives whole, packet by
/// packet (the receiver reads without GRO).
#[tokio::test(flavor = "current_thread")]
async fn a_full_gso_send_leaves_the_socket_and_arrives_whole() {
    let receiver = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let sender = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    sender.set_nonblocking(true).unwrap();
    let io = Io::new(sender).unwrap();
    let max = io.udp.max_gso_segments();
    assert!(max > 1, "GSO is available on this kernel (Linux ≥ 4.18)");
    for mtu in [1200u16, 1452, 1500, 9000] {
        let segments = gso_segments(max, mtu);
        let contents: Vec<u8> = (0..segments * usize::from(mtu))
            .map(|i| (i / usize::from(mtu)) as u8)
            .collect();
        let t = quinn_proto::Transmit {
            destination: receiver.local_addr().unwrap(),
            ecn: None,
            size: contents.len(),
            segment_size: Some(usize::from(mtu)),
            src_ip: None,
        };
        io.send(&t, &contents).await;
        let mut buf = vec![0u8; 65_536];
        for i in 0..segments {
            let n = receiver.recv(&mut buf).unwrap_or_else(|e| {
                panic!("MTU {mtu}: packet {i} of {segments} did not arrive: {e}")
            });
            assert_eq!(n, usize::from(mtu), "MTU {mtu}: packet {i}");
            assert!(
                buf[..n].iter().all(|&b| b == i as u8),
                "MTU {mtu}: packet {i}"
            );
        }
    }
}

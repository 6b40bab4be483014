//! A relay session and a client session against each other, the way
//! quinn-proto tests its connections: two machines, the control stream as
//! in-memory byte queues (delivered in chunks of any size), closes carried
//! across, and a simulated clock that only moves when a test moves it.

use std::time::{Duration, Instant};

use lanparty_core::control::codec::encode;
use lanparty_core::control::{
    ControlMessage, DisconnectReason, Hello, PROTOCOL_VERSION, PeerId, PeerRole, PeerStats, Reject,
    RejectCode, Welcome,
};

use super::*;
use crate::net::close;

const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
const WELCOME_WITHIN: Duration = Duration::from_secs(5);

fn hello() -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        role: PeerRole::Client,
        room: "ROOM1".into(),
        mac: "02:00:00:00:00:51".parse().unwrap(),
        datagram_budget: 1414,
        credential: None,
        header_compression: true,
    }
}

fn welcome() -> Welcome {
    Welcome {
        peer_id: PeerId(7),
        room_id: 3,
        mtu: 1500,
        header_compression: true,
    }
}

/// What the relay's driver decides on a hello.
enum Decide {
    Welcome,
    Reject(RejectCode),
    /// Never answers (a decision stuck on a slow credential check).
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Side {
    Relay,
    Client,
}

/// The two machines, the stream between them and the clock.
struct Pair {
    now: Instant,
    relay: RelaySession,
    client: ClientSession,
    decide: Decide,
    /// Bytes of the control stream in flight, each way.
    to_relay: Vec<u8>,
    to_client: Vec<u8>,
    /// The relay finished its side of the stream (after `to_client`).
    relay_finished: bool,
    /// Delivered per step, each way.
    chunk: usize,
    /// Whether the client reads what the relay writes.
    client_reads: bool,
    /// Who closed the connection first, with what.
    closed: Option<(Side, u32, Vec<u8>)>,
    /// Events other than bytes and closes, in order.
    relay_events: Vec<RelayEvent>,
    client_events: Vec<ClientEvent>,
}

impl Pair {
    fn new(decide: Decide) -> Pair {
        let now = Instant::now();
        let mut pair = Pair {
            now,
            relay: RelaySession::new(
                now,
                RelayTimeouts {
                    hello: HELLO_TIMEOUT,
                    ..RelayTimeouts::default()
                },
                16 * 1024,
            ),
            client: ClientSession::new(
                hello(),
                "relay.test:4433".into(),
                now + WELCOME_WITHIN,
                WELCOME_WITHIN,
            ),
            decide,
            to_relay: Vec::new(),
            to_client: Vec::new(),
            relay_finished: false,
            chunk: usize::MAX,
            client_reads: true,
            closed: None,
            relay_events: Vec::new(),
            client_events: Vec::new(),
        };
        pair.drive();
        pair
    }

    /// Runs both machines until neither has anything left to do.
    fn drive(&mut self) {
        loop {
            let mut busy = false;
            while let Some(event) = self.relay.poll() {
                busy = true;
                match event {
                    RelayEvent::Control(bytes) => self.to_client.extend(bytes),
                    RelayEvent::FinishControl => self.relay_finished = true,
                    RelayEvent::Close { code, reason } => self.close(Side::Relay, code, reason),
                    RelayEvent::Hello(h) => {
                        assert_eq!(h, hello());
                        match self.decide {
                            Decide::Welcome => self.relay.welcome(self.now, welcome()),
                            Decide::Reject(code) => self.relay.reject(
                                self.now,
                                Reject {
                                    code,
                                    message: "no".into(),
                                },
                            ),
                            Decide::Never => {}
                        }
                        self.relay_events.push(RelayEvent::Hello(h));
                    }
                    other => self.relay_events.push(other),
                }
            }
            while let Some(event) = self.client.poll() {
                busy = true;
                match event {
                    ClientEvent::Control(bytes) => self.to_relay.extend(bytes),
                    ClientEvent::Close { code, reason } => self.close(Side::Client, code, reason),
                    other => self.client_events.push(other),
                }
            }
            if self.closed.is_none() {
                if !self.to_relay.is_empty() {
                    busy = true;
                    let n = self.chunk.min(self.to_relay.len());
                    let bytes: Vec<u8> = self.to_relay.drain(..n).collect();
                    self.relay.handle_control(self.now, &bytes);
                }
                if self.client_reads && !self.to_client.is_empty() {
                    busy = true;
                    let n = self.chunk.min(self.to_client.len());
                    let bytes: Vec<u8> = self.to_client.drain(..n).collect();
                    self.client.handle_control(self.now, &bytes);
                } else if self.client_reads && self.relay_finished {
                    self.relay_finished = false;
                    busy = true;
                    self.client.handle_control_finished(self.now);
                }
            }
            if !busy {
                return;
            }
        }
    }

    /// A close ends the connection for both: the other side learns it is
    /// lost, and bytes still in flight are gone.
    fn close(&mut self, by: Side, code: u32, reason: Vec<u8>) {
        if self.closed.is_some() {
            return;
        }
        let why = format!("closed by peer: {}", String::from_utf8_lossy(&reason));
        self.closed = Some((by.clone(), code, reason));
        match by {
            Side::Relay => self.client.connection_lost(&why),
            Side::Client => self.relay.connection_lost(&why),
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.relay.handle_timeout(self.now);
        self.client.handle_timeout(self.now);
        self.drive();
    }

    fn relay_ended(&self) -> Option<&str> {
        self.relay_events.iter().find_map(|e| match e {
            RelayEvent::Ended(why) => Some(why.as_str()),
            _ => None,
        })
    }

    fn client_ended(&self) -> Option<&ClientEnd> {
        self.client_events.iter().find_map(|e| match e {
            ClientEvent::Ended(end) => Some(end),
            _ => None,
        })
    }

    fn protocol_errors(&self) -> Vec<&'static str> {
        self.relay_events
            .iter()
            .filter_map(|e| match e {
                RelayEvent::ProtocolError { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn hello_and_welcome_in_any_chunks() {
    for chunk in [1, 3, 17, usize::MAX] {
        let mut pair = Pair::new(Decide::Welcome);
        pair.chunk = chunk;
        pair.drive();
        assert!(pair.relay.is_established(), "chunks of {chunk}");
        assert!(pair.client.is_established());
        assert_eq!(pair.client_events, vec![ClientEvent::Joined(welcome())]);
        assert_eq!(pair.relay_events, vec![RelayEvent::Hello(hello())]);
        assert_eq!(pair.relay.poll_timeout(), None, "no deadline once admitted");
        assert_eq!(pair.client.poll_timeout(), None);
        assert!(pair.relay.handle_datagram(pair.now));
        assert!(pair.closed.is_none());
    }
}

#[test]
fn a_final_reject_stops_the_client_and_the_relay_closes_when_it_leaves() {
    let pair = Pair::new(Decide::Reject(RejectCode::DuplicateMac));
    assert_eq!(
        pair.client_ended(),
        Some(&ClientEnd::Final(
            "the relay rejected us: no (duplicate_mac)".into()
        ))
    );
    assert_eq!(
        pair.closed,
        Some((Side::Client, close::NORMAL, b"rejected".to_vec()))
    );
    assert_eq!(pair.relay_ended(), Some("rejected: duplicate_mac"));
    assert!(pair.relay.is_ended() && pair.client.is_ended());
}

#[test]
fn a_retryable_reject_is_retried() {
    let pair = Pair::new(Decide::Reject(RejectCode::RelayFull));
    assert!(matches!(pair.client_ended(), Some(ClientEnd::Retry(t)) if t.contains("relay_full")));
}

#[test]
fn a_rejected_peer_that_never_reads_is_closed_after_the_linger() {
    let mut pair = Pair::new(Decide::Never);
    pair.client_reads = false;
    pair.decide = Decide::Reject(RejectCode::RoomFull);
    // The decision arrives later than the hello (a slow credential check).
    pair.advance(Duration::from_millis(300));
    pair.relay.reject(
        pair.now,
        Reject {
            code: RejectCode::RoomFull,
            message: "full".into(),
        },
    );
    pair.drive();
    assert_eq!(
        pair.relay.poll_timeout(),
        Some(pair.now + Duration::from_secs(2))
    );
    pair.advance(Duration::from_millis(1999));
    assert!(pair.closed.is_none());
    pair.advance(Duration::from_millis(1));
    assert_eq!(
        pair.closed,
        Some((Side::Relay, close::REJECTED, b"room_full".to_vec()))
    );
    assert_eq!(pair.relay_ended(), Some("rejected: room_full"));
}

#[test]
fn no_hello_in_time_is_a_protocol_error_at_the_deadline() {
    let now = Instant::now();
    let mut relay = RelaySession::new(now, RelayTimeouts::default(), 1024);
    assert_eq!(relay.poll_timeout(), Some(now + Duration::from_secs(5)));
    relay.handle_timeout(now + Duration::from_millis(4999));
    assert_eq!(relay.poll(), None);
    relay.handle_timeout(now + Duration::from_secs(5));
    assert_eq!(
        relay.poll(),
        Some(RelayEvent::ProtocolError {
            reason: "hello-timeout",
            detail: "no hello within 5s".into()
        })
    );
    assert_eq!(
        relay.poll(),
        Some(RelayEvent::Close {
            code: close::PROTOCOL_ERROR,
            reason: b"no hello within 5s".to_vec()
        })
    );
    assert!(matches!(relay.poll(), Some(RelayEvent::Ended(_))));
    assert!(relay.is_ended());
}

/// A relay alone, fed what a hostile or broken peer sends first.
fn relay_after(bytes: &[u8], finish: bool) -> Vec<&'static str> {
    let now = Instant::now();
    let mut relay = RelaySession::new(now, RelayTimeouts::default(), 1024);
    relay.handle_control(now, bytes);
    if finish {
        relay.handle_control_finished(now);
    }
    let mut reasons = Vec::new();
    let mut closed = false;
    while let Some(event) = relay.poll() {
        match event {
            RelayEvent::ProtocolError { reason, .. } => reasons.push(reason),
            RelayEvent::Close { code, .. } => {
                assert_eq!(code, close::PROTOCOL_ERROR);
                closed = true;
            }
            RelayEvent::Ended(_) => assert!(closed, "closed before it ended"),
            other => panic!("unexpected {other:?}"),
        }
    }
    reasons
}

#[test]
fn what_a_broken_peer_sends_first_is_named() {
    let stats = encode(&ControlMessage::StatsRequest);
    assert_eq!(relay_after(&stats, false), vec!["expected-hello"]);
    assert_eq!(
        relay_after(&100_000u32.to_be_bytes(), false),
        vec!["control-oversize"]
    );
    assert_eq!(
        relay_after(&[0, 0, 0, 2, b'{', b'}'], false),
        vec!["control-invalid-json"]
    );
    assert_eq!(relay_after(&[0, 0, 0, 0], false), vec!["control-empty"]);
    assert_eq!(
        relay_after(&[0, 0, 0, 9, b'{'], true),
        vec!["control-truncated"]
    );
    assert_eq!(relay_after(&[], true), vec!["control-closed"]);
    // After the first error nothing more is read: one count per peer.
    let mut two = 100_000u32.to_be_bytes().to_vec();
    two.extend(&stats);
    assert_eq!(relay_after(&two, true), vec!["control-oversize"]);
}

#[test]
fn a_datagram_before_the_welcome_is_a_protocol_error() {
    let mut pair = Pair::new(Decide::Never);
    assert!(!pair.relay.handle_datagram(pair.now));
    pair.drive();
    assert_eq!(pair.protocol_errors(), vec!["datagram-before-welcome"]);
    assert_eq!(
        pair.closed.as_ref().map(|c| c.1),
        Some(close::PROTOCOL_ERROR)
    );
    assert!(
        matches!(pair.client_ended(), Some(ClientEnd::Retry(t)) if t.starts_with("relay connection lost"))
    );
}

#[test]
fn statistics_both_ways() {
    let mut pair = Pair::new(Decide::Welcome);
    pair.relay.send(&ControlMessage::StatsRequest);
    pair.drive();
    assert_eq!(
        pair.client_events.last(),
        Some(&ClientEvent::StatsRequested)
    );
    pair.client
        .send(&ControlMessage::Stats(PeerStats::default()));
    pair.drive();
    assert_eq!(pair.relay_events.last(), Some(&RelayEvent::StatsAnswered));
    let joined = ControlMessage::PeerJoined {
        peer_id: PeerId(9),
        role: PeerRole::Gateway,
        mac: "00:1b:21:00:00:01".parse().unwrap(),
    };
    pair.relay.send(&joined);
    pair.client.send(&ControlMessage::StatsRequest);
    pair.drive();
    assert_eq!(
        pair.client_events.last(),
        Some(&ClientEvent::Notice(joined))
    );
    assert_eq!(pair.relay_events.last(), Some(&RelayEvent::StatsRequested));
    assert!(pair.closed.is_none());
}

#[test]
fn relay_shutdown_says_why_and_the_client_retries() {
    let mut pair = Pair::new(Decide::Welcome);
    pair.relay
        .leave(pair.now, Leave::Shutdown("maintenance".into()));
    pair.drive();
    assert_eq!(
        pair.client_ended(),
        Some(&ClientEnd::Retry(
            "the relay disconnected us (Shutdown): maintenance".into()
        ))
    );
    assert_eq!(
        pair.closed,
        Some((Side::Client, close::NORMAL, b"bye".to_vec()))
    );
    assert_eq!(pair.relay_ended(), Some("relay shutting down"));
}

#[test]
fn relay_shutdown_closes_after_the_grace_if_the_client_is_silent() {
    let mut pair = Pair::new(Decide::Welcome);
    pair.client_reads = false;
    pair.relay
        .leave(pair.now, Leave::Shutdown("maintenance".into()));
    pair.drive();
    assert!(
        !pair.relay.handle_datagram(pair.now),
        "no data while leaving"
    );
    pair.advance(GOODBYE_GRACE - Duration::from_millis(1));
    assert!(pair.closed.is_none());
    pair.advance(Duration::from_millis(1));
    assert_eq!(
        pair.closed,
        Some((
            Side::Relay,
            close::SHUTDOWN,
            b"relay shutting down".to_vec()
        ))
    );
    assert_eq!(pair.relay_ended(), Some("relay shutting down"));
    assert!(matches!(pair.client_ended(), Some(ClientEnd::Retry(_))));
}

#[test]
fn a_closed_room_stops_the_client_for_good() {
    let mut pair = Pair::new(Decide::Welcome);
    pair.relay
        .leave(pair.now, Leave::RoomClosed("ROOM1".into()));
    pair.drive();
    assert_eq!(
        pair.client_ended(),
        Some(&ClientEnd::Final(
            "the relay disconnected us (PolicyChanged): room ROOM1 was closed by the relay operator"
                .into()
        ))
    );
    assert_eq!(pair.relay_ended(), Some("room closed by its policy"));
}

#[test]
fn a_replaced_session_closes_at_once() {
    let mut pair = Pair::new(Decide::Welcome);
    pair.relay.leave(pair.now, Leave::Replaced);
    pair.drive();
    assert_eq!(
        pair.closed,
        Some((
            Side::Relay,
            close::NORMAL,
            b"replaced by a new session of the same player".to_vec()
        ))
    );
    assert!(
        matches!(pair.client_ended(), Some(ClientEnd::Retry(t)) if t.starts_with("lost the relay"))
    );
}

#[test]
fn client_shutdown_says_goodbye_and_the_relay_closes() {
    let mut pair = Pair::new(Decide::Welcome);
    pair.client.shutdown(pair.now, "node stopping");
    pair.drive();
    assert_eq!(
        pair.relay_ended(),
        Some("peer disconnected (Shutdown): node stopping")
    );
    assert_eq!(
        pair.closed,
        Some((Side::Relay, close::NORMAL, b"bye".to_vec()))
    );
    assert_eq!(pair.client_ended(), Some(&ClientEnd::Shutdown));
}

#[test]
fn client_shutdown_closes_after_the_grace_if_the_relay_is_silent() {
    let now = Instant::now();
    let mut client = ClientSession::new(hello(), "r".into(), now + WELCOME_WITHIN, WELCOME_WITHIN);
    client.handle_control(now, &encode(&ControlMessage::Welcome(welcome())));
    client.shutdown(now, "bye");
    let events: Vec<_> = std::iter::from_fn(|| client.poll()).collect();
    assert!(matches!(events.last(), Some(ClientEvent::Control(_))));
    assert_eq!(client.poll_timeout(), Some(now + GOODBYE_GRACE));
    client.handle_timeout(now + GOODBYE_GRACE);
    assert_eq!(
        client.poll(),
        Some(ClientEvent::Close {
            code: close::NORMAL,
            reason: b"bye".to_vec()
        })
    );
    assert_eq!(client.poll(), Some(ClientEvent::Ended(ClientEnd::Shutdown)));
}

#[test]
fn no_welcome_in_time_is_retried_at_the_deadline() {
    let mut pair = Pair::new(Decide::Never);
    pair.advance(WELCOME_WITHIN - Duration::from_millis(1));
    assert!(pair.client_ended().is_none());
    pair.advance(Duration::from_millis(1));
    assert_eq!(
        pair.client_ended(),
        Some(&ClientEnd::Retry(
            "the relay at relay.test:4433 took the connection but sent no welcome within 5s".into()
        ))
    );
    assert_eq!(pair.closed.as_ref().map(|c| c.1), Some(close::TIMEOUT));
    assert_eq!(
        pair.relay_ended(),
        Some("connection lost: closed by peer: no welcome")
    );
}

#[test]
fn messages_sent_while_the_hello_is_decided_wait_for_the_welcome() {
    let mut pair = Pair::new(Decide::Never);
    // A peer that does not wait for its welcome.
    pair.to_relay.extend(encode(&ControlMessage::StatsRequest));
    pair.drive();
    assert_eq!(pair.relay_events, vec![RelayEvent::Hello(hello())]);
    pair.relay.welcome(pair.now, welcome());
    pair.drive();
    assert_eq!(pair.relay_events.last(), Some(&RelayEvent::StatsRequested));
}

#[test]
fn a_second_hello_after_the_welcome_is_a_protocol_error() {
    let mut pair = Pair::new(Decide::Welcome);
    pair.to_relay
        .extend(encode(&ControlMessage::Hello(hello())));
    pair.drive();
    assert_eq!(pair.protocol_errors(), vec!["unexpected-control-message"]);
    assert_eq!(
        pair.relay_ended(),
        Some("protocol error: unexpected hello from a peer")
    );
}

#[test]
fn either_side_closing_its_stream_ends_the_session() {
    let mut pair = Pair::new(Decide::Welcome);
    pair.relay_finished = true;
    pair.drive();
    assert_eq!(
        pair.client_ended(),
        Some(&ClientEnd::Retry(
            "the relay closed the control stream".into()
        ))
    );
    let mut pair = Pair::new(Decide::Welcome);
    pair.relay.handle_control_finished(pair.now);
    pair.drive();
    assert_eq!(pair.protocol_errors(), vec!["control-closed"]);
}

#[test]
fn a_relay_that_answers_the_hello_with_something_else_is_retried() {
    let now = Instant::now();
    let mut client = ClientSession::new(hello(), "r".into(), now + WELCOME_WITHIN, WELCOME_WITHIN);
    client.handle_control(now, &encode(&ControlMessage::StatsRequest));
    let events: Vec<_> = std::iter::from_fn(|| client.poll()).collect();
    assert_eq!(
        events.last(),
        Some(&ClientEvent::Ended(ClientEnd::Retry(
            "the relay answered stats_request instead of welcome".into()
        )))
    );
    let mut client = ClientSession::new(hello(), "r".into(), now + WELCOME_WITHIN, WELCOME_WITHIN);
    client.handle_control(now, &encode(&ControlMessage::Welcome(welcome())));
    client.handle_control(
        now,
        &encode(&ControlMessage::Disconnect {
            reason: DisconnectReason::Kicked,
            message: "bye".into(),
        }),
    );
    let events: Vec<_> = std::iter::from_fn(|| client.poll()).collect();
    assert!(matches!(
        events.last(),
        Some(ClientEvent::Ended(ClientEnd::Final(_)))
    ));
}

#[test]
fn a_client_whose_datagrams_stop_probes_the_relay_once() {
    let now = Instant::now();
    let rtt = Duration::from_millis(1);
    let mut client = ClientSession::new(hello(), "r".into(), now + WELCOME_WITHIN, WELCOME_WITHIN);
    // Before the welcome nothing is probed: the handshake has its deadline.
    client.datagram_received(now, rtt);
    assert_eq!(client.poll_timeout(), Some(now + WELCOME_WITHIN));
    client.handle_control(now, &encode(&ControlMessage::Welcome(welcome())));
    let _: Vec<_> = std::iter::from_fn(|| client.poll()).collect();
    assert_eq!(client.poll_timeout(), None, "nothing received: no probe");

    // Datagrams arrive, then a later one moves the probe on.
    client.datagram_received(now, rtt);
    let later = now + Duration::from_millis(60);
    client.datagram_received(later, rtt);
    assert_eq!(client.poll_timeout(), Some(later + SILENCE_PROBE));
    client.handle_timeout(now + SILENCE_PROBE);
    assert_eq!(client.poll(), None, "not silent for long enough yet");

    // Silence: one probe, then nothing until datagrams arrive again.
    client.handle_timeout(later + SILENCE_PROBE);
    assert_eq!(client.poll(), Some(ClientEvent::Probe));
    assert_eq!(client.poll_timeout(), None);
    client.handle_timeout(later + 10 * SILENCE_PROBE);
    assert_eq!(client.poll(), None, "one probe per silence");

    // On a long path the silence is four round trips.
    let slow = Duration::from_millis(80);
    let at = later + 20 * SILENCE_PROBE;
    client.datagram_received(at, slow);
    assert_eq!(client.poll_timeout(), Some(at + 4 * slow));

    // A client that is leaving does not probe.
    client.shutdown(at, "bye");
    let _: Vec<_> = std::iter::from_fn(|| client.poll()).collect();
    client.handle_timeout(at + 4 * slow);
    assert!(
        std::iter::from_fn(|| client.poll()).all(|e| e != ClientEvent::Probe),
        "probed while leaving"
    );
}

//! A client's (or gateway's) side of one session with the relay: say
//! hello, wait for the welcome (by a deadline the driver gives: the
//! handshake and the welcome share one), then serve the relay's control
//! messages until a goodbye either way, a protocol error or the loss of the
//! connection. How the session ended decides what the node does next: try
//! again after the backoff, stop with an error a person must act on, or
//! stop because it was asked to.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use lanparty_core::control::{
    CodecError, ControlMessage, DisconnectReason, Hello, MAX_CONTROL_FRAME, Welcome,
};

use super::{ControlInput, ControlReader, GOODBYE_GRACE, encode};
use crate::net::close;
use crate::quic_loop::earliest;

/// How a client session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEnd {
    /// Try again after the reconnect backoff.
    Retry(String),
    /// Stop the node: a person has to change something (a final reject,
    /// a kick, a closed room).
    Final(String),
    /// The node is shutting down.
    Shutdown,
}

/// What the client session asks of its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Bytes to write on the control stream, in order.
    Control(Vec<u8>),
    /// Close the connection with this application code and reason.
    Close {
        /// `net::close` code.
        code: u32,
        /// The reason the relay sees.
        reason: Vec<u8>,
    },
    /// The relay admitted us.
    Joined(Welcome),
    /// News from the relay, for the log: `peer_joined`, `peer_left`,
    /// `stats`.
    Notice(ControlMessage),
    /// The relay asked for our statistics: answer with
    /// [`ClientSession::send`] of a `stats` message.
    StatsRequested,
    /// Datagrams stopped arriving ([`SILENCE_PROBE`]): send the relay one
    /// ack-eliciting packet (a QUIC PING). If this node's NAT mapping
    /// changed meanwhile, that packet shows the relay the new address and
    /// what the relay sends finds the node again; a node that only
    /// receives would otherwise be silent until its next keep-alive.
    Probe,
    /// The session is over (after its `Close`, if any).
    Ended(ClientEnd),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingWelcome,
    Established,
    Leaving,
    Ended,
}

/// One session with the relay, from the hello on.
#[derive(Debug)]
pub struct ClientSession {
    state: State,
    reader: ControlReader,
    inbox: VecDeque<Result<ControlMessage, CodecError>>,
    events: VecDeque<ClientEvent>,
    deadline: Option<Instant>,
    /// Names the relay in messages: `relay.example.org:4433 (203.0.113.10:4433)`.
    relay: String,
    /// The welcome's budget, for the message when it runs out.
    welcome_within: Duration,
    /// When to probe the relay if no datagram arrives before
    /// ([`ClientEvent::Probe`]).
    probe_at: Option<Instant>,
}

/// How long datagrams must have stopped before the client probes the
/// relay once ([`ClientEvent::Probe`]), at least; four smoothed RTTs when
/// that is longer. A game sends many packets a second, so a pause this long
/// costs one PING and its ACK, once per pause.
pub const SILENCE_PROBE: Duration = Duration::from_millis(100);

impl ClientSession {
    /// Says `hello` to the relay named `relay`; no welcome by
    /// `welcome_by` (`welcome_within` after the attempt started) ends the
    /// attempt.
    pub fn new(
        hello: Hello,
        relay: String,
        welcome_by: Instant,
        welcome_within: Duration,
    ) -> ClientSession {
        let mut events = VecDeque::new();
        events.push_back(ClientEvent::Control(encode(&ControlMessage::Hello(hello))));
        ClientSession {
            state: State::AwaitingWelcome,
            reader: ControlReader::new(MAX_CONTROL_FRAME, true),
            inbox: VecDeque::new(),
            events,
            deadline: Some(welcome_by),
            relay,
            welcome_within,
            probe_at: None,
        }
    }

    /// A datagram from the relay arrived at `now` on a path with this
    /// smoothed RTT: should datagrams stop, probe the relay once
    /// ([`SILENCE_PROBE`]).
    pub fn datagram_received(&mut self, now: Instant, rtt: Duration) {
        if self.state == State::Established {
            self.probe_at = Some(now + (4 * rtt).max(SILENCE_PROBE));
        }
    }

    /// The node is stopping: say goodbye (with `why`) and close after
    /// [`GOODBYE_GRACE`]; before the welcome, stop at once.
    pub fn shutdown(&mut self, now: Instant, why: &str) {
        match self.state {
            State::Established => {
                self.events
                    .push_back(ClientEvent::Control(encode(&ControlMessage::Disconnect {
                        reason: DisconnectReason::Shutdown,
                        message: why.into(),
                    })));
                self.state = State::Leaving;
                self.deadline = Some(now + GOODBYE_GRACE);
            }
            State::AwaitingWelcome => {
                self.close(close::NORMAL, b"bye");
                self.end(ClientEnd::Shutdown);
            }
            State::Leaving | State::Ended => {}
        }
    }

    /// A message for the relay (statistics). Dropped unless admitted.
    pub fn send(&mut self, message: &ControlMessage) {
        if self.state == State::Established {
            self.events.push_back(ClientEvent::Control(encode(message)));
        }
    }

    /// When to call [`ClientSession::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        earliest(self.deadline, self.probe_at)
    }

    /// Time passed: deadlines at or before `now` fire.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.probe_at.is_some_and(|at| at <= now) {
            self.probe_at = None;
            if self.state == State::Established {
                self.events.push_back(ClientEvent::Probe);
            }
        }
        if self.deadline.is_none_or(|d| d > now) {
            return;
        }
        self.deadline = None;
        match self.state {
            State::AwaitingWelcome => {
                let text = format!(
                    "the relay at {} took the connection but sent no welcome within {:?}",
                    self.relay, self.welcome_within
                );
                self.close(close::TIMEOUT, b"no welcome");
                self.end(ClientEnd::Retry(text));
            }
            State::Leaving => {
                self.close(close::NORMAL, b"bye");
                self.end(ClientEnd::Shutdown);
            }
            State::Established | State::Ended => {}
        }
    }

    /// The next thing to do, in order.
    pub fn poll(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// True once the relay has welcomed us and the session goes on.
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// True once the session has ended (its `Ended` event queued).
    pub fn is_ended(&self) -> bool {
        self.state == State::Ended
    }

    fn reading(&self) -> bool {
        matches!(self.state, State::AwaitingWelcome | State::Established)
    }

    fn process(&mut self) {
        while self.reading() {
            let Some(next) = self.inbox.pop_front() else {
                break;
            };
            let waiting = self.state == State::AwaitingWelcome;
            match next {
                Err(e) if waiting => {
                    self.close(close::PROTOCOL_ERROR, b"bad control message");
                    self.end(ClientEnd::Retry(format!("bad answer from the relay: {e}")));
                }
                Err(e) => {
                    self.close(close::PROTOCOL_ERROR, b"bad control message");
                    self.end(ClientEnd::Retry(format!(
                        "bad control message from the relay: {e}"
                    )));
                }
                Ok(ControlMessage::Welcome(welcome)) if waiting => {
                    self.state = State::Established;
                    self.deadline = None;
                    self.events.push_back(ClientEvent::Joined(welcome));
                }
                Ok(ControlMessage::Reject(reject)) if waiting => {
                    self.close(close::NORMAL, b"rejected");
                    let text = format!(
                        "the relay rejected us: {} ({})",
                        reject.message, reject.code
                    );
                    self.end(if reject.code.is_final() {
                        ClientEnd::Final(text)
                    } else {
                        ClientEnd::Retry(text)
                    });
                }
                Ok(other) if waiting => {
                    self.close(close::PROTOCOL_ERROR, b"expected welcome");
                    self.end(ClientEnd::Retry(format!(
                        "the relay answered {} instead of welcome",
                        other.kind()
                    )));
                }
                Ok(
                    notice @ (ControlMessage::PeerJoined { .. }
                    | ControlMessage::PeerLeft { .. }
                    | ControlMessage::Stats(_)),
                ) => self.events.push_back(ClientEvent::Notice(notice)),
                Ok(ControlMessage::StatsRequest) => {
                    self.events.push_back(ClientEvent::StatsRequested);
                }
                Ok(ControlMessage::Disconnect { reason, message }) => {
                    self.close(close::NORMAL, b"bye");
                    let text = format!("the relay disconnected us ({reason:?}): {message}");
                    self.end(match reason {
                        DisconnectReason::Kicked | DisconnectReason::PolicyChanged => {
                            ClientEnd::Final(text)
                        }
                        _ => ClientEnd::Retry(text),
                    });
                }
                Ok(other) => {
                    self.close(close::PROTOCOL_ERROR, b"unexpected control message");
                    self.end(ClientEnd::Retry(format!(
                        "the relay sent an unexpected {}",
                        other.kind()
                    )));
                }
            }
        }
    }

    fn close(&mut self, code: u32, reason: &[u8]) {
        self.events.push_back(ClientEvent::Close {
            code,
            reason: reason.to_vec(),
        });
    }

    fn end(&mut self, end: ClientEnd) {
        self.state = State::Ended;
        self.deadline = None;
        self.probe_at = None;
        self.inbox.clear();
        self.events.push_back(ClientEvent::Ended(end));
    }
}

impl ControlInput for ClientSession {
    /// Bytes the relay wrote on the control stream.
    fn handle_control(&mut self, _now: Instant, bytes: &[u8]) {
        if !self.reading() {
            return;
        }
        self.reader.feed(bytes, &mut self.inbox);
        self.process();
    }

    /// The relay finished (or reset) the control stream.
    fn handle_control_finished(&mut self, _now: Instant) {
        if !self.reading() {
            return;
        }
        if let Err(e) = self.reader.finish() {
            self.inbox.push_back(Err(e));
        }
        self.process();
        if self.reading() {
            self.end(ClientEnd::Retry(
                "the relay closed the control stream".into(),
            ));
        }
    }

    /// The connection is gone.
    fn connection_lost(&mut self, why: &str) {
        match self.state {
            State::AwaitingWelcome => {
                self.end(ClientEnd::Retry(format!("relay connection lost: {why}")))
            }
            State::Established => self.end(ClientEnd::Retry(format!("lost the relay: {why}"))),
            State::Leaving => self.end(ClientEnd::Shutdown),
            State::Ended => {}
        }
    }
}

//! The relay's side of one connection's control session: wait for the
//! hello (within `hello_timeout`, no datagrams before the welcome), hand it
//! to the driver to decide, then either welcome the peer and serve its
//! control messages or reject it (the reject is written, the stream
//! finished, and the connection closed once the peer closes or after
//! [`RelayTimeouts::reject_linger`]), and end the session with a goodbye,
//! a replacement or a protocol error.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use lanparty_core::control::{
    CodecError, ControlMessage, DisconnectReason, Hello, Reject, Welcome,
};

use super::{ControlInput, ControlReader, GOODBYE_GRACE, clip, encode};
use crate::net::close;

/// The relay session's deadlines.
#[derive(Debug, Clone, Copy)]
pub struct RelayTimeouts {
    /// From the connection to its hello.
    pub hello: Duration,
    /// How long a rejected peer has to read its reject and close.
    pub reject_linger: Duration,
}

impl Default for RelayTimeouts {
    fn default() -> RelayTimeouts {
        RelayTimeouts {
            hello: Duration::from_secs(5),
            reject_linger: Duration::from_secs(2),
        }
    }
}

/// Why the relay ends an admitted peer's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leave {
    /// The relay is stopping (the reason is told to the peer).
    Shutdown(String),
    /// The room's policy was deleted on a closed relay.
    RoomClosed(String),
    /// A new session of the same player took the seat.
    Replaced,
    /// The room went away under the session.
    RoomGone,
}

/// What the relay session asks of its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEvent {
    /// Bytes to write on the control stream, in order.
    Control(Vec<u8>),
    /// Finish the control stream: nothing more will be written.
    FinishControl,
    /// Close the connection with this application code and reason.
    Close {
        /// `net::close` code.
        code: u32,
        /// The reason the peer sees.
        reason: Vec<u8>,
    },
    /// The peer said hello: decide, then call [`RelaySession::welcome`] or
    /// [`RelaySession::reject`].
    Hello(Hello),
    /// The peer asked for its statistics: answer with
    /// [`RelaySession::send`] of a `stats` message.
    StatsRequested,
    /// The peer answered a statistics request (it is alive).
    StatsAnswered,
    /// The peer broke the protocol: count it under `reason` (a `Close`
    /// with `detail` follows).
    ProtocolError {
        /// A stable name for counters.
        reason: &'static str,
        /// What happened, for the log and the close reason.
        detail: String,
    },
    /// The session is over (after its `Close`, if any); why, for the log.
    /// A rejected session ends with `rejected: CODE`.
    Ended(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingHello,
    Deciding,
    Rejecting,
    Established,
    /// A goodbye was sent; the connection closes with this code and
    /// reason when the grace ends.
    Leaving {
        code: u32,
        reason: &'static str,
        why: &'static str,
    },
    Ended,
}

/// One connection's control session at the relay.
#[derive(Debug)]
pub struct RelaySession {
    state: State,
    reader: ControlReader,
    /// Decoded messages not yet handled (those that arrive while the
    /// hello is being decided wait for the welcome).
    inbox: VecDeque<Result<ControlMessage, CodecError>>,
    /// The peer finished its control stream after `inbox`.
    finished: bool,
    events: VecDeque<RelayEvent>,
    deadline: Option<Instant>,
    timeouts: RelayTimeouts,
    /// The code a rejected peer was sent (the close reason).
    rejected: Option<&'static str>,
}

impl RelaySession {
    /// A connection past its QUIC handshake, at `now`; control frames over
    /// `max_control_frame` bytes are refused.
    pub fn new(now: Instant, timeouts: RelayTimeouts, max_control_frame: usize) -> RelaySession {
        RelaySession {
            state: State::AwaitingHello,
            // The hello is validated by the driver's decision, to answer
            // with a precise reject code.
            reader: ControlReader::new(max_control_frame, false),
            inbox: VecDeque::new(),
            finished: false,
            events: VecDeque::new(),
            deadline: Some(now + timeouts.hello),
            timeouts,
            rejected: None,
        }
    }

    /// A datagram arrived. True: it belongs to the admitted peer's data
    /// path; false: drop it (before the welcome it is a protocol error).
    pub fn handle_datagram(&mut self, _now: Instant) -> bool {
        match self.state {
            State::Established => true,
            State::AwaitingHello | State::Deciding => {
                self.protocol_error(
                    "datagram-before-welcome",
                    "sent a datagram before its welcome".into(),
                );
                false
            }
            _ => false,
        }
    }

    /// The decision on the hello: admitted, with this welcome.
    pub fn welcome(&mut self, _now: Instant, welcome: Welcome) {
        if self.state != State::Deciding {
            return;
        }
        self.events
            .push_back(RelayEvent::Control(encode(&ControlMessage::Welcome(
                welcome,
            ))));
        self.state = State::Established;
        self.reader.validate = true;
        self.deadline = None;
        self.process();
    }

    /// The decision on the hello (or the relay's state before it): refused.
    pub fn reject(&mut self, now: Instant, reject: Reject) {
        if matches!(self.state, State::Established | State::Ended) {
            return;
        }
        self.rejected = Some(reject.code.as_str());
        self.events
            .push_back(RelayEvent::Control(encode(&ControlMessage::Reject(reject))));
        self.events.push_back(RelayEvent::FinishControl);
        self.state = State::Rejecting;
        self.deadline = Some(now + self.timeouts.reject_linger);
    }

    /// A message for the admitted peer (room events, statistics). Dropped
    /// before the welcome and after the goodbye.
    pub fn send(&mut self, message: &ControlMessage) {
        if self.state == State::Established {
            self.events.push_back(RelayEvent::Control(encode(message)));
        }
    }

    /// Ends the session on the relay's side. An admitted peer is told
    /// why first (shutdown, room closed) and the connection closes after
    /// [`GOODBYE_GRACE`]; otherwise it closes at once.
    pub fn leave(&mut self, now: Instant, leave: Leave) {
        if matches!(self.state, State::Ended | State::Leaving { .. }) {
            return;
        }
        let (goodbye, code, reason, why) = match leave {
            Leave::Shutdown(why) => (
                Some((DisconnectReason::Shutdown, clip(&why, 200))),
                close::SHUTDOWN,
                "relay shutting down",
                "relay shutting down",
            ),
            Leave::RoomClosed(room) => (
                Some((
                    DisconnectReason::PolicyChanged,
                    format!("room {room} was closed by the relay operator"),
                )),
                close::NORMAL,
                "room closed",
                "room closed by its policy",
            ),
            Leave::Replaced => (
                None,
                close::NORMAL,
                "replaced by a new session of the same player",
                "replaced: the same player joined again and this session did not answer",
            ),
            Leave::RoomGone => (None, close::NORMAL, "room closed", "room closed"),
        };
        match goodbye {
            Some((reason_code, message)) if self.state == State::Established => {
                self.events
                    .push_back(RelayEvent::Control(encode(&ControlMessage::Disconnect {
                        reason: reason_code,
                        message,
                    })));
                self.state = State::Leaving { code, reason, why };
                self.deadline = Some(now + GOODBYE_GRACE);
            }
            _ => {
                self.close(code, reason.as_bytes());
                self.end(why.into());
            }
        }
    }

    /// When to call [`RelaySession::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time passed: deadlines at or before `now` fire.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_none_or(|d| d > now) {
            return;
        }
        self.deadline = None;
        match self.state {
            State::AwaitingHello => self.protocol_error(
                "hello-timeout",
                format!("no hello within {:?}", self.timeouts.hello),
            ),
            State::Rejecting => self.close_rejected(),
            State::Leaving { code, reason, why } => {
                self.close(code, reason.as_bytes());
                self.end(why.into());
            }
            _ => {}
        }
    }

    /// The next thing to do, in order.
    pub fn poll(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }

    /// True once the session has ended (its `Ended` event queued).
    pub fn is_ended(&self) -> bool {
        self.state == State::Ended
    }

    /// True while the peer is admitted and its datagrams are data.
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    fn process(&mut self) {
        while matches!(self.state, State::AwaitingHello | State::Established) {
            let Some(next) = self.inbox.pop_front() else {
                break;
            };
            match (self.state, next) {
                (_, Err(e)) => self.protocol_error(e.reason(), e.to_string()),
                (State::AwaitingHello, Ok(ControlMessage::Hello(hello))) => {
                    self.state = State::Deciding;
                    self.deadline = None;
                    self.events.push_back(RelayEvent::Hello(hello));
                }
                (State::AwaitingHello, Ok(other)) => self.protocol_error(
                    "expected-hello",
                    format!("expected hello, got {}", other.kind()),
                ),
                (_, Ok(ControlMessage::StatsRequest)) => {
                    self.events.push_back(RelayEvent::StatsRequested);
                }
                (_, Ok(ControlMessage::Stats(_))) => {
                    self.events.push_back(RelayEvent::StatsAnswered);
                }
                (_, Ok(ControlMessage::Disconnect { reason, message })) => {
                    self.close(close::NORMAL, b"bye");
                    self.end(format!(
                        "peer disconnected ({reason:?}): {}",
                        clip(&message, 200)
                    ));
                }
                (_, Ok(other)) => {
                    let kind = other.kind();
                    self.protocol_error(
                        "unexpected-control-message",
                        format!("unexpected {kind} from a peer"),
                    );
                }
            }
        }
        if self.finished
            && self.inbox.is_empty()
            && matches!(self.state, State::AwaitingHello | State::Established)
        {
            let detail = if self.state == State::AwaitingHello {
                "control stream closed before hello"
            } else {
                "closed its control stream"
            };
            self.protocol_error("control-closed", detail.into());
        }
    }

    fn protocol_error(&mut self, reason: &'static str, detail: String) {
        let why = format!("protocol error: {detail}");
        self.events.push_back(RelayEvent::ProtocolError {
            reason,
            detail: detail.clone(),
        });
        self.close(close::PROTOCOL_ERROR, detail.as_bytes());
        self.end(why);
    }

    fn close_rejected(&mut self) {
        let code = self.rejected.unwrap_or("rejected");
        self.close(close::REJECTED, code.as_bytes());
        self.end(format!("rejected: {code}"));
    }

    fn close(&mut self, code: u32, reason: &[u8]) {
        self.events.push_back(RelayEvent::Close {
            code,
            reason: reason.to_vec(),
        });
    }

    fn end(&mut self, why: String) {
        self.state = State::Ended;
        self.deadline = None;
        self.inbox.clear();
        self.events.push_back(RelayEvent::Ended(why));
    }
}

impl ControlInput for RelaySession {
    /// Bytes the peer wrote on its control stream.
    fn handle_control(&mut self, _now: Instant, bytes: &[u8]) {
        if self.finished || self.state == State::Ended {
            return;
        }
        self.reader.feed(bytes, &mut self.inbox);
        self.process();
    }

    /// The peer finished (or reset) its control stream.
    fn handle_control_finished(&mut self, _now: Instant) {
        if self.finished || self.state == State::Ended {
            return;
        }
        if let Err(e) = self.reader.finish() {
            self.inbox.push_back(Err(e));
        }
        self.finished = true;
        self.process();
    }

    /// The connection is gone (closed by the peer, timed out, reset).
    fn connection_lost(&mut self, why: &str) {
        match self.state {
            State::Ended => {}
            State::Rejecting => self.close_rejected(),
            State::Leaving { why, .. } => self.end(why.into()),
            _ => self.end(format!("connection lost: {why}")),
        }
    }
}

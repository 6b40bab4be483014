//! The control sessions with no I/O and no clock: what a relay and a
//! client say to each other on a connection's control stream, in which
//! order, within which deadlines, and what each side does about every
//! answer, refusal, violation and goodbye.
//!
//! Both machines work like `quinn_proto`'s connection: the driver hands in
//! what happened (control-stream bytes as they arrive, the stream's end, a
//! datagram, a lost connection, the time) with `now`, asks
//! [`RelaySession::poll_timeout`] / [`ClientSession::poll_timeout`] when to
//! call back, and carries out the events it polls (bytes to write, a close
//! with its code, a hello to decide on, the session's end with its reason).
//! They hold no sockets, tasks or timers, so `tests.rs` runs a relay and a
//! client against each other over in-memory byte queues on a simulated
//! clock; `server::session` and `client` drive them over quinn.
//!
//! The reconnect policy between sessions is the client's
//! (`client::reconnect`), equally sans-IO.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use lanparty_core::control::codec::{Decoder, decode_body, decode_body_unvalidated, encode};
use lanparty_core::control::{CodecError, ControlMessage};

mod client;
mod relay;
#[cfg(test)]
mod tests;

pub use client::{ClientEnd, ClientEvent, ClientSession, SILENCE_PROBE};
pub use relay::{Leave, RelayEvent, RelaySession, RelayTimeouts};

/// What both sessions take from the control stream, so that one driver
/// helper ([`crate::quic_loop::ControlStream::read`]) feeds either.
pub trait ControlInput {
    /// Bytes the other side wrote on the control stream.
    fn handle_control(&mut self, now: Instant, bytes: &[u8]);
    /// The other side finished (or reset) the control stream.
    fn handle_control_finished(&mut self, now: Instant);
    /// The connection is gone.
    fn connection_lost(&mut self, why: &str);
}

/// How long a side that says goodbye (a `disconnect` message) gives it to
/// arrive before it closes the connection.
pub const GOODBYE_GRACE: Duration = Duration::from_millis(100);

/// The control stream's incoming side: the framing decoder, whether
/// messages are validated yet, and whether the stream is done (after an
/// error nothing more is read).
#[derive(Debug)]
struct ControlReader {
    decoder: Decoder,
    validate: bool,
    done: bool,
}

impl ControlReader {
    fn new(max_frame: usize, validate: bool) -> ControlReader {
        ControlReader {
            decoder: Decoder::new(max_frame),
            validate,
            done: false,
        }
    }

    /// Decodes what `bytes` completes into `out`; stops at the first error.
    fn feed(&mut self, bytes: &[u8], out: &mut VecDeque<Result<ControlMessage, CodecError>>) {
        let mut at = 0;
        while at < bytes.len() && !self.done {
            let (took, body) = self.decoder.push(&bytes[at..]);
            at += took;
            let message = match body {
                Ok(None) => continue,
                Ok(Some(body)) if self.validate => decode_body(&body),
                Ok(Some(body)) => decode_body_unvalidated(&body),
                Err(e) => Err(e),
            };
            self.done = message.is_err();
            out.push_back(message);
        }
    }

    /// The peer finished the stream: an error if it cut a frame.
    fn finish(&mut self) -> Result<(), CodecError> {
        self.done = true;
        self.decoder.finish()
    }
}

/// At most `max` characters of a peer's text, for logs and messages.
fn clip(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

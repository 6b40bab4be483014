//! The control stream over quinn, for the drivers of the sans-IO sessions
//! ([`crate::session`]): a writer task that writes what a session emits in
//! order (so the driver never waits on a peer that does not read, and no
//! message is half-written by a cancelled future), a cancel-safe read of
//! whatever bytes have arrived, and the wait for a session's deadline.

use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::session::ControlInput;

/// Encoded messages waiting for the writer, at most (beyond, the peer is
/// not reading and further messages are dropped).
const QUEUED_WRITES: usize = 64;

/// The writing side of a control stream, held by a session's driver.
#[derive(Debug, Default)]
pub struct ControlWriter {
    tx: Option<mpsc::Sender<Vec<u8>>>,
}

impl ControlWriter {
    /// Starts the writer task for `send`.
    pub fn spawn(mut send: quinn::SendStream) -> ControlWriter {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUED_WRITES);
        tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if let Err(e) = send.write_all(&bytes).await {
                    tracing::debug!("control stream write failed: {e}");
                    return;
                }
            }
            let _ = send.finish();
        });
        ControlWriter { tx: Some(tx) }
    }

    /// Queues bytes; false if they were dropped (the peer is not reading,
    /// or the stream is finished or gone).
    pub fn write(&self, bytes: Vec<u8>) -> bool {
        self.tx
            .as_ref()
            .is_some_and(|tx| tx.try_send(bytes).is_ok())
    }

    /// Finishes the stream once what is queued is written.
    pub fn finish(&mut self) {
        self.tx = None;
    }
}

/// The next bytes of `recv` (`Ok(None)`: the peer finished it); never
/// resolves without a stream. Cancel-safe (quinn's `read_chunk` is).
pub async fn read_chunk(
    recv: &mut Option<quinn::RecvStream>,
    max: usize,
) -> Result<Option<Bytes>, quinn::ReadError> {
    match recv {
        Some(r) => Ok(r.read_chunk(max, true).await?.map(|c| c.bytes)),
        None => std::future::pending().await,
    }
}

/// Hands what [`read_chunk`] gave to `session`: bytes, the stream's end or
/// the connection's loss (after either, the stream is dropped).
pub fn deliver(
    session: &mut impl ControlInput,
    now: Instant,
    recv: &mut Option<quinn::RecvStream>,
    read: Result<Option<Bytes>, quinn::ReadError>,
) {
    match read {
        Ok(Some(bytes)) => session.handle_control(now, &bytes),
        Ok(None) => {
            *recv = None;
            session.handle_control_finished(now);
        }
        Err(e) => {
            *recv = None;
            // The connection's own error says why ("closed by peer: bye",
            // "timed out"); the stream's only says that it was lost.
            let why = match e {
                quinn::ReadError::ConnectionLost(lost) => lost.to_string(),
                other => other.to_string(),
            };
            session.connection_lost(&why);
        }
    }
}

/// Sleeps until a session's `deadline` ([`crate::session::RelaySession::poll_timeout`],
/// [`crate::session::ClientSession::poll_timeout`]); never without one.
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

//! The control stream after the hello: one task reads messages, one writes
//! them, so that the session loop never waits on a peer that does not read
//! and never loses half a message to cancellation.

use lanparty_core::control::{CodecError, ControlMessage, read_message, write_message};
use tokio::sync::mpsc;

/// Messages the peer sent, or why reading stopped. `Ok(None)`: the peer
/// finished the stream.
pub type Incoming = mpsc::Receiver<Result<Option<ControlMessage>, CodecError>>;

/// Starts the reader and writer tasks. Messages queued on the sender side
/// of `outgoing` are written in order; the stream is finished when every
/// sender is dropped.
pub fn spawn(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    max_frame: usize,
    mut outgoing: mpsc::Receiver<ControlMessage>,
) -> Incoming {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let result = read_message(&mut recv, max_frame).await;
            let stop = !matches!(result, Ok(Some(_)));
            if tx.send(result).await.is_err() || stop {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(message) = outgoing.recv().await {
            if let Err(e) = write_message(&mut send, &message).await {
                tracing::debug!("control stream write failed: {e}");
                return;
            }
        }
        let _ = send.finish();
    });
    rx
}

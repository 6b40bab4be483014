//! A receive buffer that hands out each frame as a `Bytes` slice of one
//! large allocation, so that receiving does not allocate per frame: a new
//! chunk is allocated only when the current one is used up (every ~180
//! frames of 1400 bytes with the default chunk size); and the rule every
//! device port follows between read batches ([`give_way`]).

use bytes::{Bytes, BytesMut};

/// Ends one batch of reads from a device: if frames are still waiting
/// (`drained` is false), lets the other tasks of this thread run first —
/// the QUIC connection reading its ACKs, the sender's pump — and only then
/// the next batch. A device that stays readable never makes its task wait,
/// so without this a flood was read until tokio's task budget ran out,
/// thousands of frames, while the connection's ACKs waited and its
/// congestion controller took the wait for a queue on the path and shrank
/// the window (measured, 64-byte UDP flood through TAP and the relay:
/// 7k–46k frames/s delivered before, 74k–102k after; UDP-1200 107–243
/// before, 336–389 Mbit/s after).
pub async fn give_way(drained: bool) {
    if !drained {
        tokio::task::yield_now().await;
    }
}

/// The default chunk size.
pub const CHUNK: usize = 256 * 1024;

/// Reusable receive space.
#[derive(Debug)]
pub struct RxBuffer {
    buf: BytesMut,
    max_frame: usize,
    chunk: usize,
}

impl RxBuffer {
    /// Room for frames of up to `max_frame` bytes, in chunks of `chunk`.
    pub fn new(max_frame: usize, chunk: usize) -> RxBuffer {
        let chunk = chunk.max(max_frame * 4);
        RxBuffer {
            buf: BytesMut::zeroed(chunk),
            max_frame,
            chunk,
        }
    }

    /// Space for one frame: `max_frame` bytes.
    pub fn space(&mut self) -> &mut [u8] {
        if self.buf.len() < self.max_frame {
            self.buf = BytesMut::zeroed(self.chunk);
        }
        &mut self.buf[..self.max_frame]
    }

    /// Takes the first `n` bytes of the space just filled as a frame.
    pub fn take(&mut self, n: usize) -> Bytes {
        self.buf.split_to(n.min(self.max_frame)).freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_batch_with_more_waiting_lets_the_other_tasks_run_first() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let ran = Arc::new(AtomicUsize::new(0));
        let other = ran.clone();
        tokio::spawn(async move {
            other.fetch_add(1, Ordering::SeqCst);
        });
        give_way(true).await;
        assert_eq!(ran.load(Ordering::SeqCst), 0, "drained: no detour");
        give_way(false).await;
        assert_eq!(
            ran.load(Ordering::SeqCst),
            1,
            "more waiting: the other task ran before the next batch"
        );
    }

    #[test]
    fn frames_share_chunks() {
        let mut rx = RxBuffer::new(100, 1000);
        rx.space()[..3].copy_from_slice(b"abc");
        let a = rx.take(3);
        rx.space()[..2].copy_from_slice(b"de");
        let b = rx.take(2);
        assert_eq!((&a[..], &b[..]), (&b"abc"[..], &b"de"[..]));
        assert_eq!(
            a.as_ptr() as usize + 3,
            b.as_ptr() as usize,
            "same allocation"
        );
        for _ in 0..20 {
            let space = rx.space();
            assert_eq!(space.len(), 100);
            let _ = rx.take(100);
        }
    }
}

//! Bytes written one piece after another into shared chunks, each piece
//! handed out as a `Bytes` slice of its chunk: a new chunk is allocated
//! once per ~45 full-size frames, not per frame, and never zeroed. The
//! overlay encoder's datagrams, the rebuilt frames of header compression
//! and the segments a TAP adapter cuts from a super-packet are written so.

use bytes::{Bytes, BytesMut};

/// Shared chunks written piece by piece.
///
/// A piece keeps its whole chunk alive: pieces that may wait long in a
/// queue while the others are gone (frames a peer sent, on a relay) are
/// written into small chunks ([`Chunks::small`]), so that a queue's count
/// of frame bytes stays close to the memory it holds.
#[derive(Debug)]
pub struct Chunks {
    buf: BytesMut,
    chunk: usize,
}

/// Size of a chunk.
const CHUNK: usize = 64 * 1024;
/// Size of a small chunk: two full-size frames.
pub const SMALL_CHUNK: usize = 4 * 1024;

impl Default for Chunks {
    fn default() -> Chunks {
        Chunks::of(CHUNK)
    }
}

impl Chunks {
    /// Chunks of [`SMALL_CHUNK`] bytes (a piece larger than that gets a
    /// chunk of its own size).
    pub fn small() -> Chunks {
        Chunks::of(SMALL_CHUNK)
    }

    /// Chunks of `chunk` bytes, none allocated yet.
    fn of(chunk: usize) -> Chunks {
        Chunks {
            buf: BytesMut::new(),
            chunk,
        }
    }

    /// The current chunk, with room for at least `need` more bytes (a new
    /// chunk when this one is used up).
    pub fn room(&mut self, need: usize) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < need {
            self.buf = BytesMut::with_capacity(self.chunk.max(need));
        }
        &mut self.buf
    }

    /// What was written since the last `take`, as one piece.
    pub fn take(&mut self) -> Bytes {
        self.buf.split().freeze()
    }

    /// A copy of `bytes` as one piece.
    pub fn copy(&mut self, bytes: &[u8]) -> Bytes {
        self.room(bytes.len()).extend_from_slice(bytes);
        self.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_share_a_chunk_until_it_is_used_up() {
        let mut c = Chunks::default();
        let a = c.copy(b"abc");
        let b = c.copy(b"de");
        assert_eq!((&a[..], &b[..]), (&b"abc"[..], &b"de"[..]));
        assert_eq!(a.as_ptr() as usize + 3, b.as_ptr() as usize);
        let big = c.copy(&vec![1u8; CHUNK]);
        assert_eq!(big.len(), CHUNK);
        assert_ne!(big.as_ptr() as usize, b.as_ptr() as usize + 2);
    }

    #[test]
    fn a_small_chunk_holds_two_full_size_frames() {
        let mut c = Chunks::small();
        let frames: Vec<Bytes> = (0..3).map(|_| c.copy(&[7u8; 1514])).collect();
        assert_eq!(
            frames[0].as_ptr() as usize + 1514,
            frames[1].as_ptr() as usize
        );
        // The third starts a new chunk; the first two are then the only
        // holders of theirs.
        assert_ne!(
            frames[1].as_ptr() as usize + 1514,
            frames[2].as_ptr() as usize
        );
        let first = frames[0].clone();
        drop(frames);
        assert!(first.is_unique());
    }
}

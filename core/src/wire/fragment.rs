//! Overlay fragmentation, sans-IO: a frame larger than one QUIC datagram
//! travels as up to [`MAX_FRAGMENTS`] fragment datagrams, and the receiver
//! puts it back together before anything else sees it.
//!
//! A fragment is an overlay datagram with context [`CONTEXT_FRAGMENT`]:
//!
//! ```text
//! 0        1          2                     6       7       8            10
//! +--------+----------+---------------------+-------+-------+------------+----------
//! | version| context 1| frame id (u32, BE)  | index | count | total (u16)| payload …
//! +--------+----------+---------------------+-------+-------+------------+----------
//! ```
//!
//! - `frame id` numbers the sender's fragmented frames (per connection,
//!   wrapping); `index` is `0..count`, `count` is `2..=MAX_FRAGMENTS`,
//!   `total` the whole frame's length;
//! - every fragment but the last carries the same number of bytes, the
//!   last the rest (1 up to that number): so each fragment's place in the
//!   frame follows from its index, and a receiver checks every fragment
//!   against the others (any disagreement drops the frame: `inconsistent`).
//!
//! [`plan`] splits evenly into as few fragments as the budget allows.
//! [`Reassembler`] keeps a bounded number of partial frames per peer (frames,
//! bytes, age) and optionally draws on a budget shared by a whole relay
//! ([`ReassemblyBudget`]); fragments may interleave and arrive out of order;
//! duplicates, timeouts, overflows and malformed or inconsistent fragments
//! are dropped and counted by reason.
//!
//! (About 430 lines of code; the file is longer for the boundary tests
//! kept beside the private reassembly state they inspect.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::overlay::{CONTEXT_FRAGMENT, ETHERNET_HEADER_LEN, OVERLAY_VERSION};
use crate::time::Timestamp;

/// Bytes of overlay header in front of a fragment's payload.
pub const FRAGMENT_HEADER_LEN: usize = 10;
/// The most fragments one frame may be split into.
pub const MAX_FRAGMENTS: usize = 16;

/// A fragment's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentHeader {
    /// The sender's number for the frame.
    pub frame_id: u32,
    /// This fragment's place, `0..count`.
    pub index: u8,
    /// Fragments of the frame.
    pub count: u8,
    /// The whole frame's length in bytes.
    pub total: u16,
}

impl FragmentHeader {
    /// The 10 header bytes (overlay version and context included).
    pub fn encode(&self) -> [u8; FRAGMENT_HEADER_LEN] {
        let id = self.frame_id.to_be_bytes();
        let total = self.total.to_be_bytes();
        [
            OVERLAY_VERSION,
            CONTEXT_FRAGMENT as u8,
            id[0],
            id[1],
            id[2],
            id[3],
            self.index,
            self.count,
            total[0],
            total[1],
        ]
    }

    /// Parses the fragment sub-header (what follows the overlay version and
    /// context): the header and the payload.
    pub fn decode(rest: &[u8]) -> Option<(FragmentHeader, &[u8])> {
        let (head, payload) = rest.split_at_checked(FRAGMENT_HEADER_LEN - 2)?;
        let header = FragmentHeader {
            frame_id: u32::from_be_bytes([head[0], head[1], head[2], head[3]]),
            index: head[4],
            count: head[5],
            total: u16::from_be_bytes([head[6], head[7]]),
        };
        Some((header, payload))
    }
}

/// How a frame of `len` bytes is split for datagrams of `budget` bytes:
/// `(count, size)` — `count` fragments of `size` bytes, the last one the
/// rest. `None` when it would take more than [`MAX_FRAGMENTS`] (or the
/// budget holds no payload at all); `Some((1, len))` when it fits whole
/// (behind the overlay's Ethernet header).
pub fn plan(len: usize, budget: usize) -> Option<(usize, usize)> {
    if len + ETHERNET_HEADER_LEN <= budget {
        return Some((1, len));
    }
    let room = budget.checked_sub(FRAGMENT_HEADER_LEN).filter(|r| *r > 0)?;
    let count = len.div_ceil(room);
    if count > MAX_FRAGMENTS || len > usize::from(u16::MAX) {
        return None;
    }
    // Even split: every fragment but the last the same size.
    Some((count, len.div_ceil(count)))
}

/// The fragments of `frame` for a [`plan`] of `(count, size)`: each header
/// and its slice of the frame.
pub fn split(
    frame: &[u8],
    count: usize,
    size: usize,
    frame_id: u32,
) -> impl Iterator<Item = (FragmentHeader, &[u8])> {
    let total = u16::try_from(frame.len()).unwrap_or(u16::MAX);
    frame
        .chunks(size.max(1))
        .enumerate()
        .map(move |(index, payload)| {
            (
                FragmentHeader {
                    frame_id,
                    index: index as u8,
                    count: count as u8,
                    total,
                },
                payload,
            )
        })
}

/// Why a fragment (and the frame it belongs to) was dropped.
pub mod reason {
    /// A partial frame was not completed within the timeout.
    pub const TIMEOUT: &str = "fragment-timeout";
    /// No room for another partial frame (this peer's or the relay's
    /// bound): the oldest of the peer's partial frames, or the new one, goes.
    pub const OVERFLOW: &str = "fragment-overflow";
    /// A header no sender writes (count < 2 or above the maximum, index
    /// out of range, a frame longer than allowed, a payload size the split
    /// rule forbids).
    pub const MALFORMED: &str = "fragment-malformed";
    /// A fragment that disagrees with earlier fragments of its frame.
    pub const INCONSISTENT: &str = "fragment-inconsistent";
    /// A fragment received twice.
    pub const DUPLICATE: &str = "fragment-duplicate";
}

/// Bounds of one peer's reassembly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Partial frames at once.
    pub frames: usize,
    /// Bytes of partial frames at once.
    pub bytes: usize,
    /// How long a partial frame waits for its other fragments.
    pub timeout: Duration,
    /// The longest frame accepted (the room MTU plus Ethernet framing).
    pub max_frame: usize,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        ReassemblyLimits {
            frames: 32,
            bytes: 256 * 1024,
            timeout: Duration::from_millis(300),
            max_frame: super::mtu::max_frame_len(super::mtu::MAX_MTU),
        }
    }
}

/// Bytes of partial frames a whole relay may hold, shared by every peer's
/// [`Reassembler`].
#[derive(Debug)]
pub struct ReassemblyBudget {
    left: AtomicUsize,
}

impl ReassemblyBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Arc<ReassemblyBudget> {
        Arc::new(ReassemblyBudget {
            left: AtomicUsize::new(bytes),
        })
    }

    /// Bytes not taken.
    pub fn left(&self) -> usize {
        self.left.load(Ordering::Relaxed)
    }

    fn take(&self, bytes: usize) -> bool {
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(bytes)
            })
            .is_ok()
    }

    fn give(&self, bytes: usize) {
        self.left.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Counters of one reassembler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    /// Frames put back together.
    pub reassembled: u64,
    /// Partial frames that timed out.
    pub timeout: u64,
    /// Partial frames dropped for lack of room.
    pub overflow: u64,
    /// Malformed fragments.
    pub malformed: u64,
    /// Inconsistent fragments (their partial frame is dropped too).
    pub inconsistent: u64,
    /// Duplicate fragments.
    pub duplicate: u64,
}

/// What became of a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reassembled {
    /// It completed its frame: here it is.
    Frame(Bytes),
    /// Kept, waiting for the frame's other fragments.
    Pending,
    /// Dropped, with the reason (see [`reason`]).
    Dropped(&'static str),
}

#[derive(Debug)]
struct Partial {
    header: FragmentHeader,
    /// Payload bytes of every fragment but the last.
    size: usize,
    have: u32,
    received: usize,
    started: Timestamp,
    buf: BytesMut,
}

/// One peer's reassembly state.
#[derive(Debug)]
pub struct Reassembler {
    limits: ReassemblyLimits,
    shared: Option<Arc<ReassemblyBudget>>,
    partial: Vec<Partial>,
    bytes: usize,
    stats: ReassemblyStats,
}

impl Reassembler {
    /// A reassembler within `limits`, also drawing on `shared` if given.
    pub fn new(limits: ReassemblyLimits, shared: Option<Arc<ReassemblyBudget>>) -> Reassembler {
        Reassembler {
            limits,
            shared,
            partial: Vec::new(),
            bytes: 0,
            stats: ReassemblyStats::default(),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> ReassemblyStats {
        self.stats
    }

    /// Partial frames held, and their bytes.
    pub fn held(&self) -> (usize, usize) {
        (self.partial.len(), self.bytes)
    }

    fn release(&mut self, at: usize) -> Partial {
        let p = self.partial.swap_remove(at);
        let len = usize::from(p.header.total);
        self.bytes -= len;
        if let Some(shared) = &self.shared {
            shared.give(len);
        }
        p
    }

    /// Drops partial frames older than the timeout.
    pub fn expire(&mut self, now: Timestamp) {
        let mut i = 0;
        while i < self.partial.len() {
            if now.saturating_since(self.partial[i].started) >= self.limits.timeout {
                self.release(i);
                self.stats.timeout += 1;
            } else {
                i += 1;
            }
        }
    }

    fn malformed(&mut self) -> Reassembled {
        self.stats.malformed += 1;
        Reassembled::Dropped(reason::MALFORMED)
    }

    /// Takes one fragment (the payload of a datagram whose sub-header was
    /// `header`).
    pub fn push(&mut self, now: Timestamp, header: FragmentHeader, payload: &[u8]) -> Reassembled {
        self.expire(now);
        let (count, index, total) = (
            usize::from(header.count),
            usize::from(header.index),
            usize::from(header.total),
        );
        if !(2..=MAX_FRAGMENTS).contains(&count)
            || index >= count
            || total > self.limits.max_frame
            || payload.is_empty()
            || payload.len() > total
        {
            return self.malformed();
        }
        let last = index + 1 == count;
        let at = match self
            .partial
            .iter()
            .position(|p| p.header.frame_id == header.frame_id)
        {
            Some(at) => at,
            None => {
                // The size every fragment but the last carries follows from
                // any one fragment.
                let size = if last {
                    let rest = total - payload.len();
                    if rest % (count - 1) != 0 {
                        return self.malformed();
                    }
                    rest / (count - 1)
                } else {
                    payload.len()
                };
                // The split rule: (count - 1) full fragments and a last one
                // of 1..=size bytes.
                if size == 0 || total <= size * (count - 1) || total > size * count {
                    return self.malformed();
                }
                match self.make_room(total) {
                    Ok(()) => {}
                    Err(dropped) => return dropped,
                }
                let mut buf = BytesMut::with_capacity(total);
                buf.resize(total, 0);
                self.partial.push(Partial {
                    header,
                    size,
                    have: 0,
                    received: 0,
                    started: now,
                    buf,
                });
                self.bytes += total;
                self.partial.len() - 1
            }
        };
        let p = &mut self.partial[at];
        let expected = if last {
            total - p.size * (count - 1)
        } else {
            p.size
        };
        if p.header.count != header.count
            || p.header.total != header.total
            || payload.len() != expected
        {
            self.release(at);
            self.stats.inconsistent += 1;
            return Reassembled::Dropped(reason::INCONSISTENT);
        }
        let bit = 1u32 << index;
        if p.have & bit != 0 {
            self.stats.duplicate += 1;
            return Reassembled::Dropped(reason::DUPLICATE);
        }
        p.have |= bit;
        p.received += 1;
        let offset = index * p.size;
        p.buf[offset..offset + payload.len()].copy_from_slice(payload);
        if p.received < count {
            return Reassembled::Pending;
        }
        let done = self.release(at);
        self.stats.reassembled += 1;
        Reassembled::Frame(done.buf.freeze())
    }

    /// Makes room for a partial frame of `len` bytes: evicts this peer's
    /// oldest partial frames while over its own bounds; refuses when the
    /// relay's shared budget is spent.
    fn make_room(&mut self, len: usize) -> Result<(), Reassembled> {
        if len > self.limits.bytes {
            self.stats.overflow += 1;
            return Err(Reassembled::Dropped(reason::OVERFLOW));
        }
        while !self.partial.is_empty()
            && (self.partial.len() >= self.limits.frames || self.bytes + len > self.limits.bytes)
        {
            let oldest = self
                .partial
                .iter()
                .enumerate()
                .min_by_key(|(_, p)| p.started)
                .map_or(0, |(i, _)| i);
            self.release(oldest);
            self.stats.overflow += 1;
        }
        if self.limits.frames == 0 || self.shared.as_ref().is_some_and(|s| !s.take(len)) {
            self.stats.overflow += 1;
            return Err(Reassembled::Dropped(reason::OVERFLOW));
        }
        Ok(())
    }
}

impl Drop for Reassembler {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.give(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn frame(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn pieces(frame: &[u8], budget: usize, id: u32) -> Vec<(FragmentHeader, Vec<u8>)> {
        let (count, size) = plan(frame.len(), budget).unwrap();
        assert!(count >= 2);
        split(frame, count, size, id)
            .map(|(h, p)| {
                assert!(FRAGMENT_HEADER_LEN + p.len() <= budget, "fits its datagram");
                // Through the wire encoding and back.
                let mut datagram = h.encode().to_vec();
                datagram.extend_from_slice(p);
                let (back, payload) = FragmentHeader::decode(&datagram[2..]).unwrap();
                (back, payload.to_vec())
            })
            .collect()
    }

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_nanos(ms * 1_000_000)
    }

    #[test]
    fn every_boundary_size_splits_and_reassembles_in_any_order() {
        for budget in [1162usize, 1414] {
            let whole = budget - ETHERNET_HEADER_LEN;
            for len in [whole - 1, whole, whole + 1, 1514, 1518, 1522, 9018, 9022] {
                let f = frame(len);
                let (count, _) = plan(len, budget).unwrap();
                if count == 1 {
                    assert!(len <= whole, "{len} fits whole in {budget}");
                    continue;
                }
                assert!(len > whole);
                assert_eq!(
                    count,
                    len.div_ceil(budget - FRAGMENT_HEADER_LEN),
                    "as few as possible"
                );
                for order in 0..3 {
                    let mut ps = pieces(&f, budget, 7);
                    match order {
                        1 => ps.reverse(),
                        2 => ps.rotate_left(1),
                        _ => {}
                    }
                    let mut r = Reassembler::new(ReassemblyLimits::default(), None);
                    let n = ps.len();
                    for (i, (h, p)) in ps.into_iter().enumerate() {
                        let got = r.push(t(0), h, &p);
                        if i + 1 < n {
                            assert_eq!(got, Reassembled::Pending);
                        } else {
                            assert_eq!(
                                got,
                                Reassembled::Frame(Bytes::from(f.clone())),
                                "{budget}/{len}"
                            );
                        }
                    }
                    assert_eq!(r.held(), (0, 0));
                }
            }
        }
        // Too many fragments: the budget cannot carry the frame.
        assert_eq!(plan(9022, 400), None);
        assert_eq!(plan(1522, FRAGMENT_HEADER_LEN), None);
    }

    #[test]
    fn interleaved_frames_and_duplicates() {
        let (a, b) = (frame(3000), frame(2500));
        let (pa, pb) = (pieces(&a, 1162, 1), pieces(&b, 1162, 2));
        let mut r = Reassembler::new(ReassemblyLimits::default(), None);
        assert_eq!(r.push(t(0), pa[2].0, &pa[2].1), Reassembled::Pending);
        assert_eq!(r.push(t(0), pb[1].0, &pb[1].1), Reassembled::Pending);
        assert_eq!(r.push(t(0), pa[0].0, &pa[0].1), Reassembled::Pending);
        assert_eq!(
            r.push(t(0), pa[0].0, &pa[0].1),
            Reassembled::Dropped(reason::DUPLICATE)
        );
        assert_eq!(r.push(t(0), pb[0].0, &pb[0].1), Reassembled::Pending);
        assert_eq!(
            r.push(t(0), pb[2].0, &pb[2].1),
            Reassembled::Frame(Bytes::from(b))
        );
        assert_eq!(
            r.push(t(0), pa[1].0, &pa[1].1),
            Reassembled::Frame(Bytes::from(a))
        );
        assert_eq!(r.stats().duplicate, 1);
        assert_eq!(r.stats().reassembled, 2);
    }

    #[test]
    fn a_missing_fragment_times_out_and_frees_its_state() {
        let shared = ReassemblyBudget::new(1 << 20);
        let mut r = Reassembler::new(ReassemblyLimits::default(), Some(shared.clone()));
        let ps = pieces(&frame(1500), 1162, 9);
        assert_eq!(r.push(t(0), ps[0].0, &ps[0].1), Reassembled::Pending);
        assert_eq!(r.held(), (1, 1500));
        assert_eq!(shared.left(), (1 << 20) - 1500);
        r.expire(t(299));
        assert_eq!(r.held().0, 1);
        r.expire(t(300));
        assert_eq!(r.held(), (0, 0));
        assert_eq!(shared.left(), 1 << 20);
        assert_eq!(r.stats().timeout, 1);
        // The late fragment starts a new partial frame, which never completes.
        assert_eq!(r.push(t(301), ps[1].0, &ps[1].1), Reassembled::Pending);
    }

    #[test]
    fn hostile_headers_are_dropped_and_counted() {
        let mut r = Reassembler::new(ReassemblyLimits::default(), None);
        let h = |index, count, total| FragmentHeader {
            frame_id: 5,
            index,
            count,
            total,
        };
        let p = [0u8; 100];
        for (header, payload) in [
            (h(0, 0, 200), &p[..]),   // count 0
            (h(0, 1, 100), &p[..]),   // one fragment is no fragment
            (h(0, 17, 1700), &p[..]), // absurd count
            (h(3, 2, 200), &p[..]),   // index >= count
            (h(0, 2, 60000), &p[..]), // longer than any frame
            (h(0, 2, 200), &p[..0]),  // empty payload
            (h(0, 2, 250), &p[..]),   // 2 × 100 cannot hold 250
            (h(0, 2, 100), &p[..]),   // 100 in one fragment is no split
            (h(2, 3, 250), &p[..]),   // a last fragment of 100 with others of 75
        ] {
            assert_eq!(
                r.push(t(0), header, payload),
                Reassembled::Dropped(reason::MALFORMED),
                "{header:?}"
            );
        }
        assert_eq!(r.stats().malformed, 9);
        assert_eq!(r.held(), (0, 0));
        // A fragment that disagrees with its frame's first drops the frame.
        assert_eq!(r.push(t(0), h(0, 2, 150), &p), Reassembled::Pending);
        assert_eq!(
            r.push(t(0), h(1, 2, 160), &p[..60]),
            Reassembled::Dropped(reason::INCONSISTENT)
        );
        assert_eq!(r.held(), (0, 0));
        assert_eq!(r.push(t(0), h(0, 2, 150), &p), Reassembled::Pending);
        assert_eq!(
            r.push(t(0), h(1, 2, 150), &p[..49]),
            Reassembled::Dropped(reason::INCONSISTENT),
            "the last fragment must hold the rest exactly"
        );
        assert_eq!(r.stats().inconsistent, 2);
    }

    #[test]
    fn a_flood_of_unfinished_frames_stays_within_bounds_and_spares_other_peers() {
        let limits = ReassemblyLimits::default();
        let shared = ReassemblyBudget::new(limits.bytes * 3 / 2);
        let mut hostile = Reassembler::new(limits, Some(shared.clone()));
        let mut honest = Reassembler::new(limits, Some(shared.clone()));
        let first_half = pieces(&frame(9022), 1162, 0)[0].1.clone();
        for id in 0..10_000u32 {
            let h = FragmentHeader {
                frame_id: id,
                index: 0,
                count: 8,
                total: 9022,
            };
            hostile.push(t(u64::from(id) / 100), h, &first_half);
            let (frames, bytes) = hostile.held();
            assert!(frames <= limits.frames && bytes <= limits.bytes);
        }
        assert!(hostile.stats().overflow > 9_000);
        // The honest peer still has room in the relay's budget.
        let f = frame(1500);
        let mut got = None;
        for (h, p) in pieces(&f, 1162, 1) {
            got = Some(honest.push(t(100), h, &p));
        }
        assert_eq!(got, Some(Reassembled::Frame(Bytes::from(f))));
        drop(hostile);
        assert_eq!(shared.left(), limits.bytes * 3 / 2, "every byte given back");
    }
}

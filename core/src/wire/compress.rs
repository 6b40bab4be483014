//! Header compression of whole frames on one overlay link (one QUIC
//! connection, one direction), sans-IO: the sender's [`Compressor`] and the
//! receiver's [`Decompressor`].
//!
//! A bulk transfer repeats the same ~35 header bytes in every frame: the
//! Ethernet addresses and type, the IP version, addresses, protocol, TTL
//! and flags, the TCP/UDP ports; the IP length and checksum (and UDP's
//! length) follow from the rest. On a 5 Mbit/s link those bytes are 2.4 %
//! of the capacity. The sender keeps up to [`SLOTS`] such *contexts*: once
//! the receiver has confirmed one, frames of that flow travel as the slot
//! number, its generation and the bytes that change (IP ID and TOS, TCP
//! sequence numbers, flags, window, checksum, options; the UDP checksum),
//! followed by the payload; the receiver rebuilds the frame byte for byte.
//!
//! ```text
//! install    (overlay context 2): slot, generation, the whole frame
//! compressed (overlay context 3): slot, generation, changing header bytes, rest of the frame
//! ack        (overlay context 4): slot, generation
//! ```
//!
//! Rules that make it lossless and safe by construction:
//! - A frame is compressed only if the receiver acknowledged its context:
//!   until then each frame of the flow goes whole, as an install, and every
//!   install the receiver takes is acknowledged. Nothing is sent that the
//!   receiver cannot rebuild.
//! - Only frames that rebuild exactly are compressed: untagged IPv4 with a
//!   20-byte header whose length and checksum are exactly what the frame
//!   says, or IPv6 whose payload length is; UDP only with a length that
//!   matches. Anything else (ARP, VLAN tags, padding, options) goes whole.
//! - The receiver holds [`SLOTS`] contexts and never evicts one itself;
//!   only an install replaces a slot, and only with a newer generation
//!   (serial arithmetic), so an install reordered behind its successor
//!   cannot bring an old context back. A compressed frame naming another
//!   generation than the slot's is stale and dropped, counted.
//! - The sender reuses a slot only when it has been unused for
//!   [`SLOT_REUSE_AFTER`], far longer than any datagram is in flight, so no
//!   compressed frame of the old flow can arrive after the new context;
//!   with every slot busy, new flows go whole.
//! - A flow gets a context on its second frame within the last
//!   [`RECENT`] unmatched frames, so a flood of one-frame flows (a scan,
//!   DNS) neither churns the slots nor makes the receiver acknowledge.
//! - A hostile peer can only fill its own connection's fixed table; a
//!   rebuilt frame is a frame it could have sent whole, and it goes through
//!   the same checks (its source MAC included) as any other.

use std::time::Duration;

use bytes::BytesMut;

use super::checksum::{ipv4_header_checksum, set_ipv4_header_checksum};
use super::ethertype;
use super::ip_proto::{TCP, UDP};
use crate::time::Timestamp;

/// Contexts per connection and direction.
pub const SLOTS: usize = 32;

/// Bytes after the overlay header of an install, in front of the frame.
pub const INSTALL_OVERHEAD: usize = 2;

/// A slot must have been unused this long before the sender gives it to
/// another flow.
pub const SLOT_REUSE_AFTER: Duration = Duration::from_secs(2);

/// Unmatched frames remembered to spot a flow's second frame.
pub const RECENT: usize = 16;

/// The longest header a context covers (IPv6 + UDP): a rebuilt frame is
/// at most this much longer than the compressed body it came from.
pub const MAX_HEADER: usize = 62;

/// Which of a frame's first `len` bytes a context holds (`statics`) and
/// which follow from the frame (`derived`: the IP length, IPv4's header
/// checksum, UDP's length); every other byte in `0..len` travels in each
/// compressed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    len: usize,
    statics: u64,
    derived: u64,
    ip: Ip,
}

impl Layout {
    /// The bytes that travel in every compressed frame.
    const fn changing(&self) -> u64 {
        !(self.statics | self.derived) & bits(0, self.len)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ip {
    V4,
    V6,
}

impl Ip {
    /// Where the IP header ends (untagged, no IPv4 options or IPv6
    /// extension headers).
    const fn end(self) -> usize {
        match self {
            Ip::V4 => 34,
            Ip::V6 => 54,
        }
    }
}

/// Bits `from..to`.
const fn bits(from: usize, to: usize) -> u64 {
    ((1u64 << (to - from)) - 1) << from
}

/// The runs of set bits of `mask`, as byte ranges, in order.
fn runs(mut mask: u64) -> impl Iterator<Item = std::ops::Range<usize>> {
    std::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let start = mask.trailing_zeros() as usize;
        let len = (!(mask >> start)).trailing_zeros() as usize;
        mask &= !bits(start, start + len);
        Some(start..start + len)
    })
}

const ETH: u64 = bits(0, 14);
// IPv4 at 14: version/IHL, flags/fragment, TTL, protocol, addresses stay;
// TOS (ECN may be marked on the way) and ID change; length and checksum
// follow.
const V4_STATICS: u64 = ETH | bits(14, 15) | bits(20, 24) | bits(26, 34);
const V4_DERIVED: u64 = bits(16, 18) | bits(24, 26);
// IPv6 at 14: version/traffic class/flow label's first bytes change (ECN);
// the flow label's last two bytes, next header, hop limit, addresses stay;
// payload length follows.
const V6_STATICS: u64 = ETH | bits(16, 18) | bits(20, 54);
const V6_DERIVED: u64 = bits(18, 20);

const fn layout_of(ip: Ip, l4: u8) -> Layout {
    let ip_end = ip.end();
    let (statics, derived) = match ip {
        Ip::V4 => (V4_STATICS, V4_DERIVED),
        Ip::V6 => (V6_STATICS, V6_DERIVED),
    };
    match l4 {
        // Ports stay.
        TCP => Layout {
            len: ip_end + 4,
            statics: statics | bits(ip_end, ip_end + 4),
            derived,
            ip,
        },
        // Ports stay, the length follows, the checksum changes.
        UDP => Layout {
            len: ip_end + 8,
            statics: statics | bits(ip_end, ip_end + 4),
            derived: derived | bits(ip_end + 4, ip_end + 6),
            ip,
        },
        _ => Layout {
            len: ip_end,
            statics,
            derived,
            ip,
        },
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The layout a context for `frame` would have, if the frame rebuilds
/// exactly from one.
fn layout(frame: &[u8]) -> Option<Layout> {
    let (ip, l4) = match be16(frame, 12)? {
        ethertype::IPV4 => {
            let header = frame.get(14..34)?;
            let exact_length = usize::from(be16(header, 2)?) == frame.len() - 14;
            let exact_sum = be16(header, 10)? == ipv4_header_checksum(header);
            if header[0] != 0x45 || !exact_length || !exact_sum {
                return None;
            }
            // A fragment after the first has no ports.
            let first = be16(header, 6)? & 0x1fff == 0;
            (Ip::V4, if first { header[9] } else { 0 })
        }
        ethertype::IPV6 => {
            let header = frame.get(14..54)?;
            if header[0] >> 4 != 6 || usize::from(be16(header, 4)?) != frame.len() - 54 {
                return None;
            }
            (Ip::V6, header[6])
        }
        _ => return None,
    };
    let ip_end = ip.end();
    let l4 = match l4 {
        TCP if frame.len() >= ip_end + 20 => TCP,
        UDP if frame.len() >= ip_end + 8
            && usize::from(be16(frame, ip_end + 4)?) == frame.len() - ip_end =>
        {
            UDP
        }
        _ => 0,
    };
    Some(layout_of(ip, l4))
}

/// A flow's identity under `layout`: its static header bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    layout: Layout,
    bytes: [u8; MAX_HEADER],
    hash: u64,
}

impl Key {
    fn of(layout: Layout, frame: &[u8]) -> Key {
        let mut bytes = [0u8; MAX_HEADER];
        let mut n = 0;
        for run in runs(layout.statics) {
            bytes[n..n + run.len()].copy_from_slice(&frame[run.clone()]);
            n += run.len();
        }
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ layout.statics;
        for word in bytes[..n].chunks(8) {
            let mut w = [0u8; 8];
            w[..word.len()].copy_from_slice(word);
            hash = (hash ^ u64::from_le_bytes(w)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            hash ^= hash >> 29;
        }
        Key {
            layout,
            bytes,
            hash,
        }
    }
}

/// Why a received install or compressed frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CompressError {
    /// A slot number past [`SLOTS`].
    #[error("context slot out of range")]
    BadSlot,
    /// An install whose frame no sender would compress.
    #[error("install of a frame that has no context")]
    NotCompressible,
    /// A compressed frame for a slot never installed.
    #[error("compressed frame for an empty context slot")]
    Unknown,
    /// A compressed frame for another generation of its slot.
    #[error("compressed frame for a replaced context")]
    Stale,
    /// A compressed frame shorter than its context's changing bytes.
    #[error("compressed frame cut short")]
    Truncated,
}

impl CompressError {
    /// A short, stable name for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            CompressError::BadSlot | CompressError::NotCompressible | CompressError::Truncated => {
                "compress-malformed"
            }
            CompressError::Unknown => "compress-unknown",
            CompressError::Stale => "compress-stale",
        }
    }
}

/// How the sender should send one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Whole, with no context (overlay context 0).
    Plain,
    /// Whole, installing `slot` at `generation` (overlay context 2).
    Install {
        /// The slot.
        slot: u8,
        /// Its new generation.
        generation: u8,
    },
    /// Compressed against `slot` (overlay context 3).
    Compressed {
        /// The slot.
        slot: u8,
        /// Its generation.
        generation: u8,
    },
}

#[derive(Debug, Clone, Copy)]
struct SenderSlot {
    key: Option<Key>,
    generation: u8,
    acked: bool,
    used: Timestamp,
}

/// The sending side of one link: which flows have a context the receiver
/// confirmed.
#[derive(Debug, Clone)]
pub struct Compressor {
    slots: [SenderSlot; SLOTS],
    /// The slot the last frame matched: a bulk flow's frames come in runs.
    last: usize,
    recent: [u64; RECENT],
    next_recent: usize,
}

impl Default for Compressor {
    fn default() -> Self {
        Compressor {
            slots: [SenderSlot {
                key: None,
                generation: 0,
                acked: false,
                used: Timestamp::ZERO,
            }; SLOTS],
            recent: [0; RECENT],
            next_recent: 0,
            last: 0,
        }
    }
}

impl Compressor {
    /// Decides how to send `frame` at `now`.
    pub fn plan(&mut self, frame: &[u8], now: Timestamp) -> Encoding {
        let Some(layout) = layout(frame) else {
            return Encoding::Plain;
        };
        let key = Key::of(layout, frame);
        let same = |s: &SenderSlot| {
            s.key
                .as_ref()
                .is_some_and(|k| k.hash == key.hash && *k == key)
        };
        let hit = if same(&self.slots[self.last]) {
            Some(self.last)
        } else {
            self.slots.iter().position(same)
        };
        if let Some(slot) = hit {
            self.last = slot;
            let s = &mut self.slots[slot];
            s.used = now;
            return if s.acked {
                Encoding::Compressed {
                    slot: slot as u8,
                    generation: s.generation,
                }
            } else {
                Encoding::Install {
                    slot: slot as u8,
                    generation: s.generation,
                }
            };
        }
        // A context for a flow's second frame only.
        if let Some(seen) = self.recent.iter_mut().find(|h| **h == key.hash) {
            *seen = 0;
        } else {
            self.recent[self.next_recent] = key.hash;
            self.next_recent = (self.next_recent + 1) % RECENT;
            return Encoding::Plain;
        }
        let free = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.key.is_none() || now.saturating_since(s.used) >= SLOT_REUSE_AFTER)
            .min_by_key(|(_, s)| (s.key.is_some(), s.used))
            .map(|(i, _)| i);
        let Some(slot) = free else {
            return Encoding::Plain;
        };
        let s = &mut self.slots[slot];
        *s = SenderSlot {
            key: Some(key),
            generation: s.generation.wrapping_add(1),
            acked: false,
            used: now,
        };
        Encoding::Install {
            slot: slot as u8,
            generation: s.generation,
        }
    }

    /// The receiver confirmed `slot` at `generation`: its flow's frames
    /// may go compressed (an acknowledgement for a replaced generation
    /// changes nothing).
    pub fn acked(&mut self, slot: u8, generation: u8) {
        if let Some(s) = self.slots.get_mut(usize::from(slot))
            && s.key.is_some()
            && s.generation == generation
        {
            s.acked = true;
        }
    }

    /// Appends `frame` compressed against `slot` (which [`Compressor::plan`]
    /// just returned as [`Encoding::Compressed`]) to `out`: slot,
    /// generation, the changing header bytes, the rest of the frame.
    pub fn write_compressed(&self, slot: u8, frame: &[u8], out: &mut BytesMut) {
        let Some(key) = self.slots.get(usize::from(slot)).and_then(|s| s.key) else {
            return;
        };
        let layout = key.layout;
        out.reserve(2 + frame.len());
        out.extend_from_slice(&[slot, self.slots[usize::from(slot)].generation]);
        for run in runs(layout.changing()) {
            out.extend_from_slice(&frame[run]);
        }
        out.extend_from_slice(&frame[layout.len..]);
    }
}

#[derive(Debug, Clone, Copy)]
struct ReceiverSlot {
    layout: Option<Layout>,
    generation: u8,
    template: [u8; MAX_HEADER],
}

/// The receiving side of one link: the contexts the sender installed.
#[derive(Debug, Clone)]
pub struct Decompressor {
    slots: [ReceiverSlot; SLOTS],
}

impl Default for Decompressor {
    fn default() -> Self {
        Decompressor {
            slots: [ReceiverSlot {
                layout: None,
                generation: 0,
                template: [0; MAX_HEADER],
            }; SLOTS],
        }
    }
}

impl Decompressor {
    /// An install of `slot` at `generation` carrying `frame`: remembers the
    /// frame's header unless the slot already holds a newer generation
    /// (a reordered install). The frame itself is whole either way; the
    /// sender must be acknowledged (`Ok`) so that it starts compressing.
    pub fn install(&mut self, slot: u8, generation: u8, frame: &[u8]) -> Result<(), CompressError> {
        let s = self
            .slots
            .get_mut(usize::from(slot))
            .ok_or(CompressError::BadSlot)?;
        let layout = layout(frame).ok_or(CompressError::NotCompressible)?;
        let newer = generation.wrapping_sub(s.generation) as i8 > 0;
        if s.layout.is_none() || newer {
            s.layout = Some(layout);
            s.generation = generation;
            s.template[..layout.len].copy_from_slice(&frame[..layout.len]);
        }
        Ok(())
    }

    /// Rebuilds the frame of a compressed datagram's `body` (what follows
    /// slot and generation) into `out` (appended).
    pub fn decompress(
        &self,
        slot: u8,
        generation: u8,
        body: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), CompressError> {
        let s = self
            .slots
            .get(usize::from(slot))
            .ok_or(CompressError::BadSlot)?;
        let layout = s.layout.ok_or(CompressError::Unknown)?;
        if s.generation != generation {
            return Err(CompressError::Stale);
        }
        let changing = layout.changing();
        let carried = changing.count_ones() as usize;
        if body.len() < carried {
            return Err(CompressError::Truncated);
        }
        let start = out.len();
        let frame_len = layout.len + body.len() - carried;
        out.reserve(frame_len);
        out.extend_from_slice(&s.template[..layout.len]);
        let mut next = 0;
        for run in runs(changing) {
            let len = run.len();
            out[start + run.start..start + run.end].copy_from_slice(&body[next..next + len]);
            next += len;
        }
        out.extend_from_slice(&body[carried..]);
        let frame = &mut out[start..];
        let put = |frame: &mut [u8], at: usize, value: usize| {
            let value = u16::try_from(value).unwrap_or(u16::MAX);
            frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
        };
        let ip_end = layout.ip.end();
        if layout.derived & bits(ip_end + 4, ip_end + 6) != 0 {
            put(frame, ip_end + 4, frame_len - ip_end);
        }
        match layout.ip {
            Ip::V4 => {
                put(frame, 16, frame_len - 14);
                set_ipv4_header_checksum(&mut frame[14..ip_end]);
            }
            Ip::V6 => put(frame, 18, frame_len - ip_end),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

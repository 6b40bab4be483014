//! The overlay datagram header that precedes every payload in a QUIC
//! DATAGRAM frame.
//!
//! ```text
//! 0        1
//! +--------+---------------------+-----------------
//! | version| context id (varint) | payload …
//! +--------+---------------------+-----------------
//! ```
//!
//! - `version` (1 byte) is [`OVERLAY_VERSION`]. A datagram with another
//!   version is counted and dropped, never parsed.
//! - `context id` is a QUIC variable-length integer (RFC 9000 §16), as in the
//!   MASQUE Ethernet proxying draft: context 0 is a whole Ethernet frame,
//!   context 1 a fragment of a frame larger than one datagram (its
//!   sub-header and rules: [`super::fragment`]); contexts 2, 3 and 4 are
//!   header compression's install, compressed frame and acknowledgement
//!   (each starts with a context slot and its generation; rules:
//!   [`super::compress`]). Unknown contexts are counted and dropped.

use super::fragment::FragmentHeader;

/// The overlay version this build speaks.
pub const OVERLAY_VERSION: u8 = 1;
/// Context id of a whole Ethernet frame.
pub const CONTEXT_ETHERNET: u64 = 0;
/// Context id of a fragment of an Ethernet frame.
pub const CONTEXT_FRAGMENT: u64 = 1;
/// Context id of a whole frame that installs a compression context.
pub const CONTEXT_INSTALL: u64 = 2;
/// Context id of a frame compressed against a context.
pub const CONTEXT_COMPRESSED: u64 = 3;
/// Context id of the acknowledgement of an install.
pub const CONTEXT_ACK: u64 = 4;
/// Bytes of overlay header in front of an Ethernet frame.
pub const ETHERNET_HEADER_LEN: usize = 2;
/// The header bytes in front of an Ethernet frame.
pub const ETHERNET_HEADER: [u8; ETHERNET_HEADER_LEN] = [OVERLAY_VERSION, 0];

/// A decoded overlay datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayPayload<'a> {
    /// A whole Ethernet frame (context 0).
    Ethernet(&'a [u8]),
    /// A fragment of a frame (context 1): its header and payload.
    Fragment(FragmentHeader, &'a [u8]),
    /// A whole frame that installs compression context `slot` at
    /// `generation` (context 2).
    Install {
        /// The context slot.
        slot: u8,
        /// Its generation.
        generation: u8,
        /// The frame.
        frame: &'a [u8],
    },
    /// A frame compressed against context `slot` (context 3).
    Compressed {
        /// The context slot.
        slot: u8,
        /// Its generation.
        generation: u8,
        /// The changing header bytes and the rest of the frame.
        body: &'a [u8],
    },
    /// The peer took the install of `slot` at `generation` (context 4).
    Ack {
        /// The context slot.
        slot: u8,
        /// Its generation.
        generation: u8,
    },
}

/// Why a datagram was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OverlayError {
    /// The datagram ends inside the header.
    #[error("overlay header truncated")]
    Truncated,
    /// The version byte is not one this build speaks.
    #[error("unknown overlay version {0}")]
    UnknownVersion(u8),
    /// The context id names no payload kind this build knows.
    #[error("unknown overlay context {0}")]
    UnknownContext(u64),
}

impl OverlayError {
    /// A short, stable name for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            OverlayError::Truncated => "overlay-truncated",
            OverlayError::UnknownVersion(_) => "overlay-unknown-version",
            OverlayError::UnknownContext(_) => "overlay-unknown-context",
        }
    }
}

/// Decodes a QUIC varint at the start of `bytes`: (value, length).
pub fn decode_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let first = *bytes.first()?;
    let len = 1usize << (first >> 6);
    let raw = bytes.get(..len)?;
    let mut value = u64::from(first & 0x3f);
    for byte in &raw[1..] {
        value = (value << 8) | u64::from(*byte);
    }
    Some((value, len))
}

/// Appends `value` as a QUIC varint; values above 2^62-1 are not encodable
/// and return false.
pub fn encode_varint(value: u64, out: &mut Vec<u8>) -> bool {
    let (len, tag): (usize, u8) = match value {
        0..=0x3f => (1, 0x00),
        0x40..=0x3fff => (2, 0x40),
        0x4000..=0x3fff_ffff => (4, 0x80),
        0x4000_0000..=0x3fff_ffff_ffff_ffff => (8, 0xc0),
        _ => return false,
    };
    let bytes = value.to_be_bytes();
    let start = out.len();
    out.extend_from_slice(&bytes[8 - len..]);
    out[start] |= tag;
    true
}

/// Decodes the overlay header of `datagram` and returns its payload.
pub fn decode(datagram: &[u8]) -> Result<OverlayPayload<'_>, OverlayError> {
    let (&version, rest) = datagram.split_first().ok_or(OverlayError::Truncated)?;
    if version != OVERLAY_VERSION {
        return Err(OverlayError::UnknownVersion(version));
    }
    let (context, len) = decode_varint(rest).ok_or(OverlayError::Truncated)?;
    let payload = &rest[len..];
    match context {
        CONTEXT_ETHERNET => Ok(OverlayPayload::Ethernet(payload)),
        CONTEXT_FRAGMENT => FragmentHeader::decode(payload)
            .map(|(header, payload)| OverlayPayload::Fragment(header, payload))
            .ok_or(OverlayError::Truncated),
        CONTEXT_INSTALL | CONTEXT_COMPRESSED | CONTEXT_ACK => {
            let [slot, generation, ref rest @ ..] = *payload else {
                return Err(OverlayError::Truncated);
            };
            Ok(match context {
                CONTEXT_INSTALL => OverlayPayload::Install {
                    slot,
                    generation,
                    frame: rest,
                },
                CONTEXT_COMPRESSED => OverlayPayload::Compressed {
                    slot,
                    generation,
                    body: rest,
                },
                _ => OverlayPayload::Ack { slot, generation },
            })
        }
        other => Err(OverlayError::UnknownContext(other)),
    }
}

/// The header of a compression datagram of `context` (install, compressed
/// or ack) for `slot` at `generation`.
pub const fn context_header(context: u64, slot: u8, generation: u8) -> [u8; 4] {
    [OVERLAY_VERSION, context as u8, slot, generation]
}

/// Writes the overlay header for an Ethernet frame followed by the frame.
pub fn encode_ethernet(frame: &[u8], out: &mut Vec<u8>) {
    out.reserve(ETHERNET_HEADER_LEN + frame.len());
    out.extend_from_slice(&ETHERNET_HEADER);
    out.extend_from_slice(frame);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethernet_round_trip() {
        let mut out = Vec::new();
        encode_ethernet(&[1, 2, 3], &mut out);
        assert_eq!(out, [1, 0, 1, 2, 3]);
        assert_eq!(decode(&out), Ok(OverlayPayload::Ethernet(&[1, 2, 3])));
    }

    #[test]
    fn compression_contexts_round_trip() {
        let install = [&context_header(CONTEXT_INSTALL, 3, 9)[..], &[7, 8]].concat();
        assert_eq!(
            decode(&install),
            Ok(OverlayPayload::Install {
                slot: 3,
                generation: 9,
                frame: &[7, 8]
            })
        );
        let compressed = [&context_header(CONTEXT_COMPRESSED, 1, 2)[..], &[5]].concat();
        assert_eq!(
            decode(&compressed),
            Ok(OverlayPayload::Compressed {
                slot: 1,
                generation: 2,
                body: &[5]
            })
        );
        assert_eq!(
            decode(&context_header(CONTEXT_ACK, 4, 255)),
            Ok(OverlayPayload::Ack {
                slot: 4,
                generation: 255
            })
        );
    }

    #[test]
    fn rejects_unknown_and_truncated() {
        assert_eq!(decode(&[]), Err(OverlayError::Truncated));
        assert_eq!(decode(&[1]), Err(OverlayError::Truncated));
        assert_eq!(decode(&[2, 0, 9]), Err(OverlayError::UnknownVersion(2)));
        assert_eq!(decode(&[1, 5, 9]), Err(OverlayError::UnknownContext(5)));
        // A fragment sub-header cut short.
        assert_eq!(decode(&[1, 1, 0, 0, 0, 7, 0]), Err(OverlayError::Truncated));
        // Two-byte varint context 0x1234, cut short and whole.
        assert_eq!(decode(&[1, 0x52]), Err(OverlayError::Truncated));
        assert_eq!(
            decode(&[1, 0x52, 0x34]),
            Err(OverlayError::UnknownContext(0x1234))
        );
        // Compression contexts need their slot and generation.
        assert_eq!(decode(&[1, 2, 0]), Err(OverlayError::Truncated));
        assert_eq!(decode(&[1, 4]), Err(OverlayError::Truncated));
        // Non-minimal encoding of context 0 is still context 0.
        assert_eq!(
            decode(&[1, 0x40, 0x00, 7]),
            Ok(OverlayPayload::Ethernet(&[7]))
        );
    }

    #[test]
    fn varints() {
        for value in [
            0u64,
            63,
            64,
            16383,
            16384,
            (1 << 30) - 1,
            1 << 30,
            (1 << 62) - 1,
        ] {
            let mut out = Vec::new();
            assert!(encode_varint(value, &mut out));
            assert_eq!(decode_varint(&out), Some((value, out.len())));
        }
        assert!(!encode_varint(1 << 62, &mut Vec::new()));
    }
}

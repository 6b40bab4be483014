//! The Internet (one's-complement) checksum's incremental update (RFC 1624),
//! for stages that rewrite one 16-bit word of a packet: the ECN mark (IPv4
//! header checksum), the RA lifetime rewrite (ICMPv6) and the TCP MSS
//! clamp.

/// The checksum after a 16-bit word it covers changed from `old` to `new`
/// (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
pub fn update_checksum(checksum: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!checksum) + u32::from(!old) + u32::from(new);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sets the big-endian word at `field` of `buf` to `value` and updates the
/// checksum at `checksum_at` to match; `None` (and nothing changed) when
/// either is out of bounds.
pub fn set_word(buf: &mut [u8], field: usize, value: u16, checksum_at: usize) -> Option<()> {
    let word = |buf: &[u8], at: usize| Some(u16::from_be_bytes([*buf.get(at)?, *buf.get(at + 1)?]));
    let (old, checksum) = (word(buf, field)?, word(buf, checksum_at)?);
    buf[field..field + 2].copy_from_slice(&value.to_be_bytes());
    buf[checksum_at..checksum_at + 2]
        .copy_from_slice(&update_checksum(checksum, old, value).to_be_bytes());
    Some(())
}

/// A copy of `frame` with [`set_word`] applied.
pub fn with_word(frame: &[u8], field: usize, value: u16, checksum_at: usize) -> Option<Vec<u8>> {
    let mut out = frame.to_vec();
    set_word(&mut out, field, value, checksum_at)?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_matches_rfc1624_examples() {
        // Changing a word and back restores the checksum.
        let c = update_checksum(0x1234, 0x0708, 0);
        assert_eq!(update_checksum(c, 0, 0x0708), 0x1234);
    }
}

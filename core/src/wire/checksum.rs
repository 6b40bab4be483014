//! The Internet (one's-complement) checksum: the sum and fold (RFC 1071)
//! and the IPv4 header checksum, used by the adapters' offloads and
//! emulated packets and by header compression, and the incremental update
//! (RFC 1624) for stages that rewrite one 16-bit word of a packet: the ECN
//! mark (IPv4 header checksum), the RA lifetime rewrite (ICMPv6) and the
//! TCP MSS clamp.

/// Adds `data` as big-endian 16-bit words to `acc` (an odd last byte is
/// padded with zero), in one's complement: the result is what the word by
/// word sum would [`fold`] to, not necessarily the same number.
///
/// Eight bytes at a time: the one's complement sum of 16-bit words is the
/// same whatever the grouping and byte order, up to one byte swap at the
/// end (RFC 1071 §2), so the words are added as native 32-bit halves of
/// 64-bit reads into a 64-bit accumulator (no carry lost below 2^32
/// words) and folded once. A super-packet's segments and every UDP
/// datagram of a flood are summed here.
pub fn sum(data: &[u8], acc: u32) -> u32 {
    let mut wide: u64 = 0;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        wide += (w & 0xffff_ffff) + (w >> 32);
    }
    let rest = words.remainder();
    // Folded to 16 bits, still in native byte order; read as big-endian
    // words, the same bytes sum to the swapped value.
    let native = !fold(fold_to_32(wide));
    let mut acc = u64::from(acc) + u64::from(u16::from_be(native));
    // Fewer than eight bytes left, at an even offset: word by word.
    let mut pairs = rest.chunks_exact(2);
    for pair in &mut pairs {
        acc += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    fold_to_32(acc)
}

/// A 64-bit one's complement sum in 32 bits (end-around carries).
fn fold_to_32(mut acc: u64) -> u32 {
    while acc >> 32 != 0 {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    acc as u32
}

/// Folds a sum into the one's complement checksum.
pub fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The checksum an IPv4 header (options included) should carry: its sum
/// with the checksum field counted as zero.
pub fn ipv4_header_checksum(header: &[u8]) -> u16 {
    let (before, rest) = header.split_at(header.len().min(10));
    fold(sum(rest.get(2..).unwrap_or(&[]), sum(before, 0)))
}

/// Sets an IPv4 header's checksum (the header alone, options included).
pub fn set_ipv4_header_checksum(header: &mut [u8]) {
    let checksum = ipv4_header_checksum(header);
    if let Some(field) = header.get_mut(10..12) {
        field.copy_from_slice(&checksum.to_be_bytes());
    }
}

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
    fn wide_sum_folds_like_the_word_by_word_sum() {
        // RFC 1071's definition, one big-endian word at a time.
        fn reference(data: &[u8], mut acc: u64) -> u16 {
            let mut pairs = data.chunks_exact(2);
            for pair in &mut pairs {
                acc += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
            }
            if let [last] = pairs.remainder() {
                acc += u64::from(*last) << 8;
            }
            while acc >> 16 != 0 {
                acc = (acc & 0xffff) + (acc >> 16);
            }
            !(acc as u16)
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut data = vec![0u8; 70_000];
        for len in (0..200).chain([1399, 1400, 1401, 9000, 65_535, 70_000]) {
            for _ in 0..20 {
                data[..len].iter_mut().for_each(|b| *b = next() as u8);
                let acc = (next() & 0x3_ffff) as u32;
                assert_eq!(
                    fold(sum(&data[..len], acc)),
                    reference(&data[..len], u64::from(acc)),
                    "{len} bytes"
                );
            }
        }
        // All ones: every carry taken.
        data.fill(0xff);
        assert_eq!(fold(sum(&data, 0xffff_ffff)), reference(&data, 0xffff_ffff));
    }

    #[test]
    fn update_matches_rfc1624_examples() {
        // Changing a word and back restores the checksum.
        let c = update_checksum(0x1234, 0x0708, 0);
        assert_eq!(update_checksum(c, 0, 0x0708), 0x1234);
    }

    #[test]
    fn ipv4_header_checksum_ignores_its_own_field() {
        // RFC 1071's classic example header (checksum 0xb861).
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_header_checksum(&header), 0xb861);
        header[10..12].fill(0xff);
        set_ipv4_header_checksum(&mut header);
        assert_eq!(header[10..12], [0xb8, 0x61]);
        assert_eq!(fold(sum(&header, 0)), 0);
    }
}

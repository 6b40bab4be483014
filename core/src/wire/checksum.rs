//! The Internet (one's-complement) checksum's incremental update (RFC 1624),
//! for stages that rewrite one 16-bit word of a packet in place: the ECN
//! mark (IPv4 header checksum) and the RA lifetime rewrite (ICMPv6).

/// The checksum after a 16-bit word it covers changed from `old` to `new`
/// (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
pub fn update_checksum(checksum: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!checksum) + u32::from(!old) + u32::from(new);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
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

//! Small Internet helpers shared by the ports: the Internet checksum
//! (RFC 1071), used by the AF_PACKET port's checksum completion and the
//! Ethernet emulation's ARP/ND/DHCP packets, and CIDR parsing for configs.

use std::net::IpAddr;

/// Adds `data` as big-endian 16-bit words to `acc` (an odd last byte is
/// padded with zero).
pub fn sum(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        acc += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

/// The IPv4 netmask of a prefix length (`24` → 255.255.255.0); prefixes
/// over 32 count as 32.
pub fn ipv4_netmask(prefix: u8) -> std::net::Ipv4Addr {
    let bits = u32::from(prefix.min(32));
    std::net::Ipv4Addr::from(if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    })
}

/// Folds a sum into the one's complement checksum.
pub fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Sets an IPv4 header's checksum (the header alone, options included).
pub fn set_ipv4_header_checksum(header: &mut [u8]) {
    header[10..12].fill(0);
    let checksum = fold(sum(header, 0));
    header[10..12].copy_from_slice(&checksum.to_be_bytes());
}

/// Parses `10.0.0.2/24` or `fd00::2/64` (a bare address gets /32 or /128).
pub fn parse_cidr(text: &str) -> Result<(IpAddr, u8), String> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let addr: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not an IP address with an optional /prefix"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("`{text}`: prefix must be 0..={max}"))?,
        None => max,
    };
    Ok((addr, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert_eq!(
            parse_cidr("10.0.0.2/24"),
            Ok(("10.0.0.2".parse().unwrap(), 24))
        );
        assert_eq!(parse_cidr("fd00::2"), Ok(("fd00::2".parse().unwrap(), 128)));
        assert!(parse_cidr("10.0.0.2/33").is_err());
        assert!(parse_cidr("nope/3").is_err());
    }

    #[test]
    fn netmasks() {
        assert_eq!(ipv4_netmask(0), std::net::Ipv4Addr::UNSPECIFIED);
        assert_eq!(ipv4_netmask(24), std::net::Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(ipv4_netmask(32), std::net::Ipv4Addr::BROADCAST);
        assert_eq!(ipv4_netmask(40), std::net::Ipv4Addr::BROADCAST);
    }
}

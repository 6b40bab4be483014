//! Small Internet helpers shared by the ports: the Internet checksum
//! (RFC 1071; its home is `lanparty_core::wire::checksum`, re-exported
//! here for the AF_PACKET port's checksum completion, the adapters' GRO
//! and the Ethernet emulation's ARP/ND/DHCP packets), where a packet's IP
//! header starts ([`Framing`]: behind an Ethernet header, or at once on a
//! TUN device), and CIDR parsing for configs.

use std::net::IpAddr;

use lanparty_core::wire::{EthernetHeader, ethertype};

pub use lanparty_core::wire::checksum::{fold, set_ipv4_header_checksum, sum};

/// What a device's packets start with: the offloads (checksum completion,
/// segmentation, GRO) work on either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// An Ethernet header (TAP, `AF_PACKET`).
    Ethernet,
    /// The IP header itself (TUN).
    Ip,
}

impl Framing {
    /// The link header's length without VLAN tags: 14 or 0.
    pub const fn header_len(self) -> usize {
        match self {
            Framing::Ethernet => 14,
            Framing::Ip => 0,
        }
    }

    /// Where `packet`'s network header starts and its ethertype (for IP
    /// packets on a TUN device, [`ethertype::IPV4`] or [`ethertype::IPV6`]
    /// by the version); VLAN tags are skipped. `None` when too short or,
    /// on a TUN device, not IP.
    pub fn network(self, packet: &[u8]) -> Option<(usize, u16)> {
        match self {
            Framing::Ethernet => EthernetHeader::parse(packet)
                .ok()
                .map(|eth| (eth.header_len, eth.ethertype)),
            Framing::Ip => match packet.first()? >> 4 {
                4 => Some((0, ethertype::IPV4)),
                6 => Some((0, ethertype::IPV6)),
                _ => None,
            },
        }
    }
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
    fn framings_find_the_ip_header() {
        let ip = [0x45u8; 20];
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&ethertype::IPV4.to_be_bytes());
        frame.extend_from_slice(&ip);
        assert_eq!(
            Framing::Ethernet.network(&frame),
            Some((14, ethertype::IPV4))
        );
        assert_eq!(Framing::Ip.network(&ip), Some((0, ethertype::IPV4)));
        assert_eq!(Framing::Ip.network(&[0x60]), Some((0, ethertype::IPV6)));
        assert_eq!(Framing::Ip.network(&[0x10]), None);
        assert_eq!(Framing::Ip.network(&[]), None);
        assert_eq!(Framing::Ethernet.network(&frame[..10]), None);
    }

    #[test]
    fn netmasks() {
        assert_eq!(ipv4_netmask(0), std::net::Ipv4Addr::UNSPECIFIED);
        assert_eq!(ipv4_netmask(24), std::net::Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(ipv4_netmask(32), std::net::Ipv4Addr::BROADCAST);
        assert_eq!(ipv4_netmask(40), std::net::Ipv4Addr::BROADCAST);
    }
}

//! Ethernet MAC addresses: parsing, display and the address-class tests that
//! filters and admission rules rely on.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 48-bit IEEE 802 MAC address, as it appears on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

/// Why a string is not a MAC address, or why a MAC may not be used as a
/// client's virtual adapter address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    /// The text is not six hex octets separated by `:` or `-`.
    #[error("`{0}` is not a MAC address: expected six hex octets like 02:00:00:00:00:51")]
    Syntax(String),
    /// The address is the all-zero address.
    #[error("{0} is the all-zero MAC address, which no adapter may use")]
    Zero(MacAddr),
    /// The address has the group (multicast) bit set.
    #[error(
        "{0} is a multicast/broadcast address; an adapter needs a unicast MAC (first octet even)"
    )]
    Multicast(MacAddr),
}

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// 00:00:00:00:00:00.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Reads a MAC address from the first six bytes of `bytes`, or `None` if
    /// there are fewer than six.
    pub fn from_slice(bytes: &[u8]) -> Option<MacAddr> {
        let octets: [u8; 6] = bytes.get(..6)?.try_into().ok()?;
        Some(MacAddr(octets))
    }

    /// The six octets.
    pub const fn octets(self) -> [u8; 6] {
        self.0
    }

    /// True for ff:ff:ff:ff:ff:ff.
    pub fn is_broadcast(self) -> bool {
        self == Self::BROADCAST
    }

    /// True when the group bit (I/G, lowest bit of the first octet) is set:
    /// multicast and broadcast addresses.
    pub fn is_multicast(self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// True for an individual (unicast) address.
    pub fn is_unicast(self) -> bool {
        !self.is_multicast()
    }

    /// True for the all-zero address.
    pub fn is_zero(self) -> bool {
        self == Self::ZERO
    }

    /// True when the U/L bit is set: a locally administered address, as
    /// virtual adapters should use.
    pub fn is_locally_administered(self) -> bool {
        self.0[0] & 0x02 != 0
    }

    /// True for the IEEE 802.1D reserved range 01:80:C2:00:00:00–0F (STP,
    /// pause, LACP, 802.1X, LLDP …), which a bridge must never forward.
    pub fn is_ieee_link_local(self) -> bool {
        self.0[..5] == [0x01, 0x80, 0xc2, 0x00, 0x00] && self.0[5] <= 0x0f
    }

    /// Checks that this address can identify one client's virtual adapter:
    /// unicast and not all-zero. (Globally administered addresses are allowed
    /// so that a real NIC's address can be reused, but a locally administered
    /// one is what `lanparty` generates.)
    pub fn validate_adapter_mac(self) -> Result<MacAddr, MacError> {
        if self.is_zero() {
            return Err(MacError::Zero(self));
        }
        if self.is_multicast() {
            return Err(MacError::Multicast(self));
        }
        Ok(self)
    }
}

impl FromStr for MacAddr {
    type Err = MacError;

    /// Parses `02:00:00:00:00:51` or `02-00-00-00-00-51` (either case, one
    /// separator style throughout).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || MacError::Syntax(s.chars().take(64).collect());
        let sep = if s.contains(':') { ':' } else { '-' };
        let mut octets = [0u8; 6];
        let mut parts = s.split(sep);
        for octet in &mut octets {
            let part = parts.next().ok_or_else(syntax)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(syntax());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| syntax())?;
        }
        if parts.next().is_some() {
            return Err(syntax());
        }
        Ok(MacAddr(octets))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_separators_and_cases() {
        let a: MacAddr = "02:00:00:00:00:51".parse().unwrap();
        let b: MacAddr = "02-00-00-00-00-51".parse().unwrap();
        let c: MacAddr = "0A:bC:00:00:00:51".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.octets(), [2, 0, 0, 0, 0, 0x51]);
        assert_eq!(c.to_string(), "0a:bc:00:00:00:51");
        assert_eq!(a.to_string(), "02:00:00:00:00:51");
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:51:00",
            "02:00:00:00:00:5",
            "02:00:00:00:00:511",
            "02:00-00:00:00:51",
            "0g:00:00:00:00:51",
            "+2:00:00:00:00:51",
            "02::00:00:00:00:51",
            "ü2:00:00:00:00:51",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn classifies_addresses() {
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert!(MacAddr::BROADCAST.is_multicast());
        let mcast: MacAddr = "01:00:5e:00:00:fb".parse().unwrap();
        assert!(mcast.is_multicast() && !mcast.is_broadcast());
        let local: MacAddr = "02:00:00:00:00:01".parse().unwrap();
        assert!(local.is_unicast() && local.is_locally_administered());
        let global: MacAddr = "00:1b:21:00:00:01".parse().unwrap();
        assert!(!global.is_locally_administered());
        assert!(
            "01:80:c2:00:00:00"
                .parse::<MacAddr>()
                .unwrap()
                .is_ieee_link_local()
        );
        assert!(
            "01:80:c2:00:00:0e"
                .parse::<MacAddr>()
                .unwrap()
                .is_ieee_link_local()
        );
        assert!(
            !"01:80:c2:00:00:10"
                .parse::<MacAddr>()
                .unwrap()
                .is_ieee_link_local()
        );
    }

    #[test]
    fn adapter_mac_validation() {
        assert_eq!(
            MacAddr::ZERO.validate_adapter_mac(),
            Err(MacError::Zero(MacAddr::ZERO))
        );
        assert!(matches!(
            MacAddr::BROADCAST.validate_adapter_mac(),
            Err(MacError::Multicast(_))
        ));
        let ok: MacAddr = "02:00:00:00:00:51".parse().unwrap();
        assert_eq!(ok.validate_adapter_mac(), Ok(ok));
    }

    #[test]
    fn serde_round_trip() {
        let mac: MacAddr = "02:00:00:00:00:51".parse().unwrap();
        let json = serde_json::to_string(&mac).unwrap();
        assert_eq!(json, "\"02:00:00:00:00:51\"");
        assert_eq!(serde_json::from_str::<MacAddr>(&json).unwrap(), mac);
        assert!(serde_json::from_str::<MacAddr>("\"nope\"").is_err());
    }
}

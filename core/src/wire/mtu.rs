//! Room MTU bounds, and what a QUIC datagram budget must carry for a room.
//!
//! ```text
//! QUIC datagram budget (max_datagram_size)
//! └─ overlay header (2 bytes for a whole frame, 10 for a fragment)
//!    └─ Ethernet frame: 14-byte header + up to two 4-byte VLAN tags
//!       └─ room MTU (the IP packet; the TAP adapter's MTU)
//! ```
//!
//! A frame larger than the budget travels in fragments
//! ([`super::fragment`]), so the room MTU does not depend on the path.

use super::ethernet::{ETH_HEADER_LEN, VLAN_TAG_LEN};

/// The smallest room MTU accepted (the IPv4 minimum datagram size).
pub const MIN_MTU: u16 = 576;
/// The largest room MTU accepted (jumbo frames).
pub const MAX_MTU: u16 = 9000;
/// The MTU below which IPv6 cannot run on an interface.
pub const IPV6_MIN_MTU: u16 = 1280;

/// Why an MTU is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MtuError {
    /// The MTU is outside [`MIN_MTU`]..=[`MAX_MTU`].
    #[error("MTU {0} is outside {MIN_MTU}..={MAX_MTU}")]
    OutOfRange(u32),
}

/// Checks that `mtu` is a usable room MTU.
pub fn validate_mtu(mtu: u32) -> Result<u16, MtuError> {
    match u16::try_from(mtu) {
        Ok(m) if (MIN_MTU..=MAX_MTU).contains(&m) => Ok(m),
        _ => Err(MtuError::OutOfRange(mtu)),
    }
}

/// Bytes of Ethernet framing around the longest frame a room carries:
/// header plus two VLAN tags (QinQ).
pub const MAX_L2_OVERHEAD: usize = ETH_HEADER_LEN + 2 * VLAN_TAG_LEN;

/// The longest frame a room of `mtu` carries: 1522 bytes at MTU 1500.
pub const fn max_frame_len(mtu: u16) -> usize {
    mtu as usize + MAX_L2_OVERHEAD
}

/// True when datagrams of `budget` bytes carry every frame of a room of
/// `mtu`, whole or in at most [`super::fragment::MAX_FRAGMENTS`] fragments.
pub fn budget_carries(budget: usize, mtu: u16) -> bool {
    super::fragment::plan(max_frame_len(mtu), budget).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_and_out_of_range() {
        assert_eq!(max_frame_len(1500), 1522);
        // Right after the handshake (1162) and settled (1414): MTU 1500 in
        // two fragments; jumbo in eight.
        assert!(budget_carries(1162, 1500) && budget_carries(1414, 1500));
        assert!(budget_carries(1162, MAX_MTU));
        assert!(!budget_carries(500, MAX_MTU) && !budget_carries(80, 1500));
        assert_eq!(validate_mtu(575), Err(MtuError::OutOfRange(575)));
        assert_eq!(validate_mtu(9001), Err(MtuError::OutOfRange(9001)));
        assert_eq!(validate_mtu(u32::MAX), Err(MtuError::OutOfRange(u32::MAX)));
        assert_eq!(validate_mtu(1500), Ok(1500));
    }
}

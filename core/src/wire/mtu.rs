//! MTU arithmetic between a QUIC datagram budget, the overlay payload and
//! the MTU a TAP adapter is given.
//!
//! ```text
//! QUIC datagram budget (max_datagram_size)
//! └─ overlay header (2 bytes for an Ethernet frame)
//!    └─ Ethernet frame: 14-byte header + one 4-byte VLAN tag reserved
//!       └─ TAP MTU (the IP packet)
//! ```
//!
//! One VLAN tag is reserved so that a tagged frame of full MTU from a
//! gateway's LAN still fits in one datagram.

use super::ethernet::{ETH_HEADER_LEN, VLAN_TAG_LEN};
use super::overlay::ETHERNET_HEADER_LEN as OVERLAY_LEN;

/// The smallest room MTU accepted (the IPv4 minimum datagram size).
pub const MIN_MTU: u16 = 576;
/// The largest room MTU accepted (jumbo frames).
pub const MAX_MTU: u16 = 9000;
/// The MTU below which IPv6 cannot run on an interface.
pub const IPV6_MIN_MTU: u16 = 1280;
/// Bytes of Ethernet framing that the MTU does not count: header plus one
/// reserved VLAN tag.
pub const L2_OVERHEAD: usize = ETH_HEADER_LEN + VLAN_TAG_LEN;

/// Why an MTU or budget is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MtuError {
    /// The MTU is outside [`MIN_MTU`]..=[`MAX_MTU`].
    #[error("MTU {0} is outside {MIN_MTU}..={MAX_MTU}")]
    OutOfRange(u32),
    /// The datagram budget cannot carry a frame of the minimum MTU.
    #[error("a datagram budget of {0} bytes cannot carry an Ethernet frame of MTU {MIN_MTU} (needs {needed})", needed = datagram_budget_for_mtu(MIN_MTU))]
    BudgetTooSmall(usize),
}

/// Checks that `mtu` is a usable room MTU.
pub fn validate_mtu(mtu: u32) -> Result<u16, MtuError> {
    match u16::try_from(mtu) {
        Ok(m) if (MIN_MTU..=MAX_MTU).contains(&m) => Ok(m),
        _ => Err(MtuError::OutOfRange(mtu)),
    }
}

/// The largest Ethernet frame (header and tags included) that fits in a
/// datagram of `budget` bytes.
pub fn frame_capacity(budget: usize) -> usize {
    budget.saturating_sub(OVERLAY_LEN)
}

/// The TAP MTU that a datagram budget supports, clamped to [`MAX_MTU`];
/// an error if it is below [`MIN_MTU`].
pub fn mtu_for_budget(budget: usize) -> Result<u16, MtuError> {
    let mtu = frame_capacity(budget).saturating_sub(L2_OVERHEAD);
    if mtu < usize::from(MIN_MTU) {
        return Err(MtuError::BudgetTooSmall(budget));
    }
    Ok(u16::try_from(mtu).unwrap_or(MAX_MTU).min(MAX_MTU))
}

/// The datagram budget a peer needs to carry frames of `mtu` whole.
pub fn datagram_budget_for_mtu(mtu: u16) -> usize {
    usize::from(mtu) + L2_OVERHEAD + OVERLAY_LEN
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
    super::fragment::plan(max_frame_len(mtu), budget, OVERLAY_LEN).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_round_trip() {
        // Settled quinn path on loopback: 1414 bytes (NOTES.md).
        assert_eq!(mtu_for_budget(1414), Ok(1394));
        assert_eq!(datagram_budget_for_mtu(1394), 1414);
        // Right after the handshake: 1162.
        assert_eq!(mtu_for_budget(1162), Ok(1142));
        for mtu in [MIN_MTU, 1280, 1394, 1500, MAX_MTU] {
            assert_eq!(mtu_for_budget(datagram_budget_for_mtu(mtu)), Ok(mtu));
        }
        assert_eq!(frame_capacity(1414), 1412);
    }

    #[test]
    fn too_small_and_out_of_range() {
        assert_eq!(mtu_for_budget(0), Err(MtuError::BudgetTooSmall(0)));
        assert_eq!(
            mtu_for_budget(datagram_budget_for_mtu(MIN_MTU) - 1),
            Err(MtuError::BudgetTooSmall(595))
        );
        assert_eq!(mtu_for_budget(usize::MAX), Ok(MAX_MTU));
        assert_eq!(validate_mtu(575), Err(MtuError::OutOfRange(575)));
        assert_eq!(validate_mtu(9001), Err(MtuError::OutOfRange(9001)));
        assert_eq!(validate_mtu(u32::MAX), Err(MtuError::OutOfRange(u32::MAX)));
        assert_eq!(validate_mtu(1500), Ok(1500));
    }
}

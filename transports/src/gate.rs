//! The relay's UDP socket gate: a per-source limit on QUIC long-header
//! packets (Initial, Handshake, 0-RTT — what a handshake is made of),
//! applied by the relay's loop ([`crate::server`]) to every datagram
//! before `quinn_proto` parses or decrypts it.
//!
//! Each Initial costs quinn key derivation and a decryption before the
//! relay's own admission rules (`handshake_slot`) can ignore it, so a
//! one-address flood of Initials (thousands per second) took a share of the
//! relay's thread and delayed admitted players' frames by several
//! milliseconds. A real handshake needs a handful of long-header packets;
//! beyond `handshake_packets_per_address` per second from one address, the
//! rest are dropped here at the cost of a table lookup and counted.
//! Short-header packets (every frame of an admitted peer) are never looked
//! at beyond their first byte.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Source addresses the gate tracks at once; a spoofed flood from more
/// addresses starts the table over instead of growing it.
pub const TABLE_LIMIT: usize = 65_536;
const WINDOW: Duration = Duration::from_secs(1);

/// Events per source address per second, sans-IO: the gate's long-header
/// packets, and the relay's Retries (`server.rs`).
#[derive(Debug)]
pub struct PerAddressRate {
    per_second: u32,
    table_limit: usize,
    windows: HashMap<IpAddr, (Instant, u32)>,
}

impl PerAddressRate {
    /// Allows `per_second` events per address and second, tracking at
    /// most `table_limit` addresses.
    pub fn new(per_second: u32, table_limit: usize) -> PerAddressRate {
        PerAddressRate {
            per_second,
            table_limit,
            windows: HashMap::new(),
        }
    }

    /// Counts an event from `ip`; whether it is within the rate.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.windows.len() >= self.table_limit && !self.windows.contains_key(&ip) {
            self.windows
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < WINDOW);
            if self.windows.len() >= self.table_limit {
                self.windows.clear();
            }
        }
        let (start, count) = self.windows.entry(ip).or_insert((now, 0));
        if now.saturating_duration_since(*start) >= WINDOW {
            *start = now;
            *count = 0;
        }
        *count = count.saturating_add(1);
        *count <= self.per_second
    }
}

/// True for a QUIC long-header packet (RFC 9000 §17.2: the first bit set).
pub fn is_long_header(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| b & 0x80 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_headers_are_limited_per_address_and_second() {
        let mut l = PerAddressRate::new(3, TABLE_LIMIT);
        let (a, b): (IpAddr, IpAddr) = ([192, 0, 2, 1].into(), [192, 0, 2, 2].into());
        let t = Instant::now();
        assert!((0..3).all(|_| l.admit(a, t)));
        assert!(!l.admit(a, t), "the fourth in the same second is dropped");
        assert!(l.admit(b, t), "other addresses are not affected");
        assert!(l.admit(a, t + WINDOW), "a new second starts over");
    }

    #[test]
    fn a_spoofed_flood_does_not_grow_the_table_past_its_limit() {
        let mut l = PerAddressRate::new(1, TABLE_LIMIT);
        let t = Instant::now();
        for i in 0..(TABLE_LIMIT as u32 + 10) {
            assert!(l.admit(IpAddr::from(i.to_be_bytes()), t));
        }
        assert!(l.windows.len() <= TABLE_LIMIT);
    }

    #[test]
    fn only_long_headers_are_judged() {
        assert!(is_long_header(&[0xc0, 0, 0, 0, 1]));
        assert!(!is_long_header(&[0x40, 1, 2]));
        assert!(!is_long_header(&[]));
    }
}

//! The hasher of the per-frame tables keyed by small fixed values (MAC
//! addresses, link ids, connection handles): a folded multiply with a
//! random key per table — a few nanoseconds where std's SipHash takes
//! tens, and still keyed, so nobody can predict where a key lands.
//!
//! Only for tables whose keys are bounded by other means (a switch's
//! `max_macs`, one owner per admitted MAC, one entry per connection);
//! the egress scheduler's flow hash, which a peer steers with every
//! header it sends, keeps SipHash ([`crate::queue`]).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// A `HashMap` hashed by [`KeyedHasher`].
pub type KeyedMap<K, V> = HashMap<K, V, Keyed>;

/// An empty [`KeyedMap`] with a fresh random key.
pub fn keyed_map<K, V>() -> KeyedMap<K, V> {
    HashMap::with_hasher(Keyed::new())
}

/// An empty [`KeyedMap`] with room for `capacity` entries.
pub fn keyed_map_with_capacity<K, V>(capacity: usize) -> KeyedMap<K, V> {
    HashMap::with_capacity_and_hasher(capacity, Keyed::new())
}

/// Builds [`KeyedHasher`]s with one random key.
#[derive(Debug, Clone, Copy)]
pub struct Keyed {
    key: u64,
}

impl Keyed {
    /// A random key (from std's per-process random hash keys).
    pub fn new() -> Keyed {
        Keyed {
            key: std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
        }
    }
}

impl Default for Keyed {
    fn default() -> Keyed {
        Keyed::new()
    }
}

impl BuildHasher for Keyed {
    type Hasher = KeyedHasher;

    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher { state: self.key }
    }
}

/// Folds each written word into its state with a 64×64→128-bit multiply
/// (as wyhash and foldhash do): every input bit reaches every output bit.
#[derive(Debug, Clone, Copy)]
pub struct KeyedHasher {
    state: u64,
}

/// An odd constant with no structure (the fractional part of π).
const MULTIPLIER: u64 = 0x243f_6a88_85a3_08d3;

impl KeyedHasher {
    fn fold(&mut self, word: u64) {
        let product = u128::from(self.state ^ word) * u128::from(MULTIPLIER);
        self.state = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl Hasher for KeyedHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            // The length keeps "ab" + "" apart from "a" + "b".
            self.fold(u64::from_le_bytes(word) ^ ((chunk.len() as u64) << 56));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.fold(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.fold(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.fold(n as u64);
    }

    fn finish(&self) -> u64 {
        // One more round so that the last word's high bits reach the low
        // bits the table indexes with.
        let mut last = *self;
        last.fold(0x9e37_79b9_7f4a_7c15);
        last.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MacAddr;
    use std::hash::BuildHasher;

    #[test]
    fn equal_keys_hash_alike_and_tables_differ_in_key() {
        let a = Keyed::new();
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        assert_eq!(a.hash_one(mac), a.hash_one(mac));
        let b = Keyed::new();
        assert_ne!(
            a.hash_one(mac),
            b.hash_one(mac),
            "each table has its own key"
        );
    }

    #[test]
    fn neighbouring_macs_spread_over_the_buckets() {
        // 4096 MACs that differ only in their last two bytes, into 256
        // buckets by the low bits (as hashbrown indexes): no bucket holds
        // more than three times its share.
        let keyed = Keyed::new();
        let mut buckets = [0u32; 256];
        for i in 0..4096u16 {
            let [hi, lo] = i.to_be_bytes();
            let h = keyed.hash_one(MacAddr([2, 0, 0, 0, hi, lo]));
            buckets[(h & 0xff) as usize] += 1;
        }
        let most = buckets.iter().copied().max().unwrap_or(0);
        assert!(most <= 48, "fullest bucket {most} of an even 16");
        // hashbrown's control byte comes from the top 7 bits.
        let mut tops = std::collections::HashSet::new();
        for i in 0..4096u16 {
            let [hi, lo] = i.to_be_bytes();
            tops.insert(keyed.hash_one(MacAddr([2, 0, 0, 0, hi, lo])) >> 57);
        }
        assert_eq!(tops.len(), 128, "every top-7-bit value is used");
    }

    #[test]
    fn the_map_finds_what_it_holds() {
        let mut map = keyed_map();
        for i in 0..1000u32 {
            map.insert(i, i * 2);
        }
        assert!((0..1000u32).all(|i| map.get(&i) == Some(&(i * 2))));
        assert_eq!(map.get(&1000), None);
    }
}

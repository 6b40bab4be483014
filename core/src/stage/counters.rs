//! Per-stage counters that the pipeline keeps for every stage, so that no
//! stage has to count for itself.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// A drop reason: a short, stable, kebab-case name such as `"oversize"`.
/// Static so that dropping a frame allocates nothing.
pub type DropReason = &'static str;

/// Frames a stage saw, passed and dropped (by reason).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageCounters {
    /// Frames (or frame–destination pairs, for egress) the stage judged.
    pub rx: u64,
    /// Frames it passed (including rewritten ones).
    pub pass: u64,
    /// Frames it rewrote.
    pub rewritten: u64,
    /// Drops by reason, in order of first occurrence. A reason is
    /// borrowed (never allocated) when counted; only a report read back
    /// from JSON owns its text.
    pub drops: Vec<(Cow<'static, str>, u64)>,
}

impl StageCounters {
    /// Counts one drop for `reason`. Allocates only the first time a reason
    /// is seen; a stage has a handful of reasons.
    pub fn record_drop(&mut self, reason: DropReason) {
        match self.drops.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.drops.push((Cow::Borrowed(reason), 1)),
        }
    }

    /// Drops recorded for `reason`.
    pub fn dropped(&self, reason: &str) -> u64 {
        self.drops
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }

    /// All drops.
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().map(|(_, n)| n).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason() {
        let mut c = StageCounters::default();
        c.record_drop("a");
        c.record_drop("b");
        c.record_drop("a");
        assert_eq!(c.dropped("a"), 2);
        assert_eq!(c.dropped("b"), 1);
        assert_eq!(c.dropped("c"), 0);
        assert_eq!(c.dropped_total(), 3);
        assert_eq!((c.dropped("a"), c.dropped("b"), c.drops.len()), (2, 1, 2));
        assert_eq!(c.drops[0].0, "a", "in order of first occurrence");
    }
}

//! The client's reconnect policy, sans-IO: when a session or an attempt
//! ends, how long to wait before the next. Exponential backoff from
//! `reconnect_min` to `reconnect_max`, each delay times a random factor in
//! 0.5–1.5 (never above the maximum) so that the players of a restarted
//! relay do not all come back in the same instant, and back to the
//! minimum after a session that lasted [`STABLE_SESSION`]. No clock and no
//! I/O: the caller passes the time in; tests drive it by hand.

use std::time::{Duration, Instant};

/// A session at least this long counts as a success: the next loss starts
/// the backoff again from `reconnect_min`.
pub const STABLE_SESSION: Duration = Duration::from_secs(30);

/// The backoff state of one client port.
#[derive(Debug)]
pub struct Reconnect {
    min: Duration,
    max: Duration,
    /// The next delay before jitter.
    backoff: Duration,
    /// When the current attempt (and the session it may become) began.
    started: Option<Instant>,
    /// xorshift state, never zero.
    random: u64,
}

impl Reconnect {
    /// A policy from `min` to `max`, its jitter seeded with `seed` (the
    /// port seeds it from the clock and the process id).
    pub fn new(min: Duration, max: Duration, seed: u64) -> Reconnect {
        Reconnect {
            min,
            max,
            backoff: min,
            started: None,
            random: seed | 1,
        }
    }

    /// A seed that differs between processes and runs.
    pub fn seed() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 32)
    }

    /// An attempt begins at `now`.
    pub fn attempt(&mut self, now: Instant) {
        self.started = Some(now);
    }

    /// The attempt (or the session it became) ended at `now`: how long to
    /// wait before the next attempt.
    pub fn ended(&mut self, now: Instant) -> Duration {
        if self
            .started
            .is_some_and(|started| now.saturating_duration_since(started) >= STABLE_SESSION)
        {
            self.backoff = self.min;
        }
        let delay = self.jittered(self.backoff);
        self.backoff = (self.backoff * 2).min(self.max);
        delay
    }

    /// `delay` times a random factor in 0.5..=1.5, never above the maximum.
    fn jittered(&mut self, delay: Duration) -> Duration {
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        let per_mille = 500 + (self.random % 1001) as u32;
        (delay * per_mille / 1000).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn delays_double_within_their_jitter_up_to_the_maximum() {
        let t0 = Instant::now();
        let mut r = Reconnect::new(MIN, MAX, 7);
        let mut now = t0;
        for step in 0..12u32 {
            r.attempt(now);
            now += Duration::from_secs(1);
            let delay = r.ended(now);
            let base = (MIN * 2u32.pow(step)).min(MAX);
            assert!(
                delay >= base / 2 && delay <= (base * 3 / 2).min(MAX),
                "step {step}: {delay:?} for {base:?}"
            );
            now += delay;
        }
    }

    #[test]
    fn a_stable_session_starts_the_backoff_again() {
        let t0 = Instant::now();
        let mut r = Reconnect::new(MIN, MAX, 11);
        for _ in 0..6 {
            r.attempt(t0);
            r.ended(t0 + Duration::from_secs(1));
        }
        r.attempt(t0);
        let delay = r.ended(t0 + STABLE_SESSION);
        assert!(delay <= MIN * 3 / 2, "{delay:?}");
        // A short one right after keeps doubling.
        r.attempt(t0 + STABLE_SESSION);
        let next = r.ended(t0 + STABLE_SESSION + Duration::from_secs(1));
        assert!(next >= MIN, "{next:?}");
    }

    #[test]
    fn jitter_spreads_players_and_never_exceeds_the_maximum() {
        let t0 = Instant::now();
        let delays: Vec<Duration> = (1..=50u64)
            .map(|seed| {
                let mut r = Reconnect::new(Duration::from_secs(1), MAX, seed * 7919);
                r.attempt(t0);
                r.ended(t0)
            })
            .collect();
        let spread = delays
            .iter()
            .max()
            .unwrap_or(&MAX)
            .saturating_sub(*delays.iter().min().unwrap_or(&MAX));
        assert!(spread > Duration::from_millis(500), "{delays:?}");
        let mut at_max = 0;
        let mut r = Reconnect::new(MAX, MAX, 3);
        for _ in 0..1000 {
            r.attempt(t0);
            let d = r.ended(t0);
            assert!(d >= MAX / 2 && d <= MAX, "{d:?}");
            at_max += usize::from(d == MAX);
        }
        // Half the draws would have gone above it.
        assert!(at_max > 300, "{at_max}");
    }
}

//! Time as the sans-IO pipeline sees it: a monotonic timestamp handed in by
//! whoever drives the pipeline (the runtime's clock, or a test's simulated
//! clock). Nothing in a pipeline reads the clock itself.

use std::ops::{Add, Sub};
use std::time::Duration;

/// Nanoseconds since an arbitrary, fixed origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The origin.
    pub const ZERO: Timestamp = Timestamp(0);

    /// A timestamp `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Timestamp {
        Timestamp(nanos)
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, rhs: Duration) -> Timestamp {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(nanos))
    }
}

impl Sub for Timestamp {
    type Output = Duration;
    fn sub(self, rhs: Timestamp) -> Duration {
        self.saturating_since(rhs)
    }
}

/// A clock that turns [`std::time::Instant`]s into [`Timestamp`]s relative
/// to when it was made. Used by the runtime only.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: std::time::Instant,
}

impl MonotonicClock {
    /// Starts a clock at the current instant.
    pub fn start() -> MonotonicClock {
        MonotonicClock {
            origin: std::time::Instant::now(),
        }
    }

    /// The current timestamp.
    pub fn now(&self) -> Timestamp {
        Timestamp::ZERO + self.origin.elapsed()
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::start()
    }
}

/// A clock moved by hand, shared by its clones: runtime drivers under test
/// read it where they would read [`MonotonicClock`], so their time rules
/// run without sleeps.
#[derive(Debug, Clone, Default)]
pub struct SimulatedClock(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl SimulatedClock {
    /// The current timestamp.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_nanos(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.0
            .fetch_add(nanos, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Where a runtime driver reads the time.
#[derive(Debug, Clone)]
pub enum Clock {
    /// Real time.
    Monotonic(MonotonicClock),
    /// Moved by hand (tests).
    Simulated(SimulatedClock),
}

impl Clock {
    /// The current timestamp.
    pub fn now(&self) -> Timestamp {
        match self {
            Clock::Monotonic(c) => c.now(),
            Clock::Simulated(c) => c.now(),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::Monotonic(MonotonicClock::start())
    }
}

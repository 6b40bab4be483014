//! `congestion: delay` — a delay-based congestion controller for quinn
//! that keeps the standing queue at the path's bottleneck near
//! [`TARGET_DELAY`], so that a player's home link is never the place where
//! frames wait: they wait in the sender's own scheduler instead, where
//! sparse flows go first and CoDel sees the delay.
//!
//! quinn's CUBIC and NewReno grow until the bottleneck's buffer overflows
//! (a home router's 200 ms FIFO), and quinn's BBR, measured on a 20 Mbit/s
//! `tbf` link, kept 150–180 ms there too (README, "Game traffic first").
//!
//! The rule (in the spirit of LEDBAT, RFC 6817, and Copa's standing RTT,
//! with TCP's loss response): every acknowledged packet is an RTT sample
//! (ack time minus send time); the lowest sample of a round (half a
//! smoothed RTT, at least [`MIN_ROUND`]) is the standing RTT, which
//! scheduling jitter does not inflate, and the standing RTT minus the
//! lowest sample ever (the base) is the standing queue. Below the target
//! the window grows — doubling per round trip until the queue reaches half
//! the target or a loss (slow start), then by one datagram per window — and
//! above it the window shrinks in proportion to the excess, once per round.
//! A loss cuts it to 70 %, once per recovery period. The window never goes
//! below [`MIN_WINDOW_PACKETS`] datagrams. The base is replaced by the
//! minimum of the last [`BASE_WINDOW`] when that stays more than four
//! targets above it (a route change).
//!
//! Trade-off: like every delay-based controller it yields to loss-based
//! flows sharing the same bottleneck. On a player's own link that is what
//! a game wants.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics};

/// The standing queue the controller allows at the bottleneck.
pub const TARGET_DELAY: Duration = Duration::from_micros(1500);
/// The smallest window, in datagrams. The peer acknowledges every
/// `net::ACK_ELICITING_THRESHOLD` (10) packets or after `net::MAX_ACK_DELAY`
/// (2 ms), so a window this small waits for that timer when the path is
/// fast; a larger floor puts more packets in a slow link's queue. Measured
/// trade-off in README ("Game traffic first").
pub const MIN_WINDOW_PACKETS: u64 = crate::net::ACK_ELICITING_THRESHOLD as u64;
/// The first window, in datagrams (RFC 9002's 10).
pub const INITIAL_WINDOW_PACKETS: u64 = 10;
/// How long a higher minimum RTT must persist before it becomes the base.
pub const BASE_WINDOW: Duration = Duration::from_secs(10);

/// Builds [`DelayController`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct DelayConfig;

impl ControllerFactory for DelayConfig {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(DelayController::new(now, current_mtu))
    }
}

/// The controller's state.
#[derive(Debug, Clone)]
pub struct DelayController {
    mtu: u64,
    window: u64,
    slow_start: bool,
    /// Losses of packets sent before this do not cut the window again.
    recovery_start: Option<Instant>,
    /// The lowest RTT sample: the path without a queue.
    base: Option<Duration>,
    /// The lowest sample since `base_start`, for noticing a route change.
    base_window_min: Option<Duration>,
    base_start: Instant,
    /// The lowest sample of the current round (half a smoothed RTT): the
    /// standing RTT, which jitter does not inflate.
    round_min: Option<Duration>,
    round_start: Instant,
    /// Whether the last round's standing queue was above the target.
    above_target: bool,
}

/// The shortest measuring round (timers and ACKs are no finer).
pub const MIN_ROUND: Duration = Duration::from_millis(1);

impl DelayController {
    /// A controller for a path with this MTU.
    pub fn new(now: Instant, mtu: u16) -> DelayController {
        let mtu = u64::from(mtu);
        DelayController {
            mtu,
            window: INITIAL_WINDOW_PACKETS * mtu,
            slow_start: true,
            recovery_start: None,
            base: None,
            base_window_min: None,
            base_start: now,
            round_min: None,
            round_start: now,
            above_target: false,
        }
    }

    fn min_window(&self) -> u64 {
        MIN_WINDOW_PACKETS * self.mtu
    }

    /// Takes one RTT sample; at the end of a round, judges the standing
    /// queue and shrinks the window if it is above the target.
    fn sample(&mut self, now: Instant, sample: Duration, smoothed: Duration) {
        let base = self.base.map_or(sample, |b| b.min(sample));
        self.base = Some(base);
        self.base_window_min = Some(self.base_window_min.map_or(sample, |m| m.min(sample)));
        if now.saturating_duration_since(self.base_start) >= BASE_WINDOW {
            // A minimum that stayed well above the base for a whole window:
            // the path changed; that is the new base.
            if let Some(m) = self.base_window_min.take()
                && m > base + TARGET_DELAY * 4
            {
                self.base = Some(m);
            }
            self.base_start = now;
        }
        self.round_min = Some(self.round_min.map_or(sample, |m| m.min(sample)));
        if now.saturating_duration_since(self.round_start) < (smoothed / 2).max(MIN_ROUND) {
            return;
        }
        let standing = self.round_min.take().unwrap_or(sample);
        self.round_start = now;
        let queueing = standing.saturating_sub(self.base.unwrap_or(base));
        self.above_target = queueing > TARGET_DELAY;
        if self.slow_start && queueing >= TARGET_DELAY / 2 {
            self.slow_start = false;
        }
        if self.above_target {
            let excess = (queueing - TARGET_DELAY).as_secs_f64() / TARGET_DELAY.as_secs_f64();
            let factor = 1.0 - 0.3 * excess.min(1.0);
            self.window = ((self.window as f64 * factor) as u64).max(self.min_window());
        }
    }
}

impl Controller for DelayController {
    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &quinn_proto::RttEstimator,
    ) {
        self.sample(now, now.saturating_duration_since(sent), rtt.get());
        if self.above_target || app_limited {
            return;
        }
        if self.slow_start {
            self.window += bytes;
        } else {
            self.window += (self.mtu * bytes / self.window.max(1)).max(1);
        }
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        _lost_bytes: u64,
    ) {
        if self.recovery_start.is_some_and(|start| sent <= start) {
            return;
        }
        self.recovery_start = Some(now);
        self.slow_start = false;
        self.window = if is_persistent_congestion {
            self.min_window()
        } else {
            (self.window * 7 / 10).max(self.min_window())
        };
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.mtu = u64::from(new_mtu);
        self.window = self.window.max(self.min_window());
    }

    fn window(&self) -> u64 {
        self.window.max(self.min_window())
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut metrics = ControllerMetrics::default();
        metrics.congestion_window = self.window();
        metrics
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(self.clone())
    }

    fn initial_window(&self) -> u64 {
        INITIAL_WINDOW_PACKETS * self.mtu
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

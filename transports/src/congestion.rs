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
//! The rule (in the spirit of LEDBAT, RFC 6817, with TCP's loss response):
//! the queueing delay is the smoothed RTT minus the path's minimum RTT.
//! Below the target the window grows — doubling per round trip while the
//! delay is under half the target and nothing was lost yet (slow start),
//! then by one datagram per window — and above it the window shrinks in
//! proportion to the excess, at most once per round trip. A loss cuts it to
//! 70 %, once per recovery period. The window never goes below
//! [`MIN_WINDOW_PACKETS`] datagrams. The minimum RTT is quinn's lifetime
//! minimum, replaced by the minimum of the last [`BASE_WINDOW`] when that
//! stays more than four targets above it (a route change).
//!
//! Trade-off: like every delay-based controller it yields to loss-based
//! flows sharing the same bottleneck. On a player's own link that is what
//! a game wants.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics};

/// The standing queue the controller allows at the bottleneck.
pub const TARGET_DELAY: Duration = Duration::from_millis(3);
/// The smallest window, in datagrams.
pub const MIN_WINDOW_PACKETS: u64 = 4;
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
    last_decrease: Option<Instant>,
    /// The base RTT in force.
    base: Option<Duration>,
    /// quinn's lifetime minimum RTT when last looked at.
    seen_min: Duration,
    /// The lowest smoothed RTT seen since `window_start`.
    window_min: Option<Duration>,
    window_start: Instant,
}

impl DelayController {
    /// A controller for a path with this MTU.
    pub fn new(now: Instant, mtu: u16) -> DelayController {
        let mtu = u64::from(mtu);
        DelayController {
            mtu,
            window: INITIAL_WINDOW_PACKETS * mtu,
            slow_start: true,
            recovery_start: None,
            last_decrease: None,
            base: None,
            seen_min: Duration::MAX,
            window_min: None,
            window_start: now,
        }
    }

    fn min_window(&self) -> u64 {
        MIN_WINDOW_PACKETS * self.mtu
    }

    /// The base RTT: quinn's minimum, unless a higher minimum has held for
    /// a whole [`BASE_WINDOW`] (the path changed).
    fn base_rtt(&mut self, now: Instant, smoothed: Duration, lifetime_min: Duration) -> Duration {
        let mut base = self.base.unwrap_or(lifetime_min);
        if lifetime_min < self.seen_min {
            // A new lowest sample: the path is at least this fast.
            self.seen_min = lifetime_min;
            base = base.min(lifetime_min);
        }
        let window_min = self.window_min.map_or(smoothed, |m| m.min(smoothed));
        self.window_min = Some(window_min);
        if now.saturating_duration_since(self.window_start) >= BASE_WINDOW {
            if window_min > base + TARGET_DELAY * 4 {
                base = window_min;
            }
            self.window_min = None;
            self.window_start = now;
        }
        self.base = Some(base);
        base
    }
}

impl Controller for DelayController {
    fn on_ack(
        &mut self,
        now: Instant,
        _sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &quinn_proto::RttEstimator,
    ) {
        let smoothed = rtt.get();
        let base = self.base_rtt(now, smoothed, rtt.min());
        let queueing = smoothed.saturating_sub(base);
        if queueing <= TARGET_DELAY {
            if app_limited {
                return;
            }
            if self.slow_start && queueing < TARGET_DELAY / 2 {
                self.window += bytes;
            } else {
                self.slow_start = false;
                self.window += (self.mtu * bytes / self.window.max(1)).max(1);
            }
            return;
        }
        self.slow_start = false;
        if self
            .last_decrease
            .is_some_and(|t| now.saturating_duration_since(t) < smoothed)
        {
            return;
        }
        let excess = (queueing - TARGET_DELAY).as_secs_f64() / TARGET_DELAY.as_secs_f64();
        let factor = 1.0 - 0.3 * excess.min(1.0);
        self.window = ((self.window as f64 * factor) as u64).max(self.min_window());
        self.last_decrease = Some(now);
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

//! How much of the scheduler's output may wait in the connection's own
//! buffer (quinn's datagram send buffer) at once.
//!
//! quinn's buffer is a FIFO behind the congestion controller: whatever sits
//! there waits there, in arrival order, out of reach of the scheduler. So
//! the sender keeps it short — about `target` of sending time at the rate
//! the connection is measured to drain it — and the rest of the queue lives
//! in the scheduler, where sparse flows go first and CoDel sees the delay.
//!
//! The rate is measured, not guessed: bytes handed to the buffer minus
//! bytes still in it is what the connection has sent; over a wait during
//! which the buffer never ran dry, that over the time is its rate. A wake-up
//! that finds the buffer empty means the allowance was too small to cover
//! the wait (timers are coarse): it doubles — unless the connection's
//! congestion window was full then: the buffer ran dry because an
//! acknowledgement let its frames go, and nothing more could have left
//! (on a slow link, where a frame takes milliseconds to send, doubling on
//! those kept four frames in quinn's buffer, ahead of every sparse frame).
//! Sans-IO: occupancy, the window's state and a clock in, decisions out.

use std::time::Duration;

use crate::time::Timestamp;

/// What the sender should do with the next frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// Hand it to the connection now.
    Push,
    /// Keep it in the scheduler and look again after this long.
    Wait(Duration),
}

/// The shortest wait the sender is told to sleep (timers are no finer).
pub const MIN_WAIT: Duration = Duration::from_micros(500);

/// What the buffer may hold before the first measurement: four full frames.
pub const INITIAL_ALLOWANCE: usize = 4 * 1514;

/// The feeding state of one connection.
#[derive(Debug, Clone)]
pub struct Feeder {
    target: Duration,
    max: usize,
    allowance: usize,
    /// Bytes handed to the buffer so far.
    pushed: u64,
    /// Sent bytes and time at the start of the current wait.
    wait_start: Option<(Timestamp, u64)>,
    /// Measured drain rate, bytes per second (0: not measured yet).
    rate: f64,
    /// The connection's delivery rate as its congestion controller
    /// measures it, bytes per second (0: none).
    delivery_rate: f64,
    /// Whether the connection's congestion window has no room for another
    /// packet, as its controller last said (false: room, or not known).
    window_full: bool,
}

impl Feeder {
    /// A feeder that keeps about `target` of sending time in a buffer,
    /// never letting a frame go while `max` bytes or more wait there (so
    /// `max` must leave room in the buffer for the largest frame the
    /// sender hands over after a `Push`). Until the first measurement it allows
    /// [`INITIAL_ALLOWANCE`] (a burst into a slow path must not fill the
    /// whole buffer before the rate is known).
    pub fn new(target: Duration, max: usize) -> Feeder {
        Feeder {
            target,
            max,
            allowance: INITIAL_ALLOWANCE.min(max),
            pushed: 0,
            wait_start: None,
            rate: 0.0,
            delivery_rate: 0.0,
            window_full: false,
        }
    }

    /// Bytes the buffer may hold now.
    pub fn allowance(&self) -> usize {
        self.allowance
    }

    /// The measured drain rate in bytes per second (0 before a
    /// measurement).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Tells the feeder the connection's delivery rate as its congestion
    /// controller measures it (bytes per second; 0: none). It bounds how
    /// far a buffer found dry may grow the allowance: quinn's buffer drains
    /// in bursts whenever an acknowledgement opens the window, and judged
    /// on those alone the allowance doubled without end — on a 20 Mbit/s
    /// link it kept 15–30 KB (6–12 ms) in quinn's buffer, ahead of every
    /// frame. It is a bound, not the allowance itself: a connection fed
    /// only what it delivered would never deliver more (measured: UDP
    /// floods through a feeder sized by the delivery rate collapsed to a
    /// thousand frames a second).
    pub fn use_delivery_rate(&mut self, rate: f64) {
        self.delivery_rate = rate;
    }

    /// Tells the feeder whether the connection's congestion window has room
    /// for another packet now (`full`: none). A buffer found dry while the
    /// window is full was emptied by an acknowledgement, not starved: the
    /// connection could not have sent more, so the allowance does not grow.
    pub fn use_window_full(&mut self, full: bool) {
        self.window_full = full;
    }

    /// Decides about the next frame, given the bytes in the buffer now. A
    /// `Wait` starts a measurement that the next call completes.
    pub fn decide(&mut self, now: Timestamp, occupancy: usize) -> Feed {
        if let Some((since, sent_then)) = self.wait_start.take() {
            self.measure(now, since, sent_then, occupancy);
        }
        if occupancy < self.allowance {
            return Feed::Push;
        }
        self.wait_start = Some((now, self.sent(occupancy)));
        Feed::Wait(self.wait_for(occupancy))
    }

    /// Whether a frame of an idle flow may go to the buffer now although
    /// the feeder is waiting: while the buffer holds less than twice the
    /// allowance plus `slack`, so a sparse flow's frame (a game packet, a
    /// ping) does not wait for the next wake-up, while a flood of "new"
    /// flows is still bounded. A sender that can widen the connection's
    /// window for the frame (so that it and the bytes in front of it leave
    /// at once) passes a few full frames of slack: on a slow path the
    /// allowance is smaller than one frame, and a frame in the buffer would
    /// otherwise always hold the sparse one back.
    /// Never past the feeder's `max`: what the feeder lets go must fit.
    pub fn may_bypass(&self, occupancy: usize, slack: usize) -> bool {
        let bound = self.allowance.saturating_mul(2).saturating_add(slack);
        occupancy < bound.min(self.max)
    }

    /// The buffer is being emptied on purpose (the sender widened the
    /// connection's window for a sparse frame and what was in front of
    /// it): the wait under way measures nothing, and finding the buffer
    /// dry after it must not double the allowance.
    pub fn emptied_on_purpose(&mut self) {
        self.wait_start = None;
    }

    /// Records `len` bytes handed to the buffer.
    pub fn pushed(&mut self, len: usize) {
        self.pushed += len as u64;
    }

    fn sent(&self, occupancy: usize) -> u64 {
        self.pushed.saturating_sub(occupancy as u64)
    }

    fn measure(&mut self, now: Timestamp, since: Timestamp, sent_then: u64, occupancy: usize) {
        let elapsed = now - since;
        if occupancy == 0 {
            if self.window_full {
                // Dry, but the window let out all it could: more in the
                // buffer would only have waited there, ahead of whatever
                // comes next.
                return;
            }
            // Ran dry while we slept: the allowance did not cover the wait.
            // It doubles, up to twice what the connection delivers in the
            // wait (or the target, if longer) when that is known — but
            // never less than the first allowance, so that a connection
            // that was starved can always be fed more than it delivered.
            let doubled = self.allowance.saturating_mul(2);
            let cap = if self.delivery_rate > 0.0 {
                let span = elapsed.max(self.target).as_secs_f64();
                ((2.0 * self.delivery_rate * span) as usize).max(INITIAL_ALLOWANCE)
            } else {
                self.max
            };
            self.allowance = doubled.min(cap).min(self.max);
            return;
        }
        if elapsed < MIN_WAIT / 2 {
            return;
        }
        let sample = self.sent(occupancy).saturating_sub(sent_then) as f64 / elapsed.as_secs_f64();
        self.rate = if self.rate == 0.0 {
            sample
        } else {
            0.75 * self.rate + 0.25 * sample
        };
        let wanted = (self.rate * self.target.as_secs_f64()) as usize;
        // An empty buffer always takes a frame, so 1 byte is the floor.
        self.allowance = wanted.clamp(1, self.max);
    }

    fn wait_for(&self, occupancy: usize) -> Duration {
        if self.rate <= 0.0 {
            return self.target / 2;
        }
        let excess = occupancy.saturating_sub(self.allowance / 2) as f64;
        // A stalled path decays the rate towards zero: the wait it implies
        // may be too long for a Duration (a panic in from_secs_f64), and is
        // capped at the target anyway.
        Duration::try_from_secs_f64(excess / self.rate)
            .unwrap_or(self.target)
            // (A target below MIN_WAIT waits the target: clamp panics on
            // a minimum above the maximum.)
            .clamp(MIN_WAIT.min(self.target), self.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: f64) -> Timestamp {
        Timestamp::from_nanos((ms * 1e6) as u64)
    }

    /// A buffer that drains at `rate` bytes per second, fed by a feeder
    /// that is always backlogged with 1000-byte frames.
    fn simulate(rate: f64, target: Duration, ms: u64) -> (Feeder, Vec<usize>, u64) {
        let mut feeder = Feeder::new(target, 1 << 20);
        let (mut occupancy, mut sent, mut t) = (0usize, 0u64, 0.0f64);
        let mut occupancies = Vec::new();
        while t < ms as f64 {
            match feeder.decide(at(t), occupancy) {
                Feed::Push => {
                    occupancy += 1000;
                    feeder.pushed(1000);
                }
                Feed::Wait(d) => {
                    // Timers fire on a 1 ms grid at the earliest.
                    let wait = (d.as_secs_f64() * 1e3).ceil().max(1.0);
                    let drained = ((rate * wait / 1e3) as usize).min(occupancy);
                    occupancy -= drained;
                    sent += drained as u64;
                    t += wait;
                    occupancies.push(occupancy);
                }
            }
        }
        (feeder, occupancies, sent)
    }

    #[test]
    fn learns_a_slow_rate_and_keeps_the_buffer_short() {
        // 5 Mbit/s = 625,000 B/s: 2 ms is 1250 bytes.
        let (feeder, occupancies, sent) = simulate(625_000.0, Duration::from_millis(2), 2000);
        assert!(
            (feeder.rate() - 625_000.0).abs() < 100_000.0,
            "{}",
            feeder.rate()
        );
        let late = &occupancies[occupancies.len() / 2..];
        let worst = late.iter().max().copied().unwrap_or(0);
        // A few ms of sending at most, not the 1 MiB the buffer could hold.
        assert!(worst <= 4000, "worst occupancy {worst}");
        // And the link is kept busy: at least 90 % of what it could send.
        assert!(sent as f64 >= 0.9 * 625_000.0 * 2.0, "sent {sent}");
    }

    #[test]
    fn a_fast_rate_is_not_starved_by_coarse_timers() {
        // 1 Gbit/s = 125 MB/s with 1 ms timers.
        let (feeder, _, sent) = simulate(125e6, Duration::from_millis(2), 1000);
        assert!(feeder.allowance() >= 125_000, "{}", feeder.allowance());
        assert!(sent as f64 >= 0.9 * 125e6, "sent {sent}");
    }

    #[test]
    fn a_stalled_path_never_breaks_the_feeder() {
        // The buffer stops draining (a peer that stops reading): every
        // measurement sees nothing sent, and the rate decays towards zero
        // (it reached a subnormal value and made the wait overflow a
        // Duration, a panic in the relay's pump, before the fix).
        let mut feeder = Feeder::new(Duration::from_millis(1), 1 << 20);
        let mut t = 0.0;
        feeder.pushed(100_000);
        let _ = feeder.decide(at(t), 100_000);
        t += 1.0;
        let _ = feeder.decide(at(t), 50_000); // 50 kB drained: a real rate
        for _ in 0..100_000 {
            t += 1.0;
            match feeder.decide(at(t), 50_000) {
                Feed::Wait(d) => assert!(d <= Duration::from_millis(1)),
                Feed::Push => {}
            }
        }
        assert!(feeder.rate() < 1e-100, "{}", feeder.rate());
    }

    #[test]
    fn a_buffer_emptied_on_purpose_does_not_grow_the_allowance() {
        let mut feeder = Feeder::new(Duration::from_millis(2), 1 << 20);
        feeder.pushed(INITIAL_ALLOWANCE);
        assert!(matches!(
            feeder.decide(at(0.0), INITIAL_ALLOWANCE),
            Feed::Wait(_)
        ));
        // The sender let everything go at once (window credit for a sparse
        // frame): the dry buffer says nothing about the allowance.
        feeder.emptied_on_purpose();
        assert_eq!(feeder.decide(at(1.0), 0), Feed::Push);
        assert_eq!(feeder.allowance(), INITIAL_ALLOWANCE);
        // A sparse frame may pass a full buffer by the slack it is given.
        assert!(!feeder.may_bypass(2 * INITIAL_ALLOWANCE, 0));
        assert!(feeder.may_bypass(2 * INITIAL_ALLOWANCE, 1));
    }

    #[test]
    fn a_known_delivery_rate_bounds_the_growth_of_a_buffer_found_dry() {
        // 20 Mbit/s = 2.5 MB/s, wake-ups 4 ms apart: a buffer found dry
        // after each wait (the window opened and quinn sent everything at
        // once) may hold what twice a wait takes at that rate, 20 kB, no
        // more. Without the rate it doubles at every wake-up.
        for (rate, bound) in [(2.5e6, 20_000), (0.0, 1 << 20)] {
            let mut feeder = Feeder::new(Duration::from_millis(1), 1 << 20);
            feeder.use_delivery_rate(rate);
            let mut t = 0.0;
            for _ in 0..40 {
                let allowance = feeder.allowance();
                feeder.pushed(allowance);
                assert!(matches!(feeder.decide(at(t), allowance), Feed::Wait(_)));
                t += 4.0;
                assert_eq!(feeder.decide(at(t), 0), Feed::Push);
            }
            assert_eq!(feeder.allowance(), bound);
        }
        // A starved connection delivers little; a dry buffer still grows to
        // the first allowance, or it would stay starved.
        let mut feeder = Feeder::new(Duration::from_millis(1), 1 << 20);
        feeder.use_delivery_rate(1_000.0);
        // One byte left in a millisecond: the allowance falls to a byte.
        feeder.pushed(INITIAL_ALLOWANCE);
        let _ = feeder.decide(at(0.0), INITIAL_ALLOWANCE);
        let _ = feeder.decide(at(1.0), INITIAL_ALLOWANCE - 1);
        assert_eq!(feeder.allowance(), 1);
        let mut t = 2.0;
        for _ in 0..20 {
            let allowance = feeder.allowance();
            feeder.pushed(allowance);
            let _ = feeder.decide(at(t), allowance);
            t += 1.0;
            let _ = feeder.decide(at(t), 0);
        }
        assert_eq!(feeder.allowance(), INITIAL_ALLOWANCE);
    }

    #[test]
    fn an_empty_buffer_always_takes_a_frame() {
        let mut feeder = Feeder::new(Duration::from_millis(2), 8192);
        assert_eq!(feeder.allowance(), INITIAL_ALLOWANCE);
        assert_eq!(feeder.decide(at(0.0), 0), Feed::Push);
        feeder.pushed(INITIAL_ALLOWANCE);
        assert!(matches!(
            feeder.decide(at(0.0), INITIAL_ALLOWANCE),
            Feed::Wait(_)
        ));
        // It ran dry while waiting: the allowance doubles, but never past
        // what the buffer holds.
        assert_eq!(feeder.decide(at(5.0), 0), Feed::Push);
        assert_eq!(feeder.allowance(), 8192);
    }

    #[test]
    fn a_target_below_the_shortest_wait_is_waited() {
        let target = MIN_WAIT / 4;
        let mut feeder = Feeder::new(target, 1 << 20);
        assert_eq!(feeder.decide(at(0.0), 0), Feed::Push);
        feeder.pushed(INITIAL_ALLOWANCE);
        assert!(matches!(
            feeder.decide(at(0.0), INITIAL_ALLOWANCE),
            Feed::Wait(_)
        ));
        // Half of it left in 1 ms: 3 MB/s, an allowance of 378 bytes, and
        // 2.8 KB to go would take about 1 ms — the wait is the target.
        assert_eq!(
            feeder.decide(at(1.0), INITIAL_ALLOWANCE / 2),
            Feed::Wait(target)
        );
    }

    #[test]
    fn nothing_goes_once_the_buffer_holds_max() {
        // A connection found dry again and again (no delivery rate known)
        // grows the allowance to `max`; neither a push nor a sparse
        // frame's bypass may then go while `max` bytes wait, whatever the
        // slack: the sender's frame would not fit in quinn's buffer and
        // would be dropped after all its work (measured: 357k frames in a
        // 5 s flood, before this bound).
        let max = 64 * 1024;
        let mut feeder = Feeder::new(Duration::from_millis(1), max);
        for i in 0..20 {
            assert_eq!(feeder.decide(at(i as f64), 0), Feed::Push);
            feeder.pushed(max);
            assert!(matches!(feeder.decide(at(i as f64), max), Feed::Wait(_)));
        }
        assert_eq!(feeder.allowance(), max);
        assert!(feeder.may_bypass(max - 1, 0));
        assert!(!feeder.may_bypass(max, 0));
        assert!(!feeder.may_bypass(max, 1 << 20));
    }

    #[test]
    fn a_buffer_emptied_by_a_full_window_does_not_grow_the_allowance() {
        // 5 Mbit/s: a full frame takes 2.3 ms to send, and the pump wakes
        // every millisecond. The window holds two packets; each ACK lets
        // the one frame waiting in quinn's buffer go and the window is full
        // again. Waking to find the buffer dry then is no starvation.
        for (window_full, grows) in [(true, false), (false, true)] {
            let mut feeder = Feeder::new(Duration::from_millis(1), 1 << 20);
            feeder.use_delivery_rate(625_000.0);
            feeder.pushed(INITIAL_ALLOWANCE);
            let _ = feeder.decide(at(0.0), INITIAL_ALLOWANCE);
            // 625 bytes sent in a millisecond: the allowance is that much.
            let _ = feeder.decide(at(1.0), INITIAL_ALLOWANCE - 625);
            let before = feeder.allowance();
            assert_eq!(before, 625);
            let mut t = 1.0;
            for _ in 0..20 {
                feeder.pushed(1400);
                let _ = feeder.decide(at(t), 1400);
                t += 1.0;
                feeder.use_window_full(window_full);
                assert_eq!(feeder.decide(at(t), 0), Feed::Push);
                feeder.use_window_full(false);
            }
            let after = feeder.allowance();
            assert_eq!(after > before, grows, "{before} -> {after}");
            if !grows {
                // One frame at a time: a sparse frame that comes next waits
                // behind at most that one in quinn's buffer.
                assert_eq!(after, before);
            }
        }
    }
}

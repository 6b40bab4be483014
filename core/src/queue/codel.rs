//! CoDel (RFC 8289) on one flow queue: drops (or marks) from the head of a
//! queue whose frames have waited longer than `target` for at least
//! `interval`, at a rate that grows with the square root of the drop count
//! until the standing queue is gone.
//!
//! Follows the RFC's pseudocode (`dodequeue`, `dequeue`, `control_law`),
//! with Linux's ECN rule: in place of a drop, an ECN-capable packet is
//! marked CE and delivered.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;

use super::ecn;
use super::stats::QueueStats;
use crate::time::Timestamp;

/// One queued frame and when it was queued.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The frame.
    pub frame: Bytes,
    /// When it entered the scheduler.
    pub enqueued: Timestamp,
}

/// A FIFO of frames with its byte count.
#[derive(Debug, Default)]
pub struct FlowQueue {
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl FlowQueue {
    /// Appends a frame.
    pub fn push(&mut self, entry: Entry) {
        self.bytes += entry.frame.len();
        self.entries.push_back(entry);
    }

    /// Removes the oldest frame.
    pub fn pop(&mut self) -> Option<Entry> {
        let entry = self.entries.pop_front()?;
        self.bytes -= entry.frame.len();
        Some(entry)
    }

    /// Frame bytes queued.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Frames queued.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// CoDel's settings.
#[derive(Debug, Clone, Copy)]
pub struct CodelParams {
    /// Acceptable standing queue delay (RFC 8289: 5 ms).
    pub target: Duration,
    /// How long the delay must stay above target before dropping; about a
    /// worst-case RTT (RFC 8289: 100 ms).
    pub interval: Duration,
    /// Mark ECN-capable packets CE instead of dropping them.
    pub ecn: bool,
    /// A queue holding at most this many bytes is never dropped from (one
    /// full frame: the RFC's `maxpacket`).
    pub max_packet: usize,
}

/// The per-queue CoDel state (RFC 8289 §5).
#[derive(Debug, Clone, Copy, Default)]
pub struct Codel {
    first_above_time: Option<Timestamp>,
    drop_next: Timestamp,
    count: u32,
    lastcount: u32,
    dropping: bool,
}

impl Codel {
    fn control_law(t: Timestamp, interval: Duration, count: u32) -> Timestamp {
        t + interval.div_f64(f64::from(count.max(1)).sqrt())
    }

    /// Pops the head and says whether CoDel may drop it.
    fn dodequeue(
        &mut self,
        p: &CodelParams,
        now: Timestamp,
        queue: &mut FlowQueue,
    ) -> (Option<Entry>, bool) {
        let Some(entry) = queue.pop() else {
            self.first_above_time = None;
            return (None, false);
        };
        let sojourn = now - entry.enqueued;
        let mut ok_to_drop = false;
        if sojourn < p.target || queue.bytes() <= p.max_packet {
            self.first_above_time = None;
        } else {
            match self.first_above_time {
                None => self.first_above_time = Some(now + p.interval),
                Some(t) if now >= t => ok_to_drop = true,
                Some(_) => {}
            }
        }
        (Some(entry), ok_to_drop)
    }

    /// The next frame to send from `queue`, after the drops (or marks)
    /// CoDel decides on; drops are counted in `stats`.
    pub fn dequeue(
        &mut self,
        p: &CodelParams,
        now: Timestamp,
        queue: &mut FlowQueue,
        stats: &mut QueueStats,
    ) -> Option<Bytes> {
        let (mut entry, ok_to_drop) = self.dodequeue(p, now, queue);
        let Some(mut current) = entry.take() else {
            self.dropping = false;
            return None;
        };
        if self.dropping {
            if !ok_to_drop {
                self.dropping = false;
            }
            while self.dropping && now >= self.drop_next {
                self.count = self.count.saturating_add(1);
                current = match self.mark_or_drop(p, current, stats) {
                    Ok(marked) => {
                        self.drop_next = Self::control_law(self.drop_next, p.interval, self.count);
                        return Some(marked);
                    }
                    Err(()) => {
                        let (next, ok) = self.dodequeue(p, now, queue);
                        let Some(next) = next else {
                            self.dropping = false;
                            return None;
                        };
                        if ok {
                            self.drop_next =
                                Self::control_law(self.drop_next, p.interval, self.count);
                        } else {
                            self.dropping = false;
                        }
                        next
                    }
                };
            }
            Some(current.frame)
        } else if ok_to_drop {
            let delivered = match self.mark_or_drop(p, current, stats) {
                Ok(marked) => Some(marked),
                Err(()) => self.dodequeue(p, now, queue).0.map(|e| e.frame),
            };
            self.dropping = true;
            let delta = self.count.saturating_sub(self.lastcount);
            self.count = if delta > 1 && now - self.drop_next < p.interval * 16 {
                delta
            } else {
                1
            };
            self.drop_next = Self::control_law(now, p.interval, self.count);
            self.lastcount = self.count;
            delivered
        } else {
            Some(current.frame)
        }
    }

    /// Marks an ECN-capable frame (returned, to be sent) or drops it.
    fn mark_or_drop(
        &mut self,
        p: &CodelParams,
        entry: Entry,
        stats: &mut QueueStats,
    ) -> Result<Bytes, ()> {
        if p.ecn
            && let Ok(marked) = ecn::mark_ce(entry.frame)
        {
            stats.ce_marks += 1;
            return Ok(marked);
        }
        stats.codel_drops += 1;
        Err(())
    }
}

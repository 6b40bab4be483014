//! Egress queuing in front of a QUIC connection: where frames wait when the
//! path is slower than what the room sends it, and who goes first.
//!
//! Sans-IO like the pipeline: frames and a [`Timestamp`] in, frames out,
//! drops and marks counted in [`QueueStats`]. The QUIC sender owns one
//! [`Scheduler`] per connection and a [`Feeder`] that decides how much of
//! the scheduler's output may sit in quinn's own buffer at once.
//!
//! - [`flow`]: which inner flow a frame belongs to (keyed hash).
//! - [`codel`]: CoDel (RFC 8289) on one flow queue.
//! - [`fq`]: FQ-CoDel (RFC 8290): DRR++ over flow queues, CoDel on each.
//! - [`ecn`]: setting CE on the inner IPv4/IPv6 packet.
//! - [`feed`]: keeping the downstream (quinn) buffer short.
//! - [`stats`]: the counters.

pub mod codel;
pub mod ecn;
pub mod feed;
pub mod flow;
pub mod fq;
pub mod stats;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use crate::config::{ConfigDuration, ConfigSize};
use crate::time::Timestamp;
use codel::CodelParams;
pub use feed::{Feed, Feeder};
pub use fq::FqCodel;
pub use stats::QueueStats;

/// The largest frame a flow may send per DRR round (RFC 8290's quantum:
/// one full-size frame).
pub const QUANTUM: usize = 1514;

/// How frames wait for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Discipline {
    /// Flow-fair queuing with CoDel on every flow (RFC 8290): new and
    /// sparse flows (game packets, pings, ARP) go before bulk ones.
    FqCodel,
    /// One first-in first-out queue with tail drop at `limit`: what a
    /// plain tunnel does, kept for comparison.
    Fifo,
}

impl crate::registry::KeyType for QueueSettings {
    const NAME: &'static str = "map";
}

/// `queue` settings of a QUIC port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// `discipline`: `fq-codel` (default) or `fifo`.
    #[serde(default = "default_discipline")]
    pub discipline: Discipline,
    /// `target`: CoDel's acceptable standing delay. Default 5ms.
    #[serde(default = "default_target")]
    pub target: ConfigDuration,
    /// `interval`: CoDel's interval, about a worst-case round trip.
    /// Default 100ms.
    #[serde(default = "default_interval")]
    pub interval: ConfigDuration,
    /// `limit`: bytes queued per connection at most (frames plus 64 bytes
    /// each). Default 4MiB: 20 ms at the 1.6 Gbit/s a relay forwards on
    /// two cores, so a stall of the host is absorbed and CoDel, not the
    /// limit, decides what a standing queue loses (README, "Game traffic
    /// first").
    #[serde(default = "default_limit")]
    pub limit: ConfigSize,
    /// `flows`: flow queues per connection (fq-codel). Default 1024.
    #[serde(default = "default_flows")]
    pub flows: usize,
    /// `ecn`: mark ECN-capable packets CE instead of dropping them.
    /// Default true.
    #[serde(default = "default_true")]
    pub ecn: bool,
    /// `quic_buffer`: how much the scheduler lets wait inside quinn's own
    /// datagram buffer, in time at the connection's measured send rate.
    /// Default 1ms.
    #[serde(default = "default_quic_buffer")]
    pub quic_buffer: ConfigDuration,
}

fn default_discipline() -> Discipline {
    Discipline::FqCodel
}
fn default_target() -> ConfigDuration {
    ConfigDuration(Duration::from_millis(5))
}
fn default_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_millis(100))
}
fn default_limit() -> ConfigSize {
    ConfigSize(4 << 20)
}
fn default_flows() -> usize {
    1024
}
fn default_true() -> bool {
    true
}
fn default_quic_buffer() -> ConfigDuration {
    ConfigDuration(Duration::from_millis(1))
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            discipline: default_discipline(),
            target: default_target(),
            interval: default_interval(),
            limit: default_limit(),
            flows: default_flows(),
            ecn: true,
            quic_buffer: default_quic_buffer(),
        }
    }
}

impl QueueSettings {
    /// Checks the values; each error names the key below `queue`.
    pub fn check(&self) -> Vec<(&'static str, String)> {
        let mut errors = Vec::new();
        if self.target.0.is_zero() || self.target.0 > Duration::from_secs(1) {
            errors.push(("target", "must be between 1ms and 1s".into()));
        }
        if self.interval.0 < self.target.0 || self.interval.0 > Duration::from_secs(10) {
            errors.push((
                "interval",
                "must be at least `target` and at most 10s".into(),
            ));
        }
        if self.limit.0 < 16 * 1024 || self.limit.0 > 1 << 30 {
            errors.push(("limit", "must be between 16KiB and 1GiB".into()));
        }
        if !(1..=65_536).contains(&self.flows) {
            errors.push(("flows", "must be between 1 and 65536".into()));
        }
        if self.quic_buffer.0.is_zero() || self.quic_buffer.0 > Duration::from_millis(100) {
            errors.push(("quic_buffer", "must be between 1ms and 100ms".into()));
        }
        errors
    }
}

/// A connection's egress queue: [`FqCodel`] or a FIFO.
#[derive(Debug)]
pub struct Scheduler {
    kind: Kind,
    stats: QueueStats,
}

#[derive(Debug)]
enum Kind {
    FqCodel(FqCodel),
    Fifo {
        queue: VecDeque<Bytes>,
        bytes: usize,
        limit: usize,
    },
}

impl Scheduler {
    /// A scheduler for `settings`; `max_packet` is the largest frame the
    /// connection carries (CoDel never drops from a queue holding at most
    /// one such frame).
    pub fn new(settings: &QueueSettings, max_packet: usize) -> Scheduler {
        let limit = usize::try_from(settings.limit.0).unwrap_or(usize::MAX);
        let kind = match settings.discipline {
            Discipline::FqCodel => Kind::FqCodel(FqCodel::new(
                settings.flows,
                limit,
                QUANTUM,
                CodelParams {
                    target: settings.target.0,
                    interval: settings.interval.0,
                    ecn: settings.ecn,
                    max_packet,
                },
            )),
            Discipline::Fifo => Kind::Fifo {
                queue: VecDeque::new(),
                bytes: 0,
                limit,
            },
        };
        Scheduler {
            kind,
            stats: QueueStats::default(),
        }
    }

    /// Queues a frame (or drops it, or another, when over the limit).
    pub fn enqueue(&mut self, now: Timestamp, frame: Bytes) {
        match &mut self.kind {
            Kind::FqCodel(fq) => fq.enqueue(now, frame, &mut self.stats),
            Kind::Fifo {
                queue,
                bytes,
                limit,
            } => {
                if *bytes + frame.len() + fq::FRAME_COST > *limit {
                    self.stats.overflow_drops += 1;
                    return;
                }
                self.stats.enqueued += 1;
                *bytes += frame.len() + fq::FRAME_COST;
                queue.push_back(frame);
            }
        }
    }

    /// The next frame to send.
    pub fn dequeue(&mut self, now: Timestamp) -> Option<Bytes> {
        match &mut self.kind {
            Kind::FqCodel(fq) => fq.dequeue(now, &mut self.stats),
            Kind::Fifo { queue, bytes, .. } => {
                let frame = queue.pop_front()?;
                *bytes -= frame.len() + fq::FRAME_COST;
                self.stats.dequeued += 1;
                Some(frame)
            }
        }
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        match &self.kind {
            Kind::FqCodel(fq) => fq.backlog().0 == 0,
            Kind::Fifo { queue, .. } => queue.is_empty(),
        }
    }

    /// Whether `frame` belongs to a flow with nothing waiting (fq-codel),
    /// so that it may go ahead of the queued frames of other flows. A FIFO
    /// has no flows: always false.
    pub fn flow_is_idle(&self, frame: &[u8]) -> bool {
        match &self.kind {
            Kind::FqCodel(fq) => fq.flow_is_idle(frame),
            Kind::Fifo { .. } => false,
        }
    }

    /// Drops everything waiting (counted `flushed`).
    pub fn flush(&mut self) {
        let dropped = match &mut self.kind {
            Kind::FqCodel(fq) => fq.clear(),
            Kind::Fifo { queue, bytes, .. } => {
                *bytes = 0;
                queue.drain(..).count()
            }
        };
        self.stats.flushed += dropped as u64;
    }

    /// Counters, with the backlog as it is now.
    pub fn stats(&self) -> QueueStats {
        let (frames, bytes, flows) = match &self.kind {
            Kind::FqCodel(fq) => fq.backlog(),
            Kind::Fifo { queue, bytes, .. } => (
                queue.len(),
                bytes.saturating_sub(queue.len() * fq::FRAME_COST),
                usize::from(!queue.is_empty()),
            ),
        };
        QueueStats {
            backlog_frames: frames as u64,
            backlog_bytes: bytes as u64,
            active_flows: flows as u64,
            ..self.stats
        }
    }
}

//! What a scheduler counts: frames in and out, drops and marks by reason,
//! and its backlog.

use serde::Serialize;

/// Counters and gauges of one scheduler (a plain struct: the scheduler is
/// sans-IO and its owner snapshots it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct QueueStats {
    /// Frames accepted into the queue.
    pub enqueued: u64,
    /// Frames handed on to be sent.
    pub dequeued: u64,
    /// Frames dropped because the queue was over its byte limit (from the
    /// head of the fattest flow under fq-codel, the arriving frame under
    /// fifo).
    pub overflow_drops: u64,
    /// Frames dropped by CoDel from the head of a standing queue.
    pub codel_drops: u64,
    /// ECN-capable frames marked CE by CoDel instead of being dropped.
    pub ce_marks: u64,
    /// Frames dropped when the queue was flushed (the connection went away).
    pub flushed: u64,
    /// Frame bytes waiting now.
    pub backlog_bytes: u64,
    /// Frames waiting now.
    pub backlog_frames: u64,
    /// Flows with frames waiting (or on the scheduler's lists) now.
    pub active_flows: u64,
}

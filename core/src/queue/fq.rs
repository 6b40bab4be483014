//! FQ-CoDel (RFC 8290): frames hashed into flow queues, served by deficit
//! round robin with new (sparse) flows ahead of old (bulk) ones, and CoDel
//! on every flow queue.
//!
//! Memory is bounded by `limit` (frame bytes over all flows, plus a fixed
//! cost per frame): on overflow the head of the fattest flow is dropped, as
//! Linux's fq_codel does, so a flood cannot push out a sparse flow.

use std::collections::VecDeque;

use bytes::Bytes;

use super::codel::{Codel, CodelParams, Entry, FlowQueue};
use super::flow::FlowHasher;
use super::stats::QueueStats;
use crate::time::Timestamp;

/// Bookkeeping charged per queued frame on top of its length, so that a
/// flood of tiny frames is bounded too.
pub const FRAME_COST: usize = 64;

#[derive(Debug, Default)]
struct Flow {
    queue: FlowQueue,
    codel: Codel,
    deficit: i64,
    /// On the new or the old list.
    listed: bool,
}

/// An FQ-CoDel scheduler.
#[derive(Debug)]
pub struct FqCodel {
    flows: Vec<Flow>,
    new_flows: VecDeque<usize>,
    old_flows: VecDeque<usize>,
    hasher: FlowHasher,
    params: CodelParams,
    quantum: i64,
    limit: usize,
    /// Frame bytes plus [`FRAME_COST`] per frame, over all flows.
    memory: usize,
    frames: usize,
    bytes: usize,
}

impl FqCodel {
    /// A scheduler with `flows` flow queues (at least 1), a memory `limit`
    /// in bytes and a DRR `quantum` in bytes.
    pub fn new(flows: usize, limit: usize, quantum: usize, params: CodelParams) -> FqCodel {
        FqCodel {
            flows: (0..flows.max(1)).map(|_| Flow::default()).collect(),
            new_flows: VecDeque::new(),
            old_flows: VecDeque::new(),
            hasher: FlowHasher::default(),
            params,
            quantum: quantum.max(1) as i64,
            limit,
            memory: 0,
            frames: 0,
            bytes: 0,
        }
    }

    /// The flow queue `frame` hashes to.
    fn flow_index(&self, frame: &[u8]) -> usize {
        (self.hasher.hash(frame) % self.flows.len() as u64) as usize
    }

    /// Queues a frame in its flow; drops from the fattest flow while over
    /// the limit.
    pub fn enqueue(&mut self, now: Timestamp, frame: Bytes, stats: &mut QueueStats) {
        let index = self.flow_index(&frame);
        self.frames += 1;
        self.bytes += frame.len();
        self.memory += frame.len() + FRAME_COST;
        stats.enqueued += 1;
        let flow = &mut self.flows[index];
        flow.queue.push(Entry {
            frame,
            enqueued: now,
        });
        if !flow.listed {
            flow.listed = true;
            flow.deficit = self.quantum;
            self.new_flows.push_back(index);
        }
        if self.memory > self.limit {
            stats.overflow_drops += self.drop_from_fattest() as u64;
        }
    }

    /// Drops from the head of the fattest flow until under the limit, with
    /// some slack (a sixteenth) so a flood pays for one scan per batch of
    /// drops, not per frame, as Linux's fq_codel batches its drops.
    fn drop_from_fattest(&mut self) -> usize {
        let low = self.limit - self.limit / 16;
        let mut dropped = 0;
        while self.memory > low {
            let Some(fattest) = (0..self.flows.len()).max_by_key(|&i| self.flows[i].queue.bytes())
            else {
                break;
            };
            let mut progress = false;
            while self.memory > low {
                let Some(entry) = self.flows[fattest].queue.pop() else {
                    break;
                };
                self.forget(entry.frame.len(), 1);
                dropped += 1;
                progress = true;
            }
            if !progress {
                break;
            }
        }
        dropped
    }

    fn forget(&mut self, bytes: usize, frames: usize) {
        self.frames -= frames;
        self.bytes -= bytes;
        self.memory -= bytes + frames * FRAME_COST;
    }

    /// The next frame to send, or `None` when every flow is empty.
    pub fn dequeue(&mut self, now: Timestamp, stats: &mut QueueStats) -> Option<Bytes> {
        loop {
            let (index, from_new) = match self.new_flows.front() {
                Some(&i) => (i, true),
                None => (*self.old_flows.front()?, false),
            };
            let flow = &mut self.flows[index];
            if flow.deficit <= 0 {
                flow.deficit += self.quantum;
                self.pop_list(from_new);
                self.old_flows.push_back(index);
                continue;
            }
            let (bytes_before, frames_before) = (flow.queue.bytes(), flow.queue.len());
            let frame = flow
                .codel
                .dequeue(&self.params, now, &mut flow.queue, stats);
            let (bytes_after, frames_after) = (flow.queue.bytes(), flow.queue.len());
            if let Some(frame) = &frame {
                flow.deficit -= frame.len() as i64;
            }
            self.forget(bytes_before - bytes_after, frames_before - frames_after);
            match frame {
                Some(frame) => {
                    stats.dequeued += 1;
                    return Some(frame);
                }
                None => {
                    // Empty: a new flow goes behind the old ones once (so it
                    // cannot stay "new" by sending in bursts), an old one
                    // leaves the lists.
                    self.pop_list(from_new);
                    if from_new && !self.old_flows.is_empty() {
                        self.old_flows.push_back(index);
                    } else {
                        self.flows[index].listed = false;
                    }
                }
            }
        }
    }

    fn pop_list(&mut self, from_new: bool) {
        if from_new {
            self.new_flows.pop_front();
        } else {
            self.old_flows.pop_front();
        }
    }

    /// Whether `frame`'s flow has nothing queued and is on neither list: a
    /// frame of it would be served first as a new flow.
    pub fn flow_is_idle(&self, frame: &[u8]) -> bool {
        !self.flows[self.flow_index(frame)].listed
    }

    /// Drops everything; returns how many frames.
    pub fn clear(&mut self) -> usize {
        let frames = self.frames;
        for flow in &mut self.flows {
            *flow = Flow::default();
        }
        self.new_flows.clear();
        self.old_flows.clear();
        (self.frames, self.bytes, self.memory) = (0, 0, 0);
        frames
    }

    /// Frames and frame bytes waiting, and flows on the lists.
    pub fn backlog(&self) -> (usize, usize, usize) {
        (
            self.frames,
            self.bytes,
            self.new_flows.len() + self.old_flows.len(),
        )
    }
}

//! Frames between a QUIC connection and a room link, in both directions,
//! with every drop counted: the peer → room path, and the room → peer
//! sender with its egress scheduler (FQ-CoDel) and pump. Shared by the
//! relay and the client session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use lanparty_core::control::PeerStats;
use lanparty_core::queue::{Feed, Feeder, QueueSettings, QueueStats, Scheduler};
use lanparty_core::runtime::{LinkHandle, LinkSink, Metrics};
use lanparty_core::time::{MonotonicClock, Timestamp};
use lanparty_core::wire::compress::{self, CompressError, Compressor, Decompressor, Encoding};
use lanparty_core::wire::fragment::{
    self, FragmentHeader, Reassembled, Reassembler, ReassemblyBudget, ReassemblyLimits,
    ReassemblyStats,
};
use lanparty_core::wire::overlay::{self, OverlayError, OverlayPayload};
use serde::Serialize;
use tokio::sync::Notify;

use crate::congestion::ControllerShare;
use crate::net::{Chunks, DatagramEncoder};
use crate::quic_loop::{DatagramRefused, LoopConn, Refill};

mod counters;
mod sender;

pub use counters::{DatapathCounters, DatapathSnapshot, datapath_metrics};
use counters::{add_deltas, bump};
pub use sender::{PeerSender, QUIC_DATAGRAM_BUFFER};

/// Datagrams a session hands the room as one batch, at most.
pub const DATAGRAM_BATCH: usize = 64;

/// Reassembly bounds for a connection to a room of `mtu`: the default
/// counts and timeout, frames no longer than the room carries.
pub fn reassembly_limits(mtu: u16) -> ReassemblyLimits {
    ReassemblyLimits {
        max_frame: lanparty_core::wire::mtu::max_frame_len(mtu),
        ..ReassemblyLimits::default()
    }
}

/// Bytes of partial frames a whole relay holds at most (every peer's
/// reassembly together).
pub const RELAY_REASSEMBLY_BYTES: usize = 32 * 1024 * 1024;

/// The peer → room direction of one connection: whole frames go to the
/// room as slices of their datagram; fragments are put back together first,
/// and compressed frames rebuilt, so the room (its filters and switch) only
/// ever sees whole frames.
#[derive(Debug)]
pub struct DataPath {
    /// This connection's received traffic, for `stats` replies.
    pub stats: PeerStats,
    reassembler: Reassembler,
    /// The peer's compression contexts, when both ends agreed to it.
    decompressor: Option<Box<Decompressor>>,
    /// Where rebuilt frames are written: small chunks, each shared by a
    /// few frames (a frame waiting in a queue holds its chunk).
    rebuilt: Chunks,
    /// Reassembly counters already added to the port's counters.
    synced: ReassemblyStats,
    clock: MonotonicClock,
}

impl DataPath {
    /// The receiving side of a connection, reassembling within `limits`
    /// (and the relay's `shared` budget, on a relay), rebuilding compressed
    /// frames if `compression` was agreed.
    pub fn new(
        limits: ReassemblyLimits,
        shared: Option<Arc<ReassemblyBudget>>,
        compression: bool,
    ) -> DataPath {
        DataPath {
            stats: PeerStats::default(),
            reassembler: Reassembler::new(limits, shared),
            decompressor: compression.then(Box::default),
            // Rebuilt frames may wait in a relay's queue for a slow peer.
            rebuilt: Chunks::small(),
            synced: ReassemblyStats::default(),
            clock: MonotonicClock::start(),
        }
    }

    /// A fragment from the peer: hands the frame to the room once it is
    /// whole.
    fn fragment(
        &mut self,
        header: FragmentHeader,
        payload: &[u8],
        link: &LinkHandle,
        counters: &DatapathCounters,
    ) {
        let outcome = self.reassembler.push(self.clock.now(), header, payload);
        let now = self.reassembler.stats();
        let old = std::mem::replace(&mut self.synced, now);
        add_deltas([
            (&counters.reassembled, now.reassembled, old.reassembled),
            (&counters.fragment_timeout, now.timeout, old.timeout),
            (&counters.fragment_overflow, now.overflow, old.overflow),
            (&counters.fragment_malformed, now.malformed, old.malformed),
            (
                &counters.fragment_inconsistent,
                now.inconsistent,
                old.inconsistent,
            ),
            (&counters.fragment_duplicate, now.duplicate, old.duplicate),
        ]);
        match outcome {
            Reassembled::Frame(frame) => self.deliver(frame, link),
            Reassembled::Pending => {}
            Reassembled::Dropped(_) => self.stats.dropped += 1,
        }
    }

    /// Hands a whole frame to the room, counted.
    fn deliver(&mut self, frame: Bytes, link: &LinkHandle) {
        self.stats.frames_rx += 1;
        self.stats.bytes_rx += frame.len() as u64;
        if !link.send(frame) {
            self.stats.dropped += 1;
        }
    }

    /// `first` and every datagram the connection has already received
    /// after it (`more`, up to [`DATAGRAM_BATCH`] in all), handed to the
    /// room as one batch ([`LinkHandle::gathered`]): one wake-up and one
    /// pass of the session's loop for many datagrams, and a TAP adapter
    /// writes the batch's TCP segments merged.
    pub fn from_peer_batch(
        &mut self,
        first: Bytes,
        mut more: impl FnMut() -> Option<Bytes>,
        sender: &PeerSender,
        link: &LinkHandle,
        counters: &DatapathCounters,
    ) {
        link.gathered(|| {
            self.from_peer(first, sender, link, counters);
            for _ in 1..DATAGRAM_BATCH {
                let Some(datagram) = more() else {
                    break;
                };
                self.from_peer(datagram, sender, link, counters);
            }
        });
    }

    /// A datagram from the peer: decode the overlay and hand the frame to
    /// the room (a slice of the datagram, no copy), or a fragment to the
    /// reassembly, or rebuild a compressed frame; compression's installs
    /// are acknowledged (after their frame went on) and its
    /// acknowledgements passed to `sender`.
    pub fn from_peer(
        &mut self,
        datagram: Bytes,
        sender: &PeerSender,
        link: &LinkHandle,
        counters: &DatapathCounters,
    ) {
        bump(&counters.datagrams_in);
        let offset = match (overlay::decode(&datagram), self.decompressor.as_deref_mut()) {
            (Ok(OverlayPayload::Ethernet(frame)), _) => datagram.len() - frame.len(),
            (Ok(OverlayPayload::Fragment(header, payload)), _) => {
                self.fragment(header, payload, link, counters);
                return;
            }
            (
                Ok(OverlayPayload::Install {
                    slot,
                    generation,
                    frame,
                }),
                Some(d),
            ) => {
                if let Err(e) = d.install(slot, generation, frame) {
                    return self.refuse(e, counters);
                }
                // The frame first, its acknowledgement after: the frame's
                // next hop is not kept waiting behind a datagram back.
                let offset = datagram.len() - frame.len();
                self.deliver(datagram.slice(offset..), link);
                sender.ack_context(slot, generation);
                return;
            }
            (
                Ok(OverlayPayload::Compressed {
                    slot,
                    generation,
                    body,
                }),
                Some(d),
            ) => {
                let out = self.rebuilt.room(body.len() + compress::MAX_HEADER);
                if let Err(e) = d.decompress(slot, generation, body, out) {
                    return self.refuse(e, counters);
                }
                bump(&counters.compressed_in);
                let frame = self.rebuilt.take();
                self.deliver(frame, link);
                return;
            }
            (Ok(OverlayPayload::Ack { slot, generation }), Some(_)) => {
                sender.context_acked(slot, generation);
                return;
            }
            (Ok(_), None) => {
                // Compression the ends did not agree on.
                self.stats.dropped += 1;
                bump(&counters.overlay_unknown_context);
                return;
            }
            (Err(e), _) => {
                self.stats.dropped += 1;
                bump(match e {
                    OverlayError::Truncated => &counters.overlay_truncated,
                    OverlayError::UnknownVersion(_) => &counters.overlay_unknown_version,
                    OverlayError::UnknownContext(_) => &counters.overlay_unknown_context,
                });
                return;
            }
        };
        self.deliver(datagram.slice(offset..), link);
    }

    /// An install or compressed frame that cannot be taken: dropped and
    /// counted by reason.
    fn refuse(&mut self, e: CompressError, counters: &DatapathCounters) {
        self.stats.dropped += 1;
        bump(match e {
            CompressError::Unknown => &counters.compress_unknown,
            CompressError::Stale => &counters.compress_stale,
            CompressError::BadSlot | CompressError::NotCompressible | CompressError::Truncated => {
                &counters.compress_malformed
            }
        });
    }

    /// The stats to answer a `stats_request` with: this direction's
    /// counters plus the sender's.
    pub fn peer_stats(&self, conn: &LoopConn, sender: &PeerSender) -> PeerStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PeerStats {
            rtt_us: Some(conn.rtt().as_micros() as u64),
            frames_tx: g(&sender.frames_tx),
            bytes_tx: g(&sender.bytes_tx),
            dropped: self.stats.dropped + g(&sender.dropped),
            ..self.stats
        }
    }
}

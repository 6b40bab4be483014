//! Frames between a QUIC connection and a room link, in both directions,
//! with every drop counted. Shared by the relay and the client session.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use lanparty_core::control::PeerStats;
use lanparty_core::runtime::LinkHandle;
use lanparty_core::wire::overlay::{self, OverlayError, OverlayPayload};
use serde::Serialize;

use crate::net::DatagramEncoder;

/// Datagram counters of one port (all its connections).
#[derive(Debug, Default)]
pub struct DatapathCounters {
    /// Datagrams received.
    pub datagrams_in: AtomicU64,
    /// Datagrams sent.
    pub datagrams_out: AtomicU64,
    /// Received datagrams with a truncated overlay header.
    pub overlay_truncated: AtomicU64,
    /// Received datagrams with an unknown overlay version.
    pub overlay_unknown_version: AtomicU64,
    /// Received datagrams with an unknown overlay context.
    pub overlay_unknown_context: AtomicU64,
    /// Frames not sent because the peer's QUIC datagram send buffer was full
    /// (a slow or stalled peer).
    pub send_buffer_full: AtomicU64,
    /// Frames larger than the peer's path can carry.
    pub too_large: AtomicU64,
    /// Frames not sent because the connection was gone or datagrams are
    /// disabled.
    pub send_failed: AtomicU64,
}

/// A plain copy of [`DatapathCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DatapathSnapshot {
    /// See [`DatapathCounters::datagrams_in`].
    pub datagrams_in: u64,
    /// See [`DatapathCounters::datagrams_out`].
    pub datagrams_out: u64,
    /// See [`DatapathCounters::overlay_truncated`].
    pub overlay_truncated: u64,
    /// See [`DatapathCounters::overlay_unknown_version`].
    pub overlay_unknown_version: u64,
    /// See [`DatapathCounters::overlay_unknown_context`].
    pub overlay_unknown_context: u64,
    /// See [`DatapathCounters::send_buffer_full`].
    pub send_buffer_full: u64,
    /// See [`DatapathCounters::too_large`].
    pub too_large: u64,
    /// See [`DatapathCounters::send_failed`].
    pub send_failed: u64,
}

impl DatapathCounters {
    /// A snapshot.
    pub fn snapshot(&self) -> DatapathSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DatapathSnapshot {
            datagrams_in: g(&self.datagrams_in),
            datagrams_out: g(&self.datagrams_out),
            overlay_truncated: g(&self.overlay_truncated),
            overlay_unknown_version: g(&self.overlay_unknown_version),
            overlay_unknown_context: g(&self.overlay_unknown_context),
            send_buffer_full: g(&self.send_buffer_full),
            too_large: g(&self.too_large),
            send_failed: g(&self.send_failed),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One connection's data path.
#[derive(Debug, Default)]
pub struct DataPath {
    encoder: DatagramEncoder,
    /// This connection's traffic, for `stats` replies.
    pub stats: PeerStats,
}

impl DataPath {
    /// A datagram from the peer: decode the overlay and hand the frame to
    /// the room (a slice of the datagram, no copy).
    pub fn from_peer(&mut self, datagram: Bytes, link: &LinkHandle, counters: &DatapathCounters) {
        bump(&counters.datagrams_in);
        let offset = match overlay::decode(&datagram) {
            Ok(OverlayPayload::Ethernet(frame)) => datagram.len() - frame.len(),
            Err(e) => {
                self.stats.dropped += 1;
                bump(match e {
                    OverlayError::Truncated => &counters.overlay_truncated,
                    OverlayError::UnknownVersion(_) => &counters.overlay_unknown_version,
                    OverlayError::UnknownContext(_) => &counters.overlay_unknown_context,
                });
                return;
            }
        };
        self.stats.frames_rx += 1;
        self.stats.bytes_rx += (datagram.len() - offset) as u64;
        if !link.send(datagram.slice(offset..)) {
            self.stats.dropped += 1;
        }
    }

    /// A frame for the peer. Never waits: when the peer's datagram send
    /// buffer cannot take it the frame is dropped and counted (quinn would
    /// otherwise silently drop the oldest queued datagram).
    pub fn to_peer(&mut self, conn: &quinn::Connection, frame: &[u8], counters: &DatapathCounters) {
        let need = overlay::ETHERNET_HEADER_LEN + frame.len();
        if conn.max_datagram_size().is_none_or(|max| need > max) {
            self.stats.dropped += 1;
            bump(&counters.too_large);
            return;
        }
        if conn.datagram_send_buffer_space() < need {
            self.stats.dropped += 1;
            bump(&counters.send_buffer_full);
            return;
        }
        match conn.send_datagram(self.encoder.encode(frame)) {
            Ok(()) => {
                self.stats.frames_tx += 1;
                self.stats.bytes_tx += frame.len() as u64;
                bump(&counters.datagrams_out);
            }
            Err(quinn::SendDatagramError::TooLarge) => {
                self.stats.dropped += 1;
                bump(&counters.too_large);
            }
            Err(_) => {
                self.stats.dropped += 1;
                bump(&counters.send_failed);
            }
        }
    }

    /// The stats to answer a `stats_request` with.
    pub fn peer_stats(&self, conn: &quinn::Connection) -> PeerStats {
        PeerStats {
            rtt_us: Some(conn.rtt().as_micros() as u64),
            ..self.stats
        }
    }
}

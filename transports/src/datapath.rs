//! Frames between a QUIC connection and a room link, in both directions,
//! with every drop counted. Shared by the relay and the client session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use lanparty_core::control::PeerStats;
use lanparty_core::runtime::{LinkHandle, LinkSink, Metrics};
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
    /// Frames for the relay dropped while no session was up (a client
    /// between reconnects).
    pub not_connected: AtomicU64,
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
    /// See [`DatapathCounters::not_connected`].
    pub not_connected: u64,
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
            not_connected: g(&self.not_connected),
        }
    }
}

/// The data path counters as Prometheus samples labelled `labels`.
pub fn datapath_metrics(out: &mut Metrics, d: &DatapathSnapshot, labels: &[(&str, &str)]) {
    out.counter(
        "lanparty_datagrams_in_total",
        "QUIC datagrams received",
        labels,
        d.datagrams_in,
    );
    out.counter(
        "lanparty_datagrams_out_total",
        "QUIC datagrams sent",
        labels,
        d.datagrams_out,
    );
    for (reason, n) in [
        ("overlay-truncated", d.overlay_truncated),
        ("overlay-unknown-version", d.overlay_unknown_version),
        ("overlay-unknown-context", d.overlay_unknown_context),
        ("send-buffer-full", d.send_buffer_full),
        ("too-large", d.too_large),
        ("send-failed", d.send_failed),
        ("not-connected", d.not_connected),
    ] {
        let mut l = labels.to_vec();
        l.push(("reason", reason));
        out.counter(
            "lanparty_datagram_drops_total",
            "Datagrams dropped by the QUIC data path, by reason",
            &l,
            n,
        );
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The peer → room direction of one connection.
#[derive(Debug, Default)]
pub struct DataPath {
    /// This connection's received traffic, for `stats` replies.
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

    /// The stats to answer a `stats_request` with: this direction's
    /// counters plus the sender's.
    pub fn peer_stats(&self, conn: &quinn::Connection, sender: &PeerSender) -> PeerStats {
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

/// The room → peer direction of a connection: the room hands frames
/// straight to the QUIC connection (a [`LinkSink`]), no task in between.
/// Never waits: when the peer's datagram send buffer cannot take a frame it
/// is dropped and counted (quinn would otherwise silently drop the oldest
/// queued datagram), so a slow peer never slows its room.
#[derive(Debug)]
pub struct PeerSender {
    state: Mutex<SenderState>,
    counters: Arc<DatapathCounters>,
    frames_tx: AtomicU64,
    bytes_tx: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct SenderState {
    conn: Option<quinn::Connection>,
    encoder: DatagramEncoder,
}

impl PeerSender {
    /// A sender with no connection yet (frames are counted `not_connected`).
    pub fn new(counters: Arc<DatapathCounters>) -> Arc<PeerSender> {
        Arc::new(PeerSender {
            state: Mutex::new(SenderState::default()),
            counters,
            frames_tx: AtomicU64::new(0),
            bytes_tx: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    /// A sender bound to `conn`.
    pub fn connected(counters: Arc<DatapathCounters>, conn: quinn::Connection) -> Arc<PeerSender> {
        let sender = PeerSender::new(counters);
        sender.set_connection(Some(conn));
        sender
    }

    /// Binds the sender to a (new) connection, or to none between sessions.
    pub fn set_connection(&self, conn: Option<quinn::Connection>) {
        self.lock().conn = conn;
    }

    /// Frames and bytes sent, and frames dropped, so far.
    pub fn totals(&self) -> (u64, u64, u64) {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (g(&self.frames_tx), g(&self.bytes_tx), g(&self.dropped))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SenderState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn drop_frame(&self, counter: &AtomicU64) -> bool {
        bump(&self.dropped);
        bump(counter);
        false
    }
}

impl LinkSink for PeerSender {
    fn deliver(&self, frame: Bytes) -> bool {
        let counters = &*self.counters;
        let mut state = self.lock();
        let SenderState { conn, encoder } = &mut *state;
        let Some(conn) = conn else {
            return self.drop_frame(&counters.not_connected);
        };
        let need = overlay::ETHERNET_HEADER_LEN + frame.len();
        if conn.max_datagram_size().is_none_or(|max| need > max) {
            return self.drop_frame(&counters.too_large);
        }
        if conn.datagram_send_buffer_space() < need {
            return self.drop_frame(&counters.send_buffer_full);
        }
        match conn.send_datagram(encoder.encode(&frame)) {
            Ok(()) => {
                bump(&self.frames_tx);
                self.bytes_tx
                    .fetch_add(frame.len() as u64, Ordering::Relaxed);
                bump(&counters.datagrams_out);
                true
            }
            Err(quinn::SendDatagramError::TooLarge) => self.drop_frame(&counters.too_large),
            Err(_) => self.drop_frame(&counters.send_failed),
        }
    }
}

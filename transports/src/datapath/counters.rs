//! The data path's counters (declared once for the atomics and their
//! snapshot) and their Prometheus samples.

use super::*;

/// Declares [`DatapathCounters`] (atomics a port's connections add to) and
/// [`DatapathSnapshot`] (a plain copy) from one list, so the two never
/// drift.
macro_rules! datapath_counters {
    ($( $(#[doc = $doc:literal])+ $name:ident, )+) => {
        /// Datagram counters of one port (all its connections).
        #[derive(Debug, Default)]
        pub struct DatapathCounters {
            $( $(#[doc = $doc])+ pub $name: AtomicU64, )+
        }

        /// A plain copy of [`DatapathCounters`].
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
        pub struct DatapathSnapshot {
            $( $(#[doc = $doc])+ pub $name: u64, )+
        }

        impl DatapathCounters {
            /// A snapshot.
            pub fn snapshot(&self) -> DatapathSnapshot {
                DatapathSnapshot {
                    $( $name: self.$name.load(Ordering::Relaxed), )+
                }
            }
        }
    };
}

datapath_counters! {
    /// Datagrams received.
    datagrams_in,
    /// Datagrams sent.
    datagrams_out,
    /// Received datagrams with a truncated overlay header.
    overlay_truncated,
    /// Received datagrams with an unknown overlay version.
    overlay_unknown_version,
    /// Received datagrams with an unknown overlay context.
    overlay_unknown_context,
    /// Frames not sent because the peer's QUIC datagram send buffer was full
    /// (a slow or stalled peer).
    send_buffer_full,
    /// Frames larger than the peer's path can carry, even in fragments.
    too_large,
    /// Frames not sent because the connection was gone or datagrams are
    /// disabled.
    send_failed,
    /// Frames for the relay dropped while no session was up (a client
    /// between reconnects).
    not_connected,
    /// Frames the egress queue dropped because it was over its byte limit.
    queue_overflow,
    /// Frames CoDel dropped from a standing queue.
    queue_codel,
    /// Frames still queued when their connection went away.
    queue_flushed,
    /// ECN-capable frames CoDel marked CE instead of dropping (sent, not
    /// dropped).
    queue_ce_marked,
    /// Frames sent as fragments (larger than one datagram).
    fragmented_out,
    /// Frames put back together from received fragments.
    reassembled,
    /// Partial frames whose other fragments did not come in time.
    fragment_timeout,
    /// Partial frames dropped for lack of room (the peer's or the relay's
    /// reassembly bound).
    fragment_overflow,
    /// Fragments with a header no sender writes.
    fragment_malformed,
    /// Fragments that disagree with their frame's others (the frame is
    /// dropped).
    fragment_inconsistent,
    /// Fragments received twice.
    fragment_duplicate,
    /// Frames sent with their header compressed.
    compressed_out,
    /// Compressed frames received and rebuilt.
    compressed_in,
    /// Compressed frames for a context the peer never installed.
    compress_unknown,
    /// Compressed frames for a context the peer has since replaced.
    compress_stale,
    /// Installs or compressed frames no sender writes.
    compress_malformed,
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
    out.counter(
        "lanparty_frames_fragmented_total",
        "Frames sent as several datagrams (larger than the path's datagram)",
        labels,
        d.fragmented_out,
    );
    out.counter(
        "lanparty_frames_reassembled_total",
        "Frames put back together from received fragments",
        labels,
        d.reassembled,
    );
    out.counter(
        "lanparty_frames_compressed_total",
        "Frames sent with their header compressed",
        labels,
        d.compressed_out,
    );
    out.counter(
        "lanparty_frames_decompressed_total",
        "Compressed frames received and rebuilt",
        labels,
        d.compressed_in,
    );
    for (reason, n) in [
        (fragment::reason::TIMEOUT, d.fragment_timeout),
        (fragment::reason::OVERFLOW, d.fragment_overflow),
        (fragment::reason::MALFORMED, d.fragment_malformed),
        (fragment::reason::INCONSISTENT, d.fragment_inconsistent),
        (fragment::reason::DUPLICATE, d.fragment_duplicate),
        (CompressError::Unknown.reason(), d.compress_unknown),
        (CompressError::Stale.reason(), d.compress_stale),
        (CompressError::Truncated.reason(), d.compress_malformed),
        (OverlayError::Truncated.reason(), d.overlay_truncated),
        (
            OverlayError::UnknownVersion(0).reason(),
            d.overlay_unknown_version,
        ),
        (
            OverlayError::UnknownContext(0).reason(),
            d.overlay_unknown_context,
        ),
        ("send-buffer-full", d.send_buffer_full),
        ("too-large", d.too_large),
        ("send-failed", d.send_failed),
        ("not-connected", d.not_connected),
        ("queue-overflow", d.queue_overflow),
        ("queue-codel", d.queue_codel),
        ("queue-flushed", d.queue_flushed),
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
    out.counter(
        "lanparty_queue_ce_marks_total",
        "ECN-capable frames marked congestion-experienced by the egress queue",
        labels,
        d.queue_ce_marked,
    );
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds to each port counter what a connection's own counter gained since
/// it was last synced: `(port counter, now, then)`.
pub(super) fn add_deltas<const N: usize>(deltas: [(&AtomicU64, u64, u64); N]) {
    for (counter, now, then) in deltas {
        if now > then {
            counter.fetch_add(now - then, Ordering::Relaxed);
        }
    }
}

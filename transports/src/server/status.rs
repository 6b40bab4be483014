//! What the relay shows: `lanparty status` (per peer: room, path, queue)
//! and its metrics.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use lanparty_core::runtime::{Metrics, StatusSource};

use super::Shared;
use crate::datapath::datapath_metrics;
use crate::report::{PeerReport, SERVER_KIND, ServerReport};

impl StatusSource for Shared {
    fn status(&self) -> serde_json::Value {
        let peers = self
            .peers()
            .iter()
            .map(|(id, p)| {
                let (frames_tx, bytes_tx, dropped_tx) = p.sender.totals();
                PeerReport {
                    peer_id: id.0,
                    room: p.room.clone(),
                    role: p.role,
                    mac: p.mac,
                    path: p.conn.path(),
                    mtu: p.mtu,
                    loop_index: p.loop_index as u64,
                    uptime_s: p.since.elapsed().as_secs(),
                    frames_tx,
                    bytes_tx,
                    dropped_tx,
                    send: p.sender.send_report(),
                }
            })
            .collect();
        let c = &self.counters;
        let report = ServerReport {
            kind: SERVER_KIND.into(),
            loops: self.loops as u64,
            connections: c.connections.load(Ordering::Relaxed),
            live_connections: self.live.load(Ordering::Relaxed) as u64,
            handshake_failures: c.handshake_failures.load(Ordering::Relaxed),
            handshake_timeouts: c.handshake_timeouts.load(Ordering::Relaxed),
            handshakes_in_progress: self.handshakes().total as u64,
            retries: c.retries.load(Ordering::Relaxed),
            handshakes_refused: c.handshakes_refused.load(Ordering::Relaxed),
            handshake_packets_dropped: c.handshake_packets_dropped.load(Ordering::Relaxed),
            admitted: c.admitted.load(Ordering::Relaxed),
            rejects: c.rejects.snapshot().into_iter().collect(),
            protocol_errors: c.protocol_errors.snapshot().into_iter().collect(),
            datapath: c.datapath.snapshot(),
            peers,
        };
        serde_json::to_value(report).unwrap_or_default()
    }

    fn metrics(&self, out: &mut Metrics) {
        let c = &self.counters;
        let port = [("port", self.name.as_str())];
        let mut per_room: BTreeMap<String, u64> = BTreeMap::new();
        for p in self.peers().values() {
            *per_room.entry(p.room.clone()).or_default() += 1;
        }
        for (room, n) in &per_room {
            out.gauge(
                "lanparty_relay_peers",
                "Admitted peers, by room",
                &[("port", self.name.as_str()), ("room", room.as_str())],
                *n,
            );
        }
        out.counter(
            "lanparty_relay_connections_total",
            "QUIC connections that completed the handshake",
            &port,
            c.connections.load(Ordering::Relaxed),
        );
        out.counter(
            "lanparty_relay_handshake_failures_total",
            "Connections refused or failed before the handshake completed",
            &port,
            c.handshake_failures.load(Ordering::Relaxed),
        );
        for (name, help, value) in [
            (
                "lanparty_relay_handshake_timeouts_total",
                "QUIC handshakes not complete within handshake_timeout",
                &c.handshake_timeouts,
            ),
            (
                "lanparty_relay_retries_total",
                "Connection attempts sent a QUIC Retry to prove their address",
                &c.retries,
            ),
            (
                "lanparty_relay_handshakes_refused_total",
                "Connection attempts ignored: too many handshakes in progress",
                &c.handshakes_refused,
            ),
            (
                "lanparty_relay_handshake_packets_dropped_total",
                "QUIC handshake packets dropped before decryption: over the per-address rate",
                &*c.handshake_packets_dropped,
            ),
        ] {
            out.counter(name, help, &port, value.load(Ordering::Relaxed));
        }
        out.counter(
            "lanparty_relay_admitted_total",
            "Peers admitted",
            &port,
            c.admitted.load(Ordering::Relaxed),
        );
        for (code, n) in c.rejects.snapshot() {
            out.counter(
                "lanparty_relay_rejects_total",
                "Hellos rejected, by code",
                &[("port", self.name.as_str()), ("code", code.as_str())],
                n,
            );
        }
        for (reason, n) in c.protocol_errors.snapshot() {
            out.counter(
                "lanparty_relay_protocol_errors_total",
                "Peers dropped for breaking the control protocol, by reason",
                &[("port", self.name.as_str()), ("reason", reason.as_str())],
                n,
            );
        }
        datapath_metrics(out, &c.datapath.snapshot(), &port);
    }
}

//! Live status: what ports publish about themselves, and the node-wide
//! report the admin socket (`lanparty status`) and the Prometheus endpoint
//! are built from.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::room::RoomStats;

pub use super::metrics::Metrics;
use super::policy::PolicyStore;
use super::rooms::Rooms;

/// A port's live state.
pub trait StatusSource: Send + Sync {
    /// The port's state as JSON: sessions, peers, counters.
    fn status(&self) -> Value;
    /// The port's Prometheus samples.
    fn metrics(&self, out: &mut Metrics);
}

/// Every status source of a node.
#[derive(Default)]
pub struct StatusBoard {
    sources: Mutex<Vec<(String, Arc<dyn StatusSource>)>>,
}

impl std::fmt::Debug for StatusBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatusBoard")
    }
}

impl StatusBoard {
    /// Adds (or replaces) the source of port `port`.
    pub fn publish(&self, port: &str, source: Arc<dyn StatusSource>) {
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        sources.retain(|(name, _)| name != port);
        sources.push((port.to_string(), source));
        sources.sort_by(|a, b| a.0.cmp(&b.0));
    }

    /// The status port `port` shows now, if it published one.
    pub fn status_of(&self, port: &str) -> Option<Value> {
        let source = self.sources().into_iter().find(|(name, _)| name == port)?.1;
        Some(source.status())
    }

    fn sources(&self) -> Vec<(String, Arc<dyn StatusSource>)> {
        self.sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The version of [`NodeReport`]'s schema. A reader that finds another
/// version says so instead of guessing at fields.
pub const STATUS_VERSION: u32 = 1;

/// What `lanparty status --json` prints: the node's report, shared by the
/// node that serves it and the CLI that renders it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeReport {
    /// [`STATUS_VERSION`] of the node that wrote it.
    pub version: u32,
    /// The node's name.
    pub node: String,
    /// Seconds since it started.
    pub uptime_s: u64,
    /// Its rooms.
    pub rooms: Vec<RoomStats>,
    /// Each port's own report, by port name: an object whose `type` names
    /// the port kind, which defines the rest (the QUIC ports' are typed in
    /// `lanparty_transports::report`).
    pub ports: BTreeMap<String, Value>,
    /// Its room policies.
    pub policies: PoliciesReport,
}

/// The room policies a node runs with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoliciesReport {
    /// The policy folder, if any.
    pub dir: Option<String>,
    /// Whether rooms without a policy are refused (a closed relay).
    pub require_policy: bool,
    /// The rooms that have a policy.
    pub rooms: Vec<String>,
}

/// What a node reports about itself.
pub struct NodeStatus {
    /// The node's name.
    pub name: String,
    /// When it started.
    pub started: Instant,
    /// Its rooms.
    pub rooms: Arc<Rooms>,
    /// Its ports' sources.
    pub board: Arc<StatusBoard>,
    /// Its policies.
    pub policies: Arc<PolicyStore>,
}

impl NodeStatus {
    /// The whole report, as `lanparty status --json` prints it.
    pub async fn report(&self) -> NodeReport {
        NodeReport {
            version: STATUS_VERSION,
            node: self.name.clone(),
            uptime_s: self.started.elapsed().as_secs(),
            rooms: self.rooms.stats().await,
            ports: self
                .board
                .sources()
                .into_iter()
                .map(|(name, source)| (name, source.status()))
                .collect(),
            policies: PoliciesReport {
                dir: self.policies.dir().map(|d| d.display().to_string()),
                require_policy: self.policies.require_policy(),
                rooms: self.policies.rooms(),
            },
        }
    }

    /// Prometheus text exposition of the node.
    pub async fn metrics(&self) -> String {
        let rooms = self.rooms.stats().await;
        let mut m = Metrics::default();
        m.gauge(
            "lanparty_up_seconds",
            "Seconds since the node started",
            &[],
            self.started.elapsed().as_secs(),
        );
        m.gauge(
            "lanparty_rooms",
            "Rooms that exist now",
            &[],
            rooms.len() as u64,
        );
        for room in &rooms {
            let r = room.room.as_str();
            m.gauge(
                "lanparty_room_links",
                "Links (peers, adapters, LAN ports) in a room",
                &[("room", r)],
                room.links.len() as u64,
            );
            m.gauge(
                "lanparty_room_macs",
                "Learned MAC table entries of a room",
                &[("room", r)],
                room.pipeline.table_len as u64,
            );
            m.counter(
                "lanparty_room_frames_in_total",
                "Frames that entered a room's pipeline",
                &[("room", r)],
                room.pipeline.frames_in,
            );
            m.counter(
                "lanparty_room_queue_full_total",
                "Frames dropped because a room's queue was full",
                &[("room", r)],
                room.queue_full,
            );
            for link in &room.links {
                let l = [("room", r), ("link", link.name.as_str())];
                let c = link.counters;
                m.counter(
                    "lanparty_link_rx_frames_total",
                    "Frames a link handed to its room",
                    &l,
                    c.rx_frames,
                );
                m.counter(
                    "lanparty_link_rx_bytes_total",
                    "Bytes a link handed to its room",
                    &l,
                    c.rx_bytes,
                );
                m.counter(
                    "lanparty_link_tx_frames_total",
                    "Frames a room sent to a link",
                    &l,
                    c.tx_frames,
                );
                m.counter(
                    "lanparty_link_tx_bytes_total",
                    "Bytes a room sent to a link",
                    &l,
                    c.tx_bytes,
                );
                m.counter(
                    "lanparty_link_rx_queue_full_total",
                    "Frames from a link dropped at a full room queue",
                    &l,
                    c.rx_queue_full,
                );
                m.counter(
                    "lanparty_link_tx_dropped_total",
                    "Frames for a link dropped (full queue or send buffer)",
                    &l,
                    c.tx_queue_full,
                );
            }
            for stage in &room.pipeline.stages {
                for (reason, n) in &stage.counters.drops {
                    m.counter(
                        "lanparty_drops_total",
                        "Frames dropped, by room, stage and reason",
                        &[
                            ("room", r),
                            ("stage", stage.label.as_str()),
                            ("reason", reason),
                        ],
                        *n,
                    );
                }
            }
        }
        for (_, source) in self.board.sources() {
            source.metrics(&mut m);
        }
        m.finish()
    }
}

//! The QUIC ports' status reports: typed, serialised into the node's
//! `ports` map by the ports that serve them and read back by `lanparty
//! status`, which prints them. The node report around them and its
//! version are `lanparty_core::runtime::NodeReport`.

use std::collections::BTreeMap;

use lanparty_core::control::PeerRole;
use lanparty_core::queue::QueueStats;
use lanparty_core::wire::MacAddr;
use serde::{Deserialize, Serialize};

use crate::datapath::DatapathSnapshot;

/// `type` of the relay port's report.
pub const SERVER_KIND: &str = "quic-server";
/// `type` of a client port's report.
pub const CLIENT_KIND: &str = "quic-client";

/// A QUIC connection's path, as its congestion controller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathReport {
    /// The other end's address.
    pub remote: String,
    /// Smoothed round-trip time, µs.
    pub rtt_us: u64,
    /// Congestion window, bytes.
    pub cwnd: u64,
    /// Congestion events so far.
    pub congestion_events: u64,
    /// Packets lost so far.
    pub lost_packets: u64,
}

impl PathReport {
    /// The path to `remote` with its round-trip time and its statistics.
    pub fn new(
        remote: std::net::SocketAddr,
        rtt: std::time::Duration,
        path: &quinn::PathStats,
    ) -> PathReport {
        PathReport {
            remote: remote.to_string(),
            rtt_us: rtt.as_micros() as u64,
            cwnd: path.cwnd,
            congestion_events: path.congestion_events,
            lost_packets: path.lost_packets,
        }
    }
}

/// The egress queue in front of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendReport {
    /// The scheduler's counters and backlog.
    pub queue: QueueStats,
    /// The rate the connection sends at, bytes/s: its delay controller's
    /// delivery rate, or (other controllers) the feeder's measurement of
    /// how fast quinn drains its buffer.
    pub send_rate: u64,
    /// Whether frames go out header-compressed now: both ends agreed and
    /// the connection is slower than `compress_below_mbps`.
    #[serde(default)]
    pub compressing: bool,
}

/// One admitted peer of the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReport {
    /// Its peer id.
    pub peer_id: u64,
    /// Its room code.
    pub room: String,
    /// Its role.
    pub role: PeerRole,
    /// Its MAC.
    pub mac: MacAddr,
    /// Its connection's path.
    #[serde(flatten)]
    pub path: PathReport,
    /// The room MTU it was given.
    pub mtu: u16,
    /// The relay loop its connection runs on (0 with one loop).
    #[serde(rename = "loop", default)]
    pub loop_index: u64,
    /// Seconds since it was admitted.
    pub uptime_s: u64,
    /// Frames sent to it.
    pub frames_tx: u64,
    /// Bytes sent to it.
    pub bytes_tx: u64,
    /// Frames for it that were dropped.
    pub dropped_tx: u64,
    /// The queue in front of its connection.
    #[serde(flatten)]
    pub send: SendReport,
}

/// The relay port (`quic-server`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerReport {
    /// [`SERVER_KIND`].
    #[serde(rename = "type")]
    pub kind: String,
    /// Loops serving connections: one per runtime thread, each with its
    /// own socket on the relay's port.
    #[serde(default)]
    pub loops: u64,
    /// Connections that completed the handshake.
    pub connections: u64,
    /// Connections open now.
    pub live_connections: u64,
    /// Connections refused or failed before the handshake completed.
    pub handshake_failures: u64,
    /// Handshakes not complete within `handshake_timeout`.
    pub handshake_timeouts: u64,
    /// Handshakes in progress now.
    pub handshakes_in_progress: u64,
    /// Connection attempts sent a QUIC Retry.
    pub retries: u64,
    /// Connection attempts ignored: too many handshakes in progress.
    pub handshakes_refused: u64,
    /// Handshake packets dropped before decryption (per-address rate).
    pub handshake_packets_dropped: u64,
    /// Peers admitted.
    pub admitted: u64,
    /// Hellos rejected, by code.
    pub rejects: BTreeMap<String, u64>,
    /// Peers dropped for breaking the control protocol, by reason.
    pub protocol_errors: BTreeMap<String, u64>,
    /// The data path's counters.
    pub datapath: DatapathSnapshot,
    /// The admitted peers.
    pub peers: Vec<PeerReport>,
}

/// A client's live session with the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionReport {
    /// The peer id the relay gave it.
    pub peer_id: u64,
    /// The relay's id of the room (as the relay's status shows it).
    pub room_id: u64,
    /// The room MTU.
    pub mtu: u16,
    /// The connection's path.
    #[serde(flatten)]
    pub path: PathReport,
    /// Seconds since the welcome.
    pub uptime_s: u64,
    /// Headers are compressed both ways on this session.
    #[serde(default)]
    pub header_compression: bool,
}

/// Whether a client has a session now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientState {
    /// In a room.
    Connected,
    /// Between sessions (backing off or connecting).
    Reconnecting,
}

/// A client or gateway port (`quic-client`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientReport {
    /// [`CLIENT_KIND`].
    #[serde(rename = "type")]
    pub kind: String,
    /// The relay it joins.
    pub relay: String,
    /// The relay's room code it joins.
    pub room: String,
    /// Its role.
    pub role: PeerRole,
    /// Its MAC.
    pub mac: MacAddr,
    /// Connected or reconnecting.
    pub state: ClientState,
    /// The live session.
    pub session: Option<SessionReport>,
    /// Why the last session or attempt ended.
    pub last_error: Option<String>,
    /// Sessions so far.
    pub sessions: u64,
    /// Sessions after the first.
    pub reconnects: u64,
    /// Connection attempts that failed.
    pub failed_attempts: u64,
    /// The data path's counters.
    pub datapath: DatapathSnapshot,
    /// The queue in front of the connection.
    #[serde(flatten)]
    pub send: SendReport,
}

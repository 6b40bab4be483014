//! The control-plane messages carried on the first bidirectional QUIC stream.
//!
//! Each message is a JSON object whose `type` key names it, e.g.
//! `{"type":"hello","protocol_version":2,"role":"client","room":"ROOM1",
//! "mac":"02:00:00:00:00:51","datagram_budget":1414}`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::stage::LinkRole;
use crate::wire::MacAddr;

/// The control protocol version this build speaks. Version 2: frames
/// larger than a datagram travel as overlay fragments and rooms run at
/// MTU 1500 whatever the path (a version 1 peer would drop the fragments,
/// so it gets `version_mismatch`). Version 3: hello and welcome say
/// whether headers are compressed (`header_compression`; an older peer
/// would refuse the field, so it gets `version_mismatch`).
pub const PROTOCOL_VERSION: u32 = 3;

/// The role a peer asks for in its hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerRole {
    /// A remote player's adapter: exactly one MAC.
    Client,
    /// The bridge to the host's wired LAN: many MACs, one per room.
    Gateway,
}

impl PeerRole {
    /// The link role the peer's link gets in the room.
    pub fn link_role(self) -> LinkRole {
        match self {
            PeerRole::Client => LinkRole::Client,
            PeerRole::Gateway => LinkRole::Gateway,
        }
    }
}

impl fmt::Display for PeerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PeerRole::Client => "client",
            PeerRole::Gateway => "gateway",
        })
    }
}

/// A room password or token. It is sent on the wire, but never shown by
/// `Debug`, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Credential(pub String);

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

/// A peer id assigned by the relay; never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PeerId(pub u64);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer#{}", self.0)
    }
}

/// The first message a client or gateway sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// The control protocol version the peer speaks ([`PROTOCOL_VERSION`]).
    pub protocol_version: u32,
    /// Client or gateway.
    pub role: PeerRole,
    /// The room code to join.
    pub room: String,
    /// The peer's adapter MAC (a client's only MAC; a gateway's interface MAC).
    pub mac: MacAddr,
    /// The largest QUIC datagram the peer can send and receive.
    pub datagram_budget: u32,
    /// Room password or token, where the room asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Credential>,
    /// The peer compresses headers and takes compressed frames, if the
    /// relay does too ([`crate::wire::compress`]).
    #[serde(default)]
    pub header_compression: bool,
}

/// The relay's answer to an admitted hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Welcome {
    /// The id the relay gave this peer.
    pub peer_id: PeerId,
    /// The id of the room instance the peer joined: the id the relay's
    /// `lanparty status` shows for the room.
    pub room_id: u64,
    /// The room's MTU: what the peer's adapter must be set to.
    pub mtu: u16,
    /// Headers are compressed both ways on this connection (the hello
    /// asked for it and the relay allows it).
    #[serde(default)]
    pub header_compression: bool,
}

/// Machine-readable reasons for refusing a hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// The peer speaks another protocol version.
    VersionMismatch,
    /// The room code is malformed.
    BadRoomCode,
    /// The MAC may not be used by an adapter.
    BadMac,
    /// Another client in the room already uses this MAC.
    DuplicateMac,
    /// The room already has its gateway.
    GatewayPresent,
    /// The room is at its peer limit.
    RoomFull,
    /// The relay is at its room or peer limit.
    RelayFull,
    /// The peer's datagram budget cannot carry the room MTU.
    BudgetTooSmall,
    /// Missing or wrong credential.
    Unauthorized,
    /// Too many failed attempts from this address.
    RateLimited,
    /// The relay does not host this room (closed relay).
    NoSuchRoom,
    /// The room's policy does not allow this role.
    RoleForbidden,
    /// The room's policy admits clients only while its gateway is present.
    NoGateway,
    /// The relay is shutting down.
    ShuttingDown,
    /// The hello was malformed.
    Malformed,
}

impl RejectCode {
    /// True when retrying the same hello cannot succeed without a change by
    /// a person; false for conditions that may clear by themselves.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            RejectCode::RoomFull
                | RejectCode::RelayFull
                | RejectCode::NoGateway
                | RejectCode::RateLimited
                | RejectCode::ShuttingDown
        )
    }

    /// The code as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::VersionMismatch => "version_mismatch",
            RejectCode::BadRoomCode => "bad_room_code",
            RejectCode::BadMac => "bad_mac",
            RejectCode::DuplicateMac => "duplicate_mac",
            RejectCode::GatewayPresent => "gateway_present",
            RejectCode::RoomFull => "room_full",
            RejectCode::RelayFull => "relay_full",
            RejectCode::BudgetTooSmall => "budget_too_small",
            RejectCode::Unauthorized => "unauthorized",
            RejectCode::RateLimited => "rate_limited",
            RejectCode::NoSuchRoom => "no_such_room",
            RejectCode::RoleForbidden => "role_forbidden",
            RejectCode::NoGateway => "no_gateway",
            RejectCode::ShuttingDown => "shutting_down",
            RejectCode::Malformed => "malformed",
        }
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The relay's refusal of a hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reject {
    /// Why, for programs.
    pub code: RejectCode,
    /// Why, for people.
    pub message: String,
}

/// Why a connection is being closed on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectReason {
    /// The sender is shutting down.
    Shutdown,
    /// An operator removed the peer.
    Kicked,
    /// The room's policy changed and no longer admits the peer.
    PolicyChanged,
    /// The peer broke the protocol.
    ProtocolError,
    /// The peer was idle for too long.
    Idle,
}

/// Traffic counters of one peer, as the relay sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerStats {
    /// Frames received from the peer.
    pub frames_rx: u64,
    /// Frames sent to the peer.
    pub frames_tx: u64,
    /// Bytes received from the peer.
    pub bytes_rx: u64,
    /// Bytes sent to the peer.
    pub bytes_tx: u64,
    /// Frames from or to the peer that were dropped.
    pub dropped: u64,
    /// Smoothed round-trip time in microseconds, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_us: Option<u64>,
}

/// One control frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlMessage {
    /// Peer → relay: ask to join a room.
    Hello(Hello),
    /// Relay → peer: admitted.
    Welcome(Welcome),
    /// Relay → peer: refused; the relay closes the connection after it.
    Reject(Reject),
    /// Relay → peer: another peer joined the room.
    PeerJoined {
        /// The new peer.
        peer_id: PeerId,
        /// Its role.
        role: PeerRole,
        /// Its adapter MAC.
        mac: MacAddr,
    },
    /// Relay → peer: a peer left the room.
    PeerLeft {
        /// The peer that left.
        peer_id: PeerId,
        /// Why, for people.
        reason: String,
    },
    /// Either way: ask for counters.
    StatsRequest,
    /// Either way: counters of the sender's view of this peer.
    Stats(PeerStats),
    /// Either way: the sender is closing the connection, and why.
    Disconnect {
        /// Why, for programs.
        reason: DisconnectReason,
        /// Why, for people.
        message: String,
    },
}

impl ControlMessage {
    /// The message's `type` name, for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            ControlMessage::Hello(_) => "hello",
            ControlMessage::Welcome(_) => "welcome",
            ControlMessage::Reject(_) => "reject",
            ControlMessage::PeerJoined { .. } => "peer_joined",
            ControlMessage::PeerLeft { .. } => "peer_left",
            ControlMessage::StatsRequest => "stats_request",
            ControlMessage::Stats(_) => "stats",
            ControlMessage::Disconnect { .. } => "disconnect",
        }
    }
}

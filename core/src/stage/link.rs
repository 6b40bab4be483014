//! Links: the places frames enter and leave a room.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::wire::MacAddr;

/// A link's id, unique within a node for the node's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LinkId(pub u32);

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "link#{}", self.0)
    }
}

/// What sits behind a link. Filters decide by it (e.g. only `gateway` and
/// `lan` may answer DHCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkRole {
    /// A remote player's adapter, one MAC.
    Client,
    /// A gateway peer on the relay: the host's wired LAN behind it.
    Gateway,
    /// The wired LAN itself, on the gateway (an AF_PACKET port).
    Lan,
    /// This machine's own adapter (a TAP device on a client).
    Host,
}

impl LinkRole {
    /// The role's name as written in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkRole::Client => "client",
            LinkRole::Gateway => "gateway",
            LinkRole::Lan => "lan",
            LinkRole::Host => "host",
        }
    }
}

impl fmt::Display for LinkRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything a room knows about one of its links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// The link's id.
    pub id: LinkId,
    /// A name for logs and status: the port name, plus the peer for QUIC.
    pub name: Arc<str>,
    /// What is behind the link.
    pub role: LinkRole,
    /// The MAC(s) the link was admitted with (one for a client; a gateway's
    /// or LAN's own interface MAC, others are learned).
    pub macs: Vec<MacAddr>,
    /// The largest L3 packet the link can carry.
    pub mtu: u16,
}

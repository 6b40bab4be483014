//! The client's settings (`quic-client` keys) and their defaults.

use super::*;

/// `quic-client` trust settings: exactly one of them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustSettings {
    /// `pin`: the relay's DER certificate (its `relay-cert.der`).
    #[serde(default)]
    pub pin: Option<PathBuf>,
    /// `ca`: a PEM file of CAs that issued the relay's certificate.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// `system`: trust the system's CA bundle.
    #[serde(default)]
    pub system: bool,
}

/// `quic-client` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// `relay`: the relay's `host:port` or `address:port`.
    pub relay: String,
    /// `server_name`: the name in the relay's certificate; default: the host
    /// part of `relay`.
    #[serde(default)]
    pub server_name: Option<String>,
    /// `trust`: how to trust the relay.
    #[serde(default)]
    pub trust: TrustSettings,
    /// `room`: the room code to join (case-insensitive: the relay files it
    /// in upper case; a number such as `2024` is taken as written).
    #[serde(deserialize_with = "lanparty_core::config::text_or_number")]
    pub room: String,
    /// `role`: `client` (a player) or `gateway` (the host's LAN).
    pub role: PeerRole,
    /// `mac`: the MAC announced in the hello: a client's one identity, which
    /// its adapter takes.
    pub mac: MacAddr,
    /// `credential`: the room password or token, if the room asks for one.
    #[serde(
        default,
        deserialize_with = "lanparty_core::config::optional_text_or_number"
    )]
    pub credential: Option<String>,
    /// `datagram_budget`: the largest datagram to send and to ask the relay
    /// for (larger frames go in fragments); default: what the path carries.
    #[serde(default)]
    pub datagram_budget: Option<u32>,
    /// `link_role`: the role of the relay link in the local room; default
    /// `gateway` for a client (the LAN is behind it) and `client` for a
    /// gateway (the players are behind it).
    #[serde(default)]
    pub link_role: Option<LinkRole>,
    /// `local_room`: the local room to join. Default `default`.
    #[serde(default = "default_local_room")]
    pub local_room: String,
    /// `hello_timeout`: how long to wait for connect + welcome. Default 10s.
    #[serde(default = "default_hello_timeout")]
    pub hello_timeout: ConfigDuration,
    /// `idle_timeout`: the relay is considered lost after this. Default 30s.
    #[serde(default = "net::default_idle_timeout")]
    pub idle_timeout: ConfigDuration,
    /// `keepalive`: keep-alive interval, so NAT bindings stay open. Default 5s.
    #[serde(default = "default_keepalive")]
    pub keepalive: ConfigDuration,
    /// `reconnect_min`: first reconnect delay. Default 250ms.
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min: ConfigDuration,
    /// `reconnect_max`: longest reconnect delay. Default 30s.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max: ConfigDuration,
    /// `socket_buffer`: UDP socket buffer bytes. Default 4 MiB.
    #[serde(default = "net::default_socket_buffer")]
    pub socket_buffer: usize,
    /// `initial_mtu`: QUIC's initial path MTU. Default 1452.
    #[serde(default = "net::default_initial_mtu")]
    pub initial_mtu: u16,
    /// `congestion`: the connection's congestion controller: `delay`
    /// (default), `bbr`, `cubic` or `newreno`.
    #[serde(default)]
    pub congestion: net::Congestion,
    /// `queue`: the egress queue in front of the connection to the relay.
    #[serde(default)]
    pub queue: QueueSettings,
}

fn default_local_room() -> String {
    DEFAULT_ROOM.into()
}
fn default_hello_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}
fn default_keepalive() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(5))
}
fn default_reconnect_min() -> ConfigDuration {
    ConfigDuration(Duration::from_millis(250))
}
fn default_reconnect_max() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}

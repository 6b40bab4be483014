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

crate::net::connection_settings! {
    /// A client's or gateway's session with the relay: hello/welcome,
    /// datagrams, reconnects with backoff.
    #[lanparty_core::stage_kind(port, name = "quic-client", build = super::build,
        example = "ports:\n  relay:\n    type: quic-client\n    relay: relay.example.org:443\n    server_name: lanparty-relay.local\n    trust: { pin: relay-cert.der }\n    room: ROOM1\n    role: client\n    mac: \"02:00:00:00:00:51\"")]
    #[derive(Debug, Clone)]
    pub struct ClientSettings {
        /// The relay's `host:port` or `address:port`, e.g.
        /// `relay.example.org:443`.
        #[key(ty = "host:port")]
        pub relay: String,
        /// The name in the relay's certificate (a self-signed relay:
        /// `lanparty-relay.local`).
        #[key(shown = "host part of relay")]
        pub server_name: Option<String>,
        /// Pin the relay's DER certificate, trust a CA file, or the system
        /// CAs.
        #[key(default, ty = "{pin: path} | {ca: path} | {system: true}", shown = "required")]
        pub trust: TrustSettings,
        /// The relay's room code to join (the local room is `local_room`):
        /// 1-32 of A-Z a-z 0-9 . _ - (case-insensitive:
        /// the relay files it in upper case; a number such as `2024` is
        /// taken as written).
        #[serde(deserialize_with = "lanparty_core::config::text_or_number")]
        #[key(ty = "string")]
        pub room: String,
        /// A player (`client`), or the host's LAN (`gateway`, one per room).
        pub role: PeerRole,
        /// MAC announced in the hello: a client's one identity, which its
        /// adapter (tap, tun-l2, wintun) takes.
        pub mac: MacAddr,
        /// The room password or token, if the room asks for one.
        #[serde(
            default,
            deserialize_with = "lanparty_core::config::optional_text_or_number"
        )]
        pub credential: Option<String>,
        /// The largest datagram to send and to ask the relay for (a path
        /// known to carry less); larger frames go in fragments.
        #[key(shown = "what the path carries")]
        pub datagram_budget: Option<u32>,
        /// The role of the relay link in the local room.
        #[key(shown = "gateway for a client, client for a gateway")]
        pub link_role: Option<LinkRole>,
        /// The local room to join.
        #[key(default = DEFAULT_ROOM.into(), shown = DEFAULT_ROOM)]
        pub local_room: String,
        /// Connect + welcome deadline.
        #[key(default = "10s")]
        pub hello_timeout: ConfigDuration,
        /// Keep-alive interval, so NAT bindings stay open.
        #[key(default = "5s")]
        pub keepalive: ConfigDuration,
        /// First reconnect delay (doubles, with jitter).
        #[key(default = "250ms")]
        pub reconnect_min: ConfigDuration,
        /// Longest reconnect delay.
        #[key(default = "30s")]
        pub reconnect_max: ConfigDuration,
    }
}

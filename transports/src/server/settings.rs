//! The relay's settings (`quic-server` keys) and their defaults.

use std::path::PathBuf;

use lanparty_core::config::ConfigDuration;

crate::net::connection_settings! {
    /// The relay: QUIC listener that admits peers into rooms and carries
    /// their frames as datagrams.
    #[lanparty_core::stage_kind(port, name = "quic-server", build = super::build,
        example = "ports:\n  relay: { type: quic-server, listen: 443/udp }")]
    #[derive(Debug, Clone)]
    pub struct ServerSettings {
        /// Where to listen: `443/udp` (every address) or an address like
        /// `0.0.0.0:4433`.
        #[key(ty = "PORT/udp or address:port")]
        pub listen: String,
        /// PEM certificate chain (with `key`); without both, a self-signed
        /// certificate is used.
        pub cert: Option<PathBuf>,
        /// PEM private key for `cert`.
        pub key: Option<PathBuf>,
        /// Where the self-signed certificate is made on first start and
        /// reused after, relative to the config file; players pin its
        /// `relay-cert.der`.
        #[key(default = "tls")]
        pub self_signed_dir: PathBuf,
        /// DNS names in the self-signed certificate (clients' `server_name`).
        #[key(default = "[lanparty-relay.local]")]
        pub names: Vec<String>,
        /// Rooms at once; more get `relay_full`.
        #[key(default = 256)]
        pub max_rooms: usize,
        /// Peers per room; more get `room_full`.
        #[key(default = 32)]
        pub max_peers_per_room: usize,
        /// Connections past their handshake at once (admitted, or saying
        /// hello); half-open ones are bounded by `max_handshakes`, so they
        /// never block a join.
        #[key(default = 4096)]
        pub max_connections: usize,
        /// Drop QUIC handshakes not complete by then.
        #[key(default = "3s")]
        pub handshake_timeout: ConfigDuration,
        /// Handshakes in progress at once; more are ignored.
        #[key(default = 1024)]
        pub max_handshakes: usize,
        /// Handshakes in progress from one IP address; more are ignored.
        #[key(default = 16)]
        pub max_handshakes_per_address: usize,
        /// With more handshakes than this in progress, a new connection must
        /// first prove its address with a stateless QUIC Retry (0: always).
        #[key(default = 16)]
        pub retry_above: usize,
        /// QUIC long-header (handshake) packets accepted from one IP address
        /// per second; the rest are dropped before quinn decrypts them (a
        /// handshake takes a handful; a whole LAN party joining from behind
        /// one NAT fits).
        #[key(default = 64)]
        pub handshake_packets_per_address: u32,
        /// Close connections that have not said hello by then.
        #[key(default = "5s")]
        pub hello_timeout: ConfigDuration,
        /// Largest control message accepted, in bytes.
        #[key(default = lanparty_core::control::MAX_CONTROL_FRAME, shown = "16384")]
        pub max_control_frame: usize,
    }
}

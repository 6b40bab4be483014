//! The relay's settings (`quic-server` keys) and their defaults.

use std::path::PathBuf;
use std::time::Duration;

use lanparty_core::config::ConfigDuration;
use lanparty_core::queue::QueueSettings;
use serde::Deserialize;

use crate::net;

/// `quic-server` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// `listen`: `443/udp` (every address) or an address like `0.0.0.0:4433`.
    pub listen: String,
    /// `cert`: PEM certificate chain; with `key`, replaces the self-signed one.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// `key`: PEM private key for `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// `self_signed_dir`: where the self-signed certificate is generated on
    /// first start and reused after (`relay-cert.der` is the file players
    /// pin). Default `tls` next to the config file.
    #[serde(default = "default_tls_dir")]
    pub self_signed_dir: PathBuf,
    /// `names`: DNS names in the self-signed certificate. Default
    /// `[lanparty-relay.local]`.
    #[serde(default = "default_names")]
    pub names: Vec<String>,
    /// `max_rooms`: rooms at once. Default 256.
    #[serde(default = "default_max_rooms")]
    pub max_rooms: usize,
    /// `max_peers_per_room`: peers per room. Default 32.
    #[serde(default = "default_max_peers")]
    pub max_peers_per_room: usize,
    /// `max_connections`: connections past their handshake at once
    /// (admitted, or saying hello). Default 4096. Half-open handshakes are
    /// bounded separately (`max_handshakes`), so they never block a join.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// `handshake_timeout`: a QUIC handshake not complete by then is
    /// dropped. Default 3s.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: ConfigDuration,
    /// `max_handshakes`: handshakes in progress at once. Default 1024.
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: usize,
    /// `max_handshakes_per_address`: handshakes in progress from one IP
    /// address. Default 16.
    #[serde(default = "default_max_handshakes_per_address")]
    pub max_handshakes_per_address: usize,
    /// `retry_above`: with more handshakes than this in progress, a new
    /// connection must first prove its address with a QUIC Retry (one
    /// stateless packet back, no state kept). 0: always. Default 16.
    #[serde(default = "default_retry_above")]
    pub retry_above: usize,
    /// `handshake_packets_per_address`: QUIC long-header (handshake)
    /// packets accepted from one IP address per second; the rest are
    /// dropped before quinn decrypts them. Default 64 (a handshake takes a
    /// handful; a whole LAN party joining from behind one NAT fits).
    #[serde(default = "default_handshake_packets_per_address")]
    pub handshake_packets_per_address: u32,
    /// `hello_timeout`: a connection that has not said hello by then is
    /// closed. Default 5s.
    #[serde(default = "default_hello_timeout")]
    pub hello_timeout: ConfigDuration,
    /// `idle_timeout`: a silent peer is dropped after this. Default 30s.
    #[serde(default = "net::default_idle_timeout")]
    pub idle_timeout: ConfigDuration,
    /// `max_control_frame`: largest control message accepted. Default 16384.
    #[serde(default = "default_max_control")]
    pub max_control_frame: usize,
    /// `socket_buffer`: UDP socket buffer bytes. Default 4 MiB.
    #[serde(default = "net::default_socket_buffer")]
    pub socket_buffer: usize,
    /// `initial_mtu`: QUIC's initial path MTU. Default 1452.
    #[serde(default = "net::default_initial_mtu")]
    pub initial_mtu: u16,
    /// `congestion`: the congestion controller of every connection:
    /// `delay` (default), `bbr`, `cubic` or `newreno`.
    #[serde(default)]
    pub congestion: net::Congestion,
    /// `queue`: the egress queue in front of every peer's connection.
    #[serde(default)]
    pub queue: QueueSettings,
}

fn default_tls_dir() -> PathBuf {
    PathBuf::from("tls")
}
fn default_names() -> Vec<String> {
    vec!["lanparty-relay.local".into()]
}
fn default_max_rooms() -> usize {
    256
}
fn default_max_peers() -> usize {
    32
}
fn default_max_connections() -> usize {
    4096
}
fn default_handshake_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(3))
}
fn default_max_handshakes() -> usize {
    1024
}
fn default_max_handshakes_per_address() -> usize {
    16
}
fn default_retry_above() -> usize {
    16
}
fn default_handshake_packets_per_address() -> u32 {
    64
}
fn default_hello_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(5))
}
fn default_max_control() -> usize {
    lanparty_core::control::MAX_CONTROL_FRAME
}

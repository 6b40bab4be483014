//! UDP sockets, QUIC transport parameters, address parsing and the
//! overlay encoder shared by the server and client ports.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lanparty_core::wire::compress::Compressor;
use lanparty_core::wire::fragment::FragmentHeader;
use lanparty_core::wire::overlay::{self, ETHERNET_HEADER};
use socket2::{Domain, Protocol, Socket, Type};

/// Default UDP socket buffer size: bursts of frames must not overflow the
/// kernel's receive buffer (NOTES.md: 4 MiB took loss from ~1–5 % to ~0).
pub const DEFAULT_SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// Default initial QUIC MTU: datagrams of 1414 bytes from the first packet,
/// so that IP packets up to 1394 bytes (what `tcp-mss` clamps TCP to) go
/// whole from the start; larger frames go in fragments.
pub const DEFAULT_INITIAL_MTU: u16 = 1452;

/// Default `compress_below_mbps`: well above a player's uplink or a slow
/// downlink, where every byte counts; below the rates where the relay's
/// CPU is what limits a transfer.
pub const DEFAULT_COMPRESS_BELOW_MBPS: u32 = 200;

/// Declares a QUIC port's settings struct (put `#[stage_kind]` on it): the
/// fields as written, then the connection keys both QUIC ports have —
/// `idle_timeout`, `socket_buffer`, `initial_mtu`, `congestion`, `queue`,
/// `header_compression`, `compress_below_mbps`, declared here once.
macro_rules! connection_settings {
    ($(#[$meta:meta])* pub struct $name:ident { $($fields:tt)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($fields)*
            /// The other end counts as lost after this much silence.
            #[key(default = "30s")]
            pub idle_timeout: lanparty_core::config::ConfigDuration,
            /// UDP socket buffer size in bytes.
            #[key(default = $crate::net::DEFAULT_SOCKET_BUFFER, shown = "4194304")]
            pub socket_buffer: usize,
            /// QUIC's initial path MTU (1452 gives 1414-byte datagrams: IP
            /// packets up to 1394 bytes go whole, larger in fragments).
            #[key(default = $crate::net::DEFAULT_INITIAL_MTU, shown = "1452")]
            pub initial_mtu: u16,
            /// Congestion controller of the connection(s); `delay` keeps the
            /// bottleneck's queue short (see "Game traffic first").
            #[key(default = "delay")]
            pub congestion: $crate::net::Congestion,
            /// Egress queue in front of the connection(s): { discipline:
            /// fq-codel | fifo, target: 5ms (CoDel's acceptable standing
            /// delay), interval: 100ms (CoDel's interval), limit: 4MiB
            /// (bytes queued at most), flows: 1024 (flow queues), ecn: true
            /// (mark CE instead of dropping ECN-capable packets),
            /// quic_buffer: 1ms (what may wait inside quinn, in sending
            /// time) }.
            #[key(default, shown = "fq-codel")]
            pub queue: lanparty_core::queue::QueueSettings,
            /// Compress the headers of repeated flows (a TCP download's
            /// ~35 bytes of Ethernet, IP and port fields per frame) when
            /// the other end agrees; off on either end turns it off.
            #[key(default = true)]
            pub header_compression: bool,
            /// Header compression only while the connection delivers less
            /// than this many Mbit/s: on a faster path the CPU to rebuild
            /// and re-compress every frame costs more than the 2.4 % of
            /// bytes it saves (0: at every rate).
            #[key(default = $crate::net::DEFAULT_COMPRESS_BELOW_MBPS, shown = "200")]
            pub compress_below_mbps: u32,
        }
    };
}
pub(crate) use connection_settings;

/// Checks an `initial_mtu` setting.
pub fn check_initial_mtu(mtu: u16) -> Result<(), &'static str> {
    if (1200..=9000).contains(&mtu) {
        Ok(())
    } else {
        Err("must be 1200..=9000 (QUIC needs at least 1200)")
    }
}

/// Application close codes on the QUIC connection.
pub mod close {
    /// Normal close (disconnect).
    pub const NORMAL: u32 = 0;
    /// The hello was rejected.
    pub const REJECTED: u32 = 1;
    /// The peer broke the protocol.
    pub const PROTOCOL_ERROR: u32 = 2;
    /// The sender is shutting down.
    pub const SHUTDOWN: u32 = 3;
    /// The peer did not say hello in time.
    pub const TIMEOUT: u32 = 4;
}

/// Parses a `listen:` value: `443/udp` (every address, that port) or a
/// socket address such as `0.0.0.0:4433` or `[::1]:4433`. Returns the
/// addresses to try, in order.
pub fn parse_listen(text: &str) -> Result<Vec<SocketAddr>, String> {
    let text = text.trim();
    if let Some(port) = text.strip_suffix("/udp") {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("`{text}`: `{port}` is not a UDP port"))?;
        return Ok(vec![
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        ]);
    }
    text.parse::<SocketAddr>()
        .map(|a| vec![a])
        .map_err(|_| format!("`{text}` is neither PORT/udp (e.g. 443/udp) nor an address:port (e.g. 0.0.0.0:443, [::]:443)"))
}

/// Binds a non-blocking UDP socket with `buffer`-byte kernel buffers; an
/// IPv6 wildcard also accepts IPv4.
pub fn bind_udp(addr: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    bind_udp_with(addr, buffer, |_| Ok(()))
}

/// [`bind_udp`], with `before_bind` setting options that must precede the
/// bind (`SO_REUSEPORT` of [`crate::reuseport`]).
pub fn bind_udp_with(
    addr: SocketAddr,
    buffer: usize,
    before_bind: impl FnOnce(&Socket) -> std::io::Result<()>,
) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    if let Err(e) = socket.set_recv_buffer_size(buffer) {
        tracing::warn!(%addr, buffer, "cannot set the UDP receive buffer: {e}");
    }
    if let Err(e) = socket.set_send_buffer_size(buffer) {
        tracing::warn!(%addr, buffer, "cannot set the UDP send buffer: {e}");
    }
    before_bind(&socket)?;
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// A quinn endpoint on `socket`, serving when `server` is given.
///
/// A client endpoint (no `server`) carries one connection and chooses
/// zero-length connection IDs: it routes what arrives by the relay's
/// address, and every packet towards it is 8 bytes shorter (0.5 % more
/// of a slow downlink for frames; the relay's own IDs still let the
/// client's address change under NAT).
pub fn endpoint(
    socket: std::net::UdpSocket,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    let config = match server {
        None => client_endpoint_config(),
        Some(_) => quinn::EndpointConfig::default(),
    };
    quinn::Endpoint::new(config, server, socket, Arc::new(quinn::TokioRuntime))
}

/// A client endpoint's configuration: zero-length connection IDs (see
/// [`endpoint`]).
pub fn client_endpoint_config() -> quinn::EndpointConfig {
    let mut config = quinn::EndpointConfig::default();
    config.cid_generator(|| Box::new(quinn_proto::RandomConnectionIdGenerator::new(0)));
    config
}

/// The relay's endpoint configuration: its stateless-reset key is
/// derived from `secret` (the relay's private key). A restarted relay then
/// answers packets of connections from before the restart with a
/// stateless reset that the peers accept, so they reconnect at once
/// instead of after their idle timeout.
///
/// Loop `index` of `loops` makes connection IDs that the socket group's
/// program steers to it ([`crate::reuseport::loop_byte`]).
pub fn server_endpoint_config(secret: &[u8], index: usize, loops: usize) -> quinn::EndpointConfig {
    let mut material = b"lanparty stateless reset key v1".to_vec();
    material.extend_from_slice(secret);
    let digest = ring::digest::digest(&ring::digest::SHA256, &material);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, digest.as_ref());
    let mut config = quinn::EndpointConfig::new(Arc::new(key));
    // quinn's default generator rejects connection ids it did not make
    // itself (with a key that is new at every start) and sends no reset
    // for them; accept any id so that old connections get their reset.
    config.cid_generator(move || {
        Box::new(RandomCids {
            rng: ring::rand::SystemRandom::new(),
            index,
            loops,
        })
    });
    config
}

/// Random 8-byte connection ids that any restart of the relay will answer
/// with a stateless reset; the first byte names the loop that made them.
struct RandomCids {
    rng: ring::rand::SystemRandom,
    index: usize,
    loops: usize,
}

impl quinn::ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut bytes = [0u8; 8];
        if ring::rand::SecureRandom::fill(&self.rng, &mut bytes).is_err() {
            // The system RNG does not fail on Linux; never hand out a constant id.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            bytes = (nanos as u64).to_be_bytes();
        }
        bytes[0] = crate::reuseport::loop_byte(bytes[0], self.index, self.loops);
        quinn::ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// The congestion controller of a QUIC connection (`congestion:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Congestion {
    /// lanparty's delay-based controller ([`crate::congestion`]): keeps the
    /// bottleneck's standing queue near
    /// [`crate::congestion::TARGET_DELAY`], so frames wait in the
    /// sender's scheduler instead (the default: see README, "Game traffic
    /// first").
    #[default]
    Delay,
    /// quinn's BBR (experimental in quinn).
    Bbr,
    /// CUBIC (RFC 9438): fills the bottleneck's buffer until it loses.
    Cubic,
    /// NewReno (RFC 9002's default).
    Newreno,
}

impl lanparty_core::registry::KeyType for Congestion {
    const NAME: &'static str = "delay | bbr | cubic | newreno";
}

/// QUIC transport parameters for lanparty connections.
pub fn transport(
    idle_timeout: Duration,
    keepalive: Option<Duration>,
    initial_mtu: u16,
    congestion: Congestion,
) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(quinn::IdleTimeout::try_from(idle_timeout).ok());
    t.keep_alive_interval(keepalive);
    t.initial_mtu(initial_mtu);
    t.datagram_receive_buffer_size(Some(4 * 1024 * 1024));
    t.datagram_send_buffer_size(crate::datapath::QUIC_DATAGRAM_BUFFER);
    match congestion {
        Congestion::Delay => {
            t.congestion_controller_factory(Arc::new(crate::congestion::DelayConfig))
        }
        Congestion::Bbr => {
            t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()))
        }
        Congestion::Cubic => {
            t.congestion_controller_factory(Arc::new(quinn::congestion::CubicConfig::default()))
        }
        Congestion::Newreno => {
            t.congestion_controller_factory(Arc::new(quinn::congestion::NewRenoConfig::default()))
        }
    };
    t.max_concurrent_uni_streams(0u32.into());
    t.max_concurrent_bidi_streams(1u32.into());
    let mut acks = quinn::AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(quinn::VarInt::from_u32(ACK_ELICITING_THRESHOLD));
    acks.max_ack_delay(Some(MAX_ACK_DELAY));
    t.ack_frequency_config(Some(acks));
    t
}

/// The longest the peer may hold an ACK back (ACK frequency extension): on
/// a slow path, ten packets take longer than this, and the congestion
/// controller needs timely acknowledgements to keep the path's queue short
/// (README, "Game traffic first").
pub const MAX_ACK_DELAY: Duration = Duration::from_millis(2);

/// Ack-eliciting packets the peer may receive before it must send an ACK.
pub const ACK_ELICITING_THRESHOLD: u32 = 10;

pub use lanparty_core::chunks::Chunks;

/// Writes overlay header + frame as one datagram into [`Chunks`].
#[derive(Debug, Default)]
pub struct DatagramEncoder {
    chunks: Chunks,
}

impl DatagramEncoder {
    fn datagram(&mut self, header: &[u8], payload: &[u8]) -> Bytes {
        let buf = self.chunks.room(header.len() + payload.len());
        buf.extend_from_slice(header);
        buf.extend_from_slice(payload);
        self.chunks.take()
    }

    /// The datagram for a whole Ethernet frame.
    pub fn encode(&mut self, frame: &[u8]) -> Bytes {
        self.datagram(&ETHERNET_HEADER, frame)
    }

    /// The datagram for one fragment of a frame.
    pub fn encode_fragment(&mut self, header: &FragmentHeader, payload: &[u8]) -> Bytes {
        self.datagram(&header.encode(), payload)
    }

    /// The datagram for a whole frame that installs compression context
    /// `slot` at `generation`.
    pub fn encode_install(&mut self, slot: u8, generation: u8, frame: &[u8]) -> Bytes {
        let header = overlay::context_header(overlay::CONTEXT_INSTALL, slot, generation);
        self.datagram(&header, frame)
    }

    /// The datagram for `frame` compressed against `compressor`'s `slot`.
    pub fn encode_compressed(&mut self, compressor: &Compressor, slot: u8, frame: &[u8]) -> Bytes {
        let header = overlay::context_header(overlay::CONTEXT_COMPRESSED, slot, 0);
        let buf = self.chunks.room(header.len() + frame.len());
        // Version and context; the compressor writes slot and generation.
        buf.extend_from_slice(&header[..2]);
        compressor.write_compressed(slot, frame, buf);
        self.chunks.take()
    }

    /// The datagram that acknowledges the install of `slot` at
    /// `generation`.
    pub fn encode_ack(&mut self, slot: u8, generation: u8) -> Bytes {
        self.datagram(
            &overlay::context_header(overlay::CONTEXT_ACK, slot, generation),
            &[],
        )
    }
}

/// Reason-keyed counters for rare events (rejects, protocol errors).
#[derive(Debug, Default)]
pub struct ReasonCounters {
    counts: std::sync::Mutex<Vec<(String, u64)>>,
}

impl ReasonCounters {
    /// Counts one event.
    pub fn add(&self, reason: &str) {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match counts.iter_mut().find(|(r, _)| r == reason) {
            Some((_, n)) => *n += 1,
            None => counts.push((reason.to_string(), 1)),
        }
    }

    /// Events counted for `reason`.
    pub fn get(&self, reason: &str) -> u64 {
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        counts
            .iter()
            .find(|(r, _)| r == reason)
            .map_or(0, |(_, n)| *n)
    }

    /// Every reason and count.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        assert_eq!(parse_listen("443/udp").unwrap().len(), 2);
        assert_eq!(
            parse_listen("127.0.0.1:4433").unwrap(),
            vec!["127.0.0.1:4433".parse().unwrap()]
        );
        assert_eq!(
            parse_listen("[::1]:4433").unwrap(),
            vec!["[::1]:4433".parse().unwrap()]
        );
        assert!(parse_listen("443").is_err());
        assert!(parse_listen("x/udp").is_err());
        assert!(parse_listen("70000/udp").is_err());
    }

    #[test]
    fn encoder_shares_chunks() {
        let mut e = DatagramEncoder::default();
        let a = e.encode(&[1, 2, 3]);
        let b = e.encode(&[4]);
        assert_eq!(&a[..], &[1, 0, 1, 2, 3]);
        assert_eq!(&b[..], &[1, 0, 4]);
        assert_eq!(a.as_ptr() as usize + 5, b.as_ptr() as usize);
        let big = e.encode(&vec![7u8; 70_000]);
        assert_eq!(big.len(), 70_002);
    }
}

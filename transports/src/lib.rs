//! lanparty's QUIC transports, on quinn-proto driven from our own loops
//! ([`quic_loop`]; quinn's configuration types, and quinn itself for the
//! load generator's peers) and rustls (ring):
//!
//! - `quic-server`: the relay; admits peers into rooms ([`admission`]) and
//!   carries their frames as QUIC datagrams;
//! - `quic-client`: a client's or gateway's session with the relay, with
//!   reconnects.
//!
//! A binary gets them by naming this crate (`use lanparty_transports as _;`).

pub mod admission;
pub mod bench;
pub mod client;
pub mod congestion;
pub mod credentials;
pub mod datapath;
pub mod gate;
pub mod net;
pub mod quic_loop;
pub mod report;
pub mod reuseport;
pub mod server;
pub mod session;
pub mod tls;

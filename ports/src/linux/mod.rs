//! Linux network device plumbing shared by the TAP, TUN and AF_PACKET ports.

pub mod checksum;
pub mod gro;
pub mod gso;
pub mod netdev;
pub mod offload;
pub mod rxbuf;
pub mod tun;

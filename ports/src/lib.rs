//! lanparty's local ports: where frames meet this machine's network stack.
//!
//! - `tap` (Linux): a TAP device; a client's virtual Ethernet adapter.
//! - `af-packet` (Linux): a wired LAN interface; the gateway's side.
//! - `tun-l2` (Linux): a TUN device with the Ethernet emulation of
//!   [`emulation`], the Windows client's layer.
//! - `wintun` (Windows): a Wintun adapter with the same emulation, route
//!   pinning, interface metric and network profile.
//!
//! A binary gets them by naming this crate (`use lanparty_ports as _;`).

#[cfg(target_os = "linux")]
pub mod af_packet;
pub mod emulation;
pub mod inet;
#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(target_os = "linux")]
pub mod tap;
#[cfg(target_os = "linux")]
pub mod tun_l2;
#[cfg(windows)]
pub mod windows;
pub mod wintun_port;

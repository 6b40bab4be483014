//! Wire formats: one file per format, each a checked view over bytes.

pub mod checksum;
pub mod compress;
pub mod ethernet;
pub mod fragment;
pub mod frame;
pub mod mac;
pub mod mtu;
pub mod overlay;
pub mod pcapng;

pub use ethernet::{EthernetError, EthernetHeader, VlanTag, ethertype};
pub use frame::{Fragment, FrameView, Judged, L3Facts, L3Kind, ip_proto};
pub use mac::{MacAddr, MacError};

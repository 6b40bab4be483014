//! lanparty's frame filters. Each module is one filter kind that registers
//! itself with `inventory`; a binary gets them by naming this crate
//! (`use lanparty_filters as _;`).
//!
//! | kind | side | what it stops |
//! |---|---|---|
//! | `jumbo` | both | frames over the room MTU (ingress) or the destination link's MTU (egress) |
//! | `switch-control` | ingress | STP, pause, LACP, 802.1X, LLDP and the rest of 01:80:C2:00:00:0X |
//! | `dhcp-server` | ingress | DHCPv4/DHCPv6 server messages from roles that may not serve DHCP |
//! | `ipv6-ra` | ingress | router advertisements from roles that may not route (drop, or zero lifetime) |
//! | `reflection` | egress | a frame going back out of the link it came in on |
//! | `mac-guard` | ingress | spoofed, multicast and all-zero source MACs; MAC floods from a gateway |
//! | `storm` | ingress | broadcast/multicast floods (token bucket per link) |
//! | `ethertype` | ingress | ethertypes outside an allow-list or inside a deny-list |
//! | `capture` | both | nothing: writes what passes to rotating pcapng files |
//! | `tcp-mss` | ingress | nothing: clamps the MSS of TCP SYNs so segments fit one QUIC datagram |

pub mod capture;
pub mod dhcp_server;
pub mod ethertype;
pub mod ipv6_ra;
pub mod jumbo;
pub mod mac_guard;
pub mod reflection;
pub mod roles;
pub mod storm;
pub mod switch_control;
pub mod tcp_mss;

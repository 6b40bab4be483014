//! Ethernet emulation over an IP-only adapter (Wintun on Windows, a TUN
//! device on Linux): the room carries Ethernet, the adapter carries IP
//! packets, and this layer makes the adapter behave like a NIC on the LAN.
//! Platform-neutral and sans-IO (time is handed in, frames and packets are
//! returned), so all of it runs in Linux tests.
//!
//! - **Outbound** (IP packet from the OS → frame into the room): source MAC
//!   is ours; destination: IPv4 limited or subnet-directed broadcast →
//!   ff:ff:ff:ff:ff:ff; IPv4/IPv6 multicast → the mapped multicast MAC;
//!   unicast → the neighbour table (the next hop is the destination on the
//!   LAN, else the lease's router). An unknown neighbour gets an ARP request
//!   or neighbour solicitation into the room while the packet waits in a
//!   small bounded queue (full: dropped and counted; unanswered: dropped
//!   after `resolve_timeout`).
//! - **Inbound** (frame from the room → IP packet to the OS): frames for our
//!   MAC, broadcast and multicast are stripped to their IP packet (cut to the
//!   IP length, so Ethernet padding never reaches the OS). ARP requests and
//!   neighbour solicitations for our addresses are answered here with our
//!   MAC; ARP, ND and IP traffic teach the neighbour table (entries expire).
//!   Other ARP/ND is consumed (an IP-only adapter has no use for it).
//! - **Addressing**: a static address, or the DHCP client in [`dhcp`] that
//!   leases one from the LAN behind the gateway; [`Event`]s tell the port to
//!   configure or clear the adapter. Our IPv6 addresses are learned from the
//!   source of the OS's own IPv6 packets (its link-local, SLAAC…).
//!
//! Just over 600 lines, on purpose: the outbound, inbound and addressing
//! rules above are one state machine over one private neighbour table and
//! pending queue; the DHCP client, the packet builders and the port-side
//! driver are already files of their own.

pub mod dhcp;
pub mod driver;
pub mod packets;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use lanparty_core::wire::MacAddr;
use serde::Serialize;

use dhcp::{DhcpClient, Lease, LeaseEvent};
use packets::{
    ARP_REPLY, ARP_REQUEST, Arp, ETH_ARP, ETH_HLEN, ETH_IPV4, ETH_IPV6, ND_ADVERT, ND_SOLICIT,
    Neighbor, ipv4_at, ipv4_multicast_mac, ipv6_at, ipv6_multicast_mac, neighbor_advertisement,
    neighbor_solicitation,
};

/// An IPv4 configuration of the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ipv4Config {
    /// Our address.
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// The LAN's router (next hop for off-LAN destinations), if any.
    pub router: Option<Ipv4Addr>,
}

impl Ipv4Config {
    fn mask(&self) -> u32 {
        u32::from(crate::inet::ipv4_netmask(self.prefix))
    }

    /// True when `ip` is on our LAN.
    pub fn on_link(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }

    /// The subnet-directed broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }
}

/// How the adapter gets its IPv4 address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressing {
    /// Fixed.
    Static(Ipv4Config),
    /// Leased by the emulation's DHCP client (optionally sending a host name).
    Dhcp {
        /// Option 12.
        hostname: Option<String>,
    },
}

/// Emulation settings.
#[derive(Debug, Clone)]
pub struct EmulationConfig {
    /// Our MAC in the room.
    pub mac: MacAddr,
    /// Static or DHCP.
    pub addressing: Addressing,
    /// How long a learned neighbour is kept without news. Default 300s.
    pub neighbor_ttl: Duration,
    /// Neighbours kept at most. Default 1024.
    pub max_neighbors: usize,
    /// Packets waiting for address resolution at most. Default 64.
    pub pending_max: usize,
    /// How long a packet waits for resolution. Default 3s.
    pub resolve_timeout: Duration,
}

impl EmulationConfig {
    /// Defaults for `mac` and `addressing`.
    pub fn new(mac: MacAddr, addressing: Addressing) -> EmulationConfig {
        EmulationConfig {
            mac,
            addressing,
            neighbor_ttl: Duration::from_secs(300),
            max_neighbors: 1024,
            pending_max: 64,
            resolve_timeout: Duration::from_secs(3),
        }
    }
}

/// What the adapter must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Configure this IPv4 address (replacing any other).
    Configure(Ipv4Config),
    /// Remove the IPv4 address.
    Deconfigure(Ipv4Config),
}

/// Counters, for status and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EmulationCounters {
    /// IP packets from the OS sent into the room.
    pub outbound: u64,
    /// IP packets delivered to the OS.
    pub inbound: u64,
    /// ARP requests answered for us.
    pub arp_answered: u64,
    /// Neighbour solicitations answered for us.
    pub ns_answered: u64,
    /// ARP requests / solicitations we sent to resolve a next hop.
    pub solicitations_sent: u64,
    /// Packets dropped because the resolution queue was full.
    pub pending_full: u64,
    /// Packets dropped because their next hop never answered.
    pub unresolved: u64,
    /// Packets from the OS we could not send (not IP, no route, too short).
    pub outbound_dropped: u64,
    /// Frames from the room not for us (another unicast MAC, VLAN-tagged).
    pub not_for_us: u64,
    /// Frames from the room that did not parse.
    pub malformed: u64,
    /// DHCP leases obtained.
    pub leases: u64,
}

#[derive(Debug, Clone, Copy)]
struct NeighborEntry {
    mac: MacAddr,
    seen: Instant,
}

#[derive(Debug)]
struct Pending {
    next_hop: IpAddr,
    packet: Bytes,
    deadline: Instant,
}

/// The emulation of one adapter.
#[derive(Debug)]
pub struct Emulation {
    config: EmulationConfig,
    ipv4: Option<Ipv4Config>,
    ipv6: Vec<Ipv6Addr>,
    neighbors: HashMap<IpAddr, NeighborEntry>,
    pending: VecDeque<Pending>,
    solicited: HashMap<IpAddr, Instant>,
    dhcp: Option<DhcpClient>,
    chunk: BytesMut,
    counters: EmulationCounters,
}

const CHUNK: usize = 64 * 1024;
/// Our IPv6 addresses remembered at most.
const MAX_OWN_IPV6: usize = 8;
/// A next hop is solicited at most once per this long.
const RESOLVE_INTERVAL: Duration = Duration::from_secs(1);

/// The length an IP packet says it has (IPv4 total length, IPv6 40 +
/// payload length), if it fits in `p`.
fn ip_len(p: &[u8]) -> Option<usize> {
    let len = match p.first()? >> 4 {
        4 => usize::from(u16::from_be_bytes([*p.get(2)?, *p.get(3)?])),
        6 => 40 + usize::from(u16::from_be_bytes([*p.get(4)?, *p.get(5)?])),
        _ => return None,
    };
    (len >= 20 && len <= p.len()).then_some(len)
}

impl Emulation {
    /// A new emulation; with DHCP, the first DISCOVER leaves on the first
    /// [`Emulation::poll`]. `seed` randomises the DHCP transaction id.
    pub fn new(config: EmulationConfig, seed: u32, now: Instant) -> Emulation {
        let (ipv4, dhcp) = match &config.addressing {
            Addressing::Static(c) => (Some(*c), None),
            Addressing::Dhcp { hostname } => (
                None,
                Some(DhcpClient::new(config.mac, hostname.clone(), seed, now)),
            ),
        };
        Emulation {
            config,
            ipv4,
            ipv6: Vec::new(),
            neighbors: HashMap::new(),
            pending: VecDeque::new(),
            solicited: HashMap::new(),
            dhcp,
            chunk: BytesMut::new(),
            counters: EmulationCounters::default(),
        }
    }

    /// Our MAC.
    pub fn mac(&self) -> MacAddr {
        self.config.mac
    }

    /// The IPv4 configuration, once there is one.
    pub fn ipv4(&self) -> Option<Ipv4Config> {
        self.ipv4
    }

    /// The DHCP lease, if DHCP is used and bound.
    pub fn lease(&self) -> Option<&Lease> {
        self.dhcp.as_ref().and_then(DhcpClient::lease)
    }

    /// The DHCP state (`static` without DHCP).
    pub fn dhcp_state(&self) -> &'static str {
        self.dhcp.as_ref().map_or("static", DhcpClient::state_name)
    }

    /// The counters.
    pub fn counters(&self) -> EmulationCounters {
        self.counters
    }

    /// Neighbours known now.
    pub fn neighbor_count(&self) -> usize {
        self.neighbors.len()
    }

    /// The MAC learned for `ip`, if any.
    pub fn neighbor(&self, ip: IpAddr) -> Option<MacAddr> {
        self.neighbors.get(&ip).map(|n| n.mac)
    }

    fn frame(&mut self, dst: MacAddr, ethertype: u16, packet: &[u8]) -> Bytes {
        let need = ETH_HLEN + packet.len();
        if self.chunk.capacity() - self.chunk.len() < need.max(60) {
            self.chunk = BytesMut::with_capacity(CHUNK.max(need));
        }
        self.chunk.extend_from_slice(&dst.0);
        self.chunk.extend_from_slice(&self.config.mac.0);
        self.chunk.extend_from_slice(&ethertype.to_be_bytes());
        self.chunk.extend_from_slice(packet);
        if need < 60 {
            self.chunk.resize(self.chunk.len() + 60 - need, 0);
        }
        self.chunk.split().freeze()
    }

    fn learn(&mut self, ip: IpAddr, mac: MacAddr, now: Instant, to_room: &mut Vec<Bytes>) {
        if mac.is_multicast() || mac.is_zero() || ip.is_unspecified() || ip.is_multicast() {
            return;
        }
        if let IpAddr::V4(v4) = ip
            && v4.is_broadcast()
        {
            return;
        }
        if !self.neighbors.contains_key(&ip) && self.neighbors.len() >= self.config.max_neighbors {
            // Full: forget the stalest entry.
            if let Some(oldest) = self
                .neighbors
                .iter()
                .min_by_key(|(_, n)| n.seen)
                .map(|(ip, _)| *ip)
            {
                self.neighbors.remove(&oldest);
            }
        }
        self.neighbors.insert(ip, NeighborEntry { mac, seen: now });
        // Packets that waited for this neighbour leave now.
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].next_hop == ip {
                if let Some(p) = self.pending.remove(i) {
                    let ethertype = if ip.is_ipv4() { ETH_IPV4 } else { ETH_IPV6 };
                    let frame = self.frame(mac, ethertype, &p.packet);
                    to_room.push(frame);
                    self.counters.outbound += 1;
                }
            } else {
                i += 1;
            }
        }
    }

    /// An IP packet from the OS: frames for the room go to `to_room` (the
    /// packet itself, or a resolution request while it waits).
    pub fn outbound(&mut self, now: Instant, packet: Bytes, to_room: &mut Vec<Bytes>) {
        let Some(len) = ip_len(&packet) else {
            self.counters.outbound_dropped += 1;
            return;
        };
        let packet = packet.slice(..len);
        let (ethertype, dst_mac, next_hop) = match packet[0] >> 4 {
            4 => {
                let Some(dst) = ipv4_at(&packet, 16) else {
                    self.counters.outbound_dropped += 1;
                    return;
                };
                if dst.is_broadcast() || self.ipv4.is_some_and(|c| dst == c.broadcast()) {
                    (ETH_IPV4, Some(MacAddr::BROADCAST), None)
                } else if dst.is_multicast() {
                    (ETH_IPV4, Some(ipv4_multicast_mac(dst)), None)
                } else {
                    let hop = match self.ipv4 {
                        Some(c) if !c.on_link(dst) => match c.router {
                            Some(router) => router,
                            None => {
                                self.counters.outbound_dropped += 1;
                                return;
                            }
                        },
                        _ => dst,
                    };
                    (ETH_IPV4, None, Some(IpAddr::V4(hop)))
                }
            }
            _ => {
                let (Some(src), Some(dst)) = (ipv6_at(&packet, 8), ipv6_at(&packet, 24)) else {
                    self.counters.outbound_dropped += 1;
                    return;
                };
                if !src.is_unspecified() && !self.ipv6.contains(&src) {
                    if self.ipv6.len() >= MAX_OWN_IPV6 {
                        self.ipv6.remove(0);
                    }
                    self.ipv6.push(src);
                }
                if dst.is_multicast() {
                    (ETH_IPV6, Some(ipv6_multicast_mac(dst)), None)
                } else {
                    (ETH_IPV6, None, Some(IpAddr::V6(dst)))
                }
            }
        };
        let dst_mac =
            dst_mac.or_else(|| next_hop.and_then(|ip| self.neighbors.get(&ip).map(|n| n.mac)));
        if let Some(mac) = dst_mac {
            let frame = self.frame(mac, ethertype, &packet);
            to_room.push(frame);
            self.counters.outbound += 1;
            return;
        }
        let Some(hop) = next_hop else {
            return;
        };
        if self.pending.len() >= self.config.pending_max {
            self.counters.pending_full += 1;
            return;
        }
        self.pending.push_back(Pending {
            next_hop: hop,
            packet,
            deadline: now + self.config.resolve_timeout,
        });
        self.solicit(now, hop, to_room);
    }

    /// Sends an ARP request / neighbour solicitation for `hop`, at most once
    /// per second.
    fn solicit(&mut self, now: Instant, hop: IpAddr, to_room: &mut Vec<Bytes>) {
        if self
            .solicited
            .get(&hop)
            .is_some_and(|at| now.saturating_duration_since(*at) < RESOLVE_INTERVAL)
        {
            return;
        }
        if self.solicited.len() > 4 * self.config.pending_max {
            self.solicited
                .retain(|_, at| now.saturating_duration_since(*at) < RESOLVE_INTERVAL);
        }
        self.solicited.insert(hop, now);
        let frame = match hop {
            IpAddr::V4(tpa) => Arp {
                op: ARP_REQUEST,
                sha: self.config.mac,
                spa: self.ipv4.map_or(Ipv4Addr::UNSPECIFIED, |c| c.addr),
                tha: MacAddr([0; 6]),
                tpa,
            }
            .frame(MacAddr::BROADCAST),
            IpAddr::V6(target) => {
                let src = self
                    .ipv6
                    .iter()
                    .find(|a| a.is_unicast_link_local())
                    .or(self.ipv6.first())
                    .copied()
                    .unwrap_or(Ipv6Addr::UNSPECIFIED);
                neighbor_solicitation(self.config.mac, src, target)
            }
        };
        to_room.push(Bytes::from(frame));
        self.counters.solicitations_sent += 1;
    }

    /// A frame from the room: IP packets for the OS go to `to_os`, answers
    /// (ARP replies, neighbour advertisements, DHCP) to `to_room`.
    pub fn inbound(
        &mut self,
        now: Instant,
        frame: &Bytes,
        to_os: &mut Vec<Bytes>,
        to_room: &mut Vec<Bytes>,
    ) -> Option<Event> {
        let (Some(dst), Some(src)) = (
            frame.get(0..6).and_then(|b| b.try_into().ok()).map(MacAddr),
            frame
                .get(6..12)
                .and_then(|b| b.try_into().ok())
                .map(MacAddr),
        ) else {
            self.counters.malformed += 1;
            return None;
        };
        let Some(ethertype) = frame.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
            self.counters.malformed += 1;
            return None;
        };
        if (dst != self.config.mac && !dst.is_multicast()) || src == self.config.mac {
            self.counters.not_for_us += 1;
            return None;
        }
        let payload = frame.slice(ETH_HLEN..);
        match ethertype {
            ETH_ARP => {
                let Some(arp) = Arp::parse(&payload) else {
                    self.counters.malformed += 1;
                    return None;
                };
                self.learn(IpAddr::V4(arp.spa), arp.sha, now, to_room);
                if arp.op == ARP_REQUEST && self.ipv4.is_some_and(|c| c.addr == arp.tpa) {
                    let reply = Arp {
                        op: ARP_REPLY,
                        sha: self.config.mac,
                        spa: arp.tpa,
                        tha: arp.sha,
                        tpa: arp.spa,
                    };
                    to_room.push(Bytes::from(reply.frame(arp.sha)));
                    self.counters.arp_answered += 1;
                }
                None
            }
            ETH_IPV4 => {
                let Some(len) = ip_len(&payload) else {
                    self.counters.malformed += 1;
                    return None;
                };
                let packet = payload.slice(..len);
                if let Some(event) = self.dhcp_reply(now, &packet, to_room) {
                    return event;
                }
                if let Some(src_ip) = ipv4_at(&packet, 12) {
                    // Learn only neighbours on our LAN (a router's MAC must
                    // not become the MAC of every remote address).
                    if self.ipv4.is_none_or(|c| c.on_link(src_ip)) {
                        self.learn(IpAddr::V4(src_ip), src, now, to_room);
                    }
                }
                to_os.push(packet);
                self.counters.inbound += 1;
                None
            }
            ETH_IPV6 => {
                let Some(len) = ip_len(&payload) else {
                    self.counters.malformed += 1;
                    return None;
                };
                let packet = payload.slice(..len);
                if let Some(nd) = Neighbor::parse(&packet) {
                    self.neighbor_discovery(now, nd, src, to_room);
                    return None;
                }
                if let Some(src_ip) = ipv6_at(&packet, 8)
                    && src_ip.is_unicast_link_local()
                {
                    self.learn(IpAddr::V6(src_ip), src, now, to_room);
                }
                to_os.push(packet);
                self.counters.inbound += 1;
                None
            }
            _ => {
                // VLAN-tagged or non-IP: an IP-only adapter cannot take it.
                self.counters.not_for_us += 1;
                None
            }
        }
    }

    fn neighbor_discovery(
        &mut self,
        now: Instant,
        nd: Neighbor,
        src_mac: MacAddr,
        to_room: &mut Vec<Bytes>,
    ) {
        match nd.kind {
            ND_SOLICIT => {
                if !nd.src.is_unspecified() {
                    self.learn(
                        IpAddr::V6(nd.src),
                        nd.lladdr.unwrap_or(src_mac),
                        now,
                        to_room,
                    );
                }
                if self.ipv6.contains(&nd.target) {
                    let (to, to_mac) = if nd.src.is_unspecified() {
                        // Duplicate address detection: answer all nodes.
                        (
                            "ff02::1".parse().unwrap_or(Ipv6Addr::UNSPECIFIED),
                            MacAddr([0x33, 0x33, 0, 0, 0, 1]),
                        )
                    } else {
                        (nd.src, nd.lladdr.unwrap_or(src_mac))
                    };
                    to_room.push(Bytes::from(neighbor_advertisement(
                        self.config.mac,
                        nd.target,
                        to,
                        to_mac,
                    )));
                    self.counters.ns_answered += 1;
                }
            }
            ND_ADVERT => {
                self.learn(
                    IpAddr::V6(nd.target),
                    nd.lladdr.unwrap_or(src_mac),
                    now,
                    to_room,
                );
            }
            _ => {}
        }
    }

    /// Hands a DHCP reply (UDP to port 68) to the client; `Some` when the
    /// packet was consumed.
    fn dhcp_reply(
        &mut self,
        now: Instant,
        ip: &[u8],
        to_room: &mut Vec<Bytes>,
    ) -> Option<Option<Event>> {
        let dhcp = self.dhcp.as_mut()?;
        let ihl = usize::from(ip.first()? & 0x0f) * 4;
        if *ip.get(9)? != 17 || ihl < 20 {
            return None;
        }
        let udp = ip.get(ihl..)?;
        if u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]) != 68
            || u16::from_be_bytes([udp[0], udp[1]]) != 67
        {
            return None;
        }
        let (reply, event) = dhcp.receive(now, udp.get(8..)?);
        if let Some(frame) = reply {
            to_room.push(Bytes::from(frame));
        }
        Some(event.and_then(|e| self.lease_event(e)))
    }

    fn lease_event(&mut self, event: LeaseEvent) -> Option<Event> {
        match event {
            LeaseEvent::Bound(lease) => {
                let config = Ipv4Config {
                    addr: lease.addr,
                    prefix: lease.prefix,
                    router: lease.router,
                };
                self.ipv4 = Some(config);
                self.counters.leases += 1;
                Some(Event::Configure(config))
            }
            LeaseEvent::Lost => self.ipv4.take().map(Event::Deconfigure),
        }
    }

    /// Timers: DHCP, resolution retries and timeouts, neighbour expiry.
    /// Call at least every [`Emulation::POLL_INTERVAL`].
    pub fn poll(&mut self, now: Instant, to_room: &mut Vec<Bytes>) -> Option<Event> {
        let before = self.pending.len();
        self.pending.retain(|p| p.deadline > now);
        self.counters.unresolved += (before - self.pending.len()) as u64;
        let waiting: Vec<IpAddr> = self.pending.iter().map(|p| p.next_hop).collect();
        for hop in waiting {
            self.solicit(now, hop, to_room);
        }
        let ttl = self.config.neighbor_ttl;
        self.neighbors
            .retain(|_, n| now.saturating_duration_since(n.seen) < ttl);
        let (frame, event) = match self.dhcp.as_mut() {
            Some(dhcp) => dhcp.poll(now),
            None => (None, None),
        };
        if let Some(frame) = frame {
            to_room.push(Bytes::from(frame));
        }
        event.and_then(|e| self.lease_event(e))
    }

    /// How often [`Emulation::poll`] must run.
    pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
}

#[cfg(test)]
mod tests;

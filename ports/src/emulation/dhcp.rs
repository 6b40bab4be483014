//! The DHCPv4 client inside the Ethernet emulation: leases an address from
//! the LAN behind the gateway the way a real NIC would (DISCOVER, OFFER,
//! REQUEST, ACK), renews it at T1, rebinds at T2, and starts over on a NAK
//! or when the lease runs out. Sans-IO: time is handed in, frames are
//! returned.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use lanparty_core::wire::MacAddr;

use super::packets::{ETH_IPV4, ethernet, ipv4_at};
use crate::inet::{fold, set_ipv4_header_checksum, sum};

/// A lease as the OS side needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Our address.
    pub addr: Ipv4Addr,
    /// Prefix length of the LAN.
    pub prefix: u8,
    /// The LAN's router, if the server named one.
    pub router: Option<Ipv4Addr>,
    /// DNS servers.
    pub dns: Vec<Ipv4Addr>,
    /// The DHCP server.
    pub server: Ipv4Addr,
    /// Lease duration.
    pub lease_time: Duration,
}

/// What a DHCP event means for the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    /// A new or changed lease: configure the adapter.
    Bound(Lease),
    /// The lease is gone: remove the address.
    Lost,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Selecting,
    Requesting { offered: Ipv4Addr, server: Ipv4Addr },
    Bound { lease: Lease, since: Instant },
    Renewing { lease: Lease, since: Instant },
    Rebinding { lease: Lease, since: Instant },
}

/// The client.
#[derive(Debug)]
pub struct DhcpClient {
    mac: MacAddr,
    hostname: Option<String>,
    xid: u32,
    state: State,
    next_send: Instant,
    backoff: Duration,
}

const OP_REQUEST: u8 = 1;
const OP_REPLY: u8 = 2;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;
const FIRST_RETRY: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_secs(16);

/// The parts of a server's reply the client uses.
#[derive(Debug, Default)]
struct Reply {
    kind: u8,
    yiaddr: Option<Ipv4Addr>,
    server: Option<Ipv4Addr>,
    mask: Option<Ipv4Addr>,
    router: Option<Ipv4Addr>,
    dns: Vec<Ipv4Addr>,
    lease: Option<u32>,
}

fn parse_reply(p: &[u8], xid: u32, mac: MacAddr) -> Option<Reply> {
    if *p.first()? != OP_REPLY || p.get(4..8)? != xid.to_be_bytes() || p.get(28..34)? != mac.0 {
        return None;
    }
    if p.get(236..240)? != MAGIC {
        return None;
    }
    let mut r = Reply {
        yiaddr: Some(ipv4_at(p, 16)?).filter(|a| !a.is_unspecified()),
        ..Reply::default()
    };
    let mut opts = p.get(240..)?;
    while let [code, rest @ ..] = opts {
        match code {
            0 => {
                opts = rest;
                continue;
            }
            255 => break,
            _ => {}
        }
        let (&len, rest) = rest.split_first()?;
        let value = rest.get(..usize::from(len))?;
        let addr = |v: &[u8]| ipv4_at(v, 0);
        match code {
            53 => r.kind = *value.first()?,
            54 => r.server = addr(value),
            1 => r.mask = addr(value),
            3 => r.router = addr(value),
            6 => r.dns = value.chunks_exact(4).filter_map(addr).take(4).collect(),
            51 => {
                r.lease = value
                    .get(..4)
                    .and_then(|v| v.try_into().ok())
                    .map(u32::from_be_bytes)
            }
            _ => {}
        }
        opts = &rest[usize::from(len)..];
    }
    (r.kind != 0).then_some(r)
}

fn prefix_of(mask: Ipv4Addr) -> u8 {
    u32::from(mask).leading_ones() as u8
}

impl DhcpClient {
    /// A client for `mac`; `seed` makes the transaction id (any per-run
    /// random value). The first DISCOVER goes out on the first poll.
    pub fn new(mac: MacAddr, hostname: Option<String>, seed: u32, now: Instant) -> DhcpClient {
        DhcpClient {
            mac,
            hostname,
            xid: seed ^ u32::from_be_bytes([mac.0[2], mac.0[3], mac.0[4], mac.0[5]]),
            state: State::Selecting,
            next_send: now,
            backoff: FIRST_RETRY,
        }
    }

    /// The current lease, if bound (or renewing).
    pub fn lease(&self) -> Option<&Lease> {
        match &self.state {
            State::Bound { lease, .. }
            | State::Renewing { lease, .. }
            | State::Rebinding { lease, .. } => Some(lease),
            _ => None,
        }
    }

    /// A short name of the state, for status and logs.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Selecting => "selecting",
            State::Requesting { .. } => "requesting",
            State::Bound { .. } => "bound",
            State::Renewing { .. } => "renewing",
            State::Rebinding { .. } => "rebinding",
        }
    }

    /// When [`DhcpClient::poll`] next has something to do.
    pub fn next_deadline(&self) -> Instant {
        self.next_send
    }

    fn schedule_retry(&mut self, now: Instant) {
        self.next_send = now + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_RETRY);
    }

    /// Timers: (re)transmissions, renewal, rebinding, expiry. Returns a
    /// frame to send and an event for the adapter.
    pub fn poll(&mut self, now: Instant) -> (Option<Vec<u8>>, Option<LeaseEvent>) {
        if now < self.next_send {
            return (None, None);
        }
        match self.state.clone() {
            State::Selecting => {
                self.schedule_retry(now);
                (Some(self.message(DISCOVER, None, None, None)), None)
            }
            State::Requesting { offered, server } => {
                if self.backoff >= MAX_RETRY {
                    // The server went quiet: start over.
                    self.state = State::Selecting;
                    self.backoff = FIRST_RETRY;
                    self.next_send = now;
                    return (None, None);
                }
                self.schedule_retry(now);
                (
                    Some(self.message(REQUEST, Some(offered), Some(server), None)),
                    None,
                )
            }
            State::Bound { lease, since }
            | State::Renewing { lease, since }
            | State::Rebinding { lease, since } => {
                let age = now.saturating_duration_since(since);
                if age >= lease.lease_time {
                    self.state = State::Selecting;
                    self.backoff = FIRST_RETRY;
                    self.next_send = now;
                    return (None, Some(LeaseEvent::Lost));
                }
                let t2 = lease.lease_time * 7 / 8;
                let renew = self.message(REQUEST, None, None, Some(lease.addr));
                self.state = if age >= t2 {
                    State::Rebinding {
                        lease: lease.clone(),
                        since,
                    }
                } else {
                    State::Renewing {
                        lease: lease.clone(),
                        since,
                    }
                };
                // Retry at half the time left, at least every minute.
                let left = lease.lease_time.saturating_sub(age);
                self.next_send =
                    now + (left / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
                (Some(renew), None)
            }
        }
    }

    /// A DHCP payload (the UDP payload of a frame to port 68). Returns a
    /// frame to send and an event for the adapter.
    pub fn receive(
        &mut self,
        now: Instant,
        payload: &[u8],
    ) -> (Option<Vec<u8>>, Option<LeaseEvent>) {
        let Some(reply) = parse_reply(payload, self.xid, self.mac) else {
            return (None, None);
        };
        match (&self.state, reply.kind) {
            (State::Selecting, OFFER) => {
                let (Some(offered), Some(server)) = (reply.yiaddr, reply.server) else {
                    return (None, None);
                };
                self.state = State::Requesting { offered, server };
                self.backoff = FIRST_RETRY;
                self.schedule_retry(now);
                (
                    Some(self.message(REQUEST, Some(offered), Some(server), None)),
                    None,
                )
            }
            (State::Requesting { .. } | State::Renewing { .. } | State::Rebinding { .. }, ACK) => {
                let Some(addr) = reply.yiaddr else {
                    return (None, None);
                };
                let lease = Lease {
                    addr,
                    prefix: reply.mask.map_or(24, prefix_of),
                    router: reply.router,
                    dns: reply.dns,
                    server: reply.server.unwrap_or(Ipv4Addr::UNSPECIFIED),
                    lease_time: Duration::from_secs(u64::from(reply.lease.unwrap_or(3600).max(10))),
                };
                let changed = self.lease() != Some(&lease);
                self.next_send = now + lease.lease_time / 2;
                self.backoff = FIRST_RETRY;
                self.state = State::Bound {
                    lease: lease.clone(),
                    since: now,
                };
                (None, changed.then_some(LeaseEvent::Bound(lease)))
            }
            (State::Requesting { .. } | State::Renewing { .. } | State::Rebinding { .. }, NAK) => {
                let had = self.lease().is_some();
                self.state = State::Selecting;
                self.backoff = FIRST_RETRY;
                self.next_send = now;
                (None, had.then_some(LeaseEvent::Lost))
            }
            _ => (None, None),
        }
    }

    /// A whole frame: Ethernet broadcast, IPv4 (from `ciaddr` or 0.0.0.0)
    /// to 255.255.255.255, UDP 68 → 67, the BOOTP message.
    fn message(
        &self,
        kind: u8,
        requested: Option<Ipv4Addr>,
        server: Option<Ipv4Addr>,
        ciaddr: Option<Ipv4Addr>,
    ) -> Vec<u8> {
        let mut m = vec![0u8; 240];
        m[0] = OP_REQUEST;
        m[1] = 1;
        m[2] = 6;
        m[4..8].copy_from_slice(&self.xid.to_be_bytes());
        if ciaddr.is_none() {
            // Broadcast flag: we have no address to take a unicast reply on.
            m[10] = 0x80;
        }
        if let Some(c) = ciaddr {
            m[12..16].copy_from_slice(&c.octets());
        }
        m[28..34].copy_from_slice(&self.mac.0);
        m[236..240].copy_from_slice(&MAGIC);
        m.extend_from_slice(&[53, 1, kind]);
        m.extend_from_slice(&[61, 7, 1]);
        m.extend_from_slice(&self.mac.0);
        if let Some(r) = requested {
            m.extend_from_slice(&[50, 4]);
            m.extend_from_slice(&r.octets());
        }
        if let Some(s) = server {
            m.extend_from_slice(&[54, 4]);
            m.extend_from_slice(&s.octets());
        }
        if let Some(name) = &self.hostname {
            let name = &name.as_bytes()[..name.len().min(63)];
            m.extend_from_slice(&[12, name.len() as u8]);
            m.extend_from_slice(name);
        }
        m.extend_from_slice(&[55, 4, 1, 3, 6, 51]);
        m.push(255);
        udp_ipv4_frame(
            self.mac,
            ciaddr.unwrap_or(Ipv4Addr::UNSPECIFIED),
            Ipv4Addr::BROADCAST,
            68,
            67,
            &m,
        )
    }
}

/// An Ethernet-broadcast IPv4/UDP frame with correct checksums.
fn udp_ipv4_frame(
    mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = (8 + payload.len()) as u16;
    let total = 20 + udp_len;
    let mut ip = Vec::with_capacity(usize::from(total));
    ip.extend_from_slice(&[0x45, 0]);
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    set_ipv4_header_checksum(&mut ip[..20]);
    ip.extend_from_slice(&sport.to_be_bytes());
    ip.extend_from_slice(&dport.to_be_bytes());
    ip.extend_from_slice(&udp_len.to_be_bytes());
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(payload);
    let mut acc = sum(&src.octets(), 0);
    acc = sum(&dst.octets(), acc);
    acc += 17 + u32::from(udp_len);
    let mut udp_sum = fold(sum(&ip[20..], acc));
    if udp_sum == 0 {
        udp_sum = 0xffff;
    }
    ip[26..28].copy_from_slice(&udp_sum.to_be_bytes());
    ethernet(MacAddr::BROADCAST, mac, ETH_IPV4, &ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x33]);

    /// A scripted server: answers a client frame the way dnsmasq would.
    fn server_reply(frame: &[u8], kind: u8, yiaddr: Ipv4Addr, lease: u32) -> Vec<u8> {
        let sliced = etherparse::SlicedPacket::from_ethernet(frame).unwrap();
        let Some(etherparse::TransportSlice::Udp(udp)) = sliced.transport else {
            panic!("not UDP")
        };
        assert_eq!((udp.source_port(), udp.destination_port()), (68, 67));
        let req = udp.payload();
        let mut m = vec![0u8; 240];
        m[0] = OP_REPLY;
        m[1] = 1;
        m[2] = 6;
        m[4..8].copy_from_slice(&req[4..8]);
        m[16..20].copy_from_slice(&yiaddr.octets());
        m[28..34].copy_from_slice(&req[28..34]);
        m[236..240].copy_from_slice(&MAGIC);
        m.extend_from_slice(&[
            53, 1, kind, 54, 4, 192, 168, 77, 1, 1, 4, 255, 255, 255, 0, 3, 4, 192, 168, 77, 1,
        ]);
        m.extend_from_slice(&[51, 4]);
        m.extend_from_slice(&lease.to_be_bytes());
        m.extend_from_slice(&[0, 255]);
        m
    }

    fn message_type(frame: &[u8]) -> u8 {
        let sliced = etherparse::SlicedPacket::from_ethernet(frame).unwrap();
        let Some(etherparse::TransportSlice::Udp(udp)) = sliced.transport else {
            panic!("not UDP")
        };
        let p = udp.payload();
        let i = p.windows(2).position(|w| w == [53, 1]).unwrap();
        p[i + 2]
    }

    #[test]
    fn a_full_exchange_then_renewal_nak_and_expiry() {
        let t0 = Instant::now();
        let addr = Ipv4Addr::new(192, 168, 77, 50);
        let mut c = DhcpClient::new(MAC, Some("player1".into()), 7, t0);
        let (discover, _) = c.poll(t0);
        let discover = discover.unwrap();
        assert_eq!(message_type(&discover), DISCOVER);
        // The frame is valid: etherparse checks lengths; we check checksums.
        assert_eq!(fold(sum(&discover[14..34], 0)), 0, "IPv4 header checksum");
        // No answer: retransmitted after the backoff.
        assert!(c.poll(t0 + Duration::from_secs(1)).0.is_none());
        assert!(c.poll(t0 + Duration::from_secs(2)).0.is_some());
        let (request, ev) = c.receive(t0, &server_reply(&discover, OFFER, addr, 600));
        assert_eq!(ev, None);
        let request = request.unwrap();
        assert_eq!(message_type(&request), REQUEST);
        assert!(
            request.windows(6).any(|w| w == [50, 4, 192, 168, 77, 50]),
            "requests the offered address"
        );
        let (_, ev) = c.receive(t0, &server_reply(&request, ACK, addr, 600));
        let Some(LeaseEvent::Bound(lease)) = ev else {
            panic!("{ev:?}")
        };
        assert_eq!(
            (lease.addr, lease.prefix, lease.router),
            (addr, 24, Some(Ipv4Addr::new(192, 168, 77, 1)))
        );
        assert_eq!(c.state_name(), "bound");
        // T1: a renewal from our address.
        let (renew, _) = c.poll(t0 + Duration::from_secs(300));
        let renew = renew.unwrap();
        assert_eq!(
            &renew[26..30],
            &addr.octets(),
            "renewals come from the leased address"
        );
        assert_eq!(c.state_name(), "renewing");
        let (_, ev) = c.receive(
            t0 + Duration::from_secs(301),
            &server_reply(&renew, ACK, addr, 600),
        );
        assert_eq!(ev, None, "the same lease again changes nothing");
        // A NAK on the next renewal: the lease is lost, selecting again.
        let (renew, _) = c.poll(t0 + Duration::from_secs(700));
        let (_, ev) = c.receive(
            t0 + Duration::from_secs(700),
            &server_reply(&renew.unwrap(), NAK, Ipv4Addr::UNSPECIFIED, 0),
        );
        assert_eq!(ev, Some(LeaseEvent::Lost));
        assert_eq!(c.state_name(), "selecting");
    }

    #[test]
    fn an_unanswered_lease_expires() {
        let t0 = Instant::now();
        let addr = Ipv4Addr::new(10, 0, 0, 9);
        let mut c = DhcpClient::new(MAC, None, 1, t0);
        let d = c.poll(t0).0.unwrap();
        let r = c.receive(t0, &server_reply(&d, OFFER, addr, 60)).0.unwrap();
        assert!(matches!(
            c.receive(t0, &server_reply(&r, ACK, addr, 60)).1,
            Some(LeaseEvent::Bound(_))
        ));
        let mut lost = false;
        let mut t = t0;
        for _ in 0..200 {
            t += Duration::from_secs(1);
            if c.poll(t).1 == Some(LeaseEvent::Lost) {
                lost = true;
                break;
            }
        }
        assert!(
            lost && t >= t0 + Duration::from_secs(60),
            "lost at {:?}",
            t - t0
        );
    }

    #[test]
    fn replies_for_someone_else_or_garbage_are_ignored() {
        let t0 = Instant::now();
        let mut c = DhcpClient::new(MAC, None, 1, t0);
        let d = c.poll(t0).0.unwrap();
        let mut other = server_reply(&d, OFFER, Ipv4Addr::new(10, 0, 0, 9), 60);
        other[4] ^= 1;
        assert_eq!(c.receive(t0, &other), (None, None));
        for len in 0..300 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            assert_eq!(c.receive(t0, &junk), (None, None));
        }
        let mut truncated = server_reply(&d, OFFER, Ipv4Addr::new(10, 0, 0, 9), 60);
        truncated.truncate(243);
        assert_eq!(c.receive(t0, &truncated), (None, None));
        assert_eq!(c.state_name(), "selecting");
    }
}

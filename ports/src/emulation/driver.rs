//! Runs the Ethernet emulation between an IP-only adapter and a room link:
//! the loop shared by the Linux `tun-l2` port and the Windows `wintun`
//! port, which differ only in how packets reach and leave the OS
//! ([`IpAdapter`]).

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use lanparty_core::runtime::{LinkHandle, Metrics, ShutdownSignal, StatusSource};

use super::{Addressing, Emulation, EmulationCounters, Event, Ipv4Config};
use crate::inet::parse_cidr;

/// An IP-only adapter as the driver sees it.
pub trait IpAdapter {
    /// The adapter's name, for logs.
    fn name(&self) -> &str;
    /// Waits until packets from the OS are ready and appends them to `out`.
    /// Must be cancel-safe (it runs in a `select!`).
    fn recv(&mut self, out: &mut Vec<Bytes>) -> impl Future<Output = Result<(), String>>;
    /// Hands one IP packet to the OS (or holds it for [`IpAdapter::flush`]:
    /// GRO merges a batch's TCP segments).
    fn send(&mut self, packet: &[u8]) -> impl Future<Output = Result<(), String>>;
    /// Hands the OS what `send` held, at the end of each batch.
    fn flush(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// Configures or clears the adapter's IPv4 address.
    fn apply(&mut self, event: &Event);
    /// Follows the room MTU.
    fn set_mtu(&mut self, mtu: u16);
}

/// Reads `address` (`dhcp` or an IPv4 CIDR), `router` and `hostname`
/// settings; on error, the key at fault and what is wrong.
pub fn parse_addressing(
    address: &str,
    router: Option<std::net::Ipv4Addr>,
    hostname: Option<String>,
) -> Result<Addressing, (&'static str, String)> {
    if address == "dhcp" {
        if router.is_some() {
            return Err((
                "router",
                "only with a static `address` (DHCP gives the router)".into(),
            ));
        }
        return Ok(Addressing::Dhcp { hostname });
    }
    match parse_cidr(address) {
        Ok((std::net::IpAddr::V4(addr), prefix)) => Ok(Addressing::Static(Ipv4Config {
            addr,
            prefix,
            router,
        })),
        Ok(_) => Err((
            "address",
            "an IPv4 address, e.g. 192.168.77.50/24, or `dhcp`".into(),
        )),
        Err(e) => Err(("address", format!("{e}; or `dhcp`"))),
    }
}

/// An emulated adapter's run error when it was built without a MAC
/// (outside a node, which gives it its session's).
pub const NO_MAC: &str =
    "no MAC: set `mac`, or run the adapter in a node with a quic-client whose MAC it takes";

/// Declares an emulated adapter port's settings struct (put
/// `#[stage_kind]` on it): the fields as written, then the keys every
/// emulated adapter has — `mac`, `address`, `router`, `hostname`, `mtu`,
/// `room`, declared here once — and `adapter_keys()` for
/// [`check_adapter_keys`].
macro_rules! adapter_settings {
    ($(#[$meta:meta])* pub struct $name:ident { $($fields:tt)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($fields)*
            /// The MAC the room sees; leave it out on a client: the adapter
            /// takes the MAC the node joins the relay with.
            #[key(shown = "the quic-client's `mac`")]
            pub mac: Option<lanparty_core::wire::MacAddr>,
            /// Lease from the LAN's DHCP server (`dhcp`), or a static IPv4
            /// address such as `192.168.77.50/24`.
            #[key(default = "dhcp", ty = "dhcp | CIDR")]
            pub address: String,
            /// With a static address: the LAN's router, the next hop for
            /// destinations off the LAN.
            pub router: Option<std::net::Ipv4Addr>,
            /// Sent in DHCP requests (option 12).
            pub hostname: Option<String>,
            /// A fixed MTU instead of following the room.
            #[key(shown = "the room MTU")]
            pub mtu: Option<u16>,
            /// The room the adapter joins.
            #[key(default = lanparty_core::runtime::DEFAULT_ROOM.into(), shown = lanparty_core::runtime::DEFAULT_ROOM)]
            pub room: String,
        }

        impl $name {
            /// The keys [`check_adapter_keys`] checks.
            fn adapter_keys(&self) -> $crate::emulation::driver::AdapterKeys<'_> {
                $crate::emulation::driver::AdapterKeys {
                    mac: self.mac,
                    mtu: self.mtu,
                    room: &self.room,
                    address: &self.address,
                    router: self.router,
                    hostname: self.hostname.clone(),
                }
            }
        }
    };
}
pub(crate) use adapter_settings;

/// The settings every emulated adapter port has.
pub struct AdapterKeys<'a> {
    /// `mac` (`None`: taken from the node's session later).
    pub mac: Option<lanparty_core::wire::MacAddr>,
    /// `mtu`.
    pub mtu: Option<u16>,
    /// `room`.
    pub room: &'a str,
    /// `address`.
    pub address: &'a str,
    /// `router`.
    pub router: Option<std::net::Ipv4Addr>,
    /// `hostname`.
    pub hostname: Option<String>,
}

/// Checks the keys every emulated adapter port has (pushing errors that
/// name the key) and returns the addressing.
pub fn check_adapter_keys(
    config: &lanparty_core::config::StageConfig,
    keys: AdapterKeys<'_>,
    errors: &mut Vec<lanparty_core::config::ConfigError>,
) -> Addressing {
    if let Some(Err(e)) = keys.mac.map(|mac| mac.validate_adapter_mac()) {
        errors.push(config.error("mac", e.to_string()));
    }
    if let Some(mtu) = keys.mtu
        && let Err(e) = lanparty_core::wire::mtu::validate_mtu(u32::from(mtu))
    {
        errors.push(config.error("mtu", e.to_string()));
    }
    if let Err(e) = lanparty_core::control::validate_room_code(keys.room) {
        errors.push(config.error("room", e));
    }
    match parse_addressing(keys.address, keys.router, keys.hostname) {
        Ok(a) => a,
        Err((key, e)) => {
            errors.push(config.error(key, e));
            Addressing::Dhcp { hostname: None }
        }
    }
}

/// A per-run value for the DHCP transaction id.
pub fn emulation_seed() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id()
}

/// What `lanparty status` shows of an emulated adapter, refreshed every
/// poll.
pub struct AdapterStatus {
    kind: &'static str,
    device: String,
    snapshot: Mutex<(serde_json::Value, EmulationCounters)>,
}

impl AdapterStatus {
    /// A status for port kind `kind` (`tun-l2`, `wintun`) on `device`.
    pub fn new(kind: &'static str, device: &str, e: &Emulation) -> AdapterStatus {
        let status = AdapterStatus {
            kind,
            device: device.to_string(),
            snapshot: Mutex::new((serde_json::Value::Null, EmulationCounters::default())),
        };
        status.update(e);
        status
    }

    /// The adapter's device name.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Takes a fresh snapshot.
    pub fn update(&self, e: &Emulation) {
        let value = serde_json::json!({
            "type": self.kind,
            "device": self.device,
            "mac": e.mac(),
            "dhcp": e.dhcp_state(),
            "ipv4": e.ipv4(),
            "lease": e.lease().map(|l| serde_json::json!({
                "addr": l.addr, "prefix": l.prefix, "router": l.router, "dns": l.dns,
                "server": l.server, "lease_s": l.lease_time.as_secs(),
            })),
            "neighbors": e.neighbor_count(),
            "counters": e.counters(),
        });
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = (value, e.counters());
    }
}

impl StatusSource for AdapterStatus {
    fn status(&self) -> serde_json::Value {
        self.snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .clone()
    }

    fn metrics(&self, out: &mut Metrics) {
        let c = self
            .snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1;
        let l = [("device", self.device.as_str())];
        for (name, help, v) in [
            (
                "lanparty_emulation_outbound_total",
                "IP packets from the OS sent into the room",
                c.outbound,
            ),
            (
                "lanparty_emulation_inbound_total",
                "IP packets delivered to the OS",
                c.inbound,
            ),
            (
                "lanparty_emulation_arp_answered_total",
                "ARP requests answered for the adapter",
                c.arp_answered,
            ),
            (
                "lanparty_emulation_ns_answered_total",
                "Neighbour solicitations answered for the adapter",
                c.ns_answered,
            ),
            (
                "lanparty_emulation_unresolved_total",
                "Packets dropped: next hop never answered",
                c.unresolved,
            ),
            (
                "lanparty_emulation_pending_full_total",
                "Packets dropped: resolution queue full",
                c.pending_full,
            ),
        ] {
            out.counter(name, help, &l, v);
        }
    }
}

/// Frames taken from the room per wake-up.
const BATCH: usize = 64;

/// Moves packets and frames until shutdown (`Ok`) or a failure of the
/// adapter or the room (`Err`, said in words). `follow_mtu` is false when
/// the MTU is fixed by config.
pub async fn drive<A: IpAdapter>(
    adapter: &mut A,
    emulation: &mut Emulation,
    link: &mut LinkHandle,
    follow_mtu: bool,
    mut shutdown: ShutdownSignal,
    status: &AdapterStatus,
) -> Result<(), String> {
    let mut room_mtu = link.mtu();
    if let Some(c) = emulation.ipv4() {
        adapter.apply(&Event::Configure(c));
    }
    let (mut from_os, mut from_room) = (Vec::with_capacity(BATCH), Vec::with_capacity(BATCH));
    let (mut to_room, mut to_os): (Vec<Bytes>, Vec<Bytes>) = (Vec::new(), Vec::new());
    let mut ticker = tokio::time::interval(Emulation::POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tx_errors: u64 = 0;
    loop {
        let mut event = None;
        tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            received = adapter.recv(&mut from_os) => {
                received?;
                let now = Instant::now();
                for packet in from_os.drain(..) {
                    emulation.outbound(now, packet, &mut to_room);
                }
            }
            n = link.recv_many(&mut from_room, BATCH) => {
                if n == 0 {
                    return Err("the room closed".into());
                }
                let now = Instant::now();
                for frame in from_room.drain(..) {
                    if let Some(e) = emulation.inbound(now, &frame, &mut to_os, &mut to_room) {
                        event = Some(e);
                    }
                }
            }
            _ = ticker.tick() => {
                event = emulation.poll(Instant::now(), &mut to_room);
                status.update(emulation);
            }
            changed = room_mtu.changed(), if follow_mtu => {
                if changed.is_ok() {
                    adapter.set_mtu(*room_mtu.borrow_and_update());
                }
            }
        }
        if let Some(event) = &event {
            adapter.apply(event);
        }
        link.send_all(&mut to_room);
        if !to_os.is_empty() {
            for packet in to_os.drain(..) {
                if let Err(e) = adapter.send(&packet).await {
                    tx_failed(adapter.name(), &mut tx_errors, &e);
                }
            }
            if let Err(e) = adapter.flush() {
                tx_failed(adapter.name(), &mut tx_errors, &e);
            }
        }
    }
}

/// Counts a packet the OS did not take, logged at each power of two.
fn tx_failed(device: &str, errors: &mut u64, e: &str) {
    *errors += 1;
    if errors.is_power_of_two() {
        tracing::warn!(%device, errors = *errors, "cannot hand a packet to the OS: {e}");
    }
}

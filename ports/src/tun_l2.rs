//! `tun-l2`: a Linux TUN device (IP packets only) made to behave like an
//! Ethernet NIC on the room by the Ethernet emulation — the same layer the
//! Windows client runs over Wintun, so that the whole emulation (ARP and
//! neighbour answers, broadcast mapping, the DHCP client) runs in the
//! Linux end-to-end suite.
//!
//! The device's MTU follows the room; its IPv4 address is static or leased
//! by the emulation's DHCP client from the LAN behind the gateway (renewed,
//! and removed if the lease is lost). The lease's router is logged and
//! shown in status but not installed as a default route: a LAN party needs
//! the LAN, not the player's internet traffic in the tunnel.

use std::io;
use std::net::Ipv4Addr;
use std::time::Instant;

use bytes::Bytes;
use lanparty_core::config::{ConfigError, StageConfig};
use lanparty_core::registry::{BuildResult, KeyDoc, StageBuild, StageRegistration};
use lanparty_core::runtime::{
    DEFAULT_ROOM, LinkHandle, LinkSpec, Metrics, PortContext, ShutdownSignal, StatusSource,
};
use lanparty_core::stage::{LinkRole, Port, PortError};
use lanparty_core::wire::MacAddr;
use lanparty_core::wire::mtu::{MAX_MTU, validate_mtu};
use serde::Deserialize;

use crate::emulation::{
    Addressing, Emulation, EmulationConfig, EmulationCounters, Event, Ipv4Config,
};
use crate::linux::netdev;
use crate::linux::rxbuf::{CHUNK, RxBuffer};
use crate::linux::tun::{Device, TunMode, open_tun};

/// `tun-l2` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunL2Settings {
    /// `device`: the TUN device name, e.g. `lp0` (created if absent).
    pub device: String,
    /// `mac`: the MAC the room sees for this adapter (the one the QUIC
    /// client joins with).
    pub mac: MacAddr,
    /// `address`: `dhcp` (default) or a static `192.168.77.50/24`.
    #[serde(default = "default_address")]
    pub address: String,
    /// `router`: with a static address, the LAN's router (next hop for
    /// destinations off the LAN). Default none.
    #[serde(default)]
    pub router: Option<Ipv4Addr>,
    /// `hostname`: sent in DHCP requests (option 12). Default none.
    #[serde(default)]
    pub hostname: Option<String>,
    /// `mtu`: a fixed MTU; default: follow the room MTU.
    #[serde(default)]
    pub mtu: Option<u16>,
    /// `room`: the room the adapter joins. Default `default`.
    #[serde(default = "default_room")]
    pub room: String,
}

fn default_address() -> String {
    "dhcp".into()
}

fn default_room() -> String {
    DEFAULT_ROOM.to_string()
}

/// A configured `tun-l2` port.
#[derive(Debug)]
pub struct TunL2Port {
    settings: TunL2Settings,
    addressing: Addressing,
}

/// What `lanparty status` shows of the adapter, refreshed every poll.
struct TunStatus {
    device: String,
    snapshot: std::sync::Mutex<(serde_json::Value, EmulationCounters)>,
}

impl TunStatus {
    fn update(&self, e: &Emulation) {
        let value = serde_json::json!({
            "type": "tun-l2",
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
        *self
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (value, e.counters());
    }
}

impl StatusSource for TunStatus {
    fn status(&self) -> serde_json::Value {
        self.snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .clone()
    }

    fn metrics(&self, out: &mut Metrics) {
        let c = self
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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

/// Packets read per wake-up.
const RX_BATCH: usize = 64;
const MAX_PACKET: usize = MAX_MTU as usize;

fn build(config: &StageConfig) -> BuildResult<Box<dyn Port>> {
    let settings: TunL2Settings = config.parse()?;
    let mut errors: Vec<ConfigError> = Vec::new();
    if let Err(e) = netdev::ifname(&settings.device) {
        errors.push(config.error("device", e.to_string()));
    }
    if let Err(e) = settings.mac.validate_adapter_mac() {
        errors.push(config.error("mac", e.to_string()));
    }
    if let Some(mtu) = settings.mtu
        && let Err(e) = validate_mtu(u32::from(mtu))
    {
        errors.push(config.error("mtu", e.to_string()));
    }
    if let Err(e) = lanparty_core::control::validate_room_code(&settings.room) {
        errors.push(config.error("room", e));
    }
    let addressing = if settings.address == "dhcp" {
        if settings.router.is_some() {
            errors.push(config.error(
                "router",
                "only with a static `address` (DHCP gives the router)",
            ));
        }
        Addressing::Dhcp {
            hostname: settings.hostname.clone(),
        }
    } else {
        match netdev::parse_cidr(&settings.address) {
            Ok((std::net::IpAddr::V4(addr), prefix)) => Addressing::Static(Ipv4Config {
                addr,
                prefix,
                router: settings.router,
            }),
            Ok(_) => {
                errors.push(config.error(
                    "address",
                    "an IPv4 address, e.g. 192.168.77.50/24, or `dhcp`",
                ));
                Addressing::Dhcp { hostname: None }
            }
            Err(e) => {
                errors.push(config.error("address", format!("{e}; or `dhcp`")));
                Addressing::Dhcp { hostname: None }
            }
        }
    };
    if errors.is_empty() {
        Ok(Box::new(TunL2Port {
            settings,
            addressing,
        }))
    } else {
        Err(errors)
    }
}

impl TunL2Port {
    fn fail(&self, what: impl std::fmt::Display) -> PortError {
        PortError::new(&self.settings.device, what.to_string())
    }

    fn apply(&self, event: &Event) {
        let name = &self.settings.device;
        match event {
            Event::Configure(c) => {
                match netdev::add_address(name, std::net::IpAddr::V4(c.addr), c.prefix) {
                    Ok(()) => {
                        let router = c
                            .router
                            .map(|r| r.to_string())
                            .unwrap_or_else(|| "none".into());
                        tracing::info!(device = %name, address = %c.addr, prefix = c.prefix, %router, "adapter address set (the router is not made the default route)");
                    }
                    Err(e) => {
                        tracing::error!(device = %name, address = %c.addr, "cannot set the adapter address: {e}")
                    }
                }
            }
            Event::Deconfigure(c) => {
                tracing::warn!(device = %name, address = %c.addr, "lease lost: address removed");
                if let Err(e) = netdev::clear_ipv4(name) {
                    tracing::warn!(device = %name, "cannot remove the address: {e}");
                }
            }
        }
    }

    async fn run(self, ctx: PortContext) -> Result<(), PortError> {
        let name = self.settings.device.clone();
        let fd = open_tun(&name, TunMode::Tun).map_err(|e| self.fail(e))?;
        let device = Device::new(fd, &name).map_err(|e| {
            self.fail(format!(
                "cannot register the device with the reactor: {e:?}"
            ))
        })?;
        let mut link = ctx.attach(
            &self.settings.room,
            LinkSpec {
                name: name.clone(),
                role: LinkRole::Host,
                macs: vec![self.settings.mac],
                mtu: self.settings.mtu,
                sink: None,
            },
        );
        let mut room_mtu = link.mtu();
        let mtu = self.settings.mtu.unwrap_or(*room_mtu.borrow_and_update());
        netdev::set_mtu(&name, mtu).map_err(|e| self.fail(format!("cannot set MTU {mtu}: {e}")))?;
        netdev::update_flags(&name, libc::IFF_UP as libc::c_short, 0)
            .map_err(|e| self.fail(format!("cannot bring the device up: {e}")))?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            ^ std::process::id();
        let mut emulation = Emulation::new(
            EmulationConfig::new(self.settings.mac, self.addressing.clone()),
            seed,
            Instant::now(),
        );
        if let Some(c) = emulation.ipv4() {
            self.apply(&Event::Configure(c));
        }
        tracing::info!(device = %name, mac = %self.settings.mac, mtu, room = %self.settings.room, addressing = emulation.dhcp_state(), "TUN adapter up with Ethernet emulation");
        let status = std::sync::Arc::new(TunStatus {
            device: name.clone(),
            snapshot: std::sync::Mutex::new((
                serde_json::Value::Null,
                EmulationCounters::default(),
            )),
        });
        status.update(&emulation);
        ctx.publish_status(status.clone());
        let result = self
            .pump(
                &device,
                &mut emulation,
                &mut link,
                &mut room_mtu,
                ctx.shutdown(),
                &status,
            )
            .await;
        let c = emulation.counters();
        tracing::info!(device = %name, outbound = c.outbound, inbound = c.inbound, arp_answered = c.arp_answered, ns_answered = c.ns_answered, unresolved = c.unresolved, pending_full = c.pending_full, "tun-l2 port stopped");
        result
    }

    async fn pump(
        &self,
        device: &Device,
        emulation: &mut Emulation,
        link: &mut LinkHandle,
        room_mtu: &mut tokio::sync::watch::Receiver<u16>,
        mut shutdown: ShutdownSignal,
        status: &TunStatus,
    ) -> Result<(), PortError> {
        let mut rx = RxBuffer::new(MAX_PACKET, CHUNK);
        let mut from_room = Vec::with_capacity(RX_BATCH);
        let (mut to_room, mut to_os): (Vec<Bytes>, Vec<Bytes>) = (Vec::new(), Vec::new());
        let mut ticker = tokio::time::interval(Emulation::POLL_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tx_errors: u64 = 0;
        loop {
            let mut event = None;
            tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                ready = device.fd.readable() => {
                    let mut guard = ready.map_err(|e| self.fail(format!("poll failed: {e}")))?;
                    let now = Instant::now();
                    for _ in 0..RX_BATCH {
                        match device.read(rx.space()) {
                            Ok(0) => break,
                            Ok(n) => emulation.outbound(now, rx.take(n), &mut to_room),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                guard.clear_ready();
                                break;
                            }
                            Err(e) => return Err(self.fail(format!("read failed: {e}"))),
                        }
                    }
                }
                n = link.recv_many(&mut from_room, RX_BATCH) => {
                    if n == 0 {
                        return Err(self.fail("the room closed"));
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
                changed = room_mtu.changed(), if self.settings.mtu.is_none() => {
                    if changed.is_ok() {
                        netdev::follow_room_mtu(&device.name, *room_mtu.borrow_and_update());
                    }
                }
            }
            if let Some(event) = &event {
                self.apply(event);
            }
            for frame in to_room.drain(..) {
                link.send(frame);
            }
            for packet in to_os.drain(..) {
                if let Err(e) = device.write_frame(&packet).await {
                    tx_errors += 1;
                    if tx_errors.is_power_of_two() {
                        tracing::warn!(device = %device.name, errors = tx_errors, "write to TUN failed: {e}");
                    }
                }
            }
        }
    }
}

lanparty_core::impl_port!(TunL2Port);

lanparty_core::inventory::submit! {
    StageRegistration {
        name: "tun-l2",
        summary: "Linux TUN device with Ethernet emulation (ARP/ND answers, broadcast mapping, DHCP client): the Windows client's layer, on Linux",
        keys: &[
            KeyDoc { name: "device", ty: "string", default: "required", doc: "TUN device name, e.g. lp0; created if absent" },
            KeyDoc { name: "mac", ty: "MAC", default: "required", doc: "the MAC the room sees (the quic-client's `mac`)" },
            KeyDoc { name: "address", ty: "dhcp | CIDR", default: "dhcp", doc: "lease from the LAN's DHCP server, or a static IPv4 address" },
            KeyDoc { name: "router", ty: "IPv4", default: "none", doc: "with a static address: next hop for destinations off the LAN" },
            KeyDoc { name: "hostname", ty: "string", default: "none", doc: "sent in DHCP requests" },
            KeyDoc { name: "mtu", ty: "integer", default: "the room MTU", doc: "a fixed MTU instead of following the room" },
            KeyDoc { name: "room", ty: "string", default: "default", doc: "the room the adapter joins" },
        ],
        example: "ports:\n  adapter: { type: tun-l2, device: lp0, mac: \"02:00:00:00:00:61\", address: dhcp }",
        build: StageBuild::Port { build },
    }
}

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
//!
//! The TAP adapter's offloads work here too ([`crate::linux::offload`]):
//! with `tso` the kernel hands over TCP sends (and, with USO, UDP sends)
//! as IP super-packets of up to 64 kB, cut into segments before the
//! emulation frames them; with `gro` the TCP segments (and, with USO, UDP
//! datagrams) of one flow that the room hands over together are written
//! as one super-packet.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use lanparty_core::config::{ConfigError, StageConfig};
use lanparty_core::registry::BuildResult;
use lanparty_core::runtime::MacIdentity;
use lanparty_core::runtime::{LinkSpec, PortContext};
use lanparty_core::runtime::{Metrics, StatusSource};
use lanparty_core::runtime::{Port, PortError};
use lanparty_core::stage::LinkRole;
use lanparty_core::wire::mtu::MAX_MTU;

use crate::emulation::driver::NO_MAC;
use crate::emulation::driver::{
    AdapterStatus, IpAdapter, adapter_settings, check_adapter_keys, drive, emulation_seed,
};
use crate::emulation::{Addressing, Emulation, EmulationConfig, Event};
use crate::linux::gro::Writer;
use crate::linux::netdev;
use crate::linux::offload::{self, Cutter, Offloads};
use crate::linux::rxbuf::{CHUNK, RxBuffer, give_way};
use crate::linux::tun::{Device, TunMode, any_readable, check_queues, read_round, ring_of};
use lanparty_core::queue::flow::FlowHasher;

adapter_settings! {
    /// Linux TUN device with Ethernet emulation (ARP/ND answers, broadcast
    /// mapping, DHCP client): the Windows client's layer, on Linux.
    #[lanparty_core::stage_kind(port, name = "tun-l2", build = build,
        example = "ports:\n  adapter: { type: tun-l2, device: lp0, mac: \"02:00:00:00:00:61\", address: dhcp }")]
    #[derive(Debug, Clone)]
    pub struct TunL2Settings {
        /// TUN device name, e.g. `lp0`; created if absent.
        pub device: String,
        /// Queues of the device (`IFF_MULTI_QUEUE`), 1 to 64: each flow's
        /// outgoing packets wait in a ring of their own and the port reads
        /// the rings in turn, as the `tap` port does. 1: one ring for all.
        #[key(default = 8)]
        pub queues: u16,
        /// Write the TCP segments (with USO, UDP datagrams too) of a flow
        /// that arrive together as one super-packet (GRO in software), as
        /// the `tap` port's `gro`.
        #[key(default = true)]
        pub gro: bool,
        /// Take the player's TCP sends (with USO on Linux 6.2+, UDP sends
        /// too) as super-packets of up to 64 kB and cut them here, as the
        /// `tap` port's `tso`.
        #[key(default = true)]
        pub tso: bool,
    }
}

/// A configured `tun-l2` port.
#[derive(Debug)]
pub struct TunL2Port {
    settings: TunL2Settings,
    addressing: Addressing,
}

const MAX_PACKET: usize = MAX_MTU as usize;

fn build(config: &StageConfig) -> BuildResult<Box<dyn Port>> {
    let settings: TunL2Settings = config.parse()?;
    let mut errors: Vec<ConfigError> = Vec::new();
    if let Err(e) = netdev::ifname(&settings.device) {
        errors.push(config.error("device", e.to_string()));
    }
    if let Err(e) = check_queues(settings.queues) {
        errors.push(config.error("queues", e));
    }
    let addressing = check_adapter_keys(config, settings.adapter_keys(), &mut errors);
    if errors.is_empty() {
        Ok(Box::new(TunL2Port {
            settings,
            addressing,
        }))
    } else {
        Err(errors)
    }
}

/// The TUN device as the emulation driver sees it: its queues, read in
/// turn, and each packet written through its flow's queue, with the
/// device's offloads on both ways.
struct TunAdapter {
    devices: Vec<Device>,
    rx: RxBuffer,
    /// The queue that goes first in the next read round.
    next: usize,
    flows: FlowHasher,
    offloads: Arc<Offloads>,
    cutter: Cutter,
}

impl TunAdapter {
    /// Writes `parts` (from [`Offloads`]) through their flow's queue.
    fn write(&self, parts: &[&[u8]]) -> std::io::Result<usize> {
        ring_of(&self.devices, || {
            self.flows.hash_ip(self.offloads.packet_of(parts))
        })
        .write_parts(parts)
    }

    /// Runs `step` with a writer onto the device; the first failed
    /// write's error, if any.
    fn writing(&self, step: impl FnOnce(&Offloads, &mut Writer<'_>) -> bool) -> Result<(), String> {
        let mut failed = None;
        let ok = step(&self.offloads, &mut |parts| match self.write(parts) {
            Ok(_) => true,
            Err(e) => {
                failed.get_or_insert(e);
                false
            }
        });
        match failed {
            Some(e) => Err(e.to_string()),
            None if ok => Ok(()),
            None => Err("write refused".into()),
        }
    }
}

impl IpAdapter for TunAdapter {
    fn name(&self) -> &str {
        &self.devices[0].name
    }

    async fn recv(&mut self, out: &mut Vec<Bytes>) -> Result<(), String> {
        std::future::poll_fn(|cx| any_readable(&self.devices, cx)).await;
        let TunAdapter {
            devices,
            rx,
            next,
            offloads,
            cutter,
            ..
        } = self;
        let drained = read_round(devices, next, rx, &mut |rx, n| {
            offloads.read(rx, n, cutter, out)
        })
        .map_err(|e| format!("read failed: {e}"))?;
        give_way(drained).await;
        Ok(())
    }

    async fn send(&mut self, packet: &[u8]) -> Result<(), String> {
        if !self.offloads.headers() {
            return ring_of(&self.devices, || self.flows.hash_ip(packet))
                .write_frame(packet)
                .await
                .map_err(|e| e.to_string());
        }
        self.writing(|offloads, write| offloads.write(packet, write))
    }

    fn flush(&mut self) -> Result<(), String> {
        self.writing(|offloads, write| offloads.flush(write))
    }

    fn apply(&mut self, event: &Event) {
        let name = &self.devices[0].name;
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

    fn set_mtu(&mut self, mtu: u16) {
        netdev::follow_room_mtu(&self.devices[0].name, mtu);
    }
}

impl TunL2Port {
    fn fail(&self, what: impl std::fmt::Display) -> PortError {
        PortError::new(
            &self.settings.device,
            format!("device {}: {what}", self.settings.device),
        )
    }

    fn mac_identity(&mut self) -> MacIdentity<'_> {
        MacIdentity::Adapter {
            mac: &mut self.settings.mac,
            required: true,
        }
    }

    async fn run(self, ctx: PortContext) -> Result<(), PortError> {
        let mac = self.settings.mac.ok_or_else(|| self.fail(NO_MAC))?;
        let name = self.settings.device.clone();
        let s = &self.settings;
        let (fds, offloads) = offload::open(&name, TunMode::Tun, s.queues.into(), s.gro, s.tso)
            .map_err(|e| self.fail(e))?;
        let offloads = Arc::new(offloads);
        let devices = Device::register_all(fds, &name).map_err(|e| self.fail(e))?;
        let mut link = ctx.attach(
            &self.settings.room,
            LinkSpec {
                name: name.clone(),
                role: LinkRole::Host,
                macs: vec![mac],
                mtu: self.settings.mtu,
                sink: None,
            },
        );
        let mtu = self.settings.mtu.unwrap_or(*link.mtu().borrow());
        netdev::set_mtu(&name, mtu).map_err(|e| self.fail(format!("cannot set MTU {mtu}: {e}")))?;
        netdev::update_flags(&name, libc::IFF_UP as libc::c_short, 0)
            .map_err(|e| self.fail(format!("cannot bring the device up: {e}")))?;
        let mut emulation = Emulation::new(
            EmulationConfig::new(mac, self.addressing.clone()),
            emulation_seed(),
            Instant::now(),
        );
        tracing::info!(device = %name, %mac, mtu, queues = devices.len(), room = %self.settings.room, addressing = emulation.dhcp_state(), "TUN adapter up with Ethernet emulation");
        let status = Arc::new(TunStatus {
            adapter: AdapterStatus::new("tun-l2", &name, &emulation),
            offloads: offloads.clone(),
        });
        ctx.publish_status(status.clone());
        let mut adapter = TunAdapter {
            devices,
            rx: RxBuffer::new(offloads.read_size(MAX_PACKET), CHUNK),
            next: 0,
            flows: FlowHasher::default(),
            offloads,
            cutter: Cutter::default(),
        };
        let result = drive(
            &mut adapter,
            &mut emulation,
            &mut link,
            self.settings.mtu.is_none(),
            ctx.shutdown(),
            &status.adapter,
        )
        .await
        .map_err(|e| self.fail(e));
        let c = emulation.counters();
        tracing::info!(device = %name, outbound = c.outbound, inbound = c.inbound, arp_answered = c.arp_answered, ns_answered = c.ns_answered, unresolved = c.unresolved, pending_full = c.pending_full, "tun-l2 port stopped");
        result
    }
}

/// `lanparty status` for a `tun-l2` port: the emulation's, and what the
/// offloads did.
struct TunStatus {
    adapter: AdapterStatus,
    offloads: Arc<Offloads>,
}

impl StatusSource for TunStatus {
    fn status(&self) -> serde_json::Value {
        let mut status = self.adapter.status();
        if let serde_json::Value::Object(fields) = &mut status {
            self.offloads.status(fields);
        }
        status
    }

    fn metrics(&self, out: &mut Metrics) {
        self.adapter.metrics(out);
        self.offloads
            .metrics(out, &[("device", self.adapter.device())]);
    }
}

lanparty_core::impl_port!(TunL2Port, mac_identity);

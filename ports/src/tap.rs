//! `tap`: a Linux TAP device as a link: the virtual Ethernet adapter of a
//! client, or a local port on any node.
//!
//! Creates the device (or attaches to an existing persistent one by name),
//! optionally sets its MAC and addresses, keeps its MTU equal to the room
//! MTU (which a QUIC client learns from the relay's welcome), brings it up,
//! and moves frames between it and the room. VLAN tags pass through as they
//! are. A device this port created disappears when the port stops; a
//! persistent device made beforehand (`ip tuntap add`) is left in place.
//!
//! Receive reads every frame that is ready per wake-up into one shared
//! buffer (no allocation per frame); transmit writes the frames the room
//! routes here straight to the device, from the room (no queue, no extra
//! task wake-up). With `gro` (the default) the device is opened with
//! virtio-net headers and consecutive TCP segments of one flow that the
//! room hands over in one batch are written as one super-packet
//! ([`crate::linux::gro`]); a kernel that refuses the headers gets plain
//! frames.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use lanparty_core::config::{ConfigError, StageConfig};
use lanparty_core::registry::BuildResult;
use lanparty_core::runtime::MacIdentity;
use lanparty_core::runtime::{
    DEFAULT_ROOM, LinkHandle, LinkSink, LinkSpec, Metrics, PortContext, StatusSource,
};
use lanparty_core::runtime::{Port, PortError};
use lanparty_core::stage::LinkRole;
use lanparty_core::wire::MacAddr;
use lanparty_core::wire::mtu::{MAX_MTU, validate_mtu};

use crate::linux::gro::{Gro, GroStats};
use crate::linux::gso::{self, NEEDS_CSUM, VNET_HDR_LEN, VnetHeader, gso_type};
use crate::linux::rxbuf::{CHUNK, RxBuffer, give_way};
use crate::linux::tun::{Device, TunMode, open_tun};
use crate::linux::{checksum, netdev};

/// Linux TAP device: the virtual Ethernet adapter (MTU follows the room;
/// created and removed by the port).
#[lanparty_core::stage_kind(port, name = "tap", build = build,
    example = "ports:\n  adapter: { type: tap, device: lp0, mac: \"02:00:00:00:00:51\" }")]
#[derive(Debug, Clone)]
pub struct TapSettings {
    /// Device name, e.g. `lp0`; created if absent.
    pub device: String,
    /// The adapter's MAC; leave it out on a client: the adapter takes the
    /// MAC the node joins the relay with.
    #[key(shown = "the quic-client's `mac`, else the kernel's random MAC")]
    pub mac: Option<MacAddr>,
    /// A fixed MTU instead of following the room.
    #[key(shown = "the room MTU")]
    pub mtu: Option<u16>,
    /// Static addresses, e.g. `[10.77.0.2/24, fd77::2/64]`; none means
    /// DHCP/SLAAC decide.
    #[key(default = "[]", ty = "list of CIDR")]
    pub addresses: Vec<String>,
    /// The room the device joins.
    #[key(default = DEFAULT_ROOM.into(), shown = DEFAULT_ROOM)]
    pub room: String,
    /// The link role filters see.
    #[key(default = "host")]
    pub role: LinkRole,
    /// Write consecutive TCP segments of a flow that arrive together as
    /// one super-packet (GRO in software): the receiving kernel's TCP
    /// handles one packet instead of dozens.
    #[key(default = true)]
    pub gro: bool,
}

/// A configured TAP port.
#[derive(Debug)]
pub struct TapPort {
    settings: TapSettings,
    addresses: Vec<(std::net::IpAddr, u8)>,
}

/// Frames read per wake-up before giving the other direction a turn.
const RX_BATCH: usize = 64;
/// Largest frame read: MTU plus Ethernet header and two VLAN tags.
const MAX_FRAME: usize = MAX_MTU as usize + 22;

fn build(config: &StageConfig) -> BuildResult<Box<dyn Port>> {
    let settings: TapSettings = config.parse()?;
    let mut errors: Vec<ConfigError> = Vec::new();
    if let Err(e) = netdev::ifname(&settings.device) {
        errors.push(config.error("device", e.to_string()));
    }
    if let Some(mac) = settings.mac {
        if let Err(e) = mac.validate_adapter_mac() {
            errors.push(config.error("mac", e.to_string()));
        }
    }
    if let Some(mtu) = settings.mtu {
        if let Err(e) = validate_mtu(u32::from(mtu)) {
            errors.push(config.error("mtu", e.to_string()));
        }
    }
    let mut addresses = Vec::new();
    for (i, text) in settings.addresses.iter().enumerate() {
        match crate::inet::parse_cidr(text) {
            Ok(a) => addresses.push(a),
            Err(e) => errors.push(config.error(&format!("addresses[{i}]"), e)),
        }
    }
    if let Err(e) = lanparty_core::control::validate_room_code(&settings.room) {
        errors.push(config.error("room", e));
    }
    if errors.is_empty() {
        Ok(Box::new(TapPort {
            settings,
            addresses,
        }))
    } else {
        Err(errors)
    }
}

impl TapPort {
    fn fail(&self, what: impl std::fmt::Display) -> PortError {
        PortError::new(
            &self.settings.device,
            format!("device {}: {what}", self.settings.device),
        )
    }

    fn configure(&self, mtu: u16) -> Result<(), PortError> {
        let name = &self.settings.device;
        if let Some(mac) = self.settings.mac {
            netdev::set_mac(name, mac)
                .map_err(|e| self.fail(format!("cannot set MAC {mac}: {e}")))?;
        }
        netdev::set_mtu(name, mtu).map_err(|e| self.fail(format!("cannot set MTU {mtu}: {e}")))?;
        netdev::update_flags(name, libc::IFF_UP as libc::c_short, 0)
            .map_err(|e| self.fail(format!("cannot bring the device up: {e}")))?;
        for (addr, prefix) in &self.addresses {
            match netdev::add_address(name, *addr, *prefix) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(self.fail(format!("cannot add address {addr}/{prefix}: {e}"))),
            }
        }
        Ok(())
    }

    async fn run(self, ctx: PortContext) -> Result<(), PortError> {
        let name = self.settings.device.clone();
        let (fd, vnet) = match open_tun(&name, TunMode::Tap, self.settings.gro) {
            Ok(fd) => (fd, self.settings.gro),
            Err(e) if self.settings.gro => {
                tracing::info!(device = %name, "no virtio-net headers on this TAP ({e}): frames are written one by one");
                (
                    open_tun(&name, TunMode::Tap, false).map_err(|e| self.fail(e))?,
                    false,
                )
            }
            Err(e) => return Err(self.fail(e)),
        };
        let device = Arc::new(Device::new(fd, &name).map_err(|e| {
            self.fail(format!(
                "cannot register the device with the reactor: {e:?}"
            ))
        })?);
        let mac = netdev::mac(&name).map_err(|e| self.fail(format!("cannot read the MAC: {e}")))?;
        let mac = self.settings.mac.unwrap_or(mac);
        let sink = Arc::new(TapSink {
            device: device.clone(),
            gro: vnet.then(|| Mutex::new(Gro::default())),
            errors: AtomicU64::new(0),
        });
        ctx.publish_status(sink.clone());
        let mut link = ctx.attach(
            &self.settings.room,
            LinkSpec {
                name: name.clone(),
                role: self.settings.role,
                macs: vec![mac],
                mtu: self.settings.mtu,
                sink: Some(sink.clone()),
            },
        );
        let mut room_mtu = link.mtu();
        let mtu = self.settings.mtu.unwrap_or(*room_mtu.borrow_and_update());
        self.configure(mtu)?;
        tracing::info!(device = %name, %mac, mtu, room = %self.settings.room, "TAP device up");
        let result = self
            .pump(&device, vnet, &mut link, &mut room_mtu, ctx.shutdown())
            .await;
        tracing::info!(device = %name, "TAP port stopped");
        result
    }

    async fn pump(
        &self,
        device: &Device,
        vnet: bool,
        link: &mut LinkHandle,
        room_mtu: &mut tokio::sync::watch::Receiver<u16>,
        mut shutdown: lanparty_core::runtime::ShutdownSignal,
    ) -> Result<(), PortError> {
        let mut rx = RxBuffer::new(MAX_FRAME + VNET_HDR_LEN, CHUNK);
        let mut scratch = Vec::new();
        loop {
            tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                ready = device.fd.readable() => {
                    let mut guard = ready.map_err(|e| self.fail(format!("poll failed: {e}")))?;
                    let mut drained = false;
                    for _ in 0..RX_BATCH {
                        match device.read(rx.space()) {
                            Ok(0) => {
                                drained = true;
                                break;
                            }
                            Ok(n) if vnet => from_vnet(&mut rx, n, link, &mut scratch),
                            Ok(n) => {
                                link.send(rx.take(n));
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                guard.clear_ready();
                                drained = true;
                                break;
                            }
                            Err(e) => return Err(self.fail(format!("read failed: {e}"))),
                        }
                    }
                    drop(guard);
                    give_way(drained).await;
                }
                // Frames from the room go through the TapSink.
                () = link.closed() => return Err(self.fail("the room closed")),
                changed = room_mtu.changed(), if self.settings.mtu.is_none() => {
                    if changed.is_ok() {
                        netdev::follow_room_mtu(&device.name, *room_mtu.borrow_and_update());
                    }
                }
            }
        }
    }
}

/// The `n` bytes just read into `rx` behind a virtio-net header, to the
/// room. Without offloads enabled (`TUNSETOFFLOAD`) the kernel sends plain
/// frames with complete checksums; a pending checksum is completed in
/// place and a super-packet cut into segments (each in `rx`) all the same,
/// should a kernel send one. (Letting it send super-packets, TSO on the
/// read side, was measured: +4 % ± 8 % TCP, within noise; left off.)
fn from_vnet(rx: &mut RxBuffer, n: usize, link: &LinkHandle, scratch: &mut Vec<u8>) {
    let Some(header) = VnetHeader::parse(&rx.space()[..n]) else {
        return;
    };
    match header.gso_type & !gso_type::ECN {
        gso_type::NONE => {
            if header.flags & NEEDS_CSUM != 0 {
                checksum::complete_l4_checksum(&mut rx.space()[VNET_HDR_LEN..n]);
            }
            link.send(rx.take(n).slice(VNET_HDR_LEN..));
        }
        _ => {
            let packet = rx.take(n);
            let cut = gso::segment_tcp(
                &packet[VNET_HDR_LEN..],
                usize::from(header.gso_size),
                scratch,
                &mut |segment| {
                    rx.space()[..segment.len()].copy_from_slice(segment);
                    link.send(rx.take(segment.len()));
                },
            );
            if let Err(why) = cut {
                tracing::debug!(
                    gso_size = header.gso_size,
                    "TAP super-packet not cut: {why}; dropped"
                );
            }
        }
    }
}

/// Writes the room's frames straight to the device, in the task that
/// routed them: no queue, no task switch. A TAP device takes a write at
/// once (the kernel queues it on the receive side of the interface); a
/// write it refuses is dropped and counted by the room (`tx_queue_full`).
/// With GRO, TCP segments are held until the room's batch ends
/// ([`LinkSink::flush`]) and go out merged.
#[derive(Debug)]
struct TapSink {
    device: Arc<Device>,
    gro: Option<Mutex<Gro>>,
    errors: AtomicU64,
}

impl TapSink {
    fn gro_stats(&self) -> GroStats {
        self.gro.as_ref().map_or_else(GroStats::default, |g| {
            g.lock().unwrap_or_else(PoisonError::into_inner).stats()
        })
    }

    fn write(&self, parts: &[&[u8]]) -> bool {
        match self.device.write_parts(parts) {
            Ok(_) => true,
            Err(e) => {
                let errors = self.errors.fetch_add(1, Ordering::Relaxed) + 1;
                if errors.is_power_of_two() {
                    tracing::warn!(device = %self.device.name, errors, "write to TAP failed: {e}");
                }
                false
            }
        }
    }
}

/// `lanparty status` for a TAP port: the device, whether GRO is on and what
/// it merged, failed writes.
impl StatusSource for TapSink {
    fn status(&self) -> serde_json::Value {
        let gro = self.gro_stats();
        serde_json::json!({
            "type": "tap",
            "device": self.device.name,
            "gro": self.gro.is_some(),
            "gro_super_packets": gro.super_packets,
            "gro_merged_segments": gro.merged_segments,
            "write_errors": self.errors.load(Ordering::Relaxed),
        })
    }

    fn metrics(&self, out: &mut Metrics) {
        let gro = self.gro_stats();
        let device = [("device", self.device.name.as_str())];
        for (name, help, value) in [
            (
                "lanparty_tap_gro_super_packets_total",
                "TCP super-packets written to a TAP device (two segments or more)",
                gro.super_packets,
            ),
            (
                "lanparty_tap_gro_merged_segments_total",
                "TCP segments written inside super-packets",
                gro.merged_segments,
            ),
            (
                "lanparty_tap_write_errors_total",
                "Writes a TAP device refused",
                self.errors.load(Ordering::Relaxed),
            ),
        ] {
            out.counter(name, help, &device, value);
        }
    }
}

impl LinkSink for TapSink {
    fn deliver(&self, frame: Bytes) -> bool {
        match &self.gro {
            Some(gro) => gro
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(&frame, &mut |parts| self.write(parts)),
            None => self.write(&[&frame]),
        }
    }

    fn gathers(&self) -> bool {
        self.gro.is_some()
    }

    fn flush(&self) {
        if let Some(gro) = &self.gro {
            gro.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .flush(&mut |parts| self.write(parts));
        }
    }
}

impl TapPort {
    fn mac_identity(&mut self) -> MacIdentity<'_> {
        MacIdentity::Adapter {
            mac: &mut self.settings.mac,
            required: false,
        }
    }
}

lanparty_core::impl_port!(TapPort, mac_identity);

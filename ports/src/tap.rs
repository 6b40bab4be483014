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
//! The device has `queues` rings (`IFF_MULTI_QUEUE`, 8 by default): each
//! frame is written through the ring its flow hashes to, so the kernel
//! queues that flow's outgoing packets in the same ring, and receive reads
//! the rings in turn (at most `QUANTUM` frames from one before the next,
//! up to `RX_BATCH` per wake-up) into one shared buffer (no allocation
//! per frame): a game's packets never wait behind a download's ring.
//! Transmit writes the frames the room routes here straight to the device,
//! from the room (no queue, no extra task wake-up). With `gro` (the
//! default) the device is opened with virtio-net headers and consecutive
//! TCP segments of one flow that the room hands over in one batch are
//! written as one super-packet
//! ([`crate::linux::gro`]); a kernel that refuses the headers gets plain
//! frames. With `tso` (the default) the kernel hands the port its TCP
//! super-packets (up to 64 kB, one read) and the port cuts them into
//! segments ([`crate::linux::gso`]); a kernel without it cuts them itself.
//! Both live in [`crate::linux::offload`], shared with `tun-l2`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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

use crate::linux::netdev;
use crate::linux::offload::{self, Cutter, Offloads};
use crate::linux::rxbuf::{CHUNK, RxBuffer, give_way};
use crate::linux::tun::{Device, TunMode, any_readable, check_queues, read_round, ring_of};
use lanparty_core::queue::flow::FlowHasher;

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
    /// Write consecutive TCP segments (with USO, UDP datagrams too) of a
    /// flow that arrive together as one super-packet (GRO in software):
    /// the receiving kernel handles one packet instead of dozens.
    #[key(default = true)]
    pub gro: bool,
    /// TCP segmentation offload on the adapter (and UDP segmentation
    /// offload where the kernel has it, Linux 6.2+): the player's kernel
    /// hands the port a TCP send as super-packets of up to 64 kB, read in
    /// one system call each and cut into segments here, instead of
    /// cutting and checksumming every segment itself and handing them over
    /// one read at a time. USO also lets `gro` write UDP super-packets.
    #[key(default = true)]
    pub tso: bool,
    /// Queues of the device (`IFF_MULTI_QUEUE`), 1 to 64: each flow's
    /// outgoing packets wait in a ring of their own and the port reads the
    /// rings in turn, so a game's packets do not queue behind a download
    /// that outruns the port. 1: one ring for all, as a plain TAP.
    #[key(default = 8)]
    pub queues: u16,
}

/// A configured TAP port.
#[derive(Debug)]
pub struct TapPort {
    settings: TapSettings,
    addresses: Vec<(std::net::IpAddr, u8)>,
}

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
    if let Err(e) = check_queues(settings.queues) {
        errors.push(config.error("queues", e));
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
        let s = &self.settings;
        let (fds, offloads) = offload::open(&name, TunMode::Tap, s.queues.into(), s.gro, s.tso)
            .map_err(|e| self.fail(e))?;
        let devices = Device::register_all(fds, &name).map_err(|e| self.fail(e))?;
        let devices: Arc<[Device]> = devices.into();
        let mac = netdev::mac(&name).map_err(|e| self.fail(format!("cannot read the MAC: {e}")))?;
        let mac = self.settings.mac.unwrap_or(mac);
        let sink = Arc::new(TapSink {
            devices: devices.clone(),
            flows: FlowHasher::default(),
            offloads,
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
        tracing::info!(device = %name, %mac, mtu, queues = devices.len(), room = %self.settings.room, "TAP device up");
        let result = self
            .pump(&devices, &sink, &mut link, &mut room_mtu, ctx.shutdown())
            .await;
        tracing::info!(device = %name, "TAP port stopped");
        result
    }

    async fn pump(
        &self,
        devices: &[Device],
        sink: &TapSink,
        link: &mut LinkHandle,
        room_mtu: &mut tokio::sync::watch::Receiver<u16>,
        mut shutdown: lanparty_core::runtime::ShutdownSignal,
    ) -> Result<(), PortError> {
        let offloads = &sink.offloads;
        let mut rx = RxBuffer::new(offloads.read_size(MAX_FRAME), CHUNK);
        let mut cutter = Cutter::default();
        let mut frames = Vec::new();
        let mut next = 0;
        loop {
            tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                () = std::future::poll_fn(|cx| any_readable(devices, cx)) => {
                    let drained = read_round(devices, &mut next, &mut rx, &mut |rx, n| {
                        let made = offloads.read(rx, n, &mut cutter, &mut frames);
                        link.send_all(&mut frames);
                        made
                    })
                    .map_err(|e| self.fail(format!("read failed: {e}")))?;
                    give_way(drained).await;
                }
                // Frames from the room go through the TapSink.
                () = link.closed() => return Err(self.fail("the room closed")),
                changed = room_mtu.changed(), if self.settings.mtu.is_none() => {
                    if changed.is_ok() {
                        netdev::follow_room_mtu(&devices[0].name, *room_mtu.borrow_and_update());
                    }
                }
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
    /// The device's queues.
    devices: Arc<[Device]>,
    /// Picks each flow's queue: the kernel sends a flow's packets on the
    /// queue its other direction was written to.
    flows: FlowHasher,
    /// Virtio-net headers, GRO and TSO, as the device got them.
    offloads: Offloads,
    errors: AtomicU64,
}

impl TapSink {
    fn write(&self, parts: &[&[u8]]) -> bool {
        let device = self.queue_for(parts);
        match device.write_parts(parts) {
            Ok(_) => true,
            Err(e) => {
                let errors = self.errors.fetch_add(1, Ordering::Relaxed) + 1;
                if errors.is_power_of_two() {
                    tracing::warn!(device = %device.name, errors, "write to TAP failed: {e}");
                }
                false
            }
        }
    }

    /// The queue of the flow whose frame `parts` carry (after the
    /// virtio-net header, which is the first part or its start).
    fn queue_for(&self, parts: &[&[u8]]) -> &Device {
        ring_of(&self.devices, || {
            self.flows.hash(self.offloads.packet_of(parts))
        })
    }
}

/// `lanparty status` for a TAP port: the device, whether GRO and TSO are on
/// and what they merged and cut, failed writes.
impl StatusSource for TapSink {
    fn status(&self) -> serde_json::Value {
        let mut status = serde_json::Map::new();
        status.insert("type".into(), "tap".into());
        status.insert("device".into(), self.devices[0].name.clone().into());
        status.insert("queues".into(), self.devices.len().into());
        self.offloads.status(&mut status);
        let errors = self.errors.load(Ordering::Relaxed);
        status.insert("write_errors".into(), errors.into());
        status.into()
    }

    fn metrics(&self, out: &mut Metrics) {
        let device = [("device", self.devices[0].name.as_str())];
        self.offloads.metrics(out, &device);
        out.counter(
            "lanparty_tap_write_errors_total",
            "Writes a TAP device refused",
            &device,
            self.errors.load(Ordering::Relaxed),
        );
    }
}

impl LinkSink for TapSink {
    fn deliver(&self, frame: Bytes) -> bool {
        self.offloads.write(&frame, &mut |parts| self.write(parts))
    }

    fn gathers(&self) -> bool {
        self.offloads.gathers()
    }

    fn flush(&self) {
        self.offloads.flush(&mut |parts| self.write(parts));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::gso::{VNET_HDR_LEN, VnetHeader};
    use crate::linux::tun::{QUANTUM, RX_BATCH, open_tun};
    use lanparty_core::testing::frames::{self, Tags};
    use std::io;
    use std::net::{Ipv4Addr, UdpSocket};

    const FLOWS: u16 = 12;

    /// Moves this test's thread into a network namespace of its own (root,
    /// as every end-to-end test here); it and its devices go with the
    /// thread.
    fn private_netns() {
        // SAFETY: unshare(2) with a valid flag; it changes only this thread.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        let e = io::Error::last_os_error();
        assert_eq!(rc, 0, "unshare: {e} (run as root)");
    }
    const QUEUES: usize = 4;

    /// Reads every frame waiting on each queue: (queue, UDP source port).
    fn drain(devices: &[Device]) -> Vec<(usize, u16)> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 2048];
        for (q, device) in devices.iter().enumerate() {
            while let Ok(n) = device.read(&mut buf) {
                let frame = &buf[VNET_HDR_LEN..n];
                // IPv4 UDP from 10.9.0.1: the source port.
                if frame.len() >= 38 && frame[12..14] == [8, 0] && frame[23] == 17 {
                    got.push((q, u16::from_be_bytes([frame[34], frame[35]])));
                }
            }
        }
        got
    }

    /// In a network namespace of this test thread's own (root, as every
    /// end-to-end test here): a 4-queue TAP, 12 UDP flows leaving it to
    /// the subnet's broadcast address, and the port's sink writing each
    /// flow's answer. Every flow's later packets come out of the queue its
    /// answer was written to, the flows spread over the queues, and one
    /// round of reads serves a flow alone in its ring within the first
    /// quantum of a busy ring and still reads a full batch.
    #[test]
    fn each_flow_leaves_on_its_own_queue_and_a_lone_flow_is_read_first() {
        private_netns();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let _enter = runtime.enter();
        let name = "lpmq0";
        let (fds, offloads) = offload::open(name, TunMode::Tap, QUEUES, true, false).unwrap();
        assert_eq!(fds.len(), QUEUES);
        let devices: Arc<[Device]> = fds
            .into_iter()
            .map(|fd| Device::new(fd, name).unwrap())
            .collect::<Vec<_>>()
            .into();
        netdev::add_address(name, Ipv4Addr::new(10, 9, 0, 1).into(), 24).unwrap();
        netdev::update_flags(name, libc::IFF_UP as libc::c_short, 0).unwrap();
        let sink = TapSink {
            devices: devices.clone(),
            flows: FlowHasher::default(),
            offloads,
            errors: AtomicU64::new(0),
        };
        let tap_mac = netdev::mac(name).unwrap();
        let peer = MacAddr([2, 0, 0, 0, 0, 2]);
        let sockets: Vec<UdpSocket> = (0..FLOWS)
            .map(|k| {
                let s = UdpSocket::bind((Ipv4Addr::new(10, 9, 0, 1), 41000 + k)).unwrap();
                s.set_broadcast(true).unwrap();
                s
            })
            .collect();
        let answer = |k: u16| {
            frames::ipv4_udp(
                tap_mac,
                peer,
                Tags::None,
                [10, 9, 0, 255],
                [10, 9, 0, 1],
                5000,
                41000 + k,
                b"answer",
            )
        };
        // Each flow's answer goes in through the queue the sink picks for it.
        let mut chosen = Vec::new();
        for k in 0..FLOWS {
            let frame = answer(k);
            let header = VnetHeader::default().encode();
            let parts: [&[u8]; 2] = [&header, &frame];
            let queue = devices
                .iter()
                .position(|d| std::ptr::eq(d, sink.queue_for(&parts)))
                .unwrap();
            assert!(sink.write(&parts));
            chosen.push(queue);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        drain(&devices);
        for s in &sockets {
            s.send_to(b"out", (Ipv4Addr::new(10, 9, 0, 255), 5000))
                .unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let got = drain(&devices);
        assert_eq!(got.len(), usize::from(FLOWS), "{got:?}");
        for (queue, port) in &got {
            let k = usize::from(port - 41000);
            assert_eq!(*queue, chosen[k], "flow {k} left on queue {queue}");
        }
        let mut used = chosen.clone();
        used.sort_unstable();
        used.dedup();
        assert!(used.len() >= 2, "12 flows, one queue: {chosen:?}");

        // A busy flow's ring holds more than a batch, a lone flow's ring one.
        let busy: u16 = 0;
        let lone = (1..FLOWS)
            .find(|&k| chosen[usize::from(k)] != chosen[0])
            .unwrap();
        for _ in 0..RX_BATCH + 20 {
            sockets[usize::from(busy)]
                .send_to(b"bulk", (Ipv4Addr::new(10, 9, 0, 255), 5000))
                .unwrap();
        }
        sockets[usize::from(lone)]
            .send_to(b"game", (Ipv4Addr::new(10, 9, 0, 255), 5000))
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        // The reactor learns which queues are readable, as the port's wait does.
        runtime.block_on(async {
            std::future::poll_fn(|cx| any_readable(&devices, cx)).await;
            tokio::task::yield_now().await;
        });
        let mut rx = RxBuffer::new(MAX_FRAME + VNET_HDR_LEN, CHUNK);
        let mut order = Vec::new();
        let mut read = 0;
        // Start the round at the busy flow's queue: the worst case.
        let mut next = chosen[0];
        let drained = read_round(&devices, &mut next, &mut rx, &mut |rx, n| {
            // Every frame counts against the batch, the kernel's own
            // (IPv6 neighbour discovery on the new device) too.
            read += 1;
            let frame = rx.take(n);
            if frame.len() >= VNET_HDR_LEN + 38 && frame[VNET_HDR_LEN + 23] == 17 {
                let at = VNET_HDR_LEN + 34;
                order.push(u16::from_be_bytes([frame[at], frame[at + 1]]) - 41000);
            }
            1
        })
        .unwrap();
        assert!(!drained, "the busy ring still holds frames");
        assert_eq!(read, RX_BATCH, "a full batch per round: {order:?}");
        let lone_at = order.iter().position(|&k| k == lone).unwrap();
        assert!(
            lone_at <= QUANTUM,
            "the lone flow's frame came after {lone_at} busy frames: {order:?}"
        );
    }

    /// A single-queue device made beforehand (`ip tuntap add mode tap`,
    /// persistent) keeps working: the port falls back to one ring.
    #[test]
    fn a_single_queue_device_made_beforehand_gets_one_ring() {
        use std::os::fd::AsRawFd;
        private_netns();
        let name = "lpsq0";
        let fd = open_tun(name, TunMode::Tap, false).unwrap();
        // SAFETY: TUNSETPERSIST takes an integer flag; the result is checked.
        let rc =
            unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETPERSIST as _, 1 as libc::c_ulong) };
        assert_eq!(rc, 0, "TUNSETPERSIST: {}", io::Error::last_os_error());
        drop(fd);
        let (fds, offloads) = offload::open(name, TunMode::Tap, 8, true, true).unwrap();
        assert_eq!(fds.len(), 1, "one ring on a single-queue device");
        let mut status = serde_json::Map::new();
        offloads.status(&mut status);
        assert_eq!(status["gro"], true, "virtio-net headers and GRO still on");
        assert_eq!(status["tso"], true, "TSO still on");
        // The namespace, and the persistent device in it, go with this thread.
    }

    /// In a namespace of this thread's own: a UDP send with `UDP_SEGMENT`
    /// (350 bytes in 100-byte datagrams) out of a TAP with USO reaches the
    /// port as one super-packet, which it cuts into the four datagrams a
    /// receiver would have got, with their lengths and checksums right.
    #[test]
    fn a_udp_gso_send_is_read_as_one_super_packet_and_cut_into_its_datagrams() {
        private_netns();
        let name = "lpuso0";
        let (fds, offloads) = offload::open(name, TunMode::Tap, 1, true, true).unwrap();
        let mut status = serde_json::Map::new();
        offloads.status(&mut status);
        assert_eq!(status["uso"], true, "this kernel has no USO on TAP (6.2+)");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let _enter = runtime.enter();
        let device = Device::new(fds.into_iter().next().unwrap(), name).unwrap();
        netdev::add_address(name, Ipv4Addr::new(10, 9, 1, 1).into(), 24).unwrap();
        netdev::update_flags(name, libc::IFF_UP as libc::c_short, 0).unwrap();
        let socket = UdpSocket::bind((Ipv4Addr::new(10, 9, 1, 1), 40000)).unwrap();
        socket.set_broadcast(true).unwrap();
        let gso_size: libc::c_int = 100;
        crate::linux::setsockopt(&socket, libc::SOL_UDP, libc::UDP_SEGMENT, &gso_size)
            .expect("UDP_SEGMENT");
        let payload: Vec<u8> = (0..350u32).map(|i| i as u8).collect();
        socket
            .send_to(&payload, (Ipv4Addr::new(10, 9, 1, 255), 5000))
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut rx = RxBuffer::new(offloads.read_size(MAX_FRAME), CHUNK);
        let (mut cutter, mut got) = (Cutter::default(), Vec::new());
        while let Ok(n) = device.read(rx.space()) {
            let mut frames = Vec::new();
            offloads.read(&mut rx, n, &mut cutter, &mut frames);
            // IPv4 UDP to port 5000 (the kernel's own IPv6 chatter aside).
            got.extend(frames.into_iter().filter(|f| {
                f.len() > 42 && f[12..14] == [8, 0] && f[23] == 17 && f[36..38] == [0x13, 0x88]
            }));
        }
        let lengths: Vec<usize> = got.iter().map(|f| f.len() - 42).collect();
        assert_eq!(lengths, vec![100, 100, 100, 50], "{got:?}");
        for (i, frame) in got.iter().enumerate() {
            let mut fixed = frame.to_vec();
            assert!(crate::linux::checksum::complete_l4_checksum(
                crate::inet::Framing::Ethernet,
                &mut fixed
            ));
            assert_eq!(&fixed, frame, "datagram {i}: checksum");
            assert_eq!(&frame[42..], &payload[i * 100..(i * 100 + 100).min(350)]);
        }
        let mut status = serde_json::Map::new();
        offloads.status(&mut status);
        assert_eq!(status["tso_super_packets"], 1, "one read: {status:?}");
        assert_eq!(status["tso_segments"], 4);
    }
}

//! `af-packet`: a wired LAN interface as a link (the gateway's side of the
//! host's LAN), through a raw `AF_PACKET` socket.
//!
//! - Receives every frame on the interface (promiscuous membership, which
//!   the kernel drops again when the socket closes, so the interface's own
//!   promiscuity setting is never changed behind anyone's back).
//! - Never reads back what it injects (`PACKET_IGNORE_OUTGOING`), so frames
//!   from the room never loop back to the relay.
//! - Puts 802.1Q tags back: the kernel strips the tag on receive and
//!   reports it in `PACKET_AUXDATA`; the port re-inserts it (with its TPID)
//!   so tagged LAN traffic crosses intact.
//! - Completes TCP/UDP checksums the kernel left for offload
//!   (`TP_STATUS_CSUMNOTREADY`, e.g. traffic from the gateway machine
//!   itself), which receivers would otherwise drop.
//! - Cuts TCP super-packets (GRO on the NIC, a TSO peer on a veth or bridge)
//!   back into wire-sized segments, using `PACKET_VNET_HDR`.
//! - Batched I/O: `recvmmsg` into a persistent buffer, each frame copied
//!   once into a shared chunk it is handed out from (no allocation per
//!   frame), and `sendmmsg` for what the room sends.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use bytes::Bytes;
use lanparty_core::config::{ConfigError, StageConfig};
use lanparty_core::registry::BuildResult;
use lanparty_core::runtime::{DEFAULT_ROOM, LinkHandle, LinkSpec, PortContext, ShutdownSignal};
use lanparty_core::runtime::{Port, PortError};
use lanparty_core::stage::LinkRole;
use lanparty_core::wire::ethertype;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::inet::Framing;
use crate::linux::gso::{self, NEEDS_CSUM, VNET_HDR_LEN, VnetHeader, gso_type};
use crate::linux::rxbuf::{CHUNK, RxBuffer, give_way};
use crate::linux::{checksum, netdev, setsockopt};

/// A wired LAN interface through AF_PACKET: promiscuous, VLAN tags
/// restored, never reads back its own frames, batched I/O.
#[lanparty_core::stage_kind(port, name = "af-packet", build = build,
    example = "ports:\n  lan: { type: af-packet, interface: eth0 }")]
#[derive(Debug, Clone)]
pub struct AfPacketSettings {
    /// The LAN interface, e.g. `eth0`.
    pub interface: String,
    /// Receive frames for every MAC (needed to bridge); dropped again when
    /// the port stops.
    #[key(default = true)]
    pub promiscuous: bool,
    /// Frames per `recvmmsg`/`sendmmsg` call.
    #[key(default = 32)]
    pub batch: usize,
    /// The room the LAN joins.
    #[key(default = DEFAULT_ROOM.into(), shown = DEFAULT_ROOM)]
    pub room: String,
    /// The link role filters see.
    #[key(default = "lan")]
    pub role: LinkRole,
}

/// A configured AF_PACKET port.
#[derive(Debug)]
pub struct AfPacketPort {
    settings: AfPacketSettings,
}

fn build(config: &StageConfig) -> BuildResult<Box<dyn Port>> {
    let settings: AfPacketSettings = config.parse()?;
    let mut errors: Vec<ConfigError> = Vec::new();
    if let Err(e) = netdev::ifname(&settings.interface) {
        errors.push(config.error("interface", e.to_string()));
    }
    if !(1..=MAX_BATCH).contains(&settings.batch) {
        errors.push(config.error("batch", format!("must be 1..={MAX_BATCH}")));
    }
    if let Err(e) = lanparty_core::control::validate_room_code(&settings.room) {
        errors.push(config.error("room", e));
    }
    if errors.is_empty() {
        Ok(Box::new(AfPacketPort { settings }))
    } else {
        Err(errors)
    }
}

/// Opens a raw packet socket bound to `ifindex`, with auxdata and without
/// our own outgoing frames; optionally promiscuous.
pub fn open_packet_socket(ifindex: i32, promiscuous: bool) -> io::Result<OwnedFd> {
    let protocol = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); result checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            i32::from(protocol),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    setsockopt(
        &fd,
        libc::SOL_PACKET,
        libc::PACKET_AUXDATA,
        &1 as &libc::c_int,
    )?;
    setsockopt(
        &fd,
        libc::SOL_PACKET,
        libc::PACKET_IGNORE_OUTGOING,
        &1 as &libc::c_int,
    )?;
    // Super-packets (GRO, a TSO peer) arrive with their segmentation info,
    // and every transmitted frame carries an (empty) virtio-net header.
    setsockopt(
        &fd,
        libc::SOL_PACKET,
        libc::PACKET_VNET_HDR,
        &1 as &libc::c_int,
    )?;
    let buffer: libc::c_int = 4 * 1024 * 1024;
    let _ = setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &buffer);
    let _ = setsockopt(&fd, libc::SOL_SOCKET, libc::SO_SNDBUF, &buffer);
    // SAFETY: sockaddr_ll is plain old data.
    let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = protocol;
    addr.sll_ifindex = ifindex;
    // SAFETY: binding to a valid sockaddr_ll of the size passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if promiscuous {
        // SAFETY: packet_mreq is plain old data.
        let mut mreq: libc::packet_mreq = unsafe { zeroed() };
        mreq.mr_ifindex = ifindex;
        mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)?;
    }
    Ok(fd)
}

/// The most frames per `recvmmsg`/`sendmmsg` call.
pub const MAX_BATCH: usize = 64;
/// Receive space per message: the virtio-net header and the largest
/// super-packet the kernel hands over (64 KiB), plus room for a VLAN tag.
const RAW_SLOT: usize = VNET_HDR_LEN + 65_536 + 64;
/// Control buffer per message: room for one `tpacket_auxdata` cmsg.
const CMSG_SPACE: usize = 64;
/// Bytes needed in front of a frame to put a stripped VLAN tag back.
const TAG_LEN: usize = 4;
/// The virtio-net header sent in front of every transmitted frame: no
/// offloads requested.
static ZERO_VNET_HDR: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];

/// Puts a VLAN tag back into a frame stored at `slot[at..at + len]`, using
/// the `TAG_LEN` bytes before it, and returns the tagged frame's range.
pub fn reinsert_vlan(
    slot: &mut [u8],
    at: usize,
    len: usize,
    tpid: u16,
    tci: u16,
) -> std::ops::Range<usize> {
    if len < 12 || at < TAG_LEN || slot.len() < at + len {
        return at..(at + len).min(slot.len());
    }
    let start = at - TAG_LEN;
    slot.copy_within(at..at + 12, start);
    slot[start + 12..start + 14].copy_from_slice(&tpid.to_be_bytes());
    slot[start + 14..start + 16].copy_from_slice(&tci.to_be_bytes());
    start..at + len
}

/// Receive counters of the port.
#[derive(Debug, Default)]
struct RxCounters {
    retagged: u64,
    truncated: u64,
    checksummed: u64,
    segmented: u64,
    unsegmentable: u64,
    oversize: u64,
}

/// The receive side: a persistent raw buffer that `recvmmsg` fills, and the
/// shared-chunk buffer frames are handed out from (no allocation per frame).
struct Receiver {
    raw: Vec<u8>,
    rx: RxBuffer,
    scratch: Vec<u8>,
    batch: usize,
    counters: RxCounters,
}

impl Receiver {
    fn new(batch: usize, max_frame: usize) -> Receiver {
        Receiver {
            raw: vec![0u8; RAW_SLOT * batch],
            rx: RxBuffer::new(max_frame, CHUNK),
            scratch: Vec::with_capacity(max_frame),
            batch,
            counters: RxCounters::default(),
        }
    }

    fn push(rx: &mut RxBuffer, frame: &[u8], out: &mut Vec<Bytes>) -> bool {
        let space = rx.space();
        if frame.len() > space.len() {
            return false;
        }
        space[..frame.len()].copy_from_slice(frame);
        out.push(rx.take(frame.len()));
        true
    }

    /// One `recvmmsg` call; frames (segmented, re-tagged, checksummed as
    /// needed) are appended to `out`. `WouldBlock` when nothing is ready.
    fn receive_batch(&mut self, fd: libc::c_int, out: &mut Vec<Bytes>) -> io::Result<usize> {
        let batch = self.batch;
        let mut control = [0u8; CMSG_SPACE * MAX_BATCH];
        // SAFETY: iovec/mmsghdr are plain old data; every pointer set below
        // points into buffers that outlive the call, with the lengths given.
        let n = unsafe {
            let mut iovecs: [libc::iovec; MAX_BATCH] = zeroed();
            let mut messages: [libc::mmsghdr; MAX_BATCH] = zeroed();
            for i in 0..batch {
                iovecs[i].iov_base = self.raw[i * RAW_SLOT..].as_mut_ptr().cast();
                iovecs[i].iov_len = RAW_SLOT - TAG_LEN;
                messages[i].msg_hdr.msg_iov = &mut iovecs[i];
                messages[i].msg_hdr.msg_iovlen = 1;
                messages[i].msg_hdr.msg_control = control[i * CMSG_SPACE..].as_mut_ptr().cast();
                messages[i].msg_hdr.msg_controllen = CMSG_SPACE as _;
            }
            let n = libc::recvmmsg(
                fd,
                messages.as_mut_ptr(),
                batch as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            );
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            let mut meta = [(0usize, 0i32, Aux::default()); MAX_BATCH];
            for i in 0..n {
                meta[i] = (
                    messages[i].msg_len as usize,
                    messages[i].msg_hdr.msg_flags,
                    auxdata(&messages[i].msg_hdr),
                );
            }
            (n, meta)
        };
        let (n, meta) = n;
        for (i, (len, flags, aux)) in meta.iter().copied().enumerate().take(n) {
            if flags & libc::MSG_TRUNC != 0 || len < VNET_HDR_LEN {
                self.counters.truncated += 1;
                continue;
            }
            let slot = &mut self.raw[i * RAW_SLOT..(i + 1) * RAW_SLOT];
            let vnet = VnetHeader::parse(slot).unwrap_or_default();
            let range = match aux.vlan {
                Some((tpid, tci)) => {
                    self.counters.retagged += 1;
                    reinsert_vlan(slot, VNET_HDR_LEN, len - VNET_HDR_LEN, tpid, tci)
                }
                None => VNET_HDR_LEN..len,
            };
            let frame = &mut slot[range];
            match vnet.gso_type & !gso_type::ECN {
                gso_type::NONE => {
                    if (vnet.flags & NEEDS_CSUM != 0 || aux.checksum_pending)
                        && checksum::complete_l4_checksum(Framing::Ethernet, frame)
                    {
                        self.counters.checksummed += 1;
                    }
                    if !Self::push(&mut self.rx, frame, out) {
                        self.counters.oversize += 1;
                    }
                }
                gso_type::TCPV4 | gso_type::TCPV6 | gso_type::UDP_L4 => {
                    let rx = &mut self.rx;
                    let mut oversize = 0;
                    let result = gso::segment(
                        Framing::Ethernet,
                        frame,
                        usize::from(vnet.gso_size),
                        &mut self.scratch,
                        &mut |segment| {
                            if !Self::push(rx, segment, out) {
                                oversize += 1;
                            }
                        },
                    );
                    self.counters.oversize += oversize;
                    match result {
                        Ok(_) => self.counters.segmented += 1,
                        Err(why) => {
                            tracing::debug!(
                                gso_size = vnet.gso_size,
                                len,
                                "cannot segment: {why}; dropped"
                            );
                            self.counters.unsegmentable += 1;
                        }
                    }
                }
                other => {
                    tracing::debug!(
                        gso_type = other,
                        gso_size = vnet.gso_size,
                        flags = vnet.flags,
                        len,
                        "super-packet of a kind that cannot be cut; dropped"
                    );
                    self.counters.unsegmentable += 1;
                }
            }
        }
        Ok(n)
    }
}

/// One `sendmmsg` call for `frames` (each behind an empty virtio-net
/// header); returns how many were sent.
fn send_batch(fd: libc::c_int, frames: &[Bytes]) -> io::Result<usize> {
    let count = frames.len().min(MAX_BATCH);
    // SAFETY: plain old data; the iovecs point at the static header and at
    // frames that outlive the call; the kernel only reads them.
    let n = unsafe {
        let mut iovecs: [[libc::iovec; 2]; MAX_BATCH] = zeroed();
        let mut messages: [libc::mmsghdr; MAX_BATCH] = zeroed();
        for (i, frame) in frames.iter().take(count).enumerate() {
            iovecs[i][0].iov_base = ZERO_VNET_HDR.as_ptr() as *mut libc::c_void;
            iovecs[i][0].iov_len = VNET_HDR_LEN;
            iovecs[i][1].iov_base = frame.as_ptr() as *mut libc::c_void;
            iovecs[i][1].iov_len = frame.len();
            messages[i].msg_hdr.msg_iov = iovecs[i].as_mut_ptr();
            messages[i].msg_hdr.msg_iovlen = 2;
        }
        libc::sendmmsg(
            fd,
            messages.as_mut_ptr(),
            count as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// What the kernel says about a received frame.
#[derive(Debug, Default, Clone, Copy)]
struct Aux {
    /// The VLAN tag it stripped: (TPID, TCI).
    vlan: Option<(u16, u16)>,
    /// The L4 checksum was left for offload and is not filled in.
    checksum_pending: bool,
}

/// The message's auxdata.
fn auxdata(header: &libc::msghdr) -> Aux {
    // SAFETY: walking the control buffer the kernel filled, with the CMSG
    // macros that bound every access by msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_PACKET && (*cmsg).cmsg_type == libc::PACKET_AUXDATA {
                let aux: libc::tpacket_auxdata =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                let vlan = (aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0).then(|| {
                    let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                        aux.tp_vlan_tpid
                    } else {
                        ethertype::VLAN
                    };
                    (tpid, aux.tp_vlan_tci)
                });
                return Aux {
                    vlan,
                    checksum_pending: aux.tp_status & libc::TP_STATUS_CSUMNOTREADY != 0,
                };
            }
            cmsg = libc::CMSG_NXTHDR(header, cmsg);
        }
        Aux::default()
    }
}

impl AfPacketPort {
    fn fail(&self, what: impl std::fmt::Display) -> PortError {
        PortError::new(
            &self.settings.interface,
            format!("interface {}: {what}", self.settings.interface),
        )
    }

    async fn run(self, ctx: PortContext) -> Result<(), PortError> {
        let name = self.settings.interface.clone();
        let ifindex =
            netdev::index(&name).map_err(|e| self.fail(format!("no interface `{name}`: {e}")))?;
        let mac = netdev::mac(&name).map_err(|e| self.fail(format!("cannot read the MAC: {e}")))?;
        let mtu = netdev::mtu(&name).unwrap_or(1500);
        let fd = open_packet_socket(ifindex, self.settings.promiscuous).map_err(|e| {
            self.fail(format!(
                "cannot open an AF_PACKET socket: {e} (needs root or CAP_NET_RAW)"
            ))
        })?;
        // SAFETY: the OwnedFd stays owned by the AsyncFd for its lifetime.
        let fd =
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }
                .map_err(|e| self.fail(format!("cannot register the socket: {e:?}")))?;
        let max_frame = usize::from(mtu.max(1500)) + 14 + 2 * TAG_LEN;
        let mut receiver = Receiver::new(self.settings.batch, max_frame);
        let mut link = ctx.attach(
            &self.settings.room,
            LinkSpec {
                name: name.clone(),
                role: self.settings.role,
                macs: vec![mac],
                mtu: Some(mtu),
                sink: None,
            },
        );
        tracing::info!(interface = %name, %mac, mtu, promiscuous = self.settings.promiscuous, batch = self.settings.batch, "bridging the LAN");
        let result = self
            .pump(&fd, &mut receiver, &mut link, ctx.shutdown())
            .await;
        let c = &receiver.counters;
        tracing::info!(
            interface = %name, retagged = c.retagged, checksummed = c.checksummed, segmented = c.segmented,
            unsegmentable = c.unsegmentable, truncated = c.truncated, oversize = c.oversize, "AF_PACKET port stopped"
        );
        result
    }

    async fn pump(
        &self,
        fd: &AsyncFd<OwnedFd>,
        receiver: &mut Receiver,
        link: &mut LinkHandle,
        mut shutdown: ShutdownSignal,
    ) -> Result<(), PortError> {
        let raw = fd.get_ref().as_raw_fd();
        let mut received = Vec::with_capacity(MAX_BATCH * 4);
        let mut to_send = Vec::with_capacity(self.settings.batch);
        let mut send_errors: u64 = 0;
        loop {
            tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                ready = fd.readable() => {
                    let mut guard = ready.map_err(|e| self.fail(format!("poll failed: {e}")))?;
                    // Drain a few batches per wake-up.
                    let mut drained = false;
                    for _ in 0..4 {
                        match receiver.receive_batch(raw, &mut received) {
                            Ok(_) => {
                                for frame in received.drain(..) {
                                    link.send(frame);
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENETDOWN) => {
                                guard.clear_ready();
                                drained = true;
                                break;
                            }
                            Err(e) => return Err(self.fail(format!("receive failed: {e}"))),
                        }
                    }
                    drop(guard);
                    give_way(drained).await;
                }
                n = link.recv_many(&mut to_send, self.settings.batch) => {
                    if n == 0 {
                        return Err(self.fail("the room closed"));
                    }
                    let mut sent = 0;
                    while sent < to_send.len() {
                        match send_batch(raw, &to_send[sent..]) {
                            Ok(0) => break,
                            Ok(k) => sent += k,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                if let Ok(mut guard) = fd.writable().await {
                                    guard.clear_ready();
                                }
                            }
                            Err(e) => {
                                // Skip the frame the kernel refused (e.g. larger than the MTU).
                                send_errors += 1;
                                if send_errors.is_power_of_two() {
                                    tracing::warn!(interface = %self.settings.interface, errors = send_errors, "send to the LAN failed: {e}");
                                }
                                sent += 1;
                            }
                        }
                    }
                    to_send.clear();
                }
            }
        }
    }
}

lanparty_core::impl_port!(AfPacketPort);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_reinsertion_in_place() {
        let frame: Vec<u8> = (0u8..40).collect();
        let mut slot = vec![0u8; 64];
        slot[10..50].copy_from_slice(&frame);
        let range = reinsert_vlan(&mut slot, 10, 40, 0x8100, 0x200a);
        let out = &slot[range];
        assert_eq!(out.len(), 44);
        assert_eq!(&out[..12], &frame[..12]);
        assert_eq!(&out[12..16], &[0x81, 0x00, 0x20, 0x0a]);
        assert_eq!(&out[16..], &frame[12..]);
        // Too short to carry MACs, or no room in front: left alone.
        let mut slot = vec![0u8; 16];
        assert_eq!(reinsert_vlan(&mut slot, 4, 8, 0x8100, 1), 4..12);
        assert_eq!(reinsert_vlan(&mut slot, 2, 14, 0x8100, 1), 2..16);
    }
}

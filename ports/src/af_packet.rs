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
//! - Batched I/O: `recvmmsg` into one buffer per batch (one allocation per
//!   batch, not per frame) and `sendmmsg` for what the room sends.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use bytes::{Bytes, BytesMut};
use lanparty_core::config::{ConfigError, StageConfig};
use lanparty_core::registry::{BuildResult, KeyDoc, StageBuild, StageRegistration};
use lanparty_core::runtime::{DEFAULT_ROOM, LinkHandle, LinkSpec, PortContext, ShutdownSignal};
use lanparty_core::stage::{BoxFuture, LinkRole, Port, PortError};
use lanparty_core::wire::ethertype;
use serde::Deserialize;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::linux::{checksum, netdev};

/// `af-packet` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AfPacketSettings {
    /// `interface`: the wired LAN interface, e.g. `eth0`.
    pub interface: String,
    /// `promiscuous`: receive frames for every MAC (needed to bridge).
    /// Default true.
    #[serde(default = "yes")]
    pub promiscuous: bool,
    /// `batch`: frames per `recvmmsg`/`sendmmsg` call. Default 32.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// `room`: the room the LAN joins. Default `default`.
    #[serde(default = "default_room")]
    pub room: String,
    /// `role`: the link role. Default `lan`.
    #[serde(default = "default_role")]
    pub role: LinkRole,
}

fn yes() -> bool {
    true
}
fn default_batch() -> usize {
    32
}
fn default_room() -> String {
    DEFAULT_ROOM.into()
}
fn default_role() -> LinkRole {
    LinkRole::Lan
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
    if !(1..=1024).contains(&settings.batch) {
        errors.push(config.error("batch", "must be 1..=1024"));
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

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the size passed; result checked.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
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

/// Bytes reserved in front of each received frame so a stripped VLAN tag
/// can be put back in place without copying the payload.
const TAG_ROOM: usize = 4;
/// Control buffer per message: room for one `tpacket_auxdata` cmsg.
const CMSG_SPACE: usize = 64;

/// Puts a VLAN tag back into a frame read at `slot[TAG_ROOM..TAG_ROOM+len]`
/// and returns the frame's range within `slot`.
pub fn reinsert_vlan(slot: &mut [u8], len: usize, tpid: u16, tci: u16) -> std::ops::Range<usize> {
    if len < 12 || slot.len() < TAG_ROOM + len {
        return TAG_ROOM..TAG_ROOM + len.min(slot.len().saturating_sub(TAG_ROOM));
    }
    slot.copy_within(TAG_ROOM..TAG_ROOM + 12, 0);
    slot[12..14].copy_from_slice(&tpid.to_be_bytes());
    slot[14..16].copy_from_slice(&tci.to_be_bytes());
    0..TAG_ROOM + len
}

struct Socket {
    fd: AsyncFd<OwnedFd>,
    slot: usize,
    batch: usize,
    /// Frames whose tag was put back.
    retagged: std::sync::atomic::AtomicU64,
    /// Frames cut short by the receive buffer.
    truncated: std::sync::atomic::AtomicU64,
    /// Frames whose pending L4 checksum was computed.
    checksummed: std::sync::atomic::AtomicU64,
}

impl Socket {
    /// One `recvmmsg` call: up to `batch` frames, each a slice of one
    /// buffer. Returns `WouldBlock` when nothing is ready.
    fn receive_batch(&self, out: &mut Vec<Bytes>) -> io::Result<usize> {
        let mut buf = BytesMut::zeroed(self.slot * self.batch);
        let mut control = vec![0u8; CMSG_SPACE * self.batch];
        // SAFETY: iovec/mmsghdr are plain old data; filled below.
        let mut iovecs: Vec<libc::iovec> = (0..self.batch).map(|_| unsafe { zeroed() }).collect();
        let mut messages: Vec<libc::mmsghdr> =
            (0..self.batch).map(|_| unsafe { zeroed() }).collect();
        for i in 0..self.batch {
            iovecs[i].iov_base = buf[i * self.slot + TAG_ROOM..].as_mut_ptr().cast();
            iovecs[i].iov_len = self.slot - TAG_ROOM;
            messages[i].msg_hdr.msg_iov = &mut iovecs[i];
            messages[i].msg_hdr.msg_iovlen = 1;
            messages[i].msg_hdr.msg_control = control[i * CMSG_SPACE..].as_mut_ptr().cast();
            messages[i].msg_hdr.msg_controllen = CMSG_SPACE as _;
        }
        // SAFETY: every pointer refers to buffers that outlive the call,
        // with the lengths given; result checked.
        let n = unsafe {
            libc::recvmmsg(
                self.fd.get_ref().as_raw_fd(),
                messages.as_mut_ptr(),
                self.batch as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        let mut ranges = Vec::with_capacity(n);
        for (i, message) in messages.iter().enumerate().take(n) {
            let len = message.msg_len as usize;
            if message.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.truncated
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            let aux = auxdata(&message.msg_hdr);
            let slot = &mut buf[i * self.slot..(i + 1) * self.slot];
            let range = match aux.vlan {
                Some((tpid, tci)) => {
                    self.retagged
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    reinsert_vlan(slot, len, tpid, tci)
                }
                None => TAG_ROOM..TAG_ROOM + len,
            };
            if aux.checksum_pending && checksum::complete_l4_checksum(&mut slot[range.clone()]) {
                self.checksummed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            ranges.push((i * self.slot + range.start, i * self.slot + range.end));
        }
        let whole = buf.freeze();
        out.extend(
            ranges
                .into_iter()
                .map(|(start, end)| whole.slice(start..end)),
        );
        Ok(n)
    }

    /// One `sendmmsg` call for `frames`; returns how many were sent.
    fn send_batch(&self, frames: &[Bytes]) -> io::Result<usize> {
        // SAFETY: plain old data; filled below.
        let mut iovecs: Vec<libc::iovec> = frames.iter().map(|_| unsafe { zeroed() }).collect();
        let mut messages: Vec<libc::mmsghdr> = frames.iter().map(|_| unsafe { zeroed() }).collect();
        for (i, frame) in frames.iter().enumerate() {
            iovecs[i].iov_base = frame.as_ptr() as *mut libc::c_void;
            iovecs[i].iov_len = frame.len();
            messages[i].msg_hdr.msg_iov = &mut iovecs[i];
            messages[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the iovecs point at frames that outlive the call; the
        // kernel only reads them.
        let n = unsafe {
            libc::sendmmsg(
                self.fd.get_ref().as_raw_fd(),
                messages.as_mut_ptr(),
                frames.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
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
        PortError::new(&self.settings.interface, what.to_string())
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
        let slot = usize::from(mtu.max(1500)) + 14 + 8 + TAG_ROOM;
        let socket = Socket {
            fd,
            slot,
            batch: self.settings.batch,
            retagged: Default::default(),
            truncated: Default::default(),
            checksummed: Default::default(),
        };
        let mut link = ctx.attach(
            &self.settings.room,
            LinkSpec {
                name: name.clone(),
                role: self.settings.role,
                macs: vec![mac],
                mtu: Some(mtu),
            },
        );
        tracing::info!(interface = %name, %mac, mtu, promiscuous = self.settings.promiscuous, batch = self.settings.batch, "bridging the LAN");
        let result = self.pump(&socket, &mut link, ctx.shutdown()).await;
        tracing::info!(interface = %name, retagged = socket.retagged.load(std::sync::atomic::Ordering::Relaxed), truncated = socket.truncated.load(std::sync::atomic::Ordering::Relaxed), checksummed = socket.checksummed.load(std::sync::atomic::Ordering::Relaxed), "AF_PACKET port stopped");
        result
    }

    async fn pump(
        &self,
        socket: &Socket,
        link: &mut LinkHandle,
        mut shutdown: ShutdownSignal,
    ) -> Result<(), PortError> {
        let mut received = Vec::with_capacity(self.settings.batch);
        let mut to_send = Vec::with_capacity(self.settings.batch);
        let mut send_errors: u64 = 0;
        loop {
            tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                ready = socket.fd.readable() => {
                    let mut guard = ready.map_err(|e| self.fail(format!("poll failed: {e}")))?;
                    // Drain a few batches per wake-up.
                    for _ in 0..4 {
                        match socket.receive_batch(&mut received) {
                            Ok(_) => {
                                for frame in received.drain(..) {
                                    link.send(frame);
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                guard.clear_ready();
                                break;
                            }
                            Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => {
                                guard.clear_ready();
                                break;
                            }
                            Err(e) => return Err(self.fail(format!("receive failed: {e}"))),
                        }
                    }
                }
                n = link.recv_many(&mut to_send, self.settings.batch) => {
                    if n == 0 {
                        return Err(self.fail("the room closed"));
                    }
                    let mut sent = 0;
                    while sent < to_send.len() {
                        match socket.send_batch(&to_send[sent..]) {
                            Ok(0) => break,
                            Ok(k) => sent += k,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                if let Ok(mut guard) = socket.fd.writable().await {
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

impl Port for AfPacketPort {
    fn run(self: Box<Self>, ctx: PortContext) -> BoxFuture<'static, Result<(), PortError>> {
        Box::pin((*self).run(ctx))
    }
}

lanparty_core::inventory::submit! {
    StageRegistration {
        name: "af-packet",
        summary: "a wired LAN interface through AF_PACKET: promiscuous, VLAN tags restored, never reads back its own frames, batched I/O",
        keys: &[
            KeyDoc { name: "interface", ty: "string", default: "required", doc: "the LAN interface, e.g. eth0" },
            KeyDoc { name: "promiscuous", ty: "bool", default: "true", doc: "receive frames for every MAC (needed to bridge); dropped again when the port stops" },
            KeyDoc { name: "batch", ty: "integer", default: "32", doc: "frames per recvmmsg/sendmmsg call" },
            KeyDoc { name: "room", ty: "string", default: "default", doc: "the room the LAN joins" },
            KeyDoc { name: "role", ty: "client | gateway | lan | host", default: "lan", doc: "the link role filters see" },
        ],
        example: "ports:\n  lan: { type: af-packet, interface: eth0 }",
        build: StageBuild::Port { build },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_reinsertion_in_place() {
        let frame: Vec<u8> = (0u8..40).collect();
        let mut slot = vec![0u8; 64];
        slot[TAG_ROOM..TAG_ROOM + 40].copy_from_slice(&frame);
        let range = reinsert_vlan(&mut slot, 40, 0x8100, 0x200a);
        let out = &slot[range];
        assert_eq!(out.len(), 44);
        assert_eq!(&out[..12], &frame[..12]);
        assert_eq!(&out[12..16], &[0x81, 0x00, 0x20, 0x0a]);
        assert_eq!(&out[16..], &frame[12..]);
        // Too short to carry MACs: left alone.
        let mut slot = vec![0u8; 16];
        assert_eq!(
            reinsert_vlan(&mut slot, 8, 0x8100, 1),
            TAG_ROOM..TAG_ROOM + 8
        );
    }
}

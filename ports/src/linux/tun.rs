//! TAP and TUN character devices (`/dev/net/tun`), shared by the `tap` and
//! `tun-l2` ports: opening a device with one queue or several
//! (`IFF_MULTI_QUEUE`), and reading several queues in turn so that a flow
//! alone in its ring is served within one quantum of each busy ring.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::task::{Context, Poll};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::netdev;

/// Frames (packets) read per wake-up before giving the other direction a
/// turn.
pub const RX_BATCH: usize = 64;
/// Frames read from one queue before the next queue's turn: a flow alone
/// in its ring waits for at most this many frames from each other ring.
pub const QUANTUM: usize = 8;
/// The most queues a port opens.
pub const MAX_QUEUES: u16 = 64;

/// What kind of device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunMode {
    /// Ethernet frames (TAP).
    Tap,
    /// IP packets (TUN).
    Tun,
}

impl TunMode {
    /// `TAP` or `TUN`, for messages.
    pub fn kind(self) -> &'static str {
        match self {
            TunMode::Tap => "TAP",
            TunMode::Tun => "TUN",
        }
    }
}

/// Opens (creating if needed) the TAP or TUN device `name`, non-blocking,
/// without packet info headers; returns the fd. With `vnet_hdr`, every
/// read and write carries a virtio-net header (`IFF_VNET_HDR`, 10 bytes),
/// which lets a write be a TCP super-packet ([`super::gro`]).
pub fn open_tun(name: &str, mode: TunMode, vnet_hdr: bool) -> io::Result<OwnedFd> {
    open_queue(name, mode, vnet_hdr, false)
}

/// Opens `queues` queues of the multi-queue device `name` (`IFF_MULTI_QUEUE`;
/// created if needed), each an fd of its own with its own ring: the kernel
/// puts each flow's packets on one queue, the one through which that flow's
/// packets in the other direction were last written (a flow nobody wrote
/// yet goes by its hash). Fails, closing what it opened, if the device
/// exists as a single-queue one.
pub fn open_tun_queues(
    name: &str,
    mode: TunMode,
    vnet_hdr: bool,
    queues: usize,
) -> io::Result<Vec<OwnedFd>> {
    (0..queues)
        .map(|_| open_queue(name, mode, vnet_hdr, true))
        .collect()
}

/// Opens `queues` queues of `name` (the `queues` setting of a `tap` or
/// `tun-l2` port): multi-queue when more than one, and one queue, logged,
/// when the device exists as a single-queue one.
pub fn open_rings(
    name: &str,
    mode: TunMode,
    vnet_hdr: bool,
    queues: usize,
) -> io::Result<Vec<OwnedFd>> {
    if queues > 1 {
        match open_tun_queues(name, mode, vnet_hdr, queues) {
            Ok(fds) => return Ok(fds),
            Err(e) => {
                let kind = mode.kind();
                tracing::info!(device = %name, "no {queues} queues on this {kind} ({e}): one queue, one ring for every flow");
            }
        }
    }
    Ok(vec![open_tun(name, mode, vnet_hdr)?])
}

/// Checks a port's `queues` setting.
pub fn check_queues(queues: u16) -> Result<(), String> {
    if (1..=MAX_QUEUES).contains(&queues) {
        Ok(())
    } else {
        Err(format!("must be 1 to {MAX_QUEUES} (8 by default)"))
    }
}

/// The queue a flow's packets are written through: the one its hash picks
/// (not computed when there is one queue).
pub fn ring_of(devices: &[Device], hash: impl FnOnce() -> u64) -> &Device {
    match devices.len() {
        1 => &devices[0],
        count => &devices[(hash() % count as u64) as usize],
    }
}

fn open_queue(name: &str, mode: TunMode, vnet_hdr: bool, multi: bool) -> io::Result<OwnedFd> {
    let flag = match mode {
        TunMode::Tap => libc::IFF_TAP,
        TunMode::Tun => libc::IFF_TUN,
    };
    let kind = mode.kind();
    // SAFETY: plain open(2) of a fixed path; the result is checked.
    let fd = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!(
                "cannot open /dev/net/tun: {e} (is the tun module loaded, and are we root or CAP_NET_ADMIN?)"
            ),
        ));
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_name = netdev::ifname(name)?;
    let vnet = if vnet_hdr { libc::IFF_VNET_HDR } else { 0 };
    let multi = if multi { libc::IFF_MULTI_QUEUE } else { 0 };
    req.ifr_ifru.ifru_flags = (flag | libc::IFF_NO_PI | vnet | multi) as libc::c_short;
    // SAFETY: TUNSETIFF takes a pointer to an ifreq; the result is checked.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETIFF as _,
            &mut req as *mut libc::ifreq,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!(
                "cannot create {kind} device `{name}`: {e} (another kind of device by that name may exist)"
            ),
        ));
    }
    Ok(fd)
}

/// `TUN_F_USO4` and `TUN_F_USO6` (Linux 6.2): UDP segmentation offload.
const TUN_F_USO: libc::c_uint = 0x20 | 0x40;

/// Lets the kernel hand the device's reader TCP super-packets of up to
/// 64 kB with a pending checksum (`TUNSETOFFLOAD`: checksum, TSO over IPv4
/// and IPv6) instead of cutting and summing every segment itself, and UDP
/// super-packets (USO) where the kernel has it; `fd` must have been opened
/// with virtio-net headers. The setting is the device's, so one of its
/// queues is enough. True when USO is on too.
pub fn enable_tso(fd: &OwnedFd) -> io::Result<bool> {
    let tso = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
    if set_offload(fd, tso | TUN_F_USO).is_ok() {
        return Ok(true);
    }
    set_offload(fd, tso).map(|()| false)
}

fn set_offload(fd: &OwnedFd, features: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes the feature bits by value; the result
    // is checked.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETOFFLOAD as _,
            libc::c_ulong::from(features),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An open device registered with the reactor.
#[derive(Debug)]
pub struct Device {
    /// The fd.
    pub fd: AsyncFd<OwnedFd>,
    /// The device name.
    pub name: String,
}

impl Device {
    /// Registers `fd` (from [`open_tun`]) with the reactor.
    pub fn new(fd: OwnedFd, name: &str) -> io::Result<Device> {
        // SAFETY: the OwnedFd stays open and owned by the AsyncFd for its
        // whole lifetime.
        let fd = unsafe {
            AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE)
        }?;
        Ok(Device {
            fd,
            name: name.to_string(),
        })
    }

    /// Registers every queue's fd (from [`open_tun`] / [`open_tun_queues`])
    /// with the reactor; the error says so.
    pub fn register_all(fds: Vec<OwnedFd>, name: &str) -> Result<Vec<Device>, String> {
        fds.into_iter()
            .map(|fd| Device::new(fd, name))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cannot register the device with the reactor: {e:?}"))
    }

    /// One non-blocking read.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: reading into a valid, exclusively borrowed buffer.
        let n = unsafe {
            libc::read(
                self.fd.get_ref().as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// One non-blocking write.
    pub fn write(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: writing from a valid buffer.
        let n = unsafe {
            libc::write(
                self.fd.get_ref().as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// One non-blocking write of `parts` (at most two: a header and a
    /// frame) as one frame (`writev`).
    pub fn write_parts(&self, parts: &[&[u8]]) -> io::Result<usize> {
        let iov: [libc::iovec; 2] = std::array::from_fn(|i| match parts.get(i) {
            Some(part) => libc::iovec {
                iov_base: part.as_ptr() as *mut libc::c_void,
                iov_len: part.len(),
            },
            None => libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
        });
        let count = parts.len().min(iov.len());
        // SAFETY: the iovecs point into live, borrowed buffers; writev only
        // reads them.
        let n = unsafe { libc::writev(self.fd.get_ref().as_raw_fd(), iov.as_ptr(), count as i32) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Writes one frame or packet, waiting for room.
    pub async fn write_frame(&self, frame: &[u8]) -> io::Result<()> {
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|_| self.write(frame)) {
                Ok(result) => return result.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Ready once some queue of the device is readable (its readiness is
/// kept for [`read_round`]); registers for every queue's wake-up otherwise.
pub fn any_readable(devices: &[Device], cx: &mut Context<'_>) -> Poll<()> {
    for device in devices {
        if device.fd.poll_read_ready(cx).is_ready() {
            return Poll::Ready(());
        }
    }
    Poll::Pending
}

/// One round over the device's queues, starting after the one that went
/// first last time: passes over the readable queues taking up to
/// [`QUANTUM`] frames from each, until [`RX_BATCH`] frames are read or
/// every queue is empty, each read into `rx` and handed to `frame` with
/// its length (`frame` says how many frames it made of it: one, or the
/// segments of a TSO super-packet). A lone flow's ring is served in the first pass; a
/// single busy ring still gives a full batch per wake-up. True when every
/// queue is empty now (its readiness cleared, so the next wait sleeps
/// until the kernel adds more).
pub fn read_round(
    devices: &[Device],
    next: &mut usize,
    rx: &mut super::rxbuf::RxBuffer,
    frame: &mut dyn FnMut(&mut super::rxbuf::RxBuffer, usize) -> usize,
) -> io::Result<bool> {
    let count = devices.len();
    let first = *next % count;
    *next = first + 1;
    // Readiness only, no wake-up: the next wait registers the task again.
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut budget = RX_BATCH;
    // Queues to visit in this pass: all of them at first, then those a
    // quantum stopped (at most 64 queues: one bit each).
    let mut visit: u64 = if count >= 64 {
        u64::MAX
    } else {
        (1 << count) - 1
    };
    while visit != 0 {
        let mut again = 0u64;
        for i in (first..count).chain(0..first) {
            if visit & (1 << i) == 0 {
                continue;
            }
            let mut guard = match devices[i].fd.poll_read_ready(&mut cx) {
                Poll::Ready(guard) => guard?,
                Poll::Pending => continue,
            };
            let mut quantum = QUANTUM;
            loop {
                if budget == 0 {
                    return Ok(false);
                }
                if quantum == 0 {
                    again |= 1 << i;
                    break;
                }
                match devices[i].read(rx.space()) {
                    Ok(0) => break,
                    Ok(n) => {
                        let made = frame(rx, n).max(1);
                        quantum = quantum.saturating_sub(made);
                        budget = budget.saturating_sub(made);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        guard.clear_ready();
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        visit = again;
    }
    Ok(true)
}

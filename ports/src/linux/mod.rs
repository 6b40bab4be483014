//! Linux network device plumbing shared by the TAP, TUN and AF_PACKET ports.

pub mod checksum;
pub mod gro;
pub mod gso;
pub mod netdev;
pub mod offload;
pub mod rxbuf;
pub mod tun;

use std::io;
use std::os::fd::AsRawFd;

/// Sets socket option `name` at `level` on `fd` to `value`.
pub fn setsockopt<T>(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
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

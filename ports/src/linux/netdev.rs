//! Network device settings through ioctls on an AF_INET socket: MAC, MTU,
//! up/down, promiscuous mode, IPv4 and IPv6 addresses, interface index.
//! No external tools are needed.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use lanparty_core::wire::MacAddr;

/// A device name as the kernel takes it (at most 15 bytes).
pub fn ifname(name: &str) -> io::Result<[libc::c_char; libc::IFNAMSIZ]> {
    if name.is_empty()
        || name.len() >= libc::IFNAMSIZ
        || name
            .bytes()
            .any(|b| b == 0 || b == b'/' || b.is_ascii_whitespace())
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "`{name}` is not a valid interface name (1 to 15 bytes, no '/', spaces or NUL)"
            ),
        ));
    }
    let mut out = [0 as libc::c_char; libc::IFNAMSIZ];
    for (dst, src) in out.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(out)
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_name = ifname(name)?;
    Ok(req)
}

fn socket(family: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ioctl<T>(fd: &OwnedFd, request: libc::c_ulong, arg: &mut T) -> io::Result<()> {
    // SAFETY: `arg` is a valid, exclusively borrowed struct of the type the
    // request expects (callers pair them), and the result is checked.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg as *mut T) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets the device's MAC address.
pub fn set_mac(name: &str, mac: MacAddr) -> io::Result<()> {
    let fd = socket(libc::AF_INET)?;
    let mut req = ifreq(name)?;
    // SAFETY: writing the hwaddr member of the request union.
    unsafe {
        req.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
        for (dst, src) in req.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac.0) {
            *dst = src as libc::c_char;
        }
    }
    ioctl(&fd, libc::SIOCSIFHWADDR, &mut req)
}

/// Reads the device's MAC address.
pub fn mac(name: &str) -> io::Result<MacAddr> {
    let fd = socket(libc::AF_INET)?;
    let mut req = ifreq(name)?;
    ioctl(&fd, libc::SIOCGIFHWADDR, &mut req)?;
    let mut mac = [0u8; 6];
    // SAFETY: the kernel filled the hwaddr member.
    unsafe {
        for (dst, src) in mac.iter_mut().zip(req.ifr_ifru.ifru_hwaddr.sa_data) {
            *dst = src as u8;
        }
    }
    Ok(MacAddr(mac))
}

/// Sets the device's MTU.
pub fn set_mtu(name: &str, mtu: u16) -> io::Result<()> {
    let fd = socket(libc::AF_INET)?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_mtu = libc::c_int::from(mtu);
    ioctl(&fd, libc::SIOCSIFMTU, &mut req)
}

/// Reads the device's MTU.
pub fn mtu(name: &str) -> io::Result<u16> {
    let fd = socket(libc::AF_INET)?;
    let mut req = ifreq(name)?;
    ioctl(&fd, libc::SIOCGIFMTU, &mut req)?;
    // SAFETY: the kernel filled the mtu member.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Ok(u16::try_from(mtu).unwrap_or(u16::MAX))
}

/// Reads the device's flags.
pub fn flags(name: &str) -> io::Result<libc::c_short> {
    let fd = socket(libc::AF_INET)?;
    let mut req = ifreq(name)?;
    ioctl(&fd, libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: the kernel filled the flags member.
    Ok(unsafe { req.ifr_ifru.ifru_flags })
}

/// Sets or clears flag bits (`IFF_UP`, `IFF_PROMISC`, …); returns the
/// previous flags.
pub fn update_flags(
    name: &str,
    set: libc::c_short,
    clear: libc::c_short,
) -> io::Result<libc::c_short> {
    let fd = socket(libc::AF_INET)?;
    let mut req = ifreq(name)?;
    ioctl(&fd, libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: reading and writing the flags member filled just above.
    let old = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = (old | set) & !clear;
    ioctl(&fd, libc::SIOCSIFFLAGS, &mut req)?;
    Ok(old)
}

/// The device's interface index.
pub fn index(name: &str) -> io::Result<i32> {
    let fd = socket(libc::AF_INET)?;
    let mut req = ifreq(name)?;
    ioctl(&fd, libc::SIOCGIFINDEX, &mut req)?;
    // SAFETY: the kernel filled the ifindex member.
    Ok(unsafe { req.ifr_ifru.ifru_ifindex })
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Adds an address with a prefix length to the device.
pub fn add_address(name: &str, addr: IpAddr, prefix: u8) -> io::Result<()> {
    match addr {
        IpAddr::V4(v4) => {
            if prefix > 32 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "IPv4 prefix longer than 32",
                ));
            }
            let fd = socket(libc::AF_INET)?;
            let mut req = ifreq(name)?;
            req.ifr_ifru.ifru_addr = sockaddr_in(v4);
            ioctl(&fd, libc::SIOCSIFADDR, &mut req)?;
            let mut req = ifreq(name)?;
            req.ifr_ifru.ifru_netmask = sockaddr_in(crate::inet::ipv4_netmask(prefix));
            ioctl(&fd, libc::SIOCSIFNETMASK, &mut req)
        }
        IpAddr::V6(v6) => add_ipv6(name, v6, prefix),
    }
}

/// Sets the MTU of an adapter that follows its room's MTU, logging the
/// outcome (a failure is not fatal: the old MTU still works, only worse).
pub fn follow_room_mtu(name: &str, mtu: u16) {
    match set_mtu(name, mtu) {
        Ok(()) => tracing::info!(device = %name, mtu, "MTU follows the room"),
        Err(e) => tracing::warn!(device = %name, mtu, "cannot set MTU: {e}"),
    }
}

/// Removes the device's IPv4 address (sets it to 0.0.0.0).
pub fn clear_ipv4(name: &str) -> io::Result<()> {
    let fd = socket(libc::AF_INET)?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_addr = sockaddr_in(Ipv4Addr::UNSPECIFIED);
    ioctl(&fd, libc::SIOCSIFADDR, &mut req)
}

fn add_ipv6(name: &str, addr: Ipv6Addr, prefix: u8) -> io::Result<()> {
    if prefix > 128 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "IPv6 prefix longer than 128",
        ));
    }
    let ifindex = index(name)?;
    let fd = socket(libc::AF_INET6)?;
    let mut req = libc::in6_ifreq {
        ifr6_addr: libc::in6_addr {
            s6_addr: addr.octets(),
        },
        ifr6_prefixlen: u32::from(prefix),
        ifr6_ifindex: ifindex,
    };
    ioctl(&fd, libc::SIOCSIFADDR, &mut req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(ifname("lp0").is_ok());
        assert!(ifname("").is_err());
        assert!(ifname("a-name-far-too-long").is_err());
        assert!(ifname("a/b").is_err());
    }
}

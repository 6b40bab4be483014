//! The relay's socket group: one UDP socket per loop, all on one port
//! (`SO_REUSEPORT`), and the rule that sends each datagram to the loop
//! that holds its connection.
//!
//! A relay on a runtime with several threads runs one loop per thread
//! ([`crate::server`]), each with its own socket and `quinn_proto`
//! endpoint. The kernel would spread datagrams over the group by their
//! address hash, which breaks when a player's NAT gives it a new port: its
//! packets would land on a loop that does not know the connection. So each
//! loop makes connection IDs whose first byte is its index modulo the
//! number of loops ([`loop_byte`]), and a classic BPF program on the group
//! picks the socket by the destination connection ID's first byte: byte 1
//! of a short-header packet, byte 6 of a long-header one (after flags,
//! version and the ID's length). A client's first Initial carries an ID
//! the client chose: the program still sends it, and every retransmission
//! of it, to one loop, which answers with an ID of its own.

use std::net::{SocketAddr, UdpSocket};

/// The first byte of a connection ID made by loop `index` of `loops`, from
/// a random byte: `index` modulo `loops`, the rest random.
pub fn loop_byte(random: u8, index: usize, loops: usize) -> u8 {
    let loops = loops.clamp(1, 256);
    let spans = 256 / loops;
    let slot = usize::from(random) % spans;
    (slot * loops + index % loops) as u8
}

/// Binds `loops` non-blocking UDP sockets to `addr` as one `SO_REUSEPORT`
/// group steered by connection ID (Linux), each with `buffer`-byte kernel
/// buffers; the first one's port is used by the rest (so port 0 works).
/// One loop: a plain socket.
pub fn bind_group(
    addr: SocketAddr,
    buffer: usize,
    loops: usize,
) -> std::io::Result<Vec<UdpSocket>> {
    if loops <= 1 {
        return Ok(vec![crate::net::bind_udp(addr, buffer)?]);
    }
    group::bind_group(addr, buffer, loops)
}

#[cfg(target_os = "linux")]
mod group {
    use std::io;
    use std::net::{SocketAddr, UdpSocket};
    use std::os::fd::AsRawFd;

    /// See [`super::bind_group`].
    pub fn bind_group(addr: SocketAddr, buffer: usize, loops: usize) -> io::Result<Vec<UdpSocket>> {
        let mut sockets: Vec<UdpSocket> = Vec::with_capacity(loops);
        let mut addr = addr;
        for _ in 0..loops {
            let socket = crate::net::bind_udp_with(addr, buffer, |s| {
                set_int(s.as_raw_fd(), libc::SO_REUSEPORT, 1)
            })?;
            addr = socket.local_addr()?;
            sockets.push(socket);
        }
        attach_steering(&sockets[0], loops)?;
        Ok(sockets)
    }

    fn set_int(fd: i32, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
        // SAFETY: setsockopt with a pointer to a live c_int and its size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The group's program (`SO_ATTACH_REUSEPORT_CBPF`): the socket
    /// index is the destination connection ID's first byte modulo
    /// `loops` (byte 1 of a short-header packet, byte 6 of a long-header
    /// one: the module docs); a datagram too short to hold it
    /// aborts the program, which picks socket 0.
    fn attach_steering(socket: &UdpSocket, loops: usize) -> io::Result<()> {
        const LD_B_ABS: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
        const JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
        const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
        const MOD: u16 = (libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K) as u16;
        const RET_A: u16 = (libc::BPF_RET | libc::BPF_A) as u16;
        let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
        // The kernel hands the program the UDP payload.
        let mut program = [
            op(LD_B_ABS, 0, 0, 0),       // 0: A = flags byte
            op(JSET, 2, 0, 0x80),        // 1: long header? to 4
            op(LD_B_ABS, 0, 0, 1),       // 2: short: A = first ID byte
            op(JA, 0, 0, 1),             // 3: to 5
            op(LD_B_ABS, 0, 0, 6),       // 4: long: A = first ID byte
            op(MOD, 0, 0, loops as u32), // 5: A %= loops
            op(RET_A, 0, 0, 0),          // 6: socket index A
        ];
        let prog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_mut_ptr(),
        };
        // SAFETY: setsockopt with a pointer to a live sock_fprog whose
        // filter array outlives the call (the kernel copies it).
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_REUSEPORT_CBPF,
                (&prog as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
mod group {
    use std::net::{SocketAddr, UdpSocket};

    /// No steering program off Linux: one socket, one loop.
    pub fn bind_group(
        addr: SocketAddr,
        buffer: usize,
        _loops: usize,
    ) -> std::io::Result<Vec<UdpSocket>> {
        Ok(vec![crate::net::bind_udp(addr, buffer)?])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// What the group's program computes, in Rust: the loop that holds
    /// the connection a datagram is for; `None` when it is too short.
    fn loop_of(datagram: &[u8], loops: usize) -> Option<usize> {
        let at = if datagram.first()? & 0x80 != 0 { 6 } else { 1 };
        Some(usize::from(*datagram.get(at)?) % loops.max(1))
    }

    #[test]
    fn every_loop_byte_is_its_loop_and_spans_the_random_range() {
        for loops in [1, 2, 3, 5, 8, 64, 255, 256, 300] {
            for index in 0..loops.min(256) {
                let mut seen = std::collections::HashSet::new();
                for random in 0..=255u8 {
                    let b = loop_byte(random, index, loops);
                    assert_eq!(usize::from(b) % loops.min(256), index, "{loops} {index}");
                    seen.insert(b);
                }
                assert_eq!(seen.len(), 256 / loops.min(256), "{loops}");
            }
        }
    }

    #[test]
    fn the_id_byte_picks_the_loop() {
        // Short header: flags, then the ID.
        assert_eq!(loop_of(&[0x40, 7, 0, 0], 4), Some(3));
        // Long header: flags, version, ID length, then the ID.
        assert_eq!(loop_of(&[0xc0, 0, 0, 0, 1, 8, 5, 1], 4), Some(1));
        assert_eq!(loop_of(&[0xc0, 0, 0], 4), None);
        assert_eq!(loop_of(&[], 4), None);
    }

    /// Real sockets: a group of three on loopback, and datagrams whose
    /// connection ID names each loop arrive at that loop's socket, from
    /// any source port (a NAT rebinding).
    #[cfg(target_os = "linux")]
    #[test]
    fn the_kernel_steers_each_datagram_to_its_loops_socket() {
        let loops = 3;
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 1 << 16, loops).unwrap();
        let port = group[0].local_addr().unwrap();
        for s in &group {
            assert_eq!(s.local_addr().unwrap(), port);
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
        }
        let mut buf = [0u8; 64];
        for sender in 0..4 {
            let from = UdpSocket::bind("127.0.0.1:0").unwrap();
            for (index, socket) in group.iter().enumerate() {
                let id = loop_byte(0x5a ^ sender as u8, index, loops);
                let short = [0x41, id, 1, 2, 3, 4, 5, 6, 7];
                let long = [0xc3, 0, 0, 0, 1, 8, id, 1, 2, 3, 4, 5, 6, 7];
                for datagram in [&short[..], &long[..]] {
                    assert_eq!(loop_of(datagram, loops), Some(index));
                    from.send_to(datagram, port).unwrap();
                    let (n, _) = socket.recv_from(&mut buf).unwrap();
                    assert_eq!(&buf[..n], datagram, "sender {sender} loop {index}");
                }
            }
        }
    }
}

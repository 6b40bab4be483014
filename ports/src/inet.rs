//! The Internet checksum (RFC 1071), shared by the checksum completion of
//! the AF_PACKET port and the Ethernet emulation's ARP/ND/DHCP packets.

/// Adds `data` as big-endian 16-bit words to `acc` (an odd last byte is
/// padded with zero).
pub fn sum(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        acc += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

/// Folds a sum into the one's complement checksum.
pub fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

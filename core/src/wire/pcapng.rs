//! pcapng blocks (the Wireshark / tshark file format): a section header,
//! one interface description per link, one enhanced packet block per
//! frame. Timestamps are microseconds since the Unix epoch (the format's
//! default resolution).

use std::time::{SystemTime, UNIX_EPOCH};

/// LINKTYPE_ETHERNET.
const LINKTYPE_ETHERNET: u16 = 1;

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

fn push_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn push_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends a section header block (starts a file or stream).
pub fn section_header(out: &mut Vec<u8>) {
    push_u32(out, 0x0A0D_0D0A);
    push_u32(out, 28);
    push_u32(out, 0x1A2B_3C4D);
    push_u16(out, 1);
    push_u16(out, 0);
    out.extend_from_slice(&(-1i64).to_le_bytes());
    push_u32(out, 28);
}

/// Appends an interface description block for an Ethernet interface named
/// `name` (Wireshark shows it per packet). Interfaces are numbered from 0
/// in the order their blocks appear.
pub fn interface(out: &mut Vec<u8>, name: &str, snaplen: u32) {
    let name = &name.as_bytes()[..name.len().min(256)];
    let total = 16 + 4 + pad4(name.len()) + 4 + 4;
    push_u32(out, 1);
    push_u32(out, total as u32);
    push_u16(out, LINKTYPE_ETHERNET);
    push_u16(out, 0);
    push_u32(out, snaplen);
    // if_name
    push_u16(out, 2);
    push_u16(out, name.len() as u16);
    out.extend_from_slice(name);
    out.resize(out.len() + pad4(name.len()) - name.len(), 0);
    // opt_endofopt
    push_u32(out, 0);
    push_u32(out, total as u32);
}

/// Appends an enhanced packet block: `frame` seen on `interface` at `at`,
/// cut to `snaplen` bytes.
pub fn packet(out: &mut Vec<u8>, interface: u32, at: SystemTime, frame: &[u8], snaplen: u32) {
    let captured = &frame[..frame.len().min(snaplen as usize)];
    let micros = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let total = 28 + pad4(captured.len()) + 4;
    push_u32(out, 6);
    push_u32(out, total as u32);
    push_u32(out, interface);
    push_u32(out, (micros >> 32) as u32);
    push_u32(out, micros as u32);
    push_u32(out, captured.len() as u32);
    push_u32(out, frame.len() as u32);
    out.extend_from_slice(captured);
    out.resize(out.len() + pad4(captured.len()) - captured.len(), 0);
    push_u32(out, total as u32);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the blocks: every block's two length fields agree and add up.
    fn blocks(bytes: &[u8]) -> Vec<u32> {
        let mut kinds = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let kind = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
            let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
            assert_eq!(len % 4, 0);
            let trailer = u32::from_le_bytes(bytes[at + len - 4..at + len].try_into().unwrap());
            assert_eq!(trailer as usize, len);
            kinds.push(kind);
            at += len;
        }
        assert_eq!(at, bytes.len());
        kinds
    }

    #[test]
    fn blocks_are_well_formed_and_frames_are_cut_to_snaplen() {
        let mut out = Vec::new();
        section_header(&mut out);
        interface(&mut out, "relay/peer#1", 64);
        packet(&mut out, 0, SystemTime::now(), &[0xab; 61], 64);
        packet(&mut out, 0, SystemTime::now(), &[0xcd; 100], 64);
        assert_eq!(blocks(&out), vec![0x0A0D_0D0A, 1, 6, 6]);
        let last = out.len() - (28 + 64 + 4);
        let captured = u32::from_le_bytes(out[last + 20..last + 24].try_into().unwrap());
        let original = u32::from_le_bytes(out[last + 24..last + 28].try_into().unwrap());
        assert_eq!((captured, original), (64, 100));
    }
}

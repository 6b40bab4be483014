//! A TAP or TUN device's offloads, as the `tap` and `tun-l2` ports use
//! them: opening the device with virtio-net headers and TSO (whatever the
//! kernel refuses is logged and done without), taking what a read returned
//! (a pending checksum completed, a TCP super-packet cut into segments),
//! writing what the room hands over (merged by [`Gro`], or behind a plain
//! header), and what both directions did, for status and metrics. Frames
//! (TAP) and IP packets (TUN) alike: [`Framing`].

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use lanparty_core::chunks::Chunks;
use lanparty_core::runtime::Metrics;

use super::checksum::complete_l4_checksum;
use super::gro::{Gro, GroStats, MAX_IP_LEN, PLAIN_HEADER, Writer};
use super::gso::{NEEDS_CSUM, VNET_HDR_LEN, VnetHeader, gso_type, segment};
use super::rxbuf::RxBuffer;
use super::tun::{TunMode, enable_tso, open_rings};
use crate::inet::Framing;

/// Room for two VLAN tags in front of a super-packet's IP header.
const TAGS: usize = 8;

/// The offloads a device got, and what they did.
#[derive(Debug)]
pub struct Offloads {
    framing: Framing,
    /// Reads and writes carry a virtio-net header.
    vnet: bool,
    gro: Option<Mutex<Gro>>,
    tso: Option<TsoCounters>,
    /// UDP segmentation offload: the kernel hands over UDP super-packets
    /// (counted with TSO's) and GRO merges UDP datagrams too.
    uso: bool,
}

/// What TSO read.
#[derive(Debug, Default)]
struct TsoCounters {
    /// Super-packets read and cut.
    super_packets: AtomicU64,
    /// Segments cut from them.
    segments: AtomicU64,
    /// Super-packets that could not be cut (not TCP, malformed).
    dropped: AtomicU64,
}

/// Where a reader cuts super-packets: the segmenter's scratch space and
/// the chunks the segments are copied into (never zeroed, unlike the read
/// buffer).
#[derive(Debug, Default)]
pub struct Cutter {
    scratch: Vec<u8>,
    segments: Chunks,
}

/// Opens `queues` queues of the TAP or TUN device `name`
/// ([`open_rings`]), with virtio-net headers when `gro` or `tso` asks for
/// them, and TSO (with USO where the kernel has it) when `tso` does: a
/// kernel that refuses the headers gets plain frames or packets, one that
/// refuses TSO cuts segments itself (each logged). USO on a device is
/// what lets GRO write UDP super-packets to it.
pub fn open(
    name: &str,
    mode: TunMode,
    queues: usize,
    gro: bool,
    tso: bool,
) -> io::Result<(Vec<OwnedFd>, Offloads)> {
    let framing = match mode {
        TunMode::Tap => Framing::Ethernet,
        TunMode::Tun => Framing::Ip,
    };
    let kind = mode.kind();
    if gro || tso {
        match open_rings(name, mode, true, queues) {
            Ok(fds) => {
                let (tso, uso) = if tso {
                    match enable_tso(&fds[0]) {
                        Ok(uso) => {
                            if !uso {
                                tracing::info!(device = %name, "no USO on this {kind} (Linux 6.2 or later has it): UDP datagrams are read and written one by one");
                            }
                            (true, uso)
                        }
                        Err(e) => {
                            tracing::info!(device = %name, "no TSO on this {kind} ({e}): the kernel cuts TCP segments itself");
                            (false, false)
                        }
                    }
                } else {
                    (false, false)
                };
                let offloads = Offloads {
                    framing,
                    vnet: true,
                    gro: gro.then(|| Mutex::new(Gro::new(framing, uso))),
                    tso: tso.then(TsoCounters::default),
                    uso,
                };
                return Ok((fds, offloads));
            }
            Err(e) => {
                tracing::info!(device = %name, "no virtio-net headers on this {kind} ({e}): packets are read and written one by one")
            }
        }
    }
    let fds = open_rings(name, mode, false, queues)?;
    Ok((fds, Offloads::none(framing)))
}

impl Offloads {
    /// No offloads: plain frames or packets.
    pub fn none(framing: Framing) -> Offloads {
        Offloads {
            framing,
            vnet: false,
            gro: None,
            tso: None,
            uso: false,
        }
    }

    /// The room a read needs, `largest` being the largest frame or packet
    /// the device sends without TSO.
    pub fn read_size(&self, largest: usize) -> usize {
        let body = if self.tso.is_some() {
            largest.max(MAX_IP_LEN + self.framing.header_len() + TAGS)
        } else {
            largest
        };
        body + self.header_len()
    }

    /// Takes the `n` bytes just read into `rx`: with virtio-net headers, a
    /// frame whose checksum is pending (checksum offload) gets it completed
    /// in place and a TCP or UDP super-packet (TSO, USO) is cut into
    /// segments, counted.
    /// Appends the frames made to `out` and returns how many.
    pub fn read(
        &self,
        rx: &mut RxBuffer,
        n: usize,
        cutter: &mut Cutter,
        out: &mut Vec<Bytes>,
    ) -> usize {
        if !self.vnet {
            out.push(rx.take(n));
            return 1;
        }
        let read = &mut rx.space()[..n];
        let Some(header) = VnetHeader::parse(read) else {
            return 0;
        };
        if header.gso_type & !gso_type::ECN == gso_type::NONE {
            if header.flags & NEEDS_CSUM != 0 {
                complete_l4_checksum(self.framing, &mut read[VNET_HDR_LEN..]);
            }
            out.push(rx.take(n).slice(VNET_HDR_LEN..));
            return 1;
        }
        // Cut from the read buffer in place: it is overwritten by the next
        // read, only the segments are kept.
        let Cutter { scratch, segments } = cutter;
        let cut = segment(
            self.framing,
            &read[VNET_HDR_LEN..],
            usize::from(header.gso_size),
            scratch,
            &mut |segment| out.push(segments.copy(segment)),
        );
        let counters = self.tso.as_ref();
        match cut {
            Ok(count) => {
                if let Some(tso) = counters {
                    tso.super_packets.fetch_add(1, Ordering::Relaxed);
                    tso.segments.fetch_add(count as u64, Ordering::Relaxed);
                }
                count
            }
            Err(why) => {
                if let Some(tso) = counters {
                    tso.dropped.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(
                    gso_size = header.gso_size,
                    "super-packet not cut: {why}; dropped"
                );
                0
            }
        }
    }

    /// Hands `packet` to `write` as the device takes it: to GRO (written
    /// merged by a later call or [`Offloads::flush`]), behind a plain
    /// virtio-net header, or alone. False when a write failed.
    pub fn write(&self, packet: &[u8], write: &mut Writer<'_>) -> bool {
        match &self.gro {
            Some(gro) => lock(gro).push(packet, write),
            None if self.vnet => write(&[&PLAIN_HEADER, packet]),
            None => write(&[packet]),
        }
    }

    /// Writes what GRO holds. False when that failed.
    pub fn flush(&self, write: &mut Writer<'_>) -> bool {
        self.gro.as_ref().is_none_or(|gro| lock(gro).flush(write))
    }

    /// True when writes wait for [`Offloads::flush`] (GRO is on).
    pub fn gathers(&self) -> bool {
        self.gro.is_some()
    }

    /// The frame or packet a [`Writer`] got in `parts`: behind the
    /// virtio-net header, which is the first part or its start.
    pub fn packet_of<'a>(&self, parts: &[&'a [u8]]) -> &'a [u8] {
        let skip = self.header_len();
        match parts {
            [first, ..] if first.len() > skip => &first[skip..],
            [_, second, ..] => second,
            _ => &[],
        }
    }

    /// True when reads and writes carry a virtio-net header.
    pub fn headers(&self) -> bool {
        self.vnet
    }

    fn header_len(&self) -> usize {
        if self.vnet { VNET_HDR_LEN } else { 0 }
    }

    fn gro_stats(&self) -> GroStats {
        self.gro
            .as_ref()
            .map_or_else(GroStats::default, |g| lock(g).stats())
    }

    fn tso_count(&self, pick: fn(&TsoCounters) -> &AtomicU64) -> u64 {
        self.tso
            .as_ref()
            .map_or(0, |t| pick(t).load(Ordering::Relaxed))
    }

    /// Status fields: whether GRO and TSO are on and what they merged and
    /// cut.
    pub fn status(&self, into: &mut serde_json::Map<String, serde_json::Value>) {
        let gro = self.gro_stats();
        for (key, value) in [
            ("gro", serde_json::Value::from(self.gro.is_some())),
            ("gro_super_packets", gro.super_packets.into()),
            ("gro_merged_segments", gro.merged_segments.into()),
            ("tso", self.tso.is_some().into()),
            ("uso", self.uso.into()),
            (
                "tso_super_packets",
                self.tso_count(|t| &t.super_packets).into(),
            ),
            ("tso_segments", self.tso_count(|t| &t.segments).into()),
            ("tso_dropped", self.tso_count(|t| &t.dropped).into()),
        ] {
            into.insert(key.into(), value);
        }
    }

    /// The same as counters, labelled `labels` (the device).
    pub fn metrics(&self, out: &mut Metrics, labels: &[(&str, &str)]) {
        let gro = self.gro_stats();
        for (name, help, value) in [
            (
                "lanparty_adapter_gro_super_packets_total",
                "TCP super-packets written to a TAP or TUN device (two segments or more)",
                gro.super_packets,
            ),
            (
                "lanparty_adapter_gro_merged_segments_total",
                "TCP segments written inside super-packets",
                gro.merged_segments,
            ),
            (
                "lanparty_adapter_tso_super_packets_total",
                "TCP super-packets read from a TAP or TUN device (TSO) and cut into segments",
                self.tso_count(|t| &t.super_packets),
            ),
            (
                "lanparty_adapter_tso_segments_total",
                "TCP segments cut from super-packets read from a TAP or TUN device",
                self.tso_count(|t| &t.segments),
            ),
            (
                "lanparty_adapter_tso_dropped_total",
                "Super-packets read from a TAP or TUN device that could not be cut",
                self.tso_count(|t| &t.dropped),
            ),
        ] {
            out.counter(name, help, labels, value);
        }
    }
}

fn lock(gro: &Mutex<Gro>) -> MutexGuard<'_, Gro> {
    gro.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use etherparse::PacketBuilder;

    fn offloads(framing: Framing, vnet: bool, gro: bool, tso: bool) -> Offloads {
        Offloads {
            framing,
            vnet,
            gro: gro.then(|| Mutex::new(Gro::new(framing, tso))),
            tso: tso.then(TsoCounters::default),
            uso: tso,
        }
    }

    /// A TCP/IPv4 packet (as a TUN device carries it) with `payload`.
    fn tcp_packet(seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 5201, seq, 1000)
            .ack(77)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    /// Everything `step` wrote, each write's parts joined.
    fn written(step: impl FnOnce(&mut Writer<'_>) -> bool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        assert!(step(&mut |parts| {
            out.push(parts.concat());
            true
        }));
        out
    }

    #[test]
    fn every_write_carries_the_header_the_device_expects() {
        let packet = tcp_packet(1, b"x");
        // Headers without GRO (`gro: false, tso: true`): a plain header.
        let o = offloads(Framing::Ip, true, false, true);
        let out = written(|w| o.write(&packet, w));
        assert_eq!(out, vec![[&PLAIN_HEADER[..], &packet].concat()]);
        assert_eq!(o.packet_of(&[&PLAIN_HEADER, &packet]), &packet[..]);
        assert!(!o.gathers());
        // No headers: the packet alone.
        let o = Offloads::none(Framing::Ip);
        assert_eq!(written(|w| o.write(&packet, w)), vec![packet.clone()]);
        assert_eq!(o.packet_of(&[&packet]), &packet[..]);
        // GRO: held until the flush, then one super-packet.
        let o = offloads(Framing::Ip, true, true, false);
        let second = tcp_packet(2, b"y");
        assert!(written(|w| o.write(&packet, w) && o.write(&second, w)).is_empty());
        let out = written(|w| o.flush(w));
        assert_eq!(out.len(), 1);
        let header = VnetHeader::parse(&out[0]).unwrap();
        assert_eq!(header.gso_type, gso_type::TCPV4);
        assert_eq!(o.packet_of(&[&out[0]]).len(), packet.len() + 1);
    }

    /// What a read of `header` and `packet` from the device makes.
    fn read(o: &Offloads, header: VnetHeader, packet: &[u8]) -> (usize, Vec<Bytes>) {
        let mut rx = RxBuffer::new(o.read_size(1500), 256 * 1024);
        let space = rx.space();
        space[..VNET_HDR_LEN].copy_from_slice(&header.encode());
        space[VNET_HDR_LEN..VNET_HDR_LEN + packet.len()].copy_from_slice(packet);
        let mut out = Vec::new();
        let made = o.read(
            &mut rx,
            VNET_HDR_LEN + packet.len(),
            &mut Cutter::default(),
            &mut out,
        );
        (made, out)
    }

    #[test]
    fn a_tun_read_is_checksummed_or_cut_and_counted() {
        let o = offloads(Framing::Ip, true, false, true);
        // A pending checksum (checksum offload) is completed.
        let good = tcp_packet(1, b"hello");
        let mut pending = good.clone();
        pending[36] ^= 0xff;
        let header = VnetHeader {
            flags: NEEDS_CSUM,
            csum_start: 20,
            csum_offset: 16,
            ..VnetHeader::default()
        };
        let (made, out) = read(&o, header, &pending);
        assert_eq!((made, out), (1, vec![Bytes::from(good)]));
        // A 4000-byte TSO super-packet becomes three segments.
        let payload: Vec<u8> = (0..4000u32).map(|i| i as u8).collect();
        let big = tcp_packet(1000, &payload);
        let header = VnetHeader {
            flags: NEEDS_CSUM,
            gso_type: gso_type::TCPV4,
            hdr_len: 40,
            gso_size: 1448,
            csum_start: 20,
            csum_offset: 16,
        };
        let (made, out) = read(&o, header, &big);
        assert_eq!(made, 3);
        let lengths: Vec<usize> = out.iter().map(|s| s.len() - 40).collect();
        assert_eq!(lengths, vec![1448, 1448, 1104]);
        // The second segment's TCP part (its IPv4 ID is one up).
        let want = tcp_packet(2448, &payload[1448..2896]);
        assert!(out[1][20..] == want[20..], "second segment differs");
        // What cannot be cut is dropped and counted.
        let (made, out) = read(&o, header, &[0x45, 0, 0, 20]);
        assert_eq!((made, out.len()), (0, 0));
        let mut status = serde_json::Map::new();
        o.status(&mut status);
        assert_eq!(status["tso_super_packets"], 1);
        assert_eq!(status["tso_segments"], 3);
        assert_eq!(status["tso_dropped"], 1);
        assert_eq!(status["gro"], false);
        let mut metrics = Metrics::default();
        o.metrics(&mut metrics, &[("device", "lp0")]);
        let text = metrics.finish();
        assert!(
            text.contains("lanparty_adapter_tso_segments_total{device=\"lp0\"} 3"),
            "{text}"
        );
    }
}

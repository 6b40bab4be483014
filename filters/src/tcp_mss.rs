//! `tcp-mss`: clamps the MSS option of TCP SYN and SYN-ACK segments so that
//! a full-size TCP segment fits in one QUIC datagram.
//!
//! A room runs at MTU 1500, and a frame larger than a player's datagram
//! travels in fragments (two datagrams, one more header, and a lost
//! fragment loses the whole segment). TCP can do better: it asks for its
//! segment size in the handshake, so the filter lowers that to what one
//! datagram carries — `mtu` (default 1394, the IP packet a 1414-byte QUIC
//! datagram holds with room for one VLAN tag) minus 40 bytes of IPv4 + TCP
//! header, or 60 for IPv6 — and both ends then send segments that never
//! need fragments. UDP and everything else still use the full room MTU.
//!
//! The option is rewritten in a copy of the frame with the TCP checksum
//! updated incrementally (RFC 1624); VLAN-tagged and QinQ frames, IPv4 and
//! IPv6 alike. Segments that are not SYNs, SYNs without an MSS option and
//! MSS values already at or under the clamp pass untouched. IP fragments
//! are never rewritten (a SYN is never fragmented in practice; a first
//! fragment's checksum covers bytes the filter cannot see).

use etherparse::{SlicedPacket, TransportSlice};
use lanparty_core::Bytes;
use lanparty_core::config::{ConfigError, StageConfig};
use lanparty_core::registry::{FilterFactory, filter_factory};
use lanparty_core::stage::{Filter, FilterContext, Verdict};
use lanparty_core::wire::checksum::with_word;
use lanparty_core::wire::{Fragment, FrameView, ethertype};

/// IPv4 + TCP header bytes without options.
const IPV4_TCP_HEADERS: u16 = 40;
/// IPv6 + TCP header bytes without options.
const IPV6_TCP_HEADERS: u16 = 60;
/// The IP packet one 1414-byte QUIC datagram carries whole (overlay
/// header and Ethernet header with one VLAN tag taken off).
pub const DEFAULT_MTU: u16 = 1394;
/// Offset of the checksum in the TCP header.
const TCP_CHECKSUM: usize = 16;
/// TCP option kinds.
const END_OF_OPTIONS: u8 = 0;
const NOOP: u8 = 1;
const MSS: u8 = 2;

/// Clamps the MSS of TCP SYN and SYN-ACK so full TCP segments fit one QUIC
/// datagram (no fragments).
#[lanparty_core::stage_kind(filter(ingress), name = "tcp-mss", build = build,
    example = "ingress: [ { type: tcp-mss, mtu: 1394 } ]")]
#[derive(Debug, Clone)]
pub struct TcpMssSettings {
    /// The IP packet a segment must fit in: MSS is clamped to mtu - 40
    /// (IPv4) or mtu - 60 (IPv6).
    #[key(default = DEFAULT_MTU, shown = "1394")]
    pub mtu: u16,
}

/// The filter.
#[derive(Debug)]
pub struct TcpMss {
    mtu: u16,
}

impl TcpMss {
    /// A clamp for packets of `mtu` bytes.
    pub fn new(mtu: u16) -> TcpMss {
        TcpMss { mtu }
    }

    /// The clamped copy of `frame`, or `None` when nothing needs changing.
    fn clamp(&self, frame: &FrameView<'_>) -> Option<Vec<u8>> {
        let l3 = frame.l3();
        if l3.ip_protocol != Some(6) || l3.fragment != Fragment::Whole {
            return None;
        }
        let (ethertype, headers) = match frame.eth().ethertype {
            ethertype::IPV4 => (etherparse::EtherType::IPV4, IPV4_TCP_HEADERS),
            ethertype::IPV6 => (etherparse::EtherType::IPV6, IPV6_TCP_HEADERS),
            _ => return None,
        };
        let limit = self.mtu.saturating_sub(headers);
        let packet = SlicedPacket::from_ether_type(ethertype, frame.l3_bytes()).ok()?;
        let Some(TransportSlice::Tcp(tcp)) = packet.transport else {
            return None;
        };
        if !tcp.syn() {
            return None;
        }
        let start = frame.offset_of(tcp.slice())?;
        let options_at = start + 20;
        let options = tcp.options();
        let mut i = 0;
        while i < options.len() {
            match options[i] {
                END_OF_OPTIONS => return None,
                NOOP => i += 1,
                kind => {
                    let len = usize::from(*options.get(i + 1)?);
                    if len < 2 || i + len > options.len() {
                        return None;
                    }
                    if kind == MSS && len == 4 {
                        let mss = u16::from_be_bytes([options[i + 2], options[i + 3]]);
                        if mss <= limit {
                            return None;
                        }
                        let at = options_at + i + 2;
                        return with_word(frame.bytes(), at, limit, start + TCP_CHECKSUM);
                    }
                    i += len;
                }
            }
        }
        None
    }
}

impl Filter for TcpMss {
    fn ingress(&mut self, _ctx: &FilterContext<'_>, frame: &FrameView<'_>) -> Verdict {
        match self.clamp(frame) {
            Some(rewritten) => Verdict::Replace(Bytes::from(rewritten)),
            None => Verdict::Pass,
        }
    }
}

fn build(config: &StageConfig) -> Result<FilterFactory, Vec<ConfigError>> {
    let settings: TcpMssSettings = config.parse()?;
    if settings.mtu < IPV6_TCP_HEADERS + 8 {
        return Err(vec![config.error(
            "mtu",
            format!("{} leaves no room for a TCP segment", settings.mtu),
        )]);
    }
    Ok(filter_factory(settings, |s| TcpMss::new(s.mtu)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use etherparse::{SlicedPacket, TcpOptionElement, TransportSlice};
    use lanparty_core::stage::LinkRole;
    use lanparty_core::testing::Harness;
    use lanparty_core::testing::frames::{Tags, tcp_segment};
    use lanparty_core::wire::MacAddr;

    const C: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const G: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn harness() -> Harness {
        let mut h = Harness::from_room_yaml("ingress: [ { type: tcp-mss } ]").unwrap();
        h.add_link("client", LinkRole::Client, C);
        h.add_link("gw", LinkRole::Gateway, G);
        h
    }

    /// The MSS option and whether the TCP checksum is right, read back by
    /// etherparse.
    fn read_back(frame: &[u8], ipv6: bool) -> (Option<u16>, bool) {
        let packet = SlicedPacket::from_ethernet(frame).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = &packet.transport else {
            panic!("not TCP");
        };
        let mss = tcp.options_iterator().find_map(|o| match o {
            Ok(TcpOptionElement::MaximumSegmentSize(m)) => Some(m),
            _ => None,
        });
        let header = tcp.to_header();
        let payload = tcp.payload();
        let valid = match &packet.net {
            Some(etherparse::NetSlice::Ipv4(ip)) if !ipv6 => {
                header
                    .calc_checksum_ipv4(&ip.header().to_header(), payload)
                    .unwrap()
                    == header.checksum
            }
            Some(etherparse::NetSlice::Ipv6(ip)) if ipv6 => {
                header
                    .calc_checksum_ipv6(&ip.header().to_header(), payload)
                    .unwrap()
                    == header.checksum
            }
            _ => false,
        };
        (mss, valid)
    }

    #[test]
    fn syn_and_syn_ack_are_clamped_with_valid_checksums() {
        let mut h = harness();
        for tags in [Tags::None, Tags::Single(10), Tags::Double(100, 10)] {
            for (ipv6, clamp) in [(false, 1354), (true, 1334)] {
                for ack in [false, true] {
                    let syn = tcp_segment(G, C, tags, ipv6, true, ack, Some(1460), &[]);
                    let (mss, valid) = read_back(&syn, ipv6);
                    assert_eq!((mss, valid), (Some(1460), true));
                    let d = h.send("client", syn);
                    let got = d.frame_to("gw").expect("delivered");
                    assert_eq!(
                        read_back(got, ipv6),
                        (Some(clamp), true),
                        "{tags:?} v6 {ipv6} ack {ack}"
                    );
                }
            }
        }
    }

    #[test]
    fn other_segments_and_small_mss_pass_untouched() {
        let mut h = harness();
        for frame in [
            // Data segments, however large.
            tcp_segment(G, C, Tags::None, false, false, true, None, &[7u8; 1400]),
            // A SYN already under the clamp, and one without the option.
            tcp_segment(G, C, Tags::None, false, true, false, Some(1200), &[]),
            tcp_segment(G, C, Tags::Single(5), true, true, false, None, &[]),
        ] {
            let d = h.send("client", frame.clone());
            assert_eq!(d.frame_to("gw").unwrap().to_vec(), frame);
        }
        let rewritten = h
            .stats()
            .stage("ingress[0]:tcp-mss")
            .unwrap()
            .counters
            .rewritten;
        assert_eq!(rewritten, 0);
    }

    #[test]
    fn a_truncated_syn_passes_unchanged_and_nothing_panics() {
        let mut h = harness();
        let syn = tcp_segment(G, C, Tags::None, false, true, false, Some(1460), &[]);
        for cut in 14..syn.len() {
            let _ = h.send("client", syn[..cut].to_vec());
        }
    }
}

//! Ethernet II headers with up to two VLAN tags (802.1Q, 802.1ad QinQ).
//!
//! [`EthernetHeader::parse`] checks lengths once; after it succeeds nothing
//! that reads the header can panic.

use super::mac::MacAddr;

/// Length of an untagged Ethernet II header: destination, source, ethertype.
pub const ETH_HEADER_LEN: usize = 14;
/// Length of one VLAN tag (TPID + TCI).
pub const VLAN_TAG_LEN: usize = 4;
/// The most VLAN tags a frame may carry before we stop looking (QinQ).
pub const MAX_VLAN_TAGS: usize = 2;

/// Ethertypes that the filters and routers care about.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// IEEE 802.3x MAC control (pause frames).
    pub const MAC_CONTROL: u16 = 0x8808;
    /// IEEE 802.3 slow protocols (LACP, marker, OAM).
    pub const SLOW_PROTOCOLS: u16 = 0x8809;
    /// 802.1X EAP over LAN.
    pub const EAPOL: u16 = 0x888e;
    /// 802.1ad service VLAN tag (QinQ outer tag).
    pub const QINQ: u16 = 0x88a8;
    /// LLDP.
    pub const LLDP: u16 = 0x88cc;
    /// Legacy QinQ outer tag used by some switches.
    pub const QINQ_LEGACY: u16 = 0x9100;

    /// Ethertypes known by name in configs and tests.
    pub const NAMES: &[(&str, u16)] = &[
        ("ipv4", IPV4),
        ("arp", ARP),
        ("vlan", VLAN),
        ("ipv6", IPV6),
        ("mac-control", MAC_CONTROL),
        ("slow-protocols", SLOW_PROTOCOLS),
        ("eapol", EAPOL),
        ("qinq", QINQ),
        ("lldp", LLDP),
        ("wol", 0x0842),
        ("rarp", 0x8035),
        ("ipx", 0x8137),
        ("pppoe-discovery", 0x8863),
        ("pppoe-session", 0x8864),
        ("ptp", 0x88f7),
    ];

    /// The ethertype for a name like `ipv4`, or a number written as
    /// `0x0800` or `2048`.
    pub fn parse(text: &str) -> Option<u16> {
        let text = text.trim();
        if let Some((_, value)) = NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(text))
        {
            return Some(*value);
        }
        match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            Some(hex) => u16::from_str_radix(hex, 16).ok(),
            None => text.parse().ok(),
        }
    }

    /// The name of a known ethertype.
    pub fn name(value: u16) -> Option<&'static str> {
        NAMES
            .iter()
            .find(|(_, v)| *v == value)
            .map(|(name, _)| *name)
    }

    /// True for the TPIDs that introduce a VLAN tag.
    pub const fn is_vlan_tpid(value: u16) -> bool {
        matches!(value, VLAN | QINQ | QINQ_LEGACY)
    }
}

/// One VLAN tag as found on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag {
    /// Tag protocol identifier (0x8100, 0x88a8 or 0x9100).
    pub tpid: u16,
    /// Priority code point (3 bits).
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN identifier (12 bits).
    pub vid: u16,
}

impl VlanTag {
    fn from_bytes(tpid: u16, tci: u16) -> VlanTag {
        VlanTag {
            tpid,
            pcp: (tci >> 13) as u8,
            dei: tci & 0x1000 != 0,
            vid: tci & 0x0fff,
        }
    }
}

/// Why bytes are not an Ethernet frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EthernetError {
    /// Fewer bytes than the header claims.
    #[error("frame truncated: {len} bytes, header needs {needed}")]
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes needed for the header.
        needed: usize,
    },
    /// More than [`MAX_VLAN_TAGS`] stacked VLAN tags.
    #[error("more than {MAX_VLAN_TAGS} stacked VLAN tags")]
    TooManyTags,
}

/// The parsed layer-2 header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetHeader {
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    /// VLAN tags, outermost first; `vlan_count` of them are valid.
    pub vlans: [Option<VlanTag>; MAX_VLAN_TAGS],
    /// The ethertype after all VLAN tags (or the 802.3 length field, when
    /// below 0x0600).
    pub ethertype: u16,
    /// Bytes from the start of the frame to the start of the payload.
    pub header_len: usize,
}

impl EthernetHeader {
    /// Parses the L2 header of `frame`, looking through up to two VLAN tags.
    pub fn parse(frame: &[u8]) -> Result<EthernetHeader, EthernetError> {
        if frame.len() < ETH_HEADER_LEN {
            return Err(EthernetError::Truncated {
                len: frame.len(),
                needed: ETH_HEADER_LEN,
            });
        }
        let read_u16 = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
        let mut header = EthernetHeader {
            dst: MacAddr([frame[0], frame[1], frame[2], frame[3], frame[4], frame[5]]),
            src: MacAddr([frame[6], frame[7], frame[8], frame[9], frame[10], frame[11]]),
            vlans: [None; MAX_VLAN_TAGS],
            ethertype: read_u16(12),
            header_len: ETH_HEADER_LEN,
        };
        let mut tags = 0;
        while ethertype::is_vlan_tpid(header.ethertype) {
            if tags == MAX_VLAN_TAGS {
                return Err(EthernetError::TooManyTags);
            }
            let needed = header.header_len + VLAN_TAG_LEN;
            if frame.len() < needed {
                return Err(EthernetError::Truncated {
                    len: frame.len(),
                    needed,
                });
            }
            let tci = read_u16(header.header_len);
            header.vlans[tags] = Some(VlanTag::from_bytes(header.ethertype, tci));
            header.ethertype = read_u16(header.header_len + 2);
            header.header_len = needed;
            tags += 1;
        }
        Ok(header)
    }

    /// Number of VLAN tags present.
    pub fn vlan_count(&self) -> usize {
        self.vlans.iter().filter(|tag| tag.is_some()).count()
    }

    /// The innermost VLAN id, if the frame is tagged.
    pub fn inner_vid(&self) -> Option<u16> {
        self.vlans.iter().rev().flatten().next().map(|tag| tag.vid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tags: &[(u16, u16)], ethertype: u16, payload: usize) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        for (tpid, tci) in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.resize(f.len() + payload, 0);
        f
    }

    #[test]
    fn ethertype_names() {
        assert_eq!(ethertype::parse("IPv4"), Some(0x0800));
        assert_eq!(ethertype::parse("0x88cc"), Some(0x88cc));
        assert_eq!(ethertype::parse("2048"), Some(0x0800));
        assert_eq!(ethertype::parse("0x10000"), None);
        assert_eq!(ethertype::parse("ipv5"), None);
        assert_eq!(ethertype::name(0x86dd), Some("ipv6"));
    }

    #[test]
    fn untagged() {
        let h = EthernetHeader::parse(&frame(&[], ethertype::IPV4, 20)).unwrap();
        assert!(h.dst.is_broadcast());
        assert_eq!(h.src.to_string(), "02:00:00:00:00:01");
        assert_eq!(h.ethertype, ethertype::IPV4);
        assert_eq!(h.header_len, 14);
        assert_eq!(h.vlan_count(), 0);
        assert_eq!(h.inner_vid(), None);
    }

    #[test]
    fn single_and_double_tags() {
        let h = EthernetHeader::parse(&frame(&[(0x8100, 0xa00a)], ethertype::ARP, 28)).unwrap();
        assert_eq!(h.ethertype, ethertype::ARP);
        assert_eq!(h.header_len, 18);
        let tag = h.vlans[0].unwrap();
        assert_eq!((tag.pcp, tag.dei, tag.vid), (5, false, 10));
        let h = EthernetHeader::parse(&frame(
            &[(0x88a8, 100), (0x8100, 0x1000 | 20)],
            ethertype::IPV6,
            40,
        ))
        .unwrap();
        assert_eq!(h.vlan_count(), 2);
        assert_eq!(h.inner_vid(), Some(20));
        assert!(h.vlans[1].unwrap().dei);
        assert_eq!(h.header_len, 22);
        assert_eq!(h.ethertype, ethertype::IPV6);
    }

    #[test]
    fn hostile_input() {
        for len in 0..14 {
            assert!(matches!(
                EthernetHeader::parse(&vec![0u8; len]),
                Err(EthernetError::Truncated { .. })
            ));
        }
        // Tag announced but cut short.
        let f = frame(&[], 0x8100, 2);
        assert!(matches!(
            EthernetHeader::parse(&f),
            Err(EthernetError::Truncated { needed: 18, .. })
        ));
        // Three stacked tags.
        let f = frame(&[(0x88a8, 1), (0x8100, 2), (0x8100, 3)], ethertype::IPV4, 0);
        assert_eq!(EthernetHeader::parse(&f), Err(EthernetError::TooManyTags));
    }
}

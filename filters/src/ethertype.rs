//! `ethertype`: an allow-list or a deny-list of ethertypes, read after any
//! VLAN tags. Names (`ipv4`, `arp`, `ipv6`, `lldp`, …) or numbers
//! (`0x88b5`). The pseudo-name `llc` stands for every 802.3 length field
//! (values below 0x0600: STP, NetBIOS over LLC, IPX 802.2 …).
//!
//! Decides on the L2 header only (validated by the pipeline), so it never
//! meets a frame it cannot classify.

use lanparty_core::config::{ConfigError, StageConfig};
use lanparty_core::registry::{FilterFactory, filter_factory};
use lanparty_core::stage::{DropReason, Filter, FilterContext, Verdict};
use lanparty_core::wire::{FrameView, ethertype};
use serde::Deserialize;

/// Drop reason: not on the allow-list.
pub const NOT_ALLOWED: DropReason = "ethertype-not-allowed";
/// Drop reason: on the deny-list.
pub const DENIED: DropReason = "ethertype-denied";

/// The pseudo-ethertype for 802.3 length fields.
const LLC: u32 = 0x1_0000;

/// Allow-list or deny-list of ethertypes (after VLAN tags); `llc` covers
/// 802.3 length frames.
#[lanparty_core::stage_kind(filter(ingress), name = "ethertype", build = build,
    example = "ingress: [ { type: ethertype, allow: [ipv4, arp, ipv6] } ]")]
#[derive(Debug, Clone)]
pub struct EthertypeSettings {
    /// Only these ethertypes pass.
    #[key(ty = "list of names or numbers")]
    pub allow: Option<Vec<EthertypeEntry>>,
    /// These ethertypes are dropped (give allow or deny, not both).
    #[key(ty = "list of names or numbers")]
    pub deny: Option<Vec<EthertypeEntry>>,
}

/// One list entry: a number (`0x88b5`, `34997`) or a name (`ipv4`, `llc`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EthertypeEntry {
    /// A number.
    Number(u64),
    /// A name, or a number written as a string.
    Name(String),
}

/// The filter.
#[derive(Debug)]
pub struct Ethertype {
    list: Vec<u32>,
    allow: bool,
}

impl Filter for Ethertype {
    fn ingress(&mut self, _ctx: &FilterContext<'_>, frame: &FrameView<'_>) -> Verdict {
        let value = frame.eth().ethertype;
        let key = if value < 0x0600 {
            LLC
        } else {
            u32::from(value)
        };
        match (self.list.contains(&key), self.allow) {
            (true, true) | (false, false) => Verdict::Pass,
            (false, true) => Verdict::Drop(NOT_ALLOWED),
            (true, false) => Verdict::Drop(DENIED),
        }
    }
}

fn parse_list(
    config: &StageConfig,
    key: &str,
    entries: &[EthertypeEntry],
) -> Result<Vec<u32>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let (name, value) = match entry {
            EthertypeEntry::Number(n) => (format!("{n:#06x}"), u16::try_from(*n).ok()),
            EthertypeEntry::Name(name) if name.eq_ignore_ascii_case("llc") => {
                out.push(LLC);
                continue;
            }
            EthertypeEntry::Name(name) => (name.clone(), ethertype::parse(name)),
        };
        match value {
            Some(v) if v >= 0x0600 => out.push(u32::from(v)),
            _ => errors.push(config.error(
                &format!("{key}[{i}]"),
                format!("`{name}` is not an ethertype: use a name ({}, llc) or a number from 0x0600 to 0xffff",
                    ethertype::NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")),
            )),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn build(config: &StageConfig) -> Result<FilterFactory, Vec<ConfigError>> {
    let settings: EthertypeSettings = config.parse()?;
    let (list, allow) = match (&settings.allow, &settings.deny) {
        (Some(allow), None) => (parse_list(config, "allow", allow)?, true),
        (None, Some(deny)) => (parse_list(config, "deny", deny)?, false),
        _ => {
            return Err(vec![
                config.error("", "give exactly one of `allow:` or `deny:`"),
            ]);
        }
    };
    Ok(filter_factory((list, allow), |(list, allow)| Ethertype {
        list: list.clone(),
        allow: *allow,
    }))
}

#[cfg(test)]
mod tests {
    use lanparty_core::stage::LinkRole;
    use lanparty_core::testing::Harness;
    use lanparty_core::testing::frames::{self, Tags};
    use lanparty_core::wire::MacAddr;

    const C: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

    fn harness(yaml: &str) -> Harness {
        let mut h = Harness::from_room_yaml(yaml).unwrap();
        h.add_link("c", LinkRole::Client, C);
        h.add_link("d", LinkRole::Client, MacAddr([2, 0, 0, 0, 0, 2]));
        h
    }

    fn of(ethertype: u16, tags: Tags) -> Vec<u8> {
        frames::ethernet(MacAddr::BROADCAST, C, tags, ethertype, 46)
    }

    #[test]
    fn allow_list_sees_through_tags() {
        let mut h = harness("ingress: [ { type: ethertype, allow: [ipv4, arp, ipv6] } ]");
        for tags in [Tags::None, Tags::Single(3), Tags::Double(4, 3)] {
            for ok in [0x0800, 0x0806, 0x86dd] {
                assert!(h.send("c", of(ok, tags)).dropped.is_none());
            }
            assert_eq!(
                h.send("c", of(0x8137, tags)).drop_reason(),
                Some("ethertype-not-allowed")
            );
            assert_eq!(
                h.send("c", frames::stp_bpdu(C, tags)).drop_reason(),
                Some("ethertype-not-allowed")
            );
        }
    }

    #[test]
    fn deny_list_and_llc() {
        let mut h = harness("ingress: [ { type: ethertype, deny: [0x8137, llc] } ]");
        assert_eq!(
            h.send("c", of(0x8137, Tags::None)).drop_reason(),
            Some("ethertype-denied")
        );
        assert_eq!(
            h.send("c", frames::stp_bpdu(C, Tags::Single(1)))
                .drop_reason(),
            Some("ethertype-denied")
        );
        assert!(h.send("c", of(0x0800, Tags::None)).dropped.is_none());
    }

    #[test]
    fn bad_settings_name_the_entry() {
        for yaml in [
            "ingress: [ { type: ethertype } ]",
            "ingress: [ { type: ethertype, allow: [ipv4], deny: [arp] } ]",
            "ingress: [ { type: ethertype, allow: [ipv5] } ]",
            "ingress: [ { type: ethertype, allow: [0x0100] } ]",
        ] {
            let err = Harness::from_room_yaml(yaml)
                .err()
                .unwrap_or_else(|| panic!("{yaml} accepted"));
            assert!(err.0[0].key.starts_with("room.ingress[0]"), "{err}");
        }
        let err = Harness::from_room_yaml("ingress: [ { type: ethertype, allow: [ipv4, bogus] } ]")
            .err()
            .unwrap();
        assert_eq!(err.0[0].key, "room.ingress[0].allow[1]");
    }
}

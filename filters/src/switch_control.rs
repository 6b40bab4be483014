//! `switch-control`: keeps bridge control traffic out of the room. Drops
//! frames to the IEEE 802.1D reserved range 01:80:C2:00:00:00–0F (STP/RSTP
//! BPDUs, pause, LACP and other slow protocols, 802.1X EAPOL, LLDP, …) and
//! frames with the MAC-control, slow-protocols or LLDP ethertype to any
//! address, VLAN tags or not. One player's switch must never be able to
//! block, pause or re-root the host's LAN.
//!
//! Decides on the L2 header only (validated by the pipeline), so it never
//! meets a frame it cannot classify. Exceptions are opt-in by name.

use lanparty_core::config::{ConfigError, StageConfig};
use lanparty_core::registry::{FilterFactory, filter_factory};
use lanparty_core::stage::{DropReason, Filter, FilterContext, Verdict};
use lanparty_core::wire::{FrameView, ethertype};
use serde::Deserialize;

/// The classes of control frame, by the name used in `allow:` and as the
/// drop reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControlClass {
    /// Spanning tree BPDUs (01:80:C2:00:00:00).
    Stp,
    /// 802.3x pause / MAC control (01:80:C2:00:00:01, ethertype 0x8808).
    Pause,
    /// Slow protocols: LACP, marker, OAM (01:80:C2:00:00:02, ethertype 0x8809).
    SlowProtocols,
    /// 802.1X EAPOL to the PAE group address (01:80:C2:00:00:03).
    Eapol,
    /// LLDP (01:80:C2:00:00:0E, ethertype 0x88CC).
    Lldp,
    /// Any other address in 01:80:C2:00:00:04–0F.
    Reserved,
}

impl ControlClass {
    fn reason(self) -> DropReason {
        match self {
            ControlClass::Stp => "stp",
            ControlClass::Pause => "pause",
            ControlClass::SlowProtocols => "slow-protocols",
            ControlClass::Eapol => "eapol",
            ControlClass::Lldp => "lldp",
            ControlClass::Reserved => "ieee-reserved",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// The class of a frame, or `None` for ordinary traffic.
    pub fn of(frame: &FrameView<'_>) -> Option<ControlClass> {
        let eth = frame.eth();
        if eth.dst.is_ieee_link_local() {
            return Some(match eth.dst.0[5] {
                0x00 => ControlClass::Stp,
                0x01 => ControlClass::Pause,
                0x02 => ControlClass::SlowProtocols,
                0x03 => ControlClass::Eapol,
                0x0e => ControlClass::Lldp,
                _ => ControlClass::Reserved,
            });
        }
        match eth.ethertype {
            ethertype::MAC_CONTROL => Some(ControlClass::Pause),
            ethertype::SLOW_PROTOCOLS => Some(ControlClass::SlowProtocols),
            ethertype::LLDP => Some(ControlClass::Lldp),
            _ => None,
        }
    }
}

/// Drop STP, pause, LACP, 802.1X, LLDP and the rest of 01:80:C2:00:00:0X
/// (plus their ethertypes), tagged or not.
#[lanparty_core::stage_kind(filter(ingress), name = "switch-control", build = build,
    example = "ingress: [ { type: switch-control, allow: [eapol] } ]")]
#[derive(Debug, Clone, Default)]
pub struct SwitchControlSettings {
    /// Classes to let through (e.g. `[eapol]` for 802.1X).
    #[key(
        default = "[]",
        ty = "list of stp | pause | slow-protocols | eapol | lldp | reserved"
    )]
    pub allow: Vec<ControlClass>,
}

/// The filter.
#[derive(Debug)]
pub struct SwitchControl {
    allowed: u8,
}

impl Filter for SwitchControl {
    fn ingress(&mut self, _ctx: &FilterContext<'_>, frame: &FrameView<'_>) -> Verdict {
        match ControlClass::of(frame) {
            Some(class) if self.allowed & class.bit() == 0 => Verdict::Drop(class.reason()),
            _ => Verdict::Pass,
        }
    }
}

fn build(config: &StageConfig) -> Result<FilterFactory, Vec<ConfigError>> {
    let settings: SwitchControlSettings = config.parse()?;
    let allowed = settings.allow.iter().fold(0, |bits, c| bits | c.bit());
    Ok(filter_factory(allowed, |allowed| SwitchControl {
        allowed: *allowed,
    }))
}

#[cfg(test)]
mod tests {
    use lanparty_core::stage::LinkRole;
    use lanparty_core::testing::Harness;
    use lanparty_core::testing::frames::{self, Tags};
    use lanparty_core::wire::MacAddr;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

    fn harness(yaml: &str) -> Harness {
        let mut h = Harness::from_room_yaml(yaml).unwrap();
        h.add_link("lan", LinkRole::Lan, A);
        h.add_link("b", LinkRole::Gateway, MacAddr([2, 0, 0, 0, 0, 2]));
        h
    }

    #[test]
    fn drops_every_control_class_tagged_or_not() {
        let mut h = harness("ingress: [ { type: switch-control } ]");
        for tags in [Tags::None, Tags::Single(5), Tags::Double(9, 5)] {
            assert_eq!(
                h.send("lan", frames::stp_bpdu(A, tags)).drop_reason(),
                Some("stp")
            );
            assert_eq!(
                h.send("lan", frames::lldp(A, tags)).drop_reason(),
                Some("lldp")
            );
            assert_eq!(
                h.send("lan", frames::lacp(A, tags)).drop_reason(),
                Some("slow-protocols")
            );
            // The ethertype alone is enough, to any destination.
            let lldp_unicast = frames::ethernet(MacAddr([2, 9, 9, 9, 9, 9]), A, tags, 0x88cc, 20);
            assert_eq!(h.send("lan", lldp_unicast).drop_reason(), Some("lldp"));
            let reserved =
                frames::ethernet(MacAddr([1, 0x80, 0xc2, 0, 0, 0x08]), A, tags, 0x0800, 46);
            assert_eq!(h.send("lan", reserved).drop_reason(), Some("ieee-reserved"));
            let ordinary =
                frames::ethernet(MacAddr([1, 0x80, 0xc2, 0, 0, 0x10]), A, tags, 0x0800, 46);
            assert_eq!(h.send("lan", ordinary).destinations(), ["b"]);
        }
        assert_eq!(
            h.send("lan", frames::pause(A, 100)).drop_reason(),
            Some("pause")
        );
        assert_eq!(
            h.send("lan", frames::eapol_start(A)).drop_reason(),
            Some("eapol")
        );
    }

    #[test]
    fn exceptions_are_opt_in() {
        let mut h = harness("ingress: [ { type: switch-control, allow: [eapol, lldp] } ]");
        assert_eq!(h.send("lan", frames::eapol_start(A)).destinations(), ["b"]);
        assert_eq!(
            h.send("lan", frames::lldp(A, Tags::None)).destinations(),
            ["b"]
        );
        assert_eq!(
            h.send("lan", frames::stp_bpdu(A, Tags::None)).drop_reason(),
            Some("stp")
        );
        assert!(
            Harness::from_room_yaml("ingress: [ { type: switch-control, allow: [bpdu] } ]")
                .is_err()
        );
    }
}

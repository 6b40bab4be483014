//! Filters declared from outside lanparty-core with `#[stage_kind]`, the
//! way a third-party crate would: rewrites and egress drops through the
//! pipeline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lanparty_core::Bytes;
use lanparty_core::config::{ConfigError, StageConfig};
use lanparty_core::registry::{FilterFactory, Registry, StageKind, filter_factory};
use lanparty_core::stage::{Filter, FilterContext, LinkInfo, LinkRole, Verdict};
use lanparty_core::testing::Harness;
use lanparty_core::testing::frames::{self, Tags};
use lanparty_core::wire::{FrameView, MacAddr};

/// Zeroes the last byte of every frame (a stand-in for a real rewrite).
#[lanparty_core::stage_kind(filter(ingress), name = "test-zero-last-byte", build = build_zero,
    example = "ingress: [ { type: test-zero-last-byte } ]")]
struct ZeroLastByte {}

impl Filter for ZeroLastByte {
    fn ingress(&mut self, _: &FilterContext<'_>, frame: &FrameView<'_>) -> Verdict {
        let mut bytes = frame.bytes().to_vec();
        match bytes.last_mut() {
            Some(0) => Verdict::Pass,
            Some(last) => {
                *last = 0;
                Verdict::Replace(Bytes::from(bytes))
            }
            None => Verdict::Pass,
        }
    }
}

/// Keeps frames from `host` links.
#[lanparty_core::stage_kind(filter(egress), name = "test-no-hosts",
    build = |config| config.parse::<NoHosts>().map(|_| filter_factory((), |_| NoHosts {})),
    example = "egress: [ { type: test-no-hosts } ]")]
struct NoHosts {}

impl Filter for NoHosts {
    fn egress(&mut self, _: &FilterContext<'_>, _: &FrameView<'_>, dst: &LinkInfo) -> Verdict {
        if dst.role == LinkRole::Host {
            Verdict::Drop("no-hosts")
        } else {
            Verdict::Pass
        }
    }
}

fn build_zero(config: &StageConfig) -> Result<FilterFactory, Vec<ConfigError>> {
    let ZeroLastByte {} = config.parse()?;
    Ok(filter_factory((), |_| ZeroLastByte {}))
}

const ROOM: &str = "
ingress: [ { type: test-zero-last-byte } ]
egress: [ { type: test-no-hosts } ]
";

#[test]
fn registered_from_another_crate() {
    let registry = Registry::global().unwrap();
    assert_eq!(
        registry.get("test-zero-last-byte").unwrap().kind(),
        StageKind::Filter
    );
}

#[test]
fn rewrites_and_egress_drops() {
    let mut h = Harness::from_room_yaml(ROOM).unwrap();
    let a = MacAddr([2, 0, 0, 0, 0, 1]);
    h.add_link("a", LinkRole::Client, a);
    h.add_link("b", LinkRole::Client, MacAddr([2, 0, 0, 0, 0, 2]));
    h.add_link("me", LinkRole::Host, MacAddr([2, 0, 0, 0, 0, 3]));
    let mut frame = frames::ethernet(MacAddr::BROADCAST, a, Tags::None, 0x0800, 10);
    *frame.last_mut().unwrap() = 7;
    let d = h.send("a", frame.clone());
    assert_eq!(d.destinations(), ["b"]);
    assert_eq!(d.frame_to("b").unwrap().last(), Some(&0));
    assert_eq!(
        d.egress_dropped,
        vec![(
            "egress[0]:test-no-hosts".to_string(),
            "no-hosts".to_string()
        )]
    );
    let stats = h.stats();
    let zero = stats.stage("ingress[0]:test-zero-last-byte").unwrap();
    assert_eq!(
        (
            zero.counters.rx,
            zero.counters.pass,
            zero.counters.rewritten
        ),
        (1, 1, 1)
    );
    let egress = stats.stage("egress[0]:test-no-hosts").unwrap();
    assert_eq!(
        (
            egress.counters.rx,
            egress.counters.pass,
            egress.counters.dropped("no-hosts")
        ),
        (2, 1, 1)
    );
    assert_eq!(stats.delivered, 1);
}

#[test]
fn side_rules_are_enforced() {
    let err = Harness::from_room_yaml("egress: [ { type: test-zero-last-byte } ]")
        .err()
        .unwrap();
    assert!(err.to_string().contains("is an ingress filter"), "{err}");
    assert_eq!(err.0[0].key, "room.egress[0].type");
    let err = Harness::from_room_yaml("ingress: [ { type: test-zero-last-byte, x: 1 } ]")
        .err()
        .unwrap();
    assert_eq!(err.0[0].key, "room.ingress[0].x");
}

//! Tests for the example filter, written against lanparty's harness the
//! way any filter author would.

#![allow(clippy::unwrap_used)]

use lanparty_core::stage::LinkRole;
use lanparty_core::testing::frames::{Tags, ipv4_udp};
use lanparty_core::testing::{Harness, run_test_file};
use lanparty_core::wire::MacAddr;
// Integration tests are separate crates: name the filter crate here too.
use lanparty_custom_filter as _;

const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

#[test]
fn drops_only_the_blocked_ports() {
    let mut h =
        Harness::from_room_yaml("ingress: [ { type: udp-port-block, ports: [27950] } ]").unwrap();
    h.add_link("a", LinkRole::Client, A);
    h.add_link("b", LinkRole::Client, MacAddr([2, 0, 0, 0, 0, 2]));
    let udp = |src, dst, tags| {
        ipv4_udp(
            MacAddr::BROADCAST,
            A,
            tags,
            [10, 0, 0, 1],
            [10, 0, 0, 255],
            src,
            dst,
            b"hi",
        )
    };
    for tags in [Tags::None, Tags::Single(3)] {
        assert_eq!(
            h.send("a", udp(5000, 27950, tags)).drop_reason(),
            Some("blocked-udp-port")
        );
        assert_eq!(
            h.send("a", udp(27950, 5000, tags)).drop_reason(),
            Some("blocked-udp-port")
        );
        assert_eq!(h.send("a", udp(5000, 27960, tags)).destinations(), ["b"]);
    }
    assert!(Harness::from_room_yaml("ingress: [ { type: udp-port-block, ports: [] } ]").is_err());
}

#[test]
fn yaml_pipeline_tests() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pipeline.yaml");
    let result = run_test_file(&file).unwrap();
    assert_eq!(result.cases.len(), 2);
    for case in result.cases {
        assert_eq!(case.failure, None, "{}", case.name);
    }
}

#[test]
fn the_custom_binary_knows_the_filter() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lanparty-custom"))
        .args(["stages", "udp-port-block"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("UDP ports to drop"));
}

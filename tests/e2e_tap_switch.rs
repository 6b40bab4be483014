//! End to end on real interfaces: one `lanparty` node with two TAP ports
//! and the switch, each TAP moved into its own network namespace. Proves
//! the runtime, the rooms and the TAP port move real frames: ARP,
//! IPv4 and IPv6 ping, and that the filters act on live traffic.
//! Needs root (CI has it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::{Netns, TempDir, lanparty, ping};

#[test]
fn two_taps_switch_real_traffic() {
    let dir = TempDir::new("tapsw");
    let node = Netns::new("lpn");
    let a = Netns::new("lpa");
    let b = Netns::new("lpb");
    let dev_a = support::unique("lpta");
    let dev_b = support::unique("lptb");
    let config = dir.file(
        "lab.yaml",
        &format!(
            "node: {{ name: lab }}
ports:
  a: {{ type: tap, device: {dev_a}, mac: \"02:00:00:00:aa:01\" }}
  b: {{ type: tap, device: {dev_b}, mac: \"02:00:00:00:bb:01\" }}
room:
  mtu: 1400
  ingress: [ {{ type: mac-guard }}, {{ type: jumbo }} ]
  router: {{ type: switch }}
  egress: [ {{ type: reflection }} ]
"
        ),
    );
    let mut proc = node.spawn(
        &[
            lanparty().to_str().unwrap(),
            "run",
            config.to_str().unwrap(),
        ],
        &dir.0.join("node.log"),
    );
    assert!(
        node.wait_for_link(&dev_a, Duration::from_secs(10)),
        "TAP {dev_a} never appeared:\n{}",
        proc.log_text()
    );
    assert!(
        node.wait_for_link(&dev_b, Duration::from_secs(10)),
        "TAP {dev_b} never appeared"
    );
    // The port set MAC and MTU.
    let show = String::from_utf8(node.ip(&["link", "show", &dev_a]).stdout).unwrap();
    assert!(
        show.contains("mtu 1400") && show.contains("02:00:00:00:aa:01"),
        "{show}"
    );

    node.ip(&["link", "set", &dev_a, "netns", &a.name]);
    node.ip(&["link", "set", &dev_b, "netns", &b.name]);
    a.ip(&["addr", "add", "10.98.0.1/24", "dev", &dev_a]);
    b.ip(&["addr", "add", "10.98.0.2/24", "dev", &dev_b]);
    a.ip(&["link", "set", &dev_a, "up"]);
    b.ip(&["link", "set", &dev_b, "up"]);

    assert!(
        ping(&a, "10.98.0.2", 10),
        "IPv4 ping failed:\n{}",
        proc.log_text()
    );
    assert!(ping(&b, "10.98.0.1", 5));
    // IPv6 link-local (needs DAD to finish: retry).
    let ll_b = "fe80::ff:fe00:bb01";
    let ok = (0..20).any(|_| {
        std::thread::sleep(Duration::from_millis(200));
        a.exec(&[
            "ping",
            "-6",
            "-c",
            "1",
            "-W",
            "1",
            &format!("{ll_b}%{dev_a}"),
        ])
        .status
        .success()
    });
    assert!(ok, "IPv6 link-local ping failed");

    // Jumbo: a 1400-byte ping fits (1428 with headers), a 1500-byte one
    // cannot even leave a 1400-MTU device, and with DF the kernel says so.
    assert!(
        a.exec(&[
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            "-s",
            "1372",
            "-M",
            "do",
            "10.98.0.2"
        ])
        .status
        .success()
    );

    // Graceful shutdown on SIGTERM removes the devices it created.
    assert_eq!(
        proc.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        proc.log_text()
    );
    assert!(
        !support::try_sh(&["ip", "-n", &a.name, "link", "show", &dev_a]),
        "TAP survived its port"
    );
}

//! Hostile input through the whole relay filter chain: random bytes and
//! mutated real frames (truncated, bits flipped, tags stacked) from every
//! role. Nothing may panic, and whatever a client link gets through must
//! never be a DHCP server message or a router advertisement, nor carry a
//! spoofed source MAC.

#![allow(clippy::unwrap_used)]

use lanparty_core::stage::LinkRole;
use lanparty_core::testing::Harness;
use lanparty_core::testing::frames::{self, Tags};
use lanparty_core::wire::{FrameView, MacAddr};
use lanparty_filters as _;

const CHAIN: &str = "
mtu: 1394
ingress:
  - { type: mac-guard }
  - { type: switch-control }
  - { type: dhcp-server }
  - { type: ipv6-ra }
  - { type: storm, rate: 1000000, burst: 1000000 }
  - { type: jumbo }
router: { type: switch }
egress:
  - { type: jumbo }
  - { type: reflection }
";

/// xorshift64*: deterministic, so a failure is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_and_mutated_frames_never_panic_and_never_slip_through() {
    let client = MacAddr([2, 0, 0, 0, 0, 1]);
    let mut h = Harness::from_room_yaml(CHAIN).unwrap();
    h.add_link("client", LinkRole::Client, client);
    h.add_link("other", LinkRole::Client, MacAddr([2, 0, 0, 0, 0, 2]));
    h.add_link("gw", LinkRole::Gateway, MacAddr([2, 0, 0, 0, 0, 3]));
    let seeds: Vec<Vec<u8>> = [Tags::None, Tags::Single(7), Tags::Double(8, 9)]
        .into_iter()
        .flat_map(|t| {
            vec![
                frames::dhcp_offer(client, t, client),
                frames::dhcpv6_advertise(MacAddr::BROADCAST, client, t),
                frames::ipv6_ra(client, t, 1800),
                frames::stp_bpdu(client, t),
                frames::arp_request(client, t, [1, 2, 3, 4], [5, 6, 7, 8]),
                frames::ipv4_of_len(MacAddr::BROADCAST, client, t, 1394),
            ]
        })
        .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut delivered_from_client = 0;
    for round in 0..60_000 {
        let mut frame = if round % 4 == 0 {
            let len = rng.below(200);
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            let mut f = seeds[rng.below(seeds.len())].clone();
            for _ in 0..rng.below(4) {
                let at = rng.below(f.len());
                f[at] ^= 1 << rng.below(8);
            }
            if rng.below(3) == 0 {
                f.truncate(rng.below(f.len() + 1));
            }
            f
        };
        // Keep the client's own source MAC on most frames so they get past
        // mac-guard and reach the filters that look inside.
        if frame.len() >= 12 && round % 5 != 0 {
            frame[6..12].copy_from_slice(&client.0);
        }
        let from = ["client", "client", "client", "gw"][rng.below(4)];
        let d = h.send(from, frame);
        if from != "client" {
            continue;
        }
        for (_, bytes) in &d.delivered {
            delivered_from_client += 1;
            let view = FrameView::parse(bytes).expect("only parseable frames leave");
            assert_eq!(view.eth().src, client, "a spoofed source left the room");
            assert!(
                !view.is_dhcpv4_server() && !view.is_dhcpv6_server(),
                "a client's DHCP server message got through: {bytes:02x?}"
            );
            assert!(
                !view.is_ipv6_router_advertisement(),
                "a client's RA got through: {bytes:02x?}"
            );
            assert!(
                !view.is_ieee_link_local(),
                "a bridge control frame got through"
            );
        }
    }
    assert!(
        delivered_from_client > 1000,
        "the test must exercise the pass path too ({delivered_from_client})"
    );
}

//! Frames per second through a room pipeline: the switch alone, and the
//! switch behind the relay's full filter chain; 64- and 1400-byte frames;
//! 2 and 32 links. Run with `cargo bench -p lanparty-filters`.

#![allow(clippy::expect_used)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lanparty_core::Bytes;
use lanparty_core::pipeline::Pipeline;
use lanparty_core::stage::{LinkId, LinkInfo, LinkRole};
use lanparty_core::testing::frames::{Tags, ipv4_of_len};
use lanparty_core::testing::template_from_yaml;
use lanparty_core::time::Timestamp;
use lanparty_core::wire::MacAddr;
use lanparty_filters as _;

const SWITCH_ONLY: &str = "router: { type: switch }";
const RELAY_CHAIN: &str = "
ingress:
  - { type: mac-guard }
  - { type: switch-control }
  - { type: dhcp-server }
  - { type: ipv6-ra }
  - { type: storm }
  - { type: ethertype, deny: [llc] }
  - { type: jumbo }
router: { type: switch }
egress:
  - { type: jumbo }
  - { type: reflection }
";

const BATCH: usize = 1024;

fn mac(i: usize) -> MacAddr {
    MacAddr([2, 0, 0, 0, (i >> 8) as u8, i as u8])
}

/// A room with `links` client links, every MAC learned, and a batch of
/// unicast frames from link i to link i+1.
fn setup(room: &str, links: usize, l3_len: usize) -> (Pipeline, Vec<(LinkId, Bytes)>) {
    let template = template_from_yaml(room).expect("bench room");
    let mut pipeline = template.instantiate("bench");
    for i in 0..links {
        pipeline.add_link(LinkInfo {
            id: LinkId(i as u32 + 1),
            name: format!("l{i}").into(),
            role: LinkRole::Client,
            macs: vec![mac(i)],
            mtu: 1394,
        });
    }
    let frames: Vec<(LinkId, Bytes)> = (0..BATCH)
        .map(|n| {
            let i = n % links;
            let dst = mac((i + 1) % links);
            (
                LinkId(i as u32 + 1),
                Bytes::from(ipv4_of_len(dst, mac(i), Tags::None, l3_len)),
            )
        })
        .collect();
    // Learn every MAC.
    let mut out = Vec::new();
    for (link, frame) in frames.iter().take(links) {
        let _ = pipeline.process(Timestamp::ZERO, *link, frame.clone(), &mut out);
    }
    (pipeline, frames)
}

fn bench(c: &mut Criterion) {
    for (name, room) in [("switch-only", SWITCH_ONLY), ("relay-chain", RELAY_CHAIN)] {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(BATCH as u64));
        for links in [2usize, 32] {
            for l3_len in [46usize, 1386] {
                let frame_len = l3_len + 14;
                let (mut pipeline, frames) = setup(room, links, l3_len);
                let mut out = Vec::with_capacity(64);
                let mut now = Timestamp::ZERO;
                group.bench_function(
                    BenchmarkId::new(format!("{links}-links"), format!("{frame_len}B")),
                    |b| {
                        b.iter(|| {
                            now = now + std::time::Duration::from_micros(100);
                            for (link, frame) in &frames {
                                out.clear();
                                let _ = pipeline.process(now, *link, frame.clone(), &mut out);
                            }
                            out.len()
                        })
                    },
                );
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

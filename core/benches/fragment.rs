//! What overlay fragmentation costs per frame: splitting a frame into
//! fragment datagrams (headers written, payload copied as the sender's
//! encoder does) and reassembling it (the receiver's copy into one buffer),
//! for a 1514-byte frame over 1414-byte datagrams (2 fragments), a 1522-byte
//! QinQ frame over 600-byte datagrams (3) and a 9018-byte jumbo frame over
//! 1414 (7). Run with `cargo bench -p lanparty-core --bench fragment`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lanparty_core::time::Timestamp;
use lanparty_core::wire::fragment::{Reassembled, Reassembler, ReassemblyLimits, plan, split};

fn fragments(c: &mut Criterion) {
    let mut group = c.benchmark_group("fragment");
    for (len, budget) in [(1514usize, 1414usize), (1522, 600), (9018, 1414)] {
        let frame: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let Some((count, size)) = plan(len, budget) else {
            continue;
        };
        group.throughput(Throughput::Elements(1));
        let id = format!("{len}B/{budget}B-datagrams/{count}-fragments");
        let mut out = Vec::with_capacity(budget * count);
        group.bench_function(BenchmarkId::new("split", &id), |b| {
            b.iter(|| {
                out.clear();
                for (header, payload) in split(&frame, count, size, 7) {
                    out.extend_from_slice(&header.encode());
                    out.extend_from_slice(payload);
                }
                std::hint::black_box(&out);
            })
        });
        let pieces: Vec<_> = split(&frame, count, size, 7)
            .map(|(h, p)| (h, p.to_vec()))
            .collect();
        let mut r = Reassembler::new(
            ReassemblyLimits {
                max_frame: 9022,
                ..ReassemblyLimits::default()
            },
            None,
        );
        let mut frame_id = 0u32;
        group.bench_function(BenchmarkId::new("reassemble", &id), |b| {
            b.iter(|| {
                frame_id = frame_id.wrapping_add(1);
                let mut done = None;
                for (h, p) in &pieces {
                    let mut h = *h;
                    h.frame_id = frame_id;
                    if let Reassembled::Frame(f) = r.push(Timestamp::ZERO, h, p) {
                        done = Some(f);
                    }
                }
                std::hint::black_box(done)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fragments);
criterion_main!(benches);

//! The Internet checksum's sum over a full-size frame's payload and over a
//! 64 kB super-packet: what the TAP adapter pays per UDP datagram and per
//! TSO segment whose checksum the kernel left to it. Run with
//! `cargo bench -p lanparty-core --bench checksum`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lanparty_core::wire::checksum::{fold, sum};

fn checksum(c: &mut Criterion) {
    let data: Vec<u8> = (0..65_536u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut group = c.benchmark_group("checksum");
    for len in [1_408usize, 65_536] {
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(format!("sum {len} bytes"), |b| {
            b.iter(|| fold(sum(std::hint::black_box(&data[..len]), 0)))
        });
    }
    group.finish();
}

criterion_group!(benches, checksum);
criterion_main!(benches);

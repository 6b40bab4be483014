//! What header compression costs per frame on each side: the sender's
//! `plan` and compressed write of a 1408-byte TCP/IPv4 frame of a flow with
//! an acknowledged context, and the receiver's rebuild of it; beside them
//! the plain copy every frame costs anyway. Run with
//! `cargo bench -p lanparty-core --bench compress`.

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lanparty_core::testing::frames::{Tags, tcp_segment};
use lanparty_core::time::Timestamp;
use lanparty_core::wire::MacAddr;
use lanparty_core::wire::compress::{Compressor, Decompressor, Encoding};

fn compress(c: &mut Criterion) {
    let (a, b) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
    let frame = tcp_segment(b, a, Tags::None, false, false, true, None, &[7u8; 1354]);
    let (mut tx, mut rx) = (Compressor::default(), Decompressor::default());
    let slot = loop {
        match tx.plan(&frame, Timestamp::ZERO) {
            Encoding::Plain => {}
            Encoding::Install { slot, generation } => {
                rx.install(slot, generation, &frame).unwrap_or_default();
                tx.acked(slot, generation);
            }
            Encoding::Compressed { slot, .. } => break slot,
        }
    };
    let mut group = c.benchmark_group("compress");
    group.throughput(Throughput::Elements(1));
    let mut out = BytesMut::with_capacity(1 << 20);
    group.bench_function("plain copy (1408-byte frame)", |bench| {
        bench.iter(|| {
            out.clear();
            out.extend_from_slice(&frame);
            std::hint::black_box(&out);
        })
    });
    group.bench_function("plan + compress", |bench| {
        bench.iter(|| {
            out.clear();
            let plan = tx.plan(std::hint::black_box(&frame), Timestamp::ZERO);
            tx.write_compressed(slot, &frame, &mut out);
            std::hint::black_box((plan, &out));
        })
    });
    let mut wire = BytesMut::new();
    tx.write_compressed(slot, &frame, &mut wire);
    group.bench_function("rebuild", |bench| {
        bench.iter(|| {
            out.clear();
            let done = rx.decompress(wire[0], wire[1], &wire[2..], &mut out);
            let _ = std::hint::black_box((done, &out));
        })
    });
    group.finish();
}

criterion_group!(benches, compress);
criterion_main!(benches);

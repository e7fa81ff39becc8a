//! Ring lookups: the owner of a key, and its three distinct successors (failover order).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use shoal_cache_core::Ring;
use shoal_cache_core::ring::DEFAULT_VNODES;

fn bench(c: &mut Criterion) {
    let ring = Ring::with_nodes(DEFAULT_VNODES, (0..6).map(|i| format!("edge-{i}"))).expect("ring");
    let keys: Vec<String> = (0..1024)
        .map(|i| format!("example.com/objects/{i}"))
        .collect();
    let mut i = 0usize;
    c.bench_function("ring/owner/6x256", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(ring.owner(&keys[i]).ok())
        })
    });
    c.bench_function("ring/successors3/6x256", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(ring.successors(&keys[i], 3))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

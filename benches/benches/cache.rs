//! Store throughput per policy over 1M entries: get-hit, insert, and a 90/10 get/insert
//! mix, on one task and on two tasks (one per core of the reference machine).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shoal_cache_core::object::Weighted;
use shoal_cache_core::{Policy, Store, StoreConfig};

const ENTRIES: usize = 1_000_000;

fn keys() -> Vec<Arc<str>> {
    (0..ENTRIES)
        .map(|i| Arc::from(format!("example.com/objects/{i}")))
        .collect()
}

/// A cheap deterministic index sequence (xorshift) so the access order is not sequential.
fn index(state: &mut u64) -> usize {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state % ENTRIES as u64) as usize
}

async fn filled(policy: Policy, keys: &[Arc<str>]) -> Store<Weighted> {
    let s = Store::new(StoreConfig {
        capacity: 4 * ENTRIES as u64,
        max_object_size: 1 << 20,
        policy,
    })
    .expect("valid config");
    for k in keys {
        let _ = s.insert(k.clone(), Arc::new(Weighted { size: 1 })).await;
    }
    s.run_pending_tasks().await;
    s
}

#[derive(Clone, Copy)]
enum Op {
    Get,
    Insert,
    Mix,
}

async fn work(s: Store<Weighted>, keys: Arc<Vec<Arc<str>>>, op: Op, n: u64, seed: u64) {
    let mut st = seed | 1;
    for i in 0..n {
        let k = &keys[index(&mut st)];
        let insert = match op {
            Op::Get => false,
            Op::Insert => true,
            Op::Mix => i % 10 == 0,
        };
        if insert {
            let _ = s.insert(k.clone(), Arc::new(Weighted { size: 1 })).await;
        } else {
            black_box(s.get(k).await);
        }
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let keys = Arc::new(keys());
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(1))
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for policy in Policy::ALL {
        let s = rt.block_on(filled(policy, &keys));
        for (name, op) in [
            ("get_hit", Op::Get),
            ("insert", Op::Insert),
            ("mix_90_10", Op::Mix),
        ] {
            for tasks in [1u64, 2] {
                let id = BenchmarkId::new(format!("{name}/{tasks}task"), policy);
                g.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        let start = Instant::now();
                        rt.block_on(async {
                            let hs: Vec<_> = (0..tasks)
                                .map(|t| {
                                    tokio::spawn(work(
                                        s.clone(),
                                        keys.clone(),
                                        op,
                                        iters / tasks,
                                        t + 1,
                                    ))
                                })
                                .collect();
                            for h in hs {
                                h.await.expect("bench task");
                            }
                        });
                        start.elapsed()
                    })
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

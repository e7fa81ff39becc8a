//! The hit-rate replay on real traces against the reference figures of
//! `shared/traces/README.md`: plain LRU must reproduce its reference (moka's LRU policy is
//! exact LRU), and the default policy must reach the S3-FIFO reference (within 0.5 points)
//! and never fall below LRU.

use shoal_cache_core::Policy;
use shoal_loadgen::replay::hitrate::{self, Capacity, Report};
use shoal_loadgen::replay::trace::Trace;

fn replay(trace: &str, caps: &[&str]) -> Report {
    let t = Trace::load(&shoal_tests::trace(trace)).expect("trace loads");
    let caps: Vec<_> = caps
        .iter()
        .map(|c| (c.to_string(), c.parse::<Capacity>().expect("capacity")))
        .collect();
    hitrate::run(&t, &caps).expect("replay")
}

fn ohr(report: &Report, run: usize, policy: &str) -> f64 {
    report.runs[run]
        .results
        .iter()
        .find(|r| r.policy.starts_with(policy))
        .map(|r| r.object_hit_ratio)
        .expect("policy present")
}

#[test]
fn web_trace_matches_the_reference_figures() {
    // Reference rows (LRU, S3-FIFO, Belady MIN): web_adaptsize_67k at 0.1%, 1%, 10% of objects.
    let refs = [
        (11.50, 13.09, 20.64),
        (20.63, 23.08, 31.15),
        (29.67, 32.58, 39.93),
    ];
    let r = replay("web_adaptsize_67k.csv.gz", &["0.1%obj", "1%obj", "10%obj"]);
    let default = Policy::default().as_str();
    for (i, (lru, s3, min)) in refs.iter().enumerate() {
        assert!(
            (ohr(&r, i, "lru") - lru).abs() < 0.05,
            "run {i}: LRU {}",
            ohr(&r, i, "lru")
        );
        assert!(
            (ohr(&r, i, "belady") - min).abs() < 0.05,
            "run {i}: MIN {}",
            ohr(&r, i, "belady")
        );
        let d = ohr(&r, i, default);
        assert!(
            d >= s3 - 0.5,
            "run {i}: default {d} below S3-FIFO reference {s3}"
        );
        assert!(d >= ohr(&r, i, "lru"), "run {i}: default below LRU");
    }
}

#[test]
fn byte_capacity_rows_and_byte_hit_ratio() {
    // web_adaptsize_67k at 1% and 10% of unique bytes: LRU 20.93 / 24.50 and 29.83 / 30.78.
    let r = replay("web_adaptsize_67k.csv.gz", &["1%", "10%"]);
    let lru = |run: usize| {
        let x = r.runs[run]
            .results
            .iter()
            .find(|x| x.policy == "lru")
            .expect("lru");
        (x.object_hit_ratio, x.byte_hit_ratio)
    };
    for (run, (o, b)) in [(0, (20.93, 24.50)), (1, (29.83, 30.78))] {
        let (go, gb) = lru(run);
        assert!(
            (go - o).abs() < 0.05 && (gb - b).abs() < 0.05,
            "run {run}: {go} / {gb}"
        );
    }
    let default = Policy::default().as_str();
    for (run, s3) in [(0, 24.25), (1, 32.99)] {
        assert!(ohr(&r, run, default) >= s3 - 0.5, "run {run}");
    }
}

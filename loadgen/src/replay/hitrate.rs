//! Hit-ratio replay: a trace through the real [`Store`] under every policy, and through
//! two reference policies computed here — FIFO and Belady's MIN.
//!
//! Conventions follow `../shared/traces/README.md`: every request counts (no warm-up), a miss
//! inserts the object, and an object larger than the whole cache is never cached. moka's
//! pending maintenance runs after every insert, so capacity is enforced as in steady state.
//!
//! Belady's MIN (evict the object whose next use is furthest away; never admit an object
//! that is not used again, or is used later than everything cached) is exact for count
//! capacity. For byte capacity no exact optimum is tractable; the same rule applied until the
//! new object fits is reported as `belady-size (heuristic)`: an estimate of the headroom,
//! not a bound.

use std::collections::{BinaryHeap, VecDeque};
use std::str::FromStr;
use std::sync::Arc;

use serde::Serialize;
use shoal_cache_core::object::Weighted;
use shoal_cache_core::size::parse_bytes;
use shoal_cache_core::{Policy, Store, StoreConfig};

use crate::LoadgenError;
use crate::replay::trace::Trace;

/// A cache capacity as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Capacity {
    /// Bytes (`64MiB`).
    Bytes(u64),
    /// Percent of the trace's unique bytes (`1%`).
    ShareOfBytes(f64),
    /// Objects, each weighing 1 (`1435obj`).
    Objects(u64),
    /// Percent of the trace's distinct objects, each weighing 1 (`1%obj`).
    ShareOfObjects(f64),
}

impl FromStr for Capacity {
    type Err = LoadgenError;
    fn from_str(s: &str) -> Result<Self, LoadgenError> {
        let err = |reason: &str| LoadgenError::Capacity {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let t = s.trim();
        let pct = |p: &str| -> Result<f64, LoadgenError> {
            let v: f64 = p.trim().parse().map_err(|_| err("not a percentage"))?;
            if !(v > 0.0 && v <= 100.0) {
                return Err(err("percentage must be in (0, 100]"));
            }
            Ok(v)
        };
        if let Some(n) = t.strip_suffix("%obj") {
            return Ok(Self::ShareOfObjects(pct(n)?));
        }
        if let Some(n) = t.strip_suffix("obj") {
            let v: u64 = n
                .trim()
                .parse()
                .map_err(|_| err("not a whole number of objects"))?;
            if v == 0 {
                return Err(err("must be at least 1 object"));
            }
            return Ok(Self::Objects(v));
        }
        if let Some(n) = t.strip_suffix('%') {
            return Ok(Self::ShareOfBytes(pct(n)?));
        }
        let b = parse_bytes(t).map_err(|e| err(&e.to_string()))?;
        if b == 0 {
            return Err(err("must be at least 1 byte"));
        }
        Ok(Self::Bytes(b))
    }
}

/// Whether objects weigh their size or 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Units {
    /// Capacity in bytes; objects weigh their size.
    Bytes,
    /// Capacity in objects; every object weighs 1.
    Objects,
}

impl Capacity {
    /// The capacity in weight units for `trace`.
    pub fn resolve(self, trace: &Trace) -> (Units, u64) {
        let share = |total: u64, p: f64| ((total as f64 * p / 100.0).round() as u64).max(1);
        match self {
            Self::Bytes(b) => (Units::Bytes, b),
            Self::ShareOfBytes(p) => (Units::Bytes, share(trace.unique_bytes(), p)),
            Self::Objects(n) => (Units::Objects, n),
            Self::ShareOfObjects(p) => (Units::Objects, share(trace.distinct_objects(), p)),
        }
    }
}

/// One policy's result.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyResult {
    /// Policy name (`lru`, `tinylfu`, `s3fifo` are the Store's; `fifo`, `belady…` references).
    pub policy: String,
    /// Whether this is the Store's default policy.
    pub default: bool,
    /// Object hit ratio, percent.
    pub object_hit_ratio: f64,
    /// Byte hit ratio, percent.
    pub byte_hit_ratio: f64,
    /// Requests that hit.
    pub hits: u64,
    /// Bytes served from hits.
    pub hit_bytes: u64,
    /// Replay time in milliseconds.
    pub millis: u64,
}

/// One replay at one capacity.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Capacity as given.
    pub capacity: String,
    /// Units of `capacity_units`.
    pub units: Units,
    /// Resolved capacity in weight units.
    pub capacity_units: u64,
    /// Results per policy.
    pub results: Vec<PolicyResult>,
}

/// A trace's replay at one or more capacities.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Trace name.
    pub trace: String,
    /// Requests replayed.
    pub requests: u64,
    /// Distinct objects.
    pub distinct_objects: u64,
    /// Sum of distinct objects' sizes.
    pub unique_bytes: u64,
    /// Sum of all requests' sizes.
    pub requested_bytes: u64,
    /// One entry per capacity.
    pub runs: Vec<Run>,
}

/// Hits and hit bytes.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    hits: u64,
    hit_bytes: u64,
}

/// Replays through the real Store with `policy`.
async fn replay_store(
    trace: &Trace,
    keys: &[Arc<str>],
    policy: Policy,
    units: Units,
    capacity: u64,
) -> Result<Tally, LoadgenError> {
    let store: Store<Weighted> = Store::new(StoreConfig {
        capacity,
        max_object_size: capacity.min(u64::from(u32::MAX)),
        policy,
    })?;
    let mut t = Tally::default();
    let moka = policy != Policy::S3Fifo;
    for r in &trace.requests {
        let key = &keys[r.object as usize];
        if store.get(key).await.is_some() {
            t.hits += 1;
            t.hit_bytes += r.size;
        } else {
            let size = match units {
                Units::Bytes => r.size,
                Units::Objects => 1,
            };
            if store
                .insert(key.clone(), Arc::new(Weighted { size }))
                .await
                .is_ok()
                && moka
            {
                store.run_pending_tasks().await;
            }
        }
    }
    Ok(t)
}

fn weight(units: Units, size: u64) -> u64 {
    match units {
        Units::Bytes => size,
        Units::Objects => 1,
    }
}

fn replay_fifo(trace: &Trace, units: Units, capacity: u64) -> Tally {
    let mut cached = vec![false; trace.object_sizes.len()];
    let mut queue = VecDeque::new();
    let (mut used, mut t) = (0u64, Tally::default());
    for r in &trace.requests {
        let o = r.object as usize;
        if cached[o] {
            t.hits += 1;
            t.hit_bytes += r.size;
            continue;
        }
        let w = weight(units, r.size);
        if w > capacity {
            continue;
        }
        while used + w > capacity {
            let Some(v) = queue.pop_front() else { break };
            cached[v as usize] = false;
            used -= weight(units, trace.object_sizes[v as usize]);
        }
        cached[o] = true;
        queue.push_back(r.object);
        used += w;
    }
    t
}

fn replay_belady(trace: &Trace, units: Units, capacity: u64) -> Tally {
    const NEVER: usize = usize::MAX;
    let n = trace.requests.len();
    let mut next = vec![NEVER; n];
    let mut last_seen = vec![NEVER; trace.object_sizes.len()];
    for (i, r) in trace.requests.iter().enumerate().rev() {
        next[i] = last_seen[r.object as usize];
        last_seen[r.object as usize] = i;
    }
    // `next_use[o]` is the live next use of a cached object; heap entries that disagree are
    // stale and skipped.
    let mut next_use = vec![NEVER; trace.object_sizes.len()];
    let mut cached = vec![false; trace.object_sizes.len()];
    let mut heap: BinaryHeap<(usize, u32)> = BinaryHeap::new();
    let (mut used, mut t) = (0u64, Tally::default());
    for (i, r) in trace.requests.iter().enumerate() {
        let o = r.object as usize;
        let nu = next[i];
        if cached[o] {
            t.hits += 1;
            t.hit_bytes += r.size;
            if nu == NEVER {
                cached[o] = false; // dead from here on: free its room at once
                used -= weight(units, r.size);
            } else {
                next_use[o] = nu;
                heap.push((nu, r.object));
            }
            continue;
        }
        let w = weight(units, r.size);
        if nu == NEVER || w > capacity {
            continue;
        }
        let mut admit = true;
        while used + w > capacity {
            let Some(&(top_nu, top)) = heap.peek() else {
                break;
            };
            if !cached[top as usize] || next_use[top as usize] != top_nu {
                heap.pop();
                continue;
            }
            if top_nu > nu {
                heap.pop();
                cached[top as usize] = false;
                used -= weight(units, trace.object_sizes[top as usize]);
            } else {
                admit = false;
                break;
            }
        }
        if admit && used + w <= capacity {
            cached[o] = true;
            next_use[o] = nu;
            heap.push((nu, r.object));
            used += w;
        }
    }
    t
}

/// Replays `trace` at each capacity under every Store policy and the references. Policies
/// run on parallel threads (each replay is sequential, as a trace must be).
pub fn run(trace: &Trace, capacities: &[(String, Capacity)]) -> Result<Report, LoadgenError> {
    let keys: Vec<Arc<str>> = (0..trace.object_sizes.len())
        .map(|i| Arc::from(i.to_string()))
        .collect();
    let requested_bytes: u64 = trace.requests.iter().map(|r| r.size).sum();
    let total = trace.requests.len() as f64;
    let mut runs = Vec::new();
    for (label, cap) in capacities {
        let (units, capacity) = cap.resolve(trace);
        let belady = match units {
            Units::Objects => "belady",
            Units::Bytes => "belady-size (heuristic)",
        };
        let mut names: Vec<String> = Policy::ALL.iter().map(|p| p.to_string()).collect();
        names.push("fifo".into());
        names.push(belady.into());
        let results: Vec<Result<PolicyResult, LoadgenError>> = std::thread::scope(|s| {
            let handles: Vec<_> = names
                .iter()
                .map(|name| {
                    let keys = &keys;
                    s.spawn(move || -> Result<PolicyResult, LoadgenError> {
                        let start = std::time::Instant::now();
                        let tally = match name.parse::<Policy>() {
                            Ok(p) => tokio::runtime::Builder::new_current_thread()
                                .build()
                                .map_err(LoadgenError::Runtime)?
                                .block_on(replay_store(trace, keys, p, units, capacity))?,
                            Err(_) if name == "fifo" => replay_fifo(trace, units, capacity),
                            Err(_) => replay_belady(trace, units, capacity),
                        };
                        Ok(PolicyResult {
                            policy: name.clone(),
                            default: name.parse::<Policy>().ok() == Some(Policy::default()),
                            object_hit_ratio: 100.0 * tally.hits as f64 / total,
                            byte_hit_ratio: 100.0 * tally.hit_bytes as f64 / requested_bytes as f64,
                            hits: tally.hits,
                            hit_bytes: tally.hit_bytes,
                            millis: start.elapsed().as_millis() as u64,
                        })
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        runs.push(Run {
            capacity: label.clone(),
            units,
            capacity_units: capacity,
            results: results.into_iter().collect::<Result<_, _>>()?,
        });
    }
    Ok(Report {
        trace: trace.name.clone(),
        requests: trace.requests.len() as u64,
        distinct_objects: trace.distinct_objects(),
        unique_bytes: trace.unique_bytes(),
        requested_bytes,
        runs,
    })
}

/// Renders a report as a text table.
pub fn render(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "trace {}: {} requests, {} distinct objects, {} unique bytes",
        report.trace, report.requests, report.distinct_objects, report.unique_bytes
    );
    for run in &report.runs {
        let unit = match run.units {
            Units::Bytes => "bytes",
            Units::Objects => "objects",
        };
        let _ = writeln!(
            out,
            "\ncapacity {} = {} {unit}\n{:<26} {:>10} {:>10} {:>8}",
            run.capacity, run.capacity_units, "policy", "object hit", "byte hit", "ms"
        );
        for r in &run.results {
            let name = if r.default {
                format!("{} (default)", r.policy)
            } else {
                r.policy.clone()
            };
            let _ = writeln!(
                out,
                "{name:<26} {:>9.2}% {:>9.2}% {:>8}",
                r.object_hit_ratio, r.byte_hit_ratio, r.millis
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::trace::Request;

    fn trace(ids: &[u32], size: u64) -> Trace {
        let distinct = ids.iter().max().map_or(0, |m| *m as usize + 1);
        Trace {
            name: "t".into(),
            requests: ids.iter().map(|&object| Request { object, size }).collect(),
            object_sizes: vec![size; distinct],
            times: (0..ids.len() as u64).collect(),
        }
    }

    #[test]
    fn capacity_forms() {
        assert_eq!(
            "64MiB".parse::<Capacity>().unwrap(),
            Capacity::Bytes(64 << 20)
        );
        assert_eq!(
            "1%".parse::<Capacity>().unwrap(),
            Capacity::ShareOfBytes(1.0)
        );
        assert_eq!(
            "1435obj".parse::<Capacity>().unwrap(),
            Capacity::Objects(1435)
        );
        assert_eq!(
            "0.1%obj".parse::<Capacity>().unwrap(),
            Capacity::ShareOfObjects(0.1)
        );
        for bad in ["0%", "101%", "x%", "0obj", "-1obj", "lots", "0"] {
            assert!(bad.parse::<Capacity>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn belady_is_exact_on_a_textbook_sequence() {
        // Capacity 3 over 7 0 1 2 0 3 0 4 2 3 0 3 2. Demand-paging OPT (which must load
        // every page) hits 6 times; MIN with bypass, as the reference figures count it, never
        // admits 7, 1 or 4 (not used again) and hits 7 times. FIFO hits 3 times.
        let t = trace(&[7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2], 1);
        assert_eq!(replay_belady(&t, Units::Objects, 3).hits, 7);
        assert_eq!(replay_fifo(&t, Units::Objects, 3).hits, 3);
    }

    #[test]
    fn every_policy_is_bounded_by_belady_and_counts_bytes() {
        let ids: Vec<u32> = (0..20_000u32)
            .map(|i| (i * 7919 % 1000) % (1 + i % 300))
            .collect();
        let t = trace(&ids, 10);
        let r = run(&t, &[("5%obj".into(), Capacity::ShareOfObjects(5.0))]).unwrap();
        let res = &r.runs[0].results;
        let best = res.iter().find(|x| x.policy == "belady").unwrap().hits;
        for x in res {
            assert!(x.hits <= best, "{} beat Belady", x.policy);
            assert_eq!(x.hit_bytes, x.hits * 10);
        }
    }
}

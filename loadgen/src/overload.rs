//! A 10× overload of one edge: what `shoal overload` measures.
//!
//! One edge in front of an origin reached over a link with a round trip of `2 ×
//! link_delay` (a relay on loopback). Every request asks for an object drawn uniformly from
//! `objects`, with a cache far too small to hold them, so nearly every request is an origin
//! fill and the edge's capacity is set by its fill slots: about `max_fills` fills per
//! round trip. That is the overload a CDN edge meets in practice (a spike of distinct
//! misses in front of a distant origin), and it is one a generator on the same two cores
//! can drive ten times over.
//!
//! First a probe at twice that nominal rate measures the capacity (answered per second,
//! over the probe's last seconds). Then, on the same edge, half the capacity, ten times
//! the capacity, and half again. The figures: goodput during the overload as a share of the
//! capacity, how fast the refused requests were refused (their p99), and how long after
//! the overload every second was back to the baseline's latency with no errors.

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use shoal_cache_core::size::ByteSize;

use crate::LoadgenError;
use crate::harness::cluster::{Cluster, ClusterSpec};
use crate::load::{Arrivals, Keys, Options, Phase, Plan, Results, Target, run};

/// The overload experiment.
#[derive(Debug, Clone)]
pub struct OverloadConfig {
    /// Distinct objects at the origin.
    pub objects: u64,
    /// Bytes per object.
    pub object_size: usize,
    /// The edge's fill slots (`overload.max_fills`).
    pub max_fills: usize,
    /// The edge's fill queue (`overload.max_fill_queue`).
    pub max_fill_queue: usize,
    /// One-way delay between the edge and the origin.
    pub link_delay: Duration,
    /// The overload, as a multiple of the measured capacity.
    pub factor: f64,
    /// Length of the capacity probe.
    pub probe: Duration,
    /// Lengths of the baseline, overload and after phases.
    pub phases: [Duration; 3],
}

impl Default for OverloadConfig {
    fn default() -> Self {
        Self {
            objects: 200_000,
            object_size: 256,
            max_fills: 32,
            max_fill_queue: 128,
            link_delay: Duration::from_millis(25),
            factor: 10.0,
            probe: Duration::from_secs(5),
            phases: [
                Duration::from_secs(5),
                Duration::from_secs(10),
                Duration::from_secs(10),
            ],
        }
    }
}

/// What the experiment measured.
#[derive(Debug, Clone, Serialize)]
pub struct OverloadReport {
    /// Answered per second at twice the nominal rate: the edge's capacity.
    pub capacity: f64,
    /// Requests per second offered during the overload.
    pub offered: f64,
    /// Answered per second during the overload.
    pub goodput: f64,
    /// Goodput ÷ capacity.
    pub goodput_share: f64,
    /// Refused requests during the overload.
    pub refused: u64,
    /// 99th percentile latency of those refusals, ms.
    pub refused_p99_ms: f64,
    /// 99th percentile latency of the baseline, ms.
    pub baseline_p99_ms: f64,
    /// Seconds from the end of the overload to the first second from which on every
    /// second had no error and a p99 within twice the baseline's (plus a millisecond);
    /// `None` if that never happened within the after phase.
    pub recovered_after_s: Option<f64>,
    /// The probe run.
    pub probe: Results,
    /// The baseline, overload and after run.
    pub run: Results,
}

const PREFIX: &str = "/load/";

/// Runs the experiment on a fresh cluster.
pub async fn run(cfg: &OverloadConfig) -> Result<OverloadReport, LoadgenError> {
    if cfg.objects == 0 || cfg.max_fills == 0 || cfg.factor.is_nan() || cfg.factor < 1.0 {
        return Err(LoadgenError::Plan(
            "overload needs objects, fill slots and a factor of at least 1".into(),
        ));
    }
    let mut spec = ClusterSpec {
        regions: vec!["r0".into()],
        edges_per_region: 1,
        relay: true,
        ..ClusterSpec::default()
    };
    spec.edge.overload.max_fills = cfg.max_fills;
    spec.edge.overload.max_fill_queue = cfg.max_fill_queue;
    // Room for a few hundred objects: the draws are misses, as in front of a huge catalogue.
    spec.edge.cache.capacity = ByteSize(64 * (cfg.object_size as u64 + 512));
    let cluster = Cluster::start(spec).await?;
    cluster.wait_ready(Duration::from_secs(10)).await?;
    let body = Bytes::from(vec![b'o'; cfg.object_size]);
    for i in 0..cfg.objects {
        cluster
            .store()
            .put(&format!("{PREFIX}{i}"), body.clone(), None)?;
    }
    if let Some(r) = &cluster.relay {
        r.set_delay(cfg.link_delay);
    }
    let result = measure(&cluster, cfg).await;
    cluster.shutdown().await;
    result
}

async fn measure(cluster: &Cluster, cfg: &OverloadConfig) -> Result<OverloadReport, LoadgenError> {
    let keys = Keys::Uniform {
        prefix: PREFIX.into(),
        objects: cfg.objects,
    };
    let rtt = 2.0 * cfg.link_delay.as_secs_f64().max(1e-3);
    let nominal = cfg.max_fills as f64 / rtt;
    let edges = &cluster.regions[0].edges;
    let opts = Options {
        metrics: edges.iter().flatten().map(|e| e.admin_addr).collect(),
        progress: true,
        seed: 7,
    };
    let target = || -> Result<Target, LoadgenError> {
        Ok(Target::Region(
            cluster.client(0)?.with_timeout(Duration::from_secs(5)),
        ))
    };

    let probe_plan = plan(vec![phase("probe", cfg.probe, 2.0 * nominal, &keys)]);
    let probe = run::run(&probe_plan, &target()?, &opts).await?;
    // The first second fills the pipeline; the rest is what the edge sustains.
    let steady: Vec<u64> = probe.timeline.iter().skip(1).map(|s| s.ok).collect();
    let capacity = steady.iter().sum::<u64>() as f64 / steady.len().max(1) as f64;
    if capacity < 1.0 {
        return Err(LoadgenError::Plan(
            "the probe got no answers: nothing to overload".into(),
        ));
    }

    let [before, during, after] = cfg.phases;
    let offered = cfg.factor * capacity;
    let main_plan = plan(vec![
        phase("baseline", before, capacity / 2.0, &keys),
        phase("spike", during, offered, &keys),
        phase("after", after, capacity / 2.0, &keys),
    ]);
    let results = run::run(&main_plan, &target()?, &opts).await?;
    let (base, spike) = (&results.phases[0], &results.phases[1]);
    let goodput = spike.ok as f64 / during.as_secs_f64();
    let spike_end = (before + during).as_secs();
    let bar = 2.0 * base.p99_ms + 1.0;
    let after_secs: Vec<_> = results
        .timeline
        .iter()
        .filter(|s| s.t >= spike_end && s.sent > 0)
        .collect();
    let recovered_after_s = (0..after_secs.len())
        .find(|&i| {
            after_secs[i..]
                .iter()
                .all(|s| s.errors.is_empty() && s.p99_ms <= bar)
        })
        .map(|i| (after_secs[i].t - spike_end) as f64);
    Ok(OverloadReport {
        capacity,
        offered,
        goodput,
        goodput_share: goodput / capacity,
        refused: spike.errors,
        refused_p99_ms: spike.failed_p99_ms,
        baseline_p99_ms: base.p99_ms,
        recovered_after_s,
        probe,
        run: results,
    })
}

/// A constant rate with Poisson arrivals, as independent clients arrive.
fn phase(name: &str, d: Duration, rate: f64, keys: &Keys) -> Phase {
    Phase {
        arrivals: Arrivals::Poisson,
        ..Phase::constant(name, d, rate, keys.clone())
    }
}

/// HTTP/2 with many streams per connection, so that a refusal is never queued behind a
/// fill on the generator's side and its latency is the edge's alone.
fn plan(phases: Vec<Phase>) -> Plan {
    let mut p = Plan::new(phases);
    p.http2 = true;
    p.connections = 8;
    p
}

/// The figures as text.
pub fn render(cfg: &OverloadConfig, r: &OverloadReport) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "one edge, {} fill slots and a queue of {}, origin RTT {} ms, uniform draws over {} objects of {} B\n\n",
        cfg.max_fills,
        cfg.max_fill_queue,
        2 * cfg.link_delay.as_millis(),
        cfg.objects,
        cfg.object_size
    );
    out.push_str(&crate::load::report::table(&r.run));
    let _ = writeln!(
        out,
        "\ncapacity (probe at 2× nominal): {:.0} answered/s\n\
         overload: {:.0}/s offered ({:.0}×), goodput {:.0}/s = {:.1}% of capacity\n\
         refused: {} requests, p99 {:.2} ms\n\
         baseline p99 {:.2} ms; back to it with no errors {} after the overload",
        r.capacity,
        r.offered,
        cfg.factor,
        r.goodput,
        100.0 * r.goodput_share,
        r.refused,
        r.refused_p99_ms,
        r.baseline_p99_ms,
        r.recovered_after_s
            .map_or("never".to_string(), |s| format!("within {:.0} s", s + 1.0)),
    );
    out
}

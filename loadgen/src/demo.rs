//! The demo: the main job a newcomer runs.
//!
//! Starts an origin holding a generated set of objects (small web objects, medium images,
//! multi-megabyte video segments) and regions of edges on loopback, fetches every object
//! through every region twice with concurrent clients, and reports per region: requests,
//! hit ratio, origin fetches, p50/p99 latency. Then it purges objects one at a time through
//! the origin's admin API and times each until every edge has applied it (the propagation
//! of an invalidation). Then viewers in every region play the origin's synthetic 60 s HLS
//! ladder at once, in accelerated time, with the default ABR rule, verifying every
//! segment; it reports their QoE and the segment hit ratio. Then it stops everything it
//! started.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;
use shoal_client::RegionClient;

use crate::harness::cluster::{Cluster, ClusterSpec};
use crate::{LoadgenError, histogram};

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Objects generated at the origin.
    pub objects: usize,
    /// Concurrent clients per region.
    pub concurrency: usize,
    /// Purges timed after the fetch passes.
    pub purges: usize,
    /// Video viewers per region (0: no video phase).
    pub players: usize,
    /// Media seconds per wall second for the viewers.
    pub video_speed: f64,
    /// The object-traffic spike through every region, alongside the viewers (`None`: off).
    pub spike: Option<SpikeConfig>,
    /// Where the spike's HTML and JSON reports are written.
    pub report_dir: std::path::PathBuf,
    /// Cluster shape.
    pub cluster: ClusterSpec,
    /// End with Shoal in front of a plain HTTP server ([`crate::front`]).
    pub front: bool,
}

/// The demo's spike: Zipf requests over `objects` stored objects under `/spike/`, at `rate`
/// for one phase, `factor × rate` for the next, `rate` again; halfway through the spike
/// every `/spike/` object is purged (the hit ratio dips, then recovers).
#[derive(Debug, Clone)]
pub struct SpikeConfig {
    /// Baseline requests per second, per region.
    pub rate: f64,
    /// Spike factor.
    pub factor: f64,
    /// Length of each of the three phases.
    pub phase: Duration,
    /// Objects (4 KiB each).
    pub objects: u64,
}

impl Default for SpikeConfig {
    fn default() -> Self {
        Self {
            rate: 100.0,
            factor: 10.0,
            phase: Duration::from_secs(5),
            objects: 500,
        }
    }
}

/// One region's spike.
#[derive(Debug, Clone, Serialize)]
pub struct SpikeReport {
    /// Region name.
    pub region: String,
    /// The run's measurements.
    pub results: crate::load::Results,
    /// The HTML report.
    pub html: String,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            objects: 120,
            concurrency: 16,
            purges: 1000,
            players: 8,
            video_speed: 30.0,
            spike: Some(SpikeConfig::default()),
            report_dir: std::path::PathBuf::from("target/shoal-demo"),
            cluster: ClusterSpec::default(),
            front: true,
        }
    }
}

/// One region's results.
#[derive(Debug, Clone, Serialize)]
pub struct RegionReport {
    /// Region name.
    pub region: String,
    /// Requests made.
    pub requests: u64,
    /// Requests that failed (transport error or status ≥ 500).
    pub errors: u64,
    /// Share of requests served from an edge cache, percent.
    pub hit_ratio: f64,
    /// Origin fetches made by the region's edges.
    pub origin_fetches: u64,
    /// Median latency to the last byte, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Median latency of the first pass (every request a miss through to the origin).
    pub first_pass_p50_ms: f64,
    /// 99th percentile of the first pass.
    pub first_pass_p99_ms: f64,
    /// Median latency of the second pass (every request a hit).
    pub second_pass_p50_ms: f64,
    /// 99th percentile of the second pass.
    pub second_pass_p99_ms: f64,
    /// Bytes received.
    pub bytes: u64,
}

/// The demo's results.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// Objects at the origin.
    pub objects: usize,
    /// Their total size.
    pub object_bytes: u64,
    /// Per region.
    pub regions: Vec<RegionReport>,
    /// Wall time of the fetch phase, seconds.
    pub seconds: f64,
    /// Purge propagation.
    pub purge: PurgeReport,
    /// Video viewers, per region.
    pub video: Vec<VideoReport>,
    /// The spike, per region.
    pub spike: Vec<SpikeReport>,
    /// Shoal in front of a plain HTTP server, if run.
    pub front: Option<crate::front::FrontReport>,
}

/// One region's viewers.
#[derive(Debug, Clone, Serialize)]
pub struct VideoReport {
    /// Region name.
    pub region: String,
    /// Viewers.
    pub players: u64,
    /// Viewers that failed (an error, or a segment that did not check out).
    pub failed: u64,
    /// Segments played, all viewers.
    pub segments: u64,
    /// Segments that checked out.
    pub verified: u64,
    /// Segments served from an edge's cache, percent.
    pub segment_hit_ratio: f64,
    /// Segments that joined a fill already in flight, percent.
    pub segment_collapsed_ratio: f64,
    /// Fetches the region's edges made to the origin while the viewers played (playlists
    /// included).
    pub origin_fetches: u64,
    /// Mean QoE per 4 s of media (μ = 4.3).
    pub qoe_4s: f64,
    /// Mean time-weighted bitrate, kb/s.
    pub mean_kbps: f64,
    /// Stalls after startup, all viewers.
    pub stalls: u64,
    /// Median startup delay, media seconds.
    pub startup_p50_s: f64,
}

/// The ladder the viewers play.
pub const LADDER: &str = "demo";

async fn video_pass(
    client: RegionClient,
    region: String,
    players: usize,
    speed: f64,
) -> VideoReport {
    let cfg = shoal_client::player::PlayConfig {
        segments: 1000,
        speed,
        ..Default::default()
    };
    let master = format!("/video/{LADDER}/master.m3u8");
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..players {
        let (client, master, cfg) = (client.clone(), master.clone(), cfg.clone());
        set.spawn(async move { shoal_client::player::play(&client, &master, &cfg).await });
    }
    let mut r = VideoReport {
        region,
        players: players as u64,
        failed: 0,
        segments: 0,
        verified: 0,
        segment_hit_ratio: 0.0,
        segment_collapsed_ratio: 0.0,
        origin_fetches: 0,
        qoe_4s: 0.0,
        mean_kbps: 0.0,
        stalls: 0,
        startup_p50_s: 0.0,
    };
    let (mut hits, mut collapsed, mut startups, mut ok) = (0u64, 0u64, Vec::new(), 0u64);
    while let Some(done) = set.join_next().await {
        match done {
            Ok(Ok(p)) => {
                ok += 1;
                r.segments += p.segments;
                r.verified += p.verified;
                hits += p.hits;
                collapsed += p.collapsed;
                r.qoe_4s += p.qoe.qoe_4s;
                r.mean_kbps += p.qoe.mean_kbps;
                r.stalls += p.qoe.stalls;
                startups.push(p.qoe.startup_s);
            }
            Ok(Err(e)) => {
                tracing::warn!("viewer failed: {e}");
                r.failed += 1;
            }
            Err(e) => {
                tracing::warn!("viewer task failed: {e}");
                r.failed += 1;
            }
        }
    }
    if ok > 0 {
        r.qoe_4s /= ok as f64;
        r.mean_kbps /= ok as f64;
    }
    if r.segments > 0 {
        r.segment_hit_ratio = 100.0 * hits as f64 / r.segments as f64;
        r.segment_collapsed_ratio = 100.0 * collapsed as f64 / r.segments as f64;
    }
    startups.sort_by(f64::total_cmp);
    r.startup_p50_s = startups.get(startups.len() / 2).copied().unwrap_or(0.0);
    r
}

/// How long purges took to take effect at every edge.
#[derive(Debug, Clone, Serialize)]
pub struct PurgeReport {
    /// Purges made (one at a time, each waiting for every edge).
    pub purges: u64,
    /// Edges subscribed.
    pub edges: u64,
    /// Purges not acknowledged by every edge within the origin's wait.
    pub incomplete: u64,
    /// Median time from sending the purge to the origin's answer that every edge applied
    /// it, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Slowest, milliseconds.
    pub max_ms: f64,
}

/// Purges `paths` in turn, `n` times in all, each waiting until every edge applied it.
async fn purge_pass(
    admin: &shoal_client::AdminClient,
    paths: &[String],
    n: usize,
) -> Result<PurgeReport, LoadgenError> {
    let mut latency = histogram()?;
    let (mut incomplete, mut edges) = (0, 0);
    for i in 0..n {
        let Some(path) = paths.get(i % paths.len().max(1)) else {
            break;
        };
        let p = shoal_client::Purge {
            keys: vec![path.clone()],
            wait: true,
            ..shoal_client::Purge::default()
        };
        let t = Instant::now();
        let r = admin.purge(&p).await?;
        let _ = latency.record(t.elapsed().as_micros().max(1) as u64);
        incomplete += u64::from(!r.everywhere);
        edges = r.subscribers;
    }
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    Ok(PurgeReport {
        purges: latency.len(),
        edges,
        incomplete,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: latency.max() as f64 / 1000.0,
    })
}

/// Deterministic content: sizes cycle through web objects, images and video segments.
fn objects(n: usize) -> Vec<(String, Bytes)> {
    let mut state: u64 = 0x5348_4f41_4c21;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..n)
        .map(|i| {
            let (path, size) = match i % 6 {
                0 => (
                    format!("/video/seg_{i:04}.ts"),
                    1_000_000 + (next() % 1_000_000) as usize,
                ),
                1 | 2 => (
                    format!("/img/{i:04}.jpg"),
                    32_000 + (next() % 200_000) as usize,
                ),
                _ => (
                    format!("/static/{i:04}.json"),
                    500 + (next() % 16_000) as usize,
                ),
            };
            let fill = (i % 251) as u8;
            (path, Bytes::from(vec![fill; size]))
        })
        .collect()
}

/// What one pass over every object through one region saw.
struct Pass {
    latency: Histogram<u64>,
    hits: u64,
    errors: u64,
    bytes: u64,
}

/// Fetches every path once through `client`, `concurrency` requests at a time.
async fn region_pass(
    client: &RegionClient,
    paths: &Arc<Vec<String>>,
    concurrency: usize,
) -> Result<Pass, LoadgenError> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, paths, next) = (client.clone(), paths.clone(), next.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(p) = paths.get(i) else { break };
                    out.push(client.get(p).await);
                }
                out
            })
        })
        .collect();
    let mut pass = Pass {
        latency: histogram()?,
        hits: 0,
        errors: 0,
        bytes: 0,
    };
    for w in workers {
        let results = w.await.map_err(|e| LoadgenError::Task(e.to_string()))?;
        for r in results {
            match r {
                Ok(f) if f.status.is_server_error() => pass.errors += 1,
                Ok(f) => {
                    pass.hits += u64::from(f.is_hit());
                    pass.bytes += f.body.len() as u64;
                    let _ = pass.latency.record(f.total.as_micros().max(1) as u64);
                }
                Err(_) => pass.errors += 1,
            }
        }
    }
    Ok(pass)
}

/// Runs the demo.
pub async fn run(config: DemoConfig) -> Result<DemoReport, LoadgenError> {
    let mut spec = config.cluster.clone();
    // The purge phase needs the admin API; a per-run token (loopback only).
    let token = spec.origin.admin_token.clone().unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("demo-{nanos:x}-{}", std::process::id())
    });
    spec.origin.admin_token = Some(token.clone());
    spec.origin
        .ladders
        .push(shoal_cache_core::video::LadderConfig::named(LADDER));
    let cluster = Cluster::start(spec).await?;
    let content = objects(config.objects);
    let object_bytes = content.iter().map(|(_, b)| b.len() as u64).sum();
    for (path, body) in &content {
        cluster.store().put(path, body.clone(), None)?;
    }
    let paths: Arc<Vec<String>> = Arc::new(content.iter().map(|(p, _)| p.clone()).collect());
    cluster.wait_ready(Duration::from_secs(5)).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (ri, region) in cluster.regions.iter().enumerate() {
        let client = cluster.client(ri)?;
        let (paths, name, conc) = (paths.clone(), region.name.clone(), config.concurrency);
        tasks.push(tokio::spawn(async move {
            let first = region_pass(&client, &paths, conc).await?;
            let second = region_pass(&client, &paths, conc).await?;
            Ok::<_, LoadgenError>((name, [first, second]))
        }));
    }
    let mut regions = Vec::new();
    for (ri, t) in tasks.into_iter().enumerate() {
        let (name, passes) = t.await.map_err(|e| LoadgenError::Task(e.to_string()))??;
        let mut hist = passes[0].latency.clone();
        hist.add(&passes[1].latency)
            .map_err(|e| LoadgenError::Histogram(e.to_string()))?;
        let hits = passes[0].hits + passes[1].hits;
        let errors = passes[0].errors + passes[1].errors;
        let bytes = passes[0].bytes + passes[1].bytes;
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let requests = 2 * paths.len() as u64;
        let origin_fetches = region_origin_fetches(&cluster, ri);
        regions.push(RegionReport {
            region: name,
            requests,
            errors,
            hit_ratio: 100.0 * hits as f64 / requests as f64,
            origin_fetches,
            p50_ms: ms(&hist, 0.5),
            p99_ms: ms(&hist, 0.99),
            first_pass_p50_ms: ms(&passes[0].latency, 0.5),
            first_pass_p99_ms: ms(&passes[0].latency, 0.99),
            second_pass_p50_ms: ms(&passes[1].latency, 0.5),
            second_pass_p99_ms: ms(&passes[1].latency, 0.99),
            bytes,
        });
    }
    let seconds = started.elapsed().as_secs_f64();
    let admin_addr = cluster
        .origin
        .as_ref()
        .map(|o| o.admin_addr)
        .ok_or(LoadgenError::OriginStopped)?;
    let admin = shoal_client::AdminClient::new(admin_addr, token);
    let purge = purge_pass(&admin, &paths, config.purges).await;
    let mut viewers = Vec::new();
    if config.players > 0 {
        for (ri, region) in cluster.regions.iter().enumerate() {
            viewers.push(tokio::spawn(video_pass(
                cluster.client(ri)?,
                region.name.clone(),
                config.players,
                config.video_speed,
            )));
        }
    }
    let fetched = |ri: usize| region_origin_fetches(&cluster, ri);
    let before: Vec<u64> = (0..cluster.regions.len()).map(fetched).collect();
    let mut video = Vec::new();
    for (ri, v) in viewers.into_iter().enumerate() {
        let mut r = v.await.map_err(|e| LoadgenError::Task(e.to_string()))?;
        r.origin_fetches = fetched(ri) - before[ri];
        video.push(r);
    }
    // After the viewers, so that each workload's origin fetches are its own.
    let spike = match &config.spike {
        Some(sc) => spike_pass(&cluster, sc, &admin, &config.report_dir).await?,
        None => Vec::new(),
    };
    cluster.shutdown().await;
    let front = if config.front {
        Some(crate::front::run().await?)
    } else {
        None
    };
    Ok(DemoReport {
        objects: paths.len(),
        object_bytes,
        regions,
        seconds,
        purge: purge?,
        video,
        spike,
        front,
    })
}

/// The spike through every region at once, with a purge of its objects halfway through the
/// spike phase; writes one HTML and one JSON report per region.
async fn spike_pass(
    cluster: &Cluster,
    sc: &SpikeConfig,
    admin: &shoal_client::AdminClient,
    dir: &std::path::Path,
) -> Result<Vec<SpikeReport>, LoadgenError> {
    use crate::load::{Keys, Options, Plan, Target, report, run};
    let io = |e: std::io::Error| LoadgenError::Io {
        path: dir.display().to_string(),
        source: e,
    };
    let body = Bytes::from(vec![b's'; 4096]);
    for i in 0..sc.objects {
        cluster
            .store()
            .put(&format!("/spike/{i}"), body.clone(), None)?;
    }
    let keys = Keys::Zipf {
        prefix: "/spike/".into(),
        objects: sc.objects,
        alpha: 0.9,
    };
    let plan = Plan::spike(sc.rate, sc.factor, [sc.phase; 3], keys);
    let mut runs = tokio::task::JoinSet::new();
    for (ri, region) in cluster.regions.iter().enumerate() {
        let target = Target::Region(cluster.client(ri)?.with_timeout(plan.timeout.get()));
        let opts = Options {
            metrics: region
                .edges
                .iter()
                .flatten()
                .map(|e| e.admin_addr)
                .collect(),
            // One status line for the whole demo is enough: region 0's.
            progress: ri == 0,
            seed: ri as u64 + 1,
        };
        let (plan, name) = (plan.clone(), region.name.clone());
        runs.spawn(async move { (ri, name, run::run(&plan, &target, &opts).await) });
    }
    // Halfway through the spike phase: purge every spike object in every region.
    tokio::time::sleep(sc.phase + sc.phase / 2).await;
    let purge = shoal_client::admin::Purge {
        keys: Vec::new(),
        prefix: Some("/spike/".into()),
        tag: None,
        soft: false,
        wait: true,
    };
    if let Err(e) = admin.purge(&purge).await {
        tracing::warn!("the spike's purge failed: {e}");
    }
    let mut out = Vec::new();
    while let Some(done) = runs.join_next().await {
        let (ri, region, r) = done.map_err(|e| LoadgenError::Task(e.to_string()))?;
        let results = r?;
        std::fs::create_dir_all(dir).map_err(io)?;
        let html = dir.join(format!("spike-{region}.html"));
        let title = format!("Shoal demo: 10× spike through region {region}");
        std::fs::write(&html, report::html(&title, &results)).map_err(io)?;
        let json = serde_json::to_string_pretty(&results).unwrap_or_default();
        std::fs::write(dir.join(format!("spike-{region}.json")), json).map_err(io)?;
        out.push((
            ri,
            SpikeReport {
                region,
                results,
                html: html.display().to_string(),
            },
        ));
    }
    out.sort_by_key(|(ri, _)| *ri);
    Ok(out.into_iter().map(|(_, r)| r).collect())
}

/// Successful origin fetches made by region `ri`'s running edges so far.
fn region_origin_fetches(cluster: &Cluster, ri: usize) -> u64 {
    cluster.regions[ri]
        .edges
        .iter()
        .flatten()
        .map(|e| e.origin_fetches("ok"))
        .sum()
}

/// Renders the report as text.
pub fn render(r: &DemoReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} objects ({:.1} MiB) fetched twice through each of {} regions in {:.2} s\n",
        r.objects,
        r.object_bytes as f64 / 1048576.0,
        r.regions.len(),
        r.seconds
    );
    let _ = writeln!(
        out,
        "{:<8} {:>9} {:>7} {:>10} {:>15} {:>9} {:>9}",
        "region", "requests", "errors", "hit ratio", "origin fetches", "p50 ms", "p99 ms"
    );
    for g in &r.regions {
        let _ = writeln!(
            out,
            "{:<8} {:>9} {:>7} {:>9.1}% {:>15} {:>9.2} {:>9.2}",
            g.region, g.requests, g.errors, g.hit_ratio, g.origin_fetches, g.p50_ms, g.p99_ms
        );
    }
    let _ = writeln!(
        out,
        "\nlatency by pass (first: all misses to the origin; second: all hits), p50 / p99 ms"
    );
    for g in &r.regions {
        let _ = writeln!(
            out,
            "{:<8} first {:>8.2} / {:>8.2}   second {:>8.2} / {:>8.2}",
            g.region,
            g.first_pass_p50_ms,
            g.first_pass_p99_ms,
            g.second_pass_p50_ms,
            g.second_pass_p99_ms
        );
    }
    let _ = writeln!(
        out,
        "\nOrigin fetches per region (owner routing + coalescing: at most one per object):\n{} objects → {} origin fetches per region.",
        r.objects,
        r.regions
            .iter()
            .map(|g| g.origin_fetches.to_string())
            .collect::<Vec<_>>()
            .join(" / ")
    );
    let p = &r.purge;
    let _ = writeln!(
        out,
        "\n{} purges, one at a time, each answered once all {} edges applied it: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} not everywhere in time).",
        p.purges, p.edges, p.p50_ms, p.p99_ms, p.max_ms, p.incomplete
    );
    if !r.spike.is_empty() {
        let _ = writeln!(
            out,
            "\nObject traffic: Zipf over 500 new objects under /spike/ (open loop, latency from the intended send time), a 10× spike, every /spike/ object purged halfway through it:"
        );
        let _ = writeln!(
            out,
            "{:<8} {:<9} {:>7} {:>7} {:>10} {:>9} {:>9} {:>15}",
            "region", "phase", "sent", "errors", "hit ratio", "p50 ms", "p99 ms", "origin fetches"
        );
        for s in &r.spike {
            for p in &s.results.phases {
                let _ = writeln!(
                    out,
                    "{:<8} {:<9} {:>7} {:>7} {:>9.1}% {:>9.2} {:>9.2} {:>15}",
                    s.region,
                    p.name,
                    p.sent,
                    p.errors,
                    100.0 * p.hit_ratio,
                    p.p50_ms,
                    p.p99_ms,
                    p.origin_fetches.map_or("–".into(), |f| format!("{f:.0}"))
                );
            }
        }
        for s in &r.spike {
            let fetches: f64 = s
                .results
                .phases
                .iter()
                .filter_map(|p| p.origin_fetches)
                .sum();
            let _ = writeln!(
                out,
                "{}: {} distinct objects asked for, {fetches:.0} origin fetches ({:.2} per object; the purge makes every object fetchable twice)",
                s.region,
                s.results.distinct_paths,
                fetches / s.results.distinct_paths.max(1) as f64
            );
        }
        let _ = writeln!(out, "Reports (open in a browser; no network needed):");
        for s in &r.spike {
            let _ = writeln!(out, "  {}", s.html);
        }
    }
    if !r.video.is_empty() {
        let _ = writeln!(
            out,
            "\nViewers playing the 60 s synthetic ladder /video/{LADDER}/ (4 renditions, 400 kb/s–5 Mb/s) at once, ABR `dynamic`, in accelerated time:"
        );
        let _ = writeln!(
            out,
            "{:<8} {:>8} {:>7} {:>9} {:>9} {:>7} {:>13} {:>15} {:>8} {:>6} {:>7} {:>10}",
            "region",
            "viewers",
            "failed",
            "segments",
            "verified",
            "hits",
            "joined fill",
            "origin fetches",
            "QoE/4s",
            "kb/s",
            "stalls",
            "startup s"
        );
        for v in &r.video {
            let _ = writeln!(
                out,
                "{:<8} {:>8} {:>7} {:>9} {:>9} {:>6.1}% {:>12.1}% {:>15} {:>8.2} {:>6.0} {:>7} {:>10.2}",
                v.region,
                v.players,
                v.failed,
                v.segments,
                v.verified,
                v.segment_hit_ratio,
                v.segment_collapsed_ratio,
                v.origin_fetches,
                v.qoe_4s,
                v.mean_kbps,
                v.stalls,
                v.startup_p50_s
            );
        }
    }
    if let Some(f) = &r.front {
        out.push_str(&crate::front::render(f));
    }
    out
}

//! `shoal cap`: the course's "How do we quantify CAP?" run on loopback.
//!
//! An origin and 2 regions × 2 edges, each region behind its own relay. For every
//! consistency mode at once (one key per mode), a writer in region 0 PUTs a new version
//! through an edge every `write_every`, and one reader per region GETs it every
//! `read_every`. Three phases of `phase` each: connected, region 1 cut off from the origin,
//! healed; then reads go on, without writes, for the TTL and a second more, so
//! convergence can be seen. Halfway through the healed phase, with the writers paused
//! between writes, the edge of region 0 that owns the `write-back` key is killed (a crash:
//! no drain) and restarted half a second later; what the origin then holds is compared
//! with what was acknowledged. Every operation is recorded (client, kind, invoke and complete times, version),
//! and the history is checked per mode:
//!
//! - **stale read**: a read that returned a version older than the newest write
//!   acknowledged before the read was invoked; its staleness is how long before the read
//!   that version had been superseded (by an acknowledged write);
//! - **strong** (linearizable reads of a single writer's register) holds when there is no
//!   stale read; **eventual** holds when, after the heal, every region's last reads return
//!   the last written version;
//! - **lost writes**: writes acknowledged before the crash whose version is newer than
//!   what the origin held after it (none may be lost but in `write-back`);
//! - availability: the share of region 1's reads, and of all writes, that succeeded while
//!   region 1 was cut off.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Serialize;
use shoal_cache_core::consistency::{Mode, ModeRule};
use shoal_cache_core::size::HumanDuration;
use shoal_client::RegionClient;
use shoal_edge::config::Secret;
use shoal_origin::CacheRule;

use crate::harness::cluster::{Cluster, ClusterSpec, HOST};
use crate::harness::relay::{Direction, Faults};
use crate::{LoadgenError, histogram};

/// Experiment settings.
#[derive(Debug, Clone)]
pub struct CapConfig {
    /// Length of each phase (connected, partitioned, healed).
    pub phase: Duration,
    /// Interval between writes.
    pub write_every: Duration,
    /// Interval between one reader's reads.
    pub read_every: Duration,
    /// Freshness lifetime of the objects (bounds `ttl` and `write-through` staleness).
    pub ttl: Duration,
    /// Lease of `consistent` paths.
    pub lease: Duration,
    /// Faults on every region's link to the origin, both ways, for the whole run.
    pub faults: Faults,
    /// Seed of the relays' fault generators.
    pub seed: u64,
}

impl Default for CapConfig {
    fn default() -> Self {
        Self {
            phase: Duration::from_secs(3),
            write_every: Duration::from_millis(100),
            read_every: Duration::from_millis(10),
            ttl: Duration::from_secs(1),
            lease: Duration::from_secs(1),
            faults: Faults::default(),
            seed: 1,
        }
    }
}

/// One mode's row.
#[derive(Debug, Clone, Serialize)]
pub struct ModeRow {
    /// The mode.
    pub mode: String,
    /// Reads made / writes made.
    pub reads: u64,
    /// Writes made.
    pub writes: u64,
    /// Read latency of successful reads, ms.
    pub read_p50_ms: f64,
    /// 99th percentile.
    pub read_p99_ms: f64,
    /// Write latency of successful writes, ms.
    pub write_p50_ms: f64,
    /// 99th percentile.
    pub write_p99_ms: f64,
    /// Share of region 1's reads, invoked while it was cut off, that succeeded before the
    /// heal, percent.
    pub partition_reads_ok_pct: f64,
    /// Share of writes, invoked while region 1 was cut off, that succeeded, percent.
    pub partition_writes_ok_pct: f64,
    /// Reads that returned a superseded version.
    pub stale_reads: u64,
    /// The longest a returned version had been superseded, ms.
    pub worst_staleness_ms: f64,
    /// The same, over the first phase only (every region connected), ms.
    pub worst_staleness_connected_ms: f64,
    /// No stale read.
    pub strong: bool,
    /// Every region read the last version after the heal.
    pub eventual: bool,
    /// Writes acknowledged before the crash of an edge that the origin never received.
    pub lost_writes: u64,
}

/// The crash of one edge, as the checker needs it.
#[derive(Debug, Clone, Copy)]
struct Crash {
    /// When the edge was killed (every write acknowledged before was complete).
    at: Instant,
    /// The version the origin held for the mode's key once the crash had settled.
    origin_version: u64,
}

#[derive(Debug, Clone, Copy)]
struct Op {
    region: usize,
    write: bool,
    invoke: Instant,
    complete: Instant,
    /// Version written or read; `None` for a failure.
    version: Option<u64>,
    /// 0: connected, 1: region 1 cut off, 2: healed — when invoked.
    phase: u8,
    /// The same, when it completed.
    phase_done: u8,
}

impl Op {
    fn partitioned(&self) -> bool {
        self.phase == 1
    }
}

const TOKEN: &str = "cap-write-token";

fn modes() -> Vec<Mode> {
    Mode::ALL.to_vec()
}

fn key(mode: Mode) -> String {
    format!("/cap/{mode}/register.cap")
}

/// Runs the experiment and returns one row per mode.
pub async fn run(cfg: CapConfig) -> Result<Vec<ModeRow>, LoadgenError> {
    let mut spec = ClusterSpec {
        regions: vec!["r0".into(), "r1".into()],
        edges_per_region: 2,
        region_relays: true,
        ..ClusterSpec::default()
    };
    spec.origin.consistency = modes()
        .into_iter()
        .map(|m| ModeRule {
            prefix: format!("/cap/{m}/"),
            mode: m,
        })
        .collect();
    spec.origin.lease = HumanDuration::millis(cfg.lease.as_millis() as u64);
    spec.origin.heartbeat = HumanDuration::millis((cfg.lease.as_millis() as u64 / 5).max(20));
    spec.origin.cache_rules.insert(
        0,
        CacheRule {
            suffix: ".cap".into(),
            cache_control: format!("public, max-age={}", cfg.ttl.as_secs().max(1)),
        },
    );
    spec.edge.write_token = Some(Secret::new(TOKEN));
    // Serve stale when the origin is unreachable: the eventual modes choose availability.
    spec.edge.cache.stale_if_error = HumanDuration::secs(600);
    spec.edge.timeouts.origin_connect = HumanDuration::millis(300);
    spec.edge.timeouts.origin_fetch = HumanDuration::secs(2);
    spec.edge.timeouts.breaker_open_for = HumanDuration::millis(500);
    spec.edge.retries = 0;
    let mut cluster = Cluster::start(spec).await?;
    cluster.wait_ready(Duration::from_secs(10)).await?;
    if let Some(o) = &cluster.origin {
        for m in modes() {
            o.writer
                .put(&key(m), Bytes::from_static(b"0"), None, vec![])?;
        }
    }
    for (i, r) in cluster.regions.iter().enumerate() {
        if let Some(relay) = &r.relay {
            relay.seed(cfg.seed.wrapping_add(i as u64));
            relay.set_faults(Direction::ToOrigin, cfg.faults);
            relay.set_faults(Direction::ToEdge, cfg.faults);
        }
    }
    let writer_edge = cluster.regions[0].addrs[0];
    let readers = [cluster.client(0)?, cluster.client(1)?];
    let phase = Arc::new(std::sync::atomic::AtomicU8::new(0));
    // Writers hold it shared for each write; the crash takes it exclusively, so that no
    // write is in flight when the edge dies and every acknowledgement is counted.
    let gate = Arc::new(tokio::sync::RwLock::new(()));
    // After the three phases, reads go on for the TTL and a second more without writes,
    // so convergence (what the eventual modes promise) can be seen.
    let writes_end = Instant::now() + cfg.phase * 3;
    let end = writes_end + cfg.ttl + Duration::from_secs(1);
    let mut tasks = Vec::new();
    for m in modes() {
        let p = phase.clone();
        tasks.push(tokio::spawn(writer(
            writer_edge,
            key(m),
            cfg.write_every,
            writes_end,
            p,
            gate.clone(),
        )));
        for (region, client) in readers.iter().enumerate() {
            let p = phase.clone();
            let client = client.clone().with_timeout(Duration::from_secs(3));
            tasks.push(tokio::spawn(reader(
                region,
                client,
                key(m),
                cfg.read_every,
                end,
                p,
            )));
        }
    }
    tokio::time::sleep(cfg.phase).await;
    let cut = |on: bool| {
        if let Some(r) = &cluster.regions[1].relay {
            for d in [Direction::ToOrigin, Direction::ToEdge] {
                r.set_faults(
                    d,
                    Faults {
                        cut: on,
                        ..cfg.faults
                    },
                );
            }
        }
        phase.store(if on { 1 } else { 2 }, std::sync::atomic::Ordering::SeqCst);
    };
    cut(true);
    tokio::time::sleep(cfg.phase).await;
    cut(false);
    tokio::time::sleep(cfg.phase / 2).await;
    let crashes = crash(&mut cluster, &readers[0], &gate).await?;
    let mut histories: Vec<Vec<Op>> = Vec::new();
    for t in tasks {
        histories.push(t.await.map_err(|e| LoadgenError::Task(e.to_string()))?);
    }
    cluster.shutdown().await;
    let per_mode = 1 + readers.len();
    let mut rows = Vec::new();
    for (i, m) in modes().into_iter().enumerate() {
        let ops: Vec<Op> = histories[i * per_mode..(i + 1) * per_mode]
            .iter()
            .flatten()
            .copied()
            .collect();
        let crash = crashes.iter().find(|(c, _)| *c == m).map(|(_, c)| *c);
        rows.push(check(m, &ops, crash)?);
    }
    Ok(rows)
}

/// Kills the region 0 edge that owns the `write-back` key while no write is in flight,
/// reads what the origin holds for every mode's key, and restarts the edge.
async fn crash(
    cluster: &mut Cluster,
    region0: &RegionClient,
    gate: &tokio::sync::RwLock<()>,
) -> Result<Vec<(Mode, Crash)>, LoadgenError> {
    let owner = region0
        .owner(&key(Mode::WriteBack))
        .and_then(|id| cluster.regions[0].ids.iter().position(|i| *i == id))
        .ok_or_else(|| LoadgenError::NoOwner(key(Mode::WriteBack)))?;
    let held = gate.write().await;
    let at = Instant::now();
    cluster.kill_edge(0, owner);
    // A flush already on the wire when the edge died still lands; let it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut out = Vec::new();
    for m in modes() {
        let origin_version = match cluster.store().get(&key(m)).await {
            Ok(o) => o.version,
            Err(_) => 0,
        };
        out.push((m, Crash { at, origin_version }));
    }
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.restart_edge(0, owner).await?;
    Ok(out)
}

/// Runs `op` every `every` until `end`, recording each call with the phase it was invoked
/// and completed in; `op` returns the version written or read, `None` on failure.
async fn record<F, Fut>(
    region: usize,
    write: bool,
    every: Duration,
    end: Instant,
    phase: Arc<std::sync::atomic::AtomicU8>,
    gate: Option<Arc<tokio::sync::RwLock<()>>>,
    mut op: F,
) -> Vec<Op>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Option<u64>>,
{
    let now_phase = || phase.load(std::sync::atomic::Ordering::SeqCst);
    let mut ops = Vec::new();
    let mut n = 0u64;
    while Instant::now() < end {
        n += 1;
        let held = match &gate {
            Some(g) => Some(g.read().await),
            None => None,
        };
        let (invoke, p) = (Instant::now(), now_phase());
        let version = op(n).await;
        drop(held);
        ops.push(Op {
            region,
            write,
            invoke,
            complete: Instant::now(),
            version,
            phase: p,
            phase_done: now_phase(),
        });
        tokio::time::sleep(every).await;
    }
    ops
}

/// The version an answer carries.
fn version_of(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get("x-shoal-version")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

async fn writer(
    edge: std::net::SocketAddr,
    path: String,
    every: Duration,
    end: Instant,
    phase: Arc<std::sync::atomic::AtomicU8>,
    gate: Arc<tokio::sync::RwLock<()>>,
) -> Vec<Op> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let http: Client<HttpConnector, Full<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
    record(0, true, every, end, phase, Some(gate), |n| {
        let req = http::Request::put(format!("http://{edge}{path}"))
            .header(http::header::HOST, HOST)
            .header(http::header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Full::new(Bytes::from(n.to_string())));
        let http = &http;
        async move {
            let resp = tokio::time::timeout(Duration::from_secs(5), http.request(req.ok()?))
                .await
                .ok()?
                .ok()?;
            let v = resp
                .status()
                .is_success()
                .then(|| version_of(resp.headers()))
                .flatten();
            let _ = resp.into_body().collect().await;
            v
        }
    })
    .await
}

async fn reader(
    region: usize,
    client: RegionClient,
    path: String,
    every: Duration,
    end: Instant,
    phase: Arc<std::sync::atomic::AtomicU8>,
) -> Vec<Op> {
    record(region, false, every, end, phase, None, |_| {
        let (client, path) = (&client, &path);
        async move {
            match client.get(path).await {
                Ok(f) if f.status.is_success() => version_of(&f.headers),
                _ => None,
            }
        }
    })
    .await
}

/// Checks one mode's history.
fn check(mode: Mode, ops: &[Op], crash: Option<Crash>) -> Result<ModeRow, LoadgenError> {
    let mut writes: Vec<&Op> = ops
        .iter()
        .filter(|o| o.write && o.version.is_some())
        .collect();
    writes.sort_by_key(|o| o.complete);
    let (mut rl, mut wl) = (histogram()?, histogram()?);
    let (mut stale, mut worst, mut worst_connected) = (0u64, Duration::ZERO, Duration::ZERO);
    let (mut p_reads, mut p_reads_ok, mut p_writes, mut p_writes_ok) = (0u64, 0u64, 0u64, 0u64);
    for o in ops {
        let us = (o.complete - o.invoke).as_micros().max(1) as u64;
        if o.write {
            if o.partitioned() {
                p_writes += 1;
                // Region 0 is not cut off: a write is available if it succeeds (a
                // `consistent` one may wait out a lease, past the heal).
                p_writes_ok += u64::from(o.version.is_some());
            }
            if o.version.is_some() {
                let _ = wl.record(us);
            }
            continue;
        }
        if o.partitioned() && o.region == 1 {
            p_reads += 1;
            // Available: answered while still cut off (not merely after the heal).
            p_reads_ok += u64::from(o.version.is_some() && o.phase_done == 1);
        }
        let Some(v) = o.version else { continue };
        let _ = rl.record(us);
        // The first acknowledged write newer than what was read, if it was acknowledged
        // before this read began, makes the read stale.
        if let Some(w) = writes
            .iter()
            .find(|w| w.version.is_some_and(|wv| wv > v) && w.complete < o.invoke)
        {
            stale += 1;
            worst = worst.max(o.invoke - w.complete);
            if o.phase == 0 {
                worst_connected = worst_connected.max(o.invoke - w.complete);
            }
        }
    }
    let lost_writes = crash.map_or(0, |c| {
        writes
            .iter()
            .filter(|w| w.complete < c.at && w.version.is_some_and(|v| v > c.origin_version))
            .count() as u64
    });
    // Converging means reading the last write that survived: one a crash lost can never
    // be read anywhere.
    let lost = |w: &&&Op| {
        crash.is_some_and(|c| w.complete < c.at && w.version.is_some_and(|v| v > c.origin_version))
    };
    let last = writes
        .iter()
        .rev()
        .find(|w| !lost(w))
        .and_then(|w| w.version);
    let eventual = (0..2).all(|r| {
        ops.iter()
            .filter(|o| !o.write && o.region == r && o.version.is_some())
            .max_by_key(|o| o.invoke)
            .is_some_and(|o| o.version >= last)
    });
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let pct = |ok: u64, n: u64| {
        if n == 0 {
            0.0
        } else {
            100.0 * ok as f64 / n as f64
        }
    };
    Ok(ModeRow {
        mode: mode.to_string(),
        reads: ops.iter().filter(|o| !o.write).count() as u64,
        writes: ops.iter().filter(|o| o.write).count() as u64,
        read_p50_ms: ms(&rl, 0.5),
        read_p99_ms: ms(&rl, 0.99),
        write_p50_ms: ms(&wl, 0.5),
        write_p99_ms: ms(&wl, 0.99),
        partition_reads_ok_pct: pct(p_reads_ok, p_reads),
        partition_writes_ok_pct: pct(p_writes_ok, p_writes),
        stale_reads: stale,
        worst_staleness_ms: worst.as_secs_f64() * 1000.0,
        worst_staleness_connected_ms: worst_connected.as_secs_f64() * 1000.0,
        strong: stale == 0,
        eventual,
        lost_writes,
    })
}

/// The rows as a Markdown table.
pub fn render(rows: &[ModeRow]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| mode | read p50 / p99 ms | write p50 / p99 ms | region 1 reads ok while cut off | writes ok while cut off | stale reads | worst staleness ms, connected / overall | acknowledged writes lost in a crash | strong | eventual |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|:-:|:-:|");
    for r in rows {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let _ = writeln!(
            out,
            "| `{}` | {:.2} / {:.2} | {:.2} / {:.2} | {:.0}% | {:.0}% | {} of {} | {:.1} / {:.0} | {} | {} | {} |",
            r.mode,
            r.read_p50_ms,
            r.read_p99_ms,
            r.write_p50_ms,
            r.write_p99_ms,
            r.partition_reads_ok_pct,
            r.partition_writes_ok_pct,
            r.stale_reads,
            r.reads,
            r.worst_staleness_connected_ms,
            r.worst_staleness_ms,
            r.lost_writes,
            yes(r.strong),
            yes(r.eventual)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(t0: Instant, region: usize, write: bool, at: (u64, u64), version: Option<u64>) -> Op {
        Op {
            region,
            write,
            invoke: t0 + Duration::from_millis(at.0),
            complete: t0 + Duration::from_millis(at.1),
            version,
            phase: 0,
            phase_done: 0,
        }
    }

    #[test]
    fn the_checker_finds_stale_reads_and_measures_staleness() {
        let t0 = Instant::now();
        let history = [
            op(t0, 0, true, (0, 10), Some(1)),
            op(t0, 0, true, (100, 110), Some(2)),
            // Concurrent with the write of 2: returning 1 is fine.
            op(t0, 1, false, (105, 108), Some(1)),
            // Invoked 40 ms after 2 was acknowledged, still 1: stale by 40 ms.
            op(t0, 1, false, (150, 151), Some(1)),
            op(t0, 0, false, (160, 161), Some(2)),
            op(t0, 1, false, (300, 301), Some(2)),
            op(t0, 1, false, (310, 311), None),
        ];
        let row = check(Mode::Invalidate, &history, None).unwrap();
        assert_eq!(row.stale_reads, 1);
        assert!((row.worst_staleness_ms - 40.0).abs() < 0.01, "{row:?}");
        assert!(!row.strong);
        assert!(
            row.eventual,
            "both regions' last successful reads saw version 2"
        );
        let fresh: Vec<Op> = history
            .iter()
            .copied()
            .filter(|o| o.invoke != t0 + Duration::from_millis(150))
            .collect();
        let row = check(Mode::Consistent, &fresh, None).unwrap();
        assert_eq!((row.stale_reads, row.strong), (0, true));
        let behind = [
            history[0],
            history[1],
            op(t0, 1, false, (500, 501), Some(1)),
        ];
        assert!(!check(Mode::Ttl, &behind, None).unwrap().eventual);
        // A crash after version 2 was acknowledged, with the origin left holding 1, lost
        // one write; with the origin holding 2, none; a crash before it, none either.
        let lost = |at: u64, origin_version: u64| {
            let crash = Crash {
                at: t0 + Duration::from_millis(at),
                origin_version,
            };
            check(Mode::WriteBack, &history, Some(crash))
                .unwrap()
                .lost_writes
        };
        assert_eq!(lost(200, 1), 1);
        assert_eq!(lost(200, 2), 0);
        assert_eq!(lost(50, 1), 0);
    }
}

//! The open-loop executor: every request is sent at its intended time (never held back by
//! a slow answer), and its latency is counted from that time, so a stalled server shows as
//! latency instead of hiding behind fewer requests (coordinated omission, as wrk2 and k6
//! avoid it). Results are kept per second and per phase in HDR histograms.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hdrhistogram::Histogram;
use http_body_util::BodyExt;
use serde::Serialize;
use shoal_client::RegionClient;
use tokio::time::Instant;

use super::h1::{H1, H1Error};
use super::plan::{KeySource, Plan};
use crate::LoadgenError;

/// Where requests go.
#[derive(Debug, Clone)]
pub enum Target {
    /// A region: each request to its key's owner, with failover (the edges' own routing).
    Region(RegionClient),
    /// These edges in turn, no routing (any edge forwards to the owner itself).
    RoundRobin(RegionClient, Vec<SocketAddr>),
}

/// A run's settings beside the plan.
#[derive(Debug, Clone)]
pub struct Options {
    /// Edge admin addresses whose `/metrics` are scraped every second (origin fetches,
    /// requests in flight).
    pub metrics: Vec<SocketAddr>,
    /// Print progress to stderr every second (a status line on a terminal, plain lines
    /// otherwise).
    pub progress: bool,
    /// Seed of the key draws.
    pub seed: u64,
}

/// One second of the run, by intended send time.
#[derive(Debug, Clone, Serialize)]
pub struct Second {
    /// Seconds since the run's start.
    pub t: u64,
    /// The phase it falls in.
    pub phase: String,
    /// Requests due.
    pub sent: u64,
    /// Answered with a 2xx or 3xx.
    pub ok: u64,
    /// Failed, by kind (`5xx`, `4xx`, `timeout`, `connect`, `protocol` for an answer that
    /// is not HTTP/1.1, `saturated`).
    pub errors: BTreeMap<String, u64>,
    /// Answered from an edge's cache (`Cache-Status: …; hit`).
    pub hits: u64,
    /// Latency percentiles from the intended time, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Origin fetches the edges made in this second (scraped).
    pub origin_fetches: Option<f64>,
    /// Requests in flight at the edges at the end of the second (scraped).
    pub edge_inflight: Option<f64>,
}

/// One phase's summary.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseSummary {
    /// Name.
    pub name: String,
    /// Start, seconds since the run's start.
    pub start_s: f64,
    /// Length, seconds.
    pub duration_s: f64,
    /// Requests due.
    pub sent: u64,
    /// Answered with a 2xx or 3xx.
    pub ok: u64,
    /// Failed.
    pub errors: u64,
    /// Requests answered per second of the phase.
    pub rate: f64,
    /// Latency percentiles, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Worst, ms.
    pub max_ms: f64,
    /// 99th percentile of the failed requests alone (how fast a refusal came), ms; 0
    /// without failures.
    pub failed_p99_ms: f64,
    /// Hits ÷ answered.
    pub hit_ratio: f64,
    /// Origin fetches during the phase (scraped), if known.
    pub origin_fetches: Option<f64>,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// Per phase.
    pub phases: Vec<PhaseSummary>,
    /// Per second.
    pub timeline: Vec<Second>,
    /// Distinct paths asked for.
    pub distinct_paths: u64,
    /// Per `viewers` phase: the sessions' outcome.
    pub viewers: Vec<ViewerSummary>,
}

/// The viewers of one phase.
#[derive(Debug, Clone, Serialize)]
pub struct ViewerSummary {
    /// The phase.
    pub phase: String,
    /// Sessions that played to the end.
    pub sessions: u64,
    /// Sessions that failed (an error, or a segment that did not check out).
    pub failed: u64,
    /// Segments played.
    pub segments: u64,
    /// Of which cache hits.
    pub hits: u64,
    /// Mean QoE per 4 s of media.
    pub qoe_4s: f64,
    /// Stalls after startup, all sessions.
    pub stalls: u64,
    /// Median startup, media seconds.
    pub startup_p50_s: f64,
    #[serde(skip)]
    startups: Vec<f64>,
}

impl ViewerSummary {
    fn new(phase: &str) -> Self {
        Self {
            phase: phase.to_string(),
            sessions: 0,
            failed: 0,
            segments: 0,
            hits: 0,
            qoe_4s: 0.0,
            stalls: 0,
            startup_p50_s: 0.0,
            startups: Vec::new(),
        }
    }

    fn add(&mut self, r: Option<shoal_client::player::PlayReport>) {
        let Some(r) = r else {
            self.failed += 1;
            return;
        };
        let n = self.sessions as f64;
        self.sessions += 1;
        self.segments += r.segments;
        self.hits += r.hits;
        self.stalls += r.qoe.stalls;
        self.qoe_4s = (self.qoe_4s * n + r.qoe.qoe_4s) / (n + 1.0);
        self.startups.push(r.qoe.startup_s);
        self.startups.sort_by(f64::total_cmp);
        self.startup_p50_s = self.startups[self.startups.len() / 2];
    }
}

#[derive(Debug)]
struct Bucket {
    sent: u64,
    ok: u64,
    hits: u64,
    errors: BTreeMap<String, u64>,
    latency: Histogram<u64>,
    /// Latency of the failed requests alone (made at the first failure): how fast an
    /// overloaded server refuses.
    failed_latency: Option<Histogram<u64>>,
}

impl Bucket {
    fn new() -> Self {
        Self {
            sent: 0,
            ok: 0,
            hits: 0,
            errors: BTreeMap::new(),
            // 1 µs to 10 min, 2 significant digits: ~50 KiB per bucket.
            latency: latency_histogram(),
            failed_latency: None,
        }
    }
}

fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 2).expect("constant histogram bounds are valid")
}

/// How a request ended.
enum Outcome {
    Ok { hit: bool },
    Error(&'static str),
}

#[derive(Debug)]
struct Recorder {
    seconds: Vec<Bucket>,
    phases: Vec<Bucket>,
}

impl Recorder {
    fn record(&mut self, second: usize, phase: usize, latency: Duration, outcome: &Outcome) {
        for b in [self.seconds.get_mut(second), self.phases.get_mut(phase)]
            .into_iter()
            .flatten()
        {
            b.sent += 1;
            match outcome {
                Outcome::Ok { hit } => {
                    b.ok += 1;
                    b.hits += u64::from(*hit);
                }
                Outcome::Error(kind) => *b.errors.entry((*kind).to_string()).or_default() += 1,
            }
            // Errors count too: a timeout is as slow as its wait.
            let us = u64::try_from(latency.as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            b.latency.saturating_record(us);
            if let Outcome::Error(_) = outcome {
                b.failed_latency
                    .get_or_insert_with(latency_histogram)
                    .saturating_record(us);
            }
        }
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Runs `plan` against `target`.
pub async fn run(plan: &Plan, target: &Target, opts: &Options) -> Result<Results, LoadgenError> {
    plan.check()?;
    let total = plan.duration();
    let seconds = (total.as_secs_f64().ceil() as usize).max(1);
    let rec = Arc::new(Mutex::new(Recorder {
        seconds: (0..seconds).map(|_| Bucket::new()).collect(),
        phases: plan.phases.iter().map(|_| Bucket::new()).collect(),
    }));
    let mut sources = Vec::new();
    for (i, p) in plan.phases.iter().enumerate() {
        sources.push(KeySource::new(&p.keys, opts.seed.wrapping_add(i as u64))?);
    }
    let start = Instant::now() + Duration::from_millis(50);
    let scraped: Arc<Mutex<Scraped>> = Arc::new(Mutex::new(vec![None; seconds + 1]));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let scraper = tokio::spawn(scrape_loop(
        opts.metrics.clone(),
        start,
        seconds,
        scraped.clone(),
        stop.clone(),
    ));
    let progress = opts.progress.then(|| {
        tokio::spawn(progress_loop(
            rec.clone(),
            start,
            total,
            plan.phases
                .iter()
                .map(|p| (p.name.clone(), p.duration.get()))
                .collect(),
            stop.clone(),
        ))
    });

    // Per edge, `connections` keep-alive connections, each a task, sharing one queue. A
    // request is queued at its intended time on its owner's queue (or the next edge's in
    // turn); its latency counts from that time, so a queue that backs up shows as
    // latency. A request a full queue cannot take is `saturated`.
    let (client, robin) = match target {
        Target::Region(c) => (c, None),
        Target::RoundRobin(c, addrs) => (c, Some(addrs.clone())),
    };
    let addrs: Vec<SocketAddr> =
        robin.unwrap_or_else(|| client.edges().iter().map(|e| e.1).collect());
    let host = http::HeaderValue::from_str(client.host()).map_err(|_| {
        LoadgenError::Plan(format!("host {:?} is not a header value", client.host()))
    })?;
    let timeout = plan.timeout.get();
    let per_conn = (plan.max_inflight / (addrs.len() * plan.connections).max(1)).max(1);
    let mut queues: Vec<tokio::sync::mpsc::Sender<Job>> = Vec::new();
    let mut workers = tokio::task::JoinSet::new();
    let links: Vec<Arc<Link>> = addrs.iter().map(|&a| Arc::new(Link::new(a))).collect();
    let failover = (plan.failover && links.len() > 1).then(|| {
        Arc::new(Failover {
            links: links.clone(),
            queues: std::sync::OnceLock::new(),
        })
    });
    for (i, link) in links.iter().enumerate() {
        // One queue per edge, taken from by whichever of its connections is free: a
        // connection held up by one slow answer delays that answer only, not the
        // requests queued behind it (a queue per connection did; wrk2's model).
        let (tx, rx) = tokio::sync::mpsc::channel(per_conn * plan.connections);
        let rx: Queue = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..plan.connections {
            let (at, f, h, r) = (
                (i, link.clone()),
                failover.clone(),
                host.clone(),
                rec.clone(),
            );
            if plan.http2 {
                workers.spawn(worker_h2(at, f, h, rx.clone(), r, timeout, per_conn));
            } else {
                workers.spawn(worker(at, f, h, rx.clone(), r, timeout));
            }
        }
        queues.push(tx);
    }
    if let Some(f) = &failover {
        let _ = f.queues.set(queues.iter().map(|q| q.downgrade()).collect());
    }
    let routed = matches!(target, Target::Region(_));
    let mut sent = 0u64;
    let mut phase_start = start;
    let mut turn = 0usize;
    // Distinct paths, by hash: counted here, off the requests' path.
    let mut distinct = std::collections::HashSet::new();
    let hasher = std::hash::RandomState::new();
    let mut sessions = tokio::task::JoinSet::new();
    let viewer_stats: Vec<Arc<Mutex<ViewerSummary>>> = plan
        .phases
        .iter()
        .map(|p| Arc::new(Mutex::new(ViewerSummary::new(&p.name))))
        .collect();
    'phases: for (pi, phase) in plan.phases.iter().enumerate() {
        let keys = &mut sources[pi];
        // A trace replayed at its own timestamps sets the times; otherwise the phase's rate.
        let offsets: Box<dyn Iterator<Item = Duration> + Send + '_> = match keys.timed() {
            Some(times) => {
                let end = phase.duration.get();
                Box::new(times.into_iter().take_while(move |t| *t < end))
            }
            None => Box::new(phase.offsets(opts.seed ^ ((pi as u64) << 32))),
        };
        for off in offsets {
            if sent >= plan.max_requests {
                break 'phases;
            }
            let due = phase_start + off;
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            if let Some(v) = &phase.viewers {
                // A viewer joins: a whole player session, counted by the phase's viewers.
                let cfg = shoal_client::player::PlayConfig {
                    segments: v.segments,
                    speed: v.speed,
                    ..Default::default()
                };
                let (client, master, stats) =
                    (client.clone(), keys.next_path(), viewer_stats[pi].clone());
                sent += 1;
                sessions.spawn(async move {
                    let r = shoal_client::player::play(&client, &master, &cfg).await;
                    stats.lock().unwrap_or_else(|e| e.into_inner()).add(r.ok());
                });
                continue;
            }
            let second = (due - start).as_secs() as usize;
            let path = keys.next_path();
            distinct.insert(hasher.hash_one(&path));
            sent += 1;
            turn = turn.wrapping_add(1);
            // The owner (or the next edge in turn), skipping an edge that just refused a
            // connection, as the region client fails over.
            let edge = if addrs.len() == 1 {
                0
            } else {
                let order = if routed {
                    client.candidate_indices(&path)
                } else {
                    (0..addrs.len()).map(|k| (turn + k) % addrs.len()).collect()
                };
                let now = Instant::now();
                order
                    .iter()
                    .copied()
                    .find(|&i| !links[i].is_down(now))
                    .or(order.first().copied())
                    .unwrap_or(turn % addrs.len())
            };
            let job = Job {
                path,
                due,
                second,
                phase: pi,
                failed_over: false,
            };
            if queues[edge].try_send(job).is_err() {
                let late = Instant::now().saturating_duration_since(due);
                record(&rec, second, pi, late, &Outcome::Error("saturated"));
            }
        }
        phase_start += phase.duration.get();
    }
    // Every queued request answers or times out; then the workers end.
    drop(queues);
    while workers.join_next().await.is_some() {}
    // Viewers finish their sessions (each bounded by its segments and the client timeout).
    while sessions.join_next().await.is_some() {}
    tokio::time::sleep_until(phase_start.max(Instant::now())).await;
    let _ = stop_tx.send(true);
    let _ = scraper.await;
    if let Some(p) = progress {
        let _ = p.await;
    }
    let rec = rec.lock().unwrap_or_else(|e| e.into_inner());
    let scraped = scraped.lock().unwrap_or_else(|e| e.into_inner());
    let mut r = results(plan, &rec, &scraped);
    r.distinct_paths = distinct.len() as u64;
    r.viewers = plan
        .phases
        .iter()
        .zip(&viewer_stats)
        .filter(|(p, _)| p.viewers.is_some())
        .map(|(_, v)| v.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .collect();
    Ok(r)
}

fn record(rec: &Mutex<Recorder>, second: usize, phase: usize, latency: Duration, o: &Outcome) {
    rec.lock()
        .unwrap_or_else(|e| e.into_inner())
        .record(second, phase, latency, o);
}

/// One edge the workers connect to. A connection it refuses or never answers marks it
/// down: the dispatcher sends its keys to the next candidate, for 1 s, doubling with each
/// failure up to 8 s. When that passes, one TCP connect probes it, and it gets traffic
/// again only once the probe succeeds (a circuit breaker's half-open state), so a dead
/// edge does not take a share of the traffic each time its down time runs out.
#[derive(Debug)]
struct Link {
    addr: SocketAddr,
    base: Instant,
    /// Milliseconds after `base` until which it counts as down; 0 when up.
    down_until: AtomicU64,
    /// The current down time, ms (0 when up).
    backoff: AtomicU64,
    probing: AtomicBool,
}

impl Link {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            base: Instant::now(),
            down_until: AtomicU64::new(0),
            backoff: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }

    fn mark_down(&self) {
        let backoff = (self.backoff.load(Ordering::Relaxed) * 2).clamp(1000, 8000);
        self.backoff.store(backoff, Ordering::Relaxed);
        let until = self.ms(Instant::now()) + backoff;
        self.down_until.fetch_max(until, Ordering::Relaxed);
    }

    /// Down, or not yet probed since it was: the dispatcher skips it.
    fn is_down(self: &Arc<Self>, now: Instant) -> bool {
        let until = self.down_until.load(Ordering::Relaxed);
        if until == 0 {
            return false;
        }
        if self.ms(now) >= until && !self.probing.swap(true, Ordering::AcqRel) {
            let link = self.clone();
            tokio::spawn(async move {
                let up = tokio::time::timeout(
                    Duration::from_secs(1),
                    tokio::net::TcpStream::connect(link.addr),
                )
                .await
                .is_ok_and(|c| c.is_ok());
                if up {
                    link.backoff.store(0, Ordering::Relaxed);
                    link.down_until.store(0, Ordering::Relaxed);
                } else {
                    link.mark_down();
                }
                link.probing.store(false, Ordering::Release);
            });
        }
        true
    }
}

/// A request for a connection worker.
struct Job {
    path: String,
    due: Instant,
    second: usize,
    phase: usize,
    /// Sent to another edge already after a connection error (`Plan::failover`).
    failed_over: bool,
}

/// Where a request goes when its edge refused it (`Plan::failover`): every edge's
/// queue, held weakly so that the workers' copies do not keep the queues open once the
/// dispatcher has sent everything.
struct Failover {
    links: Vec<Arc<Link>>,
    queues: std::sync::OnceLock<Vec<tokio::sync::mpsc::WeakSender<Job>>>,
}

/// An edge's queue of requests, shared by its connections (a free one takes the next).
type Queue = Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Job>>>;

/// The next request for a connection of this edge; `None` once the run has sent all.
async fn next(q: &Queue) -> Option<Job> {
    q.lock().await.recv().await
}

impl Failover {
    /// Queues `job` on the next edge after `from` that is not down; gives it back when
    /// there is none or its queue is full.
    fn send(&self, from: usize, mut job: Job) -> Result<(), Job> {
        let Some(queues) = self.queues.get() else {
            return Err(job);
        };
        job.failed_over = true;
        let now = Instant::now();
        let n = self.links.len();
        for k in 1..n {
            let i = (from + k) % n;
            if self.links[i].is_down(now) {
                continue;
            }
            let Some(tx) = queues[i].upgrade() else {
                continue;
            };
            match tx.try_send(job) {
                Ok(()) => return Ok(()),
                Err(tokio::sync::mpsc::error::TrySendError::Full(j))
                | Err(tokio::sync::mpsc::error::TrySendError::Closed(j)) => job = j,
            }
        }
        Err(job)
    }
}

/// An outcome that served nothing: the request can go to another edge.
fn refused(o: &Outcome) -> bool {
    matches!(o, Outcome::Error("connect"))
}

type H2 = hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>;

async fn connect_h2(addr: SocketAddr) -> Result<H2, String> {
    let stream = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// Sends one request on an HTTP/2 connection and reads its body.
async fn exchange(c: &mut H2, path: &str, host: &http::HeaderValue) -> Outcome {
    let Ok(req) = http::Request::get(path)
        .header(http::header::HOST, host.clone())
        .body(http_body_util::Empty::new())
    else {
        return Outcome::Error("4xx");
    };
    let Ok(resp) = c.send_request(req).await else {
        return Outcome::Error("connect");
    };
    let status = resp.status();
    let hit = resp
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("; hit"));
    if resp.into_body().collect().await.is_err() {
        return Outcome::Error("connect");
    }
    classify(status.as_u16(), hit)
}

/// One HTTP/2 connection: its queue's requests as concurrent streams (at most `streams`
/// at once), reconnecting after an error.
async fn worker_h2(
    (index, link): (usize, Arc<Link>),
    failover: Option<Arc<Failover>>,
    host: http::HeaderValue,
    rx: Queue,
    rec: Arc<Mutex<Recorder>>,
    timeout: Duration,
    streams: usize,
) {
    let mut conn: Option<H2> = None;
    let limit = Arc::new(tokio::sync::Semaphore::new(streams));
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(job) = next(&rx).await {
        while tasks.try_join_next().is_some() {}
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            conn = connect_h2(link.addr).await.ok();
            if conn.is_none() {
                link.mark_down();
            }
        }
        let Some(c) = conn.clone() else {
            let job = match &failover {
                Some(f) if !job.failed_over => match f.send(index, job) {
                    Ok(()) => continue,
                    Err(job) => job,
                },
                _ => job,
            };
            let latency = Instant::now().saturating_duration_since(job.due);
            record(
                &rec,
                job.second,
                job.phase,
                latency,
                &Outcome::Error("connect"),
            );
            continue;
        };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let (rec, host, failover) = (rec.clone(), host.clone(), failover.clone());
        tasks.spawn(async move {
            let mut c = c;
            let r = tokio::time::timeout(timeout, async {
                if c.ready().await.is_err() {
                    return Outcome::Error("connect");
                }
                exchange(&mut c, &job.path, &host).await
            })
            .await
            .unwrap_or(Outcome::Error("timeout"));
            drop(permit);
            let job = match &failover {
                Some(f) if refused(&r) && !job.failed_over => match f.send(index, job) {
                    Ok(()) => return,
                    Err(job) => job,
                },
                _ => job,
            };
            let latency = Instant::now().saturating_duration_since(job.due);
            record(&rec, job.second, job.phase, latency, &r);
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// One keep-alive connection: its queue's requests, one at a time, reconnecting after an
/// error.
async fn worker(
    (index, link): (usize, Arc<Link>),
    failover: Option<Arc<Failover>>,
    host: http::HeaderValue,
    rx: Queue,
    rec: Arc<Mutex<Recorder>>,
    timeout: Duration,
) {
    // Connected before the first request is due (the run starts 50 ms after the workers),
    // so set-up is not counted as the first requests' latency; a failure here is retried
    // at the first request, which then counts it.
    let mut conn: Option<H1> = H1::connect(link.addr, Duration::from_secs(1)).await.ok();
    let host = host.as_bytes();
    // One timer for the connection, pushed forward per request: moving a tokio timer
    // later is an atomic store, where a `timeout` per request is a timer-wheel insert
    // and removal under its lock.
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    while let Some(job) = next(&rx).await {
        deadline.as_mut().reset(Instant::now() + timeout);
        let answered = tokio::select! {
            biased;
            o = exchange_h1(&mut conn, &link, &job.path, host) => Some(o),
            () = &mut deadline => None,
        };
        let outcome = answered.unwrap_or_else(|| {
            // The connection may still carry the late answer: start afresh.
            conn = None;
            Outcome::Error("timeout")
        });
        let job = match &failover {
            Some(f) if refused(&outcome) && !job.failed_over => match f.send(index, job) {
                Ok(()) => continue,
                Err(job) => job,
            },
            _ => job,
        };
        let latency = Instant::now().saturating_duration_since(job.due);
        record(&rec, job.second, job.phase, latency, &outcome);
    }
}

/// One request on the worker's connection (made if there is none). A reused connection
/// the server closed under the request gets it once more on a new one, as HTTP clients
/// do with idempotent requests.
async fn exchange_h1(conn: &mut Option<H1>, link: &Link, path: &str, host: &[u8]) -> Outcome {
    for attempt in 0..2 {
        let reused = conn.is_some();
        if conn.is_none() {
            *conn = H1::connect(link.addr, Duration::from_secs(1)).await.ok();
        }
        let Some(c) = conn.as_mut() else {
            link.mark_down();
            return Outcome::Error("connect");
        };
        match c.get(path, host).await {
            Ok(a) => {
                if !a.reusable {
                    *conn = None;
                }
                if a.status >= 500 {
                    tracing::debug!(edge = %link.addr, status = a.status, "server error");
                }
                return classify(a.status, a.hit);
            }
            Err(H1Error::Unanswered) if reused && attempt == 0 => *conn = None,
            Err(e) => {
                *conn = None;
                tracing::debug!(edge = %link.addr, "request failed: {e}");
                return match e {
                    H1Error::Malformed(_) => Outcome::Error("protocol"),
                    _ => Outcome::Error("connect"),
                };
            }
        }
    }
    Outcome::Error("connect")
}

/// An answer's outcome by its status.
fn classify(status: u16, hit: bool) -> Outcome {
    if status >= 500 {
        Outcome::Error("5xx")
    } else if status >= 400 {
        Outcome::Error("4xx")
    } else {
        Outcome::Ok { hit }
    }
}

/// Per second boundary: the edges' summed origin fetches and requests in flight.
type Scraped = Vec<Option<(f64, f64)>>;

/// Scrapes the edges' `/metrics` at every second boundary: origin fetches (counter, summed)
/// and requests in flight (gauge, summed).
async fn scrape_loop(
    addrs: Vec<SocketAddr>,
    start: Instant,
    seconds: usize,
    out: Arc<Mutex<Scraped>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    if addrs.is_empty() {
        return;
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    for s in 0..=seconds {
        let at = start + Duration::from_secs(s as u64);
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let (mut fetches, mut inflight, mut any) = (0.0, 0.0, false);
        for a in &addrs {
            let Ok(uri) = format!("http://{a}/metrics").parse::<http::Uri>() else {
                continue;
            };
            let got = tokio::time::timeout(Duration::from_millis(500), async {
                let resp = client.get(uri).await.ok()?;
                resp.into_body().collect().await.ok().map(|b| b.to_bytes())
            })
            .await;
            if let Ok(Some(body)) = got {
                let (f, i) = parse_metrics(&String::from_utf8_lossy(&body));
                fetches += f;
                inflight += i;
                any = true;
            }
        }
        if any && let Some(slot) = out.lock().unwrap_or_else(|e| e.into_inner()).get_mut(s) {
            *slot = Some((fetches, inflight));
        }
    }
}

/// Origin fetches that reached the origin (`result="ok"` or `"not_modified"`) and requests
/// in flight, from an edge's Prometheus text.
pub fn parse_metrics(text: &str) -> (f64, f64) {
    let (mut fetches, mut inflight) = (0.0, 0.0);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        if name.starts_with("shoal_edge_origin_fetches_total")
            && (name.contains("result=\"ok\"") || name.contains("result=\"not_modified\""))
        {
            fetches += v;
        } else if name == "shoal_edge_inflight_requests" {
            inflight += v;
        }
    }
    (fetches, inflight)
}

/// One status line per second: elapsed/total, phase, last second's rate and p99, errors.
async fn progress_loop(
    rec: Arc<Mutex<Recorder>>,
    start: Instant,
    total: Duration,
    phases: Vec<(String, Duration)>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let tty = std::io::stderr().is_terminal();
    let mut s = 1u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(start + Duration::from_secs(s)) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let (rate, p99, errors) = {
            let r = rec.lock().unwrap_or_else(|e| e.into_inner());
            let last = r.seconds.get(s as usize - 1);
            let errors: u64 = r.phases.iter().flat_map(|b| b.errors.values()).sum();
            (
                last.map_or(0, |b| b.sent),
                last.map_or(0.0, |b| ms(&b.latency, 0.99)),
                errors,
            )
        };
        let mut at = Duration::from_secs(s);
        let phase = phases
            .iter()
            .find(|(_, d)| {
                let here = at < *d;
                at = at.saturating_sub(*d);
                here
            })
            .map_or("done", |(n, _)| n.as_str());
        let line = format!(
            "[{s:>4}s/{:>4}s] {phase:<10} {rate:>7} req/s  p99 {p99:>8.2} ms  errors {errors}",
            total.as_secs()
        );
        if tty {
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
        s += 1;
    }
    if tty {
        eprintln!();
    }
}

fn results(plan: &Plan, rec: &Recorder, scraped: &[Option<(f64, f64)>]) -> Results {
    let mut bounds = Vec::new();
    let mut t = 0.0;
    for p in &plan.phases {
        let d = p.duration.get().as_secs_f64();
        bounds.push((p.name.clone(), t, d));
        t += d;
    }
    let phase_at = |sec: f64| {
        bounds
            .iter()
            .find(|(_, s, d)| sec >= *s && sec < s + d)
            .map_or_else(|| "after".to_string(), |(n, _, _)| n.clone())
    };
    let delta = |s: usize| match (
        scraped.get(s).copied().flatten(),
        scraped.get(s + 1).copied().flatten(),
    ) {
        (Some(a), Some(b)) => Some(((b.0 - a.0).max(0.0), b.1)),
        _ => None,
    };
    let timeline = rec
        .seconds
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let d = delta(i);
            Second {
                t: i as u64,
                phase: phase_at(i as f64),
                sent: b.sent,
                ok: b.ok,
                errors: b.errors.clone(),
                hits: b.hits,
                p50_ms: ms(&b.latency, 0.5),
                p99_ms: ms(&b.latency, 0.99),
                p999_ms: ms(&b.latency, 0.999),
                origin_fetches: d.map(|x| x.0),
                edge_inflight: d.map(|x| x.1),
            }
        })
        .collect::<Vec<_>>();
    let phases = bounds
        .iter()
        .zip(&rec.phases)
        .map(|((name, start, dur), b)| {
            let first = *start as usize;
            let last = (start + dur).ceil() as usize;
            let fetches = match (
                scraped.get(first).copied().flatten(),
                scraped.get(last).copied().flatten(),
            ) {
                (Some(a), Some(z)) => Some((z.0 - a.0).max(0.0)),
                _ => None,
            };
            PhaseSummary {
                name: name.clone(),
                start_s: *start,
                duration_s: *dur,
                sent: b.sent,
                ok: b.ok,
                errors: b.errors.values().sum(),
                rate: b.ok as f64 / dur.max(1e-9),
                p50_ms: ms(&b.latency, 0.5),
                p99_ms: ms(&b.latency, 0.99),
                p999_ms: ms(&b.latency, 0.999),
                max_ms: if b.latency.is_empty() {
                    0.0
                } else {
                    b.latency.max() as f64 / 1000.0
                },
                failed_p99_ms: b.failed_latency.as_ref().map_or(0.0, |h| ms(h, 0.99)),
                hit_ratio: b.hits as f64 / b.ok.max(1) as f64,
                origin_fetches: fetches,
            }
        })
        .collect();
    Results {
        phases,
        timeline,
        distinct_paths: 0,
        viewers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_metrics_are_summed_from_prometheus_text() {
        let text = "# HELP x\n\
            shoal_edge_origin_fetches_total{result=\"ok\"} 12\n\
            shoal_edge_origin_fetches_total{result=\"not_modified\"} 3\n\
            shoal_edge_origin_fetches_total{result=\"timeout\"} 7\n\
            shoal_edge_inflight_requests 5\n\
            shoal_edge_inflight_requests_other 9\n";
        assert_eq!(parse_metrics(text), (15.0, 5.0));
    }

    #[test]
    fn latency_counts_from_the_intended_time_and_errors_by_kind() {
        let mut r = Recorder {
            seconds: (0..2).map(|_| Bucket::new()).collect(),
            phases: vec![Bucket::new()],
        };
        r.record(0, 0, Duration::from_millis(2), &Outcome::Ok { hit: true });
        r.record(1, 0, Duration::from_millis(900), &Outcome::Error("timeout"));
        r.record(1, 0, Duration::from_millis(4), &Outcome::Ok { hit: false });
        assert_eq!(
            (r.phases[0].sent, r.phases[0].ok, r.phases[0].hits),
            (3, 2, 1)
        );
        assert_eq!(r.seconds[1].errors.get("timeout"), Some(&1));
        // The stalled request's wait is in the tail.
        assert!(ms(&r.phases[0].latency, 0.999) >= 890.0);
        assert!(ms(&r.seconds[0].latency, 0.5) < 2.1);
    }
}

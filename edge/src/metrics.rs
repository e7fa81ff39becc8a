//! Edge metrics in Prometheus text format: the four golden signals (traffic by status and
//! cache result, latency, errors through status, saturation through in-flight requests),
//! origin fetches, peer forwards, and cache size and evictions.
//!
//! One registry per edge (not a process-global recorder), so several edges in one process
//! (the demo, the tests) keep separate metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use shoal_cache_core::StoreStats;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    status: u16,
    cache: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: &'static str,
}

/// The edge's metric families.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histogram,
    inflight: Gauge,
    origin_fetches: Family<ResultLabels, Counter>,
    origin_latency: Histogram,
    peer_forwards: Family<ResultLabels, Counter>,
    cache_bytes: Gauge,
    cache_entries: Gauge,
    evictions: Family<CauseLabels, Gauge>,
    invalidations: Counter,
    invalidation_resets: Counter,
    invalidation_seq: Gauge,
    subscribed: Gauge,
    write_back_flushes: Family<ResultLabels, Counter>,
    write_back_bytes: Gauge,
    write_back_paths: Gauge,
    fills_arriving: Gauge,
    fill_joins: Counter,
    prefetches: Family<ResultLabels, Counter>,
    ring_members: Gauge,
    ring_changes: Counter,
    discovery_errors: Counter,
}

/// Registers `metric` under `name` and returns the handle kept for recording.
fn registered<M: prometheus_client::registry::Metric + Clone>(
    r: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    r.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("shoal_edge");
        let r = &mut r;
        let requests = "Client requests by status and cache result";
        let latency = Histogram::new(exponential_buckets(0.00005, 2.0, 20));
        let origin_latency = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        let forwards = "Requests forwarded to the owner edge, by result";
        let evictions = "Cache removals by cause, since start";
        Self {
            requests: registered(r, "requests", requests, Family::default()),
            latency: registered(r, "request_duration_seconds", "Request latency", latency),
            inflight: registered(
                r,
                "inflight_requests",
                "Requests being served",
                Gauge::default(),
            ),
            origin_fetches: registered(r, "origin_fetches", "Origin fetches", Family::default()),
            origin_latency: registered(
                r,
                "origin_fetch_duration_seconds",
                "Origin fetch latency",
                origin_latency,
            ),
            peer_forwards: registered(r, "peer_forwards", forwards, Family::default()),
            cache_bytes: registered(
                r,
                "cache_bytes",
                "Bytes held by the cache",
                Gauge::default(),
            ),
            cache_entries: registered(r, "cache_entries", "Entries held", Gauge::default()),
            evictions: registered(r, "cache_evictions", evictions, Family::default()),
            invalidations: registered(
                r,
                "invalidations_applied",
                "Invalidations from the origin applied to the cache",
                Counter::default(),
            ),
            invalidation_resets: registered(
                r,
                "invalidation_resets",
                "Times the whole cache was dropped because the origin's log could not replay what this edge missed",
                Counter::default(),
            ),
            invalidation_seq: registered(
                r,
                "invalidation_seq",
                "Last invalidation sequence number applied",
                Gauge::default(),
            ),
            subscribed: registered(
                r,
                "invalidation_subscribed",
                "1 while the invalidation subscription to the origin is live",
                Gauge::default(),
            ),
            write_back_flushes: registered(
                r,
                "write_back_flushes",
                "Write-back flushes to the origin, by result (stored, superseded, refused, failed)",
                Family::default(),
            ),
            write_back_bytes: registered(
                r,
                "write_back_bytes",
                "Body bytes of acknowledged writes not yet flushed to the origin (lost if this edge dies)",
                Gauge::default(),
            ),
            write_back_paths: registered(
                r,
                "write_back_paths",
                "Paths with an acknowledged write not yet flushed to the origin",
                Gauge::default(),
            ),
            fills_arriving: registered(
                r,
                "fills_arriving",
                "Origin fills whose bodies are still arriving, shared by every request for them",
                Gauge::default(),
            ),
            fill_joins: registered(
                r,
                "fill_joins",
                "Requests served from a fill whose body was still arriving",
                Counter::default(),
            ),
            prefetches: registered(
                r,
                "prefetches",
                "CMCD prefetches by result (fetched, forwarded, cached, busy, error, invalid, not_allowed)",
                Family::default(),
            ),
            ring_members: registered(
                r,
                "ring_members",
                "Edges on this edge's ring, itself included",
                Gauge::default(),
            ),
            ring_changes: registered(
                r,
                "ring_changes",
                "Times ring discovery found edges joining or leaving",
                Counter::default(),
            ),
            discovery_errors: registered(
                r,
                "discovery_errors",
                "Ring discovery rounds whose lookup failed (the membership stayed as it was)",
                Counter::default(),
            ),
            registry: std::mem::take(r),
        }
    }
}

impl Metrics {
    /// Records a finished client request.
    pub fn request(&self, status: u16, cache: &'static str, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels { status, cache })
            .inc();
        self.latency.observe(seconds);
    }

    /// The ring has `n` edges.
    pub fn ring_members(&self, n: usize) {
        self.ring_members.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Discovery changed the ring.
    pub fn ring_changed(&self) {
        self.ring_changes.inc();
    }

    /// A discovery round failed.
    pub fn discovery_error(&self) {
        self.discovery_errors.inc();
    }

    /// A request started (+1) or ended (−1).
    pub fn inflight(&self, delta: i64) {
        self.inflight.inc_by(delta);
    }

    /// Records an origin fetch.
    pub fn origin_fetch(&self, result: &'static str, seconds: f64) {
        self.origin_fetches
            .get_or_create(&ResultLabels { result })
            .inc();
        self.origin_latency.observe(seconds);
    }

    /// Origin fetches so far with `result`.
    pub fn origin_fetches(&self, result: &'static str) -> u64 {
        self.origin_fetches
            .get_or_create(&ResultLabels { result })
            .get()
    }

    /// Records a forward to a peer.
    pub fn peer_forward(&self, result: &'static str) {
        self.peer_forwards
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// An invalidation was applied; the position is now `seq`.
    pub fn invalidation(&self, seq: u64) {
        self.invalidations.inc();
        self.invalidation_seq
            .set(i64::try_from(seq).unwrap_or(i64::MAX));
    }

    /// The cache was dropped on a reset; the position is now `seq`.
    pub fn invalidation_reset(&self, seq: u64) {
        self.invalidation_resets.inc();
        self.invalidation_seq
            .set(i64::try_from(seq).unwrap_or(i64::MAX));
    }

    /// The subscription went live or ended.
    pub fn subscribed(&self, live: bool) {
        self.subscribed.set(i64::from(live));
    }

    /// A write-back flush ended with `result`.
    pub fn write_back_flush(&self, result: &'static str) {
        self.write_back_flushes
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Write-back flushes so far with `result`.
    pub fn write_back_flushes(&self, result: &'static str) -> u64 {
        self.write_back_flushes
            .get_or_create(&ResultLabels { result })
            .get()
    }

    /// What the write-back buffer holds now.
    pub fn write_back_held(&self, bytes: u64, paths: usize) {
        self.write_back_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.write_back_paths
            .set(i64::try_from(paths).unwrap_or(i64::MAX));
    }

    /// A fill shared as it arrives began (`1`) or ended (`-1`).
    pub(crate) fn fill_arriving(&self, delta: i64) {
        self.fills_arriving.inc_by(delta);
    }

    /// A request joined a fill whose body was arriving.
    pub(crate) fn fill_joined(&self) {
        self.fill_joins.inc();
    }

    /// Requests that joined a fill whose body was arriving, so far.
    pub fn fill_joins(&self) -> u64 {
        self.fill_joins.get()
    }

    /// A CMCD prefetch ended with `result`.
    pub(crate) fn prefetch(&self, result: &'static str) {
        self.prefetches
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// CMCD prefetches that ended with `result`, so far.
    pub fn prefetches(&self, result: &'static str) -> u64 {
        self.prefetches
            .get_or_create(&ResultLabels { result })
            .get()
    }

    /// Invalidations applied so far.
    pub fn invalidations_applied(&self) -> u64 {
        self.invalidations.get()
    }

    /// The Prometheus exposition, with cache gauges taken from `stats`.
    pub fn render(&self, stats: &StoreStats) -> String {
        self.cache_bytes.set(stats.bytes as i64);
        self.cache_entries.set(stats.entries as i64);
        for (cause, v) in [
            ("size", stats.evicted_size),
            ("expired", stats.evicted_expired),
            ("explicit", stats.evicted_explicit),
            ("replaced", stats.replaced),
        ] {
            self.evictions
                .get_or_create(&CauseLabels { cause })
                .set(v as i64);
        }
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

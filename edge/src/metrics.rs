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
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("shoal_edge");
        let m = Self {
            requests: Family::default(),
            latency: Histogram::new(exponential_buckets(0.00005, 2.0, 20)),
            inflight: Gauge::default(),
            origin_fetches: Family::default(),
            origin_latency: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
            peer_forwards: Family::default(),
            cache_bytes: Gauge::default(),
            cache_entries: Gauge::default(),
            evictions: Family::default(),
            registry: Registry::default(),
        };
        r.register(
            "requests",
            "Client requests by status and cache result",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Client request latency to the response head",
            m.latency.clone(),
        );
        r.register(
            "inflight_requests",
            "Client requests being served",
            m.inflight.clone(),
        );
        r.register(
            "origin_fetches",
            "Origin fetches by result",
            m.origin_fetches.clone(),
        );
        r.register(
            "origin_fetch_duration_seconds",
            "Origin fetch latency",
            m.origin_latency.clone(),
        );
        r.register(
            "peer_forwards",
            "Requests forwarded to the owner edge, by result",
            m.peer_forwards.clone(),
        );
        r.register(
            "cache_bytes",
            "Bytes held by the cache",
            m.cache_bytes.clone(),
        );
        r.register(
            "cache_entries",
            "Entries held by the cache",
            m.cache_entries.clone(),
        );
        r.register(
            "cache_evictions",
            "Cache removals by cause, since start",
            m.evictions.clone(),
        );
        Self { registry: r, ..m }
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

//! Origin metrics in Prometheus text format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// How a fetch ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum FetchResult {
    /// Full body sent.
    Ok,
    /// Conditional fetch matched: no body.
    NotModified,
    /// No such object.
    NotFound,
    /// Malformed or unsafe request.
    BadRequest,
    /// Origin-side failure.
    Error,
    /// Answered by the upstream HTTP server (any status).
    Upstream,
    /// The upstream could not be reached or did not answer in time (502/504).
    UpstreamError,
}

impl FetchResult {
    /// The metric label value (snake case, as Prometheus labels are written).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::NotModified => "not_modified",
            Self::NotFound => "not_found",
            Self::BadRequest => "bad_request",
            Self::Error => "error",
            Self::Upstream => "upstream",
            Self::UpstreamError => "upstream_error",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// The origin's metric families.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    fetches: Family<ResultLabels, Counter>,
    bytes: Counter,
    latency: Histogram,
    invalidations: Counter,
    subscribers: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("shoal_origin");
        let fetches = Family::<ResultLabels, Counter>::default();
        let bytes = Counter::default();
        let latency = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        registry.register("fetches", "Fetches served, by result", fetches.clone());
        registry.register("body_bytes", "Body bytes sent to edges", bytes.clone());
        registry.register(
            "fetch_duration_seconds",
            "Time to serve a fetch, from request to last byte",
            latency.clone(),
        );
        let invalidations = Counter::default();
        let subscribers = Gauge::default();
        registry.register(
            "invalidations",
            "Invalidations appended to the log (writes, deletes, purges)",
            invalidations.clone(),
        );
        registry.register(
            "subscribers",
            "Edges subscribed to invalidations now",
            subscribers.clone(),
        );
        Self {
            registry,
            fetches,
            bytes,
            latency,
            invalidations,
            subscribers,
        }
    }
}

impl Metrics {
    /// Counts one fetch as soon as its answer is decided (before any of it is sent), so
    /// the count is exact by the time an edge has the response.
    pub fn fetch(&self, result: FetchResult, body_bytes: u64) {
        self.fetches
            .get_or_create(&ResultLabels {
                result: result.as_str(),
            })
            .inc();
        self.bytes.inc_by(body_bytes);
    }

    /// Records how long a fetch took, request to last byte.
    pub fn latency(&self, seconds: f64) {
        self.latency.observe(seconds);
    }

    /// Counts one invalidation.
    pub fn invalidation(&self) {
        self.invalidations.inc();
    }

    /// Sets the number of subscribed edges.
    pub fn subscribers(&self, n: usize) {
        self.subscribers.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Fetches so far with `result`.
    pub fn fetches(&self, result: FetchResult) -> u64 {
        self.fetches
            .get_or_create(&ResultLabels {
                result: result.as_str(),
            })
            .get()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

//! What the cache stores: a response with its freshness facts.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::freshness::{Freshness, FreshnessState};

/// Bytes charged to every entry beyond its body and headers: key, `Arc`, queue and map
/// slots. A rough measure of the real per-entry cost, so a cache of tiny objects cannot hold
/// millions of them within a small byte budget.
pub const ENTRY_OVERHEAD: u64 = 256;

/// The strong ETag of a written object: its version and a hash of its body. The origin
/// and a `write-back` edge (which acknowledges a write before the origin sees it) both
/// use it, so a write keeps its ETag when it is flushed.
pub fn etag_for(version: u64, body: &[u8]) -> String {
    let h = xxhash_rust::xxh3::xxh3_64(body);
    format!("\"{version:x}-{h:016x}\"")
}

/// Anything the [`crate::store::Store`] can hold.
pub trait Cacheable: Send + Sync + 'static {
    /// Bytes this entry costs against the capacity.
    fn weight(&self) -> u64;
    /// How long memory may hold it, from `now`; `None` for no limit.
    fn time_to_live(&self, now: SystemTime) -> Option<Duration>;
}

/// A cached HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedObject {
    /// HTTP status.
    pub status: u16,
    /// Headers that matter to clients and caching (lower-case names), as received.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
    /// Strong or weak ETag, as sent.
    pub etag: Option<String>,
    /// Origin version of the object.
    pub version: u64,
    /// Freshness facts (lifetime, age, stale windows).
    pub freshness: Freshness,
    /// Surrogate keys the object can be invalidated by.
    pub tags: Vec<String>,
}

impl CachedObject {
    /// Fresh or stale at `now`.
    pub fn state(&self, now: SystemTime) -> FreshnessState {
        self.freshness.state(now)
    }
}

impl Cacheable for CachedObject {
    fn weight(&self) -> u64 {
        let headers: usize = self.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        let tags: usize = self.tags.iter().map(String::len).sum();
        let etag = self.etag.as_ref().map_or(0, String::len);
        self.body.len() as u64 + (headers + tags + etag) as u64 + ENTRY_OVERHEAD
    }

    fn time_to_live(&self, now: SystemTime) -> Option<Duration> {
        Some(self.freshness.keep_for(now))
    }
}

/// An entry of known size and no expiry: trace replay and benchmarks, where only the size
/// matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weighted {
    /// Weight in bytes (or 1 for count-based capacity).
    pub size: u64,
}

impl Cacheable for Weighted {
    fn weight(&self) -> u64 {
        self.size
    }
    fn time_to_live(&self, _now: SystemTime) -> Option<Duration> {
        None
    }
}

//! What every request shares: the configuration, the cache, the region's routing contract,
//! the peers, the origin link, the metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::SystemTime;

use axum::http::HeaderValue;
use shoal_cache_core::consistency::{Mode, Modes};
use shoal_cache_core::{CachedObject, FreshnessPolicy, Store};

use crate::config::EdgeConfig;
use crate::error::EdgeError;
use crate::metrics::Metrics;
use crate::peers::Peers;
use crate::request::admit::Admission;
use crate::upstream::Origin;

/// Shared by every request of one edge.
#[derive(Debug)]
pub(crate) struct EdgeState {
    pub(crate) config: EdgeConfig,
    /// Freshness defaults, derived from the config once.
    pub(crate) freshness: FreshnessPolicy,
    pub(crate) store: Store<CachedObject>,
    /// The ring and the region's other edges (changed by ring discovery).
    pub(crate) peers: Peers,
    pub(crate) origin: Arc<dyn Origin>,
    /// Overload limits: per-client rate, requests in flight, the origin fill queue.
    pub(crate) admission: Admission,
    pub(crate) metrics: Metrics,
    /// CMCD prefetch limits.
    pub(crate) prefetcher: crate::request::prefetch::Prefetcher,
    /// Fills whose bodies are still arriving, shared as they do.
    pub(crate) growing: crate::request::growing::GrowingFills,
    /// Which URLs vary, and on which request fields.
    pub(crate) vary: crate::vary::VaryIndex,
    /// Acknowledged writes to `write-back` paths not yet at the origin.
    pub(crate) write_back: crate::writeback::WriteBack,
    /// Set at shutdown: readiness turns false before listeners close.
    pub(crate) draining: AtomicBool,
    /// Consistency modes by path, as the origin announced them on the last subscription.
    pub(crate) modes: std::sync::RwLock<Arc<Modes>>,
    /// Until when this edge holds the origin's lease (for `consistent` paths).
    pub(crate) lease_until: std::sync::Mutex<Option<std::time::Instant>>,
    /// `X-Shoal-Node` value, built once.
    pub(crate) node_header: HeaderValue,
    pub(crate) date: DateCache,
}

impl EdgeState {
    /// State for a checked `config`, fetching through `origin`.
    pub(crate) fn new(config: EdgeConfig, origin: Arc<dyn Origin>) -> Result<Self, EdgeError> {
        config.validate()?;
        let store = Store::new(config.store_config())
            .map_err(|e| EdgeError::Config(format!("cache: {e}")))?;
        let node_header = HeaderValue::from_str(&config.node_id).map_err(|_| {
            EdgeError::Config(format!(
                "node_id {:?} is not a header value",
                config.node_id
            ))
        })?;
        let t = &config.timeouts;
        let members = crate::discovery::Membership::literal(&config);
        let peers = Peers::new(
            &config.node_id,
            config.vnodes,
            config.key_policy(),
            &members,
            t.peer.get(),
            t.peer_down_for.get(),
        )?;
        Ok(Self {
            freshness: config.freshness(),
            store,
            peers,
            origin,
            admission: Admission::new(
                &config.overload,
                members.addrs.values().map(SocketAddr::ip).collect(),
            ),
            metrics: Metrics::default(),
            growing: Default::default(),
            vary: Default::default(),
            prefetcher: crate::request::prefetch::Prefetcher::new(&config.prefetch),
            write_back: crate::writeback::WriteBack::new(&config.write_back),
            draining: AtomicBool::new(false),
            modes: std::sync::RwLock::new(Arc::new(Modes::default())),
            lease_until: std::sync::Mutex::new(None),
            node_header,
            date: DateCache::default(),
            config,
        })
    }
}

impl EdgeState {
    /// The consistency mode of `path` (a path, or path and query).
    pub(crate) fn mode(&self, path: &str) -> Mode {
        self.modes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .of(path)
    }

    /// Whether this edge holds a lease now.
    pub(crate) fn has_lease(&self) -> bool {
        self.lease_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| std::time::Instant::now() < t)
    }

    /// Extends the lease to `until` (never shortens it).
    pub(crate) fn extend_lease(&self, until: std::time::Instant) {
        let mut l = self.lease_until.lock().unwrap_or_else(|e| e.into_inner());
        if l.is_none_or(|t| t < until) {
            *l = Some(until);
        }
    }

    /// Applies an invalidation to the store and to the fills still arriving; returns how
    /// many stored entries it named.
    pub(crate) async fn invalidate(
        &self,
        matcher: shoal_cache_core::Matcher<CachedObject>,
        purge: shoal_cache_core::Purge<CachedObject>,
    ) -> usize {
        self.growing.invalidate(&matcher);
        self.store.invalidate(matcher, purge).await
    }

    /// Takes the region membership discovery found: a new ring when nodes came or went.
    pub(crate) fn set_members(&self, m: &crate::discovery::Membership) {
        match self.peers.update(m) {
            Ok(change) => {
                if !change.joined.is_empty() || !change.left.is_empty() {
                    tracing::info!(joined = ?change.joined, left = ?change.left, "ring changed");
                    self.metrics.ring_changed();
                }
                self.metrics.ring_members(self.peers.now().region.len());
                self.admission
                    .set_peers(m.addrs.values().map(SocketAddr::ip).collect());
            }
            Err(e) => tracing::warn!("ring discovery: {e}"),
        }
    }

    /// Takes the modes the origin announced.
    pub(crate) fn set_modes(&self, modes: Modes) {
        *self.modes.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(modes);
    }
}

/// The `Date` header, formatted at most once per second.
#[derive(Debug, Default)]
pub(crate) struct DateCache(std::sync::Mutex<Option<(u64, HeaderValue)>>);

impl DateCache {
    pub(crate) fn get(&self, now: SystemTime) -> HeaderValue {
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match &*g {
            Some((s, v)) if *s == secs => v.clone(),
            _ => {
                let v = HeaderValue::from_str(&httpdate::fmt_http_date(now))
                    .unwrap_or(HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"));
                *g = Some((secs, v.clone()));
                v
            }
        }
    }
}

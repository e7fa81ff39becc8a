//! CMCD prefetch: warm the object a player says it will ask for next.
//!
//! A player's CTA-5004 data names its next request (`nor`). When `prefetch.enabled`, the
//! edge that serves a read carrying one resolves `nor` against the request's URL and makes
//! sure that object's owner in the region starts filling it: itself, or the owner over a
//! peer request marked [`PREFETCH`] (answered `202` at once). The fill is the ordinary one
//! (coalesced, stored by the usual rules), so the player's next request is a hit or joins
//! a fill already under way.
//!
//! Bounded, and never at a viewer's expense: at most `max_concurrent` prefetches run on an
//! edge and none starts while those running hold `max_bytes`; beyond that a prefetch is
//! skipped, not queued. Nothing is prefetched for a path that needs a signed URL (the
//! client proved nothing about the next one), on a `direct` path, or for an absolute
//! `nor` (another host). Bad CMCD is ignored: it is advisory and never fails a request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderMap, Method, Request, header};
use bytes::Bytes;
use http_body_util::Full;
use shoal_cache_core::CacheKey;
use shoal_cache_core::cmcd::{Cmcd, resolve_next};
use tokio::sync::Semaphore;
use tracing::debug;

use super::fill::{self, Served};
use super::route::FORWARDED;
use super::validate::Target;
use crate::config::PrefetchSection;
use crate::state::EdgeState;

/// Header of a peer's prefetch request: the owner fills the key and answers `202` at once.
pub const PREFETCH: &str = "x-shoal-prefetch";

/// The prefetch limits of one edge.
#[derive(Debug)]
pub(crate) struct Prefetcher {
    slots: Arc<Semaphore>,
    bytes: AtomicU64,
    max_bytes: u64,
}

impl Prefetcher {
    pub(crate) fn new(c: &PrefetchSection) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(c.max_concurrent.max(1))),
            bytes: AtomicU64::new(0),
            max_bytes: c.max_bytes.bytes(),
        }
    }
}

/// Starts the prefetch a read's CMCD asks for, if any (the read itself goes on at once).
pub(crate) fn after_read(st: &Arc<EdgeState>, headers: &HeaderMap, target: &Target) {
    if !st.config.prefetch.enabled {
        return;
    }
    let (path, query) = match target.path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target.path_and_query.as_str(), None),
    };
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let next = match Cmcd::from_request(query, header) {
        Ok(Some(c)) => c.next,
        Ok(None) => return,
        Err(e) => {
            debug!("ignoring CMCD: {e}");
            st.metrics.prefetch("invalid");
            return;
        }
    };
    let Some(next) = next else { return };
    let resolved = resolve_next(path, &next);
    let key = resolved
        .as_deref()
        .and_then(|n| st.peers.now().region.key(&target.host, n).ok());
    let Some(key) = key else {
        st.metrics.prefetch("invalid");
        return;
    };
    let next_path = key.path_and_query().split('?').next().unwrap_or_default();
    if st.config.signed_urls.required(next_path) || !st.mode(key.path_and_query()).caches() {
        st.metrics.prefetch("not_allowed");
        return;
    }
    let (st, host) = (st.clone(), target.host.clone());
    tokio::spawn(async move {
        if st.peers.now().region.owner(&key) == Some(&st.config.node_id) {
            local(st, key).await;
        } else {
            to_owner(st, &host, key).await;
        }
    });
}

/// Asks the key's owner to prefetch it; the owner answers as soon as it has started.
async fn to_owner(st: Arc<EdgeState>, host: &str, key: CacheKey) {
    let members = st.peers.now();
    for node in members.region.candidates(&key) {
        if node == st.config.node_id {
            break;
        }
        let Some(peer) = members.get(node) else {
            continue;
        };
        if peer.is_down(std::time::Instant::now()) {
            continue;
        }
        let req = Request::builder()
            .method(Method::HEAD)
            .uri(format!("http://{}{}", peer.addr, key.path_and_query()))
            .header(header::HOST, host)
            .header(FORWARDED, st.node_header.clone())
            .header(PREFETCH, "1")
            .body(Full::new(Bytes::new()));
        let Ok(req) = req else { return };
        let sent =
            tokio::time::timeout(st.config.timeouts.peer.get(), st.peers.client.request(req));
        let ok = matches!(sent.await, Ok(Ok(r)) if r.status().is_success());
        st.metrics.prefetch(if ok { "forwarded" } else { "error" });
        return;
    }
    // No live owner: this edge serves the key's requests now, so it prefetches.
    local(st, key).await;
}

/// Fills `key` here unless it is cached or being filled, within the prefetch limits.
pub(crate) async fn local(st: Arc<EdgeState>, key: CacheKey) {
    if st.growing.get(&key).is_some() || st.store.contains(key.as_str()).await {
        st.metrics.prefetch("cached");
        return;
    }
    let p = &st.prefetcher;
    if p.bytes.load(Ordering::Relaxed) >= p.max_bytes {
        st.metrics.prefetch("busy");
        return;
    }
    let Ok(_slot) = p.slots.clone().try_acquire_owned() else {
        st.metrics.prefetch("busy");
        return;
    };
    match fill::fill(&st, &key, false, None, Arc::default()).await {
        Ok(Served::Growing(g, _)) => {
            p.bytes.fetch_add(g.length, Ordering::Relaxed);
            g.done().await;
            p.bytes.fetch_sub(g.length, Ordering::Relaxed);
            st.metrics.prefetch("fetched");
        }
        Ok(_) => st.metrics.prefetch("fetched"),
        Err(e) => {
            debug!("prefetch of {key} failed: {e}");
            st.metrics.prefetch("error");
        }
    }
}

//! Phase 3, **lookup**: what the cache holds for the key decides the plan. A pure function
//! of the lookup, so every case is in one table test.

use std::sync::Arc;

use shoal_cache_core::{CachedObject, FreshnessState, Lookup};

/// What to do after the lookup.
#[derive(Debug, Clone)]
pub(crate) enum Plan {
    /// Fresh: serve it.
    Serve(Arc<CachedObject>),
    /// Stale inside stale-while-revalidate: serve it and refresh in the background.
    ServeAndRefresh(Arc<CachedObject>),
    /// Stale: revalidate (conditional fetch); on an origin failure serve the stale copy
    /// only if stale-if-error allows it.
    Revalidate {
        /// The stored copy.
        stale: Arc<CachedObject>,
        /// stale-if-error allows serving it when the origin fails.
        serve_if_error: bool,
    },
    /// Not cached: fill.
    Fill,
}

/// The plan for a lookup result. A copy older than `min_version` (the last version the
/// client saw, `X-Shoal-Min-Version`) is revalidated first and never served on an origin
/// failure: read-your-writes and monotonic reads from any edge. So is every copy when
/// `unleased` (a `consistent` path on an edge without a lease).
pub(crate) fn plan(lookup: Lookup, min_version: Option<u64>, unleased: bool) -> Plan {
    let older = |o: &CachedObject| unleased || min_version.is_some_and(|m| o.version < m);
    match lookup {
        Lookup::Fresh(obj) | Lookup::Stale(obj, _) if older(&obj) => Plan::Revalidate {
            stale: obj,
            serve_if_error: false,
        },
        Lookup::Fresh(obj) => Plan::Serve(obj),
        Lookup::Stale(
            obj,
            FreshnessState::Stale {
                serve_while_revalidate: true,
                ..
            },
        ) => Plan::ServeAndRefresh(obj),
        Lookup::Stale(stale, state) => Plan::Revalidate {
            stale,
            serve_if_error: matches!(
                state,
                FreshnessState::Stale {
                    serve_if_error: true,
                    ..
                }
            ),
        },
        Lookup::Miss => Plan::Fill,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn obj() -> Arc<CachedObject> {
        Arc::new(CachedObject {
            status: 200,
            headers: Vec::new(),
            body: bytes::Bytes::new(),
            etag: None,
            version: 1,
            freshness: shoal_cache_core::Freshness::fixed(
                std::time::SystemTime::now(),
                Duration::from_secs(1),
            ),
            tags: Vec::new(),
        })
    }

    fn stale(swr: bool, sie: bool) -> FreshnessState {
        FreshnessState::Stale {
            serve_while_revalidate: swr,
            serve_if_error: sie,
            staleness: Duration::from_secs(1),
        }
    }

    #[test]
    fn every_lookup_has_one_plan() {
        let cases = [
            (Lookup::Fresh(obj()), "serve"),
            (Lookup::Stale(obj(), stale(true, false)), "serve+refresh"),
            (Lookup::Stale(obj(), stale(true, true)), "serve+refresh"),
            (
                Lookup::Stale(obj(), stale(false, true)),
                "revalidate, stale on error",
            ),
            (Lookup::Stale(obj(), stale(false, false)), "revalidate"),
            (Lookup::Miss, "fill"),
        ];
        let older = || Lookup::Fresh(obj());
        let cases = cases.into_iter().map(|(l, w)| (l, None, w)).chain([
            (older(), Some(2), "revalidate"),
            (older(), Some(1), "serve"),
            (
                Lookup::Stale(obj(), stale(true, true)),
                Some(5),
                "revalidate",
            ),
            (Lookup::Miss, Some(5), "fill"),
        ]);
        let cases = cases.map(|(l, m, w)| (l, m, false, w)).chain([
            (older(), None, true, "revalidate"),
            (
                Lookup::Stale(obj(), stale(true, true)),
                None,
                true,
                "revalidate",
            ),
            (Lookup::Miss, None, true, "fill"),
        ]);
        for (lookup, min, unleased, want) in cases {
            let got = match plan(lookup, min, unleased) {
                Plan::Serve(_) => "serve",
                Plan::ServeAndRefresh(_) => "serve+refresh",
                Plan::Revalidate {
                    serve_if_error: true,
                    ..
                } => "revalidate, stale on error",
                Plan::Revalidate { .. } => "revalidate",
                Plan::Fill => "fill",
            };
            assert_eq!(got, want);
        }
    }
}

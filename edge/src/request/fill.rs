//! Phase 4, **fill**: fetch from the origin through the store's coalescing, turn the reply
//! into a cached object, and decide what this caller serves.
//!
//! N concurrent misses for one key make one origin fetch: the first caller runs the fill,
//! the others join it and are served its response (`collapsed`). Two answers cannot be
//! shared: a per-client response (`private`, `Set-Cookie`, or one to an authorised request
//! that did not allow sharing) and a body over the maximum object size, which only the
//! caller that ran the fill holds as a stream (`Streamed`). Joiners of those fetch for themselves ([`Decision::FetchAlone`],
//! pingora's "give up the lock").

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use shoal_cache_core::wire::ResponseHead;
use shoal_cache_core::{
    CacheKey, CacheStatus, CachedObject, Exchange, FillOutcome, Filled, Freshness, FreshnessPolicy,
    NoStoreReason, freshness,
};

use crate::error::EdgeError;
use crate::headers;
use crate::state::EdgeState;
use crate::upstream::{Fetch, OriginBody, OriginReply};

/// What the fill phase hands to respond.
pub(crate) enum Served {
    /// A whole object (cached or not).
    Object(Arc<CachedObject>, CacheStatus),
    /// A body too large to store, streamed from the origin.
    Stream(ResponseHead, OriginBody, CacheStatus),
}

impl Served {
    pub(crate) fn status(&self) -> CacheStatus {
        match self {
            Self::Object(_, s) | Self::Stream(_, _, s) => *s,
        }
    }
}

/// The stream of an unstorable body, from the fill work to the caller that ran it.
#[derive(Default)]
struct Handoff(Mutex<Option<(ResponseHead, OriginBody)>>);

impl Handoff {
    fn put(&self, head: ResponseHead, body: OriginBody) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((head, body));
    }
    fn take(&self) -> Option<(ResponseHead, OriginBody)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// How a caller came by the fill's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum How {
    Ran,
    Joined,
    FoundCached,
}

/// What this caller serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The fill's object, with this cache status.
    Serve(CacheStatus),
    /// The streamed body this caller's fill left in the handoff.
    Stream,
    /// Nothing shareable: fetch alone, uncoalesced and unstored.
    FetchAlone,
}

/// The decision for a fill outcome. `revalidated`: for a refresh of a stale copy, whether
/// the origin confirmed it (same version and ETag); `None` for a miss.
pub(crate) fn decide(
    how: How,
    stored: Result<(), NoStoreReason>,
    revalidated: Option<bool>,
) -> Decision {
    use NoStoreReason::{Authorization, Private, SetCookie, Streamed};
    match (how, stored, revalidated) {
        (How::Ran, Err(Streamed), _) => Decision::Stream,
        (_, Err(Streamed), _) => Decision::FetchAlone,
        (How::Joined, Err(Private | SetCookie | Authorization), _) => Decision::FetchAlone,
        (_, Err(r), _) => Decision::Serve(CacheStatus::MissNotStored(r)),
        (How::FoundCached, Ok(()), _) => Decision::Serve(CacheStatus::Hit),
        (_, Ok(()), Some(true)) => Decision::Serve(CacheStatus::Revalidated),
        (_, Ok(()), Some(false)) => Decision::Serve(CacheStatus::Expired),
        (How::Ran, Ok(()), None) => Decision::Serve(CacheStatus::MissStored),
        (How::Joined, Ok(()), None) => Decision::Serve(CacheStatus::Collapsed),
    }
}

/// Fills `key` from the origin through the store: a miss (`stale` is `None`) or a refresh
/// of the stale copy (its ETag makes the fetch conditional).
pub(crate) async fn fill(
    st: &Arc<EdgeState>,
    key: &CacheKey,
    authorized: bool,
    stale: Option<Arc<CachedObject>>,
) -> Result<Served, EdgeError> {
    let handoff = Arc::new(Handoff::default());
    let work = {
        let (st, key, stale, handoff) = (st.clone(), key.clone(), stale.clone(), handoff.clone());
        move || origin_fill(st, key, authorized, stale, handoff)
    };
    let outcome = match &stale {
        None => st.store.fill_if_absent(key.as_str(), work).await,
        Some(_) => st.store.fill(key.as_str(), work).await,
    }
    .map_err(|e| (*e).clone())?;
    let how = match &outcome {
        FillOutcome::Ran { .. } => How::Ran,
        FillOutcome::Joined { .. } => How::Joined,
        FillOutcome::FoundCached(_) => How::FoundCached,
    };
    let value = outcome.value().clone();
    let revalidated = stale
        .as_ref()
        .map(|old| old.version == value.version && old.etag == value.etag);
    match decide(how, outcome.stored(), revalidated) {
        Decision::Serve(status) => Ok(Served::Object(value, status)),
        Decision::Stream => match handoff.take() {
            Some((head, body)) => Ok(Served::Stream(
                head,
                body,
                CacheStatus::MissNotStored(NoStoreReason::Streamed),
            )),
            None => alone(st, key, authorized).await,
        },
        Decision::FetchAlone => alone(st, key, authorized).await,
    }
}

/// One origin fetch, queued for a fill slot, counted and timed: the only way the request
/// path reaches the origin. A spike of distinct misses waits here (bounded by
/// `fill_queue_timeout`) instead of opening unbounded origin streams.
async fn origin_fetch(st: &EdgeState, req: Fetch) -> Result<OriginReply, EdgeError> {
    let a = &st.admission;
    let Ok(Ok(_slot)) = tokio::time::timeout(a.fill_wait, a.fills.acquire()).await else {
        st.metrics
            .origin_fetch("queue_full", a.fill_wait.as_secs_f64());
        return Err(EdgeError::Overloaded("origin fill queue full"));
    };
    let started = Instant::now();
    let r = st.origin.fetch(req).await;
    let result = match &r {
        Ok(OriginReply::NotModified { .. }) => "not_modified",
        Ok(_) => "ok",
        Err(EdgeError::OriginTimeout(_)) => "timeout",
        Err(EdgeError::CircuitOpen(_)) => "circuit_open",
        Err(EdgeError::OriginDown(_)) => "link_down",
        Err(_) => "error",
    };
    st.metrics
        .origin_fetch(result, started.elapsed().as_secs_f64());
    r
}

fn fetch_of(st: &EdgeState, key: &CacheKey, etag: Option<String>) -> Fetch {
    Fetch {
        target: key.path_and_query().to_string(),
        etag,
        max_body: st.config.cache.max_object_size.bytes(),
    }
}

/// The fill work: one origin fetch turned into a storable object.
async fn origin_fill(
    st: Arc<EdgeState>,
    key: CacheKey,
    authorized: bool,
    stale: Option<Arc<CachedObject>>,
    handoff: Arc<Handoff>,
) -> Result<Filled<CachedObject>, EdgeError> {
    let request_time = SystemTime::now();
    let etag = stale.as_ref().and_then(|o| o.etag.clone());
    let reply = origin_fetch(&st, fetch_of(&st, &key, etag)).await?;
    let exchange = Exchange {
        request_time,
        response_time: SystemTime::now(),
    };
    let rules = Rules::of(&st, authorized, &key);
    match reply {
        OriginReply::NotModified { headers } => {
            let Some(old) = stale else {
                return Err(EdgeError::OriginProtocol(
                    "not-modified for an unconditional fetch".into(),
                ));
            };
            Ok(Filled {
                value: Arc::new(refreshed(&old, headers, exchange, &st.freshness)),
                storable: Ok(()),
            })
        }
        OriginReply::Complete { head, body } => {
            let (obj, storable) = rules.build(head, body, exchange);
            Ok(Filled {
                value: Arc::new(obj),
                storable,
            })
        }
        OriginReply::Streaming { head, body } => {
            let (obj, _) = rules.build(head.clone(), Bytes::new(), exchange);
            handoff.put(head, body);
            Ok(Filled {
                value: Arc::new(obj),
                storable: Err(NoStoreReason::Streamed),
            })
        }
    }
}

/// An uncoalesced, unstored fetch (a body too large to store; a per-client response).
async fn alone(st: &EdgeState, key: &CacheKey, authorized: bool) -> Result<Served, EdgeError> {
    let request_time = SystemTime::now();
    match origin_fetch(st, fetch_of(st, key, None)).await? {
        OriginReply::Streaming { head, body } => Ok(Served::Stream(
            head,
            body,
            CacheStatus::MissNotStored(NoStoreReason::Streamed),
        )),
        OriginReply::Complete { head, body } => {
            let exchange = Exchange {
                request_time,
                response_time: SystemTime::now(),
            };
            let (obj, storable) = Rules::of(st, authorized, key).build(head, body, exchange);
            let reason = storable.err().unwrap_or(NoStoreReason::Private);
            Ok(Served::Object(
                Arc::new(obj),
                CacheStatus::MissNotStored(reason),
            ))
        }
        OriginReply::NotModified { .. } => Err(EdgeError::OriginProtocol(
            "not-modified for an unconditional fetch".into(),
        )),
    }
}

/// What decides freshness and storability of an origin response.
pub(crate) struct Rules<'a> {
    pub(crate) freshness: &'a FreshnessPolicy,
    /// Negative-caching TTLs by status.
    pub(crate) negative_ttl:
        &'a std::collections::BTreeMap<u16, shoal_cache_core::size::HumanDuration>,
    pub(crate) authorized: bool,
    /// The path's mode is `direct`: nothing is stored.
    pub(crate) direct: bool,
}

impl<'a> Rules<'a> {
    pub(crate) fn of(st: &'a EdgeState, authorized: bool, key: &CacheKey) -> Self {
        Self {
            freshness: &st.freshness,
            negative_ttl: &st.config.cache.negative_ttl,
            authorized,
            direct: !st.mode(key.path_and_query()).caches(),
        }
    }

    /// The object for an origin response, and whether a shared cache may store it.
    pub(crate) fn build(
        &self,
        head: ResponseHead,
        body: Bytes,
        exchange: Exchange,
    ) -> (CachedObject, Result<(), NoStoreReason>) {
        // Surrogate keys are indexed, never sent on: `keep` drops the header.
        let tags = shoal_cache_core::invalidation::surrogate_keys(&head.headers);
        let headers = headers::keep(head.headers);
        let negative = self.negative_ttl.get(&head.status).map(|d| d.get());
        let fr = match negative.filter(|_| head.status >= 400) {
            Some(ttl) => Freshness::fixed(exchange.response_time, ttl),
            None => Freshness::from_response(head.status, &headers, exchange, self.freshness),
        };
        let storable = if self.direct {
            Err(NoStoreReason::Direct)
        } else {
            freshness::storable(head.status, &headers, self.authorized, negative)
        };
        let etag = freshness::header_values(&headers, "etag")
            .next()
            .map(str::to_string);
        let obj = CachedObject {
            status: head.status,
            headers,
            body,
            etag,
            version: head.version,
            freshness: fr,
            tags,
        };
        (obj, storable)
    }
}

/// The stored object with the headers of a 304 merged in (RFC 9111 §4.3.4).
fn refreshed(
    old: &CachedObject,
    fresh: Vec<(String, String)>,
    exchange: Exchange,
    policy: &FreshnessPolicy,
) -> CachedObject {
    let fresh = headers::keep(fresh);
    let mut merged: Vec<(String, String)> = old
        .headers
        .iter()
        .filter(|(n, _)| !fresh.iter().any(|(m, _)| m.eq_ignore_ascii_case(n)))
        .cloned()
        .collect();
    merged.extend(fresh);
    let freshness = Freshness::from_response(old.status, &merged, exchange, policy);
    CachedObject {
        headers: merged,
        freshness,
        ..old.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use NoStoreReason::*;

    #[test]
    fn every_fill_outcome_has_one_decision() {
        use CacheStatus as C;
        use Decision::*;
        use How::*;
        let cases = [
            (Ran, Ok(()), None, Serve(C::MissStored)),
            (Joined, Ok(()), None, Serve(C::Collapsed)),
            (FoundCached, Ok(()), None, Serve(C::Hit)),
            (Ran, Ok(()), Some(true), Serve(C::Revalidated)),
            (Joined, Ok(()), Some(true), Serve(C::Revalidated)),
            (Ran, Ok(()), Some(false), Serve(C::Expired)),
            (Ran, Err(Streamed), None, Stream),
            (Joined, Err(Streamed), None, FetchAlone),
            // Complete, but heavier than the store takes: everyone can serve the body.
            (Ran, Err(TooLarge), None, Serve(C::MissNotStored(TooLarge))),
            (
                Joined,
                Err(TooLarge),
                None,
                Serve(C::MissNotStored(TooLarge)),
            ),
            (Ran, Err(Private), None, Serve(C::MissNotStored(Private))),
            (Joined, Err(Private), None, FetchAlone),
            (Joined, Err(SetCookie), None, FetchAlone),
            (Joined, Err(Authorization), None, FetchAlone),
            (
                Ran,
                Err(Authorization),
                None,
                Serve(C::MissNotStored(Authorization)),
            ),
            (Joined, Err(NoStore), None, Serve(C::MissNotStored(NoStore))),
        ];
        for (how, stored, reval, want) in cases {
            assert_eq!(
                decide(how, stored, reval),
                want,
                "{how:?} {stored:?} {reval:?}"
            );
        }
    }

    #[test]
    fn authorised_requests_are_stored_only_when_the_response_allows_sharing() {
        let policy = FreshnessPolicy::default();
        let none = std::collections::BTreeMap::new();
        let head = |cc: &str| ResponseHead {
            request_id: 1,
            status: 200,
            headers: vec![("cache-control".into(), cc.into())],
            length: shoal_cache_core::wire::BodyLength::Known(0),
            version: 1,
        };
        let now = SystemTime::now();
        let ex = Exchange {
            request_time: now,
            response_time: now,
        };
        for (authorized, cc, want) in [
            (true, "max-age=60", Err(Authorization)),
            (true, "public, max-age=60", Ok(())),
            (true, "s-maxage=60", Ok(())),
            (true, "max-age=60, must-revalidate", Ok(())),
            (false, "max-age=60", Ok(())),
        ] {
            let rules = Rules {
                freshness: &policy,
                negative_ttl: &none,
                authorized,
                direct: false,
            };
            let (_, storable) = rules.build(head(cc), Bytes::new(), ex);
            assert_eq!(storable, want, "authorized={authorized} {cc}");
            // A `direct` path is never stored, whatever the response allows.
            let direct = Rules {
                direct: true,
                ..rules
            };
            assert_eq!(direct.build(head(cc), Bytes::new(), ex).1, Err(Direct));
        }
    }
}

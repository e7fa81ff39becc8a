//! Phase 4, **fill**: fetch from the origin through the store's coalescing, turn the reply
//! into a cached object, and decide what this caller serves.
//!
//! N concurrent misses for one key make one origin fetch: the first caller runs the fill,
//! the others join it and are served its response (`collapsed`). A body longer than
//! [`growing::STREAM_FILLS_OVER`] is shared as it arrives ([`growing`]): the fill ends at
//! the response head, and every request for the key until the last byte is in reads the
//! one growing body. Two answers cannot be shared: a per-client response (`private`,
//! `Set-Cookie`, or one to an authorised request that did not allow sharing), and a body
//! of unknown length or over `cache.max_shared_fill`, which only the caller that ran the
//! fill holds as a stream (`Streamed`). Joiners of those fetch for themselves
//! ([`Decision::FetchAlone`], pingora's "give up the lock").

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use axum::http::{HeaderMap, Method, header};
use bytes::Bytes;
use shoal_cache_core::wire::{BodyLength, ResponseHead};
use shoal_cache_core::{
    CacheKey, CacheStatus, CachedObject, Exchange, FillOutcome, Filled, Freshness, FreshnessPolicy,
    NoStoreReason, freshness,
};
use tokio::sync::OwnedSemaphorePermit;

use super::growing::{self, Growing};
use crate::error::EdgeError;
use crate::headers;
use crate::state::EdgeState;
use crate::upstream::{Fetch, OriginBody, OriginReply};

/// What a fill asks the origin's upstream with: the headers of the request that started
/// it (see [`crate::headers::forwarded`]). Every request for the key shares the fill, so
/// none of them carries a client's conditions or ranges.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ask {
    pub(crate) headers: Vec<(String, String)>,
    /// The `Vary` fields the key being filled is a secondary key for, if it is one.
    pub(crate) variant: Option<Arc<[String]>>,
}

/// What the fill phase hands to respond.
pub(crate) enum Served {
    /// A whole object (cached or not).
    Object(Arc<CachedObject>, CacheStatus),
    /// A body no one else may share, streamed from the origin to this caller only.
    Stream(ResponseHead, OriginBody, CacheStatus),
    /// A body shared as it arrives.
    Growing(Arc<Growing>, CacheStatus),
}

impl Served {
    pub(crate) fn status(&self) -> CacheStatus {
        match self {
            Self::Object(_, s) | Self::Stream(_, _, s) | Self::Growing(_, s) => *s,
        }
    }

    /// A Range request is answered from the whole body: a growing one is waited for.
    pub(crate) async fn settle_for(
        self,
        method: &Method,
        req: &HeaderMap,
    ) -> Result<Self, EdgeError> {
        match self {
            Self::Growing(g, status)
                if *method == Method::GET && req.contains_key(header::RANGE) =>
            {
                let body = g.complete().await.map_err(EdgeError::OriginUnavailable)?;
                let obj = CachedObject {
                    body,
                    ..(*g.shell).clone()
                };
                Ok(Self::Object(Arc::new(obj), status))
            }
            other => Ok(other),
        }
    }
}

/// What the fill work hands to the caller that ran it, beside the shared result.
enum Handed {
    /// An unshareable body on the origin stream.
    Stream(ResponseHead, OriginBody),
    /// The growing body every joiner shares too.
    Growing(Arc<Growing>),
}

#[derive(Default)]
struct Handoff(Mutex<Option<Handed>>);

impl Handoff {
    fn put(&self, h: Handed) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(h);
    }
    fn take(&self) -> Option<Handed> {
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
    /// What this caller's fill left in the handoff (a stream or a growing body).
    Handed,
    /// The growing body registered for the key, as a joiner.
    JoinGrowing,
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
    use NoStoreReason::{Authorization, Filling, Private, SetCookie, Streamed, Vary};
    match (how, stored, revalidated) {
        (How::Ran, Err(Streamed | Filling), _) => Decision::Handed,
        (_, Err(Filling), _) => Decision::JoinGrowing,
        (_, Err(Streamed), _) => Decision::FetchAlone,
        // Another request's own answer, or its variant of a URL that varies.
        (How::Joined, Err(Private | SetCookie | Authorization | Vary), _) => Decision::FetchAlone,
        (_, Err(r), _) => Decision::Serve(CacheStatus::MissNotStored(r)),
        (How::FoundCached, Ok(()), _) => Decision::Serve(CacheStatus::Hit),
        (_, Ok(()), Some(true)) => Decision::Serve(CacheStatus::Revalidated),
        (_, Ok(()), Some(false)) => Decision::Serve(CacheStatus::Expired),
        (How::Ran, Ok(()), None) => Decision::Serve(CacheStatus::MissStored),
        (How::Joined, Ok(()), None) => Decision::Serve(CacheStatus::Collapsed),
    }
}

/// Fills `key` from the origin through the store: a miss (`stale` is `None`) or a refresh
/// of the stale copy (its ETag makes the fetch conditional). A fill whose body is still
/// arriving is joined first.
pub(crate) async fn fill(
    st: &Arc<EdgeState>,
    key: &CacheKey,
    authorized: bool,
    stale: Option<Arc<CachedObject>>,
    ask: Arc<Ask>,
) -> Result<Served, EdgeError> {
    if let Some(g) = st.growing.get(key) {
        return Ok(joined(st, g));
    }
    let handoff = Arc::new(Handoff::default());
    let work = {
        let (st, key, stale, handoff) = (st.clone(), key.clone(), stale.clone(), handoff.clone());
        let ask = ask.clone();
        move || origin_fill(st, key, authorized, stale, handoff, ask)
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
        Decision::Handed => match handoff.take() {
            Some(Handed::Stream(head, body)) => Ok(Served::Stream(
                head,
                body,
                CacheStatus::MissNotStored(NoStoreReason::Streamed),
            )),
            Some(Handed::Growing(g)) => {
                let status = match (&g.stored, revalidated) {
                    (Ok(()), Some(_)) => CacheStatus::Expired,
                    (Ok(()), None) => CacheStatus::MissStored,
                    (Err(r), _) => CacheStatus::MissNotStored(*r),
                };
                Ok(Served::Growing(g, status))
            }
            None => alone(st, key, authorized, &ask).await,
        },
        // The body may have finished (and been stored) since the fill handed it over.
        Decision::JoinGrowing => match st.growing.get(key) {
            Some(g) => Ok(joined(st, g)),
            None => match st.store.get(key.as_str()).await {
                Some(obj) => Ok(Served::Object(obj, CacheStatus::Collapsed)),
                None => alone(st, key, authorized, &ask).await,
            },
        },
        Decision::FetchAlone => alone(st, key, authorized, &ask).await,
    }
}

/// A joiner of a growing body: `collapsed` when it will be stored, else why not.
fn joined(st: &EdgeState, g: Arc<Growing>) -> Served {
    st.metrics.fill_joined();
    let status = match g.stored {
        Ok(()) => CacheStatus::Collapsed,
        Err(r) => CacheStatus::MissNotStored(r),
    };
    Served::Growing(g, status)
}

/// One origin fetch, queued for a fill slot, counted and timed: the only way the request
/// path reaches the origin. A spike of distinct misses waits here (bounded by
/// `fill_queue_timeout`) instead of opening unbounded origin streams. The slot comes back
/// with the reply: a body still on its stream keeps it until the last byte.
pub(crate) async fn origin_fetch(
    st: &EdgeState,
    req: Fetch,
) -> Result<(OriginReply, OwnedSemaphorePermit), EdgeError> {
    let a = &st.admission;
    let slot = match a.fill_slot_or_queue() {
        Ok(slot) => slot,
        Err(None) => {
            st.metrics.origin_fetch("queue_full", 0.0);
            return Err(EdgeError::Overloaded("origin fill queue full"));
        }
        Err(Some(_waiting)) => {
            let Ok(Ok(slot)) =
                tokio::time::timeout(a.fill_wait, a.fills.clone().acquire_owned()).await
            else {
                st.metrics
                    .origin_fetch("queue_timeout", a.fill_wait.as_secs_f64());
                return Err(EdgeError::Overloaded(
                    "origin fill queue: no slot within fill_queue_timeout",
                ));
            };
            slot
        }
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
    r.map(|reply| (reply, slot))
}

fn fetch_of(st: &EdgeState, key: &CacheKey, stale: Option<&CachedObject>, ask: &Ask) -> Fetch {
    let mut headers = ask.headers.clone();
    // Revalidate by ETag; by Last-Modified when that is the only validator (RFC 9111 §4.3.1).
    let etag = stale.and_then(|o| o.etag.clone());
    if etag.is_none()
        && let Some(lm) =
            stale.and_then(|o| freshness::header_values(&o.headers, "last-modified").next())
    {
        headers.push(("if-modified-since".into(), lm.to_string()));
    }
    Fetch {
        method: "GET".into(),
        target: key.path_and_query().to_string(),
        headers,
        body: Bytes::new(),
        etag,
        collect_up_to: growing::STREAM_FILLS_OVER.min(st.config.cache.max_object_size.bytes()),
    }
}

/// The fill work: one origin fetch turned into a storable object, or a growing body.
async fn origin_fill(
    st: Arc<EdgeState>,
    key: CacheKey,
    authorized: bool,
    stale: Option<Arc<CachedObject>>,
    handoff: Arc<Handoff>,
    ask: Arc<Ask>,
) -> Result<Filled<CachedObject>, EdgeError> {
    let request_time = SystemTime::now();
    let since = st.store.generation();
    let (reply, slot) = origin_fetch(&st, fetch_of(&st, &key, stale.as_deref(), &ask)).await?;
    let exchange = Exchange {
        request_time,
        response_time: SystemTime::now(),
    };
    let rules = Rules::of(&st, authorized, &key).variant(ask.variant.clone());
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
            if storable == Err(NoStoreReason::Vary) {
                store_variant(&st, &key, &obj, &ask, since, rules.authorized).await;
            }
            Ok(Filled {
                value: Arc::new(obj),
                storable,
            })
        }
        OriginReply::Streaming { head, body } => {
            let (obj, policy) = rules.build(head.clone(), Bytes::new(), exchange);
            if policy == Err(NoStoreReason::Vary)
                && let shoal_cache_core::vary::Vary::Fields(f) =
                    shoal_cache_core::vary::of(&obj.headers)
            {
                // Learnt now, stored by the next request for this variant.
                let primary = shoal_cache_core::vary::primary(key.as_str());
                let secondary = secondary_of(primary, &f, &ask);
                st.vary.learn(primary, &f, &secondary);
            }
            let limits = &st.config.cache;
            match shared(
                policy,
                head.length,
                limits.max_object_size.bytes(),
                limits.max_shared_fill.bytes(),
            ) {
                Some((length, stored)) => {
                    let shell = Arc::new(obj);
                    let fill = growing::Fill {
                        key,
                        shell: shell.clone(),
                        length,
                        stored,
                        since,
                    };
                    let g = growing::start(&st, fill, body, slot);
                    handoff.put(Handed::Growing(g));
                    Ok(Filled {
                        value: shell,
                        storable: Err(NoStoreReason::Filling),
                    })
                }
                None => {
                    drop(slot);
                    handoff.put(Handed::Stream(head, body));
                    Ok(Filled {
                        value: Arc::new(obj),
                        storable: Err(NoStoreReason::Streamed),
                    })
                }
            }
        }
    }
}

/// The secondary key of `primary` for the request a fill asked with.
fn secondary_of(primary: &str, fields: &[String], ask: &Ask) -> String {
    shoal_cache_core::vary::secondary(
        primary,
        fields,
        ask.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
    )
}

/// A response that varies on other fields than its key was made for: the URL's fields are
/// learnt, and the response is stored under its own secondary key (the fill's request's
/// variant) when the URL has room for it.
async fn store_variant(
    st: &EdgeState,
    key: &CacheKey,
    obj: &CachedObject,
    ask: &Ask,
    since: u64,
    authorized: bool,
) {
    let shoal_cache_core::vary::Vary::Fields(f) = shoal_cache_core::vary::of(&obj.headers) else {
        return;
    };
    let primary = shoal_cache_core::vary::primary(key.as_str());
    let secondary = secondary_of(primary, &f, ask);
    let negative = st.config.negative_ttl(obj.status);
    let allowed = freshness::storable(obj.status, &obj.headers, authorized, negative).is_ok();
    if allowed && st.vary.learn(primary, &f, &secondary) {
        let _ = st
            .store
            .insert_unless_invalidated(secondary.into(), Arc::new(obj.clone()), since)
            .await;
    }
}

/// Whether a streamed body may be shared as it arrives, and if so whether it will be
/// stored (`policy`: what the response's headers allow; `length`: as announced).
fn shared(
    policy: Result<(), NoStoreReason>,
    length: BodyLength,
    max_object: u64,
    max_shared: u64,
) -> Option<(u64, Result<(), NoStoreReason>)> {
    use NoStoreReason::{Authorization, Direct, Private, SetCookie, Vary};
    let BodyLength::Known(n) = length else {
        return None;
    };
    let stored = match policy {
        // Per-client answers are this caller's alone; a `direct` read must not be served to
        // a request that arrived after the fetch began.
        Err(Private | SetCookie | Authorization | Direct | Vary) => return None,
        Ok(()) if n <= max_object => Ok(()),
        _ if n > max_object.max(max_shared) => return None,
        Ok(()) => Err(NoStoreReason::TooLarge),
        Err(r) => Err(r),
    };
    Some((n, stored))
}

/// An uncoalesced, unstored fetch (a body too large to store; a per-client response).
async fn alone(
    st: &EdgeState,
    key: &CacheKey,
    authorized: bool,
    ask: &Ask,
) -> Result<Served, EdgeError> {
    let request_time = SystemTime::now();
    // The slot is for origin streams the edge shares; this one belongs to its client.
    let (reply, _slot) = origin_fetch(st, fetch_of(st, key, None, ask)).await?;
    match reply {
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
    /// The `Vary` fields the key is a secondary key for (`None`: a primary key).
    pub(crate) variant: Option<Arc<[String]>>,
}

impl<'a> Rules<'a> {
    pub(crate) fn of(st: &'a EdgeState, authorized: bool, key: &CacheKey) -> Self {
        Self {
            freshness: &st.freshness,
            negative_ttl: &st.config.cache.negative_ttl,
            authorized,
            direct: !st.mode(key.path_and_query()).caches(),
            variant: None,
        }
    }

    /// For a secondary key made for `fields`.
    pub(crate) fn variant(self, fields: Option<Arc<[String]>>) -> Self {
        Self {
            variant: fields,
            ..self
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
        let mut headers = headers::keep(head.headers);
        // Served as it came: a cache must not change Date (RFC 9110 §6.6.1); one that
        // came without gets the time it was received.
        if freshness::header_values(&headers, "date").next().is_none() {
            headers.push((
                "date".into(),
                httpdate::fmt_http_date(exchange.response_time),
            ));
        }
        let negative = self.negative_ttl.get(&head.status).map(|d| d.get());
        let fr = match negative.filter(|_| head.status >= 400) {
            Some(ttl) => Freshness::fixed(exchange.response_time, ttl),
            None => Freshness::from_response(head.status, &headers, exchange, self.freshness),
        };
        let storable = if self.direct {
            Err(NoStoreReason::Direct)
        } else {
            match freshness::storable(head.status, &headers, self.authorized, negative) {
                // Stored under this key only if the key was made for exactly these fields.
                Ok(()) => match shoal_cache_core::vary::of(&headers) {
                    shoal_cache_core::vary::Vary::Fields(f)
                        if self.variant.as_deref() != Some(&f[..]) =>
                    {
                        Err(NoStoreReason::Vary)
                    }
                    _ => Ok(()),
                },
                e => e,
            }
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
            (Ran, Err(Streamed), None, Handed),
            (Joined, Err(Streamed), None, FetchAlone),
            (Ran, Err(Filling), None, Handed),
            (Ran, Err(Filling), Some(false), Handed),
            (Joined, Err(Filling), None, JoinGrowing),
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
    fn streamed_bodies_are_shared_unless_per_client_unsized_or_over_the_shared_limit() {
        use BodyLength::{Known, Streamed as Unsized};
        let (obj, shared_max) = (100, 1000);
        let cases = [
            (Ok(()), Known(100), Some((100, Ok(())))),
            (Ok(()), Known(101), Some((101, Err(TooLarge)))),
            (Ok(()), Known(1000), Some((1000, Err(TooLarge)))),
            (Ok(()), Known(1001), None),
            (Ok(()), Unsized, None),
            (Err(NoStore), Known(50), Some((50, Err(NoStore)))),
            (Err(Private), Known(50), None),
            (Err(SetCookie), Known(50), None),
            (Err(Authorization), Known(50), None),
            (Err(Direct), Known(50), None),
        ];
        for (policy, len, want) in cases {
            assert_eq!(
                shared(policy, len, obj, shared_max),
                want,
                "{policy:?} {len:?}"
            );
        }
        // No shared limit: only storable bodies are shared.
        assert_eq!(shared(Ok(()), Known(101), obj, 0), None);
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
                variant: None,
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

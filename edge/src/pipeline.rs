//! The request path, as named phases over one request:
//!
//! ```text
//! validate ─▶ key ─▶ route ─┬─ owner is a peer ─▶ forward (next successor on failure)
//!                           └─ owner is us ─▶ lookup ─┬─ fresh ─────────────▶ respond (hit)
//!                                                     ├─ stale, swr ────────▶ respond (stale) + refresh in background
//!                                                     ├─ stale ─▶ refresh ──▶ respond (revalidated / expired),
//!                                                     │                       or stale-if-error, or 502/504
//!                                                     └─ miss ─▶ fill ──────▶ respond (miss) or stream (too large)
//! ```
//!
//! Fills are coalesced by the store: N concurrent misses for one key make one origin fetch.
//! Owner routing makes that hold region-wide: every edge sends a key to its one owner.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use bytes::Bytes;
use http_body_util::Empty;
use shoal_cache_core::io::FrameReader;
use shoal_cache_core::wire::{BodyLength, Message, ResponseHead};
use shoal_cache_core::{
    CacheKey, CacheStatus, CachedObject, Exchange, Filled, Freshness, FreshnessState, Lookup,
    NoStoreReason, freshness,
};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::EdgeState;
use crate::error::EdgeError;
use crate::range::{self, RangeOutcome};
use crate::upstream::OriginReply;

/// Header a forwarding edge sets, so the owner serves instead of forwarding again.
pub const FORWARDED: &str = "x-shoal-forwarded";
/// Header naming the edge that produced the response.
pub const NODE: &str = "x-shoal-node";

const MAX_URI: usize = 8 * 1024;
const MAX_HEADER_BYTES: usize = 32 * 1024;
const MAX_HEADERS: usize = 100;

/// Headers of an origin response worth keeping and sending on.
const KEPT: &[&str] = &[
    "content-type",
    "cache-control",
    "etag",
    "last-modified",
    "expires",
    "date",
    "content-encoding",
    "content-language",
    "vary",
    "set-cookie",
];

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Serves one client request; returns the response and the cache label for metrics.
pub(crate) async fn handle(
    st: Arc<EdgeState>,
    req: Request<Body>,
) -> (Response<Body>, &'static str) {
    let (parts, body) = req.into_parts();
    // Validate.
    if parts.method != Method::GET && parts.method != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} not allowed\n", parts.method),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return (r, "none");
    }
    let uri_len = parts.uri.path_and_query().map_or(0, |p| p.as_str().len())
        + parts.uri.authority().map_or(0, |a| a.as_str().len());
    if uri_len > MAX_URI {
        return (
            text(
                StatusCode::URI_TOO_LONG,
                format!("URI longer than {MAX_URI} bytes\n"),
            ),
            "none",
        );
    }
    let header_bytes: usize = parts
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES || parts.headers.len() > MAX_HEADERS {
        return (
            text(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "request headers exceed {MAX_HEADERS} fields or {MAX_HEADER_BYTES} bytes\n"
                ),
            ),
            "none",
        );
    }
    let has_body = parts.headers.contains_key(header::TRANSFER_ENCODING)
        || parts
            .headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    drop(body);
    if has_body {
        return (
            text(
                StatusCode::BAD_REQUEST,
                "GET and HEAD requests must not carry a body\n".into(),
            ),
            "none",
        );
    }
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next(), parts.uri.authority()) {
        (Some(h), None, _) => h.to_str().unwrap_or("").to_string(),
        (None, _, Some(a)) => a.as_str().to_string(),
        (Some(_), Some(_), _) => {
            return (
                text(
                    StatusCode::BAD_REQUEST,
                    "more than one Host header\n".into(),
                ),
                "none",
            );
        }
        (None, _, None) => {
            return (
                text(StatusCode::BAD_REQUEST, "missing Host header\n".into()),
                "none",
            );
        }
    };
    let raw_path = parts.uri.path();
    if let Err(e) = shoal_cache_core::normalise_path(raw_path) {
        return (text(StatusCode::BAD_REQUEST, format!("{e}\n")), "none");
    }
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or(raw_path, |p| p.as_str())
        .to_string();
    // Key.
    let key = match CacheKey::new(&host, &path_and_query, &st.key_policy) {
        Ok(k) => k,
        Err(e) => return (text(StatusCode::BAD_REQUEST, format!("{e}\n")), "none"),
    };
    // Route: forwarded requests are ours by definition (loop prevention).
    let mine = st.ring.owner(key.as_str()).is_ok_and(|o| o == st.node_id);
    if !mine && !parts.headers.contains_key(FORWARDED) {
        for node in st.ring.successors(key.as_str(), st.ring.len()) {
            if node == st.node_id {
                break;
            }
            let Some(peer) = st.peers.get(node) else {
                continue;
            };
            if peer.is_down() {
                continue;
            }
            match forward(
                &st,
                peer.addr,
                &parts.method,
                &path_and_query,
                &parts.headers,
                &host,
            )
            .await
            {
                Ok(r) => {
                    st.metrics.peer_forward("ok");
                    return (r, "forwarded");
                }
                Err(e) => {
                    warn!(peer = node, "forward failed, trying the next node: {e}");
                    st.metrics.peer_forward("error");
                    peer.mark_down(st.settings.peer_down_for);
                }
            }
        }
    }
    let path = raw_path.to_string();
    serve_local(&st, &key, &path, &parts.method, &parts.headers).await
}

async fn forward(
    st: &EdgeState,
    addr: std::net::SocketAddr,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    host: &str,
) -> Result<Response<Body>, String> {
    let mut b = Request::builder()
        .method(method.clone())
        .uri(format!("http://{addr}{path_and_query}"))
        .header(header::HOST, host)
        .header(FORWARDED, st.node_id.as_str());
    for h in [
        header::RANGE,
        header::IF_NONE_MATCH,
        header::IF_RANGE,
        header::AUTHORIZATION,
    ] {
        if let Some(v) = headers.get(&h) {
            b = b.header(h, v);
        }
    }
    let req = b.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    // A dead peer shows at connect (bounded by the connector's `peer` timeout). The head
    // may legitimately wait for the owner's own origin fetch, so allow for all of it.
    let attempts = st.settings.config.retries + 1;
    let head_wait =
        st.settings.origin_fetch * attempts + st.settings.origin_connect + st.settings.peer;
    let resp = tokio::time::timeout(head_wait, st.peer_client.request(req))
        .await
        .map_err(|_| format!("no response head within {head_wait:?}"))?
        .map_err(|e| e.to_string())?;
    let (mut parts, body) = resp.into_parts();
    for h in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        "keep-alive".parse().map_err(|_| "header")?,
    ] {
        parts.headers.remove(h);
    }
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// How a fill ended for the caller.
enum Served {
    Object(Arc<CachedObject>, CacheStatus),
    Stream(ResponseHead, FrameReader<quinn::RecvStream>, CacheStatus),
}

async fn serve_local(
    st: &Arc<EdgeState>,
    key: &CacheKey,
    path: &str,
    method: &Method,
    req: &HeaderMap,
) -> (Response<Body>, &'static str) {
    let now = SystemTime::now();
    let served = match st.store.lookup(key.as_str(), now).await {
        Lookup::Fresh(obj) => Ok(Served::Object(obj, CacheStatus::Hit)),
        Lookup::Stale(
            obj,
            FreshnessState::Stale {
                serve_while_revalidate: true,
                ..
            },
        ) => {
            let (st2, key2, path2, stale) =
                (st.clone(), key.clone(), path.to_string(), obj.clone());
            tokio::spawn(async move {
                if let Err(e) = refresh(&st2, &key2, &path2, Some(stale), false).await {
                    debug!("background revalidation of {key2} failed: {e}");
                }
            });
            Ok(Served::Object(obj, CacheStatus::StaleHit))
        }
        Lookup::Stale(obj, state) => {
            let serve_if_error = matches!(
                state,
                FreshnessState::Stale {
                    serve_if_error: true,
                    ..
                }
            );
            match refresh(st, key, path, Some(obj.clone()), false).await {
                Ok(s) => Ok(s),
                Err(e) if serve_if_error => {
                    warn!("origin failed, serving stale {key}: {e}");
                    Ok(Served::Object(obj, CacheStatus::StaleHit))
                }
                Err(e) => Err(e),
            }
        }
        Lookup::Miss => refresh(st, key, path, None, true).await,
    };
    match served {
        Ok(Served::Object(obj, status)) => {
            (respond(st, &obj, status, method, req, now), status.as_str())
        }
        Ok(Served::Stream(head, reader, status)) => {
            (stream(st, head, reader, status), status.as_str())
        }
        Err(e) => {
            let mut r = axum::response::IntoResponse::into_response(e);
            r.headers_mut().insert(
                "cache-status",
                HeaderValue::from_static("shoal; fwd=miss; detail=origin-error"),
            );
            (r, "error")
        }
    }
}

/// Fetches `key` from the origin through the store's coalescing; `stale` is the copy being
/// refreshed (its ETag makes the fetch conditional).
async fn refresh(
    st: &Arc<EdgeState>,
    key: &CacheKey,
    path: &str,
    stale: Option<Arc<CachedObject>>,
    miss: bool,
) -> Result<Served, EdgeError> {
    let (tx, rx) = oneshot::channel();
    let fill = {
        let (st, path, stale) = (st.clone(), path.to_string(), stale.clone());
        move || origin_fill(st, path, stale, Some(tx))
    };
    let outcome = if miss {
        st.store.fill_if_absent(key.as_str(), fill).await
    } else {
        st.store.fill(key.as_str(), fill).await
    };
    let outcome = outcome.map_err(|e| match e.downcast_ref::<EdgeError>() {
        Some(edge) => edge.clone(),
        None => EdgeError::OriginUnavailable(e.to_string()),
    })?;
    let status = match (&stale, &outcome.stored) {
        (_, Err(NoStoreReason::TooLarge)) if outcome.value.body.is_empty() => {
            // Streamed: only the caller that ran the fill holds the stream.
            if outcome.leader
                && let Ok((head, reader)) = rx.await
            {
                return Ok(Served::Stream(
                    head,
                    reader,
                    CacheStatus::MissNotStored(NoStoreReason::TooLarge),
                ));
            }
            return direct(st, path).await;
        }
        (
            _,
            Err(
                r @ (NoStoreReason::Private
                | NoStoreReason::SetCookie
                | NoStoreReason::Authorization),
            ),
        ) if !outcome.leader => {
            // Per-client content must not be shared with coalesced waiters.
            debug!(
                "{key}: not sharing a {} response with a coalesced waiter",
                r.as_str()
            );
            return direct(st, path).await;
        }
        (_, Err(r)) => CacheStatus::MissNotStored(*r),
        (Some(old), Ok(()))
            if old.version == outcome.value.version && old.etag == outcome.value.etag =>
        {
            CacheStatus::Revalidated
        }
        (Some(_), Ok(())) => CacheStatus::Expired,
        (None, Ok(())) if !outcome.ran => CacheStatus::Hit,
        (None, Ok(())) => CacheStatus::MissStored,
    };
    Ok(Served::Object(outcome.value, status))
}

/// An uncoalesced, unstored fetch (objects too large to store; per-client responses).
async fn direct(st: &Arc<EdgeState>, path: &str) -> Result<Served, EdgeError> {
    let started = Instant::now();
    let request_time = SystemTime::now();
    let r = st
        .origin
        .fetch(path, None, st.settings.max_object_size)
        .await;
    st.metrics.origin_fetch(
        if r.is_ok() { "ok" } else { "error" },
        started.elapsed().as_secs_f64(),
    );
    match r? {
        OriginReply::Streaming { head, body } => Ok(Served::Stream(
            head,
            body,
            CacheStatus::MissNotStored(NoStoreReason::TooLarge),
        )),
        OriginReply::Complete { head, body } => {
            let (obj, storable) = build_object(st, head, body, request_time);
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

fn build_object(
    st: &EdgeState,
    head: ResponseHead,
    body: Bytes,
    request_time: SystemTime,
) -> (CachedObject, Result<(), NoStoreReason>) {
    let headers: Vec<(String, String)> = head
        .headers
        .into_iter()
        .filter(|(n, _)| KEPT.contains(&n.to_ascii_lowercase().as_str()))
        .collect();
    let exchange = Exchange {
        request_time,
        response_time: SystemTime::now(),
    };
    let negative = st.settings.negative_ttl.get(&head.status).copied();
    let mut fr = Freshness::from_response(head.status, &headers, exchange, &st.settings.freshness);
    if let Some(ttl) = negative.filter(|_| head.status >= 400) {
        fr = Freshness::fixed(exchange.response_time, ttl);
    }
    let storable = freshness::storable(head.status, &headers, false, negative);
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
        tags: Vec::new(),
    };
    (obj, storable)
}

/// The fill future: one origin fetch turned into a storable object.
async fn origin_fill(
    st: Arc<EdgeState>,
    path: String,
    stale: Option<Arc<CachedObject>>,
    stream_to: Option<oneshot::Sender<(ResponseHead, FrameReader<quinn::RecvStream>)>>,
) -> Result<Filled<CachedObject>, EdgeError> {
    let started = Instant::now();
    let request_time = SystemTime::now();
    let etag = stale.as_ref().and_then(|o| o.etag.clone());
    let r = st
        .origin
        .fetch(&path, etag.as_deref(), st.settings.max_object_size)
        .await;
    let result = match &r {
        Ok(OriginReply::NotModified { .. }) => "not_modified",
        Ok(_) => "ok",
        Err(EdgeError::OriginTimeout(_)) => "timeout",
        Err(EdgeError::CircuitOpen(_)) => "circuit_open",
        Err(_) => "error",
    };
    st.metrics
        .origin_fetch(result, started.elapsed().as_secs_f64());
    match r? {
        OriginReply::NotModified { headers } => {
            let Some(old) = stale else {
                return Err(EdgeError::OriginProtocol(
                    "not-modified for an unconditional fetch".into(),
                ));
            };
            // Update the stored headers with the fresh ones (RFC 9111 §4.3.4).
            let mut merged: Vec<(String, String)> = old
                .headers
                .iter()
                .filter(|(n, _)| !headers.iter().any(|(m, _)| m.eq_ignore_ascii_case(n)))
                .cloned()
                .collect();
            merged.extend(
                headers
                    .into_iter()
                    .filter(|(n, _)| KEPT.contains(&n.to_ascii_lowercase().as_str())),
            );
            let exchange = Exchange {
                request_time,
                response_time: SystemTime::now(),
            };
            let fr =
                Freshness::from_response(old.status, &merged, exchange, &st.settings.freshness);
            let value = CachedObject {
                headers: merged,
                freshness: fr,
                ..(*old).clone()
            };
            Ok(Filled {
                value: Arc::new(value),
                storable: Ok(()),
            })
        }
        OriginReply::Complete { head, body } => {
            let (obj, storable) = build_object(&st, head, body, request_time);
            Ok(Filled {
                value: Arc::new(obj),
                storable,
            })
        }
        OriginReply::Streaming { head, body } => {
            let (obj, _) = build_object(&st, head.clone(), Bytes::new(), request_time);
            if let Some(tx) = stream_to {
                let _ = tx.send((head, body));
            }
            Ok(Filled {
                value: Arc::new(obj),
                storable: Err(NoStoreReason::TooLarge),
            })
        }
    }
}

const CACHE_STATUS: header::HeaderName = header::HeaderName::from_static("cache-status");

/// The `Cache-Status` value: static for the common outcomes, built for the rest.
fn cache_status_value(status: CacheStatus) -> HeaderValue {
    match status {
        CacheStatus::Hit => HeaderValue::from_static("shoal; hit"),
        CacheStatus::StaleHit => HeaderValue::from_static("shoal; hit; detail=stale"),
        CacheStatus::MissStored => HeaderValue::from_static("shoal; fwd=miss; stored"),
        other => HeaderValue::from_str(&other.header_value("shoal"))
            .unwrap_or(HeaderValue::from_static("shoal")),
    }
}

/// The `Date` header, formatted at most once per second.
#[derive(Debug, Default)]
pub(crate) struct DateCache(std::sync::Mutex<Option<(u64, HeaderValue)>>);

impl DateCache {
    fn get(&self, now: SystemTime) -> HeaderValue {
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

fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let etag = strip(etag);
    if_none_match.trim() == "*" || if_none_match.split(',').any(|t| strip(t) == etag)
}

fn respond(
    st: &EdgeState,
    obj: &CachedObject,
    status: CacheStatus,
    method: &Method,
    req: &HeaderMap,
    now: SystemTime,
) -> Response<Body> {
    let mut headers = HeaderMap::new();
    for (n, v) in &obj.headers {
        if n.eq_ignore_ascii_case("date") {
            continue;
        }
        if let (Ok(n), Ok(v)) = (n.parse::<header::HeaderName>(), HeaderValue::from_str(v)) {
            headers.append(n, v);
        }
    }
    let age = obj.freshness.current_age(now).as_secs();
    headers.insert(header::AGE, HeaderValue::from(age));
    headers.insert(header::DATE, st.date.get(now));
    headers.insert(CACHE_STATUS, cache_status_value(status));
    headers.insert(NODE, st.node_header.clone());
    let mut code = StatusCode::from_u16(obj.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut body = obj.body.clone();
    if code == StatusCode::OK {
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        let inm = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
        if let (Some(inm), Some(etag)) = (inm, &obj.etag)
            && etag_matches(inm, etag)
        {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            headers.remove(header::CONTENT_TYPE);
            *r.headers_mut() = headers;
            return r;
        }
        let if_range_ok = req
            .get(header::IF_RANGE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|ir| obj.etag.as_deref() == Some(ir.trim()));
        let range = req.get(header::RANGE).and_then(|v| v.to_str().ok());
        if let (Some(range), true, true) = (range, if_range_ok, method == Method::GET) {
            let len = body.len() as u64;
            match range::parse(range, len) {
                RangeOutcome::Full => {}
                RangeOutcome::Single { start, end } => {
                    code = StatusCode::PARTIAL_CONTENT;
                    body = body.slice(start as usize..=end as usize);
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                        headers.insert(header::CONTENT_RANGE, v);
                    }
                }
                RangeOutcome::Unsatisfiable | RangeOutcome::Invalid => {
                    let mut r = text(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        format!("range {range:?} cannot be served from {len} bytes\n"),
                    );
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                        r.headers_mut().insert(header::CONTENT_RANGE, v);
                    }
                    r.headers_mut()
                        .insert(CACHE_STATUS, cache_status_value(status));
                    return r;
                }
            }
        }
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len() as u64));
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = code;
    *r.headers_mut() = headers;
    r
}

/// Streams a body that is too large to store straight from the origin stream: the first
/// byte goes out as soon as the first chunk arrives.
fn stream(
    st: &EdgeState,
    head: ResponseHead,
    reader: FrameReader<quinn::RecvStream>,
    status: CacheStatus,
) -> Response<Body> {
    let mut headers = HeaderMap::new();
    for (n, v) in &head.headers {
        if !KEPT.contains(&n.to_ascii_lowercase().as_str()) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (n.parse::<header::HeaderName>(), HeaderValue::from_str(v)) {
            headers.append(n, v);
        }
    }
    if let BodyLength::Known(n) = head.length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    headers.insert(header::AGE, HeaderValue::from(0u64));
    headers.insert(CACHE_STATUS, cache_status_value(status));
    headers.insert(NODE, st.node_header.clone());
    let chunks = futures_util::stream::unfold(Some(reader), |reader| async move {
        let mut reader = reader?;
        match reader.next().await {
            Ok(Some(Message::BodyChunk(c))) => {
                let next = (!c.last).then_some(reader);
                Some((Ok::<Bytes, std::io::Error>(c.data), next))
            }
            Ok(None) => None,
            Ok(Some(_)) => Some((
                Err(std::io::Error::other("unexpected message in body")),
                None,
            )),
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
        }
    });
    let mut r = Response::new(Body::from_stream(chunks));
    *r.status_mut() = StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY);
    *r.headers_mut() = headers;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_comparison_is_weak() {
        assert!(etag_matches("\"a\"", "\"a\""));
        assert!(etag_matches("W/\"a\", \"b\"", "\"a\""));
        assert!(etag_matches("*", "\"x\""));
        assert!(!etag_matches("\"b\"", "\"a\""));
    }
}

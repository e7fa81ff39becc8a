//! Phase 5, **respond**: turn what the fill phase served into the client's response:
//! conditional requests (304), Range (206/416), `Age`, `Date`, `Cache-Status`, or a stream
//! for a body too large to store.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use shoal_cache_core::wire::{BodyLength, ResponseHead};
use shoal_cache_core::{CacheStatus, CachedObject};

use super::Ctx;
use super::fill::Served;
use super::growing::Growing;
use crate::headers;
use crate::state::EdgeState;
use crate::upstream::OriginBody;
use shoal_cache_core::range::{self, RangeOutcome};

/// The `Cache-Status` response header (RFC 9211).
pub(crate) const CACHE_STATUS: header::HeaderName = header::HeaderName::from_static("cache-status");

/// The `Cache-Status` value: static for the common outcomes, built for the rest.
pub(crate) fn cache_status_value(status: CacheStatus) -> HeaderValue {
    match status {
        CacheStatus::Hit => HeaderValue::from_static("shoal; hit"),
        CacheStatus::StaleHit => HeaderValue::from_static("shoal; hit; detail=stale"),
        CacheStatus::MissStored => HeaderValue::from_static("shoal; fwd=miss; stored"),
        CacheStatus::Collapsed => HeaderValue::from_static("shoal; fwd=miss; collapsed"),
        other => HeaderValue::from_str(&other.header_value("shoal"))
            .unwrap_or(HeaderValue::from_static("shoal")),
    }
}

/// The response for what was served.
pub(crate) fn served(st: &EdgeState, ctx: &Ctx, served: Served) -> Response<Body> {
    match served {
        Served::Object(obj, status) => object(st, ctx, &obj, status),
        Served::Stream(head, body, status) => stream(head, body, status),
        Served::Growing(g, status) => growing(st, ctx, g, status),
    }
}

fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let etag = strip(etag);
    if_none_match.trim() == "*" || if_none_match.split(',').any(|t| strip(t) == etag)
}

/// The headers of a response from `obj` (its body aside), and its status code.
fn head_of(
    st: &EdgeState,
    ctx: &Ctx,
    obj: &CachedObject,
    status: CacheStatus,
) -> (HeaderMap, StatusCode) {
    // The stored Date stays (RFC 9110 §6.6.1): Age says how old the response is.
    let mut h = headers::to_map(&obj.headers, &[]);
    h.insert(
        header::AGE,
        HeaderValue::from(obj.freshness.current_age(ctx.now).as_secs()),
    );
    if !h.contains_key(header::DATE) {
        h.insert(header::DATE, st.date.get(ctx.now));
    }
    h.insert(CACHE_STATUS, cache_status_value(status));
    if obj.version > 0 {
        // The version a client sends back (X-Shoal-Min-Version) for its session guarantees.
        h.insert(super::write::VERSION, HeaderValue::from(obj.version));
    }
    let code = StatusCode::from_u16(obj.status).unwrap_or(StatusCode::BAD_GATEWAY);
    if code == StatusCode::OK {
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    (h, code)
}

/// A 304 when the request's `If-None-Match` matches `obj`'s ETag, or, without one, when
/// `obj` has not changed since the request's `If-Modified-Since` (RFC 9111 §4.3.2: its
/// Last-Modified, else its Date, is compared).
fn not_modified(ctx: &Ctx, obj: &CachedObject, h: &mut HeaderMap) -> Option<Response<Body>> {
    let unchanged = match ctx.headers.get(header::IF_NONE_MATCH) {
        Some(inm) => etag_matches(inm.to_str().ok()?, obj.etag.as_deref()?),
        None => {
            let ims = ctx.headers.get(header::IF_MODIFIED_SINCE)?.to_str().ok()?;
            let ims = shoal_cache_core::freshness::parse_date(ims.trim())?;
            let modified = ["last-modified", "date"]
                .iter()
                .find_map(|n| shoal_cache_core::freshness::header_values(&obj.headers, n).next())?;
            let modified = shoal_cache_core::freshness::parse_date(modified.trim())?;
            modified <= ims
        }
    };
    if !unchanged {
        return None;
    }
    h.remove(header::CONTENT_TYPE);
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NOT_MODIFIED;
    *r.headers_mut() = std::mem::take(h);
    Some(r)
}

fn object(
    st: &EdgeState,
    ctx: &Ctx,
    obj: &Arc<CachedObject>,
    status: CacheStatus,
) -> Response<Body> {
    let (mut h, mut code) = head_of(st, ctx, obj, status);
    let mut body = obj.body.clone();
    if code == StatusCode::OK {
        if let Some(r) = not_modified(ctx, obj, &mut h) {
            return r;
        }
        let req = &ctx.headers;
        let if_range_ok = req
            .get(header::IF_RANGE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|ir| obj.etag.as_deref() == Some(ir.trim()));
        let range = req.get(header::RANGE).and_then(|v| v.to_str().ok());
        if let (Some(range), true, true) = (range, if_range_ok, ctx.method == Method::GET) {
            let len = body.len() as u64;
            match range::parse(range, len) {
                RangeOutcome::Full => {}
                RangeOutcome::Single { start, end } => {
                    code = StatusCode::PARTIAL_CONTENT;
                    body = body.slice(start as usize..=end as usize);
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                        h.insert(header::CONTENT_RANGE, v);
                    }
                }
                RangeOutcome::Unsatisfiable | RangeOutcome::Invalid => {
                    // The object's own headers (Age, ETag, Cache-Status) stay; the body
                    // says what could not be served.
                    code = StatusCode::RANGE_NOT_SATISFIABLE;
                    body = format!("range {range:?} cannot be served from {len} bytes\n").into();
                    h.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; charset=utf-8"),
                    );
                    h.remove(header::CACHE_CONTROL);
                    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                        h.insert(header::CONTENT_RANGE, v);
                    }
                }
            }
        }
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len() as u64));
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = code;
    *r.headers_mut() = h;
    r
}

/// A body shared as it arrives from the origin (a Range request waited for all of it).
fn growing(st: &EdgeState, ctx: &Ctx, g: Arc<Growing>, status: CacheStatus) -> Response<Body> {
    let (mut h, code) = head_of(st, ctx, &g.shell, status);
    if code == StatusCode::OK
        && let Some(r) = not_modified(ctx, &g.shell, &mut h)
    {
        return r;
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(g.length));
    let mut r = Response::new(Body::from_stream(g.reader()));
    *r.status_mut() = code;
    *r.headers_mut() = h;
    r
}

/// A body no one else may share, passed on chunk by chunk as it arrives from the origin.
fn stream(head: ResponseHead, body: OriginBody, status: CacheStatus) -> Response<Body> {
    let mut h = headers::to_map(&headers::keep(head.headers), &[]);
    if let BodyLength::Known(n) = head.length {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    if !h.contains_key(header::AGE) {
        h.insert(header::AGE, HeaderValue::from(0u64));
    }
    h.insert(CACHE_STATUS, cache_status_value(status));
    let mut r = Response::new(Body::from_stream(body.into_stream()));
    *r.status_mut() = StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY);
    *r.headers_mut() = h;
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

    #[test]
    fn cache_status_values_match_the_rfc_9211_forms() {
        for s in [
            CacheStatus::Hit,
            CacheStatus::StaleHit,
            CacheStatus::MissStored,
            CacheStatus::Collapsed,
            CacheStatus::Revalidated,
        ] {
            assert_eq!(cache_status_value(s), s.header_value("shoal").as_str());
        }
    }
}

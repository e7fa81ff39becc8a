//! Writes through the edge: `PUT` and `DELETE` with the edge's write token.
//!
//! A write goes to the key's owner edge in the region (like a read), which forwards it to
//! the origin over QUIC, waits for the answer, and then acts on its own cache by the path's
//! consistency mode:
//!
//! - `write-through` (System 2): drops its copies of the path and stores the version it
//!   wrote; other edges are not told and keep what they hold until its TTL runs out.
//! - `invalidate`: drops its copies; the origin pushes the invalidation to every edge, and
//!   the next read here fetches the new version.
//! - `ttl`, `direct`: forwards only.
//! - `write-back`: a PUT is buffered here and acknowledged at once (see `writeback`); a
//!   DELETE flushes the path's buffered write first, then is forwarded.
//!
//! The answer carries the new version (`X-Shoal-Version`) and ETag.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{HeaderValue, Method, Response, StatusCode, header};
use bytes::Bytes;
use http_body_util::BodyExt;
use shoal_cache_core::consistency::Mode;
use shoal_cache_core::freshness::Freshness;
use shoal_cache_core::invalidation::matcher;
use shoal_cache_core::store::Purge;
use shoal_cache_core::wire::{BodyLength, InvalidationTarget, ResponseHead, WriteMethod};
use shoal_cache_core::{CacheKey, CachedObject, Exchange, Lookup};

use super::Ctx;
use super::validate::Target;
use crate::error::EdgeError;
use crate::state::EdgeState;
use crate::upstream::Write;

/// Response header carrying the version a write created.
pub const VERSION: &str = "x-shoal-version";

/// Checks the write token, then reads the body (bounded by the object size limit).
pub(crate) async fn admit(st: &EdgeState, ctx: &Ctx, body: Body) -> Result<Bytes, EdgeError> {
    let Some(token) = &st.config.write_token else {
        return Err(EdgeError::MethodNotAllowed(ctx.method.to_string()));
    };
    match shoal_cache_core::server::bearer(&ctx.headers) {
        Ok(g) if token.matches(g) => {}
        Ok(_) => return Err(EdgeError::Unauthorized("invalid write token".into())),
        Err(why) => {
            return Err(EdgeError::Unauthorized(format!(
                "writes need a bearer token: {why}"
            )));
        }
    }
    read_body(st, ctx, body).await
}

/// Reads a request body whole, bounded by the object size limit (413 beyond it).
pub(crate) async fn read_body(st: &EdgeState, ctx: &Ctx, body: Body) -> Result<Bytes, EdgeError> {
    let limit = st.config.cache.max_object_size.bytes();
    let declared = ctx
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(EdgeError::PayloadTooLarge(limit));
    }
    let limited = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match limited.collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(EdgeError::PayloadTooLarge(limit))
        }
        Err(e) => Err(EdgeError::BadRequest(format!("reading the body: {e}"))),
    }
}

/// Forwards the write to the origin and applies the mode to this edge's cache (or, in
/// `write-back`, buffers it here).
pub(crate) async fn to_origin(
    st: &Arc<EdgeState>,
    ctx: &Ctx,
    target: &Target,
    key: &CacheKey,
    body: Bytes,
) -> Result<Response<Body>, EdgeError> {
    let method = if ctx.method == Method::DELETE {
        WriteMethod::Delete
    } else {
        WriteMethod::Put
    };
    let header = |n: &str| {
        ctx.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let tags = shoal_cache_core::server::surrogate_keys(&ctx.headers)
        .map_err(|why| EdgeError::BadRequest(why.into()))?;
    let mode = st.mode(key.path_and_query());
    if mode.defers_writes() {
        match method {
            WriteMethod::Put => {
                return buffer(st, ctx, target, key, header("content-type"), tags, body).await;
            }
            // The path's buffered write reaches the origin before the delete does.
            WriteMethod::Delete => {
                st.write_back
                    .flush_path(&*st.origin, &st.metrics, &target.path)
                    .await;
            }
        }
    }
    let w = st
        .origin
        .write(Write {
            path: target.path.clone(),
            method,
            content_type: header("content-type"),
            tags,
            body: body.clone(),
            version: None,
        })
        .await?;
    if !(200..300).contains(&w.status) {
        return Err(EdgeError::OriginRefused {
            status: w.status,
            message: w.message,
        });
    }
    if mode.drops_own_copies() {
        drop_own_copies(st, target).await;
    }
    if mode == Mode::WriteThrough && method == WriteMethod::Put {
        let since = st.store.generation();
        let head = ResponseHead {
            request_id: 0,
            status: 200,
            headers: w.headers.clone(),
            length: BodyLength::Known(body.len() as u64),
            version: w.version,
        };
        let rules = super::fill::Rules::of(st, false, key);
        let (obj, storable) = rules.build(head, body, Exchange::at(SystemTime::now()));
        if storable.is_ok() {
            // Refused only if an invalidation (a purge) arrived meanwhile: then the next
            // read fetches.
            let _ = st
                .store
                .insert_unless_invalidated(key.as_arc().clone(), Arc::new(obj), since)
                .await;
        }
    }
    let status = StatusCode::from_u16(w.status).unwrap_or(StatusCode::OK);
    answer(status, w.version, w.etag.as_deref(), mode)
}

/// Every variant of the path is now old.
async fn drop_own_copies(st: &EdgeState, target: &Target) {
    let path = InvalidationTarget::Keys(vec![target.path.clone()]);
    st.invalidate(matcher(&path), Purge::Remove).await;
}

/// `write-back`: acknowledges the put once it is in this (the owner) edge's buffer, with
/// a version given here; the flusher writes it to the origin later.
async fn buffer(
    st: &Arc<EdgeState>,
    ctx: &Ctx,
    target: &Target,
    key: &CacheKey,
    content_type: Option<String>,
    tags: Vec<String>,
    body: Bytes,
) -> Result<Response<Body>, EdgeError> {
    // Refused now, not when the flush reaches the origin after the client has gone.
    shoal_cache_core::invalidation::check_tags(&tags).map_err(EdgeError::BadRequest)?;
    let cached = match st.store.lookup(key.as_str(), ctx.now).await {
        Lookup::Fresh(o) | Lookup::Stale(o, _) => o.version,
        Lookup::Miss => 0,
    };
    let buffered = st.write_back.version(&target.path).unwrap_or(0);
    let version = st.write_back.next_version(cached.max(buffered));
    let etag = shoal_cache_core::object::etag_for(version, &body);
    let mut headers = vec![
        (
            "content-type".to_string(),
            content_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".into()),
        ),
        // Not yet at the origin: downstream caches must ask again.
        ("cache-control".to_string(), "no-cache".to_string()),
        ("etag".to_string(), etag.clone()),
    ];
    if !tags.is_empty() {
        headers.push(("surrogate-key".to_string(), tags.join(" ")));
    }
    let obj = CachedObject {
        status: 200,
        headers: crate::headers::keep(headers),
        body,
        etag: Some(etag.clone()),
        version,
        freshness: Freshness::fixed(SystemTime::now(), Duration::ZERO),
        tags: tags.clone(),
    };
    let wait = st.config.timeouts.origin_fetch.get();
    st.write_back
        .accept(&target.path, Arc::new(obj), content_type, tags, wait)
        .await?;
    // Copies fetched before this write are old now; reads are served from the buffer.
    drop_own_copies(st, target).await;
    answer(StatusCode::CREATED, version, Some(&etag), Mode::WriteBack)
}

/// A write's answer: its version (`X-Shoal-Version`), ETag and mode, as headers and JSON.
fn answer(
    status: StatusCode,
    version: u64,
    etag: Option<&str>,
    mode: Mode,
) -> Result<Response<Body>, EdgeError> {
    let mut r = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .header(VERSION, version);
    if let Some(etag) = etag.and_then(|e| HeaderValue::from_str(e).ok()) {
        r = r.header(header::ETAG, etag);
    }
    // `durable`: whether the origin holds the write (not so in `write-back`, until flushed).
    let json = format!(
        "{{\"version\":{version},\"etag\":{},\"mode\":\"{mode}\",\"durable\":{}}}\n",
        etag.map_or("null".to_string(), |e| format!("{e:?}")),
        !mode.defers_writes()
    );
    let body = if status == StatusCode::NO_CONTENT {
        Body::empty()
    } else {
        Body::from(json)
    };
    r.body(body)
        .map_err(|e| EdgeError::BadRequest(format!("building the write's answer: {e}")))
}

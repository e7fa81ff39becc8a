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
//!
//! The answer carries the new version (`X-Shoal-Version`) and ETag.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::http::{HeaderValue, Method, Response, StatusCode, header};
use bytes::Bytes;
use http_body_util::BodyExt;
use shoal_cache_core::consistency::Mode;
use shoal_cache_core::invalidation::matcher;
use shoal_cache_core::store::Purge;
use shoal_cache_core::wire::{BodyLength, InvalidationTarget, ResponseHead, WriteMethod};
use shoal_cache_core::{CacheKey, Exchange};

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

/// Forwards the write to the origin and applies the mode to this edge's cache.
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
    let w = st
        .origin
        .write(Write {
            path: target.path.clone(),
            method,
            content_type: header("content-type"),
            tags,
            body: body.clone(),
        })
        .await?;
    if !(200..300).contains(&w.status) {
        return Err(EdgeError::OriginRefused {
            status: w.status,
            message: w.message,
        });
    }
    let mode = st.mode(key.path_and_query());
    if mode.drops_own_copies() {
        // Every variant of the path is now old.
        let path = InvalidationTarget::Keys(vec![target.path.clone()]);
        st.store.invalidate(matcher(&path), Purge::Remove).await;
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
    let mut r = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .header(VERSION, w.version);
    if let Some(etag) = w
        .etag
        .as_deref()
        .and_then(|e| HeaderValue::from_str(e).ok())
    {
        r = r.header(header::ETAG, etag);
    }
    let json = format!(
        "{{\"version\":{},\"etag\":{},\"mode\":\"{mode}\"}}\n",
        w.version,
        w.etag
            .as_deref()
            .map_or("null".to_string(), |e| format!("{e:?}"))
    );
    let body = if status == StatusCode::NO_CONTENT {
        Body::empty()
    } else {
        Body::from(json)
    };
    r.body(body)
        .map_err(|e| EdgeError::BadRequest(format!("building the write's answer: {e}")))
}

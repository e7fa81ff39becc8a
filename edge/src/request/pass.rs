//! Requests **passed through**: methods other than GET and HEAD on an edge with
//! `pass_through` (and PUT/DELETE there when it takes no writes of its own). They go to
//! the key's owner in the region like a read, then to the origin, which asks its upstream
//! HTTP server; the answer streams back untouched and is never stored.
//!
//! A non-error answer to an unsafe method means the resource may have changed, so the
//! edge drops its copies of the target URI and of the same-host `Location` and
//! `Content-Location` URIs before answering (RFC 9111 §4.4); the origin logs the same
//! invalidation for every other edge.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};
use bytes::Bytes;
use shoal_cache_core::CacheStatus;
use shoal_cache_core::invalidation::{changed_by_unsafe, matcher};
use shoal_cache_core::store::Purge;
use shoal_cache_core::wire::{BodyLength, InvalidationTarget, ResponseHead};

use super::Ctx;
use super::fill::origin_fetch;
use super::respond::cache_status_value;
use super::validate::Target;
use crate::error::EdgeError;
use crate::headers;
use crate::state::EdgeState;
use crate::upstream::{Fetch, OriginReply};

/// Safe methods (RFC 9110 §9.2.1): passing them through invalidates nothing.
const SAFE: &[&str] = &["GET", "HEAD", "OPTIONS", "TRACE"];

/// Forwards the request to the origin once (never retried) and answers with what its
/// upstream said.
pub(crate) async fn to_origin(
    st: &Arc<EdgeState>,
    ctx: &Ctx,
    target: &Target,
    body: Bytes,
) -> Result<Response<Body>, EdgeError> {
    let fetch = Fetch {
        method: ctx.method.to_string(),
        target: target.path_and_query.clone(),
        headers: headers::forwarded(&ctx.headers, ctx.client, ctx.from_peer, false),
        body,
        etag: None,
        // Never collected: the answer streams to this client as it arrives.
        collect_up_to: 0,
    };
    let (reply, slot) = origin_fetch(st, fetch).await?;
    let (head, body) = match reply {
        OriginReply::Streaming { head, body } => {
            let len = match head.length {
                BodyLength::Known(n) => Some(n),
                BodyLength::Streamed => None,
            };
            let stream = body.into_stream();
            // The fill slot is held until the last byte, as for a streamed fill.
            let stream = futures_util::StreamExt::map(stream, move |c| {
                let _ = &slot;
                c
            });
            (head, (Body::from_stream(stream), len))
        }
        OriginReply::Complete { head, body } => {
            let n = body.len() as u64;
            (head, (Body::from(body), Some(n)))
        }
        OriginReply::NotModified { .. } => {
            return Err(EdgeError::OriginProtocol(
                "not-modified for a request passed through".into(),
            ));
        }
    };
    if !SAFE.contains(&ctx.method.as_str()) && (200..400).contains(&head.status) {
        invalidate(st, target, &head).await;
    }
    Ok(response(head, body))
}

/// Drops this edge's copies of what an unsafe request may have changed.
async fn invalidate(st: &EdgeState, target: &Target, head: &ResponseHead) {
    let paths = changed_by_unsafe(&target.path, &target.host, &head.headers);
    st.invalidate(matcher(&InvalidationTarget::Keys(paths)), Purge::Remove)
        .await;
}

fn response(head: ResponseHead, (body, len): (Body, Option<u64>)) -> Response<Body> {
    let mut h = headers::to_map(&headers::keep(head.headers), &[]);
    if let Some(n) = len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    h.insert(
        super::respond::CACHE_STATUS,
        cache_status_value(CacheStatus::Passed),
    );
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY);
    *r.headers_mut() = h;
    r
}

//! The origin's HTTP admin API: object writes (bearer token), `/metrics`, `/healthz`.
//!
//! - `PUT /objects/{path}`: store the body at `/{path}`; `Content-Type` and
//!   `Surrogate-Key` are kept. 201 with the new version, ETag and invalidation sequence.
//! - `DELETE /objects/{path}`: 204, or 404 if there was no in-memory object.
//! - `POST /purge`: a JSON body naming exactly one of `keys` (paths; with a query, that
//!   variant only), `prefix` or `tag`, and optionally `"soft": true` (mark stale instead of
//!   dropping) and `"wait": true` (answer once every subscribed edge has applied it, or
//!   `purge_wait` has passed). Answers `{"seq", "subscribers", "acked"}`: 200 when applied
//!   everywhere (or not waited for: 202).
//!
//! Every write and delete invalidates its path at every edge, like a purge.
//! - Without a valid `Authorization: Bearer <token>`: 401 and nothing changes; with no token
//!   configured, writes are disabled (403).
//!
//! Writes are authenticated **before the body is read**: a layer refuses a missing or wrong
//! token, duplicate `Authorization` headers, and a declared length over `max_object_bytes`
//! (413) while the body is still unread, so a stranger can make the origin hold no more
//! than a request head (and gets no `100 Continue`). The object path is taken from the raw
//! request target and percent-decoded exactly once, with the edge's rules.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State as AxState};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

use crate::State;
use crate::error::OriginError;

pub(crate) fn router(state: Arc<State>) -> Router {
    let limit = state.config.max_object_bytes;
    Router::new()
        .route("/objects/{*path}", put(put_object).delete(delete_object))
        .route(
            "/purge",
            post(purge).layer(DefaultBodyLimit::max(MAX_PURGE_BODY)),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Largest purge request body.
const MAX_PURGE_BODY: usize = 256 * 1024;
fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// The refusal to send, or `None` when the request carries the admin token.
fn refusal(state: &State, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &state.config.admin_token else {
        return Some(text(
            StatusCode::FORBIDDEN,
            "object writes are disabled: no admin_token configured\n",
        ));
    };
    match shoal_cache_core::server::bearer(headers) {
        Ok(g) if crate::same_secret(g, token) => None,
        Ok(_) => Some(unauthorized("invalid bearer token")),
        Err(why) => Some(unauthorized(why)),
    }
}

fn unauthorized(why: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        format!("{why}\n"),
    )
        .into_response()
}

/// Runs before any body is read: authentication, then the declared length.
async fn authenticate(AxState(state): AxState<Arc<State>>, req: Request, next: Next) -> Response {
    if let Some(r) = refusal(&state, req.headers()) {
        return r;
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = state.config.max_object_bytes as u64;
    if declared.is_some_and(|n| n > limit) {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "body of {} bytes exceeds the {limit}-byte limit\n",
                declared.unwrap_or(0)
            ),
        );
    }
    next.run(req).await
}

/// The object path of an admin request: the raw target after `/objects`, decoded once.
fn object_path(uri: &Uri) -> &str {
    uri.path().strip_prefix("/objects").unwrap_or("/")
}

async fn put_object(
    AxState(state): AxState<Arc<State>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let tags = match shoal_cache_core::server::surrogate_keys(&headers) {
        Ok(t) => t,
        Err(why) => return text(StatusCode::BAD_REQUEST, format!("{why}\n")),
    };
    let writer = crate::Writer { state };
    let path = object_path(&uri);
    let put = writer.put(path, body, ct, tags);
    if let Ok((_, inv)) = &put {
        writer.settle(path, inv.as_ref()).await;
    }
    match put {
        Ok((o, inv)) => (
            StatusCode::CREATED,
            [(header::ETAG, o.etag.clone())],
            format!(
                "{{\"version\":{},\"etag\":{:?},\"seq\":{}}}\n",
                o.version,
                o.etag,
                inv.map_or("null".to_string(), |i| i.seq.to_string())
            ),
        )
            .into_response(),
        Err(e @ (OriginError::BadPath { .. } | OriginError::BadTags(_))) => {
            text(StatusCode::BAD_REQUEST, format!("{e}\n"))
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

async fn delete_object(AxState(state): AxState<Arc<State>>, uri: Uri) -> Response {
    let path = object_path(&uri);
    let writer = crate::Writer { state };
    match writer.delete(path) {
        Ok((true, inv)) => {
            writer.settle(path, inv.as_ref()).await;
            StatusCode::NO_CONTENT.into_response()
        }
        Ok((false, _)) => text(StatusCode::NOT_FOUND, format!("no object at {path}\n")),
        Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

async fn purge(AxState(state): AxState<Arc<State>>, body: Bytes) -> Response {
    let req = match shoal_cache_core::invalidation::Purge::from_json(&body) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let (soft, wait) = (req.soft, req.wait);
    let target = match req.target() {
        Ok(t) => t,
        Err(why) => return text(StatusCode::BAD_REQUEST, format!("purge: {why}\n")),
    };
    let limit = state.config.purge_wait.get();
    let writer = crate::Writer { state };
    let inv = writer.purge(target, soft);
    let (status, applied) = if wait {
        let a = writer.wait_applied(inv.seq, limit).await;
        let all = a.acked == a.subscribers;
        (
            if all {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            },
            a,
        )
    } else {
        let n = writer.subscribers();
        (
            StatusCode::ACCEPTED,
            crate::Applied {
                subscribers: n,
                acked: 0,
            },
        )
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!(
            "{{\"seq\":{},\"subscribers\":{},\"acked\":{}}}\n",
            inv.seq, applied.subscribers, applied.acked
        ),
    )
        .into_response()
}

async fn metrics(AxState(state): AxState<Arc<State>>, headers: HeaderMap) -> Response {
    use shoal_cache_core::exposition::Format;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    (
        [(header::CONTENT_TYPE, format.content_type())],
        format.render(state.metrics.render()),
    )
        .into_response()
}

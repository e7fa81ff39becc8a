//! The origin's HTTP admin API: object writes (bearer token), `/metrics`, `/healthz`.
//!
//! - `PUT /objects/{path}`: store the body at `/{path}`; `Content-Type` is kept. 201 with
//!   the new version and ETag.
//! - `DELETE /objects/{path}`: 204, or 404 if there was no in-memory object.
//! - Without a valid `Authorization: Bearer <token>`: 401 and nothing changes; with no token
//!   configured, writes are disabled (403).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};

use crate::State;
use crate::error::OriginError;

pub(crate) fn router(state: Arc<State>) -> Router {
    let limit = state.config.max_object_bytes;
    Router::new()
        .route("/objects/{*path}", put(put_object).delete(delete_object))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// Constant-time comparison, so response timing does not reveal the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The refusal to send, or `None` when the request carries the admin token.
fn refusal(state: &State, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &state.config.admin_token else {
        return Some(text(
            StatusCode::FORBIDDEN,
            "object writes are disabled: no admin_token configured\n",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if same(g.as_bytes(), token.as_bytes()) => None,
        _ => Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "missing or invalid bearer token\n",
            )
                .into_response(),
        ),
    }
}

async fn put_object(
    AxState(state): AxState<Arc<State>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = refusal(&state, &headers) {
        return r;
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match state.store.put(&format!("/{path}"), body, ct) {
        Ok(o) => (
            StatusCode::CREATED,
            [(header::ETAG, o.etag.clone())],
            format!("{{\"version\":{},\"etag\":{:?}}}\n", o.version, o.etag),
        )
            .into_response(),
        Err(e @ OriginError::BadPath { .. }) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

async fn delete_object(
    AxState(state): AxState<Arc<State>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refusal(&state, &headers) {
        return r;
    }
    match state.store.delete(&format!("/{path}")) {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => text(StatusCode::NOT_FOUND, format!("no object at /{path}\n")),
        Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
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

//! The request path as named phases over one [`Ctx`]; the chart is in the crate docs.
//!
//! Each phase is a module with its own tests: [`validate`], [`route`], [`lookup`],
//! [`fill`], [`respond`]. Every phase returns [`EdgeError`] on failure, which renders
//! itself; [`handle`] is the one place that records metrics and the request's span.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use axum::response::IntoResponse;
use shoal_cache_core::consistency::Mode;
use shoal_cache_core::{CacheKey, CacheStatus};
use tracing::{Instrument, debug, field};

use crate::error::EdgeError;
use crate::state::EdgeState;

pub(crate) mod admit;
pub(crate) mod fill;
pub(crate) mod growing;
pub(crate) mod lookup;
pub(crate) mod pass;
pub(crate) mod prefetch;
pub(crate) mod respond;
pub(crate) mod route;
/// Signed URLs (in the sans-IO core, where they are fuzzed).
pub use shoal_cache_core::signed as sign;
pub(crate) mod validate;
pub(crate) mod write;

pub use prefetch::PREFETCH;
pub use route::FORWARDED;
pub use write::VERSION;

/// Request header with the last object version the client saw (from `X-Shoal-Version`):
/// an edge whose copy is older revalidates first.
pub const MIN_VERSION: &str = "x-shoal-min-version";

/// Header naming the edge that produced the response.
pub const NODE: &str = "x-shoal-node";

/// How a request ended, for metrics and the span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Not decided yet.
    Pending,
    /// Served here, with this cache status.
    Cache(CacheStatus),
    /// Served by the owner edge.
    Forwarded,
    /// A write, forwarded to the origin.
    Written,
    /// Passed through to the origin's upstream for its method.
    Passed,
    /// A peer's prefetch request, accepted.
    Prefetch,
    /// Refused by validation.
    Rejected,
    /// Failed upstream.
    Failed,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Pending => "none",
            Self::Cache(s) => s.as_str(),
            Self::Forwarded => "forwarded",
            Self::Written => "write",
            Self::Passed => "pass",
            Self::Prefetch => "prefetch",
            Self::Rejected => "rejected",
            Self::Failed => "error",
        }
    }
}

/// What the request path knows about one request, filled in phase by phase.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) start: Instant,
    /// The wall-clock time freshness is judged at.
    pub(crate) now: SystemTime,
    pub(crate) method: Method,
    pub(crate) headers: HeaderMap,
    /// The client's address (a trusted `client_ip_header`'s, else the socket's); `None`
    /// for a forward from a region peer, which names the client in its own headers.
    pub(crate) client: Option<std::net::IpAddr>,
    /// The request is a forward from a region peer (marked, from a peer's address).
    pub(crate) from_peer: bool,
    pub(crate) key: Option<CacheKey>,
    pub(crate) outcome: Outcome,
}

/// Serves one client request.
pub(crate) async fn handle(st: Arc<EdgeState>, req: Request<Body>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    // Read only by a write; validation refuses a read that declares a body.
    let mut ctx = Ctx {
        start: Instant::now(),
        now: SystemTime::now(),
        method: parts.method,
        headers: parts.headers,
        client: None,
        from_peer: false,
        key: None,
        outcome: Outcome::Pending,
    };
    // The path only: a query may carry a URL signature, which is never logged.
    let span = tracing::debug_span!(
        "request",
        method = %ctx.method,
        path = parts.uri.path(),
        key = field::Empty,
        cache = field::Empty,
        status = field::Empty
    );
    let peer = parts
        .extensions
        .get::<shoal_cache_core::server::ClientAddr>()
        .map(|a| a.0.ip());
    let inflight = InFlight::new(&st.metrics);
    let resp = match run(&st, &mut ctx, &parts.uri, peer, body)
        .instrument(span.clone())
        .await
    {
        Ok(r) => r,
        Err(e) => {
            ctx.outcome = if e.is_origin_failure() || matches!(e, EdgeError::UpstreamFailed { .. })
            {
                Outcome::Failed
            } else {
                Outcome::Rejected
            };
            debug!(parent: &span, "{e}");
            e.into_response()
        }
    };
    drop(inflight);
    finish(&st, &ctx, resp, &span)
}

/// Counts a request in flight until dropped: also when the client goes away and hyper
/// drops the request's future mid-way.
struct InFlight<'a>(&'a crate::metrics::Metrics);

impl<'a> InFlight<'a> {
    fn new(m: &'a crate::metrics::Metrics) -> Self {
        m.inflight(1);
        Self(m)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.inflight(-1);
    }
}

/// admit → validate → key → route → lookup → fill → respond.
async fn run(
    st: &Arc<EdgeState>,
    ctx: &mut Ctx,
    uri: &Uri,
    peer: Option<std::net::IpAddr>,
    body: Body,
) -> Result<Response<Body>, EdgeError> {
    let client = st.admission.client(&ctx.headers, peer);
    let _admitted = st.admission.admit(client)?;
    let methods = validate::Methods {
        writes: st.config.write_token.is_some(),
        pass: st.config.pass_through,
    };
    let target = validate::request(&ctx.method, uri, &ctx.headers, methods)?;
    // Forwards from region peers were checked where the client connected (and the peer's
    // own address would not match an `ip` binding).
    let from_peer = st.admission.is_peer_forward(&ctx.headers, peer);
    ctx.client = client;
    ctx.from_peer = from_peer;
    let signed = &st.config.signed_urls;
    if !from_peer && signed.required(&target.path) {
        signed
            .verify(&target.path_and_query, client, ctx.now)
            .map_err(|e| EdgeError::Forbidden(e.to_string()))?;
    }
    let key = st
        .peers
        .now()
        .region
        .key(&target.host, &target.path_and_query)
        .map_err(|e| EdgeError::BadRequest(e.to_string()))?;
    ctx.key = Some(key.clone());
    let is_read = ctx.method == Method::GET || ctx.method == Method::HEAD;
    let is_write = methods.writes && (ctx.method == Method::PUT || ctx.method == Method::DELETE);
    let is_pass = !is_read && !is_write;
    let body = if is_write {
        write::admit(st, ctx, body).await?
    } else if is_pass {
        write::read_body(st, ctx, body).await?
    } else {
        drop(body);
        bytes::Bytes::new()
    };
    if from_peer && ctx.headers.contains_key(prefetch::PREFETCH) {
        let (st2, key2) = (st.clone(), key.clone());
        tokio::spawn(prefetch::local(st2, key2));
        ctx.outcome = Outcome::Prefetch;
        return Ok(accepted());
    }
    if let Some(resp) = route::to_owner(st, ctx, &target, &key, &body).await {
        ctx.outcome = Outcome::Forwarded;
        return Ok(resp);
    }
    if is_write {
        ctx.outcome = Outcome::Written;
        return write::to_origin(st, ctx, &target, &key, body).await;
    }
    if is_pass {
        ctx.outcome = Outcome::Passed;
        return pass::to_origin(st, ctx, &target, body).await;
    }

    prefetch::after_read(st, &ctx.headers, &target);
    let mode = st.mode(key.path_and_query());
    // `write-back`: this edge's acknowledged write not yet at the origin is the newest.
    if mode.defers_writes()
        && let Some(obj) = st.write_back.get(&target.path)
    {
        ctx.outcome = Outcome::Cache(CacheStatus::Hit);
        return Ok(respond::served(
            st,
            ctx,
            fill::Served::Object(obj, CacheStatus::Hit),
        ));
    }
    // A URL whose responses vary is looked up (and filled) under this request's variant.
    let variant = st.vary.fields(key.as_str()).filter(|_| mode.caches());
    let key = match &variant {
        Some(fields) => {
            let req: Vec<(&str, &str)> = ctx
                .headers
                .iter()
                .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
                .collect();
            CacheKey::from_normalised(shoal_cache_core::vary::secondary(
                key.as_str(),
                fields,
                req.iter().copied(),
            ))
        }
        None => key,
    };
    // Built only for a fill: a hit never pays for copying the request's headers.
    let headers = &ctx.headers;
    let ask = || {
        Arc::new(fill::Ask {
            headers: crate::headers::forwarded(headers, ctx.client, from_peer, true),
            variant: variant.clone(),
        })
    };
    // `direct` paths are never cached: every read goes to the origin.
    let lookup = if mode.caches() {
        st.store.lookup(key.as_str(), ctx.now).await
    } else {
        shoal_cache_core::Lookup::Miss
    };
    let min_version = match ctx.headers.get(MIN_VERSION) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    EdgeError::BadRequest(format!("{MIN_VERSION} must be an unsigned integer"))
                })?,
        ),
    };
    // A `consistent` path is served from cache only under a lease; without one every copy
    // is revalidated, and an unreachable origin is an error, never a stale read.
    let unleased = mode == Mode::Consistent && !st.has_lease();
    let served = match lookup::plan(lookup, min_version, unleased) {
        lookup::Plan::Serve(obj) => Ok(fill::Served::Object(obj, CacheStatus::Hit)),
        lookup::Plan::ServeAndRefresh(obj) => {
            let (st2, key2, stale, ask2) = (st.clone(), key.clone(), obj.clone(), ask());
            tokio::spawn(async move {
                if let Err(e) = fill::fill(&st2, &key2, target.authorized, Some(stale), ask2).await
                {
                    debug!("background revalidation of {key2} failed: {e}");
                }
            });
            Ok(fill::Served::Object(obj, CacheStatus::StaleHit))
        }
        lookup::Plan::Revalidate {
            stale,
            serve_if_error,
        } => match fill::fill(st, &key, target.authorized, Some(stale.clone()), ask()).await {
            Err(e) if serve_if_error && e.may_serve_stale() => {
                tracing::warn!("origin failed, serving stale {key}: {e}");
                Ok(fill::Served::Object(stale, CacheStatus::StaleHit))
            }
            r => r,
        },
        lookup::Plan::Fill => fill::fill(st, &key, target.authorized, None, ask()).await,
    };
    let served = served.map_err(|e| {
        if unleased && e.is_origin_failure() {
            EdgeError::NoLease(e.to_string())
        } else {
            e
        }
    })?;
    let served = served.settle_for(&ctx.method, &ctx.headers).await?;
    ctx.outcome = Outcome::Cache(served.status());
    Ok(respond::served(st, ctx, served))
}

/// `202`: a peer's prefetch has started.
fn accepted() -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = axum::http::StatusCode::ACCEPTED;
    r
}

/// The one place every response passes: the node header (a forwarded response keeps the
/// owner's), metrics, the span.
fn finish(
    st: &EdgeState,
    ctx: &Ctx,
    mut resp: Response<Body>,
    span: &tracing::Span,
) -> Response<Body> {
    let h = resp.headers_mut();
    if !h.contains_key(NODE) {
        h.insert(NODE, st.node_header.clone());
    }
    if !h.contains_key(respond::CACHE_STATUS) {
        h.insert(respond::CACHE_STATUS, HeaderValue::from_static("shoal"));
    }
    let status = resp.status().as_u16();
    let label = ctx.outcome.label();
    st.metrics
        .request(status, label, ctx.start.elapsed().as_secs_f64());
    if let Some(k) = &ctx.key {
        span.record("key", k.as_str());
    }
    span.record("cache", label);
    span.record("status", status);
    resp
}

#[cfg(test)]
mod tests;

//! # Shoal edge
//!
//! The HTTP edge: clients speak HTTP/1.1 or HTTP/2 (h2c) to it; it caches in a
//! byte-bounded [`shoal_cache_core::Store`], sends each key to its owner edge in the region
//! (consistent hashing), and fetches misses from the origin over QUIC.
//!
//! # How a request flows
//!
//! ```text
//! admit ─▶ validate ─▶ key ─▶ route ─┬─ a peer owns it ─▶ forward (next candidate on failure; none left: serve here)
//!   │          │                     └─ ours ─▶ lookup ─┬─ fresh ─────────▶ respond (hit)
//!   │ 429/503  │ 4xx                                    ├─ stale, swr ────▶ respond (stale) + fill in background
//!   ▼          ▼                                        ├─ stale ─▶ fill (conditional) ─▶ respond (revalidated / expired),
//! EdgeError ─▶ response                                 │                  or stale-if-error, or 502/503/504
//!                                                       └─ miss ─▶ fill ─┬─ ran it ─────▶ respond (miss, stored or not)
//!                                                                        ├─ joined it ──▶ respond (collapsed)
//!                                                                        └─ too large ──▶ stream from the origin
//! fill: one origin fetch per key, waiting at most fill_queue_timeout for one of max_fills slots
//! every response ─▶ finish: X-Shoal-Node, Cache-Status, metrics, span
//! ```
//!
//! Fills are coalesced by the store: N concurrent misses for one key make one origin fetch,
//! and owner routing makes that hold region-wide.
//!
//! # Layout
//!
//! - `request/`: the phases, each a module with its own tests ([`request`] has the
//!   per-request context and the one place that records metrics and spans).
//! - `invalidation`: the subscription to the origin's invalidations, applied to the cache.
//! - [`upstream`]: the origin link: the `Origin` seam, the QUIC client and its link
//!   state, certificate pins ([`upstream::pin`]) and the circuit breaker.
//! - [`config`]: [`EdgeConfig`] (typed TOML) and [`EdgeFlags`] (command-line overrides).
//! - `state`: what every request shares; `peers`: region peers and their health;
//!   `headers`: which origin headers are kept.
//! - [`metrics`]: Prometheus metric families; [`range`] (re-exported from the core).
//! - [`error`]: [`EdgeError`], the one error channel, rendered into responses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use shoal_cache_core::server::serve;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub mod config;
mod discovery;
pub mod error;
mod headers;
mod invalidation;
pub mod metrics;
mod peers;
pub mod request;
mod state;
pub mod upstream;
mod vary;
mod writeback;

pub use config::{EdgeConfig, EdgeFlags};
pub use discovery::lookup;
pub use error::EdgeError;
pub use request::{FORWARDED, NODE};
/// `Range` parsing lives in the cache core (sans-IO, fuzzed there).
pub use shoal_cache_core::range;

use state::EdgeState;

/// A running edge.
#[derive(Debug)]
pub struct Edge {
    /// Bound client HTTP address.
    pub http_addr: SocketAddr,
    /// Bound admin address.
    pub admin_addr: SocketAddr,
    state: Arc<EdgeState>,
    link: Arc<upstream::OriginClient>,
    cancel: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl Edge {
    /// Binds the configured addresses (with the configured backlog) and starts.
    pub async fn start(config: EdgeConfig) -> Result<Self, EdgeError> {
        let bind = |a: SocketAddr| {
            shoal_cache_core::io::listen(a, config.listen_backlog).map_err(|e| EdgeError::Bind {
                addr: a.to_string(),
                reason: e.to_string(),
            })
        };
        let http = bind(config.listen)?;
        let admin = bind(config.admin_listen)?;
        Self::start_with(config, http, admin).await
    }

    /// Starts on listeners bound by the caller (tests and the demo bind `127.0.0.1:0` first,
    /// so peers can be told each other's addresses).
    pub async fn start_with(
        config: EdgeConfig,
        http: TcpListener,
        admin: TcpListener,
    ) -> Result<Self, EdgeError> {
        let local = |l: &TcpListener| {
            l.local_addr().map_err(|e| EdgeError::Bind {
                addr: "listener".into(),
                reason: e.to_string(),
            })
        };
        let (http_addr, admin_addr) = (local(&http)?, local(&admin)?);
        config.validate()?;
        let link = Arc::new(upstream::OriginClient::new(
            upstream::LinkSettings::from_config(&config)?,
        )?);
        let state = Arc::new(EdgeState::new(config, link.clone())?);
        link.hold_fetches_until_following();
        let cancel = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        // Reach the origin at start and whenever the link drops, so readiness reflects it
        // and a restarted origin is reconnected without waiting for a request.
        tasks.spawn(
            link.clone()
                .maintain(cancel.clone(), Duration::from_millis(500)),
        );
        tasks.spawn(invalidation::follow(
            link.clone(),
            state.clone(),
            cancel.clone(),
        ));
        let (st, c) = (state.clone(), cancel.clone());
        tasks.spawn(async move { st.write_back.run(&*st.origin, &st.metrics, c).await });
        // Region peers are probed every second, so a dead one is noticed at once.
        let (st, c) = (state.clone(), cancel.clone());
        let probe = state
            .config
            .timeouts
            .peer
            .get()
            .min(Duration::from_millis(500));
        tasks.spawn(async move { st.peers.watch(Duration::from_secs(1), probe, c).await });
        // Peers by name and SRV membership are resolved once before serving (bounded by
        // the lookup timeout), then again every `discovery.every`.
        state.metrics.ring_members(state.peers.now().region.len());
        if discovery::needed(&state.config) {
            let resolver = discovery::DnsResolver::new(&state.config.discovery)
                .map_err(|e| EdgeError::Config(format!("discovery: {e}")))?;
            let first = discovery::Membership::literal(&state.config);
            let first = match discovery::resolve(&state.config, &resolver, &first).await {
                Ok(m) => {
                    state.set_members(&m);
                    m
                }
                Err(e) => {
                    tracing::warn!("ring discovery: {e}; starting with the configured peers");
                    state.metrics.discovery_error();
                    first
                }
            };
            let (st, c) = (state.clone(), cancel.clone());
            tasks.spawn(async move {
                discovery::follow(
                    &st.config,
                    &resolver,
                    first,
                    c,
                    |m| st.set_members(m),
                    |_| st.metrics.discovery_error(),
                )
                .await;
            });
        }
        // Rate-limiter entries of clients that went quiet are dropped now and then.
        let (st, c) = (state.clone(), cancel.clone());
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = c.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(10)) => st.admission.forget_idle_clients(),
                }
            }
        });
        let app = Router::new()
            .fallback(|State(st): State<Arc<EdgeState>>, req: Request| request::handle(st, req))
            .with_state(state.clone());
        let limits = state.config.limits;
        tasks.spawn(serve(http, app, limits, cancel.clone()));
        let admin_app = Router::new()
            .route("/metrics", get(metrics_page))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .with_state(state.clone());
        tasks.spawn(serve(admin, admin_app, limits, cancel.clone()));
        info!(node = %state.config.node_id, region = %state.config.region, %http_addr, %admin_addr, "edge listening");
        Ok(Self {
            http_addr,
            admin_addr,
            state,
            link,
            cancel,
            tasks,
        })
    }

    /// This edge's node id.
    pub fn node_id(&self) -> &str {
        &self.state.config.node_id
    }

    /// Ready for traffic: the origin link is up, the first invalidation subscription has
    /// been answered, and the edge is not draining (what
    /// `/readyz` answers). Reads published state only, so it answers at once.
    pub fn is_ready(&self) -> bool {
        ready(&self.state).is_ok()
    }

    /// Invalidations from the origin applied so far.
    pub fn invalidations_applied(&self) -> u64 {
        self.state.metrics.invalidations_applied()
    }

    /// Cache counters.
    pub fn cache_stats(&self) -> shoal_cache_core::StoreStats {
        self.state.store.stats()
    }

    /// Origin fetches so far with `result` (`ok`, `not_modified`, `error`, `timeout`, …).
    pub fn origin_fetches(&self, result: &'static str) -> u64 {
        self.state.metrics.origin_fetches(result)
    }

    /// CMCD prefetches so far that ended with `result` (`fetched`, `forwarded`, `cached`,
    /// `busy`, `error`, `invalid`, `not_allowed`).
    pub fn prefetches(&self, result: &'static str) -> u64 {
        self.state.metrics.prefetches(result)
    }

    /// The local UDP address of the QUIC endpoint to the origin.
    pub fn quic_local_addr(&self) -> Option<SocketAddr> {
        self.link.local_addr()
    }

    /// Graceful shutdown: become not-ready, stop accepting, finish in-flight requests within
    /// the configured grace, then close the origin connection.
    pub async fn shutdown(mut self) {
        self.state.draining.store(true, Ordering::SeqCst);
        self.cancel.cancel();
        let grace = self.state.config.timeouts.shutdown_grace.get();
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!("in-flight requests still running after {grace:?}; aborting them");
            self.tasks.abort_all();
        }
        // Acknowledged `write-back` writes go to the origin before the link closes.
        let st = &self.state;
        let lost = st.write_back.drain(&*st.origin, &st.metrics, grace).await;
        if lost > 0 {
            warn!(
                paths = lost,
                "write-back writes could not be flushed to the origin before shutdown; lost"
            );
        }
        self.link.close();
        info!(node = %self.state.config.node_id, "edge stopped");
    }

    /// Stops at once, as a crash would: no drain, every connection dropped, and
    /// acknowledged `write-back` writes not yet flushed are lost. For fault tests.
    pub fn kill(mut self) {
        self.tasks.abort_all();
        self.link.close();
        warn!(node = %self.state.config.node_id, "edge killed");
    }

    /// Acknowledged `write-back` writes not yet flushed: body bytes and paths.
    pub fn write_back_held(&self) -> (u64, usize) {
        self.state.write_back.held()
    }
}

async fn metrics_page(
    State(st): State<Arc<EdgeState>>,
    headers: axum::http::HeaderMap,
) -> Response {
    use shoal_cache_core::exposition::Format;
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let (bytes, paths) = st.write_back.held();
    st.metrics.write_back_held(bytes, paths);
    (
        [(axum::http::header::CONTENT_TYPE, format.content_type())],
        format.render(st.metrics.render(&st.store.stats())),
    )
        .into_response()
}

fn ready(st: &EdgeState) -> Result<(), &'static str> {
    if st.draining.load(Ordering::SeqCst) {
        return Err("draining\n");
    }
    if !st.origin.is_up() {
        return Err("origin not reached\n");
    }
    if !st.origin.is_following() {
        return Err("not yet subscribed to invalidations\n");
    }
    Ok(())
}

async fn readyz(State(st): State<Arc<EdgeState>>) -> Response {
    match ready(&st) {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

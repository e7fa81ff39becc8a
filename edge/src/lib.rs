//! # Shoal edge
//!
//! The HTTP edge: clients speak HTTP/1.1 to it; it caches in a byte-bounded
//! [`shoal_cache_core::Store`], sends each key to its owner edge in the region (consistent
//! hashing), and fetches misses from the origin over QUIC.
//!
//! # Layout
//!
//! - [`config`]: [`EdgeConfig`] (TOML) and its parsed [`config::Settings`].
//! - `pipeline`: the request phases (validate → key → route → lookup → fill → respond); the
//!   phase chart is in its module docs.
//! - [`upstream`]: the QUIC client to the origin: pinned certificate, retries, breaker.
//! - [`range`]: Range request handling.
//! - [`metrics`]: Prometheus metric families.
//! - [`error`]: [`EdgeError`], classified for status codes and retries.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use shoal_cache_core::{CachedObject, KeyPolicy, Ring, Store, StoreConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub mod config;
pub mod error;
pub mod metrics;
mod pipeline;
pub mod range;
pub mod upstream;

pub use config::{EdgeConfig, Settings};
pub use error::EdgeError;
pub use pipeline::{FORWARDED, NODE};

/// A region peer and its health.
#[derive(Debug)]
pub(crate) struct Peer {
    addr: SocketAddr,
    down_until: std::sync::Mutex<Option<Instant>>,
}

impl Peer {
    fn is_down(&self) -> bool {
        self.down_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| Instant::now() < t)
    }

    fn mark_down(&self, for_: Duration) {
        *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + for_);
    }
}

/// Everything a request needs.
#[derive(Debug)]
pub(crate) struct EdgeState {
    settings: Settings,
    node_id: String,
    store: Store<CachedObject>,
    ring: Ring,
    peers: HashMap<String, Peer>,
    origin: upstream::OriginClient,
    peer_client: Client<HttpConnector, Empty<Bytes>>,
    metrics: metrics::Metrics,
    key_policy: KeyPolicy,
    draining: AtomicBool,
    /// `X-Shoal-Node` value, built once.
    node_header: axum::http::HeaderValue,
    date: pipeline::DateCache,
}

/// A running edge.
#[derive(Debug)]
pub struct Edge {
    /// Bound client HTTP address.
    pub http_addr: SocketAddr,
    /// Bound admin address.
    pub admin_addr: SocketAddr,
    state: Arc<EdgeState>,
    cancel: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl Edge {
    /// Binds the configured addresses and starts.
    pub async fn start(settings: Settings) -> Result<Self, EdgeError> {
        let bind = |a: SocketAddr| async move {
            TcpListener::bind(a).await.map_err(|e| EdgeError::Bind {
                addr: a.to_string(),
                reason: e.to_string(),
            })
        };
        let http = bind(settings.config.listen).await?;
        let admin = bind(settings.config.admin_listen).await?;
        Self::start_with(settings, http, admin).await
    }

    /// Starts on listeners bound by the caller (tests and the demo bind `127.0.0.1:0` first,
    /// so peers can be told each other's addresses).
    pub async fn start_with(
        settings: Settings,
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
        let c = &settings.config;
        let pin = match (&c.origin.fingerprint, &c.origin.cert_file) {
            (Some(f), _) => upstream::parse_fingerprint(f)?,
            (None, Some(p)) => upstream::fingerprint_of_pem(p)?,
            (None, None) => return Err(EdgeError::Config("no origin certificate to pin".into())),
        };
        let origin = upstream::OriginClient::new(upstream::UpstreamSettings {
            addr: c.origin.addr,
            server_name: c.origin.server_name.clone(),
            pin,
            fetch_timeout: settings.origin_fetch,
            connect_timeout: settings.origin_connect,
            retries: c.retries,
            breaker_failures: c.breaker_failures.max(1),
            breaker_open_for: settings.breaker_open_for,
        })?;
        let store = Store::new(StoreConfig {
            capacity: settings.capacity,
            max_object_size: settings.max_object_size,
            policy: settings.policy,
        })
        .map_err(|e| EdgeError::Config(e.to_string()))?;
        let mut ring = Ring::new(c.vnodes).map_err(|e| EdgeError::Config(e.to_string()))?;
        ring.add(&c.node_id)
            .map_err(|e| EdgeError::Config(e.to_string()))?;
        let mut peers = HashMap::new();
        for (id, addr) in &c.peers {
            if *id == c.node_id {
                continue;
            }
            ring.add(id).map_err(|e| EdgeError::Config(e.to_string()))?;
            peers.insert(
                id.clone(),
                Peer {
                    addr: *addr,
                    down_until: std::sync::Mutex::new(None),
                },
            );
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.peer));
        connector.set_nodelay(true);
        let peer_client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        let node_header = axum::http::HeaderValue::from_str(&c.node_id).map_err(|_| {
            EdgeError::Config(format!(
                "node_id {:?} is not a valid header value",
                c.node_id
            ))
        })?;
        let state = Arc::new(EdgeState {
            node_id: c.node_id.clone(),
            key_policy: KeyPolicy {
                ignored_params: c.cache.ignored_query_params.clone(),
            },
            settings,
            store,
            ring,
            peers,
            origin,
            peer_client,
            metrics: metrics::Metrics::default(),
            draining: AtomicBool::new(false),
            node_header,
            date: pipeline::DateCache::default(),
        });
        let cancel = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        // Reach the origin at start and whenever the link is down, so readiness reflects it
        // and a restarted origin is reconnected without waiting for a request.
        let (s, c2) = (state.clone(), cancel.clone());
        tasks.spawn(async move {
            loop {
                if !s.origin.connected().await
                    && let Err(e) = s.origin.connection().await
                {
                    tracing::debug!("origin not reachable yet: {e}");
                }
                tokio::select! {
                    () = c2.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        });
        let app = Router::new()
            .fallback(client_request)
            .with_state(state.clone());
        let c3 = cancel.clone();
        tasks.spawn(async move {
            if let Err(e) = axum::serve(http, app)
                .with_graceful_shutdown(async move { c3.cancelled().await })
                .await
            {
                warn!("client listener: {e}");
            }
        });
        let admin_app = Router::new()
            .route("/metrics", get(metrics_page))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .with_state(state.clone());
        let c4 = cancel.clone();
        tasks.spawn(async move {
            let _ = axum::serve(admin, admin_app)
                .with_graceful_shutdown(async move { c4.cancelled().await })
                .await;
        });
        info!(node = %state.node_id, region = %state.settings.config.region, %http_addr, %admin_addr, "edge listening");
        Ok(Self {
            http_addr,
            admin_addr,
            state,
            cancel,
            tasks,
        })
    }

    /// This edge's node id.
    pub fn node_id(&self) -> &str {
        &self.state.node_id
    }

    /// Ready for traffic: the origin has been reached and the edge is not draining (what
    /// `/readyz` answers).
    pub async fn is_ready(&self) -> bool {
        !self.state.draining.load(Ordering::SeqCst) && self.state.origin.connected().await
    }

    /// Cache counters.
    pub fn cache_stats(&self) -> shoal_cache_core::StoreStats {
        self.state.store.stats()
    }

    /// Origin fetches so far with `result` (`ok`, `not_modified`, `error`, `timeout`, …).
    pub fn origin_fetches(&self, result: &'static str) -> u64 {
        self.state.metrics.origin_fetches(result)
    }

    /// Graceful shutdown: become not-ready, stop accepting, finish in-flight requests within
    /// the configured grace, then close the origin connection.
    pub async fn shutdown(mut self) {
        self.state.draining.store(true, Ordering::SeqCst);
        self.cancel.cancel();
        let grace = self.state.settings.shutdown_grace;
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!("in-flight requests still running after {grace:?}; aborting them");
            self.tasks.abort_all();
        }
        self.state.origin.close().await;
        info!(node = %self.state.node_id, "edge stopped");
    }
}

async fn client_request(State(st): State<Arc<EdgeState>>, req: Request) -> Response {
    let start = Instant::now();
    st.metrics.inflight(1);
    let (resp, cache) = pipeline::handle(st.clone(), req).await;
    st.metrics.inflight(-1);
    st.metrics
        .request(resp.status().as_u16(), cache, start.elapsed().as_secs_f64());
    resp
}

async fn metrics_page(State(st): State<Arc<EdgeState>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(&st.store.stats()),
    )
        .into_response()
}

async fn readyz(State(st): State<Arc<EdgeState>>) -> Response {
    if st.draining.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    if !st.origin.connected().await {
        return (StatusCode::SERVICE_UNAVAILABLE, "origin not reached\n").into_response();
    }
    (StatusCode::OK, Body::from("ready\n")).into_response()
}

//! # Shoal origin
//!
//! The authoritative content store that edges reach over QUIC (quinn, TLS 1.3, rustls with
//! `ring`), plus an HTTP admin API for writes, metrics and health.
//!
//! # Layout
//!
//! - [`config`]: [`OriginConfig`] (TOML, validated).
//! - [`store`]: versioned objects in memory over a read-only content directory; path safety.
//! - [`tls`]: certificate loading or generation, fingerprints, QUIC server config.
//! - `server`: the QUIC accept loop; one bidirectional stream per fetch.
//! - `admin`: PUT/DELETE of objects and purges (bearer token), `/metrics`, `/healthz`.
//! - [`invalidation`]: the invalidation log, the live feed to edges, acknowledgements.
//! - [`metrics`]: Prometheus metric families.
//! - `upstream`: pull-through to an upstream HTTP server (`upstream.url`): fetches of
//!   paths the origin does not hold, and every request an edge passes through.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use shoal_cache_core::wire::{Invalidation, InvalidationTarget};
use tokio_util::sync::CancellationToken;
use tracing::info;

mod admin;
pub mod config;
pub mod error;
pub mod invalidation;
pub mod metrics;
mod server;
pub mod store;
pub mod tls;
mod upstream;

pub use config::{CacheRule, OriginConfig, OriginFlags, UpstreamConfig};
pub use error::OriginError;
pub use invalidation::{Applied, Invalidator};
pub use store::ObjectStore;

use shoal_cache_core::signed::same_secret;

/// Shared by the QUIC and admin servers.
#[derive(Debug)]
pub(crate) struct State {
    config: OriginConfig,
    store: Arc<ObjectStore>,
    metrics: Arc<metrics::Metrics>,
    invalidator: Arc<Invalidator>,
    /// Consistency modes, from the config.
    modes: shoal_cache_core::consistency::Modes,
    /// Synthetic video ladders, from the config.
    ladders: Vec<shoal_cache_core::video::Ladder>,
    /// The upstream HTTP server pulled through, if one is configured.
    upstream: Option<upstream::Upstream>,
}

impl State {
    /// Appends an invalidation, after the change it announces has been made.
    fn invalidate(&self, target: InvalidationTarget, soft: bool) -> Invalidation {
        self.metrics.invalidation();
        self.invalidator.publish(target, soft)
    }

    /// The object at `path`: a held one (written or a file) first, so a write can replace
    /// a generated one; then a synthetic ladder's.
    async fn object(&self, path: &str) -> Result<Arc<store::Object>, OriginError> {
        match self.store.get(path).await {
            Err(OriginError::NotFound(p)) => self.generated(path).ok_or(OriginError::NotFound(p)),
            r => r,
        }
    }

    fn generated(&self, path: &str) -> Option<Arc<store::Object>> {
        if !path.starts_with(shoal_cache_core::video::ROOT) {
            return None;
        }
        // Wall-clock time, so that every origin (and a restarted one) agrees on where a
        // live stream is.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let g = self.ladders.iter().find_map(|l| {
            let res = l.resolve(path)?;
            l.generate(res, now)
        })?;
        Some(Arc::new(store::Object::generated(g)))
    }
}

/// Writes, deletes and purges: each changes the store (if it is a write) and then appends
/// an invalidation, so an edge told of it and refetching sees the change.
#[derive(Debug, Clone)]
pub struct Writer {
    state: Arc<State>,
}

impl Writer {
    /// Stores an object (with surrogate keys); in a mode that pushes writes, invalidates its
    /// path at every edge.
    pub fn put(
        &self,
        path: &str,
        body: bytes::Bytes,
        content_type: Option<String>,
        tags: Vec<String>,
    ) -> Result<(Arc<store::Object>, Option<Invalidation>), OriginError> {
        self.put_versioned(path, body, content_type, tags, None)
    }

    /// As [`Writer::put`], at the version a `write-back` edge gave the write (see
    /// [`store::ObjectStore::put_versioned`]).
    pub fn put_versioned(
        &self,
        path: &str,
        body: bytes::Bytes,
        content_type: Option<String>,
        tags: Vec<String>,
        version: Option<u64>,
    ) -> Result<(Arc<store::Object>, Option<Invalidation>), OriginError> {
        // One check for writes from the admin API and from edges alike.
        shoal_cache_core::invalidation::check_tags(&tags).map_err(OriginError::BadTags)?;
        let obj = self
            .state
            .store
            .put_versioned(path, body, content_type, tags, version)?;
        Ok((obj, self.announce(path)?))
    }

    /// Deletes an in-memory object (whether it existed); in a mode that pushes writes,
    /// invalidates its path at every edge.
    pub fn delete(&self, path: &str) -> Result<(bool, Option<Invalidation>), OriginError> {
        let existed = self.state.store.delete(path)?;
        Ok((existed, self.announce(path)?))
    }

    /// The invalidation a write of `path` makes, if its mode pushes writes.
    fn announce(&self, path: &str) -> Result<Option<Invalidation>, OriginError> {
        let path = store::safe_path(path)?;
        if !self.mode(&path).pushes_writes() {
            return Ok(None);
        }
        Ok(Some(
            self.state
                .invalidate(InvalidationTarget::Keys(vec![path]), false),
        ))
    }

    /// In a `consistent` path, waits until every edge holding a lease has applied `inv`
    /// or its lease has expired (at most the lease duration); otherwise returns at once.
    pub async fn settle(&self, path: &str, inv: Option<&Invalidation>) {
        if let Some(i) = inv
            && self.mode(path).waits_for_leases()
        {
            self.state.invalidator.wait_leases(i.seq).await;
        }
    }

    /// The consistency mode of `path`.
    pub fn mode(&self, path: &str) -> shoal_cache_core::consistency::Mode {
        self.state.modes.of(path)
    }

    /// Purges what `target` names at every edge (soft: marks it stale).
    pub fn purge(&self, target: InvalidationTarget, soft: bool) -> Invalidation {
        self.state.invalidate(target, soft)
    }

    /// Waits until every subscribed edge has applied `seq`, at most `limit`.
    pub async fn wait_applied(&self, seq: u64, limit: std::time::Duration) -> Applied {
        self.state.invalidator.wait_applied(seq, limit).await
    }

    /// Edges subscribed now.
    pub fn subscribers(&self) -> usize {
        self.state.invalidator.subscriber_count()
    }
}

/// A running origin.
#[derive(Debug)]
pub struct Origin {
    /// Bound QUIC address.
    pub quic_addr: SocketAddr,
    /// Bound admin HTTP address.
    pub admin_addr: SocketAddr,
    /// The certificate edges must pin.
    pub cert: CertificateDer<'static>,
    /// SHA-256 fingerprint of `cert` (hex).
    pub fingerprint: String,
    /// The object store (tests and the demo write through it directly).
    pub store: Arc<ObjectStore>,
    /// Metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// Writes and purges that edges are told of.
    pub writer: Writer,
    cancel: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl Origin {
    /// Binds the QUIC and admin listeners and starts serving. `store` lets a restarted
    /// origin keep its objects; `None` starts empty.
    pub async fn start(
        config: OriginConfig,
        store: Option<Arc<ObjectStore>>,
    ) -> Result<Self, OriginError> {
        config.validate()?;
        let identity = match (&config.cert, &config.key) {
            (Some(c), Some(k)) => tls::Identity::load(c, k)?,
            _ => tls::Identity::persistent(
                config.cert_out.as_deref(),
                config.key_out().as_deref(),
                &config.server_names,
            )?,
        };
        let endpoint = quinn::Endpoint::server(tls::server_config(&identity)?, config.quic_listen)
            .map_err(|e| OriginError::Transport(format!("binding {}: {e}", config.quic_listen)))?;
        let quic_addr = endpoint
            .local_addr()
            .map_err(|e| OriginError::Transport(e.to_string()))?;
        let admin = shoal_cache_core::io::listen(config.admin_listen, config.listen_backlog)
            .map_err(|source| OriginError::Io {
                path: config.admin_listen.to_string(),
                source,
            })?;
        let admin_addr = admin.local_addr().map_err(|source| OriginError::Io {
            path: config.admin_listen.to_string(),
            source,
        })?;
        let store = match store {
            Some(s) => s,
            None => Arc::new(ObjectStore::new(config.content_dir.clone())?),
        };
        let metrics = Arc::new(metrics::Metrics::default());
        let invalidator = Arc::new(Invalidator::new(
            config.invalidation_log,
            config.heartbeat.get(),
            config.lease.get(),
        ));
        let state = Arc::new(State {
            modes: config.modes(),
            ladders: config.built_ladders()?,
            upstream: config
                .upstream
                .as_ref()
                .map(upstream::Upstream::new)
                .transpose()?,
            config,
            store: store.clone(),
            metrics: metrics.clone(),
            invalidator,
        });
        let writer = Writer {
            state: state.clone(),
        };
        let cancel = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(server::serve(endpoint, state.clone(), cancel.clone()));
        let limits = state.config.limits;
        let app = admin::router(state);
        tasks.spawn(shoal_cache_core::server::serve(
            admin,
            app,
            limits,
            cancel.clone(),
        ));
        let fingerprint = tls::fingerprint(&identity.cert);
        info!(%quic_addr, %admin_addr, %fingerprint, "origin listening");
        Ok(Self {
            quic_addr,
            admin_addr,
            cert: identity.cert,
            fingerprint,
            store,
            metrics,
            writer,
            cancel,
            tasks,
        })
    }

    /// A token that stops the origin when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops accepting, finishes in-flight streams, and returns when both servers are down.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Runs until the shutdown token is cancelled.
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

//! # Shoal client
//!
//! A library client that knows a region's edges and sends each request to the key's owner
//! edge through the region's [`RegionMap`] — the same ring and key policy the edges use, so
//! no edge has to forward — and falls back along the map's candidates when one does not
//! answer. It exposes status,
//! `Cache-Status` and timings; `shoal get` prints them, the demo and the tests use them.
//!
//! # Layout
//!
//! This file: [`RegionClient`], [`Fetched`], [`ClientError`]; [`admin`]: the origin's
//! admin API (purges).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use shoal_cache_core::RegionMap;

pub mod abr;
pub mod admin;
pub mod player;
pub mod playlist;
pub use admin::{AdminClient, Purge, Purged};

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL or key is malformed.
    #[error("bad request target {0:?}: {1}")]
    BadTarget(String, String),
    /// The region has no edges.
    #[error("the region has no edges")]
    NoEdges,
    /// One request to one edge failed (connect, timeout, or a broken response).
    #[error("{edge}: {reason}")]
    Request {
        /// The edge's address.
        edge: String,
        /// What failed.
        reason: String,
    },
    /// Every edge that could serve the key failed.
    #[error("no edge answered for {key}: {last}")]
    AllFailed {
        /// The key.
        key: String,
        /// The last failure.
        last: String,
    },
    /// The caller's watcher dropped the download part-way (ABR abandonment).
    #[error("abandoned after {received} body bytes")]
    Abandoned {
        /// Body bytes received before it was dropped.
        received: u64,
    },
}

/// How far a download has come, for a [`Watcher`].
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Body bytes received.
    pub received: u64,
    /// `Content-Length`, if announced.
    pub length: Option<u64>,
    /// Time since the response head arrived.
    pub since_first_byte: Duration,
}

/// Looks at a download every [`WATCH_EVERY`] and after each chunk; `false` drops it.
pub type Watcher<'a> = &'a mut (dyn FnMut(Progress) -> bool + Send);

/// How often a [`Watcher`] is consulted while no chunk arrives.
pub const WATCH_EVERY: Duration = Duration::from_millis(100);

/// One answered request.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Edge that answered.
    pub edge: String,
    /// HTTP status.
    pub status: StatusCode,
    /// The `Cache-Status` header, if any.
    pub cache_status: Option<String>,
    /// The `Age` header in seconds, if any.
    pub age: Option<u64>,
    /// The `ETag`, if any.
    pub etag: Option<String>,
    /// Response headers.
    pub headers: http::HeaderMap,
    /// The body.
    pub body: Bytes,
    /// Time to the response head.
    pub ttfb: Duration,
    /// Time to the last body byte.
    pub total: Duration,
    /// Edges that failed before this one answered.
    pub failovers: usize,
}

impl Fetched {
    /// Whether the edge served it from cache (fresh or stale).
    pub fn is_hit(&self) -> bool {
        self.cache_status
            .as_deref()
            .is_some_and(|c| c.contains("; hit"))
    }
}

/// A client for one region.
#[derive(Debug, Clone)]
pub struct RegionClient {
    edges: Vec<(String, SocketAddr)>,
    map: RegionMap,
    host: String,
    http: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
    /// Edges that failed a request, by index, and until when they are tried last: shared
    /// by clones, so a player's requests stop waiting on an edge one of them found dead.
    down: std::sync::Arc<std::sync::Mutex<HashMap<usize, std::time::Instant>>>,
}

/// How long an edge that failed a request is tried last.
const DOWN_FOR: Duration = Duration::from_secs(2);

impl RegionClient {
    /// A client for `edges` (id → address) under `host`, routing with `map` (built from the
    /// edges' own settings: every edge id in `edges` must be on it).
    pub fn new(
        edges: Vec<(String, SocketAddr)>,
        host: &str,
        map: RegionMap,
    ) -> Result<Self, ClientError> {
        if edges.is_empty() {
            return Err(ClientError::NoEdges);
        }
        if let Some((id, _)) = edges
            .iter()
            .find(|(id, _)| !map.ring().nodes().any(|n| n == id))
        {
            return Err(ClientError::BadTarget(
                host.into(),
                format!("edge {id} is not on the region's ring"),
            ));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.set_nodelay(true);
        Ok(Self {
            edges,
            map,
            host: host.to_string(),
            http: Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector),
            timeout: Duration::from_secs(30),
            down: Default::default(),
        })
    }

    /// Per-request timeout (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// GETs `path_and_query` from its owner edge, falling back along the ring.
    pub async fn get(&self, path_and_query: &str) -> Result<Fetched, ClientError> {
        self.get_with(path_and_query, &[]).await
    }

    /// GETs with extra request headers (Range, If-None-Match, …).
    pub async fn get_with(
        &self,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Fetched, ClientError> {
        self.route(path_and_query, headers, None).await
    }

    /// GETs, showing the download's progress to `watch`, which may drop it
    /// ([`ClientError::Abandoned`]; an abandoned download is not retried elsewhere).
    pub async fn get_watched(
        &self,
        path_and_query: &str,
        headers: &[(&str, &str)],
        watch: Watcher<'_>,
    ) -> Result<Fetched, ClientError> {
        self.route(path_and_query, headers, Some(watch)).await
    }

    /// To the key's owner, failing over along the ring.
    async fn route(
        &self,
        path_and_query: &str,
        headers: &[(&str, &str)],
        mut watch: Option<Watcher<'_>>,
    ) -> Result<Fetched, ClientError> {
        let key = self
            .map
            .key(&self.host, path_and_query)
            .map_err(|e| ClientError::BadTarget(path_and_query.into(), e.to_string()))?;
        let mut last = String::from("no edge tried");
        // The ring's order, with edges that failed recently moved to the end (still tried,
        // should every other edge fail too).
        let now = std::time::Instant::now();
        let (mut order, mut later) = (Vec::new(), Vec::new());
        {
            let down = self.down.lock().unwrap_or_else(|e| e.into_inner());
            for node in self.map.candidates(&key) {
                let Some(i) = self.edges.iter().position(|(id, _)| id == node) else {
                    continue;
                };
                if down.get(&i).is_some_and(|&t| now < t) {
                    later.push(i);
                } else {
                    order.push(i);
                }
            }
        }
        order.extend(later);
        for (failovers, i) in order.into_iter().enumerate() {
            let (node, addr) = &self.edges[i];
            let w = watch.as_mut().map(|w| &mut **w as Watcher<'_>);
            match self.fetch(*addr, path_and_query, headers, w).await {
                Ok(mut f) => {
                    self.down
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&i);
                    f.edge = node.to_string();
                    f.failovers = failovers;
                    return Ok(f);
                }
                Err(e @ ClientError::Abandoned { .. }) => return Err(e),
                Err(e) => {
                    self.down
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(i, std::time::Instant::now() + DOWN_FOR);
                    last = format!("{node} ({e})");
                }
            }
        }
        Err(ClientError::AllFailed {
            key: key.to_string(),
            last,
        })
    }

    /// GETs from one specific edge (no routing).
    pub async fn get_from(
        &self,
        addr: SocketAddr,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Fetched, ClientError> {
        self.fetch(addr, path_and_query, headers, None).await
    }

    async fn fetch(
        &self,
        addr: SocketAddr,
        path_and_query: &str,
        headers: &[(&str, &str)],
        watch: Option<Watcher<'_>>,
    ) -> Result<Fetched, ClientError> {
        let fail = |reason: String| ClientError::Request {
            edge: addr.to_string(),
            reason,
        };
        let start = Instant::now();
        let mut b = Request::get(format!("http://{addr}{path_and_query}"))
            .header(http::header::HOST, &self.host);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        let req = b.body(Empty::new()).map_err(|e| fail(e.to_string()))?;
        let fut = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| fail(e.to_string()))?;
            let ttfb = start.elapsed();
            let (parts, mut body) = resp.into_parts();
            let length = parts
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let Some(watch) = watch else {
                let body = body.collect().await.map_err(|e| fail(e.to_string()))?;
                return Ok((parts, body.to_bytes(), ttfb));
            };
            let mut buf = bytes::BytesMut::new();
            loop {
                let progress = Progress {
                    received: buf.len() as u64,
                    length,
                    since_first_byte: start.elapsed().saturating_sub(ttfb),
                };
                if !watch(progress) {
                    return Err(ClientError::Abandoned {
                        received: progress.received,
                    });
                }
                match tokio::time::timeout(WATCH_EVERY, body.frame()).await {
                    Err(_) => continue,
                    Ok(None) => break,
                    Ok(Some(Err(e))) => return Err(fail(e.to_string())),
                    Ok(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            buf.extend_from_slice(data);
                        }
                    }
                }
            }
            Ok::<_, ClientError>((parts, buf.freeze(), ttfb))
        };
        let (parts, body, ttfb) = tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| fail(format!("timed out after {:?}", self.timeout)))??;
        let h = |n: &str| {
            parts
                .headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Ok(Fetched {
            edge: addr.to_string(),
            status: parts.status,
            cache_status: h("cache-status"),
            age: h("age").and_then(|a| a.parse().ok()),
            etag: h("etag"),
            body,
            ttfb,
            total: start.elapsed(),
            failovers: 0,
            headers: parts.headers,
        })
    }

    /// The region's edges (id, address).
    pub fn edges(&self) -> &[(String, SocketAddr)] {
        &self.edges
    }

    /// The `Host` requests carry.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Indices in [`Self::edges`] of the edges that may serve `path_and_query`, in the
    /// order [`Self::get`] tries them (its owner first), by the edges' own routing.
    pub fn candidate_indices(&self, path_and_query: &str) -> Vec<usize> {
        let Ok(key) = self.map.key(&self.host, path_and_query) else {
            return Vec::new();
        };
        self.map
            .candidates(&key)
            .into_iter()
            .filter_map(|node| self.edges.iter().position(|(id, _)| id == node))
            .collect()
    }

    /// The owner edge id of `path_and_query`.
    pub fn owner(&self, path_and_query: &str) -> Option<String> {
        let key = self.map.key(&self.host, path_and_query).ok()?;
        self.map.owner(&key).map(str::to_string)
    }
}

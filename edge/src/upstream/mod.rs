//! The edge's link to the origin: QUIC (quinn, TLS 1.3, pinned certificates), one
//! bidirectional stream per fetch.
//!
//! - [`pin`]: which certificates the edge trusts.
//! - `breaker`: the circuit breaker, counting attempts.
//! - This module: the [`Origin`] seam the request path fetches through, and
//!   [`OriginClient`], its QUIC implementation.
//!
//! **Link state.** One background task ([`OriginClient::maintain`]) owns connecting: it
//! dials, publishes the connection, waits for it to close (QUIC keep-alives every third of
//! the idle timeout, so a crashed or cut-off origin is noticed within `origin_idle × 4/3`),
//! and dials again. No request and no probe ever waits on a handshake another holds a lock for:
//! readiness reads the published state, a fetch uses the published connection, and while
//! the link is known to be down a fetch fails at once ([`EdgeError::OriginDown`]). Only
//! before the first attempt has finished does a fetch wait, bounded by the connect timeout.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use shoal_cache_core::io::{BodyStream, FrameReader, write_frame};
use shoal_cache_core::wire::{
    ALPN, BodyChunk, BodyLength, ErrorCode, FetchRequest, FrameCodec, Hello, MAX_CHUNK, Message,
    ResponseHead, WriteMethod, WriteRequest, Written,
};
use tokio::io::AsyncRead;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::EdgeConfig;
use crate::error::EdgeError;

mod breaker;
pub mod pin;

use breaker::Breaker;

/// A response body still on its way from the origin.
pub type OriginBody = BodyStream<Box<dyn AsyncRead + Send + Unpin>>;

/// An origin reply.
pub enum OriginReply {
    /// The conditional fetch matched; fresh caching headers.
    NotModified {
        /// Headers to refresh the stored object with.
        headers: Vec<(String, String)>,
    },
    /// A whole response (body read completely, offsets and length checked).
    Complete {
        /// Head.
        head: ResponseHead,
        /// Body.
        body: Bytes,
    },
    /// A response too long to collect first: the body is still on the stream.
    Streaming {
        /// Head.
        head: ResponseHead,
        /// The body, positioned at its first chunk.
        body: OriginBody,
    },
}

impl fmt::Debug for OriginReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotModified { .. } => f.write_str("NotModified"),
            Self::Complete { head, body } => {
                write!(f, "Complete({}, {} B)", head.status, body.len())
            }
            Self::Streaming { head, .. } => write!(f, "Streaming({})", head.status),
        }
    }
}

/// One fetch: what to ask the origin for.
#[derive(Debug, Clone)]
pub struct Fetch {
    /// `GET` for a cache fill; another method for a request passed through (never
    /// retried: the first attempt may have taken effect).
    pub method: String,
    /// Path and query: as the cache key holds them for a fill, as received for a pass.
    pub target: String,
    /// End-to-end request headers for the origin's upstream (see [`crate::headers::forwarded`]).
    pub headers: Vec<(String, String)>,
    /// The request body of a pass (empty for a fill).
    pub body: Bytes,
    /// The stored copy's ETag: makes the fetch conditional.
    pub etag: Option<String>,
    /// Bodies of known length up to this come back [`OriginReply::Complete`]; longer or
    /// unknown ones as [`OriginReply::Streaming`], positioned at their first chunk.
    pub collect_up_to: u64,
}

/// A client's write, to forward to the origin.
#[derive(Debug, Clone)]
pub struct Write {
    /// The object's path.
    pub path: String,
    /// Put or delete.
    pub method: WriteMethod,
    /// Media type of a put.
    pub content_type: Option<String>,
    /// Surrogate keys of a put.
    pub tags: Vec<String>,
    /// The body of a put (empty for a delete).
    pub body: Bytes,
    /// The version a `write-back` edge gave the put; `None`: the origin assigns one.
    pub version: Option<u64>,
}

/// What the request path fetches through: the QUIC client in production, a mock in the
/// phases' unit tests.
pub trait Origin: Send + Sync + fmt::Debug + 'static {
    /// Fetches with the implementation's retries and timeouts.
    fn fetch(&self, req: Fetch) -> BoxFuture<'_, Result<OriginReply, EdgeError>>;
    /// Forwards a write once (writes are not retried: the first may have taken effect).
    fn write(&self, req: Write) -> BoxFuture<'_, Result<Written, EdgeError>>;
    /// Whether the link is up now. Answers at once.
    fn is_up(&self) -> bool;
    /// Whether fetches may go ahead: an edge's first invalidation subscription is live
    /// (see [`OriginClient::set_following`]). Answers at once.
    fn is_following(&self) -> bool {
        true
    }
}

/// Link settings, from the edge config.
#[derive(Clone)]
pub struct LinkSettings {
    /// This edge's node id and region, for the `Hello`.
    pub edge_id: String,
    /// Its region.
    pub region: String,
    /// The origin's edge token, if it requires one.
    pub token: Option<String>,
    /// Origin address (a name is resolved at every connect).
    pub addr: crate::config::HostPort,
    /// Resolves `addr` when it is a name.
    pub(crate) resolver: Option<Arc<dyn crate::discovery::Resolve>>,
    /// Local UDP address.
    pub bind: std::net::SocketAddr,
    /// TLS server name.
    pub server_name: String,
    /// Pinned certificate fingerprints.
    pub pins: Vec<pin::Fingerprint>,
    /// Attempt timeout.
    pub fetch_timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Idle timeout of the connection (keep-alives every third of it).
    pub idle_timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// Consecutive failed attempts that open the breaker.
    pub breaker_failures: u32,
    /// Breaker open time.
    pub breaker_open_for: Duration,
}

impl fmt::Debug for LinkSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkSettings")
            .field("edge_id", &self.edge_id)
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl LinkSettings {
    /// The settings an edge config gives.
    pub fn from_config(c: &EdgeConfig) -> Result<Self, EdgeError> {
        Ok(Self {
            edge_id: c.node_id.clone(),
            region: c.region.clone(),
            token: c.origin.token.clone(),
            addr: c.origin.addr.clone(),
            resolver: match c.origin.addr.socket_addr() {
                Some(_) => None,
                None => Some(Arc::new(
                    crate::discovery::DnsResolver::new(&c.discovery)
                        .map_err(|e| EdgeError::Config(format!("origin.addr: {e}")))?,
                )),
            },
            bind: c.origin.bind_addr(),
            server_name: c.origin.server_name.clone(),
            pins: pin::pins(&c.origin)?,
            fetch_timeout: c.timeouts.origin_fetch.get(),
            connect_timeout: c.timeouts.origin_connect.get(),
            idle_timeout: c.timeouts.origin_idle.get(),
            retries: c.retries,
            breaker_failures: c.breaker_failures,
            breaker_open_for: c.timeouts.breaker_open_for.get(),
        })
    }
}

/// The published state of the link.
#[derive(Debug, Clone)]
pub(crate) enum Link {
    /// The first attempt has not finished.
    Connecting,
    /// Connected.
    Up(quinn::Connection),
    /// The last attempt failed or the connection closed, with why.
    Down(String),
}

/// The QUIC client to the origin.
#[derive(Debug)]
pub struct OriginClient {
    endpoint: quinn::Endpoint,
    settings: LinkSettings,
    link: watch::Sender<Link>,
    /// False until the first invalidation subscription is live, in an edge: fetches wait for
    /// it (within the connect timeout), so nothing is cached that an unfollowed invalidation
    /// could have made stale.
    following: watch::Sender<bool>,
    breaker: Breaker,
    codec: FrameCodec,
    next_id: AtomicU64,
}

impl OriginClient {
    /// A client on a UDP socket bound to `settings.bind`. Call [`Self::maintain`] to connect.
    pub fn new(settings: LinkSettings) -> Result<Self, EdgeError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| EdgeError::Transport(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(pin::PinnedCerts::new(
                settings.pins.clone(),
                provider,
            )))
            .with_no_client_auth();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| EdgeError::Transport(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        let mut t = quinn::TransportConfig::default();
        // A client that stops reading a streamed body stalls its QUIC stream, and what the
        // stream holds counts against the whole connection's window: with 8 MiB streams in
        // a 64 MiB connection, 8 stalled clients blocked every fetch of the edge. 2 MiB per
        // stream (several round trips of a fast link) in 256 MiB takes 128 stalled streams.
        t.stream_receive_window((2u32 << 20).into())
            .receive_window((256u32 << 20).into())
            .keep_alive_interval(Some(settings.idle_timeout / 3));
        let idle = quinn::IdleTimeout::try_from(settings.idle_timeout)
            .map_err(|e| EdgeError::Config(format!("origin_idle: {e}")))?;
        t.max_idle_timeout(Some(idle));
        client.transport_config(Arc::new(t));
        let mut endpoint = quinn::Endpoint::client(settings.bind).map_err(|e| EdgeError::Bind {
            addr: settings.bind.to_string(),
            reason: e.to_string(),
        })?;
        endpoint.set_default_client_config(client);
        Ok(Self {
            endpoint,
            breaker: Breaker::new(settings.breaker_failures, settings.breaker_open_for),
            settings,
            link: watch::Sender::new(Link::Connecting),
            following: watch::Sender::new(true),
            codec: FrameCodec::default(),
            next_id: AtomicU64::new(1),
        })
    }

    /// The link's state, as it changes: the invalidation subscription follows it.
    pub(crate) fn link(&self) -> watch::Receiver<Link> {
        self.link.subscribe()
    }

    /// Holds fetches until [`Self::set_following`] (an edge that follows invalidations
    /// calls this before connecting; a bare client fetches at once).
    pub(crate) fn hold_fetches_until_following(&self) {
        self.following.send_replace(false);
    }

    /// The first invalidation subscription is live: fetches may go ahead.
    pub(crate) fn set_following(&self) {
        self.following.send_replace(true);
    }

    /// This edge's id and region, as the origin knows them.
    pub(crate) fn identity(&self) -> (&str, &str) {
        (&self.settings.edge_id, &self.settings.region)
    }

    /// The local UDP address of the QUIC endpoint.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.endpoint.local_addr().ok()
    }

    /// Connects and introduces this edge (`Hello` with its token): the origin serves
    /// nothing on a connection before that.
    async fn connect(&self) -> Result<quinn::Connection, String> {
        let addr = match (self.settings.addr.socket_addr(), &self.settings.resolver) {
            (Some(a), _) => a,
            (None, Some(r)) => crate::discovery::address(&**r, &self.settings.addr)
                .await
                .map_err(|e| e.to_string())?,
            (None, None) => return Err(format!("{}: no resolver", self.settings.addr)),
        };
        let connecting = self
            .endpoint
            .connect(addr, &self.settings.server_name)
            .map_err(|e| e.to_string())?;
        let limit = self.settings.connect_timeout;
        let conn = match tokio::time::timeout(limit, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("no handshake within {limit:?}")),
        };
        match tokio::time::timeout(limit, self.hello(&conn)).await {
            Ok(Ok(())) => Ok(conn),
            Ok(Err(e)) => {
                conn.close(0u32.into(), b"hello refused");
                Err(format!("origin refused this edge: {e}"))
            }
            Err(_) => Err(format!("no answer to Hello within {limit:?}")),
        }
    }

    async fn hello(&self, conn: &quinn::Connection) -> Result<(), String> {
        let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let hello = Message::Hello(Hello {
            edge_id: self.settings.edge_id.clone(),
            region: self.settings.region.clone(),
            token: self.settings.token.clone(),
        });
        write_frame(&mut send, &self.codec, &hello)
            .await
            .map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        match FrameReader::new(recv, self.codec).next().await {
            Ok(Some(Message::Ack(_))) => Ok(()),
            Ok(Some(Message::Error(e))) => Err(e.message),
            Ok(Some(m)) => Err(format!("{} in answer to Hello", m.name())),
            Ok(None) => Err("no answer to Hello".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Keeps the link up until `cancel`: connect, publish, wait for the close, publish
    /// that, connect again (every `retry_every` while the origin does not answer).
    pub async fn maintain(self: Arc<Self>, cancel: CancellationToken, retry_every: Duration) {
        // Failures are warned about when they change (a name that stopped resolving, a
        // refused Hello), not at every retry.
        let mut last_failure: Option<String> = None;
        loop {
            let attempt = tokio::select! {
                () = cancel.cancelled() => return,
                r = self.connect() => r,
            };
            match attempt {
                Ok(conn) => {
                    last_failure = None;
                    self.link.send_replace(Link::Up(conn.clone()));
                    // A completed handshake shows the origin is back: close the breaker
                    // rather than failing requests until its open period runs out.
                    self.breaker.reset();
                    tracing::info!(origin = %self.settings.addr, "origin link up");
                    let why = tokio::select! {
                        () = cancel.cancelled() => return,
                        e = conn.closed() => e,
                    };
                    tracing::warn!(origin = %self.settings.addr, "origin link down: {why}");
                    self.link.send_replace(Link::Down(why.to_string()));
                }
                Err(e) => {
                    if last_failure.as_deref() == Some(e.as_str()) {
                        tracing::debug!(origin = %self.settings.addr, "origin not reachable: {e}");
                    } else {
                        tracing::warn!(origin = %self.settings.addr, "origin not reachable: {e}");
                        last_failure = Some(e.clone());
                    }
                    self.link.send_replace(Link::Down(e));
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(retry_every) => {}
                    }
                }
            }
        }
    }

    /// The connection to use now; waits only while the first attempt (and the first
    /// invalidation subscription) is under way.
    async fn connection(&self) -> Result<quinn::Connection, EdgeError> {
        let mut rx = self.link.subscribe();
        let deadline = tokio::time::Instant::now() + self.settings.connect_timeout;
        let conn = loop {
            match &*rx.borrow_and_update() {
                Link::Up(c) if c.close_reason().is_none() => break c.clone(),
                Link::Up(c) => {
                    let why = c.close_reason().map(|r| r.to_string()).unwrap_or_default();
                    return Err(EdgeError::OriginUnavailable(why));
                }
                Link::Down(why) => return Err(EdgeError::OriginDown(why.clone())),
                Link::Connecting => {}
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(EdgeError::OriginDown("edge shutting down".into())),
                Err(_) => return Err(EdgeError::OriginTimeout(self.settings.connect_timeout)),
            }
        };
        if !*self.following.borrow() {
            let mut following = self.following.subscribe();
            if tokio::time::timeout_at(deadline, following.wait_for(|f| *f))
                .await
                .is_err()
            {
                return Err(EdgeError::OriginTimeout(self.settings.connect_timeout));
            }
        }
        Ok(conn)
    }

    /// Fetches with retries (exponential backoff, full jitter) for retryable failures; each
    /// attempt is bounded by the fetch timeout and counted by the breaker.
    pub async fn fetch(&self, req: &Fetch) -> Result<OriginReply, EdgeError> {
        let mut attempt = 0;
        loop {
            match self
                .attempt(|conn| async move { self.fetch_once(&conn, req).await })
                .await
            {
                Err(e)
                    if e.is_retryable()
                        && attempt < self.settings.retries
                        && (req.method == "GET" || req.method == "HEAD") =>
                {
                    let cap = 50u64 << attempt.min(6);
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=cap))).await;
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    /// A new stream for one request, and the request's id.
    async fn open(
        &self,
        conn: &quinn::Connection,
    ) -> Result<(quinn::SendStream, quinn::RecvStream, u64), EdgeError> {
        let (send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| EdgeError::OriginUnavailable(e.to_string()))?;
        Ok((send, recv, self.next_id.fetch_add(1, Ordering::Relaxed)))
    }

    async fn fetch_once(
        &self,
        conn: &quinn::Connection,
        req: &Fetch,
    ) -> Result<OriginReply, EdgeError> {
        let unavailable = |e: String| EdgeError::OriginUnavailable(e);
        let (mut send, recv, request_id) = self.open(conn).await?;
        let msg = Message::Fetch(FetchRequest {
            request_id,
            key: req.target.clone(),
            if_none_match: req.etag.clone(),
            method: req.method.clone(),
            headers: req.headers.clone(),
            body_length: req.body.len() as u64,
        });
        write_frame(&mut send, &self.codec, &msg)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        self.send_body(&mut send, request_id, &req.body).await?;
        send.finish().map_err(|e| unavailable(e.to_string()))?;
        let boxed: Box<dyn AsyncRead + Send + Unpin> = Box::new(recv);
        let mut reader = FrameReader::new(boxed, self.codec);
        let head = match reader.next().await {
            Ok(Some(Message::ResponseHead(h))) => h,
            Ok(Some(Message::NotModified(nm))) => {
                return Ok(OriginReply::NotModified {
                    headers: nm.headers,
                });
            }
            Ok(Some(Message::Error(e))) => {
                return Err(match e.code {
                    ErrorCode::Unavailable => unavailable(e.message),
                    ErrorCode::UpstreamFailed => EdgeError::UpstreamFailed {
                        status: 502,
                        message: e.message,
                    },
                    ErrorCode::UpstreamTimeout => EdgeError::UpstreamFailed {
                        status: 504,
                        message: e.message,
                    },
                    _ => EdgeError::OriginProtocol(format!("{:?}: {}", e.code, e.message)),
                });
            }
            Ok(Some(m)) => {
                return Err(EdgeError::OriginProtocol(format!(
                    "{} before the response head",
                    m.name()
                )));
            }
            Ok(None) => return Err(unavailable("stream closed before the response head".into())),
            Err(e) => return Err(unavailable(e.to_string())),
        };
        if head.request_id != request_id {
            return Err(EdgeError::OriginProtocol(
                "response for another request".into(),
            ));
        }
        let length = match head.length {
            BodyLength::Known(n) => Some(n),
            BodyLength::Streamed => None,
        };
        let body = BodyStream::new(reader, length);
        if length.is_none_or(|n| n > req.collect_up_to) {
            return Ok(OriginReply::Streaming { head, body });
        }
        let body = body.collect().await.map_err(|e| match e {
            shoal_cache_core::WireError::Body(m) => EdgeError::OriginProtocol(m),
            other => unavailable(other.to_string()),
        })?;
        Ok(OriginReply::Complete { head, body })
    }

    /// Forwards a write: the request head, the body in chunks, then the origin's answer.
    /// Bounded by the fetch timeout; never retried.
    pub async fn write(&self, req: &Write) -> Result<Written, EdgeError> {
        self.attempt(|conn| async move { self.write_once(&conn, req).await })
            .await
    }

    /// One attempt of `op` on the connection: refused while the breaker is open, bounded by
    /// the fetch timeout, and counted by the breaker.
    async fn attempt<T, F, Fut>(&self, op: F) -> Result<T, EdgeError>
    where
        F: FnOnce(quinn::Connection) -> Fut,
        Fut: std::future::Future<Output = Result<T, EdgeError>>,
    {
        self.breaker
            .check(Instant::now())
            .map_err(EdgeError::CircuitOpen)?;
        let conn = self.connection().await?;
        let limit = self.settings.fetch_timeout;
        let r = tokio::time::timeout(limit, op(conn))
            .await
            .unwrap_or(Err(EdgeError::OriginTimeout(limit)));
        self.breaker.record(
            !r.as_ref().is_err_and(EdgeError::is_origin_failure),
            Instant::now(),
        );
        r
    }

    async fn write_once(
        &self,
        conn: &quinn::Connection,
        req: &Write,
    ) -> Result<Written, EdgeError> {
        let unavailable = |e: String| EdgeError::OriginUnavailable(e);
        let (mut send, recv, request_id) = self.open(conn).await?;
        let head = Message::Write(WriteRequest {
            request_id,
            key: req.path.clone(),
            method: req.method,
            content_type: req.content_type.clone(),
            tags: req.tags.clone(),
            length: req.body.len() as u64,
            version: req.version,
        });
        write_frame(&mut send, &self.codec, &head)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        self.send_body(&mut send, request_id, &req.body).await?;
        send.finish().map_err(|e| unavailable(e.to_string()))?;
        match FrameReader::new(recv, self.codec).next().await {
            Ok(Some(Message::Written(w))) if w.request_id == request_id => Ok(w),
            Ok(Some(Message::Error(e))) => Err(EdgeError::OriginProtocol(format!(
                "{:?}: {}",
                e.code, e.message
            ))),
            Ok(Some(m)) => Err(EdgeError::OriginProtocol(format!(
                "{} in answer to a write",
                m.name()
            ))),
            Ok(None) => Err(unavailable(
                "stream closed before the write's answer".into(),
            )),
            Err(e) => Err(unavailable(e.to_string())),
        }
    }

    /// A request body after its head, in chunks of at most [`MAX_CHUNK`].
    async fn send_body(
        &self,
        send: &mut quinn::SendStream,
        request_id: u64,
        body: &Bytes,
    ) -> Result<(), EdgeError> {
        let mut offset = 0;
        while offset < body.len() {
            let end = (offset + MAX_CHUNK).min(body.len());
            let chunk = Message::BodyChunk(BodyChunk {
                request_id,
                offset: offset as u64,
                data: body.slice(offset..end),
                last: end == body.len(),
            });
            write_frame(send, &self.codec, &chunk)
                .await
                .map_err(|e| EdgeError::OriginUnavailable(e.to_string()))?;
            offset = end;
        }
        Ok(())
    }

    /// Closes the connection and the endpoint.
    pub fn close(&self) {
        if let Link::Up(c) = &*self.link.borrow() {
            c.close(0u32.into(), b"edge shutting down");
        }
        self.endpoint.close(0u32.into(), b"edge shutting down");
    }
}

impl Origin for OriginClient {
    fn fetch(&self, req: Fetch) -> BoxFuture<'_, Result<OriginReply, EdgeError>> {
        async move { OriginClient::fetch(self, &req).await }.boxed()
    }

    fn write(&self, req: Write) -> BoxFuture<'_, Result<Written, EdgeError>> {
        async move { OriginClient::write(self, &req).await }.boxed()
    }

    fn is_up(&self) -> bool {
        matches!(&*self.link.borrow(), Link::Up(c) if c.close_reason().is_none())
    }

    fn is_following(&self) -> bool {
        *self.following.borrow()
    }
}

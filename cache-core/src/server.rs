//! The HTTP accept loop every Shoal listener uses (feature `server`): HTTP/1.1 and h2c on one
//! port, with the limits a server on the open internet needs.
//!
//! - **Header-read timeout.** A connection must deliver its first bytes, and every request
//!   head, within `header_read_timeout`; hyper starts that timer when the connection opens
//!   and again when a keep-alive connection finishes a response, so it is also the idle
//!   keep-alive timeout for HTTP/1.1. (hyper-util's protocol detection has no timer, so the
//!   first bytes are awaited here.) A request line that never ends, a half-sent head, an
//!   idle connection: all are closed after it.
//! - **HTTP/2** connections are pinged every `header_read_timeout` and closed when a ping
//!   goes unanswered for as long.
//! - **Send timeout.** A write that makes no progress for `send_timeout` (the client stopped
//!   reading and the socket's send buffer is full) ends the connection, as nginx's
//!   `send_timeout` does. The timer runs only while a write waits, so a slow but steady
//!   download, or a response waiting on the origin, is never cut. What a stalled connection
//!   holds is bounded anyway (hyper stops pulling a body while ~400 KiB wait in its write
//!   buffer, and cached bodies are shared, not copied); the timeout bounds for how long.
//! - **Connection caps.** At most `max_connections` at once, and at most
//!   `max_connections_per_client` from one IP address; a connection over a cap is closed at
//!   accept, before any byte is read.
//! - **Drain.** When `shutdown` fires, the listener closes and open connections finish their
//!   in-flight requests (the caller bounds how long it waits).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::size::HumanDuration;

/// The token of a request's one `Authorization: Bearer` header (scheme matched
/// case-insensitively, RFC 9110 §11.1), or why there is none. Every listener that takes a
/// token (the origin's admin API, an edge's writes) reads it here.
pub fn bearer(headers: &axum::http::HeaderMap) -> Result<&str, &'static str> {
    let mut all = headers.get_all(axum::http::header::AUTHORIZATION).iter();
    let (Some(v), None) = (all.next(), all.next()) else {
        return Err("exactly one Authorization header is required");
    };
    let v = v
        .to_str()
        .map_err(|_| "Authorization is not visible ASCII")?;
    let (scheme, token) = v.trim().split_once([' ', '\t']).ok_or("no bearer token")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("the scheme must be Bearer");
    }
    Ok(token.trim())
}

/// The surrogate keys a request or response names in its `Surrogate-Key` headers.
pub fn surrogate_keys(headers: &axum::http::HeaderMap) -> Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    for v in headers.get_all("surrogate-key") {
        let v = v
            .to_str()
            .map_err(|_| "Surrogate-Key is not visible ASCII")?;
        out.extend(v.split_ascii_whitespace().map(str::to_string));
    }
    Ok(out)
}

/// The peer address of the connection a request came on, as a request extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// Per-listener limits (the `[limits]` section of the edge and origin configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Bound on the wait for a connection's first bytes, for each request head, and for
    /// the next request on an idle keep-alive connection. Default 10 s.
    pub header_read_timeout: HumanDuration,
    /// Longest a write may wait for the client to read before the connection is closed.
    /// Default 60 s (nginx's `send_timeout`).
    pub send_timeout: HumanDuration,
    /// Connections open at once. Default 10,000.
    pub max_connections: usize,
    /// Connections open at once from one client IP address. Default: the same as
    /// `max_connections` (no separate cap): behind a load balancer every connection shares
    /// its address. Set it where clients connect directly.
    pub max_connections_per_client: usize,
}

impl Limits {
    /// Checks the values, naming the first bad one.
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        let bad = |field, reason: &str| {
            Err(crate::ConfigError::Invalid {
                field,
                reason: reason.into(),
            })
        };
        if self.header_read_timeout.get() < Duration::from_millis(100) {
            return bad("limits.header_read_timeout", "must be at least 100ms");
        }
        if self.send_timeout.get() < Duration::from_millis(100) {
            return bad("limits.send_timeout", "must be at least 100ms");
        }
        if self.max_connections == 0 || self.max_connections_per_client == 0 {
            return bad(
                "limits.max_connections",
                "connection caps must be at least 1",
            );
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: HumanDuration::secs(10),
            send_timeout: HumanDuration::secs(60),
            max_connections: 10_000,
            max_connections_per_client: 10_000,
        }
    }
}

/// Open connections per client address; a slot gives its count back when dropped.
#[derive(Debug, Default)]
struct PerClient(Mutex<HashMap<IpAddr, usize>>);

struct Slot(Arc<PerClient>, IpAddr);

impl PerClient {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot(self.clone(), ip))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits until the connection has sent enough to pick a protocol (one byte that is not the
/// h2 preface, or the whole preface); `false` if it closes or `limit` passes first.
async fn first_bytes(stream: &TcpStream, limit: Duration) -> bool {
    let wait = async {
        let mut buf = [0u8; 24];
        loop {
            let n = stream.peek(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return false;
            }
            if n == buf.len() || buf[..n] != H2_PREFACE[..n] {
                return true;
            }
            // A partial preface: peek returns at once while no more has come.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(limit, wait).await.unwrap_or(false)
}

/// Serves `app` on `listener` with `limits` until `shutdown`, then waits for open
/// connections to finish their in-flight requests.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let header_timeout = limits.header_read_timeout.get();
    let send_timeout = limits.send_timeout.get();
    let total = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let per_client = Arc::new(PerClient::default());
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(header_timeout)
        .keep_alive_timeout(header_timeout);
    let builder = Arc::new(builder);
    // Connections live in a set this future owns: aborting it (an edge killed in a fault
    // test, as a crash would) ends every connection too, not only the accept loop.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                debug!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = total.clone().try_acquire_owned() else {
            debug!(%peer, "connection refused: {} open", limits.max_connections);
            continue;
        };
        let Some(slot) = per_client.take(peer.ip(), limits.max_connections_per_client) else {
            debug!(%peer, "connection refused: per-client limit");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (builder, watcher, app) = (builder.clone(), graceful.watcher(), app.clone());
        connections.spawn(async move {
            let _held = (permit, slot);
            if !first_bytes(&stream, header_timeout).await {
                return;
            }
            // The router, with the peer address as a request extension.
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ClientAddr(peer));
                    tower_service::Service::call(&mut app.clone(), req)
                },
            );
            let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
            stream.set_write_timeout(Some(send_timeout));
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(Box::pin(stream)), svc);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                debug!(%peer, "connection: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

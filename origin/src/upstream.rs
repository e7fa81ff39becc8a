//! Pull-through to an upstream HTTP server: on a fetch the origin holds nothing for, and on
//! every request an edge passes through (methods other than GET and HEAD), the origin asks
//! the upstream and streams its answer to the edge over QUIC.
//!
//! The origin is a **shield, not a cache**: it stores nothing it pulls. The edges' caches
//! (one owner per key and region, coalesced fills) already make one upstream request per
//! region per object lifetime; a second cache here would need its own freshness, purges and
//! memory budget for a saving of at most one request per region. What the origin adds is
//! one place that holds the upstream's connections (pooled, HTTP/1.1 keep-alive or h2c) and
//! its timeouts, so edges in every region stay on QUIC and never reach the upstream.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use shoal_cache_core::io::write_frame;
use shoal_cache_core::wire::{
    BodyLength, ErrorCode, FetchRequest, FrameCodec, MAX_CHUNK, Message, NotModified, ResponseHead,
};
use tracing::debug;

use crate::config::UpstreamConfig;
use crate::server::send_chunk;

/// Bytes of a body of unknown length read before its head is sent on (see `forward`).
const PREREAD: usize = 1 << 20;
use crate::error::OriginError;

/// The upstream server and the pooled client that reaches it.
#[derive(Debug)]
pub(crate) struct Upstream {
    /// `http://host:port`, no path.
    authority: http::uri::Authority,
    /// Prepended to every target (a base path in the upstream URL), without a trailing `/`.
    base_path: String,
    client: Client<HttpConnector, Full<Bytes>>,
    /// From sending the request to the response head.
    timeout: Duration,
    /// Between two pieces of a response body.
    idle: Duration,
}

/// What the upstream answered, once it has been sent on.
#[derive(Debug)]
pub(crate) struct Answered {
    /// Body bytes sent on.
    pub(crate) bytes: u64,
    /// For a successful unsafe request: the paths it may have changed (RFC 9111 §4.4),
    /// for the origin to invalidate at every edge.
    pub(crate) changed: Vec<String>,
}

/// Why an upstream request failed, as the wire error the edge gets.
#[derive(Debug)]
pub(crate) struct Failure {
    /// `UpstreamFailed`, `UpstreamTimeout`, or `BadRequest` for a request it cannot carry.
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl Upstream {
    /// The client for `config.url`; checks the URL.
    pub(crate) fn new(config: &UpstreamConfig) -> Result<Self, OriginError> {
        let bad = |why: &str| OriginError::Config(format!("upstream {:?}: {why}", config.url));
        let uri: http::Uri = config.url.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// is supported (h2c with http2 = true)"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| bad("no host"))?;
        if uri.query().is_some() {
            return Err(bad("must not have a query"));
        }
        let base_path = uri.path().trim_end_matches('/').to_string();
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout.get()));
        connector.set_nodelay(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(config.max_idle_connections)
            .http2_only(config.http2);
        Ok(Self {
            authority,
            base_path,
            client: builder.build(connector),
            timeout: config.timeout.get(),
            idle: config.timeout.get(),
        })
    }

    /// Asks the upstream for `f` (with `body`, for a request that carries one) and streams
    /// the answer: a [`Message::NotModified`] for a cache revalidation the upstream
    /// confirmed, else the response head and body chunks. Errors before the head are
    /// returned as a [`Failure`] for the caller to answer with; an error after it breaks
    /// the stream (`Err(OriginError)`), so the edge never stores a short body.
    pub(crate) async fn forward(
        &self,
        send: &mut quinn::SendStream,
        codec: &FrameCodec,
        f: &FetchRequest,
        body: Bytes,
    ) -> Result<Result<Answered, Failure>, OriginError> {
        let req = match self.request(f, body) {
            Ok(r) => r,
            Err(message) => {
                return Ok(Err(Failure {
                    code: ErrorCode::BadRequest,
                    message,
                }));
            }
        };
        let resp = match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                // The connector's message alone ("tcp connect error") hides the cause.
                let mut why = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    why = format!("{why}: {s}");
                    src = s.source();
                }
                return Ok(Err(Failure {
                    code: ErrorCode::UpstreamFailed,
                    message: format!("upstream {} failed: {why}", self.authority),
                }));
            }
            Err(_) => {
                return Ok(Err(Failure {
                    code: ErrorCode::UpstreamTimeout,
                    message: format!(
                        "upstream {} sent no response head within {:?}",
                        self.authority, self.timeout
                    ),
                }));
            }
        };
        let (parts, mut incoming) = resp.into_parts();
        // Values that are not visible ASCII cannot travel as strings; they are left out.
        let fields: Vec<(&str, &str)> = parts
            .headers
            .iter()
            .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
            .collect();
        let headers = shoal_cache_core::hop::end_to_end(fields.iter().copied());
        let status = parts.status.as_u16();
        let safe = matches!(f.method.as_str(), "GET" | "HEAD" | "OPTIONS" | "TRACE");
        let changed = if !safe && (200..400).contains(&status) {
            let host = f
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("host"))
                .map_or(self.authority.as_str(), |(_, v)| v.as_str());
            let path = f.key.split('?').next().unwrap_or("/");
            shoal_cache_core::canonical_path(path)
                .map(|p| shoal_cache_core::invalidation::changed_by_unsafe(&p, host, &headers))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let conditional = f.if_none_match.is_some()
            || f.headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("if-modified-since"));
        if status == 304 && f.method == "GET" && conditional {
            let etag = headers
                .iter()
                .find(|(n, _)| n == "etag")
                .map(|(_, v)| v.clone())
                .or_else(|| f.if_none_match.clone())
                .unwrap_or_default();
            let nm = Message::NotModified(NotModified {
                request_id: f.request_id,
                etag,
                headers,
            });
            write_frame(send, codec, &nm).await?;
            return Ok(Ok(Answered {
                bytes: 0,
                changed: Vec::new(),
            }));
        }
        // A body the message cannot have is empty whatever Content-Length says.
        let bodiless = f.method == "HEAD" || status == 204 || status == 304 || status < 200;
        let length = match parts.headers.get(http::header::CONTENT_LENGTH) {
            _ if bodiless => BodyLength::Known(0),
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .map_or(BodyLength::Streamed, BodyLength::Known),
            None => BodyLength::Streamed,
        };
        // A body of unknown length (chunked) is read ahead up to `PREREAD`: most end
        // there, and then the edge learns their length and can store them.
        // Frames are kept as hyper handed them over and sent on as slices: no copy.
        let mut early: VecDeque<Bytes> = VecDeque::new();
        let mut ended = bodiless;
        let mut length = length;
        if length == BodyLength::Streamed && !ended {
            let mut early_len = 0;
            while early_len <= PREREAD {
                match self.next_data(&mut incoming).await? {
                    Some(d) => {
                        early_len += d.len();
                        early.push_back(d);
                    }
                    None => {
                        ended = true;
                        length = BodyLength::Known(early_len as u64);
                        break;
                    }
                }
            }
        }
        let head = ResponseHead {
            request_id: f.request_id,
            status,
            headers,
            length,
            version: 0,
        };
        write_frame(send, codec, &Message::ResponseHead(head)).await?;
        let mut sent = 0u64;
        // One chunk is held back until the next arrives, so the last one can say so.
        let mut held: Option<Bytes> = None;
        loop {
            let data = match early.pop_front() {
                Some(d) => d,
                None if ended => break,
                None => match self.next_data(&mut incoming).await? {
                    Some(d) => d,
                    None => break,
                },
            };
            let mut at = 0;
            while at < data.len() {
                let end = (at + MAX_CHUNK).min(data.len());
                if let Some(prev) = held.replace(data.slice(at..end)) {
                    sent = send_chunk(send, codec, f.request_id, sent, prev, false).await?;
                }
                at = end;
            }
        }
        let last = held.unwrap_or_default();
        sent = send_chunk(send, codec, f.request_id, sent, last, true).await?;
        if let BodyLength::Known(n) = length
            && n != sent
        {
            return Err(OriginError::Upstream(format!(
                "body of {sent} bytes where Content-Length said {n}"
            )));
        }
        debug!(status, bytes = sent, "upstream answered {}", f.key);
        Ok(Ok(Answered {
            bytes: sent,
            changed,
        }))
    }

    /// The next piece of a response body; `None` at its end.
    async fn next_data(
        &self,
        incoming: &mut hyper::body::Incoming,
    ) -> Result<Option<Bytes>, OriginError> {
        loop {
            match tokio::time::timeout(self.idle, incoming.frame()).await {
                Ok(None) => return Ok(None),
                Ok(Some(Ok(frame))) => {
                    // Trailers are not carried.
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
                Ok(Some(Err(e))) => return Err(OriginError::Upstream(format!("body: {e}"))),
                Err(_) => {
                    return Err(OriginError::Upstream(format!(
                        "body stalled for {:?}",
                        self.idle
                    )));
                }
            }
        }
    }

    /// The HTTP request for `f`: its method, the target under the base path, its headers
    /// (the client's `Host` kept, so virtual hosts upstream see the site's name).
    fn request(&self, f: &FetchRequest, body: Bytes) -> Result<http::Request<Full<Bytes>>, String> {
        if !f.key.starts_with('/') {
            return Err(format!("target {:?} does not start with '/'", f.key));
        }
        let method = http::Method::from_bytes(f.method.as_bytes())
            .map_err(|_| format!("bad method {:?}", f.method))?;
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(format!("{}{}", self.base_path, f.key))
            .build()
            .map_err(|e| format!("target {:?}: {e}", f.key))?;
        let mut b = http::Request::builder().method(method).uri(uri);
        let mut has_host = false;
        for (n, v) in &f.headers {
            if shoal_cache_core::hop::is_hop_by_hop(n) {
                continue;
            }
            has_host |= n.eq_ignore_ascii_case("host");
            b = b.header(n.as_str(), v.as_str());
        }
        if let Some(etag) = &f.if_none_match
            && !f
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("if-none-match"))
        {
            b = b.header(http::header::IF_NONE_MATCH, etag.as_str());
        }
        if !has_host {
            b = b.header(http::header::HOST, self.authority.as_str());
        }
        b.body(Full::new(body))
            .map_err(|e| format!("request for {:?}: {e}", f.key))
    }
}

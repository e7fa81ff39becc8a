//! The edge's one error channel. Every phase returns [`EdgeError`]; it knows its status,
//! its `Cache-Status` detail and whether a retry may help, and renders itself into the
//! response a client gets ([`IntoResponse`]).

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Everything that can go wrong at the edge.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EdgeError {
    /// Invalid configuration.
    #[error("config: {0}")]
    Config(String),
    /// A client request is malformed or unsafe.
    #[error("{0}")]
    BadRequest(String),
    /// A method the edge does not serve.
    #[error("method {0} not allowed")]
    MethodNotAllowed(String),
    /// The request target is longer than the limit.
    #[error("URI longer than {0} bytes")]
    UriTooLong(usize),
    /// Too many or too large request headers.
    #[error("request headers exceed {fields} fields or {bytes} bytes")]
    HeadersTooLarge {
        /// Field limit.
        fields: usize,
        /// Byte limit.
        bytes: usize,
    },
    /// The origin did not answer in time.
    #[error("origin timed out after {0:?}")]
    OriginTimeout(Duration),
    /// The origin could not be reached or the stream broke.
    #[error("origin unreachable: {0}")]
    OriginUnavailable(String),
    /// The link to the origin is known to be down (its last connection attempt failed):
    /// fail at once instead of waiting for another connect timeout.
    #[error("origin link down ({0}); reconnecting in the background")]
    OriginDown(String),
    /// The circuit breaker is open: recent attempts failed, so this one is not made.
    #[error("origin circuit open after repeated failures; retrying in {0:?}")]
    CircuitOpen(Duration),
    /// The origin's upstream HTTP server failed (unreachable, broke off, or silent past
    /// the origin's timeout). Not the origin link's fault: neither retried nor counted by
    /// the breaker, but a stale copy may stand in for it.
    #[error("upstream failed: {message}")]
    UpstreamFailed {
        /// 502, or 504 for a timeout.
        status: u16,
        /// What the origin said.
        message: String,
    },
    /// The origin answered something that breaks the protocol.
    #[error("origin protocol error: {0}")]
    OriginProtocol(String),
    /// A write without the edge's write token (or with a wrong one).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// A write body over the object size limit.
    #[error("body exceeds the {0}-byte limit")]
    PayloadTooLarge(u64),
    /// The origin refused a forwarded write (bad path, missing object, too large).
    #[error("origin refused the write ({status}): {message}")]
    OriginRefused {
        /// The origin's status.
        status: u16,
        /// Its reason.
        message: String,
    },
    /// A `consistent` path on an edge without a lease, and the origin cannot be reached to
    /// revalidate: refused rather than risk a stale read.
    #[error("consistent path: no lease and the origin cannot confirm the copy ({0})")]
    NoLease(String),
    /// The request lacks what this path requires (a valid signed URL).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// This client sent more than its rate allows.
    #[error("rate limit exceeded; retry in {0:?}")]
    RateLimited(Duration),
    /// The edge is at a configured limit (requests in flight, origin fills queued) and
    /// sheds this request at once rather than let latency grow for everyone.
    #[error("overloaded: {0}; retry shortly")]
    Overloaded(&'static str),
    /// Forwarding to the owner edge failed (the caller tries the next node).
    #[error("peer {peer}: {reason}")]
    Peer {
        /// The peer's id.
        peer: String,
        /// What failed.
        reason: String,
    },
    /// TLS/QUIC setup failed.
    #[error("transport setup: {0}")]
    Transport(String),
    /// Binding a listener failed.
    #[error("binding {addr}: {reason}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
}

impl EdgeError {
    /// Whether trying the same fetch again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::OriginTimeout(_) | Self::OriginUnavailable(_))
    }

    /// Whether this is the origin's failure (rather than the client's or ours): stale
    /// content may stand in for it.
    pub fn is_origin_failure(&self) -> bool {
        matches!(
            self,
            Self::OriginTimeout(_)
                | Self::OriginUnavailable(_)
                | Self::OriginDown(_)
                | Self::CircuitOpen(_)
                | Self::OriginProtocol(_)
        )
    }

    /// Whether a stale copy inside its stale-if-error window may answer instead.
    pub fn may_serve_stale(&self) -> bool {
        self.is_origin_failure()
            || matches!(self, Self::Overloaded(_) | Self::UpstreamFailed { .. })
    }

    /// How long a client should wait before retrying, where that is known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited(d) => Some(*d),
            Self::Overloaded(_) | Self::CircuitOpen(_) | Self::NoLease(_) => {
                Some(Duration::from_secs(1))
            }
            _ => None,
        }
    }

    /// The status a client gets for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::OriginRefused { status, .. } | Self::UpstreamFailed { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded(_) | Self::NoLease(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::OriginTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::OriginUnavailable(_)
            | Self::OriginDown(_)
            | Self::CircuitOpen(_)
            | Self::OriginProtocol(_)
            | Self::Peer { .. } => StatusCode::BAD_GATEWAY,
            Self::Config(_) | Self::Transport(_) | Self::Bind { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// Short stable name, for the `Cache-Status` detail, metric labels and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad-request",
            Self::MethodNotAllowed(_) => "method-not-allowed",
            Self::UriTooLong(_) => "uri-too-long",
            Self::HeadersTooLarge { .. } => "headers-too-large",
            Self::Forbidden(_) => "forbidden",
            Self::Unauthorized(_) => "unauthorized",
            Self::PayloadTooLarge(_) => "payload-too-large",
            Self::OriginRefused { .. } => "origin-refused",
            Self::UpstreamFailed { .. } => "upstream-failed",
            Self::RateLimited(_) => "rate-limited",
            Self::Overloaded(_) => "overloaded",
            Self::NoLease(_) => "no-lease",
            Self::OriginTimeout(_) => "origin-timeout",
            Self::OriginUnavailable(_) => "origin-unreachable",
            Self::OriginDown(_) => "origin-down",
            Self::CircuitOpen(_) => "circuit-open",
            Self::OriginProtocol(_) => "origin-protocol",
            Self::Peer { .. } => "peer",
            Self::Config(_) | Self::Transport(_) | Self::Bind { .. } => "internal",
        }
    }

    /// The `Cache-Status` member (RFC 9211): origin failures were forwarded as misses;
    /// rejected requests never reached the cache.
    fn cache_status(&self) -> String {
        if self.is_origin_failure() || matches!(self, Self::UpstreamFailed { .. }) {
            format!("shoal; fwd=miss; detail={}", self.as_str())
        } else {
            format!("shoal; detail={}", self.as_str())
        }
    }
}

impl IntoResponse for EdgeError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = if status == StatusCode::INTERNAL_SERVER_ERROR {
            "internal error\n".to_string()
        } else {
            format!("{self}\n")
        };
        let mut r = (
            status,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&self.cache_status()) {
            r.headers_mut().insert("cache-status", v);
        }
        if let Some(d) = self.retry_after() {
            // Whole seconds, rounded up: never 0 for a wait that is not over.
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if matches!(self, Self::Unauthorized(_)) {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if matches!(self, Self::MethodNotAllowed(_)) {
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_render_with_status_detail_and_allow() {
        let cases = [
            (
                EdgeError::MethodNotAllowed("POST".into()),
                405,
                "shoal; detail=method-not-allowed",
            ),
            (
                EdgeError::UriTooLong(8192),
                414,
                "shoal; detail=uri-too-long",
            ),
            (
                EdgeError::OriginDown("refused".into()),
                502,
                "shoal; fwd=miss; detail=origin-down",
            ),
            (
                EdgeError::OriginTimeout(Duration::from_secs(1)),
                504,
                "shoal; fwd=miss; detail=origin-timeout",
            ),
        ];
        for (e, status, cs) in cases {
            let r = e.clone().into_response();
            assert_eq!(r.status().as_u16(), status, "{e}");
            assert_eq!(r.headers()["cache-status"], cs);
            assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        }
        let r = EdgeError::MethodNotAllowed("POST".into()).into_response();
        assert_eq!(r.headers()[header::ALLOW], "GET, HEAD");
        assert!(!EdgeError::OriginDown(String::new()).is_retryable());
    }
}

//! The edge's errors, classified by blame and retryability so the request path can choose
//! between a 4xx, a retry, a fallback, or a 502/504 that says what failed.

use axum::http::StatusCode;
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
    /// The origin did not answer in time.
    #[error("origin timed out after {0:?}")]
    OriginTimeout(std::time::Duration),
    /// The origin could not be reached or the stream broke.
    #[error("origin unreachable: {0}")]
    OriginUnavailable(String),
    /// The circuit breaker is open: recent fetches failed, so this one is not attempted.
    #[error("origin circuit open after repeated failures; retrying in {0:?}")]
    CircuitOpen(std::time::Duration),
    /// The origin answered something that breaks the protocol.
    #[error("origin protocol error: {0}")]
    OriginProtocol(String),
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

    /// The status a client gets for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::OriginTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::OriginUnavailable(_) | Self::CircuitOpen(_) | Self::OriginProtocol(_) => {
                StatusCode::BAD_GATEWAY
            }
            Self::Config(_) | Self::Transport(_) | Self::Bind { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
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
        (
            status,
            [
                (
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; charset=utf-8",
                ),
                (axum::http::header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response()
    }
}

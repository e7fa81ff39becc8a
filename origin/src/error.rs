//! The origin's errors.

/// Everything that can go wrong at the origin.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// A request path is unsafe or malformed (traversal, encoded separators, NUL, …).
    #[error("bad path {path:?}: {reason}")]
    BadPath {
        /// The path as received.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An object's surrogate keys are over the limits.
    #[error("{0}")]
    BadTags(String),
    /// A `write-back` flush named a version older than (or as old as) the one held.
    #[error("version {version} of {path} is superseded by version {current}")]
    Superseded {
        /// The object's path.
        path: String,
        /// The version the write named.
        version: u64,
        /// The version held.
        current: u64,
    },
    /// No object at this path.
    #[error("no object at {0}")]
    NotFound(String),
    /// Reading the content directory failed.
    #[error("reading {path}: {source}")]
    Io {
        /// File involved.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Certificate generation or loading failed.
    #[error("certificate: {0}")]
    Cert(String),
    /// TLS or QUIC setup failed.
    #[error("QUIC/TLS setup: {0}")]
    Transport(String),
    /// A wire frame was malformed or the stream broke.
    #[error("wire: {0}")]
    Wire(#[from] shoal_cache_core::WireError),
    /// A configuration value is invalid.
    #[error("config: {0}")]
    Config(String),
    /// The upstream HTTP server's answer broke after its head was sent on.
    #[error("upstream: {0}")]
    Upstream(String),
    /// An edge connected without the edge token (or with a wrong one).
    #[error("edge {0:?} did not present the edge token")]
    Unauthorized(String),
}

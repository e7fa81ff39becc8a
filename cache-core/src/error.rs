//! Error types of the cache core, one per concern, gathered in [`enum@Error`].

/// Any error the cache core reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A wire frame could not be encoded or decoded.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The hash ring was asked something it cannot answer.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// A configuration value is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// A CMCD value that cannot be read ([`crate::cmcd`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmcdError {
    /// Not a structured-field dictionary (RFC 9651).
    #[error("CMCD is not a structured-field dictionary: {0}")]
    Syntax(String),
    /// A key Shoal reads has a value of the wrong type.
    #[error("CMCD key {0:?} has a value of the wrong type")]
    Value(String),
}

/// Errors of the wire codec ([`crate::wire`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not a whole frame yet: read at least `needed` more bytes and try again.
    /// The only variant that does not mean the stream is broken.
    #[error("incomplete frame: {needed} more bytes needed")]
    Incomplete {
        /// Bytes still missing for the header or the frame.
        needed: usize,
    },
    /// The frame does not start with the Shoal magic bytes.
    #[error("bad frame magic {0:02x?}: not a Shoal frame")]
    BadMagic([u8; 2]),
    /// The peer speaks a protocol version this build does not.
    #[error("unsupported protocol version {got} (this build speaks {supported})")]
    UnsupportedVersion {
        /// Version in the frame.
        got: u8,
        /// Version this build speaks.
        supported: u8,
    },
    /// The frame header announces a body larger than the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// Announced body length.
        len: u64,
        /// Configured maximum.
        max: usize,
    },
    /// Reserved header flags were set.
    #[error("reserved frame flags {0:#04x} are set")]
    BadFlags(u8),
    /// The body is not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The message could not be encoded (for example it exceeds the frame limit).
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({0} bytes buffered)")]
    Truncated(usize),
    /// Reading or writing the stream failed.
    #[error("stream I/O: {0}")]
    Io(String),
    /// A body arrived out of order, past its announced length, short of it, or
    /// interleaved with another message.
    #[error("bad body: {0}")]
    Body(String),
}

/// Errors of the hash ring ([`crate::ring`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The ring has no nodes, so no key has an owner.
    #[error("the ring has no nodes")]
    Empty,
    /// A node with this id is already on the ring.
    #[error("node {0:?} is already on the ring")]
    DuplicateNode(String),
    /// No node with this id is on the ring.
    #[error("node {0:?} is not on the ring")]
    UnknownNode(String),
    /// Virtual nodes per node must be at least one.
    #[error("virtual nodes per node must be at least 1")]
    ZeroVnodes,
}

/// Invalid configuration values, each naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A size such as `64MiB` could not be parsed.
    #[error("invalid size {input:?}: {reason}")]
    Size {
        /// What was given.
        input: String,
        /// Why it is rejected.
        reason: String,
    },
    /// An eviction policy name is unknown.
    #[error("unknown eviction policy {0:?} (expected lru, tinylfu or s3fifo)")]
    Policy(String),
    /// A value is out of its allowed range.
    #[error("{field}: {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// Why it is rejected.
        reason: String,
    },
}

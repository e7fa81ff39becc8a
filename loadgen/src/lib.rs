//! # Shoal loadgen
//!
//! Load and replay tools, and the library behind the `shoal` binary's tool subcommands.
//!
//! # Layout
//!
//! - [`trace`]: reads request traces (`timestamp,object_id,size`, gzip or plain).
//! - [`hitrate`]: replays a trace through the real [`shoal_cache_core::Store`] under every
//!   policy, plus the FIFO and Belady references, and reports object and byte hit ratios.
//!
//! - [`cluster`]: an in-process origin and regions of edges on loopback.
//! - [`relay`]: a UDP relay that delays or black-holes edge ↔ origin QUIC traffic.
//! - [`demo`]: the main job: the cluster, every object fetched through every region twice,
//!   a per-region summary.
//!
//! The open-loop load generator and spikes arrive with a later issue.

pub mod cluster;
pub mod demo;
pub mod hitrate;
pub mod relay;
pub mod trace;

/// Errors of the loadgen library.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// A trace file could not be read.
    #[error("cannot read trace {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A trace line is malformed.
    #[error("{path}:{line}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The trace has no requests.
    #[error("trace {0} has no requests")]
    EmptyTrace(String),
    /// A capacity argument is malformed or unusable.
    #[error("invalid capacity {input:?}: {reason}")]
    Capacity {
        /// What was given.
        input: String,
        /// Why it is rejected.
        reason: String,
    },
    /// The cache core rejected a setting.
    #[error(transparent)]
    Config(#[from] shoal_cache_core::ConfigError),
    /// The in-process cluster could not start or stop.
    #[error("cluster: {0}")]
    Cluster(String),
    /// The async runtime for the replay could not start.
    #[error("cannot start the replay runtime: {0}")]
    Runtime(std::io::Error),
}

//! # Shoal loadgen
//!
//! The tools around the product, grouped by who uses them, and the library behind the
//! `shoal` binary's tool subcommands.
//!
//! # Layout
//!
//! - [`harness`]: an in-process origin and regions of edges on loopback, and a UDP relay
//!   for delay and partitions. The demo and the end-to-end tests share it.
//! - [`abr`]: `shoal abr`, every ABR rule over real throughput traces, with QoE.
//! - [`replay`]: trace reading and `shoal hitrate`, the policy replay.
//! - [`demo`]: the main job: the cluster, every object fetched through every region twice,
//!   a per-region summary.
//!
//! The open-loop load generator (`load/`) arrives with its own issue; this crate holds no
//! placeholder for it.

pub mod abr;
pub mod audience;
pub mod cap;
pub mod demo;
pub mod front;
pub mod harness;
pub mod load;
pub mod overload;
pub mod replay;

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
    /// A load plan is malformed or cannot run.
    #[error("load plan: {0}")]
    Plan(String),
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
    /// An origin of the cluster could not start.
    #[error("origin: {0}")]
    Origin(#[from] shoal_origin::OriginError),
    /// An edge of the cluster could not start.
    #[error("edge: {0}")]
    Edge(#[from] shoal_edge::EdgeError),
    /// A region client could not be built.
    #[error("client: {0}")]
    Client(#[from] shoal_client::ClientError),
    /// A socket or a temporary file of the harness failed.
    #[error("harness I/O: {0}")]
    Harness(#[source] std::io::Error),
    /// The cluster's edges did not all become ready in time.
    #[error("{not_ready} edge(s) not ready after {waited:?}")]
    NotReady {
        /// Edges still not ready.
        not_ready: usize,
        /// How long it waited.
        waited: std::time::Duration,
    },
    /// A latency histogram could not be built or recorded into.
    #[error("histogram: {0}")]
    Histogram(String),
    /// A task of the run panicked or was cancelled.
    #[error("task failed: {0}")]
    Task(String),
    /// The region's ring named no running edge as the owner of a key.
    #[error("no edge of the region owns {0}")]
    NoOwner(String),
    /// The step needs the cluster's origin, and it is stopped.
    #[error("the cluster's origin is stopped")]
    OriginStopped,
    /// The async runtime for the replay could not start.
    #[error("cannot start the replay runtime: {0}")]
    Runtime(std::io::Error),
    /// An ABR trace or setting is invalid.
    #[error(transparent)]
    Abr(#[from] shoal_client::abr::AbrError),
}

/// A latency histogram in microseconds (1 µs to 60 s, 3 significant digits).
pub(crate) fn histogram() -> Result<hdrhistogram::Histogram<u64>, LoadgenError> {
    hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .map_err(|e| LoadgenError::Histogram(e.to_string()))
}

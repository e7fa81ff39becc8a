//! # Shoal cache core
//!
//! The sans-IO heart of Shoal: no sockets, no spawned tasks. Everything an edge and the
//! origin must agree on, and everything that decides what is cached and for how long.
//!
//! # Layout
//!
//! - [`store`]: the byte-bounded [`Store`] with selectable eviction ([`Policy`]: `lru` and
//!   `tinylfu` on moka, `s3fifo` in [`s3fifo`](crate::store) terms) and coalesced fills.
//! - [`object`]: [`CachedObject`], what the store holds for HTTP, and the [`Cacheable`] trait.
//! - [`freshness`]: RFC 9111 Cache-Control parsing, storability, lifetime, age, stale windows.
//! - [`hop`]: hop-by-hop header fields, which no hop forwards (RFC 9110 §7.6.1).
//! - [`key`]: normalised [`CacheKey`]s.
//! - [`range`]: `Range` requests (RFC 9110 §14) against a body of known length.
//! - [`signed`]: signed URLs (HMAC-SHA256 with expiry, optional client binding, key
//!   rotation): signing and the check every request under a signed prefix passes.
//! - [`ring`]: the consistent-hash [`Ring`] that assigns each key an owner edge.
//! - [`region`]: [`RegionMap`], the one routing contract (ring + key policy) that edges,
//!   clients and the load generator share.
//! - [`vary`]: secondary keys for responses that vary (RFC 9111 §4.1).
//! - [`wire`]: the versioned, size-limited edge ↔ origin frames.
//! - [`status`]: [`CacheStatus`] and [`NoStoreReason`] for headers, metrics and logs.
//! - [`size`]: sizes such as `64MiB` and durations such as `250ms`, parsed once into
//!   [`size::ByteSize`] and [`size::Span`] (serde-ready for config files).
//! - [`exposition`]: metrics exposition formats (OpenMetrics or Prometheus text, by
//!   `Accept`).
//! - [`video`]: synthetic adaptive-bitrate ladders (HLS playlists, VOD and live, and
//!   verifiable segments) for the origin to serve and the player to check.
//! - [`error`]: the crate's error enums.
//! - `server` (feature `server`): the HTTP accept loop of every Shoal listener (timeouts,
//!   connection caps, drain).
//! - `io` (feature `io`): framed reading and writing over async streams, and
//!   `BodyStream`, the one reader of body chunks (offsets checked in one place).

pub mod cmcd;
pub mod consistency;
pub mod error;
pub mod exposition;
pub mod freshness;
pub mod hop;
pub mod invalidation;
#[cfg(feature = "io")]
pub mod io;
pub mod key;
pub mod object;
pub mod range;
pub mod region;
pub mod ring;
mod s3fifo;
#[cfg(feature = "server")]
pub mod server;
pub mod signed;
pub mod size;
pub mod status;
pub mod store;
pub mod vary;
pub mod video;
pub mod wire;

pub use error::{CmcdError, ConfigError, Error, RingError, WireError};
pub use freshness::{CacheControl, Exchange, Freshness, FreshnessPolicy, FreshnessState};
pub use key::{CacheKey, KeyError, KeyPolicy, canonical_path, normalise_path};
pub use object::{Cacheable, CachedObject, Weighted};
pub use region::RegionMap;
pub use ring::Ring;
pub use status::{CacheStatus, NoStoreReason};
pub use store::{
    FillOutcome, Filled, GetOrFill, Lookup, Matcher, Policy, Purge, Store, StoreConfig, StoreStats,
};

//! Edge configuration: a TOML file (every field defaulted, unknown fields rejected), with
//! command-line flags applied on top by the binary.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use shoal_cache_core::size::{parse_bytes, parse_duration};
use shoal_cache_core::{FreshnessPolicy, Policy};

use crate::error::EdgeError;

/// How the edge reaches and trusts the origin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OriginLink {
    /// Origin QUIC address. Default `127.0.0.1:4433`.
    pub addr: SocketAddr,
    /// TLS server name to present. Default `localhost`.
    pub server_name: String,
    /// PEM file of the origin certificate to pin (exactly that certificate is trusted).
    pub cert_file: Option<PathBuf>,
    /// Or: the SHA-256 fingerprint (hex) of the certificate to pin.
    pub fingerprint: Option<String>,
}

impl Default for OriginLink {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 4433)),
            server_name: "localhost".into(),
            cert_file: None,
            fingerprint: None,
        }
    }
}

/// Cache settings, as written in the file (sizes and durations as text).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSection {
    /// Capacity in bytes (`256MiB`).
    pub capacity: String,
    /// `s3fifo` (default), `lru` or `tinylfu`.
    pub policy: String,
    /// Objects larger than this are streamed through, never stored (`16MiB`).
    pub max_object_size: String,
    /// Lifetime of responses without explicit freshness (`60s`; `0` to not cache them).
    pub default_ttl: String,
    /// Stale-if-error window where the origin gives none (`0`).
    pub stale_if_error: String,
    /// Stale-while-revalidate window where the origin gives none (`0`).
    pub stale_while_revalidate: String,
    /// Negative caching: status code → TTL (e.g. `404 = "5s"`). Default none.
    pub negative_ttl: BTreeMap<u16, String>,
    /// Query parameters left out of cache keys (`utm_*` prefix patterns allowed).
    pub ignored_query_params: Vec<String>,
}

impl Default for CacheSection {
    fn default() -> Self {
        Self {
            capacity: "256MiB".into(),
            policy: "s3fifo".into(),
            max_object_size: "16MiB".into(),
            default_ttl: "60s".into(),
            stale_if_error: "0".into(),
            stale_while_revalidate: "0".into(),
            negative_ttl: BTreeMap::new(),
            ignored_query_params: vec!["utm_*".into()],
        }
    }
}

/// Timeouts, as text.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutSection {
    /// One origin fetch attempt, to the last body byte of a stored object (`5s`).
    pub origin_fetch: String,
    /// Establishing the QUIC connection (`3s`).
    pub origin_connect: String,
    /// Connecting to a peer when forwarding to the owner (`2s`). The wait for the owner's
    /// response head also allows for the owner's own origin fetch and retries.
    pub peer: String,
    /// How long a peer that failed is skipped before it is tried again (`2s`).
    pub peer_down_for: String,
    /// How long the circuit breaker stays open after tripping (`2s`).
    pub breaker_open_for: String,
    /// Bound on finishing in-flight requests at shutdown (`10s`).
    pub shutdown_grace: String,
}

impl Default for TimeoutSection {
    fn default() -> Self {
        Self {
            origin_fetch: "5s".into(),
            origin_connect: "3s".into(),
            peer: "2s".into(),
            peer_down_for: "2s".into(),
            breaker_open_for: "2s".into(),
            shutdown_grace: "10s".into(),
        }
    }
}

/// The edge configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// This edge's id on the ring; must be unique in its region. Default `edge-1`.
    pub node_id: String,
    /// Region name. Default `local`.
    pub region: String,
    /// Client HTTP listen address. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Admin listen address (`/metrics`, `/healthz`, `/readyz`). Default `127.0.0.1:9091`.
    pub admin_listen: SocketAddr,
    /// The other edges of the region: id → HTTP address. This edge is added itself.
    pub peers: BTreeMap<String, SocketAddr>,
    /// Virtual nodes per edge on the ring. Default 256.
    pub vnodes: u32,
    /// The origin.
    pub origin: OriginLink,
    /// The cache.
    pub cache: CacheSection,
    /// Timeouts.
    pub timeouts: TimeoutSection,
    /// Retries of an idempotent origin fetch after the first attempt. Default 2.
    pub retries: u32,
    /// Consecutive origin failures that open the circuit breaker. Default 5.
    pub breaker_failures: u32,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            node_id: "edge-1".into(),
            region: "local".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9091)),
            peers: BTreeMap::new(),
            vnodes: shoal_cache_core::ring::DEFAULT_VNODES,
            origin: OriginLink::default(),
            cache: CacheSection::default(),
            timeouts: TimeoutSection::default(),
            retries: 2,
            breaker_failures: 5,
        }
    }
}

/// The configuration with every value parsed and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file form it came from.
    pub config: EdgeConfig,
    /// Cache capacity in bytes.
    pub capacity: u64,
    /// Eviction policy.
    pub policy: Policy,
    /// Max stored object size in bytes.
    pub max_object_size: u64,
    /// Freshness defaults.
    pub freshness: FreshnessPolicy,
    /// Negative-caching TTLs by status.
    pub negative_ttl: BTreeMap<u16, Duration>,
    /// Origin fetch attempt timeout.
    pub origin_fetch: Duration,
    /// QUIC connect timeout.
    pub origin_connect: Duration,
    /// Peer response-head timeout.
    pub peer: Duration,
    /// Dead-peer skip time.
    pub peer_down_for: Duration,
    /// Breaker open time.
    pub breaker_open_for: Duration,
    /// Shutdown grace.
    pub shutdown_grace: Duration,
}

impl EdgeConfig {
    /// Parses TOML.
    pub fn from_toml(text: &str) -> Result<Self, EdgeError> {
        toml::from_str(text).map_err(|e| EdgeError::Config(e.to_string()))
    }

    /// Parses and checks every value.
    pub fn settings(&self) -> Result<Settings, EdgeError> {
        let cfg = |e: shoal_cache_core::ConfigError| EdgeError::Config(e.to_string());
        let dur = |s: &str| parse_duration(s).map_err(cfg);
        if self.node_id.is_empty() {
            return Err(EdgeError::Config("node_id must not be empty".into()));
        }
        if self.peers.contains_key(&self.node_id) && self.peers[&self.node_id] != self.listen {
            return Err(EdgeError::Config(format!(
                "peers lists this edge ({}) at another address than listen",
                self.node_id
            )));
        }
        if self.origin.cert_file.is_none() && self.origin.fingerprint.is_none() {
            return Err(EdgeError::Config(
                "origin.cert_file or origin.fingerprint is required: the edge pins the origin certificate".into(),
            ));
        }
        let default_ttl = dur(&self.cache.default_ttl)?;
        let negative_ttl = self
            .cache
            .negative_ttl
            .iter()
            .map(|(s, d)| Ok((*s, dur(d)?)))
            .collect::<Result<_, EdgeError>>()?;
        Ok(Settings {
            capacity: parse_bytes(&self.cache.capacity).map_err(cfg)?,
            policy: self.cache.policy.parse().map_err(cfg)?,
            max_object_size: parse_bytes(&self.cache.max_object_size).map_err(cfg)?,
            freshness: FreshnessPolicy {
                default_ttl: (!default_ttl.is_zero()).then_some(default_ttl),
                default_stale_if_error: dur(&self.cache.stale_if_error)?,
                default_stale_while_revalidate: dur(&self.cache.stale_while_revalidate)?,
                ..FreshnessPolicy::default()
            },
            negative_ttl,
            origin_fetch: dur(&self.timeouts.origin_fetch)?,
            origin_connect: dur(&self.timeouts.origin_connect)?,
            peer: dur(&self.timeouts.peer)?,
            peer_down_for: dur(&self.timeouts.peer_down_for)?,
            breaker_open_for: dur(&self.timeouts.breaker_open_for)?,
            shutdown_grace: dur(&self.timeouts.shutdown_grace)?,
            config: self.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let c = EdgeConfig::from_toml(
            r#"
            node_id = "e1"
            region = "eu"
            [peers]
            e2 = "127.0.0.1:8082"
            [origin]
            fingerprint = "ab"
            [cache]
            capacity = "1GiB"
            policy = "lru"
            negative_ttl = { 404 = "5s" }
            "#,
        )
        .unwrap();
        let s = c.settings().unwrap();
        assert_eq!(s.capacity, 1 << 30);
        assert_eq!(s.policy, Policy::Lru);
        assert_eq!(s.negative_ttl[&404], Duration::from_secs(5));
        assert!(EdgeConfig::from_toml("nodeid = \"typo\"").is_err());
        let bad = EdgeConfig {
            origin: OriginLink {
                fingerprint: Some("ab".into()),
                ..OriginLink::default()
            },
            cache: CacheSection {
                capacity: "lots".into(),
                ..CacheSection::default()
            },
            ..EdgeConfig::default()
        };
        assert!(bad.settings().unwrap_err().to_string().contains("lots"));
        assert!(
            EdgeConfig::default()
                .settings()
                .unwrap_err()
                .to_string()
                .contains("pins")
        );
    }
}

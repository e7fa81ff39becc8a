//! # Shoal integration tests
//!
//! All scenarios are modules of one test binary (`tests/e2e/`), to keep link time down on
//! 2 cores. This library holds what they share: paths to the shared reference data, a raw
//! HTTP/1.1 client (so malformed requests go out exactly as written), bounded "eventually"
//! polling, and the cluster settings tests use.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use shoal_cache_core::size::HumanDuration;
use shoal_edge::EdgeConfig;
use shoal_loadgen::harness::cluster::ClusterSpec;
use shoal_origin::{CacheRule, OriginConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The read-only `shared/` directory beside the project root (traces, docs). Tests that
/// need it fail with a message naming the path when it is missing, rather than skipping.
pub fn shared_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("../../shared");
    assert!(
        dir.join("traces").is_dir(),
        "expected the shared reference data at {}",
        dir.display()
    );
    dir
}

/// Path of one of the shared request traces.
pub fn trace(name: &str) -> PathBuf {
    shared_dir().join("traces").join(name)
}

/// A parsed HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct Raw {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body bytes as received (no chunked decoding).
    pub body: Vec<u8>,
}

impl Raw {
    /// First value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` as is and reads the response until the server closes (send
/// `Connection: close`). Panics after 15 s.
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> Raw {
    let work = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(request).await.expect("write");
        let mut buf = Vec::new();
        // The server may close before reading all of an oversized request: keep what came.
        let _ = s.read_to_end(&mut buf).await;
        buf
    };
    let buf = tokio::time::timeout(Duration::from_secs(15), work)
        .await
        .expect("response within 15 s");
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&buf)));
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Raw {
        status,
        headers,
        body: buf[split + 4..].to_vec(),
    }
}

/// A GET (or other method) with `Host` and `Connection: close`, plus extra header lines.
pub fn request(method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        shoal_loadgen::harness::cluster::HOST
    );
    for (n, v) in extra {
        r.push_str(&format!("{n}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// Polls `check` every 50 ms until it holds; panics with `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Cluster settings for tests: short timeouts (failures show in well under a second or
/// two), a stale-if-error window, and a `.short` path rule with a 1 s lifetime.
pub fn spec(regions: usize, edges: usize, relay: bool) -> ClusterSpec {
    let mut edge = EdgeConfig::default();
    edge.timeouts.origin_connect = HumanDuration::millis(500);
    edge.timeouts.origin_fetch = HumanDuration::secs(2);
    edge.timeouts.peer = HumanDuration::secs(1);
    edge.timeouts.peer_down_for = HumanDuration::secs(1);
    edge.timeouts.breaker_open_for = HumanDuration::secs(1);
    edge.timeouts.shutdown_grace = HumanDuration::secs(5);
    edge.retries = 1;
    edge.cache.stale_if_error = HumanDuration::secs(60);
    let mut origin = OriginConfig::default();
    origin.cache_rules.insert(
        0,
        CacheRule {
            suffix: ".short".into(),
            cache_control: "public, max-age=1".into(),
        },
    );
    ClusterSpec {
        regions: (0..regions).map(|i| format!("r{i}")).collect(),
        edges_per_region: edges,
        origin,
        edge,
        relay,
        region_relays: false,
    }
}

//! Edge configuration: a TOML file (every field defaulted, unknown fields rejected), parsed
//! once into typed values (sizes, durations, the policy), with command-line flags
//! ([`EdgeFlags`]) applied on top by [`EdgeConfig::apply`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use shoal_cache_core::server::Limits;
use shoal_cache_core::size::{ByteSize, HumanDuration};
use shoal_cache_core::{FreshnessPolicy, KeyPolicy, Policy, RegionMap, StoreConfig};

use crate::error::EdgeError;

/// How the edge reaches and trusts the origin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OriginLink {
    /// Origin QUIC address, `ip:port` or `name:port` (a name is resolved at every
    /// connect, so an origin Service that moves is followed). Default `127.0.0.1:4433`.
    pub addr: HostPort,
    /// TLS server name to present. Default `localhost`.
    pub server_name: String,
    /// PEM file of origin certificates to pin: every certificate in it is trusted, so a
    /// new one can be added before the origin switches to it.
    pub cert_file: Option<PathBuf>,
    /// Or: the SHA-256 fingerprint (hex) of a certificate to pin.
    pub fingerprint: Option<String>,
    /// More fingerprints to pin beside `fingerprint` and `cert_file` (rotation).
    pub fingerprints: Vec<String>,
    /// The token the origin requires of edges (its `edge_token`), sent in the `Hello` on
    /// every connection.
    pub token: Option<String>,
    /// Local UDP address of the edge's QUIC endpoint. Default: loopback for a loopback
    /// origin, else the unspecified address of the origin's family (IPv4 for a name),
    /// port 0.
    pub bind: Option<SocketAddr>,
}

impl Default for OriginLink {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 4433)).into(),
            server_name: "localhost".into(),
            cert_file: None,
            fingerprint: None,
            fingerprints: Vec::new(),
            token: None,
            bind: None,
        }
    }
}

impl OriginLink {
    /// The local address the QUIC endpoint binds.
    pub fn bind_addr(&self) -> SocketAddr {
        self.bind.unwrap_or_else(|| {
            let ip: IpAddr = match self.addr.socket_addr().map(|a| a.ip()) {
                Some(IpAddr::V4(a)) if a.is_loopback() => Ipv4Addr::LOCALHOST.into(),
                Some(IpAddr::V6(a)) if a.is_loopback() => Ipv6Addr::LOCALHOST.into(),
                Some(IpAddr::V6(_)) => Ipv6Addr::UNSPECIFIED.into(),
                Some(IpAddr::V4(_)) | None => Ipv4Addr::UNSPECIFIED.into(),
            };
            SocketAddr::new(ip, 0)
        })
    }
}

/// Cache settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSection {
    /// Capacity (`256MiB`).
    pub capacity: ByteSize,
    /// `s3fifo` (default), `lru` or `tinylfu`.
    pub policy: Policy,
    /// Objects larger than this are streamed through, never stored (`16MiB`).
    pub max_object_size: ByteSize,
    /// Objects larger than the maximum object size but at most this long are still shared
    /// by every request that asks while one fill is under way (held in memory until the
    /// last reader is done, never stored); longer ones stream to each requester from its
    /// own origin fetch (`64MiB`; `0`: never share unstored bodies).
    pub max_shared_fill: ByteSize,
    /// Lifetime of responses without explicit freshness (`0`: none, so they are not reused
    /// without revalidation, as RFC 9111 §4.2 expects of a cache in front of any server;
    /// Shoal's own origin always sends `Cache-Control`).
    pub default_ttl: HumanDuration,
    /// Heuristic freshness (RFC 9111 §4.2.2) for a response with `Last-Modified` and no
    /// explicit lifetime: this percentage of the time since it was last modified, at most
    /// a day (`0`: off, the default; 10 is the RFC's example).
    pub heuristic_percent: u32,
    /// Stale-if-error window where the origin gives none (`0`).
    pub stale_if_error: HumanDuration,
    /// Stale-while-revalidate window where the origin gives none (`0`).
    pub stale_while_revalidate: HumanDuration,
    /// Negative caching: status code → TTL (e.g. `404 = "5s"`). Default none.
    pub negative_ttl: BTreeMap<u16, HumanDuration>,
    /// Query parameters left out of cache keys (`utm_*` prefix patterns allowed).
    pub ignored_query_params: Vec<String>,
}

/// The query parameter CTA-5004 (CMCD) players carry their state in; never part of a key.
pub const CMCD_PARAM: &str = "CMCD";

impl Default for CacheSection {
    fn default() -> Self {
        Self {
            capacity: ByteSize(256 << 20),
            policy: Policy::default(),
            max_object_size: ByteSize(16 << 20),
            max_shared_fill: ByteSize(64 << 20),
            default_ttl: HumanDuration::secs(0),
            stale_if_error: HumanDuration::default(),
            stale_while_revalidate: HumanDuration::default(),
            heuristic_percent: 0,
            negative_ttl: BTreeMap::new(),
            ignored_query_params: vec!["utm_*".into()],
        }
    }
}

/// Timeouts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutSection {
    /// One origin fetch attempt, to the response head (`5s`); also the longest a body may
    /// pause between chunks before the fill is failed.
    pub origin_fetch: HumanDuration,
    /// Establishing the QUIC connection (`3s`).
    pub origin_connect: HumanDuration,
    /// A silent origin connection is declared dead after this (`2s`), with QUIC
    /// keep-alives every third of it. The first unanswered keep-alive restarts the idle
    /// timer (RFC 9000 §10.1), so a crashed or cut-off origin is noticed within
    /// `origin_idle × 4/3` (2.7 s by default).
    pub origin_idle: HumanDuration,
    /// Connecting to a peer when forwarding to the owner (`2s`). The wait for the owner's
    /// response head also allows for the owner's own origin fetch and retries.
    pub peer: HumanDuration,
    /// How long a peer that failed is skipped before it is tried again (`2s`).
    pub peer_down_for: HumanDuration,
    /// How long the circuit breaker stays open after tripping (`2s`).
    pub breaker_open_for: HumanDuration,
    /// Bound on finishing in-flight requests at shutdown (`10s`).
    pub shutdown_grace: HumanDuration,
}

impl Default for TimeoutSection {
    fn default() -> Self {
        Self {
            origin_fetch: HumanDuration::secs(5),
            origin_connect: HumanDuration::secs(3),
            origin_idle: HumanDuration::secs(2),
            peer: HumanDuration::secs(2),
            peer_down_for: HumanDuration::secs(2),
            breaker_open_for: HumanDuration::secs(2),
            shutdown_grace: HumanDuration::secs(10),
        }
    }
}

/// Overload protection: what the edge sheds, and when.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OverloadSection {
    /// Requests per second one client may make (GCRA); 0 turns the limit off (the
    /// default: behind a load balancer every request shares its address, so enable it
    /// where clients connect directly or `client_ip_header` names them).
    pub client_rate: u32,
    /// Requests a client may burst above its rate. Default: the rate.
    pub client_burst: u32,
    /// Header a trusted load balancer sets to the client's address (`x-real-ip`); the
    /// connection's peer address is used when unset or unparseable. Never trust a header
    /// clients can set themselves.
    pub client_ip_header: Option<String>,
    /// Client requests in progress at once; beyond it a request gets a 503 at once, with
    /// `Retry-After`. Default 4096.
    pub max_inflight: usize,
    /// Origin fetches in progress at once (distinct keys: fills are coalesced). Default 256.
    pub max_fills: usize,
    /// How long a fill waits for one of those slots before its requests get a 503 (or the
    /// stale copy, where stale-if-error allows). Hits never wait. Default `2s`.
    pub fill_queue_timeout: HumanDuration,
    /// Fills waiting for a slot at once; a miss that finds this many waiting is shed at
    /// once (503 with `Retry-After`) instead of waiting out `fill_queue_timeout`, so an
    /// overload is refused in microseconds. Default 1024 (four waiting per slot).
    pub max_fill_queue: usize,
}

/// The `write-back` buffer: writes to `write-back` paths acknowledged here and flushed to
/// the origin later.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriteBackSection {
    /// Longest a write waits in the buffer before it is flushed (from when its path was
    /// first written since the last flush, so a path written without pause still reaches
    /// the origin this often). Default `1s`.
    pub delay: HumanDuration,
    /// Bytes of bodies the buffer holds; a write that would exceed it flushes the oldest
    /// paths first (eviction), and gets a 503 if the origin cannot take them in time.
    /// Default `64MiB`.
    pub max_bytes: ByteSize,
}

impl Default for WriteBackSection {
    fn default() -> Self {
        Self {
            delay: HumanDuration::secs(1),
            max_bytes: ByteSize(64 << 20),
        }
    }
}

impl Default for OverloadSection {
    fn default() -> Self {
        Self {
            client_rate: 0,
            client_burst: 0,
            client_ip_header: None,
            max_inflight: 4096,
            max_fills: 256,
            fill_queue_timeout: HumanDuration::secs(2),
            max_fill_queue: 1024,
        }
    }
}

/// The edge configuration.
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
    /// Listen backlog of both listeners (`4096`, as nginx-class servers use; the kernel
    /// caps it at `net.core.somaxconn`), so a connection spike is queued, not dropped.
    pub listen_backlog: u32,
    /// The other edges of the region: id → HTTP address, `ip:port` or `name:port` (names
    /// are resolved again every `discovery.every`). This edge is added itself.
    pub peers: BTreeMap<String, HostPort>,
    /// Ring membership from DNS, beside or instead of `peers`.
    pub discovery: DiscoverySection,
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
    /// Consecutive failed origin attempts that open the circuit breaker. Default 5.
    pub breaker_failures: u32,
    /// Connection limits of both listeners: header-read (and idle) timeout, caps.
    pub limits: Limits,
    /// Overload protection: per-client rate, requests in flight, the origin fill queue.
    pub overload: OverloadSection,
    /// Signed URLs: path prefixes that require one, and the live keys.
    pub signed_urls: crate::request::sign::SignedUrls,
    /// Bearer token clients must present to PUT or DELETE through this edge (forwarded to
    /// the origin under the path's consistency mode). Default none: writes get 405.
    pub write_token: Option<Secret>,
    /// Pass every method other than GET and HEAD (POST, PATCH, OPTIONS, unknown ones, and
    /// PUT/DELETE when no `write_token` is set) through to the origin, whose upstream HTTP
    /// server answers it: never cached, and a non-error answer invalidates the target and
    /// its `Location`/`Content-Location` (RFC 9111 §4.4). Default `false`: such methods
    /// get 405, as an edge in front of Shoal's own origin has nothing to pass them to.
    pub pass_through: bool,
    /// The `write-back` buffer (used on paths the origin announces as `write-back`).
    pub write_back: WriteBackSection,
    /// Prefetching the next object a player names in its CMCD (`nor`).
    pub prefetch: PrefetchSection,
}

/// CMCD prefetch: when a request carries CTA-5004 data naming the player's next object
/// (`nor`), the edge that serves it starts filling that object (its owner in the region
/// does, over a peer request), so the player's next request is a hit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrefetchSection {
    /// Off unless set (`false`).
    pub enabled: bool,
    /// Prefetches in progress at once on this edge; more are skipped, not queued (`16`).
    pub max_concurrent: usize,
    /// No prefetch starts while those in progress hold this many body bytes (`64MiB`).
    pub max_bytes: ByteSize,
}

impl Default for PrefetchSection {
    fn default() -> Self {
        Self {
            enabled: false,
            max_concurrent: 16,
            max_bytes: ByteSize(64 << 20),
        }
    }
}

/// Ring membership from DNS. With `srv` set, the region's edges are the targets of that
/// SRV record, as a Kubernetes headless Service publishes them for a StatefulSet
/// (`_http._tcp.edge-eu.shoal.svc.cluster.local`): each target's first label is the
/// node id (the pod's stable name), its address the target's A/AAAA record, its port
/// the record's. Re-resolved every `every`, so scaling the StatefulSet changes the ring
/// without a restart. A failed lookup keeps the last membership; a name with no records
/// leaves this edge alone on the ring.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoverySection {
    /// SRV name of the region's edges. Default none: `peers` only.
    pub srv: Option<String>,
    /// How often names are resolved again (`5s`).
    pub every: HumanDuration,
    /// One lookup's time limit (`2s`).
    pub timeout: HumanDuration,
    /// A DNS server to ask instead of `/etc/resolv.conf`'s (`ip:port`).
    pub nameserver: Option<SocketAddr>,
}

impl Default for DiscoverySection {
    fn default() -> Self {
        Self {
            srv: None,
            every: HumanDuration::secs(5),
            timeout: HumanDuration::secs(2),
            nameserver: None,
        }
    }
}

/// An address by IP or by name: `10.0.0.1:8080`, `[::1]:8080`, `edge-eu-2:8080`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    host: String,
    port: u16,
}

impl HostPort {
    /// The host: an IP literal (without brackets) or a DNS name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address, when the host is an IP literal (no lookup needed).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }
}

impl From<SocketAddr> for HostPort {
    fn from(a: SocketAddr) -> Self {
        Self {
            host: a.ip().to_string(),
            port: a.port(),
        }
    }
}

impl std::str::FromStr for HostPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(a.into());
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("expected host:port, got {s:?}"))?;
        let port = port.parse().map_err(|e| format!("port in {s:?}: {e}"))?;
        // A DNS name (RFC 1123 labels, plus `_` as SRV names have); anything else here is a
        // typo, not a host.
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        let name = host.strip_suffix('.').unwrap_or(host);
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!(
                "{host:?} in {s:?} is neither an IP address nor a DNS name"
            ));
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.socket_addr() {
            Some(a) => a.fmt(f),
            None => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A secret from the config: compared in constant time, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// Whether `given` is the secret (constant time in the secret's content).
    pub fn matches(&self, given: &str) -> bool {
        shoal_cache_core::signed::same_secret(given, &self.0)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            node_id: "edge-1".into(),
            region: "local".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9091)),
            listen_backlog: 4096,
            peers: BTreeMap::new(),
            discovery: DiscoverySection::default(),
            vnodes: shoal_cache_core::ring::DEFAULT_VNODES,
            origin: OriginLink::default(),
            cache: CacheSection::default(),
            timeouts: TimeoutSection::default(),
            retries: 2,
            breaker_failures: 5,
            limits: Limits::default(),
            overload: OverloadSection::default(),
            signed_urls: Default::default(),
            write_token: None,
            pass_through: false,
            write_back: WriteBackSection::default(),
            prefetch: PrefetchSection::default(),
        }
    }
}

/// Command-line overrides of an [`EdgeConfig`] (`shoal edge --…`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EdgeFlags {
    /// TOML config file (flags override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Client HTTP listen address.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Admin listen address.
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// Node id on the ring.
    #[arg(long)]
    pub node_id: Option<String>,
    /// Region name.
    #[arg(long)]
    pub region: Option<String>,
    /// A region peer, `id=host:port` (repeatable; the host may be a DNS name).
    #[arg(long = "peer", value_parser = parse_peer)]
    pub peers: Vec<(String, HostPort)>,
    /// Ring membership from this SRV name (a headless Service), re-resolved.
    #[arg(long)]
    pub discover_srv: Option<String>,
    /// Origin QUIC address, `host:port`.
    #[arg(long)]
    pub origin: Option<HostPort>,
    /// Origin certificates (PEM) to pin.
    #[arg(long)]
    pub origin_cert: Option<PathBuf>,
    /// Origin certificate SHA-256 (hex) to pin (repeatable).
    #[arg(long)]
    pub origin_fingerprint: Vec<String>,
    /// The origin's edge token (or SHOAL_EDGE_TOKEN).
    #[arg(long, env = "SHOAL_EDGE_TOKEN", hide_env_values = true)]
    pub origin_token: Option<String>,
    /// Token clients present to write through this edge (or SHOAL_WRITE_TOKEN).
    #[arg(long, env = "SHOAL_WRITE_TOKEN", hide_env_values = true)]
    pub write_token: Option<String>,
    /// Pass methods other than GET and HEAD through to the origin's upstream (uncached).
    #[arg(long)]
    pub pass_through: bool,
    /// Cache capacity (`256MiB`).
    #[arg(long)]
    pub capacity: Option<ByteSize>,
    /// Eviction policy: s3fifo, lru, tinylfu.
    #[arg(long)]
    pub policy: Option<Policy>,
}

/// Parses `id=host:port`.
pub fn parse_peer(s: &str) -> Result<(String, HostPort), String> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("expected id=addr, got {s:?}"))?;
    let addr = addr.parse().map_err(|e| format!("address in {s:?}: {e}"))?;
    Ok((id.to_string(), addr))
}

impl EdgeConfig {
    /// Parses TOML and checks it.
    pub fn from_toml(text: &str) -> Result<Self, EdgeError> {
        let c: Self = toml::from_str(text).map_err(|e| EdgeError::Config(e.to_string()))?;
        Ok(c)
    }

    /// The file named by `flags.config` (or the defaults), with the flags applied, checked.
    pub fn load(flags: EdgeFlags) -> Result<Self, EdgeError> {
        let mut c = match &flags.config {
            Some(p) => Self::from_toml(
                &std::fs::read_to_string(p)
                    .map_err(|e| EdgeError::Config(format!("reading {}: {e}", p.display())))?,
            )?,
            None => Self::default(),
        };
        c.apply(flags);
        c.validate()?;
        Ok(c)
    }

    /// Applies command-line overrides.
    pub fn apply(&mut self, f: EdgeFlags) {
        fn set<T>(slot: &mut T, v: Option<T>) {
            if let Some(v) = v {
                *slot = v;
            }
        }
        set(&mut self.listen, f.listen);
        set(&mut self.admin_listen, f.admin_listen);
        set(&mut self.node_id, f.node_id);
        set(&mut self.region, f.region);
        self.peers.extend(f.peers);
        if f.discover_srv.is_some() {
            self.discovery.srv = f.discover_srv;
        }
        set(&mut self.origin.addr, f.origin);
        if f.origin_cert.is_some() {
            self.origin.cert_file = f.origin_cert;
        }
        self.origin.fingerprints.extend(f.origin_fingerprint);
        if f.origin_token.is_some() {
            self.origin.token = f.origin_token;
        }
        if let Some(t) = f.write_token {
            self.write_token = Some(Secret::new(t));
        }
        self.pass_through |= f.pass_through;
        set(&mut self.cache.capacity, f.capacity);
        set(&mut self.cache.policy, f.policy);
    }

    /// Checks what serde cannot: cross-field rules and ranges.
    pub fn validate(&self) -> Result<(), EdgeError> {
        let bad = |m: String| Err(EdgeError::Config(m));
        if self.node_id.is_empty() {
            return bad("node_id must not be empty".into());
        }
        if self.cache.heuristic_percent > 100 {
            return bad(format!(
                "cache.heuristic_percent must be 0 to 100, not {}",
                self.cache.heuristic_percent
            ));
        }
        if self.prefetch.enabled && self.prefetch.max_concurrent == 0 {
            return bad(
                "prefetch.max_concurrent must be at least 1 when prefetch is enabled".into(),
            );
        }
        if self.write_token.as_ref().is_some_and(Secret::is_empty) {
            return bad("write_token must not be empty".into());
        }
        if self.write_back.delay.get().is_zero() {
            return bad("write_back.delay must be more than 0".into());
        }
        if self.write_back.max_bytes < self.cache.max_object_size {
            return bad(format!(
                "write_back.max_bytes ({}) must hold one object of cache.max_object_size ({})",
                self.write_back.max_bytes, self.cache.max_object_size
            ));
        }
        if axum::http::HeaderValue::from_str(&self.node_id).is_err() {
            return bad(format!(
                "node_id {:?} is not a valid header value",
                self.node_id
            ));
        }
        if self
            .peers
            .get(&self.node_id)
            .and_then(HostPort::socket_addr)
            .is_some_and(|a| a != self.listen)
        {
            return bad(format!(
                "peers lists this edge ({}) at another address than listen",
                self.node_id
            ));
        }
        if self.discovery.every.get() < Duration::from_millis(100)
            || self.discovery.timeout.get().is_zero()
        {
            return bad(
                "discovery.every must be at least 100ms and discovery.timeout more than 0".into(),
            );
        }
        if let Some(srv) = &self.discovery.srv
            && format!("{srv}:1").parse::<HostPort>().is_err()
        {
            return bad(format!("discovery.srv {srv:?} is not a DNS name"));
        }
        if self.origin.cert_file.is_none()
            && self.origin.fingerprint.is_none()
            && self.origin.fingerprints.is_empty()
        {
            return bad(
                "origin.cert_file or origin.fingerprint is required: the edge pins the origin certificate".into(),
            );
        }
        if self.timeouts.origin_idle.get() < Duration::from_millis(300) {
            return bad(format!(
                "timeouts.origin_idle must be at least 300ms (keep-alives go out every third of it), got {}",
                self.timeouts.origin_idle
            ));
        }
        self.limits
            .validate()
            .map_err(|e| EdgeError::Config(e.to_string()))?;
        if self.overload.max_inflight == 0 || self.overload.max_fills == 0 {
            return bad("overload.max_inflight and overload.max_fills must be at least 1".into());
        }
        if !self.signed_urls.prefixes.is_empty() && self.signed_urls.keys.is_empty() {
            return bad("signed_urls.prefixes needs at least one key in signed_urls.keys".into());
        }
        if self.listen_backlog == 0 {
            return bad("listen_backlog must be at least 1".into());
        }
        self.store_config()
            .validate()
            .map_err(|e| EdgeError::Config(format!("cache.{e}")))?;
        Ok(())
    }

    /// The store settings.
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            capacity: self.cache.capacity.bytes(),
            max_object_size: self.cache.max_object_size.bytes(),
            policy: self.cache.policy,
        }
    }

    /// Freshness defaults.
    pub fn freshness(&self) -> FreshnessPolicy {
        let ttl = self.cache.default_ttl.get();
        FreshnessPolicy {
            default_ttl: (!ttl.is_zero()).then_some(ttl),
            heuristic_fraction: (self.cache.heuristic_percent > 0)
                .then(|| f64::from(self.cache.heuristic_percent) / 100.0),
            default_stale_if_error: self.cache.stale_if_error.get(),
            default_stale_while_revalidate: self.cache.stale_while_revalidate.get(),
            ..FreshnessPolicy::default()
        }
    }

    /// The negative-caching TTL for `status`, if configured.
    pub fn negative_ttl(&self, status: u16) -> Option<Duration> {
        self.cache.negative_ttl.get(&status).map(|d| d.get())
    }

    /// The region's routing contract: this edge and its peers on one ring, keyed with the
    /// configured policy. Clients build the same map from the same settings.
    pub fn region_map(&self) -> Result<RegionMap, EdgeError> {
        let nodes = std::iter::once(self.node_id.as_str()).chain(
            self.peers
                .keys()
                .map(String::as_str)
                .filter(|p| *p != self.node_id),
        );
        RegionMap::new(self.vnodes, nodes, self.key_policy())
            .map_err(|e| EdgeError::Config(e.to_string()))
    }

    /// How cache keys are built: the configured ignored parameters, CTA-5004's `CMCD`
    /// (players such as hls.js send their state with every request), and the signature's
    /// where signed URLs are on (every viewer of an object shares one entry).
    pub fn key_policy(&self) -> KeyPolicy {
        let mut ignored_params = self.cache.ignored_query_params.clone();
        ignored_params.push(CMCD_PARAM.into());
        if !self.signed_urls.prefixes.is_empty() {
            ignored_params.extend(crate::request::sign::PARAMS.map(String::from));
        }
        KeyPolicy { ignored_params }
    }

    /// How long a forwarded request may wait for the owner's response head: the owner may
    /// be running its own origin fetch with retries, so allow for all of it.
    pub fn peer_head_wait(&self) -> Duration {
        let t = &self.timeouts;
        t.origin_fetch.get() * (self.retries + 1) + t.origin_connect.get() + t.peer.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_typed_values_and_rejects_bad_ones() {
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
            heuristic_percent = 10
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.freshness().heuristic_fraction, Some(0.1));
        assert_eq!(EdgeConfig::default().freshness().heuristic_fraction, None);
        let mut over = c.clone();
        over.cache.heuristic_percent = 101;
        let e = over.validate().unwrap_err();
        assert!(e.to_string().contains("heuristic_percent"), "{e}");
        assert_eq!(c.cache.capacity.bytes(), 1 << 30);
        assert_eq!(c.cache.policy, Policy::Lru);
        assert_eq!(c.negative_ttl(404), Some(Duration::from_secs(5)));
        assert_eq!(c.region_map().unwrap().len(), 2);
        assert!(EdgeConfig::from_toml("nodeid = \"typo\"").is_err());
        let e = EdgeConfig::from_toml("[cache]\ncapacity = \"lots\"").unwrap_err();
        assert!(e.to_string().contains("lots"), "{e}");
        let e = EdgeConfig::from_toml("[timeouts]\npeer = \"5 fortnights\"").unwrap_err();
        assert!(e.to_string().contains("fortnights"), "{e}");
        let mut idle = c;
        idle.timeouts.origin_idle = HumanDuration::default();
        let e = idle.validate().unwrap_err();
        assert!(e.to_string().contains("origin_idle"), "{e}");
        let e = EdgeConfig::default().validate().unwrap_err();
        assert!(e.to_string().contains("pins"), "{e}");
    }

    #[test]
    fn flags_override_the_file() {
        let mut c = EdgeConfig::default();
        c.apply(EdgeFlags {
            node_id: Some("x".into()),
            peers: vec![parse_peer("y=127.0.0.1:9").unwrap()],
            capacity: Some("2MiB".parse().unwrap()),
            origin_fingerprint: vec!["ab".into()],
            ..EdgeFlags::default()
        });
        assert_eq!(c.node_id, "x");
        assert_eq!(
            c.peers["y"].socket_addr(),
            Some(SocketAddr::from(([127, 0, 0, 1], 9)))
        );
        assert_eq!(c.cache.capacity.bytes(), 2 << 20);
        assert_eq!(c.origin.fingerprints, ["ab"]);
        assert!(parse_peer("nope").is_err());
    }

    #[test]
    fn host_port_takes_ips_and_names_and_names_the_bad_part() {
        let h: HostPort = "Edge-EU-2.shoal.svc.cluster.local:8080".parse().unwrap();
        assert_eq!(
            (h.host(), h.port()),
            ("edge-eu-2.shoal.svc.cluster.local", 8080)
        );
        assert_eq!(h.socket_addr(), None);
        let h: HostPort = "[::1]:80".parse().unwrap();
        assert_eq!(h.socket_addr(), Some("[::1]:80".parse().unwrap()));
        assert_eq!(h.to_string(), "[::1]:80");
        for (bad, names) in [
            ("edge", "host:port"),
            ("edge:http", "port"),
            ("edge:70000", "port"),
            ("ed ge:80", "neither"),
            ("-edge:80", "neither"),
            (":80", "neither"),
            ("a..b:80", "neither"),
        ] {
            let e = bad.parse::<HostPort>().unwrap_err();
            assert!(e.contains(names), "{bad}: {e}");
        }
        let e = EdgeConfig::from_toml("[peers]\ne2 = \"no such:80\"").unwrap_err();
        assert!(e.to_string().contains("neither"), "{e}");
        let mut c = EdgeConfig::default();
        c.origin.fingerprint = Some("ab".into());
        c.discovery.srv = Some("_http._tcp.edge eu".into());
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("discovery.srv")
        );
    }

    #[test]
    fn the_kubernetes_edge_config_parses_and_checks() {
        let mut c = EdgeConfig::from_toml(include_str!("../../deploy/k8s/base/edge.toml")).unwrap();
        // What the StatefulSet's flags add.
        c.apply(EdgeFlags {
            node_id: Some("edge-eu-0".into()),
            discover_srv: Some("_http._tcp.edge-eu.shoal.svc.cluster.local".into()),
            ..EdgeFlags::default()
        });
        c.validate().unwrap();
        assert_eq!(c.origin.addr.host(), "origin.shoal.svc.cluster.local");
    }

    #[test]
    fn quic_binds_the_origin_family_and_loopback_for_loopback() {
        let mut o = OriginLink::default();
        assert_eq!(o.bind_addr(), "127.0.0.1:0".parse().unwrap());
        o.addr = "origin.shoal.svc:4433".parse().unwrap();
        assert_eq!(o.bind_addr(), "0.0.0.0:0".parse().unwrap());
        o.addr = "10.1.2.3:4433".parse().unwrap();
        assert_eq!(o.bind_addr(), "0.0.0.0:0".parse().unwrap());
        o.addr = "[2001:db8::1]:4433".parse().unwrap();
        assert_eq!(o.bind_addr(), "[::]:0".parse().unwrap());
        o.bind = Some("192.0.2.1:0".parse().unwrap());
        assert_eq!(o.bind_addr(), "192.0.2.1:0".parse().unwrap());
    }
}

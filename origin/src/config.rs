//! Origin configuration (TOML; flags override).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use shoal_cache_core::consistency::{Mode, ModeRule, Modes};

use crate::error::OriginError;

/// A Cache-Control rule: paths ending in `suffix` get `cache_control`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRule {
    /// Path suffix, e.g. `.ts`.
    pub suffix: String,
    /// The Cache-Control value sent for matching paths.
    pub cache_control: String,
}

/// The upstream HTTP server an origin pulls through (`[upstream]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `http://host:port`, optionally with a base path every target is put under.
    pub url: String,
    /// Speak HTTP/2 with prior knowledge (h2c) instead of HTTP/1.1. Default false.
    pub http2: bool,
    /// TCP connect timeout. Default 2 s.
    pub connect_timeout: shoal_cache_core::size::HumanDuration,
    /// From sending a request to its response head, and between two pieces of a body.
    /// Default 30 s.
    pub timeout: shoal_cache_core::size::HumanDuration,
    /// Idle keep-alive connections kept open. Default 64.
    pub max_idle_connections: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            http2: false,
            connect_timeout: shoal_cache_core::size::HumanDuration::secs(2),
            timeout: shoal_cache_core::size::HumanDuration::secs(30),
            max_idle_connections: 64,
        }
    }
}

/// Origin settings. Every field has a default; unknown fields are an error.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OriginConfig {
    /// QUIC listen address for edges. Default `127.0.0.1:4433`.
    pub quic_listen: SocketAddr,
    /// HTTP admin listen address (`/metrics`, `/healthz`, object writes). Default
    /// `127.0.0.1:9090`.
    pub admin_listen: SocketAddr,
    /// Directory of content served read-only (under the in-memory objects). Default none.
    pub content_dir: Option<PathBuf>,
    /// Bearer token for PUT/DELETE. Without one, writes are refused (403).
    pub admin_token: Option<String>,
    /// The token edges present in their `Hello` on every QUIC connection; a connection
    /// without it is closed before anything is served. Default none: any edge that
    /// completes the TLS handshake is served (fine on a private network only).
    pub edge_token: Option<String>,
    /// PEM certificate to use; with `key`. Default: generate a self-signed one.
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    pub key: Option<PathBuf>,
    /// Where to write the generated certificate (PEM) for edges to pin. Default none. When
    /// the file and its key (`key_out`) already exist, they are reused: a restarted origin
    /// keeps the identity its edges pin.
    pub cert_out: Option<PathBuf>,
    /// Where to keep the generated private key (PKCS#8 PEM, mode 0600). Default: beside
    /// `cert_out`, with the extension `.key`.
    pub key_out: Option<PathBuf>,
    /// Listen backlog of the admin listener. Default 4096.
    pub listen_backlog: u32,
    /// Connection limits of the admin listener: header-read (and idle) timeout, caps.
    pub limits: shoal_cache_core::server::Limits,
    /// Names in a generated certificate. Default `localhost`, `127.0.0.1`.
    pub server_names: Vec<String>,
    /// Cache-Control by path suffix, first match wins.
    pub cache_rules: Vec<CacheRule>,
    /// Cache-Control for paths no rule matches. Default `public, max-age=60`.
    pub default_cache_control: String,
    /// Largest object accepted by PUT, in bytes. Default 256 MiB.
    pub max_object_bytes: usize,
    /// Invalidations kept for edges that reconnect: one that missed more is reset (drops
    /// everything it holds). Default 10,000.
    pub invalidation_log: usize,
    /// Heartbeat interval of invalidation subscriptions; three silent intervals end one.
    /// Default 500 ms.
    pub heartbeat: shoal_cache_core::size::HumanDuration,
    /// How long a purge with `wait` waits for every subscribed edge. Default 5 s.
    pub purge_wait: shoal_cache_core::size::HumanDuration,
    /// Lease an edge gets on each heartbeat, for `consistent` paths: the longest a write
    /// there waits for an edge it cannot reach. Default 2 s.
    pub lease: shoal_cache_core::size::HumanDuration,
    /// Consistency mode of paths no `[[consistency]]` rule names. Default `invalidate`.
    pub default_mode: Mode,
    /// Consistency mode by path prefix (longest prefix wins), announced to edges.
    pub consistency: Vec<ModeRule>,
    /// Synthetic adaptive-bitrate ladders served under `/video/<name>/` (see
    /// [`shoal_cache_core::video`]). Default none.
    pub ladders: Vec<shoal_cache_core::video::LadderConfig>,
    /// An upstream HTTP server to pull through: fetches of paths the origin does not hold
    /// (nor generates), and every request an edge passes through. Default none.
    pub upstream: Option<UpstreamConfig>,
}

impl Default for OriginConfig {
    fn default() -> Self {
        let immutable = "public, max-age=31536000, immutable";
        let playlist = "public, max-age=2, stale-while-revalidate=2";
        Self {
            quic_listen: SocketAddr::from(([127, 0, 0, 1], 4433)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            content_dir: None,
            admin_token: None,
            edge_token: None,
            cert: None,
            key: None,
            cert_out: None,
            key_out: None,
            listen_backlog: 4096,
            limits: shoal_cache_core::server::Limits::default(),
            server_names: vec!["localhost".into(), "127.0.0.1".into()],
            cache_rules: [
                (".ts", immutable),
                (".m4s", immutable),
                (".mp4", immutable),
                (".m3u8", playlist),
                (".mpd", playlist),
            ]
            .into_iter()
            .map(|(s, c)| CacheRule {
                suffix: s.into(),
                cache_control: c.into(),
            })
            .collect(),
            default_cache_control: "public, max-age=60".into(),
            max_object_bytes: 256 << 20,
            invalidation_log: 10_000,
            heartbeat: shoal_cache_core::size::HumanDuration::millis(500),
            purge_wait: shoal_cache_core::size::HumanDuration::secs(5),
            lease: shoal_cache_core::size::HumanDuration::secs(2),
            default_mode: Mode::default(),
            consistency: Vec::new(),
            ladders: Vec::new(),
            upstream: None,
        }
    }
}

/// Command-line overrides of an [`OriginConfig`] (`shoal origin --…`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OriginFlags {
    /// TOML config file (flags override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// QUIC listen address.
    #[arg(long)]
    pub quic_listen: Option<SocketAddr>,
    /// Admin HTTP listen address.
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// Content directory served read-only.
    #[arg(long)]
    pub content_dir: Option<PathBuf>,
    /// Bearer token for PUT/DELETE (or SHOAL_ADMIN_TOKEN).
    #[arg(long, env = "SHOAL_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The token edges must present (or SHOAL_EDGE_TOKEN).
    #[arg(long, env = "SHOAL_EDGE_TOKEN", hide_env_values = true)]
    pub edge_token: Option<String>,
    /// Write the generated certificate here (its key beside it, `.key`), for edges to pin;
    /// reused on the next start.
    #[arg(long)]
    pub cert_out: Option<PathBuf>,
    /// Upstream HTTP server to pull through (`http://host:port`), with the `[upstream]`
    /// section's other settings (or their defaults).
    #[arg(long)]
    pub upstream: Option<String>,
}

impl OriginConfig {
    /// The file named by `flags.config` (or the defaults), with the flags applied, checked.
    pub fn load(flags: OriginFlags) -> Result<Self, OriginError> {
        let mut c =
            match &flags.config {
                Some(p) => Self::from_toml(&std::fs::read_to_string(p).map_err(|source| {
                    OriginError::Io {
                        path: p.display().to_string(),
                        source,
                    }
                })?)?,
                None => Self::default(),
            };
        c.apply(flags);
        c.validate()?;
        Ok(c)
    }

    /// Applies command-line overrides.
    pub fn apply(&mut self, f: OriginFlags) {
        if let Some(a) = f.quic_listen {
            self.quic_listen = a;
        }
        if let Some(a) = f.admin_listen {
            self.admin_listen = a;
        }
        self.content_dir = f.content_dir.or(self.content_dir.take());
        self.admin_token = f.admin_token.or(self.admin_token.take());
        self.edge_token = f.edge_token.or(self.edge_token.take());
        self.cert_out = f.cert_out.or(self.cert_out.take());
        if let Some(url) = f.upstream {
            self.upstream
                .get_or_insert_with(UpstreamConfig::default)
                .url = url;
        }
    }

    /// Parses TOML.
    pub fn from_toml(text: &str) -> Result<Self, OriginError> {
        let c: Self = toml::from_str(text).map_err(|e| OriginError::Config(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), OriginError> {
        if self.cert.is_some() != self.key.is_some() {
            return Err(OriginError::Config(
                "cert and key must be given together".into(),
            ));
        }
        self.limits
            .validate()
            .map_err(|e| OriginError::Config(e.to_string()))?;
        if self.edge_token.as_deref() == Some("") {
            return Err(OriginError::Config("edge_token must not be empty".into()));
        }
        if self.heartbeat.get().is_zero() || self.purge_wait.get().is_zero() {
            return Err(OriginError::Config(
                "heartbeat and purge_wait must be positive".into(),
            ));
        }
        if let Some(r) = self.consistency.iter().find(|r| !r.prefix.starts_with('/')) {
            return Err(OriginError::Config(format!(
                "consistency prefix {:?} must start with '/'",
                r.prefix
            )));
        }
        if self.lease.get() <= self.heartbeat.get() {
            return Err(OriginError::Config(
                "lease must be longer than the heartbeat interval".into(),
            ));
        }
        if self.invalidation_log == 0 {
            return Err(OriginError::Config(
                "invalidation_log must keep at least one entry".into(),
            ));
        }
        if self.admin_token.as_deref() == Some("") {
            return Err(OriginError::Config("admin_token must not be empty".into()));
        }
        self.built_ladders()?;
        if let Some(u) = &self.upstream {
            crate::upstream::Upstream::new(u)?;
            if u.timeout.get().is_zero() || u.connect_timeout.get().is_zero() {
                return Err(OriginError::Config(
                    "upstream timeouts must be positive".into(),
                ));
            }
        }
        Ok(())
    }

    /// Where the generated key is kept, if the generated certificate is.
    pub fn key_out(&self) -> Option<PathBuf> {
        self.key_out
            .clone()
            .or_else(|| self.cert_out.as_ref().map(|c| c.with_extension("key")))
    }

    /// The ladders, checked (names unique).
    pub fn built_ladders(&self) -> Result<Vec<shoal_cache_core::video::Ladder>, OriginError> {
        let mut out: Vec<shoal_cache_core::video::Ladder> = Vec::new();
        for c in &self.ladders {
            if out.iter().any(|l| l.config().name == c.name) {
                return Err(OriginError::Config(format!(
                    "ladder {} is configured twice",
                    c.name
                )));
            }
            let l = shoal_cache_core::video::Ladder::new(c.clone())
                .map_err(|e| OriginError::Config(e.to_string()))?;
            out.push(l);
        }
        Ok(out)
    }

    /// The consistency modes, as announced to edges.
    pub fn modes(&self) -> Modes {
        Modes {
            rules: self.consistency.clone(),
            default: self.default_mode,
        }
    }

    /// The Cache-Control value for `path`.
    pub fn cache_control(&self, path: &str) -> &str {
        self.cache_rules
            .iter()
            .find(|r| path.ends_with(&r.suffix))
            .map_or(&self.default_cache_control, |r| &r.cache_control)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The deployments' origin configs parse and check, and the Compose one names the
    /// modes the container test cuts a region off under.
    #[test]
    fn the_deployment_origin_configs_parse_and_check() {
        let compose = OriginConfig::from_toml(include_str!("../../deploy/compose/origin.toml"))
            .expect("deploy/compose/origin.toml");
        let modes = compose.modes();
        assert_eq!(modes.of("/ttl/x"), Mode::Ttl);
        assert_eq!(modes.of("/direct/x"), Mode::Direct);
        assert_eq!(modes.of("/account/x"), Mode::Consistent);
        assert_eq!(modes.of("/video/demo/master.m3u8"), Mode::Invalidate);
        assert_eq!(compose.lease.get(), std::time::Duration::from_secs(2));
        OriginConfig::from_toml(include_str!("../../deploy/k8s/origin/origin.toml"))
            .expect("deploy/k8s/origin/origin.toml");
    }

    #[test]
    fn ladders_parse_from_toml_and_bad_ones_are_refused_by_name() {
        let c = OriginConfig::from_toml(
            r#"
[[ladders]]
name = "demo"
segment = "2s"
length = "60s"
[[ladders]]
name = "live"
live = true
window = 6
[[ladders.renditions]]
name = "low"
bandwidth = 600000
width = 640
height = 360
"#,
        )
        .unwrap();
        let l = c.built_ladders().unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].config().renditions.len(), 4, "the default ladder");
        assert_eq!(l[1].config().renditions[0].bandwidth, 600_000);
        assert!(l[1].config().live);
        let twice =
            OriginConfig::from_toml("[[ladders]]\nname = \"a\"\n[[ladders]]\nname = \"a\"\n");
        assert!(
            twice
                .unwrap_err()
                .to_string()
                .contains("ladder a is configured twice")
        );
        let typo = OriginConfig::from_toml("[[ladders]]\nname = \"a\"\nsegmnet = \"2s\"\n");
        assert!(typo.unwrap_err().to_string().contains("segmnet"));
        let short = OriginConfig::from_toml("[[ladders]]\nname = \"a\"\nsegment = \"5ms\"\n");
        assert!(
            short
                .unwrap_err()
                .to_string()
                .contains("ladder a: segment 5ms")
        );
    }
}

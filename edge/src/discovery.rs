//! Names to addresses: the origin's address and the region's membership from DNS.
//!
//! A statically linked binary's glibc resolves only `/etc/hosts`, and ring discovery needs
//! SRV records anyway, so lookups go through hickory's resolver (pure Rust; it reads
//! `/etc/resolv.conf`, which Docker and Kubernetes mount into every container, search
//! domains and `ndots` included). Everything else sees the [`Resolve`] trait, so the
//! membership rules are tested against a table, and the resolver itself against a DNS stub.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

use crate::config::{DiscoverySection, EdgeConfig, HostPort};
use crate::error::EdgeError;

/// Why a name gave no address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DnsError {
    /// The name exists nowhere, or has no records of the type asked.
    #[error("{name}: no records")]
    NoRecords {
        /// The name looked up.
        name: String,
    },
    /// The lookup did not complete (timeout, server failure, no resolver configuration).
    #[error("{name}: lookup failed: {reason}")]
    Failed {
        /// The name looked up.
        name: String,
        /// What went wrong.
        reason: String,
    },
}

/// A lookup in progress.
pub(crate) type Lookup<'a, T> = Pin<Box<dyn Future<Output = Result<T, DnsError>> + Send + 'a>>;

/// What the edge asks of DNS.
pub(crate) trait Resolve: Send + Sync + fmt::Debug {
    /// The addresses of `host`.
    fn ips<'a>(&'a self, host: &'a str) -> Lookup<'a, Vec<IpAddr>>;
    /// The targets (name, port) of the SRV record `name`.
    fn srv<'a>(&'a self, name: &'a str) -> Lookup<'a, Vec<(String, u16)>>;
}

/// DNS through hickory: the system's configuration, or one given name server.
pub(crate) struct DnsResolver {
    inner: TokioResolver,
}

impl fmt::Debug for DnsResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DnsResolver")
    }
}

impl DnsResolver {
    /// A resolver for `c`: `c.nameserver` when set, else `/etc/resolv.conf`. Answers are
    /// not cached here: membership is re-read every `c.every`, and a stale answer would
    /// hold a pod that left on the ring for the rest of its TTL.
    pub(crate) fn new(c: &DiscoverySection) -> Result<Self, DnsError> {
        let failed = |reason: String| DnsError::Failed {
            name: "resolver configuration".into(),
            reason,
        };
        let provider = TokioRuntimeProvider::default();
        let mut builder = match c.nameserver {
            Some(ns) => {
                let mut server = NameServerConfig::udp_and_tcp(ns.ip());
                for conn in &mut server.connections {
                    conn.port = ns.port();
                }
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![server]),
                    provider,
                )
            }
            None => TokioResolver::builder(provider)
                .map_err(|e| failed(format!("/etc/resolv.conf: {e}")))?,
        };
        let opts = builder.options_mut();
        opts.timeout = c.timeout.get();
        opts.attempts = 1;
        opts.cache_size = 0;
        let inner = builder.build().map_err(|e| failed(e.to_string()))?;
        Ok(Self { inner })
    }
}

fn lookup_error(name: &str, e: &hickory_resolver::net::NetError) -> DnsError {
    use hickory_resolver::net::NetError;
    use hickory_resolver::proto::ProtoError;
    match e {
        NetError::Dns(hickory_resolver::net::DnsError::NoRecordsFound(_)) => DnsError::NoRecords {
            name: name.to_string(),
        },
        NetError::Proto(ProtoError::Msg(m)) => DnsError::Failed {
            name: name.to_string(),
            reason: m.clone(),
        },
        other => DnsError::Failed {
            name: name.to_string(),
            reason: other.to_string(),
        },
    }
}

impl Resolve for DnsResolver {
    fn ips<'a>(&'a self, host: &'a str) -> Lookup<'a, Vec<IpAddr>> {
        Box::pin(async move {
            let found = self
                .inner
                .lookup_ip(host)
                .await
                .map_err(|e| lookup_error(host, &e))?;
            Ok(found.iter().collect())
        })
    }

    fn srv<'a>(&'a self, name: &'a str) -> Lookup<'a, Vec<(String, u16)>> {
        Box::pin(async move {
            let found = self
                .inner
                .srv_lookup(name)
                .await
                .map_err(|e| lookup_error(name, &e))?;
            Ok(found
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(srv) => Some((srv.target.to_ascii(), srv.port)),
                    _ => None,
                })
                .collect())
        })
    }
}

/// The address of `hp`: itself for an IP literal, else the first address its name has.
pub(crate) async fn address(resolver: &dyn Resolve, hp: &HostPort) -> Result<SocketAddr, DnsError> {
    if let Some(a) = hp.socket_addr() {
        return Ok(a);
    }
    let ips = resolver.ips(hp.host()).await?;
    // One address per peer: prefer IPv4 where a name has both, as the listeners of a
    // dual-stack cluster are reached by either and the choice must not flap between them.
    ips.iter()
        .find(|ip| ip.is_ipv4())
        .or(ips.first())
        .map(|ip| SocketAddr::new(*ip, hp.port()))
        .ok_or_else(|| DnsError::NoRecords {
            name: hp.host().to_string(),
        })
}

/// The address of `hp` through the system's DNS configuration (`/etc/resolv.conf`), read
/// by hickory rather than the C library: a statically linked binary has no NSS, so the
/// system resolver would see only `/etc/hosts`. For tools that take edges by name.
pub async fn lookup(hp: &HostPort) -> Result<SocketAddr, EdgeError> {
    if let Some(a) = hp.socket_addr() {
        return Ok(a);
    }
    let resolver = DnsResolver::new(&DiscoverySection::default())
        .map_err(|e| EdgeError::Config(format!("DNS: {e}")))?;
    address(&resolver, hp)
        .await
        .map_err(|e| EdgeError::Config(format!("{hp}: {e}")))
}

/// The region's other edges as DNS has them now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Membership {
    /// Node ids on the ring beside this edge's.
    pub(crate) ids: BTreeSet<String>,
    /// Their addresses, where known (a configured peer whose name stopped resolving keeps
    /// its place on the ring, so every edge's ring stays the same; forwards skip it).
    pub(crate) addrs: BTreeMap<String, SocketAddr>,
}

impl Membership {
    /// The configured peers whose address needs no lookup.
    pub(crate) fn literal(c: &EdgeConfig) -> Self {
        let mut m = Self::default();
        for (id, hp) in c.peers.iter().filter(|(id, _)| **id != c.node_id) {
            m.ids.insert(id.clone());
            if let Some(a) = hp.socket_addr() {
                m.addrs.insert(id.clone(), a);
            }
        }
        m
    }
}

/// Whether `c` names anything DNS must answer.
pub(crate) fn needed(c: &EdgeConfig) -> bool {
    c.discovery.srv.is_some() || c.peers.values().any(|hp| hp.socket_addr().is_none())
}

/// The node id of an SRV target: its first label (a StatefulSet pod's name, stable across
/// restarts).
fn node_id(target: &str) -> Option<&str> {
    target.split('.').next().filter(|l| !l.is_empty())
}

/// Resolves the region now: the configured peers (their names looked up; one that fails
/// keeps its `last` address) and, with `discovery.srv`, the SRV targets (one whose name
/// fails is left off the ring until it resolves). Fails only when the SRV lookup itself
/// fails, so the caller keeps the membership it has rather than shrinking the ring on a
/// DNS outage; an SRV name with no records is an empty region.
pub(crate) async fn resolve(
    c: &EdgeConfig,
    resolver: &dyn Resolve,
    last: &Membership,
) -> Result<Membership, DnsError> {
    let mut m = Membership::default();
    for (id, hp) in c.peers.iter().filter(|(id, _)| **id != c.node_id) {
        m.ids.insert(id.clone());
        match address(resolver, hp).await {
            Ok(a) => {
                m.addrs.insert(id.clone(), a);
            }
            Err(e) => {
                tracing::debug!(peer = %id, "peer address: {e}");
                if let Some(a) = last.addrs.get(id) {
                    m.addrs.insert(id.clone(), *a);
                }
            }
        }
    }
    let Some(srv) = &c.discovery.srv else {
        return Ok(m);
    };
    let targets = match resolver.srv(srv).await {
        Ok(t) => t,
        Err(DnsError::NoRecords { .. }) => Vec::new(),
        Err(e) => return Err(e),
    };
    for (target, port) in targets {
        let Some(id) = node_id(&target) else { continue };
        if id == c.node_id || m.ids.contains(id) {
            continue;
        }
        let host = target.trim_end_matches('.');
        match resolver.ips(host).await {
            Ok(ips) => {
                let ip = ips.iter().find(|ip| ip.is_ipv4()).or(ips.first());
                if let Some(ip) = ip {
                    m.ids.insert(id.to_string());
                    m.addrs.insert(id.to_string(), SocketAddr::new(*ip, port));
                }
            }
            Err(e) => tracing::debug!(%target, "SRV target address: {e}"),
        }
    }
    Ok(m)
}

/// Resolves `c`'s region every `c.discovery.every` until `cancel`, handing each result to
/// `apply` (which keeps the ring as it is when nothing changed); `on_error` hears of a
/// failed round, whose membership stays as it was.
pub(crate) async fn follow(
    c: &EdgeConfig,
    resolver: &dyn Resolve,
    mut last: Membership,
    cancel: tokio_util::sync::CancellationToken,
    apply: impl Fn(&Membership),
    on_error: impl Fn(&DnsError),
) {
    let every: Duration = c.discovery.every.get();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match resolve(c, resolver, &last).await {
            Ok(m) => {
                apply(&m);
                last = m;
            }
            Err(e) => {
                tracing::warn!("ring discovery: {e}; keeping the membership as it was");
                on_error(&e);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// DNS as a table the test edits: host → addresses, SRV name → targets; a name in
    /// `failing` fails as a timed-out lookup would.
    #[derive(Debug, Default)]
    pub(crate) struct Table {
        pub(crate) hosts: Mutex<HashMap<String, Vec<IpAddr>>>,
        pub(crate) srv: Mutex<HashMap<String, Vec<(String, u16)>>>,
        pub(crate) failing: Mutex<BTreeSet<String>>,
    }

    impl Table {
        fn answer<T: Clone>(
            &self,
            name: &str,
            map: &Mutex<HashMap<String, Vec<T>>>,
        ) -> Result<Vec<T>, DnsError> {
            if self.failing.lock().unwrap().contains(name) {
                return Err(DnsError::Failed {
                    name: name.into(),
                    reason: "timed out".into(),
                });
            }
            map.lock()
                .unwrap()
                .get(name)
                .cloned()
                .ok_or(DnsError::NoRecords { name: name.into() })
        }

        pub(crate) fn set_pods(&self, srv: &str, pods: &[(&str, [u8; 4])]) {
            let mut targets = Vec::new();
            for (pod, ip) in pods {
                let host = format!("{pod}.edge-eu.shoal.svc.cluster.local");
                self.hosts
                    .lock()
                    .unwrap()
                    .insert(host.clone(), vec![IpAddr::from(*ip)]);
                targets.push((format!("{host}."), 8080));
            }
            self.srv.lock().unwrap().insert(srv.into(), targets);
        }
    }

    impl Resolve for Table {
        fn ips<'a>(&'a self, host: &'a str) -> Lookup<'a, Vec<IpAddr>> {
            Box::pin(async move { self.answer(host, &self.hosts) })
        }

        fn srv<'a>(&'a self, name: &'a str) -> Lookup<'a, Vec<(String, u16)>> {
            Box::pin(async move { self.answer(name, &self.srv) })
        }
    }

    const SRV: &str = "_http._tcp.edge-eu.shoal.svc.cluster.local";

    fn srv_config(me: &str) -> EdgeConfig {
        let mut c = EdgeConfig {
            node_id: me.into(),
            ..EdgeConfig::default()
        };
        c.discovery.srv = Some(SRV.into());
        c
    }

    #[tokio::test]
    async fn srv_targets_become_members_named_by_their_first_label() {
        let dns = Table::default();
        dns.set_pods(
            SRV,
            &[
                ("edge-0", [10, 0, 0, 10]),
                ("edge-1", [10, 0, 0, 11]),
                ("edge-2", [10, 0, 0, 12]),
            ],
        );
        let c = srv_config("edge-0");
        let m = resolve(&c, &dns, &Membership::default()).await.unwrap();
        assert_eq!(m.ids, BTreeSet::from(["edge-1".into(), "edge-2".into()]));
        assert_eq!(m.addrs["edge-2"], "10.0.0.12:8080".parse().unwrap());
        // A pod whose own name does not resolve yet stays off the ring.
        dns.hosts
            .lock()
            .unwrap()
            .remove("edge-2.edge-eu.shoal.svc.cluster.local");
        let m = resolve(&c, &dns, &m).await.unwrap();
        assert_eq!(m.ids, BTreeSet::from(["edge-1".into()]));
        // No records at all (every pod unready): this edge alone.
        dns.srv.lock().unwrap().clear();
        assert_eq!(resolve(&c, &dns, &m).await.unwrap(), Membership::default());
        // A failed lookup is an error the caller answers by keeping what it has.
        dns.failing.lock().unwrap().insert(SRV.into());
        assert!(matches!(
            resolve(&c, &dns, &m).await,
            Err(DnsError::Failed { .. })
        ));
    }

    #[tokio::test]
    async fn configured_names_keep_their_place_and_last_address_when_dns_fails() {
        let dns = Table::default();
        dns.hosts
            .lock()
            .unwrap()
            .insert("edge-eu-2".into(), vec![IpAddr::from([10, 231, 1, 12])]);
        let mut c = EdgeConfig {
            node_id: "eu-1".into(),
            ..EdgeConfig::default()
        };
        c.peers
            .insert("eu-2".into(), "edge-eu-2:8080".parse().unwrap());
        c.peers
            .insert("eu-3".into(), "10.231.1.13:8080".parse().unwrap());
        c.peers
            .insert("eu-1".into(), "edge-eu-1:8080".parse().unwrap());
        assert!(needed(&c));
        assert_eq!(
            Membership::literal(&c).addrs.keys().collect::<Vec<_>>(),
            ["eu-3"]
        );
        let m = resolve(&c, &dns, &Membership::default()).await.unwrap();
        assert_eq!(m.ids, BTreeSet::from(["eu-2".into(), "eu-3".into()]));
        assert_eq!(m.addrs["eu-2"], "10.231.1.12:8080".parse().unwrap());
        // The container is gone from DNS (stopped): the peer keeps its ring place and its
        // last address; the probe marks it down.
        dns.hosts.lock().unwrap().clear();
        let again = resolve(&c, &dns, &m).await.unwrap();
        assert_eq!(again, m);
        // Never resolved: on the ring, without an address (forwards skip it).
        let fresh = resolve(&c, &dns, &Membership::default()).await.unwrap();
        assert!(fresh.ids.contains("eu-2") && !fresh.addrs.contains_key("eu-2"));
    }

    #[test]
    fn a_target_names_its_node_by_the_first_label() {
        assert_eq!(
            node_id("edge-3.edge-eu.shoal.svc.cluster.local."),
            Some("edge-3")
        );
        assert_eq!(node_id(".x"), None);
    }
}

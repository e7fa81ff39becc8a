//! An in-process Shoal deployment on loopback: one origin and regions of edges, every
//! listener on `127.0.0.1:0`. Used by the demo and the integration tests, so both run the
//! real servers over real sockets (QUIC with TLS between edges and origin, HTTP to clients).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_cache_core::RegionMap;

use shoal_client::RegionClient;
use shoal_edge::{Edge, EdgeConfig};
use shoal_origin::tls::Identity;
use shoal_origin::{ObjectStore, Origin, OriginConfig};
use tokio::net::TcpListener;

use crate::LoadgenError;
use crate::harness::relay::Relay;

/// Host name clients use for cluster content.
pub const HOST: &str = "demo.shoal.test";

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Region names.
    pub regions: Vec<String>,
    /// Edges per region.
    pub edges_per_region: usize,
    /// Origin settings (listen addresses are replaced by loopback ports).
    pub origin: OriginConfig,
    /// Template for every edge (ids, addresses, peers and origin link are filled in).
    pub edge: EdgeConfig,
    /// Route edge ↔ origin traffic through a [`Relay`] (for delay and partitions).
    pub relay: bool,
    /// Give each region its own relay to the origin, so one region can be cut off alone.
    pub region_relays: bool,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            regions: vec!["eu".into(), "us".into(), "ap".into()],
            edges_per_region: 2,
            origin: OriginConfig::default(),
            edge: EdgeConfig::default(),
            relay: false,
            region_relays: false,
        }
    }
}

/// One region's edges.
#[derive(Debug)]
pub struct Region {
    /// Region name.
    pub name: String,
    /// Edge ids, in order.
    pub ids: Vec<String>,
    /// Edge client addresses, in order.
    pub addrs: Vec<SocketAddr>,
    /// Running edges (`None` once stopped).
    pub edges: Vec<Option<Edge>>,
    /// The region's own relay to the origin, if the spec asked for one.
    pub relay: Option<Relay>,
    /// Each edge's configuration, to restart it as it was.
    configs: Vec<EdgeConfig>,
}

/// A running cluster.
#[derive(Debug)]
pub struct Cluster {
    /// The origin (`None` while stopped).
    pub origin: Option<Origin>,
    /// The regions.
    pub regions: Vec<Region>,
    /// The relay between edges and origin, if the spec asked for one.
    pub relay: Option<Relay>,
    /// The edge template: clients route with the same vnodes and key policy.
    edge_template: EdgeConfig,
    origin_config: OriginConfig,
    store: Arc<ObjectStore>,
    dir: PathBuf,
}

fn io(e: std::io::Error) -> LoadgenError {
    LoadgenError::Harness(e)
}

impl Cluster {
    /// Starts the origin and every edge.
    pub async fn start(spec: ClusterSpec) -> Result<Self, LoadgenError> {
        // A stable identity on disk, so a restarted origin keeps the certificate edges pin.
        let dir = std::env::temp_dir().join(format!(
            "shoal-cluster-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).map_err(io)?;
        let id = Identity::self_signed(&["localhost".into()])?;
        let (cert, key) = (dir.join("origin.pem"), dir.join("origin.key"));
        std::fs::write(&cert, id.cert_pem()).map_err(io)?;
        std::fs::write(&key, id.key_pem()).map_err(io)?;
        let origin_config = OriginConfig {
            quic_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            cert: Some(cert.clone()),
            key: Some(key),
            ..spec.origin
        };
        let origin = Origin::start(origin_config.clone(), None).await?;
        let store = origin.store.clone();
        let origin_config = OriginConfig {
            quic_listen: origin.quic_addr,
            ..origin_config
        };
        let relay = if spec.relay {
            Some(Relay::start(origin.quic_addr).await.map_err(io)?)
        } else {
            None
        };
        let origin_addr = relay.as_ref().map_or(origin.quic_addr, |r| r.addr);
        let mut regions = Vec::new();
        for name in &spec.regions {
            let region_relay = if spec.region_relays {
                Some(Relay::start(origin_addr).await.map_err(io)?)
            } else {
                None
            };
            let origin_addr = region_relay.as_ref().map_or(origin_addr, |r| r.addr);
            let mut listeners = Vec::new();
            for _ in 0..spec.edges_per_region {
                let http = TcpListener::bind("127.0.0.1:0").await.map_err(io)?;
                let admin = TcpListener::bind("127.0.0.1:0").await.map_err(io)?;
                listeners.push((http, admin));
            }
            let ids: Vec<String> = (0..spec.edges_per_region)
                .map(|i| format!("{name}-{}", i + 1))
                .collect();
            let addrs: Vec<SocketAddr> = listeners
                .iter()
                .map(|(h, _)| h.local_addr().map_err(io))
                .collect::<Result<_, _>>()?;
            let (mut edges, mut configs) = (Vec::new(), Vec::new());
            for (i, (http, admin)) in listeners.into_iter().enumerate() {
                let mut c = spec.edge.clone();
                c.node_id = ids[i].clone();
                c.region = name.clone();
                c.listen = addrs[i];
                c.peers = ids
                    .iter()
                    .cloned()
                    .zip(addrs.iter().map(|a| (*a).into()))
                    .collect();
                c.origin.addr = origin_addr.into();
                c.origin.fingerprint = Some(origin.fingerprint.clone());
                c.origin.cert_file = None;
                configs.push(EdgeConfig {
                    admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                    ..c.clone()
                });
                let edge = Edge::start_with(c, http, admin).await?;
                edges.push(Some(edge));
            }
            regions.push(Region {
                name: name.clone(),
                ids,
                addrs,
                edges,
                relay: region_relay,
                configs,
            });
        }
        Ok(Self {
            origin: Some(origin),
            regions,
            relay,
            edge_template: spec.edge,
            origin_config,
            store,
            dir,
        })
    }

    /// The origin's object store (write content here).
    pub fn store(&self) -> &Arc<ObjectStore> {
        &self.store
    }

    /// Region `r`'s routing contract, as its edges built it.
    pub fn region_map(&self, r: usize) -> Result<RegionMap, LoadgenError> {
        let reg = &self.regions[r];
        let mut c = self.edge_template.clone();
        c.node_id.clone_from(&reg.ids[0]);
        c.peers = reg
            .ids
            .iter()
            .cloned()
            .zip(reg.addrs.iter().map(|a| (*a).into()))
            .collect();
        Ok(c.region_map()?)
    }

    /// A client for region `r`, routing with the region's own map.
    pub fn client(&self, r: usize) -> Result<RegionClient, LoadgenError> {
        let reg = &self.regions[r];
        let edges = reg
            .ids
            .iter()
            .cloned()
            .zip(reg.addrs.iter().copied())
            .collect();
        Ok(RegionClient::new(edges, HOST, self.region_map(r)?)?)
    }

    /// Waits (polling, bounded by `limit`) until every running edge is ready, as a load
    /// balancer would before sending traffic.
    pub async fn wait_ready(&self, limit: Duration) -> Result<(), LoadgenError> {
        let start = Instant::now();
        loop {
            let not_ready = self
                .regions
                .iter()
                .flat_map(|r| r.edges.iter().flatten())
                .filter(|e| !e.is_ready())
                .count();
            if not_ready == 0 {
                return Ok(());
            }
            if start.elapsed() >= limit {
                return Err(LoadgenError::NotReady {
                    not_ready,
                    waited: start.elapsed(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The running edge `i` of region `r`.
    pub fn edge(&self, r: usize, i: usize) -> Option<&Edge> {
        self.regions.get(r)?.edges.get(i)?.as_ref()
    }

    /// Stops edge `i` of region `r` (graceful; its port then refuses connections).
    pub async fn stop_edge(&mut self, r: usize, i: usize) {
        if let Some(e) = self.regions[r].edges[i].take() {
            e.shutdown().await;
        }
    }

    /// Kills edge `i` of region `r` at once, as a crash would: no drain, connections
    /// dropped, its unflushed `write-back` writes lost.
    pub fn kill_edge(&mut self, r: usize, i: usize) {
        if let Some(e) = self.regions[r].edges[i].take() {
            e.kill();
        }
    }

    /// Starts edge `i` of region `r` again on the same address (with an empty cache, as
    /// a restarted process has), after it was stopped or killed.
    pub async fn restart_edge(&mut self, r: usize, i: usize) -> Result<(), LoadgenError> {
        if self.regions[r].edges[i].is_none() {
            let e = Edge::start(self.regions[r].configs[i].clone()).await?;
            self.regions[r].edges[i] = Some(e);
        }
        Ok(())
    }

    /// Stops the origin.
    pub async fn stop_origin(&mut self) {
        if let Some(o) = self.origin.take() {
            o.shutdown().await;
        }
    }

    /// Starts the origin again on the same address, with the same certificate and objects.
    pub async fn restart_origin(&mut self) -> Result<(), LoadgenError> {
        let o = Origin::start(self.origin_config.clone(), Some(self.store.clone())).await?;
        self.origin = Some(o);
        Ok(())
    }

    /// Stops everything.
    pub async fn shutdown(mut self) {
        for r in &mut self.regions {
            for e in &mut r.edges {
                if let Some(e) = e.take() {
                    e.shutdown().await;
                }
            }
        }
        self.stop_origin().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

//! The other edges of the region: the ring they form with this edge, their addresses,
//! their health, and the HTTP client that forwards to them. Membership can change while
//! the edge runs (ring discovery): requests read one consistent snapshot, [`Members`].

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use shoal_cache_core::{KeyPolicy, RegionMap};

use crate::discovery::Membership;
use crate::error::EdgeError;

/// One region peer and its health.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    down_until: Mutex<Option<Instant>>,
    /// Woken when the peer is found down, so forwards waiting on it give up at once
    /// (a killed host sends no RST: they would wait out their whole timeout).
    gone: tokio::sync::Notify,
}

impl Peer {
    /// Whether the peer failed recently and should be skipped.
    pub(crate) fn is_down(&self, now: Instant) -> bool {
        self.down_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| now < t)
    }

    /// Skips the peer until `now + for_`, and ends the forwards waiting on it.
    pub(crate) fn mark_down(&self, now: Instant, for_: Duration) {
        *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(now + for_);
        self.gone.notify_waiters();
    }

    fn mark_up(&self) {
        *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Resolves when the peer is next found down.
    pub(crate) fn gone(&self) -> tokio::sync::futures::Notified<'_> {
        self.gone.notified()
    }
}

/// The region as one request sees it: the ring and the peers' addresses and health.
#[derive(Debug)]
pub(crate) struct Members {
    /// Ring and key policy: the same contract the region's clients use.
    pub(crate) region: RegionMap,
    map: HashMap<String, Arc<Peer>>,
}

impl Members {
    /// The peer with `id`, where its address is known.
    pub(crate) fn get(&self, id: &str) -> Option<&Arc<Peer>> {
        self.map.get(id)
    }
}

/// How the ring changed in an update.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct RingChange {
    /// Nodes that joined.
    pub(crate) joined: Vec<String>,
    /// Nodes that left.
    pub(crate) left: Vec<String>,
}

/// The region's other edges.
#[derive(Debug)]
pub(crate) struct Peers {
    now: RwLock<Arc<Members>>,
    node_id: String,
    vnodes: u32,
    keys: KeyPolicy,
    pub(crate) client: Client<HttpConnector, Full<Bytes>>,
    pub(crate) down_for: Duration,
}

impl Peers {
    /// This edge (`node_id`) and the peers of `m` on a ring of `vnodes` virtual nodes each;
    /// connecting to a peer is bounded by `connect`.
    pub(crate) fn new(
        node_id: &str,
        vnodes: u32,
        keys: KeyPolicy,
        m: &Membership,
        connect: Duration,
        down_for: Duration,
    ) -> Result<Self, EdgeError> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect));
        connector.set_nodelay(true);
        let peers = Self {
            now: RwLock::new(Arc::new(Members {
                region: RegionMap::default(),
                map: HashMap::new(),
            })),
            node_id: node_id.to_string(),
            vnodes,
            keys,
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector),
            down_for,
        };
        peers.update(m)?;
        Ok(peers)
    }

    /// The region now.
    pub(crate) fn now(&self) -> Arc<Members> {
        self.now.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Takes the membership `m`: a new ring when its nodes changed (keys move only to and
    /// from the nodes that joined or left, as consistent hashing promises), new addresses
    /// where they moved. A peer whose address stayed keeps its health.
    pub(crate) fn update(&self, m: &Membership) -> Result<RingChange, EdgeError> {
        let old = self.now();
        let old_ids: BTreeSet<&str> = old
            .region
            .ring()
            .nodes()
            .filter(|n| *n != self.node_id)
            .collect();
        let new_ids: BTreeSet<&str> = m.ids.iter().map(String::as_str).collect();
        let change = RingChange {
            joined: new_ids
                .difference(&old_ids)
                .map(|s| s.to_string())
                .collect(),
            left: old_ids
                .difference(&new_ids)
                .map(|s| s.to_string())
                .collect(),
        };
        let region = if old.region.is_empty() || change != RingChange::default() {
            let nodes = std::iter::once(self.node_id.as_str()).chain(new_ids.iter().copied());
            RegionMap::new(self.vnodes, nodes, self.keys.clone())
                .map_err(|e| EdgeError::Config(e.to_string()))?
        } else {
            old.region.clone()
        };
        let map = m
            .addrs
            .iter()
            .filter(|(id, _)| m.ids.contains(*id) && **id != self.node_id)
            .map(|(id, addr)| {
                let p = match old.map.get(id) {
                    Some(p) if p.addr == *addr => p.clone(),
                    _ => Arc::new(Peer {
                        addr: *addr,
                        down_until: Mutex::new(None),
                        gone: tokio::sync::Notify::new(),
                    }),
                };
                (id.clone(), p)
            })
            .collect();
        *self.now.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Members { region, map });
        Ok(change)
    }

    /// Probes every peer every `every` with a TCP connect bounded by `connect`, until
    /// `cancel`: a peer that does not accept is marked down (its waiting forwards end,
    /// its keys are served here), one that accepts again is marked up. So a peer that
    /// died without a word (SIGKILL, a lost host) is noticed within `every + connect`,
    /// not by every forward waiting out its timeout.
    pub(crate) async fn watch(
        &self,
        every: Duration,
        connect: Duration,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let now = self.now();
            let probes = now.map.values().map(|p| async move {
                let up = tokio::time::timeout(connect, tokio::net::TcpStream::connect(p.addr))
                    .await
                    .is_ok_and(|c| c.is_ok());
                if up {
                    p.mark_up();
                } else {
                    p.mark_down(Instant::now(), self.down_for);
                }
            });
            futures_util::future::join_all(probes).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn membership(peers: &[(&str, SocketAddr)]) -> Membership {
        Membership {
            ids: peers.iter().map(|(id, _)| id.to_string()).collect(),
            addrs: peers.iter().map(|(id, a)| (id.to_string(), *a)).collect(),
        }
    }

    fn peers(m: &Membership) -> Peers {
        Peers::new(
            "e1",
            64,
            KeyPolicy::default(),
            m,
            Duration::from_secs(1),
            Duration::from_secs(2),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_failed_peer_is_skipped_for_a_while() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let peers = peers(&membership(&[("e2", addr)]));
        let now = peers.now();
        let p = now.get("e2").unwrap();
        let t0 = Instant::now();
        assert!(!p.is_down(t0));
        p.mark_down(t0, peers.down_for);
        assert!(p.is_down(t0 + Duration::from_secs(1)));
        assert!(!p.is_down(t0 + Duration::from_secs(3)));
        assert!(now.get("e3").is_none());
    }

    #[tokio::test]
    async fn a_new_membership_moves_only_the_keys_of_the_nodes_that_came_or_went() {
        let a: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:3".parse().unwrap();
        let peers = peers(&membership(&[("e2", a)]));
        let before = peers.now();
        before
            .get("e2")
            .unwrap()
            .mark_down(Instant::now(), Duration::from_secs(60));
        let keys: Vec<_> = (0..2000)
            .map(|i| before.region.key("h.test", &format!("/o/{i}")).unwrap())
            .collect();
        // e3 joins: keys move only to it; e2 keeps its health (same address).
        let change = peers.update(&membership(&[("e2", a), ("e3", b)])).unwrap();
        assert_eq!(change.joined, ["e3"]);
        assert!(change.left.is_empty());
        let after = peers.now();
        assert_eq!(after.region.len(), 3);
        assert!(after.get("e2").unwrap().is_down(Instant::now()));
        let mut moved = 0;
        for k in &keys {
            let (o, n) = (before.region.owner(k), after.region.owner(k));
            if o != n {
                assert_eq!(n, Some("e3"), "a key moved between nodes that stayed");
                moved += 1;
            }
        }
        assert!(
            (400..1000).contains(&moved),
            "about a third moved, got {moved}"
        );
        // e2 leaves: only its keys move, and the snapshot a request already holds is
        // unchanged.
        let change = peers.update(&membership(&[("e3", b)])).unwrap();
        assert_eq!(
            (change.joined.len(), change.left),
            (0, vec!["e2".to_string()])
        );
        let last = peers.now();
        for k in &keys {
            if after.region.owner(k) != Some("e2") {
                assert_eq!(after.region.owner(k), last.region.owner(k));
            }
        }
        assert!(last.get("e2").is_none() && after.get("e2").is_some());
        // Nothing changed: the same ring; a moved address: a fresh peer (healthy).
        last.get("e3")
            .unwrap()
            .mark_down(Instant::now(), Duration::from_secs(60));
        assert_eq!(
            peers.update(&membership(&[("e3", b)])).unwrap(),
            RingChange::default()
        );
        assert!(peers.now().get("e3").unwrap().is_down(Instant::now()));
        peers.update(&membership(&[("e3", a)])).unwrap();
        assert!(!peers.now().get("e3").unwrap().is_down(Instant::now()));
    }

    #[tokio::test]
    async fn the_watch_marks_a_silent_peer_down_ends_its_forwards_and_brings_it_back() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_addr = listener.local_addr().unwrap();
        // A port nobody listens on any more (tests stay on loopback, where a dead peer is
        // refused rather than silent; the probe's timeout covers the silent case).
        let gone_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_addr = gone_listener.local_addr().unwrap();
        drop(gone_listener);
        let peers = Arc::new(peers(&membership(&[("up", up_addr), ("dead", dead_addr)])));
        let now = peers.now();
        let dead = now.get("dead").unwrap();
        let waiting = dead.gone();
        let cancel = tokio_util::sync::CancellationToken::new();
        let watch = tokio::spawn({
            let (p, c) = (peers.clone(), cancel.clone());
            async move {
                p.watch(Duration::from_millis(50), Duration::from_millis(100), c)
                    .await
            }
        });
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a forward waiting on the dead peer was woken");
        assert!(dead.is_down(Instant::now()));
        let up = now.get("up").unwrap();
        assert!(!up.is_down(Instant::now()));
        // A peer marked down by a failed forward comes back at the next probe.
        up.mark_down(Instant::now(), Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!up.is_down(Instant::now()));
        cancel.cancel();
        watch.await.unwrap();
    }
}

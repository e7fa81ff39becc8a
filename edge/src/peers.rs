//! The other edges of the region: their addresses, their health, and the HTTP client that
//! forwards to them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

/// One region peer and its health.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    down_until: Mutex<Option<Instant>>,
}

impl Peer {
    /// Whether the peer failed recently and should be skipped.
    pub(crate) fn is_down(&self, now: Instant) -> bool {
        self.down_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| now < t)
    }

    /// Skips the peer until `now + for_`.
    pub(crate) fn mark_down(&self, now: Instant, for_: Duration) {
        *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(now + for_);
    }
}

/// The region's other edges.
#[derive(Debug)]
pub(crate) struct Peers {
    map: HashMap<String, Peer>,
    pub(crate) client: Client<HttpConnector, Full<Bytes>>,
    pub(crate) down_for: Duration,
}

impl Peers {
    /// Peers at `addrs`; connecting to one is bounded by `connect`.
    pub(crate) fn new<'a>(
        addrs: impl IntoIterator<Item = (&'a String, &'a SocketAddr)>,
        connect: Duration,
        down_for: Duration,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect));
        connector.set_nodelay(true);
        Self {
            map: addrs
                .into_iter()
                .map(|(id, addr)| {
                    let p = Peer {
                        addr: *addr,
                        down_until: Mutex::new(None),
                    };
                    (id.clone(), p)
                })
                .collect(),
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector),
            down_for,
        }
    }

    /// The peer with `id`.
    pub(crate) fn get(&self, id: &str) -> Option<&Peer> {
        self.map.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_peer_is_skipped_for_a_while() {
        let id = "e2".to_string();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let peers = Peers::new(
            [(&id, &addr)],
            Duration::from_secs(1),
            Duration::from_secs(2),
        );
        let p = peers.get("e2").unwrap();
        let t0 = Instant::now();
        assert!(!p.is_down(t0));
        p.mark_down(t0, peers.down_for);
        assert!(p.is_down(t0 + Duration::from_secs(1)));
        assert!(!p.is_down(t0 + Duration::from_secs(3)));
        assert!(peers.get("e3").is_none());
    }
}

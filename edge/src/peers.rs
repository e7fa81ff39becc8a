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
                        gone: tokio::sync::Notify::new(),
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
            let probes = self.map.values().map(|p| async move {
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

    #[tokio::test]
    async fn the_watch_marks_a_silent_peer_down_ends_its_forwards_and_brings_it_back() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (up_id, up_addr) = ("up".to_string(), listener.local_addr().unwrap());
        // A port nobody listens on any more (tests stay on loopback, where a dead peer is
        // refused rather than silent; the probe's timeout covers the silent case).
        let gone_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_addr = gone_listener.local_addr().unwrap();
        drop(gone_listener);
        let dead_id = "dead".to_string();
        let peers = std::sync::Arc::new(Peers::new(
            [(&up_id, &up_addr), (&dead_id, &dead_addr)],
            Duration::from_secs(1),
            Duration::from_secs(2),
        ));
        let dead = peers.get("dead").unwrap();
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
        assert!(!peers.get("up").unwrap().is_down(Instant::now()));
        // A peer marked down by a failed forward comes back at the next probe.
        peers
            .get("up")
            .unwrap()
            .mark_down(Instant::now(), Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!peers.get("up").unwrap().is_down(Instant::now()));
        cancel.cancel();
        watch.await.unwrap();
    }
}

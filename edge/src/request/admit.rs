//! Phase 0, **admit**: shed what the edge cannot serve well before doing any work for it.
//! A client over its rate gets a 429; with `max_inflight` requests already in progress, a
//! 503. Both carry `Retry-After` and cost microseconds, so a spike is refused fast instead
//! of slowing every request down. (The third limit, the origin fill queue, sits in the fill
//! phase, so hits are never queued behind misses.)

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::OverloadSection;
use crate::error::EdgeError;

type Limiter = RateLimiter<IpAddr, HashMapStateStore<IpAddr>, DefaultClock>;

/// The edge's admission limits.
#[derive(Debug)]
pub(crate) struct Admission {
    per_client: Option<Limiter>,
    client_ip_header: Option<String>,
    /// Addresses of the region's other edges: their forwards were admitted where the
    /// client connected, and must not count as one client here. Replaced when ring
    /// discovery finds new members.
    peers: std::sync::RwLock<Vec<IpAddr>>,
    inflight: Arc<Semaphore>,
    pub(crate) fills: Arc<Semaphore>,
    pub(crate) fill_wait: Duration,
    /// Fills waiting for a slot now, and how many may.
    fill_waiting: AtomicUsize,
    max_fill_queue: usize,
}

/// A fill's place in the queue for a slot; dropping it leaves the queue.
pub(crate) struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request's place among those in progress; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Admitted(#[allow(dead_code)] OwnedSemaphorePermit);

impl Admission {
    pub(crate) fn new(c: &OverloadSection, peers: Vec<IpAddr>) -> Self {
        let per_client = NonZeroU32::new(c.client_rate).map(|rate| {
            let burst = NonZeroU32::new(c.client_burst).unwrap_or(rate);
            RateLimiter::hashmap(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            per_client,
            client_ip_header: c.client_ip_header.clone(),
            peers: std::sync::RwLock::new(peers),
            inflight: Arc::new(Semaphore::new(c.max_inflight)),
            fills: Arc::new(Semaphore::new(c.max_fills)),
            fill_wait: c.fill_queue_timeout.get(),
            fill_waiting: AtomicUsize::new(0),
            max_fill_queue: c.max_fill_queue,
        }
    }

    /// The region's edges are now at `peers`.
    pub(crate) fn set_peers(&self, peers: Vec<IpAddr>) {
        *self.peers.write().unwrap_or_else(|e| e.into_inner()) = peers;
    }

    fn is_peer(&self, ip: IpAddr) -> bool {
        self.peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&ip)
    }

    /// A fill slot at once if one is free; else a place in the queue for one, or `None`
    /// when the queue is full (the miss is shed without waiting).
    pub(crate) fn fill_slot_or_queue(&self) -> Result<OwnedSemaphorePermit, Option<Waiting<'_>>> {
        if let Ok(slot) = self.fills.clone().try_acquire_owned() {
            return Ok(slot);
        }
        let before = self.fill_waiting.fetch_add(1, Ordering::AcqRel);
        let place = Waiting(&self.fill_waiting);
        if before >= self.max_fill_queue {
            return Err(None);
        }
        Err(Some(place))
    }

    /// The client a request counts against: the trusted header's address, else the peer's;
    /// none for a forward from a region peer (the header alone proves nothing).
    pub(crate) fn client(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Option<IpAddr> {
        if headers.contains_key(super::FORWARDED) && peer.is_some_and(|p| self.is_peer(p)) {
            return None;
        }
        self.client_ip_header
            .as_deref()
            .and_then(|h| headers.get(h))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .or(peer)
    }

    /// Whether the request is a forward from one of the region's edges: marked, and from a
    /// peer's address (the mark alone proves nothing).
    pub(crate) fn is_peer_forward(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> bool {
        headers.contains_key(super::FORWARDED) && peer.is_some_and(|p| self.is_peer(p))
    }

    /// Admits a request from `client`, or says why not.
    pub(crate) fn admit(&self, client: Option<IpAddr>) -> Result<Admitted, EdgeError> {
        if let (Some(limiter), Some(ip)) = (&self.per_client, client)
            && let Err(not_until) = limiter.check_key(&ip)
        {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return Err(EdgeError::RateLimited(wait));
        }
        self.inflight
            .clone()
            .try_acquire_owned()
            .map(Admitted)
            .map_err(|_| EdgeError::Overloaded("too many requests in progress"))
    }

    /// Forgets clients whose allowance is full again, so the table does not grow without
    /// bound; run it now and then.
    pub(crate) fn forget_idle_clients(&self) {
        if let Some(l) = &self.per_client {
            l.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_over_its_rate_is_refused_with_a_wait_and_others_are_not() {
        let a = Admission::new(
            &OverloadSection {
                client_rate: 5,
                ..OverloadSection::default()
            },
            vec![],
        );
        let (x, y): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for _ in 0..5 {
            a.admit(Some(x)).unwrap();
        }
        match a.admit(Some(x)) {
            Err(EdgeError::RateLimited(wait)) => assert!(wait <= Duration::from_millis(200)),
            other => panic!("expected a 429, got {other:?}"),
        }
        a.admit(Some(y)).unwrap();
        a.admit(None).unwrap(); // no address known: only the global limit applies
    }

    #[test]
    fn requests_beyond_max_inflight_are_shed_until_one_finishes() {
        let a = Admission::new(
            &OverloadSection {
                max_inflight: 2,
                ..OverloadSection::default()
            },
            vec![],
        );
        let first = a.admit(None).unwrap();
        let _second = a.admit(None).unwrap();
        assert!(matches!(a.admit(None), Err(EdgeError::Overloaded(_))));
        drop(first);
        a.admit(None).unwrap();
    }

    #[test]
    fn the_client_is_the_trusted_header_when_configured() {
        let edge: IpAddr = "10.0.0.2".parse().unwrap();
        let a = Admission::new(
            &OverloadSection {
                client_ip_header: Some("x-real-ip".into()),
                ..OverloadSection::default()
            },
            vec![edge],
        );
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(a.client(&h, Some(peer)), Some(peer));
        h.insert("x-real-ip", "203.0.113.9".parse().unwrap());
        assert_eq!(a.client(&h, Some(peer)), "203.0.113.9".parse().ok());
        h.insert("x-real-ip", "garbage".parse().unwrap());
        assert_eq!(a.client(&h, Some(peer)), Some(peer));
        // A forward counts only when it really comes from a region peer.
        h.insert(super::super::FORWARDED, "e2".parse().unwrap());
        assert_eq!(
            a.client(&h, Some(peer)),
            Some(peer),
            "a client setting the header"
        );
        assert_eq!(a.client(&h, Some(edge)), None, "the peer edge");
    }
}

//! Invalidations at the origin: the log, the live feed to subscribed edges, and their
//! acknowledgements.
//!
//! Every write, delete and purge appends to the [`Log`] and is sent to every subscribed edge
//! on its long-lived subscription stream (see `server`). Appending and broadcasting happen
//! under one lock, so a new subscriber's replay and the live feed neither miss nor reorder
//! an entry (overlaps are duplicates, which edges ignore by sequence number). Each
//! subscriber's highest acknowledged sequence number is kept, so a purge can wait until it
//! has taken effect at every edge.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shoal_cache_core::invalidation::{Log, Replay};
use shoal_cache_core::wire::{Invalidation, InvalidationTarget, Resume};
use tokio::sync::{broadcast, watch};

/// Live entries buffered per subscriber before it is considered lagging (it then catches
/// up from the log, or is reset).
const LIVE_BUFFER: usize = 4096;

/// The origin's invalidation state.
#[derive(Debug)]
pub struct Invalidator {
    log: Mutex<Log>,
    live: broadcast::Sender<Invalidation>,
    subscribers: Mutex<HashMap<u64, Subscriber>>,
    next_subscriber: AtomicU64,
    /// Lease expiry by edge id: kept after a subscription ends, until it runs out, since
    /// the edge may still serve under it.
    leases: Mutex<HashMap<String, Instant>>,
    /// Heartbeat interval announced to edges.
    pub heartbeat: Duration,
    /// Lease granted on each heartbeat.
    pub lease: Duration,
}

#[derive(Debug)]
struct Subscriber {
    edge_id: String,
    acked: watch::Sender<u64>,
}

/// A subscription's start: what to replay, and the live feed after it.
#[derive(Debug)]
pub(crate) struct Start {
    pub(crate) id: u64,
    pub(crate) epoch: u64,
    pub(crate) last_seq: u64,
    pub(crate) replay: Replay,
    pub(crate) live: broadcast::Receiver<Invalidation>,
}

/// How far a purge got within its wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Edges subscribed when the purge was made.
    pub subscribers: usize,
    /// Of those, how many acknowledged it (or a later entry) in time.
    pub acked: usize,
}

impl Invalidator {
    /// A log of `capacity` entries in a fresh random epoch.
    pub fn new(capacity: usize, heartbeat: Duration, lease: Duration) -> Self {
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        Self {
            log: Mutex::new(Log::new(random_epoch(), capacity)),
            live,
            subscribers: Mutex::new(HashMap::new()),
            next_subscriber: AtomicU64::new(1),
            leases: Mutex::new(HashMap::new()),
            heartbeat,
            lease,
        }
    }

    /// Grants (renews) `edge`'s lease if it has applied every invalidation published so
    /// far; returns the duration granted (zero: not renewed). Checked and recorded under
    /// the log's lock, so a write published concurrently either sees this lease when it
    /// waits, or this grant sees the write unacknowledged and is refused.
    pub(crate) fn grant(&self, edge: &str, acked: u64) -> Duration {
        let log = self.log();
        if acked < log.last_seq() {
            return Duration::ZERO;
        }
        let until = Instant::now() + self.lease;
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        leases.retain(|_, t| *t > Instant::now());
        leases.insert(edge.to_string(), until);
        drop(log);
        self.lease
    }

    /// Waits until every edge holding a lease has acknowledged `seq` (on any of its
    /// subscriptions) or its lease has expired: after this, no edge serves a copy older
    /// than the write that made `seq`. At most the lease duration.
    pub async fn wait_leases(&self, seq: u64) {
        let now = Instant::now();
        let holders: Vec<(String, Instant)> = self
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, t)| **t > now)
            .map(|(e, t)| (e.clone(), *t))
            .collect();
        let each = holders.into_iter().map(|(edge, until)| {
            let acks: Vec<watch::Receiver<u64>> = self
                .subs()
                .values()
                .filter(|s| s.edge_id == edge)
                .map(|s| s.acked.subscribe())
                .collect();
            async move {
                use futures_util::StreamExt;
                let mut acks: futures_util::stream::FuturesUnordered<_> = acks
                    .into_iter()
                    .map(|mut rx| async move { rx.wait_for(|a| *a >= seq).await.is_ok() })
                    .collect();
                // A subscription that ends is no acknowledgement: only the expiry is left.
                let acked = async {
                    while let Some(ok) = acks.next().await {
                        if ok {
                            return;
                        }
                    }
                    std::future::pending::<()>().await;
                };
                tokio::select! {
                    () = acked => {}
                    () = tokio::time::sleep_until(until.into()) => {}
                }
            }
        });
        futures_util::future::join_all(each).await;
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn subs(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Subscriber>> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends an invalidation and sends it to every subscriber.
    pub fn publish(&self, target: InvalidationTarget, soft: bool) -> Invalidation {
        let mut log = self.log();
        let inv = log.append(target, soft);
        // No receivers is fine: nobody is subscribed.
        let _ = self.live.send(inv.clone());
        inv
    }

    /// The log's newest sequence number.
    pub fn last_seq(&self) -> u64 {
        self.log().last_seq()
    }

    /// Edges subscribed now.
    pub fn subscriber_count(&self) -> usize {
        self.subs().len()
    }

    /// Registers a subscriber resuming at `resume`.
    pub(crate) fn subscribe(&self, edge_id: &str, resume: Option<Resume>) -> Start {
        let log = self.log();
        let live = self.live.subscribe();
        let id = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        let replay = log.replay(resume);
        let acked = match (&replay, resume) {
            (Replay::Entries(_), Some(r)) => r.seq,
            _ => log.last_seq(),
        };
        self.subs().insert(
            id,
            Subscriber {
                edge_id: edge_id.to_string(),
                acked: watch::Sender::new(acked),
            },
        );
        Start {
            id,
            epoch: log.epoch(),
            last_seq: log.last_seq(),
            replay,
            live,
        }
    }

    /// The live entries a lagging subscriber missed after `seq`, from the log.
    pub(crate) fn catch_up(&self, epoch: u64, seq: u64) -> Replay {
        self.log().replay(Some(Resume { epoch, seq }))
    }

    /// Records that subscriber `id` has applied everything up to `seq`.
    pub(crate) fn ack(&self, id: u64, seq: u64) {
        if let Some(s) = self.subs().get(&id) {
            s.acked.send_if_modified(|a| {
                let newer = seq > *a;
                *a = (*a).max(seq);
                newer
            });
        }
    }

    /// Forgets subscriber `id` (its stream ended).
    pub(crate) fn unsubscribe(&self, id: u64) {
        if let Some(s) = self.subs().remove(&id) {
            tracing::debug!(edge = %s.edge_id, "subscription ended");
        }
    }

    /// Waits until every edge subscribed now has acknowledged `seq`, its subscription
    /// ends (it will be reset or replayed when it returns), or `limit` passes.
    pub async fn wait_applied(&self, seq: u64, limit: Duration) -> Applied {
        let waiting: Vec<watch::Receiver<u64>> =
            self.subs().values().map(|s| s.acked.subscribe()).collect();
        let subscribers = waiting.len();
        let acked = AtomicU64::new(0);
        let each = waiting.into_iter().map(|mut rx| {
            let acked = &acked;
            async move {
                // `wait_for` fails when the subscription ends: not an acknowledgement.
                if rx.wait_for(|a| *a >= seq).await.is_ok() {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let _ = tokio::time::timeout(limit, futures_util::future::join_all(each)).await;
        Applied {
            subscribers,
            acked: acked.load(Ordering::Relaxed) as usize,
        }
    }
}

/// A random epoch, so a restarted origin's sequence numbers are never mistaken for the old
/// one's.
fn random_epoch() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    // On the (theoretical) failure of the system RNG, the clock still differs per start.
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
    }
    u64::from_le_bytes(b)
}

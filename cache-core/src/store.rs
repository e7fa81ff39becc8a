//! The byte-bounded object store with a selectable eviction policy and coalesced fills.
//!
//! [`Store`] is a cheap `Clone` handle. `lru` and `tinylfu` are moka's async cache with a
//! byte weigher and per-entry expiry ([`Cacheable::time_to_live`]: freshness lifetime plus
//! stale windows, a memory bound only — serving decisions stay with
//! [`crate::freshness`]); `s3fifo` is [`crate::s3fifo`]. All three sit behind the same
//! methods and the same fill coalescing, which is done here rather than with moka's
//! `try_get_with` so that every policy coalesces, fails and counts identically.

use std::any::{Any, TypeId};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

use crate::error::ConfigError;
use crate::freshness::FreshnessState;
use crate::object::{Cacheable, CachedObject};
use crate::s3fifo::S3Fifo;
use crate::status::NoStoreReason;

/// Eviction policy of a [`Store`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Least recently used (moka's LRU policy).
    Lru,
    /// moka's default: TinyLFU admission with LRU eviction (no window). Rejects new and
    /// large objects it has not seen often; measured below LRU on web and KV traces.
    TinyLfu,
    /// S3-FIFO (SOSP 2023), the default: highest hit ratio of the three on every trace in
    /// `../shared/traces` (see the README).
    #[default]
    S3Fifo,
}

impl Policy {
    /// Every policy, in a stable order.
    pub const ALL: [Self; 3] = [Self::Lru, Self::TinyLfu, Self::S3Fifo];

    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lru => "lru",
            Self::TinyLfu => "tinylfu",
            Self::S3Fifo => "s3fifo",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Policy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for Policy {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "lru" => Ok(Self::Lru),
            "tinylfu" => Ok(Self::TinyLfu),
            "s3fifo" => Ok(Self::S3Fifo),
            _ => Err(ConfigError::Policy(s.to_string())),
        }
    }
}

/// Store settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Capacity in bytes (in weight units: see [`Cacheable::weight`]). Default 256 MiB.
    pub capacity: u64,
    /// Objects heavier than this are never stored. Default 16 MiB; at most `u32::MAX`.
    pub max_object_size: u64,
    /// Eviction policy. Default [`Policy::S3Fifo`].
    pub policy: Policy,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            capacity: 256 << 20,
            max_object_size: 16 << 20,
            policy: Policy::default(),
        }
    }
}

impl StoreConfig {
    /// Checks the settings, naming the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.capacity == 0 {
            return Err(ConfigError::Invalid {
                field: "capacity",
                reason: "must be at least 1 byte".into(),
            });
        }
        if self.max_object_size == 0 || self.max_object_size > u64::from(u32::MAX) {
            return Err(ConfigError::Invalid {
                field: "max_object_size",
                reason: format!("must be between 1 and {} bytes", u32::MAX),
            });
        }
        Ok(())
    }
}

/// Why an entry left the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalCause {
    /// Evicted to make room.
    Size,
    /// Its time to live ran out.
    Expired,
    /// Removed on request (invalidation).
    Explicit,
    /// Overwritten by a newer value.
    Replaced,
}

/// Live counters, shared with the eviction machinery.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    hits: AtomicU64,
    fresh_hits: AtomicU64,
    stale_hits: AtomicU64,
    misses: AtomicU64,
    fills: AtomicU64,
    fill_errors: AtomicU64,
    coalesced: AtomicU64,
    not_stored: AtomicU64,
    evicted_size: AtomicU64,
    evicted_expired: AtomicU64,
    evicted_explicit: AtomicU64,
    replaced: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn evicted(&self, cause: RemovalCause) {
        bump(match cause {
            RemovalCause::Size => &self.evicted_size,
            RemovalCause::Expired => &self.evicted_expired,
            RemovalCause::Explicit => &self.evicted_explicit,
            RemovalCause::Replaced => &self.replaced,
        });
    }
}

/// A snapshot of a store's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Lookups that found an entry.
    pub hits: u64,
    /// Of those, found fresh ([`Store::lookup`] only).
    pub fresh_hits: u64,
    /// Of those, found stale ([`Store::lookup`] only).
    pub stale_hits: u64,
    /// Lookups that found nothing.
    pub misses: u64,
    /// Fills run (one per coalesced group).
    pub fills: u64,
    /// Fills that failed.
    pub fill_errors: u64,
    /// Callers that joined a fill already running instead of starting one.
    pub coalesced: u64,
    /// Fill results or inserts not stored (too large, or not cacheable).
    pub not_stored: u64,
    /// Entries evicted for room.
    pub evicted_size: u64,
    /// Entries whose time to live ran out.
    pub evicted_expired: u64,
    /// Entries removed on request.
    pub evicted_explicit: u64,
    /// Entries overwritten.
    pub replaced: u64,
    /// Weight held, in bytes.
    pub bytes: u64,
    /// Entries held.
    pub entries: u64,
}

/// What a fill produced: the value, and whether (or why not) it may be stored.
#[derive(Debug, Clone)]
pub struct Filled<V> {
    /// The value handed to every waiter.
    pub value: Arc<V>,
    /// `Ok` to store it, or the reason it must not be stored.
    pub storable: Result<(), NoStoreReason>,
}

/// How a caller of [`Store::fill`] came by its value (after moka's `InitResult`).
#[derive(Debug, Clone)]
pub enum FillOutcome<V> {
    /// This caller ran the fill work.
    Ran {
        /// The filled value.
        value: Arc<V>,
        /// Whether it was stored, or why not.
        stored: Result<(), NoStoreReason>,
    },
    /// This caller joined a fill another caller was running (a collapsed request). Given a
    /// value not stored because it is per-client (`Private`, `SetCookie`, `Authorization`),
    /// a joiner must not serve it and should fetch for itself.
    Joined {
        /// The filled value.
        value: Arc<V>,
        /// Whether it was stored, or why not.
        stored: Result<(), NoStoreReason>,
    },
    /// The fill found the value already cached, stored by a fill that finished between
    /// this caller's miss and its fill: no work ran.
    FoundCached(Arc<V>),
}

impl<V> FillOutcome<V> {
    /// The value, however it was obtained.
    pub fn value(&self) -> &Arc<V> {
        match self {
            Self::Ran { value, .. } | Self::Joined { value, .. } | Self::FoundCached(value) => {
                value
            }
        }
    }

    /// Whether the value is in the cache now, or why not.
    pub fn stored(&self) -> Result<(), NoStoreReason> {
        match self {
            Self::Ran { stored, .. } | Self::Joined { stored, .. } => *stored,
            Self::FoundCached(_) => Ok(()),
        }
    }
}

/// What one fill produced, shared by its waiters: value, whether it was stored, and
/// whether the work ran (`false`: found cached). A failure is the fill's own error, shared.
type FillResult<V, E> = Result<(Arc<V>, Result<(), NoStoreReason>, bool), Arc<E>>;
type SharedFill<V, E> = Shared<BoxFuture<'static, FillResult<V, E>>>;
/// A fill in flight: its key and the type of its error.
type FillId = (Arc<str>, TypeId);

/// The answer of [`Store::get_or_fill`].
#[derive(Debug, Clone)]
pub enum GetOrFill<V> {
    /// It was cached.
    Hit(Arc<V>),
    /// It was filled (by this caller or one it joined).
    Filled(FillOutcome<V>),
}

impl<V> GetOrFill<V> {
    /// The value, however it was obtained.
    pub fn value(&self) -> &Arc<V> {
        match self {
            Self::Hit(v) => v,
            Self::Filled(f) => f.value(),
        }
    }
}

enum Backend<V: Cacheable> {
    Moka(moka::future::Cache<Arc<str>, Arc<V>>),
    S3(S3Fifo<V>),
}

struct Inner<V: Cacheable> {
    backend: Backend<V>,
    config: StoreConfig,
    counters: Arc<Counters>,
    /// Fills in flight, by key and by the fill's error type (so each waiter gets the error
    /// type it asked for; the `Any` is always a `SharedFill<V, E>` for that `E`).
    inflight: Mutex<HashMap<FillId, Box<dyn Any + Send + Sync>>>,
    /// Recent invalidations: a fill inserts under the read lock, an invalidation applies
    /// under the write lock, so a fill that fetched before an invalidation can never store
    /// what it fetched after the invalidation has swept the store.
    purges: tokio::sync::RwLock<Purges<V>>,
    /// The newest purge generation, read without the lock when a fill starts.
    purge_generation: AtomicU64,
}

/// Which entries an invalidation names: by key and by value (tags live in the value).
pub type Matcher<V> = Arc<dyn Fn(&str, &V) -> bool + Send + Sync>;

/// Invalidations remembered for fills in flight; older fills than this many purges are
/// refused storage outright (they would have to be very slow).
const RECENT_PURGES: usize = 1024;

struct Purges<V> {
    generation: u64,
    recent: VecDeque<(u64, Matcher<V>)>,
}

impl<V> Purges<V> {
    /// Whether an invalidation after generation `since` names `key`/`value` (or may have:
    /// records that old are gone).
    fn names(&self, since: u64, key: &str, value: &V) -> bool {
        if self.generation == since {
            return false;
        }
        match self.recent.front() {
            Some((oldest, _)) if *oldest <= since + 1 => {
                self.recent.iter().any(|(g, m)| *g > since && m(key, value))
            }
            _ => true,
        }
    }
}

/// What an invalidation does to the entries it names.
pub enum Purge<V> {
    /// Drop them.
    Remove,
    /// Replace each with what this returns (a soft purge marks an object stale).
    Replace(Box<dyn Fn(&V) -> V + Send + Sync>),
}

/// A byte-bounded cache of `Arc<V>` keyed by string, with coalesced fills.
pub struct Store<V: Cacheable> {
    inner: Arc<Inner<V>>,
}

impl<V: Cacheable> Clone for Store<V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<V: Cacheable> fmt::Debug for Store<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Memory bound of moka entries from [`Cacheable::time_to_live`]; the one place the store
/// reads the wall clock.
struct TtlExpiry;

impl<V: Cacheable> moka::Expiry<Arc<str>, Arc<V>> for TtlExpiry {
    fn expire_after_create(&self, _: &Arc<str>, v: &Arc<V>, _: Instant) -> Option<Duration> {
        v.time_to_live(SystemTime::now())
    }
    fn expire_after_update(
        &self,
        _: &Arc<str>,
        v: &Arc<V>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        v.time_to_live(SystemTime::now())
    }
}

impl<V: Cacheable> Store<V> {
    /// A store with `config`.
    pub fn new(config: StoreConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let counters = Arc::new(Counters::default());
        let backend = match config.policy {
            Policy::S3Fifo => Backend::S3(S3Fifo::new(config.capacity, counters.clone())),
            p => {
                let listener = counters.clone();
                let policy = if p == Policy::Lru {
                    moka::policy::EvictionPolicy::lru()
                } else {
                    moka::policy::EvictionPolicy::tiny_lfu()
                };
                Backend::Moka(
                    moka::future::Cache::builder()
                        .max_capacity(config.capacity)
                        .weigher(|_: &Arc<str>, v: &Arc<V>| {
                            u32::try_from(v.weight()).unwrap_or(u32::MAX)
                        })
                        .eviction_policy(policy)
                        .expire_after(TtlExpiry)
                        .eviction_listener(move |_, _, cause| {
                            listener.evicted(match cause {
                                moka::notification::RemovalCause::Size => RemovalCause::Size,
                                moka::notification::RemovalCause::Expired => RemovalCause::Expired,
                                moka::notification::RemovalCause::Explicit => {
                                    RemovalCause::Explicit
                                }
                                moka::notification::RemovalCause::Replaced => {
                                    RemovalCause::Replaced
                                }
                            })
                        })
                        .build(),
                )
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                backend,
                config,
                counters,
                inflight: Mutex::new(HashMap::new()),
                purges: tokio::sync::RwLock::new(Purges {
                    generation: 0,
                    recent: VecDeque::new(),
                }),
                purge_generation: AtomicU64::new(0),
            }),
        })
    }

    /// The settings the store was built with.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    async fn get_raw(&self, key: &str) -> Option<Arc<V>> {
        self.inner.get_raw(key).await
    }

    /// Whether `key` is cached, without counting a hit or a miss (for work done on a
    /// request's behalf, such as a prefetch, that must not skew the hit ratio).
    pub async fn contains(&self, key: &str) -> bool {
        self.get_raw(key).await.is_some()
    }

    /// The entry for `key`, counting a hit or a miss.
    pub async fn get(&self, key: &str) -> Option<Arc<V>> {
        let v = self.get_raw(key).await;
        bump(if v.is_some() {
            &self.inner.counters.hits
        } else {
            &self.inner.counters.misses
        });
        v
    }

    /// Stores `value` under `key` unless it is heavier than the maximum object size or the
    /// whole capacity. (TinyLFU may still decline to admit it; that shows as a later miss.)
    pub async fn insert(&self, key: Arc<str>, value: Arc<V>) -> Result<(), NoStoreReason> {
        self.inner.insert(key, value).await
    }

    /// Removes `key`; whether it was there.
    pub async fn remove(&self, key: &str) -> bool {
        match &self.inner.backend {
            Backend::Moka(c) => c.remove(key).await.is_some(),
            Backend::S3(c) => c.remove(key),
        }
    }

    /// Removes every entry whose key starts with `prefix`; returns how many.
    pub async fn remove_prefix(&self, prefix: &str) -> usize {
        let p = prefix.to_string();
        self.invalidate(
            Arc::new(move |k: &str, _: &V| k.starts_with(&p)),
            Purge::Remove,
        )
        .await
    }

    /// The invalidation generation now: pass it to [`Self::insert_unless_invalidated`].
    pub fn generation(&self) -> u64 {
        self.inner.purge_generation.load(Ordering::Acquire)
    }

    /// Stores `value` unless an invalidation naming it was applied after generation
    /// `since` (read with [`Self::generation`] before the value was produced).
    pub async fn insert_unless_invalidated(
        &self,
        key: Arc<str>,
        value: Arc<V>,
        since: u64,
    ) -> Result<(), NoStoreReason> {
        let purges = self.inner.purges.read().await;
        if purges.names(since, &key, &value) {
            bump(&self.inner.counters.not_stored);
            return Err(NoStoreReason::Invalidated);
        }
        self.inner.insert(key, value).await
    }

    /// Applies an invalidation: every entry `matcher` names is removed or replaced, and no
    /// fill that was in flight when this began stores a value it names. Returns how many
    /// entries it found. Scans the whole store (O(entries)); invalidations are rare next to
    /// reads, and a scan needs no index to keep in step with evictions.
    pub async fn invalidate(&self, matcher: Matcher<V>, purge: Purge<V>) -> usize {
        let inner = &self.inner;
        let mut purges = inner.purges.write().await;
        purges.generation += 1;
        let generation = purges.generation;
        purges.recent.push_back((generation, matcher.clone()));
        if purges.recent.len() > RECENT_PURGES {
            purges.recent.pop_front();
        }
        inner.purge_generation.store(generation, Ordering::Release);
        let n = match (&inner.backend, &purge) {
            (Backend::S3(c), Purge::Remove) => c.remove_if(|k, v| matcher(k, v)),
            (Backend::S3(c), Purge::Replace(f)) => {
                let found = c.collect_if(|k, v| matcher(k, v));
                for (k, v) in &found {
                    inner.insert(k.clone(), Arc::new(f(v))).await.ok();
                }
                found.len()
            }
            (Backend::Moka(c), _) => {
                let found: Vec<_> = c.iter().filter(|(k, v)| matcher(k, v)).collect();
                for (k, v) in &found {
                    match &purge {
                        Purge::Remove => {
                            c.remove(&**k).await;
                        }
                        Purge::Replace(f) => {
                            inner.insert(Arc::clone(&**k), Arc::new(f(v))).await.ok();
                        }
                    }
                }
                found.len()
            }
        };
        drop(purges);
        n
    }

    /// Runs the fill for `key` unless one is already running, in which case this call
    /// joins it: every concurrent caller gets the same value or the same error. A value the
    /// fill marks storable is stored before any caller sees it; an error is never stored.
    /// Use this to refresh an entry (it does not look at the cache first).
    ///
    /// `fill` is called (only by the caller that runs the fill) while an internal lock is
    /// held: it must only build the future, not do work.
    pub async fn fill<F, Fut, E>(&self, key: &str, fill: F) -> Result<FillOutcome<V>, Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Filled<V>, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        self.fill_inner(key, false, fill).await
    }

    /// The cached value for `key`, or else the result of a coalesced [`Self::fill`].
    /// Exactly one fill runs for any number of concurrent callers of a missing key, including
    /// callers that missed just before an earlier fill stored the value.
    pub async fn get_or_fill<F, Fut, E>(&self, key: &str, fill: F) -> Result<GetOrFill<V>, Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Filled<V>, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        if let Some(v) = self.get(key).await {
            return Ok(GetOrFill::Hit(v));
        }
        self.fill_if_absent(key, fill).await.map(GetOrFill::Filled)
    }

    /// Like [`Self::get_or_fill`] for a caller that has just missed (so it does not look
    /// up and count a second miss): joins a running fill, or runs one that first re-checks
    /// the cache.
    pub async fn fill_if_absent<F, Fut, E>(
        &self,
        key: &str,
        fill: F,
    ) -> Result<FillOutcome<V>, Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Filled<V>, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        self.fill_inner(key, true, fill).await
    }

    async fn fill_inner<F, Fut, E>(
        &self,
        key: &str,
        recheck: bool,
        fill: F,
    ) -> Result<FillOutcome<V>, Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Filled<V>, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        let (fut, leader) = {
            let mut map = self
                .inner
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let id: FillId = (key.into(), TypeId::of::<E>());
            match map
                .get(&id)
                .and_then(|f| f.downcast_ref::<SharedFill<V, E>>())
            {
                Some(f) => (f.clone(), false),
                None => {
                    let inner = self.inner.clone();
                    let work = fill();
                    let id2 = id.clone();
                    let shared: SharedFill<V, E> = async move {
                        let out = inner.run_fill(&id2.0, recheck, work).await;
                        inner
                            .inflight
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&id2);
                        out
                    }
                    .boxed()
                    .shared();
                    map.insert(id, Box::new(shared.clone()));
                    (shared, true)
                }
            }
        };
        if !leader {
            bump(&self.inner.counters.coalesced);
        }
        let (value, stored, ran) = fut.await?;
        Ok(match (ran, leader) {
            (false, _) => FillOutcome::FoundCached(value),
            (true, true) => FillOutcome::Ran { value, stored },
            (true, false) => FillOutcome::Joined { value, stored },
        })
    }

    /// Runs moka's pending maintenance (evictions, expiry, counts). Until it has run,
    /// moka may briefly hold more than its capacity; S3-FIFO enforces it on every insert.
    pub async fn run_pending_tasks(&self) {
        if let Backend::Moka(c) = &self.inner.backend {
            c.run_pending_tasks().await;
        }
    }

    /// Weight held, in bytes (moka: as of the last maintenance).
    pub fn weighted_size(&self) -> u64 {
        match &self.inner.backend {
            Backend::Moka(c) => c.weighted_size(),
            Backend::S3(c) => c.weighted_size(),
        }
    }

    /// Entries held (moka: as of the last maintenance).
    pub fn entry_count(&self) -> u64 {
        match &self.inner.backend {
            Backend::Moka(c) => c.entry_count(),
            Backend::S3(c) => c.entry_count(),
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> StoreStats {
        let c = &self.inner.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StoreStats {
            hits: l(&c.hits),
            fresh_hits: l(&c.fresh_hits),
            stale_hits: l(&c.stale_hits),
            misses: l(&c.misses),
            fills: l(&c.fills),
            fill_errors: l(&c.fill_errors),
            coalesced: l(&c.coalesced),
            not_stored: l(&c.not_stored),
            evicted_size: l(&c.evicted_size),
            evicted_expired: l(&c.evicted_expired),
            evicted_explicit: l(&c.evicted_explicit),
            replaced: l(&c.replaced),
            bytes: self.weighted_size(),
            entries: self.entry_count(),
        }
    }
}

impl<V: Cacheable> Inner<V> {
    async fn get_raw(&self, key: &str) -> Option<Arc<V>> {
        match &self.backend {
            Backend::Moka(c) => c.get(key).await,
            Backend::S3(c) => c.get(key, Instant::now()),
        }
    }

    async fn run_fill<Fut, E>(&self, key: &Arc<str>, recheck: bool, work: Fut) -> FillResult<V, E>
    where
        Fut: Future<Output = Result<Filled<V>, E>>,
    {
        // A fill that finished between our caller's miss and our registration has stored its
        // value already (it stores before it unregisters): use it instead of fetching again.
        if recheck {
            let cached = self.get_raw(key).await;
            if let Some(v) = cached {
                return Ok((v, Ok(()), false));
            }
        }
        bump(&self.counters.fills);
        let started = self.purge_generation.load(Ordering::Acquire);
        match work.await {
            Ok(f) => {
                let stored = match f.storable {
                    Ok(()) => {
                        let purges = self.purges.read().await;
                        if purges.names(started, key, &f.value) {
                            bump(&self.counters.not_stored);
                            Err(NoStoreReason::Invalidated)
                        } else {
                            self.insert(key.clone(), f.value.clone()).await
                        }
                    }
                    Err(NoStoreReason::Filling) => Err(NoStoreReason::Filling),
                    Err(r) => {
                        bump(&self.counters.not_stored);
                        Err(r)
                    }
                };
                Ok((f.value, stored, true))
            }
            Err(e) => {
                bump(&self.counters.fill_errors);
                Err(Arc::new(e))
            }
        }
    }

    async fn insert(&self, key: Arc<str>, value: Arc<V>) -> Result<(), NoStoreReason> {
        let w = value.weight();
        if w > self.config.max_object_size || w > self.config.capacity {
            bump(&self.counters.not_stored);
            return Err(NoStoreReason::TooLarge);
        }
        match &self.backend {
            Backend::Moka(c) => c.insert(key, value).await,
            Backend::S3(c) => {
                let ttl = value.time_to_live(SystemTime::now());
                let expires_at = ttl.and_then(|t| Instant::now().checked_add(t));
                c.insert(key, value, w, expires_at);
            }
        }
        Ok(())
    }
}

/// The answer of [`Store::lookup`].
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Found and fresh.
    Fresh(Arc<CachedObject>),
    /// Found but stale; the state says whether it may still be served.
    Stale(Arc<CachedObject>, FreshnessState),
    /// Not found.
    Miss,
}

impl Store<CachedObject> {
    /// Looks `key` up and classifies it at `now` (HTTP freshness), counting fresh and stale
    /// hits apart.
    pub async fn lookup(&self, key: &str, now: SystemTime) -> Lookup {
        let Some(obj) = self.get(key).await else {
            return Lookup::Miss;
        };
        match obj.state(now) {
            FreshnessState::Fresh { .. } => {
                bump(&self.inner.counters.fresh_hits);
                Lookup::Fresh(obj)
            }
            s => {
                bump(&self.inner.counters.stale_hits);
                Lookup::Stale(obj, s)
            }
        }
    }
}

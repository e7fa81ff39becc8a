//! Store behaviour under every policy: capacity, expiry, stale windows, scan resistance,
//! coalescing and failed fills.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use proptest::prelude::*;
use shoal_cache_core::object::Weighted;
use shoal_cache_core::{
    CachedObject, Exchange, FillOutcome, Filled, Freshness, FreshnessPolicy, FreshnessState,
    GetOrFill, Lookup, NoStoreReason, Policy, Store, StoreConfig,
};

fn store<V: shoal_cache_core::Cacheable>(policy: Policy, capacity: u64) -> Store<V> {
    Store::new(StoreConfig {
        capacity,
        max_object_size: capacity,
        policy,
    })
    .unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn object(headers: &[(&str, &str)], body: &'static [u8], now: SystemTime) -> CachedObject {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let freshness = Freshness::from_response(
        200,
        &headers,
        Exchange::at(now),
        &FreshnessPolicy::default(),
    );
    CachedObject {
        status: 200,
        headers,
        body: Bytes::from_static(body),
        etag: None,
        version: 1,
        freshness,
        tags: vec![],
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Once pending maintenance has run, no policy holds more than its capacity plus one
    /// object, whatever the sequence of inserts, replacements and reads.
    #[test]
    fn byte_capacity_is_never_exceeded_by_more_than_one_object(
        ops in prop::collection::vec((0u32..60, 1u64..3_000, any::<bool>()), 1..400)
    ) {
        const CAP: u64 = 10_000;
        let max_w = ops.iter().map(|o| o.1).max().unwrap_or(0);
        rt().block_on(async {
            for policy in Policy::ALL {
                let s: Store<Weighted> = store(policy, CAP);
                for (k, w, read) in &ops {
                    let key: Arc<str> = k.to_string().into();
                    if *read {
                        s.get(&key).await;
                    } else {
                        s.insert(key, Arc::new(Weighted { size: *w })).await.unwrap();
                    }
                    s.run_pending_tasks().await;
                    let held = s.weighted_size();
                    prop_assert!(held <= CAP + max_w, "{policy}: {held} > {CAP} + {max_w}");
                }
            }
            Ok(())
        })?;
    }
}

#[test]
fn objects_over_the_limits_are_never_stored() {
    rt().block_on(async {
        for policy in Policy::ALL {
            let s: Store<Weighted> = Store::new(StoreConfig {
                capacity: 1_000,
                max_object_size: 100,
                policy,
            })
            .unwrap();
            assert_eq!(
                s.insert("big".into(), Arc::new(Weighted { size: 101 }))
                    .await,
                Err(NoStoreReason::TooLarge)
            );
            s.run_pending_tasks().await;
            assert!(s.get("big").await.is_none(), "{policy}");
            assert_eq!(s.stats().not_stored, 1);
        }
    })
}

#[test]
fn entries_are_reclaimed_after_their_time_to_live() {
    rt().block_on(async {
        for policy in Policy::ALL {
            let s: Store<CachedObject> = store(policy, 1 << 20);
            let now = SystemTime::now();
            let mut o = object(&[], b"x", now);
            o.freshness = Freshness::fixed(now, Duration::from_millis(300));
            s.insert("k".into(), Arc::new(o)).await.unwrap();
            assert!(
                s.get("k").await.is_some(),
                "{policy}: present before expiry"
            );
            tokio::time::sleep(Duration::from_millis(700)).await;
            assert!(
                s.get("k").await.is_none(),
                "{policy}: reclaimed after expiry"
            );
            // moka reclaims on its timer wheel (ticks of about a second): wait, bounded.
            for _ in 0..50 {
                s.run_pending_tasks().await;
                if s.stats().evicted_expired == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(s.stats().evicted_expired, 1, "{policy}: counted as expired");
            assert_eq!(s.entry_count(), 0, "{policy}");
        }
    })
}

#[test]
fn lookup_classifies_fresh_and_stale_windows() {
    rt().block_on(async {
        for policy in Policy::ALL {
            let s: Store<CachedObject> = store(policy, 1 << 20);
            let t0 = SystemTime::now();
            let o = object(
                &[(
                    "cache-control",
                    "max-age=10, stale-while-revalidate=30, stale-if-error=100",
                )],
                b"hello",
                t0,
            );
            s.insert("k".into(), Arc::new(o)).await.unwrap();
            let at = |secs| t0 + Duration::from_secs(secs);
            assert!(matches!(s.lookup("k", at(5)).await, Lookup::Fresh(_)));
            match s.lookup("k", at(15)).await {
                Lookup::Stale(
                    _,
                    FreshnessState::Stale {
                        serve_while_revalidate,
                        serve_if_error,
                        ..
                    },
                ) => {
                    assert!(serve_while_revalidate && serve_if_error)
                }
                other => panic!("{policy}: {other:?}"),
            }
            match s.lookup("k", at(60)).await {
                Lookup::Stale(
                    _,
                    FreshnessState::Stale {
                        serve_while_revalidate,
                        serve_if_error,
                        ..
                    },
                ) => {
                    assert!(!serve_while_revalidate && serve_if_error)
                }
                other => panic!("{policy}: {other:?}"),
            }
            assert!(matches!(s.lookup("missing", at(0)).await, Lookup::Miss));
            let st = s.stats();
            assert_eq!(
                (st.hits, st.fresh_hits, st.stale_hits, st.misses),
                (3, 1, 2, 1),
                "{policy}"
            );
        }
    })
}

/// Hit ratio on the hot set after a one-time scan larger than the cache.
async fn hot_hits_after_scan(policy: Policy) -> f64 {
    let s: Store<Weighted> = store(policy, 100);
    let access = |k: String| {
        let s = s.clone();
        async move {
            let hit = s.get(&k).await.is_some();
            if !hit {
                s.insert(k.into(), Arc::new(Weighted { size: 1 }))
                    .await
                    .unwrap();
                s.run_pending_tasks().await;
            }
            hit
        }
    };
    // Warm the cache past half full first: moka only starts counting frequencies then.
    for i in 0..60 {
        access(format!("warm-{i}")).await;
    }
    for _round in 0..10 {
        for h in 0..20 {
            access(format!("hot-{h}")).await;
        }
    }
    for i in 0..1_000 {
        access(format!("scan-{i}")).await;
    }
    let mut hits = 0;
    for h in 0..20 {
        hits += usize::from(access(format!("hot-{h}")).await);
    }
    hits as f64 / 20.0
}

#[test]
fn scan_resistance_by_policy() {
    rt().block_on(async {
        let lru = hot_hits_after_scan(Policy::Lru).await;
        let tinylfu = hot_hits_after_scan(Policy::TinyLfu).await;
        let s3 = hot_hits_after_scan(Policy::S3Fifo).await;
        assert_eq!(lru, 0.0, "LRU is flushed by the scan");
        assert!(tinylfu >= 0.9, "TinyLFU keeps the hot set: {tinylfu}");
        assert!(s3 >= 0.9, "S3-FIFO keeps the hot set: {s3}");
    })
}

#[derive(Debug, thiserror::Error)]
#[error("origin refused: {0}")]
struct OriginDown(String);

#[test]
fn a_thousand_concurrent_misses_run_one_fill() {
    rt().block_on(async {
        for policy in Policy::ALL {
            let s: Store<Weighted> = store(policy, 1 << 20);
            let runs = Arc::new(AtomicUsize::new(0));
            let tasks: Vec<_> = (0..1_000)
                .map(|_| {
                    let (s, runs) = (s.clone(), runs.clone());
                    tokio::spawn(async move {
                        s.get_or_fill("k", move || async move {
                            runs.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok::<_, OriginDown>(Filled {
                                value: Arc::new(Weighted { size: 10 }),
                                storable: Ok(()),
                            })
                        })
                        .await
                    })
                })
                .collect();
            let mut values = Vec::new();
            for t in tasks {
                values.push(t.await.unwrap().unwrap());
            }
            assert_eq!(runs.load(Ordering::SeqCst), 1, "{policy}: exactly one fill");
            let first = values[0].value().clone();
            assert!(
                values.iter().all(|v| Arc::ptr_eq(v.value(), &first)),
                "{policy}"
            );
            let st = s.stats();
            assert_eq!(st.fills, 1, "{policy}");
            let leaders = values
                .iter()
                .filter(|v| matches!(v, GetOrFill::Filled(FillOutcome::Ran { .. })))
                .count();
            assert_eq!(leaders, 1, "{policy}");
            // The others joined the running fill (collapsed) or, arriving after it stored
            // the value, hit it; the store counts exactly the joiners as coalesced.
            let joined = values
                .iter()
                .filter(|v| matches!(v, GetOrFill::Filled(FillOutcome::Joined { .. })))
                .count();
            assert!(joined > 0, "{policy}: some requests joined the fill");
            assert_eq!(st.coalesced, joined as u64, "{policy}");
            assert!(s.get("k").await.is_some(), "{policy}: stored");
        }
    })
}

#[test]
fn a_failed_fill_reaches_every_waiter_and_is_not_cached() {
    rt().block_on(async {
        for policy in Policy::ALL {
            let s: Store<Weighted> = store(policy, 1 << 20);
            let runs = Arc::new(AtomicUsize::new(0));
            let tasks: Vec<_> = (0..100)
                .map(|_| {
                    let (s, runs) = (s.clone(), runs.clone());
                    tokio::spawn(async move {
                        s.get_or_fill("k", move || async move {
                            runs.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Err::<Filled<Weighted>, _>(OriginDown("connection reset".into()))
                        })
                        .await
                    })
                })
                .collect();
            for t in tasks {
                let e = t.await.unwrap().unwrap_err();
                // Every waiter gets the fill's own error, typed: no downcast.
                assert_eq!(e.0, "connection reset");
            }
            assert_eq!(runs.load(Ordering::SeqCst), 1, "{policy}");
            assert!(s.get("k").await.is_none(), "{policy}: error not cached");
            // The next request tries again.
            let v = s
                .get_or_fill("k", || async {
                    Ok::<_, OriginDown>(Filled {
                        value: Arc::new(Weighted { size: 1 }),
                        storable: Ok(()),
                    })
                })
                .await
                .unwrap();
            assert!(matches!(v, GetOrFill::Filled(FillOutcome::Ran { .. })));
            assert_eq!((s.stats().fills, s.stats().fill_errors), (2, 1), "{policy}");
        }
    })
}

#[test]
fn unstorable_fills_are_shared_but_not_stored() {
    rt().block_on(async {
        let s: Store<Weighted> = store(Policy::S3Fifo, 1 << 20);
        let out = s
            .fill("k", || async {
                Ok::<_, OriginDown>(Filled {
                    value: Arc::new(Weighted { size: 1 }),
                    storable: Err(NoStoreReason::Private),
                })
            })
            .await
            .unwrap();
        assert_eq!(out.stored(), Err(NoStoreReason::Private));
        assert!(s.get("k").await.is_none());
    })
}

#[test]
fn evictions_are_counted_by_cause() {
    rt().block_on(async {
        for policy in [Policy::Lru, Policy::S3Fifo] {
            let s: Store<Weighted> = store(policy, 100);
            for i in 0..200 {
                s.insert(i.to_string().into(), Arc::new(Weighted { size: 1 }))
                    .await
                    .unwrap();
                s.run_pending_tasks().await;
            }
            s.insert("0x".into(), Arc::new(Weighted { size: 1 }))
                .await
                .unwrap();
            s.insert("0x".into(), Arc::new(Weighted { size: 2 }))
                .await
                .unwrap();
            s.run_pending_tasks().await;
            assert!(s.remove("0x").await);
            s.run_pending_tasks().await;
            let st = s.stats();
            assert!(st.evicted_size >= 100, "{policy}: {st:?}");
            assert_eq!(
                (st.replaced, st.evicted_explicit),
                (1, 1),
                "{policy}: {st:?}"
            );
            assert!(st.bytes <= 100 && st.entries <= 100, "{policy}: {st:?}");
        }
    })
}

#[test]
fn prefix_removal() {
    rt().block_on(async {
        for policy in Policy::ALL {
            let s: Store<Weighted> = store(policy, 1 << 20);
            for k in ["a/1", "a/2", "b/1"] {
                s.insert(k.into(), Arc::new(Weighted { size: 1 }))
                    .await
                    .unwrap();
            }
            s.run_pending_tasks().await;
            assert_eq!(s.remove_prefix("a/").await, 2, "{policy}");
            assert!(
                s.get("a/1").await.is_none() && s.get("b/1").await.is_some(),
                "{policy}"
            );
        }
    })
}

/// A fill that was fetching when an invalidation naming its key arrived serves its waiters
/// but is not stored: what it fetched may predate the invalidation. A fill of another key
/// is stored as usual.
#[test]
fn an_invalidation_during_a_fill_keeps_its_value_out_of_the_store() {
    use shoal_cache_core::invalidation::matcher;
    use shoal_cache_core::wire::InvalidationTarget;
    use shoal_cache_core::{Purge, status::NoStoreReason as R};
    rt().block_on(async {
        for policy in Policy::ALL {
            let s: Store<CachedObject> = store(policy, 1 << 20);
            let now = SystemTime::now();
            let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
            let (other_tx, other_rx) = tokio::sync::oneshot::channel::<()>();
            let fill = move |rx: tokio::sync::oneshot::Receiver<()>| {
                let v = Arc::new(object(&[("cache-control", "max-age=60")], b"old", now));
                move || async move {
                    rx.await.ok();
                    Ok::<_, std::io::Error>(Filled {
                        value: v,
                        storable: Ok(()),
                    })
                }
            };
            let s1 = s.clone();
            let a = tokio::spawn(async move { s1.fill("h.test/a", fill(go_rx)).await });
            let s2 = s.clone();
            let b = tokio::spawn(async move { s2.fill("h.test/b", fill(other_rx)).await });
            tokio::time::sleep(Duration::from_millis(20)).await;
            let target = InvalidationTarget::Keys(vec!["/a".into()]);
            s.invalidate(matcher(&target), Purge::Remove).await;
            go_tx.send(()).unwrap();
            other_tx.send(()).unwrap();
            let a = a.await.unwrap().unwrap();
            assert_eq!(a.stored(), Err(R::Invalidated), "{policy}");
            assert_eq!(
                &a.value().body[..],
                b"old",
                "{policy}: waiters still get it"
            );
            assert_eq!(b.await.unwrap().unwrap().stored(), Ok(()), "{policy}");
            assert!(s.get("h.test/a").await.is_none(), "{policy}");
            assert!(s.get("h.test/b").await.is_some(), "{policy}");
            // A fill that starts after the invalidation stores as usual.
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            tx.send(()).unwrap();
            let again = s.fill("h.test/a", fill(rx)).await.unwrap();
            assert_eq!(again.stored(), Ok(()), "{policy}");
        }
    })
}

/// A soft purge leaves the objects in place, stale from now on with their stale windows;
/// a hard purge by tag drops exactly the tagged ones.
#[test]
fn soft_purge_marks_stale_and_tag_purge_drops_tagged() {
    use shoal_cache_core::Purge;
    use shoal_cache_core::invalidation::matcher;
    use shoal_cache_core::wire::InvalidationTarget;
    rt().block_on(async {
        for policy in Policy::ALL {
            let s: Store<CachedObject> = store(policy, 1 << 20);
            let now = SystemTime::now();
            let cc = [("cache-control", "max-age=600, stale-while-revalidate=30")];
            for (k, tags) in [
                ("h.test/p/1", vec!["x"]),
                ("h.test/p/2", vec![]),
                ("h.test/q", vec!["x"]),
            ] {
                let mut o = object(&cc, b"body", now);
                o.tags = tags.into_iter().map(String::from).collect();
                s.insert(k.into(), Arc::new(o)).await.unwrap();
            }
            s.run_pending_tasks().await;
            let soft = Purge::Replace(Box::new(|o: &CachedObject| {
                let mut o = o.clone();
                o.freshness.mark_stale(SystemTime::now());
                o
            }));
            let prefix = InvalidationTarget::Prefix("/p/".into());
            assert_eq!(s.invalidate(matcher(&prefix), soft).await, 2, "{policy}");
            let later = SystemTime::now() + Duration::from_secs(1);
            match s.lookup("h.test/p/1", later).await {
                Lookup::Stale(
                    _,
                    FreshnessState::Stale {
                        serve_while_revalidate,
                        ..
                    },
                ) => {
                    assert!(serve_while_revalidate, "{policy}: window kept")
                }
                other => panic!("{policy}: soft-purged object is {other:?}"),
            }
            assert!(
                matches!(s.lookup("h.test/q", later).await, Lookup::Fresh(_)),
                "{policy}"
            );
            let tag = InvalidationTarget::Tag("x".into());
            assert_eq!(
                s.invalidate(matcher(&tag), Purge::Remove).await,
                2,
                "{policy}"
            );
            s.run_pending_tasks().await;
            assert!(s.get("h.test/p/1").await.is_none(), "{policy}");
            assert!(s.get("h.test/q").await.is_none(), "{policy}");
            assert!(s.get("h.test/p/2").await.is_some(), "{policy}");
        }
    })
}

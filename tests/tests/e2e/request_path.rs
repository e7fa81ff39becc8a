//! The request path end to end: HTTP semantics, coalescing, owner routing, failover,
//! origin outages and recovery.

use std::time::Duration;

use bytes::Bytes;
use shoal_loadgen::harness::cluster::Cluster;
use shoal_origin::metrics::FetchResult;
use shoal_tests::{eventually, raw_http, request, spec};

fn origin_fetches(c: &Cluster) -> u64 {
    c.origin
        .as_ref()
        .expect("origin running")
        .metrics
        .fetches(FetchResult::Ok)
}

/// Waits (bounded) until every edge has reached the origin.
async fn ready(c: &Cluster) {
    c.wait_ready(Duration::from_secs(10))
        .await
        .expect("every edge reaches the origin");
}

async fn put(c: &Cluster, path: &str, body: &[u8]) -> String {
    c.store()
        .put(path, Bytes::copy_from_slice(body), None)
        .expect("put")
        .etag
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miss_then_hit_head_304_and_ranges() {
    let c = Cluster::start(spec(1, 1, false)).await.expect("cluster");
    let etag = put(&c, "/a.txt", b"0123456789").await;
    let edge = c.regions[0].addrs[0];

    let miss = raw_http(edge, &request("GET", "/a.txt", &[])).await;
    assert_eq!(miss.status, 200);
    assert_eq!(miss.body, b"0123456789");
    assert_eq!(miss.header("cache-status"), Some("shoal; fwd=miss; stored"));
    assert_eq!(miss.header("etag"), Some(etag.as_str()));
    assert_eq!(miss.header("content-length"), Some("10"));
    assert_eq!(miss.header("cache-control"), Some("public, max-age=60"));
    assert!(miss.header("age").is_some());

    let hit = raw_http(edge, &request("GET", "/a.txt", &[])).await;
    assert_eq!(hit.header("cache-status"), Some("shoal; hit"));
    assert_eq!(hit.body, b"0123456789");

    let head = raw_http(edge, &request("HEAD", "/a.txt", &[])).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("10"));
    assert!(head.body.is_empty());

    let nm = raw_http(edge, &request("GET", "/a.txt", &[("If-None-Match", &etag)])).await;
    assert_eq!(nm.status, 304);
    assert!(nm.body.is_empty());
    assert_eq!(nm.header("etag"), Some(etag.as_str()));

    let part = raw_http(edge, &request("GET", "/a.txt", &[("Range", "bytes=2-4")])).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, b"234");
    assert_eq!(part.header("content-range"), Some("bytes 2-4/10"));

    let suffix = raw_http(edge, &request("GET", "/a.txt", &[("Range", "bytes=-3")])).await;
    assert_eq!((suffix.status, suffix.body.as_slice()), (206, &b"789"[..]));

    let beyond = raw_http(edge, &request("GET", "/a.txt", &[("Range", "bytes=10-")])).await;
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.header("content-range"), Some("bytes */10"));

    let multi = raw_http(
        edge,
        &request("GET", "/a.txt", &[("Range", "bytes=0-1,4-5")]),
    )
    .await;
    assert_eq!(
        (multi.status, multi.body.len()),
        (200, 10),
        "several ranges: whole object"
    );

    assert_eq!(
        origin_fetches(&c),
        1,
        "everything after the first GET came from the cache"
    );
    let missing = raw_http(edge, &request("GET", "/nope", &[])).await;
    assert_eq!(missing.status, 404);

    // Observability: Prometheus text on the admin ports, and readiness.
    let e = c.edge(0, 0).expect("edge");
    let m = raw_http(e.admin_addr, &request("GET", "/metrics", &[])).await;
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.contains(r#"shoal_edge_requests_total{status="200",cache="hit"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"shoal_edge_origin_fetches_total{result="ok"} 2"#),
        "{text}"
    );
    assert!(
        text.contains("shoal_edge_request_duration_seconds_bucket"),
        "a histogram, not a summary"
    );
    assert!(text.contains("shoal_edge_cache_entries 1"), "{text}");
    assert_eq!(
        raw_http(e.admin_addr, &request("GET", "/readyz", &[]))
            .await
            .status,
        200
    );
    assert_eq!(
        raw_http(e.admin_addr, &request("GET", "/healthz", &[]))
            .await
            .status,
        200
    );
    let admin = c.origin.as_ref().expect("origin").admin_addr;
    let om = raw_http(admin, &request("GET", "/metrics", &[])).await;
    assert!(
        String::from_utf8_lossy(&om.body)
            .contains(r#"shoal_origin_fetches_total{result="not_found"} 1"#)
    );
    c.shutdown().await;
}

/// N concurrent requests for one uncached object make one origin fetch, whether they hit
/// one edge or are spread over the region. The relay delays the origin by 150 ms each way
/// so the requests overlap the fill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalescing_on_one_edge_and_region_wide() {
    // Small bodies (one round trip even in QUIC slow start) and a generous fetch timeout:
    // the test is about overlap, not transfer speed, and CI machines are slow.
    let mut s = spec(1, 3, true);
    s.edge.timeouts.origin_fetch = shoal_cache_core::size::HumanDuration::secs(5);
    let c = Cluster::start(s).await.expect("cluster");
    put(&c, "/one-edge.bin", &[7u8; 8_000]).await;
    put(&c, "/region.bin", &[9u8; 8_000]).await;
    ready(&c).await;
    let relay = c.relay.as_ref().expect("relay");
    relay.set_delay(Duration::from_millis(150));

    // Straight to the owner, so this half measures one edge's coalescing alone.
    let owner = c
        .client(0)
        .expect("client")
        .owner("/one-edge.bin")
        .expect("owner");
    let idx = c.regions[0]
        .ids
        .iter()
        .position(|i| *i == owner)
        .expect("owner index");
    let one = c.regions[0].addrs[idx];
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            tokio::spawn(async move { raw_http(one, &request("GET", "/one-edge.bin", &[])).await })
        })
        .collect();
    for t in tasks {
        let r = t.await.expect("task");
        assert_eq!((r.status, r.body.len()), (200, 8_000));
    }
    assert_eq!(
        origin_fetches(&c),
        1,
        "40 concurrent requests on one edge: one origin fetch"
    );

    let addrs = c.regions[0].addrs.clone();
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let a = addrs[i % addrs.len()];
            tokio::spawn(async move { raw_http(a, &request("GET", "/region.bin", &[])).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("task").status, 200);
    }
    assert_eq!(
        origin_fetches(&c),
        2,
        "60 requests over 3 edges: one more origin fetch"
    );
    let coalesced: u64 = c.regions[0]
        .edges
        .iter()
        .flatten()
        .map(|e| e.cache_stats().coalesced)
        .sum();
    assert!(coalesced > 0, "waiters joined a running fill");
    c.shutdown().await;
}

/// Each object is fetched from the origin once per region, whichever edge is asked; the
/// answer comes from the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_routing_fetches_once_per_region() {
    let c = Cluster::start(spec(2, 3, false)).await.expect("cluster");
    let paths: Vec<String> = (0..20).map(|i| format!("/obj/{i}.json")).collect();
    for p in &paths {
        put(&c, p, p.as_bytes()).await;
    }
    for r in 0..2 {
        let client = c.client(r).expect("client");
        for p in &paths {
            let owner = client.owner(p).expect("owner");
            for &addr in &c.regions[r].addrs {
                let resp = raw_http(addr, &request("GET", p, &[])).await;
                assert_eq!(resp.status, 200);
                assert_eq!(
                    resp.header("x-shoal-node"),
                    Some(owner.as_str()),
                    "{p} served by its owner"
                );
            }
        }
        assert_eq!(
            origin_fetches(&c),
            20 * (r as u64 + 1),
            "once per object per region"
        );
    }
    // Non-owners kept no copy: entries across a region add up to the objects.
    let entries: u64 = c.regions[0]
        .edges
        .iter()
        .flatten()
        .map(|e| e.cache_stats().entries)
        .sum();
    assert_eq!(entries, 20);
    c.shutdown().await;
}

/// With the owner stopped, the next node on the ring serves, and clients see no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_killed_next_node_serves() {
    let mut c = Cluster::start(spec(1, 3, false)).await.expect("cluster");
    let client = c.client(0).expect("client");
    let ids = c.regions[0].ids.clone();
    let path = (0..100)
        .map(|i| format!("/k/{i}"))
        .find(|p| client.owner(p).as_deref() == Some(ids[0].as_str()))
        .expect("a key owned by the first edge");
    put(&c, &path, b"payload").await;
    assert_eq!(client.get(&path).await.expect("get").status, 200);
    c.stop_edge(0, 0).await;
    // Through a non-owner edge: it forwards, fails, marks the owner down, tries the next.
    for _ in 0..5 {
        let r = raw_http(c.regions[0].addrs[1], &request("GET", &path, &[])).await;
        assert_eq!((r.status, r.body.as_slice()), (200, &b"payload"[..]));
        assert_ne!(r.header("x-shoal-node"), Some(ids[0].as_str()));
    }
    // Through the region client: it fails over by itself.
    let f = client.get(&path).await.expect("failover");
    assert_eq!(f.status, 200);
    assert!(f.failovers >= 1);
    // It remembers: the next request (from a clone, as a player's are) goes to the live
    // edge first, without trying the dead owner again.
    let f = client.clone().get(&path).await.expect("again");
    assert_eq!((f.status.as_u16(), f.failovers), (200, 0));
    assert_ne!(f.edge, ids[0]);
    c.shutdown().await;
}

/// Origin down: cached objects are served stale (stale-if-error), uncached ones get a
/// 502/504 that says what failed. Origin back: edges reconnect by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_outage_stale_then_reconnect() {
    let mut c = Cluster::start(spec(1, 1, false)).await.expect("cluster");
    let edge = c.regions[0].addrs[0];
    put(&c, "/page.short", b"cached").await;
    put(&c, "/later.txt", b"uncached").await;
    assert_eq!(
        raw_http(edge, &request("GET", "/page.short", &[]))
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(1100)).await; // max-age=1: now stale
    c.stop_origin().await;

    let stale = raw_http(edge, &request("GET", "/page.short", &[])).await;
    assert_eq!((stale.status, stale.body.as_slice()), (200, &b"cached"[..]));
    assert_eq!(
        stale.header("cache-status"),
        Some("shoal; hit; detail=stale")
    );

    let fail = raw_http(edge, &request("GET", "/later.txt", &[])).await;
    assert!(matches!(fail.status, 502 | 504), "got {}", fail.status);
    assert!(String::from_utf8_lossy(&fail.body).contains("origin"));

    c.restart_origin().await.expect("restart");
    let e = c.edge(0, 0).expect("edge");
    eventually(
        Duration::from_secs(10),
        "edge reconnects to the origin",
        || std::future::ready(e.is_ready()),
    )
    .await;
    let ok = raw_http(edge, &request("GET", "/later.txt", &[])).await;
    assert_eq!((ok.status, ok.body.as_slice()), (200, &b"uncached"[..]));
    c.shutdown().await;
}

/// Objects above the max object size stream through and are never stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_stream_through_unstored() {
    let mut s = spec(1, 1, false);
    s.edge.cache.max_object_size = shoal_cache_core::size::ByteSize(256 << 10);
    let c = Cluster::start(s).await.expect("cluster");
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    put(&c, "/big.ts", &body).await;
    let client = c.client(0).expect("client");
    for _ in 0..2 {
        let f = client.get("/big.ts").await.expect("get");
        assert_eq!(f.status, 200);
        assert_eq!(f.body.as_ref(), body.as_slice());
        assert_eq!(
            f.cache_status.as_deref(),
            Some("shoal; fwd=miss; detail=too-large")
        );
    }
    assert_eq!(origin_fetches(&c), 2, "not stored, so fetched each time");
    assert_eq!(c.edge(0, 0).expect("edge").cache_stats().entries, 0);
    c.shutdown().await;
}

/// Shutdown drains: a request in flight when shutdown starts still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let mut c = Cluster::start(spec(1, 1, true)).await.expect("cluster");
    put(&c, "/slow.txt", b"worth the wait").await;
    ready(&c).await;
    c.relay
        .as_ref()
        .expect("relay")
        .set_delay(Duration::from_millis(300));
    let edge = c.regions[0].addrs[0];
    let inflight =
        tokio::spawn(async move { raw_http(edge, &request("GET", "/slow.txt", &[])).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.stop_edge(0, 0).await;
    let r = inflight.await.expect("task");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"worth the wait"[..]));
    assert!(
        tokio::net::TcpStream::connect(edge).await.is_err(),
        "no longer accepting"
    );
    c.shutdown().await;
}

/// A stale object with an ETag is revalidated with a conditional fetch (origin answers
/// not-modified, body kept); after the origin changes it, the new version is fetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_objects_revalidate_then_refetch_after_a_write() {
    let c = Cluster::start(spec(1, 1, false)).await.expect("cluster");
    let edge = c.regions[0].addrs[0];
    put(&c, "/r.short", b"v1").await;
    assert_eq!(
        raw_http(edge, &request("GET", "/r.short", &[]))
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = raw_http(edge, &request("GET", "/r.short", &[])).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"v1"[..]));
    assert_eq!(
        r.header("cache-status"),
        Some("shoal; fwd=stale; fwd-status=304; stored")
    );
    let origin = c.origin.as_ref().expect("origin");
    assert_eq!(origin.metrics.fetches(FetchResult::NotModified), 1);

    put(&c, "/r.short", b"v2").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = raw_http(edge, &request("GET", "/r.short", &[])).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"v2"[..]));
    assert_eq!(r.header("cache-status"), Some("shoal; fwd=stale; stored"));
    c.shutdown().await;
}

/// Under a partition the breaker opens after repeated failures, so requests fail at once
/// with a body that says so; when the partition heals, requests succeed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_opens_under_partition_and_recovers() {
    let mut s = spec(1, 1, true);
    s.edge.retries = 0;
    s.edge.breaker_failures = 2;
    s.edge.timeouts.origin_fetch = shoal_cache_core::size::HumanDuration::millis(300);
    let c = Cluster::start(s).await.expect("cluster");
    ready(&c).await;
    let edge = c.regions[0].addrs[0];
    for i in 0..3 {
        put(&c, &format!("/p{i}.txt"), b"x").await;
    }
    let relay = c.relay.as_ref().expect("relay");
    relay.set_blackhole(true);
    for i in 0..2 {
        let r = raw_http(edge, &request("GET", &format!("/p{i}.txt"), &[])).await;
        assert_eq!(r.status, 504, "attempt {i} times out");
    }
    let r = raw_http(edge, &request("GET", "/p2.txt", &[])).await;
    assert_eq!(r.status, 502);
    assert!(
        String::from_utf8_lossy(&r.body).contains("circuit open"),
        "{:?}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(relay.dropped() > 0);
    relay.set_blackhole(false);
    eventually(
        Duration::from_secs(15),
        "requests succeed after the partition heals",
        || async move { raw_http(edge, &request("GET", "/p2.txt", &[])).await.status == 200 },
    )
    .await;
    c.shutdown().await;
}

/// Over-limit objects are streamed: the client gets the first bytes while the origin has not
/// yet sent the last. Made deterministic with the relay: with 50 ms each way QUIC needs many
/// round trips for 3 MB, so once the client holds the first bytes we cut the link and the
/// body must be incomplete; when the link heals the rest arrives intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_bodies_reach_the_client_before_the_origin_finishes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = spec(1, 1, true);
    s.edge.cache.max_object_size = shoal_cache_core::size::ByteSize(256 << 10);
    let c = Cluster::start(s).await.expect("cluster");
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    put(&c, "/live.ts", &body).await;
    ready(&c).await;
    let relay = c.relay.as_ref().expect("relay");
    relay.set_delay(Duration::from_millis(50));

    let mut conn = tokio::net::TcpStream::connect(c.regions[0].addrs[0])
        .await
        .expect("connect");
    conn.write_all(&request("GET", "/live.ts", &[]))
        .await
        .expect("write");
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let head_end = loop {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk))
            .await
            .expect("first bytes within 10 s")
            .expect("read");
        assert!(n > 0, "closed before any body");
        got.extend_from_slice(&chunk[..n]);
        if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n")
            && got.len() > p + 4
        {
            break p + 4;
        }
    };
    relay.set_blackhole(true);
    // Drain what was already in flight; the rest cannot come.
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(150), conn.read(&mut chunk)).await
    {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    let partial = got.len() - head_end;
    assert!(
        partial > 0 && partial < body.len(),
        "client held {partial} of {} bytes before the origin finished",
        body.len()
    );
    relay.set_blackhole(false);
    tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut got))
        .await
        .expect("rest of the body within 30 s")
        .expect("read");
    assert_eq!(
        &got[head_end..],
        body.as_slice(),
        "complete and intact after the link healed"
    );
    c.shutdown().await;
}

//! Invalidation end to end: writes and purges at the origin reach every edge over the
//! subscription; tags, prefixes, soft purges; bad purge requests change nothing; an edge cut
//! off from the origin catches up on the log when it returns, or drops everything when the
//! log no longer reaches back.

use std::net::SocketAddr;
use std::time::Duration;

use shoal_loadgen::harness::cluster::Cluster;
use shoal_origin::metrics::FetchResult;
use shoal_tests::{Raw, eventually, raw_http, request, spec};

const TOKEN: &str = "purge-token";

fn origin(c: &Cluster) -> &shoal_origin::Origin {
    c.origin.as_ref().expect("origin running")
}

async fn started(mut s: shoal_loadgen::harness::cluster::ClusterSpec) -> Cluster {
    s.origin.admin_token = Some(TOKEN.into());
    let c = Cluster::start(s).await.expect("cluster");
    c.wait_ready(Duration::from_secs(10))
        .await
        .expect("every edge reaches the origin");
    let edges = c.regions.iter().map(|r| r.addrs.len()).sum::<usize>();
    let o = origin(&c);
    eventually(Duration::from_secs(5), "every edge subscribed", || {
        std::future::ready(o.writer.subscribers() == edges)
    })
    .await;
    c
}

/// An admin request with the token and a body.
async fn admin(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Raw {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: origin\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        r.push_str(&format!("{n}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r.push_str(body);
    raw_http(addr, r.as_bytes()).await
}

async fn purge(c: &Cluster, json: &str) -> Raw {
    let auth = format!("Bearer {TOKEN}");
    admin(
        origin(c).admin_addr,
        "POST",
        "/purge",
        &[("Authorization", &auth)],
        json,
    )
    .await
}

/// A field of the admin API's flat JSON answers.
fn field(r: &Raw, name: &str) -> u64 {
    let body = String::from_utf8_lossy(&r.body);
    let v: serde_json::Value =
        serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("JSON answer ({e}): {body}"));
    v[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

async fn get(addr: SocketAddr, path: &str) -> Raw {
    raw_http(addr, &request("GET", path, &[])).await
}

fn every_edge(c: &Cluster) -> Vec<SocketAddr> {
    c.regions.iter().flat_map(|r| r.addrs.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_purges_reach_every_edge() {
    let c = started(spec(3, 2, false)).await;
    let o = origin(&c);
    let auth = format!("Bearer {TOKEN}");
    let put = |path: &'static str, body: &'static str, tags: &'static str| {
        let auth = auth.clone();
        async move {
            let mut h = vec![("Authorization", auth.as_str())];
            if !tags.is_empty() {
                h.push(("Surrogate-Key", tags));
            }
            let r = admin(o.admin_addr, "PUT", &format!("/objects{path}"), &h, body).await;
            assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
            let seq = field(&r, "seq");
            // A fill that overlaps an invalidation of its key is not stored: let it arrive.
            o.writer.wait_applied(seq, Duration::from_secs(5)).await;
            seq
        }
    };

    // A write invalidates its key at every edge: every edge serves the new version once the
    // origin has every acknowledgement.
    put("/a.txt", "v1", "").await;
    for e in every_edge(&c) {
        assert_eq!(get(e, "/a.txt").await.body, b"v1");
    }
    let seq = put("/a.txt", "v2", "").await;
    let applied = o.writer.wait_applied(seq, Duration::from_secs(5)).await;
    assert_eq!((applied.acked, applied.subscribers), (6, 6));
    for e in every_edge(&c) {
        assert_eq!(get(e, "/a.txt").await.body, b"v2", "edge {e}");
    }

    // Tags: a purge by surrogate key drops exactly the tagged objects; the header is
    // indexed, never sent to clients.
    let e = c.regions[0].addrs[0];
    put("/t/1", "one", "grp other").await;
    put("/t/2", "two", "grp").await;
    put("/t/3", "three", "").await;
    for p in ["/t/1", "/t/2", "/t/3"] {
        get(e, p).await;
        let hit = get(e, p).await;
        assert_eq!(hit.header("cache-status"), Some("shoal; hit"), "{p}");
        assert_eq!(hit.header("surrogate-key"), None, "{p}");
    }
    let r = purge(&c, r#"{"tag":"grp","wait":true}"#).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!((field(&r, "acked"), field(&r, "subscribers")), (6, 6));
    let status =
        |p: &'static str| async move { get(e, p).await.header("cache-status").map(str::to_string) };
    assert_eq!(
        status("/t/1").await.as_deref(),
        Some("shoal; fwd=miss; stored")
    );
    assert_eq!(
        status("/t/2").await.as_deref(),
        Some("shoal; fwd=miss; stored")
    );
    assert_eq!(status("/t/3").await.as_deref(), Some("shoal; hit"));

    // A prefix names everything under it, and only that.
    put("/tx", "x", "").await;
    get(e, "/tx").await;
    let r = purge(&c, r#"{"prefix":"/t/","wait":true}"#).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        status("/t/3").await.as_deref(),
        Some("shoal; fwd=miss; stored")
    );
    assert_eq!(status("/tx").await.as_deref(), Some("shoal; hit"));

    // Keys, with and without a query: `/q` names every variant, `/q?v=1` only that one.
    put("/q", "q", "").await;
    get(e, "/q?v=1").await;
    get(e, "/q?v=2").await;
    let r = purge(&c, r#"{"keys":["/q?v=1"],"wait":true}"#).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        status("/q?v=1").await.as_deref(),
        Some("shoal; fwd=miss; stored")
    );
    assert_eq!(status("/q?v=2").await.as_deref(), Some("shoal; hit"));
    purge(&c, r#"{"keys":["/q"],"wait":true}"#).await;
    assert_eq!(
        status("/q?v=2").await.as_deref(),
        Some("shoal; fwd=miss; stored")
    );

    // Sequence numbers count every write and purge, one each.
    let before = field(&purge(&c, r#"{"keys":["/nothing"]}"#).await, "seq");
    let after = field(&purge(&c, r#"{"keys":["/nothing"]}"#).await, "seq");
    assert_eq!(after, before + 1);
    for edge in c.regions.iter().flat_map(|r| r.edges.iter().flatten()) {
        assert!(edge.invalidations_applied() >= before, "{}", edge.node_id());
    }
    c.shutdown().await;
}

/// A soft purge marks the object stale instead of dropping it: inside its
/// stale-while-revalidate window it is still served (from cache) while a refresh runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_purge_serves_stale_while_it_refreshes() {
    let c = started(spec(1, 1, false)).await;
    let o = origin(&c);
    // `.m3u8` is `max-age=2, stale-while-revalidate=2` by the origin's default rules.
    let (_, inv) = o
        .writer
        .put("/live.m3u8", "#EXTM3U\n".into(), None, vec![])
        .expect("put");
    let seq = inv.expect("the default mode pushes writes").seq;
    o.writer.wait_applied(seq, Duration::from_secs(5)).await;
    let e = c.regions[0].addrs[0];
    get(e, "/live.m3u8").await;
    let fetches =
        || o.metrics.fetches(FetchResult::Ok) + o.metrics.fetches(FetchResult::NotModified);
    let fetched = fetches();
    let r = purge(&c, r#"{"keys":["/live.m3u8"],"soft":true,"wait":true}"#).await;
    assert_eq!(r.status, 200);
    let stale = get(e, "/live.m3u8").await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, b"#EXTM3U\n");
    assert_eq!(
        stale.header("cache-status"),
        Some("shoal; hit; detail=stale")
    );
    eventually(
        Duration::from_secs(5),
        "the background refresh reaches the origin",
        || std::future::ready(fetches() > fetched),
    )
    .await;
    c.shutdown().await;
}

/// Bad purge requests get a 4xx that names the problem and append nothing to the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_purges_are_refused_and_change_nothing() {
    let c = started(spec(1, 1, false)).await;
    let first = field(&purge(&c, r#"{"keys":["/x"]}"#).await, "seq");
    let addr = origin(&c).admin_addr;
    let no_token = admin(addr, "POST", "/purge", &[], r#"{"keys":["/x"]}"#).await;
    assert_eq!(no_token.status, 401);
    let wrong = admin(
        addr,
        "POST",
        "/purge",
        &[("Authorization", "Bearer nope")],
        r#"{"tag":"a"}"#,
    )
    .await;
    assert_eq!(wrong.status, 401);
    for (body, says) in [
        ("{}", "exactly one"),
        (r#"{"keys":["/a"],"tag":"t"}"#, "exactly one"),
        (r#"{"keys":["/../etc/passwd"]}"#, "dot segments"),
        (r#"{"prefix":"relative"}"#, "'/'"),
        (r#"{"tag":"two words"}"#, "visible ASCII"),
        (r#"{"tag":""}"#, "visible ASCII"),
        (r#"{"keys":["/a"],"force":true}"#, "unknown field"),
        ("not json", "purge body"),
    ] {
        let r = purge(&c, body).await;
        let text = String::from_utf8_lossy(&r.body);
        assert_eq!(r.status, 400, "{body}: {text}");
        assert!(text.contains(says), "{body}: {text}");
    }
    let tags: String = (0..65).map(|i| format!("t{i} ")).collect();
    let auth = format!("Bearer {TOKEN}");
    let r = admin(
        addr,
        "PUT",
        "/objects/tagged",
        &[("Authorization", &auth), ("Surrogate-Key", &tags)],
        "x",
    )
    .await;
    assert_eq!(r.status, 400, "too many tags");
    let next = field(&purge(&c, r#"{"keys":["/x"]}"#).await, "seq");
    assert_eq!(next, first + 1, "no refused request took a sequence number");
    c.shutdown().await;
}

/// An edge cut off from the origin keeps serving what it has (its TTL bounds staleness),
/// catches up on the log when it returns, and drops everything when the log no longer
/// reaches back to where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_edge_replays_what_it_missed_or_resets() {
    let mut s = spec(1, 1, true);
    s.origin.invalidation_log = 3;
    let c = started(s).await;
    let o = origin(&c);
    let relay = c.relay.as_ref().expect("relay");
    let e = c.regions[0].addrs[0];
    for p in ["/a", "/b"] {
        let (_, inv) = o.writer.put(p, "v1".into(), None, vec![]).expect("put");
        // A fill that overlaps an invalidation of its key is not stored: let it arrive.
        let seq = inv.expect("the default mode pushes writes").seq;
        o.writer.wait_applied(seq, Duration::from_secs(5)).await;
        get(e, p).await;
    }
    let cut = |on| async move {
        relay.set_blackhole(on);
        eventually(
            Duration::from_secs(10),
            "subscription state follows the partition",
            || std::future::ready((o.writer.subscribers() == 0) == on),
        )
        .await;
    };

    // Missed one invalidation: replayed on return; the other object is kept.
    cut(true).await;
    let stale = get(e, "/a").await;
    assert_eq!(stale.body, b"v1", "cut off, the edge serves what it holds");
    o.writer.put("/a", "v2".into(), None, vec![]).expect("put");
    cut(false).await;
    eventually(
        Duration::from_secs(10),
        "the write reaches the returning edge",
        || async { get(e, "/a").await.body == b"v2" },
    )
    .await;
    assert_eq!(
        get(e, "/b").await.header("cache-status"),
        Some("shoal; hit")
    );

    // Missed more than the log keeps: everything is dropped.
    cut(true).await;
    for i in 0..5 {
        o.writer.purge(
            shoal_cache_core::wire::InvalidationTarget::Keys(vec![format!("/z{i}")]),
            false,
        );
    }
    cut(false).await;
    eventually(
        Duration::from_secs(10),
        "the reset edge drops what it held",
        || async { get(e, "/b").await.header("cache-status") == Some("shoal; fwd=miss; stored") },
    )
    .await;
    c.shutdown().await;
}

/// Through a lossy link — 10% of packets dropped, 10% duplicated and 10% reordered, both
/// ways, seeded — every write's invalidation still reaches every edge (QUIC repairs the
/// stream; sequence numbers make any replay harmless), and every edge serves the last
/// version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_survive_loss_duplication_and_reordering() {
    use shoal_loadgen::harness::relay::{Direction, Faults};
    let c = started(spec(1, 2, true)).await;
    let relay = c.relay.as_ref().expect("relay");
    relay.seed(7);
    let faults = Faults {
        delay: Duration::from_millis(1),
        drop: 0.1,
        duplicate: 0.1,
        reorder: 0.1,
        reorder_window: Duration::from_millis(5),
        cut: false,
    };
    relay.set_faults(Direction::ToOrigin, faults);
    relay.set_faults(Direction::ToEdge, faults);
    let o = origin(&c);
    let paths = ["/l/0", "/l/1", "/l/2"];
    for i in 0..30 {
        let path = paths[i % paths.len()];
        let (_, inv) = o
            .writer
            .put(path, format!("v{i}").into(), None, vec![])
            .expect("put");
        let seq = inv.expect("pushed").seq;
        let a = o.writer.wait_applied(seq, Duration::from_secs(10)).await;
        assert_eq!(a.acked, a.subscribers, "write {i}: {a:?}");
        for e in &c.regions[0].addrs {
            get(*e, path).await;
        }
    }
    for (i, path) in paths.iter().enumerate() {
        let last = format!("v{}", 27 + i);
        for e in &c.regions[0].addrs {
            assert_eq!(get(*e, path).await.body, last.as_bytes(), "{path} at {e}");
        }
    }
    assert!(relay.dropped() > 0, "the link did lose packets");
}

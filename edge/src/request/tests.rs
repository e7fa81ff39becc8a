//! The phases end to end inside one process: a mock origin (no sockets) behind the real
//! request path, with paused time where waiting matters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use http_body_util::BodyExt;
use shoal_cache_core::io::{BodyStream, FrameReader, write_frame};
use shoal_cache_core::wire::{BodyChunk, BodyLength, FrameCodec, Message, ResponseHead};

use super::*;
use crate::config::EdgeConfig;
use crate::upstream::{Fetch, Origin, OriginReply};

/// An origin in memory: objects by target, a fetch log, an optional delay, and a switch
/// that makes it down.
#[derive(Debug, Default)]
struct MockOrigin {
    objects: Mutex<HashMap<String, (String, Bytes)>>,
    fetched: Mutex<Vec<String>>,
    delay: Duration,
    down: AtomicBool,
    fetches: AtomicUsize,
    /// When set, a streamed body arrives in 8 KiB chunks, one per this interval.
    chunk_every: Option<Duration>,
}

impl MockOrigin {
    fn put(&self, target: &str, cache_control: &str, body: &'static [u8]) {
        self.objects.lock().unwrap().insert(
            target.into(),
            (cache_control.into(), Bytes::from_static(body)),
        );
    }
}

/// A body that arrives a chunk at a time, as from an origin on a slow link.
fn trickled(body: Bytes, every: Duration) -> crate::upstream::OriginBody {
    const CHUNK: usize = 8 << 10;
    let codec = FrameCodec::default();
    let (mut w, r) = tokio::io::duplex(1 << 20);
    let len = body.len();
    tokio::spawn(async move {
        for start in (0..len).step_by(CHUNK) {
            tokio::time::sleep(every).await;
            let end = (start + CHUNK).min(len);
            let m = Message::BodyChunk(BodyChunk {
                request_id: 1,
                offset: start as u64,
                data: body.slice(start..end),
                last: end == len,
            });
            if write_frame(&mut w, &codec, &m).await.is_err() {
                return;
            }
        }
    });
    let r: Box<dyn tokio::io::AsyncRead + Send + Unpin> = Box::new(r);
    BodyStream::new(FrameReader::new(r, codec), Some(len as u64))
}

async fn streamed(body: Bytes) -> crate::upstream::OriginBody {
    let codec = FrameCodec::default();
    let mut frames = Vec::new();
    let chunks: Vec<Bytes> = body.chunks(4).map(Bytes::copy_from_slice).collect();
    for (i, c) in chunks.iter().enumerate() {
        let m = Message::BodyChunk(BodyChunk {
            request_id: 1,
            offset: (i * 4) as u64,
            data: c.clone(),
            last: i + 1 == chunks.len(),
        });
        write_frame(&mut frames, &codec, &m).await.unwrap();
    }
    let r: Box<dyn tokio::io::AsyncRead + Send + Unpin> = Box::new(std::io::Cursor::new(frames));
    BodyStream::new(FrameReader::new(r, codec), Some(body.len() as u64))
}

impl Origin for MockOrigin {
    fn write(
        &self,
        req: crate::upstream::Write,
    ) -> BoxFuture<'_, Result<shoal_cache_core::wire::Written, EdgeError>> {
        async move {
            self.objects.lock().unwrap().insert(
                req.path.clone(),
                ("public, max-age=60".into(), req.body.clone()),
            );
            Ok(shoal_cache_core::wire::Written {
                request_id: 1,
                status: 201,
                version: 2,
                etag: Some("\"w\"".into()),
                seq: None,
                headers: vec![("cache-control".into(), "public, max-age=60".into())],
                message: String::new(),
            })
        }
        .boxed()
    }

    fn fetch(&self, req: Fetch) -> BoxFuture<'_, Result<OriginReply, EdgeError>> {
        async move {
            tokio::time::sleep(self.delay).await;
            if self.down.load(Ordering::SeqCst) {
                return Err(EdgeError::OriginDown("mock origin is down".into()));
            }
            self.fetches.fetch_add(1, Ordering::SeqCst);
            self.fetched.lock().unwrap().push(req.target.clone());
            let path = req.target.split('?').next().unwrap_or("").to_string();
            let found = self.objects.lock().unwrap().get(&path).cloned();
            let Some((cc, body)) = found else {
                let head = ResponseHead {
                    request_id: 1,
                    status: 404,
                    headers: vec![],
                    length: BodyLength::Known(0),
                    version: 0,
                };
                return Ok(OriginReply::Complete {
                    head,
                    body: Bytes::new(),
                });
            };
            let head = ResponseHead {
                request_id: 1,
                status: 200,
                headers: vec![
                    ("cache-control".into(), cc),
                    ("etag".into(), "\"v1\"".into()),
                    ("x-internal".into(), "not kept".into()),
                ],
                length: BodyLength::Known(body.len() as u64),
                version: 1,
            };
            if body.len() as u64 > req.collect_up_to {
                let body = match self.chunk_every {
                    Some(every) => trickled(body, every),
                    None => streamed(body).await,
                };
                return Ok(OriginReply::Streaming { head, body });
            }
            Ok(OriginReply::Complete { head, body })
        }
        .boxed()
    }

    fn is_up(&self) -> bool {
        !self.down.load(Ordering::SeqCst)
    }
}

fn config() -> EdgeConfig {
    let mut c = EdgeConfig::default();
    c.origin.fingerprints = vec!["ab".repeat(32)];
    c.cache.max_object_size = shoal_cache_core::size::ByteSize(1024);
    c
}

fn edge(c: EdgeConfig, origin: Arc<MockOrigin>) -> Arc<EdgeState> {
    Arc::new(EdgeState::new(c, origin).unwrap())
}

/// A mock origin holding `objects` (path, Cache-Control, body) and an edge in front of it.
fn setup(objects: &[(&str, &str, &'static [u8])]) -> (Arc<MockOrigin>, Arc<EdgeState>) {
    let origin = Arc::new(MockOrigin::default());
    for (path, cc, body) in objects {
        origin.put(path, cc, body);
    }
    let st = edge(config(), origin.clone());
    (origin, st)
}

fn get(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::get(path).header("host", "site.test");
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(Body::empty()).unwrap()
}

async fn body(r: Response<Body>) -> Bytes {
    r.into_body().collect().await.unwrap().to_bytes()
}

fn h<'a>(r: &'a Response<Body>, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_make_one_fetch_and_the_joiners_are_marked_collapsed() {
    let origin = Arc::new(MockOrigin {
        delay: Duration::from_millis(100),
        ..MockOrigin::default()
    });
    origin.put("/seg.ts", "public, max-age=60", b"segment");
    let st = edge(config(), origin.clone());
    let tasks: Vec<_> = (0..20)
        .map(|_| tokio::spawn(handle(st.clone(), get("/seg.ts", &[]))))
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status(), 200);
        statuses.push(h(&r, "cache-status").to_string());
        assert_eq!(body(r).await, "segment");
    }
    assert_eq!(origin.fetches.load(Ordering::SeqCst), 1);
    let stored = statuses
        .iter()
        .filter(|s| *s == "shoal; fwd=miss; stored")
        .count();
    let collapsed = statuses
        .iter()
        .filter(|s| *s == "shoal; fwd=miss; collapsed")
        .count();
    assert_eq!((stored, collapsed), (1, 19), "{statuses:?}");
    assert_eq!(st.store.stats().coalesced, 19);
    let metrics = st.metrics.render(&st.store.stats());
    assert!(
        metrics.contains(r#"shoal_edge_requests_total{status="200",cache="collapsed"} 19"#),
        "{metrics}"
    );
    let hit = handle(st.clone(), get("/seg.ts", &[])).await;
    assert_eq!(h(&hit, "cache-status"), "shoal; hit");
}

#[tokio::test]
async fn the_origin_is_asked_for_the_query_the_key_holds() {
    let (origin, st) = setup(&[("/search", "public, max-age=60", b"results")]);
    let r = handle(st.clone(), get("/search?q=fish&utm_source=ad&a=1", &[])).await;
    assert_eq!(r.status(), 200);
    // Sorted, tracking parameter dropped: exactly what the cache key holds.
    assert_eq!(*origin.fetched.lock().unwrap(), ["/search?a=1&q=fish"]);
    let r = handle(st.clone(), get("/search?a=1&q=fish", &[])).await;
    assert_eq!(
        h(&r, "cache-status"),
        "shoal; hit",
        "same key, served from cache"
    );
}

#[tokio::test]
async fn a_response_to_an_authorised_request_is_not_stored_unless_it_allows_sharing() {
    let (origin, st) = setup(&[
        ("/account", "max-age=60", b"mine"),
        ("/shared", "public, max-age=60", b"ours"),
    ]);
    let auth = [("authorization", "Bearer t")];
    for _ in 0..2 {
        let r = handle(st.clone(), get("/account", &auth)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            h(&r, "cache-status"),
            "shoal; fwd=miss; detail=authorization"
        );
    }
    assert_eq!(
        origin.fetches.load(Ordering::SeqCst),
        2,
        "not stored: fetched each time"
    );
    handle(st.clone(), get("/shared", &auth)).await;
    let r = handle(st.clone(), get("/shared", &auth)).await;
    assert_eq!(h(&r, "cache-status"), "shoal; hit", "public: stored");
}

#[tokio::test]
async fn every_response_names_the_node_and_the_cache_result() {
    let (origin, st) = setup(&[("/obj", "public, max-age=60", b"0123456789")]);
    let long = format!("/{}", "a".repeat(9000));
    let many: Vec<(String, String)> = (0..101).map(|i| (format!("x-{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let post = Request::post("/obj")
        .header("host", "site.test")
        .body(Body::empty())
        .unwrap();
    let cases = [
        (post, 405),
        (get("/a/../b", &[]), 400),
        (get(&long, &[]), 414),
        (get("/obj", &many), 431),
        (get("/obj", &[("range", "bytes=50-60")]), 416),
        (get("/obj", &[("range", "bytes=2-4")]), 206),
    ];
    for (req, status) in cases {
        let r = handle(st.clone(), req).await;
        assert_eq!(r.status(), status);
        assert_eq!(h(&r, NODE), "edge-1", "{status}");
        assert!(h(&r, "cache-status").starts_with("shoal"), "{status}");
        if status == 416 {
            assert_eq!(h(&r, "etag"), "\"v1\"");
            assert!(!h(&r, "age").is_empty());
            assert_eq!(h(&r, "content-range"), "bytes */10");
        }
    }
    origin.down.store(true, Ordering::SeqCst);
    let r = handle(st.clone(), get("/never-fetched", &[])).await;
    assert_eq!(r.status(), 502);
    assert_eq!(h(&r, NODE), "edge-1");
    assert_eq!(h(&r, "cache-status"), "shoal; fwd=miss; detail=origin-down");
    assert!(String::from_utf8_lossy(&body(r).await).contains("origin link down"));
}

#[tokio::test]
async fn with_the_origin_down_stale_content_is_served_where_allowed() {
    let (origin, st) = setup(&[
        ("/sie", "public, max-age=0, stale-if-error=60", b"old"),
        ("/strict", "public, max-age=0", b"old"),
    ]);
    for p in ["/sie", "/strict"] {
        assert_eq!(handle(st.clone(), get(p, &[])).await.status(), 200);
    }
    origin.down.store(true, Ordering::SeqCst);
    let r = handle(st.clone(), get("/sie", &[])).await;
    assert_eq!(
        (r.status().as_u16(), h(&r, "cache-status")),
        (200, "shoal; hit; detail=stale")
    );
    let r = handle(st.clone(), get("/strict", &[])).await;
    assert_eq!(r.status(), 502);
}

#[tokio::test]
async fn large_bodies_stream_unstored_with_offsets_checked() {
    let origin = Arc::new(MockOrigin::default());
    static BIG: [u8; 3000] = [7u8; 3000];
    let big: &'static [u8] = &BIG;
    origin.put("/big.ts", "public, max-age=60", big);
    let st = edge(config(), origin.clone());
    for _ in 0..2 {
        let r = handle(st.clone(), get("/big.ts", &[])).await;
        assert_eq!(h(&r, "cache-status"), "shoal; fwd=miss; detail=too-large");
        assert_eq!(h(&r, "content-length"), big.len().to_string());
        assert_eq!(body(r).await, big);
    }
    assert_eq!(origin.fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn forwarded_requests_are_served_where_they_land_and_dead_owners_are_skipped() {
    let origin = Arc::new(MockOrigin::default());
    origin.put("/x", "public, max-age=60", b"x");
    let mut c = config();
    // A peer that refuses connections, owning some keys.
    c.peers
        .insert("dead".into(), "127.0.0.1:1".parse().unwrap());
    let st = edge(c, origin.clone());
    let region = st.peers.now().region.clone();
    let key = |p: &str| region.key("site.test", p).unwrap();
    let owned = (0..200)
        .map(|i| format!("/x?{i}"))
        .find(|p| region.owner(&key(p)) == Some("dead"))
        .expect("the dead peer owns some key");
    let r = handle(st.clone(), get(&owned, &[(FORWARDED, "other")])).await;
    assert_eq!(r.status(), 200, "loop guard: served here");
    assert!(
        !st.metrics
            .render(&st.store.stats())
            .contains("peer_forwards_total{result=\"error\"}")
    );
    let r = handle(st.clone(), get(&owned, &[])).await;
    // The owner refused: this edge, next on the ring, served it.
    assert_eq!(r.status(), 200);
    let m = st.metrics.render(&st.store.stats());
    assert!(m.contains("peer_forwards_total{result=\"error\"} 1"), "{m}");
    assert!(
        st.peers
            .now()
            .get("dead")
            .unwrap()
            .is_down(std::time::Instant::now())
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_fill_queue_sheds_misses_fast_and_never_delays_hits() {
    let origin = Arc::new(MockOrigin {
        delay: Duration::from_secs(1),
        ..MockOrigin::default()
    });
    for p in ["/a", "/b", "/hot"] {
        origin.put(p, "public, max-age=600", b"x");
    }
    let mut c = config();
    c.overload.max_fills = 1;
    c.overload.fill_queue_timeout = shoal_cache_core::size::HumanDuration::millis(100);
    let st = edge(c, origin.clone());
    assert_eq!(handle(st.clone(), get("/hot", &[])).await.status(), 200);
    let slow = tokio::spawn(handle(st.clone(), get("/a", &[])));
    tokio::task::yield_now().await;
    let started = tokio::time::Instant::now();
    let shed = handle(st.clone(), get("/b", &[])).await;
    assert_eq!(shed.status(), 503);
    assert_eq!(h(&shed, "retry-after"), "1");
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "shed after the queue wait"
    );
    assert!(String::from_utf8_lossy(&body(shed).await).contains("fill queue"));
    let hit = handle(st.clone(), get("/hot", &[])).await;
    assert_eq!(h(&hit, "cache-status"), "shoal; hit");
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "the hit did not wait"
    );
    assert_eq!(
        slow.await.unwrap().status(),
        200,
        "the running fill finishes"
    );
}

#[tokio::test(start_paused = true)]
async fn a_miss_that_finds_the_fill_queue_full_is_shed_without_waiting() {
    let origin = Arc::new(MockOrigin {
        delay: Duration::from_secs(1),
        ..MockOrigin::default()
    });
    for p in ["/a", "/b", "/c"] {
        origin.put(p, "public, max-age=600", b"x");
    }
    let mut c = config();
    c.overload.max_fills = 1;
    c.overload.max_fill_queue = 1;
    c.overload.fill_queue_timeout = shoal_cache_core::size::HumanDuration::secs(5);
    let st = edge(c, origin.clone());
    let running = tokio::spawn(handle(st.clone(), get("/a", &[])));
    tokio::task::yield_now().await;
    let queued = tokio::spawn(handle(st.clone(), get("/b", &[])));
    tokio::task::yield_now().await;
    let started = tokio::time::Instant::now();
    let shed = handle(st.clone(), get("/c", &[])).await;
    assert_eq!(shed.status(), 503);
    assert_eq!(started.elapsed(), Duration::ZERO, "shed without a wait");
    assert!(String::from_utf8_lossy(&body(shed).await).contains("fill queue full"));
    // The queued fill gets the slot when the running one ends, and the queue empties.
    assert_eq!(running.await.unwrap().status(), 200);
    assert_eq!(queued.await.unwrap().status(), 200);
    assert_eq!(handle(st.clone(), get("/c", &[])).await.status(), 200);
    let m = st.metrics.render(&st.store.stats());
    assert!(
        m.contains("origin_fetches_total{result=\"queue_full\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn signed_paths_need_a_valid_signature_on_every_request_and_share_one_entry() {
    use crate::request::sign::sign;
    let origin = Arc::new(MockOrigin::default());
    origin.put("/video/a.ts", "public, max-age=600", b"segment");
    let mut c = config();
    c.signed_urls.prefixes = vec!["/video/".into()];
    c.signed_urls.keys.insert("k1".into(), "secret".into());
    let st = edge(c, origin.clone());
    let in_an_hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let url = |exp: u64| {
        format!(
            "/video/a.ts?{}",
            sign("/video/a.ts", exp, None, "k1", "secret")
        )
    };
    let r = handle(st.clone(), get(&url(in_an_hour), &[])).await;
    assert_eq!(r.status(), 200);
    // Another viewer's signature: the same cache entry.
    let r = handle(st.clone(), get(&url(in_an_hour + 60), &[])).await;
    assert_eq!(h(&r, "cache-status"), "shoal; hit");
    assert_eq!(
        *origin.fetched.lock().unwrap(),
        ["/video/a.ts"],
        "no token reaches the origin"
    );
    // Cached or not, no valid signature, no object: also under another spelling of the path.
    for bad in [
        "/video/a.ts".to_string(),
        "/vid%65o/a.ts".to_string(),
        url(in_an_hour).replace("sig=", "sig=00"),
        url(1),
    ] {
        let r = handle(st.clone(), get(&bad, &[])).await;
        assert_eq!(r.status(), 403, "{bad}");
        assert_eq!(h(&r, "cache-status"), "shoal; detail=forbidden");
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_abandoned_by_its_client_leaves_no_phantom_in_flight() {
    let origin = Arc::new(MockOrigin {
        delay: Duration::from_secs(5),
        ..MockOrigin::default()
    });
    origin.put("/slow", "public, max-age=60", b"x");
    let st = edge(config(), origin);
    let task = tokio::spawn(handle(st.clone(), get("/slow", &[])));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let during = st.metrics.render(&st.store.stats());
    assert!(
        during.contains("shoal_edge_inflight_requests 1"),
        "{during}"
    );
    task.abort(); // the client went away: hyper drops the request's future
    let _ = task.await;
    let after = st.metrics.render(&st.store.stats());
    assert!(after.contains("shoal_edge_inflight_requests 0"), "{after}");
}

/// A slow origin (a chunk of 8 KiB every 10 ms) holding `body` at `/seg.ts`, and an edge
/// that stores objects up to 1 MiB.
fn trickling(body: &'static [u8]) -> (Arc<MockOrigin>, Arc<EdgeState>) {
    let origin = Arc::new(MockOrigin {
        chunk_every: Some(Duration::from_millis(10)),
        ..MockOrigin::default()
    });
    origin.put("/seg.ts", "public, max-age=60", body);
    let mut c = config();
    c.cache.max_object_size = shoal_cache_core::size::ByteSize(1 << 20);
    (origin.clone(), edge(c, origin))
}

static SEGMENT: std::sync::LazyLock<Vec<u8>> =
    std::sync::LazyLock::new(|| (0..100_000u32).map(|i| (i % 251) as u8).collect());

#[tokio::test(start_paused = true)]
async fn joiners_of_a_body_still_arriving_share_its_one_fetch_and_get_their_head_at_once() {
    let seg: &'static [u8] = &SEGMENT;
    let (origin, st) = trickling(seg);
    // 13 chunks, 10 ms apart: the body takes 130 ms to arrive.
    let started = tokio::time::Instant::now();
    let first = tokio::spawn(handle(st.clone(), get("/seg.ts", &[])));
    tokio::time::sleep(Duration::from_millis(35)).await;
    let joiners: Vec<_> = (0..5)
        .map(|_| tokio::spawn(handle(st.clone(), get("/seg.ts", &[]))))
        .collect();
    let mut heads = Vec::new();
    let mut responses = Vec::new();
    for t in joiners {
        responses.push(t.await.unwrap());
        // The joiner's response begins before the body is in, not after.
        heads.push(started.elapsed());
    }
    for r in responses {
        assert_eq!(r.status(), 200);
        assert_eq!(h(&r, "cache-status"), "shoal; fwd=miss; collapsed");
        assert_eq!(h(&r, "content-length"), seg.len().to_string());
        assert_eq!(body(r).await, seg);
    }
    assert!(
        heads.iter().all(|t| *t < Duration::from_millis(60)),
        "joiners waited for the whole body: {heads:?}"
    );
    let r = first.await.unwrap();
    assert_eq!(h(&r, "cache-status"), "shoal; fwd=miss; stored");
    assert_eq!(body(r).await, seg);
    assert_eq!(origin.fetches.load(Ordering::SeqCst), 1);
    assert_eq!(st.metrics.fill_joins(), 5);
    // Complete: stored, and the next request is a hit with no new fetch.
    let r = handle(st.clone(), get("/seg.ts", &[])).await;
    assert_eq!(h(&r, "cache-status"), "shoal; hit");
    assert_eq!(body(r).await, seg);
    assert_eq!(origin.fetches.load(Ordering::SeqCst), 1);
    let m = st.metrics.render(&st.store.stats());
    assert!(m.contains("shoal_edge_fills_arriving 0"), "{m}");
}

#[tokio::test(start_paused = true)]
async fn a_range_on_a_body_still_arriving_waits_for_it_and_a_purge_stops_it_being_stored() {
    let seg: &'static [u8] = &SEGMENT;
    let (origin, st) = trickling(seg);
    let first = tokio::spawn(handle(st.clone(), get("/seg.ts", &[])));
    tokio::time::sleep(Duration::from_millis(25)).await;
    let ranged = tokio::spawn(handle(
        st.clone(),
        get("/seg.ts", &[("range", "bytes=99990-")]),
    ));
    tokio::time::sleep(Duration::from_millis(10)).await;
    // A purge while the body arrives: later requests fetch anew, and the fill is not kept.
    let all = shoal_cache_core::wire::InvalidationTarget::Prefix("/".into());
    st.invalidate(
        shoal_cache_core::invalidation::matcher(&all),
        shoal_cache_core::Purge::Remove,
    )
    .await;
    let after = tokio::spawn(handle(st.clone(), get("/seg.ts", &[])));
    let r = ranged.await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(h(&r, "content-range"), "bytes 99990-99999/100000");
    assert_eq!(body(r).await, &seg[99_990..]);
    assert_eq!(body(first.await.unwrap()).await, seg);
    let r = after.await.unwrap();
    assert_eq!(h(&r, "cache-status"), "shoal; fwd=miss; stored");
    assert_eq!(body(r).await, seg);
    assert_eq!(origin.fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_object_size_is_shared_while_it_arrives_but_never_stored() {
    let seg: &'static [u8] = &SEGMENT;
    let (origin, st) = trickling(seg);
    let mut c = config();
    c.cache.max_object_size = shoal_cache_core::size::ByteSize(50_000);
    let st2 = edge(c.clone(), origin.clone());
    drop(st);
    let a = tokio::spawn(handle(st2.clone(), get("/seg.ts", &[])));
    tokio::time::sleep(Duration::from_millis(25)).await;
    let b = tokio::spawn(handle(st2.clone(), get("/seg.ts", &[])));
    for t in [a, b] {
        let r = t.await.unwrap();
        assert_eq!(h(&r, "cache-status"), "shoal; fwd=miss; detail=too-large");
        assert_eq!(body(r).await, seg);
    }
    assert_eq!(origin.fetches.load(Ordering::SeqCst), 1);
    // Done and not stored: the next request fetches again.
    let r = handle(st2.clone(), get("/seg.ts", &[])).await;
    assert_eq!(body(r).await, seg);
    assert_eq!(origin.fetches.load(Ordering::SeqCst), 2);
    // With sharing of unstored bodies off, each request has its own fetch.
    c.cache.max_shared_fill = shoal_cache_core::size::ByteSize(0);
    let st3 = edge(c, origin.clone());
    let a = tokio::spawn(handle(st3.clone(), get("/seg.ts", &[])));
    tokio::time::sleep(Duration::from_millis(25)).await;
    let b = tokio::spawn(handle(st3.clone(), get("/seg.ts", &[])));
    for t in [a, b] {
        assert_eq!(body(t.await.unwrap()).await, seg);
    }
    assert_eq!(origin.fetches.load(Ordering::SeqCst), 4);
}

/// `/v/seg_1.ts` … `/v/seg_4.ts` on an origin that answers after 50 ms, behind an edge that
/// prefetches (at most `slots` at once).
fn prefetching(slots: usize) -> (Arc<MockOrigin>, Arc<EdgeState>) {
    let origin = Arc::new(MockOrigin {
        delay: Duration::from_millis(50),
        ..MockOrigin::default()
    });
    for i in 1..=4 {
        let path: &'static str = Box::leak(format!("/v/seg_{i}.ts").into_boxed_str());
        origin.put(path, "public, max-age=60", b"segment");
    }
    let mut c = config();
    c.prefetch.enabled = true;
    c.prefetch.max_concurrent = slots;
    (origin.clone(), edge(c, origin))
}

fn cmcd(nor: &str) -> String {
    shoal_cache_core::cmcd::Cmcd {
        next: Some(nor.into()),
        ..Default::default()
    }
    .to_query()
}

#[tokio::test(start_paused = true)]
async fn the_next_object_a_player_names_in_cmcd_is_prefetched_and_its_request_is_a_hit() {
    let (origin, st) = prefetching(4);
    let r = handle(
        st.clone(),
        get(&format!("/v/seg_1.ts?{}", cmcd("seg_2.ts")), &[]),
    )
    .await;
    assert_eq!(h(&r, "cache-status"), "shoal; fwd=miss; stored");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(st.metrics.prefetches("fetched"), 1);
    let r = handle(st.clone(), get("/v/seg_2.ts", &[])).await;
    assert_eq!(h(&r, "cache-status"), "shoal; hit");
    assert_eq!(body(r).await, "segment");
    // The CMCD-Request header works the same way; a cached next object is not fetched.
    let nor = [("cmcd-request", "nor=\"seg_2.ts\"")];
    handle(st.clone(), get("/v/seg_3.ts", &nor)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(st.metrics.prefetches("cached"), 1);
    assert_eq!(origin.fetches.load(Ordering::SeqCst), 3);
    // A prefetch is not a client request: the hit ratio counts only the client's.
    let stats = st.store.stats();
    assert_eq!((stats.hits, stats.misses), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn prefetch_is_bounded_and_never_follows_another_host_or_breaks_a_request() {
    let (origin, st) = prefetching(1);
    // Two prefetches at once with one slot: the second is skipped, not queued.
    let a = tokio::spawn(handle(
        st.clone(),
        get(&format!("/v/seg_1.ts?{}", cmcd("seg_2.ts")), &[]),
    ));
    let b = tokio::spawn(handle(
        st.clone(),
        get(&format!("/v/seg_3.ts?{}", cmcd("seg_4.ts")), &[]),
    ));
    for t in [a, b] {
        assert_eq!(t.await.unwrap().status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        (
            st.metrics.prefetches("fetched"),
            st.metrics.prefetches("busy")
        ),
        (1, 1)
    );
    let before = origin.fetches.load(Ordering::SeqCst);
    for q in [
        cmcd("https://elsewhere.test/x.ts"),
        cmcd("../../../../x.ts"),
        "CMCD=nor%3D%22unterminated".to_string(),
        "CMCD=%ff".to_string(),
    ] {
        let r = handle(st.clone(), get(&format!("/v/seg_1.ts?{q}"), &[])).await;
        assert_eq!(r.status(), 200, "{q}");
        assert_eq!(h(&r, "cache-status"), "shoal; hit", "{q}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(origin.fetches.load(Ordering::SeqCst), before);
    assert_eq!(st.metrics.prefetches("invalid"), 4);
    // Off by default.
    let (origin, _) = prefetching(1);
    let st = edge(config(), origin.clone());
    handle(
        st.clone(),
        get(&format!("/v/seg_1.ts?{}", cmcd("seg_2.ts")), &[]),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(origin.fetches.load(Ordering::SeqCst), 1);
}

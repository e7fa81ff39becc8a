//! Shoal in front of a plain HTTP server: edge → origin (QUIC) → upstream (HTTP/1.1).
//! The upstream here is a small axum server that records what it was asked, so the test
//! sees both ends: headers and bodies carried end to end, methods passed through and
//! invalidating, `Vary` variants, bodies of unknown length stored, and a dead upstream.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use shoal_loadgen::harness::cluster::Cluster;
use shoal_origin::UpstreamConfig;
use shoal_tests::{eventually, raw_http, request, spec};

/// One request the upstream saw.
#[derive(Debug, Clone)]
struct Seen {
    version: Version,
    method: String,
    target: String,
    headers: HeaderMap,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Seen>>>;

async fn upstream(
    State(log): State<Log>,
    version: Version,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let lang = headers
        .get("accept-language")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_string();
    log.lock().unwrap().push(Seen {
        version,
        method: method.to_string(),
        // HTTP/2 requests carry an absolute URI: compare origin-form targets.
        target: uri
            .path_and_query()
            .map_or_else(|| uri.to_string(), |p| p.to_string()),
        headers,
        body: body.clone(),
    });
    let path = uri.path();
    match (method.as_str(), path) {
        ("GET", "/page") => (
            [
                ("cache-control", "max-age=60"),
                ("x-upstream", "kept"),
                ("connection", "x-hop"),
                ("x-hop", "dropped"),
            ],
            "page",
        )
            .into_response(),
        ("GET", "/gone") => (
            StatusCode::GONE,
            [("cache-control", "max-age=60")],
            "gone for good",
        )
            .into_response(),
        ("GET", "/lang") => (
            [("cache-control", "max-age=60"), ("vary", "Accept-Language")],
            format!("in {lang}"),
        )
            .into_response(),
        // A streamed body: no Content-Length, so it goes out chunked.
        ("GET", "/chunked") => {
            let parts = futures_util::stream::iter(
                ["a", "b", "c"].map(|p| Ok::<_, std::io::Error>(Bytes::from(p))),
            );
            (
                [("cache-control", "max-age=60")],
                axum::body::Body::from_stream(parts),
            )
                .into_response()
        }
        // Longer than the origin reads ahead: its length stays unknown on the way.
        ("GET", "/big-chunked") => {
            let parts = futures_util::stream::iter(
                (0..3u8).map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![b'a' + i; 700_000]))),
            );
            (
                [("cache-control", "max-age=60")],
                axum::body::Body::from_stream(parts),
            )
                .into_response()
        }
        ("POST", "/page") => (
            StatusCode::CREATED,
            [("location", "/created/1")],
            format!("posted {} bytes", body.len()),
        )
            .into_response(),
        _ => (StatusCode::NOT_FOUND, "no such thing").into_response(),
    }
}

/// The payload of a chunked HTTP/1.1 body.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size = std::str::from_utf8(&raw[..line_end]).expect("ascii size");
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .expect("hex chunk size");
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

fn seen(log: &Log, method: &str, path: &str) -> Vec<Seen> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == method && s.target.starts_with(path))
        .cloned()
        .collect()
}

/// Starts the recording upstream; its address and log.
async fn start_upstream() -> (std::net::SocketAddr, Log) {
    let log: Log = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let up = listener.local_addr().expect("addr");
    let app = axum::Router::new()
        .fallback(upstream)
        .with_state(log.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (up, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_fronts_a_plain_http_server_end_to_end() {
    let (up, log) = start_upstream().await;

    let mut s = spec(2, 1, false);
    s.origin.upstream = Some(UpstreamConfig {
        url: format!("http://{up}"),
        ..UpstreamConfig::default()
    });
    s.edge.pass_through = true;
    let c = Cluster::start(s).await.expect("cluster");
    let edge = c.regions[0].addrs[0];
    let other_region = c.regions[1].addrs[0];

    // A GET: every end-to-end header both ways, the hop-by-hop ones and a client's
    // X-Forwarded-For not; then served from cache.
    let get = request(
        "GET",
        "/page?x=1",
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-client", "me"),
            ("connection", "x-secret"),
            ("x-secret", "no"),
        ],
    );
    let r = raw_http(edge, &get).await;
    assert_eq!(r.status, 200, "{:?}", r.headers);
    assert_eq!(r.body, b"page");
    assert_eq!(r.header("x-upstream"), Some("kept"));
    assert_eq!(r.header("x-hop"), None, "hop-by-hop header passed on");
    let asked = seen(&log, "GET", "/page");
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].version, Version::HTTP_11);
    assert_eq!(asked[0].target, "/page?x=1");
    let h = &asked[0].headers;
    assert_eq!(h["x-client"], "me");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "client's XFF trusted");
    assert_eq!(h["forwarded"], "for=127.0.0.1;proto=http");
    assert!(h.get("x-secret").is_none(), "hop-by-hop header forwarded");
    let hit = raw_http(edge, &get).await;
    assert_eq!(hit.header("cache-status"), Some("shoal; hit"));
    assert_eq!(seen(&log, "GET", "/page").len(), 1);
    // The other region holds its own copy.
    raw_http(other_region, &get).await;
    let there = raw_http(other_region, &get).await;
    assert_eq!(there.header("cache-status"), Some("shoal; hit"));
    assert_eq!(seen(&log, "GET", "/page").len(), 2);

    // An error status with explicit freshness is passed on and cached.
    for _ in 0..2 {
        let r = raw_http(edge, &request("GET", "/gone", &[])).await;
        assert_eq!((r.status, r.body.as_slice()), (410, &b"gone for good"[..]));
    }
    assert_eq!(seen(&log, "GET", "/gone").len(), 1);

    // A POST is passed through with its body, not cached, and invalidates the target.
    let mut post = request("POST", "/page", &[("content-length", "5")]);
    post.extend_from_slice(b"hello");
    let r = raw_http(edge, &post).await;
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.body, b"posted 5 bytes");
    assert_eq!(r.header("location"), Some("/created/1"));
    assert_eq!(r.header("cache-status"), Some("shoal; fwd=method"));
    assert_eq!(seen(&log, "POST", "/page")[0].body, &b"hello"[..]);
    let after = raw_http(edge, &get).await;
    assert_eq!(
        after.header("cache-status"),
        Some("shoal; fwd=miss; stored")
    );
    assert_eq!(
        seen(&log, "GET", "/page").len(),
        3,
        "POST did not invalidate"
    );
    // The origin's invalidation reaches the other region too.
    eventually(
        Duration::from_secs(5),
        "the other region drops its copy",
        || async {
            let r = raw_http(other_region, &get).await;
            r.header("cache-status") != Some("shoal; hit")
        },
    )
    .await;

    // Vary: one variant per language (normalised), each a hit the second time.
    for lang in ["en, de", "fr", "De, en", "fr"] {
        let r = raw_http(edge, &request("GET", "/lang", &[("accept-language", lang)])).await;
        assert_eq!(r.status, 200);
        let want = if lang == "fr" { "in fr" } else { "in en, de" };
        assert_eq!(String::from_utf8_lossy(&r.body), want, "{lang}");
    }
    let langs = seen(&log, "GET", "/lang");
    assert_eq!(langs.len(), 2, "variants were not reused: {langs:?}");

    // A body of unknown length is stored like any other.
    for _ in 0..2 {
        let r = raw_http(edge, &request("GET", "/chunked", &[])).await;
        assert_eq!(r.body, b"abc");
    }
    assert_eq!(seen(&log, "GET", "/chunked").len(), 1);
    // One longer than the origin's read-ahead streams through whole, in order.
    let r = raw_http(edge, &request("GET", "/big-chunked", &[])).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    let body = dechunk(&r.body);
    assert_eq!(body.len(), 2_100_000);
    for (i, part) in body.chunks(700_000).enumerate() {
        assert!(
            part.iter().all(|&b| b == b'a' + i as u8),
            "part {i} corrupted"
        );
    }

    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upstream_is_reached_over_http2() {
    let (up, log) = start_upstream().await;
    let mut s = spec(1, 1, false);
    s.origin.upstream = Some(UpstreamConfig {
        url: format!("http://{up}"),
        http2: true,
        ..UpstreamConfig::default()
    });
    let c = Cluster::start(s).await.expect("cluster");
    let r = raw_http(c.regions[0].addrs[0], &request("GET", "/page", &[])).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"page"[..]));
    assert_eq!(r.header("x-upstream"), Some("kept"));
    let asked = seen(&log, "GET", "/page");
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].version, Version::HTTP_2);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_is_a_502_that_names_it() {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut s = spec(1, 1, false);
    s.origin.upstream = Some(UpstreamConfig {
        url: format!("http://127.0.0.1:{port}"),
        connect_timeout: shoal_cache_core::size::HumanDuration::millis(500),
        ..UpstreamConfig::default()
    });
    let c = Cluster::start(s).await.expect("cluster");
    let edge = c.regions[0].addrs[0];
    let r = raw_http(edge, &request("GET", "/x", &[])).await;
    assert_eq!(r.status, 502);
    let body = String::from_utf8_lossy(&r.body);
    assert!(body.contains(&format!("127.0.0.1:{port}")), "{body}");
    // Not the origin link's fault: the edge keeps fetching (no open breaker).
    for _ in 0..6 {
        let r = raw_http(edge, &request("GET", "/y", &[])).await;
        assert_eq!(r.status, 502);
        assert!(
            String::from_utf8_lossy(&r.body).contains("upstream"),
            "{:?}",
            r.header("cache-status")
        );
    }
    tokio::time::timeout(Duration::from_secs(10), c.shutdown())
        .await
        .expect("shutdown");
}

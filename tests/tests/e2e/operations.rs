//! What operators rely on: the origin link's failure behaviour, identities that survive a
//! restart, certificate rotation, listen backlogs, and metrics a real parser accepts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use shoal_cache_core::size::HumanDuration;
use shoal_edge::{Edge, EdgeConfig};
use shoal_loadgen::harness::cluster::Cluster;
use shoal_origin::{Origin, OriginConfig};
use shoal_tests::{eventually, raw_http, request, spec};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("shoal-e2e-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// An edge on loopback ports, pinning what `pin` sets.
async fn edge_for(origin: SocketAddr, pin: impl FnOnce(&mut EdgeConfig)) -> Edge {
    let mut c = EdgeConfig {
        listen: loopback(),
        admin_listen: loopback(),
        ..EdgeConfig::default()
    };
    c.origin.addr = origin.into();
    c.timeouts.origin_connect = HumanDuration::millis(500);
    pin(&mut c);
    Edge::start(c).await.expect("edge starts")
}

/// A crashed or cut-off origin (the relay drops everything, as a killed process or a
/// partition would: no close reaches the edge) is noticed within the idle bound; readiness
/// answers at once throughout; once the link is known down a miss fails at once with a 502
/// that says so; the breaker counts attempts, not fetches; the link heals by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_origin_is_noticed_fast_and_misses_fail_fast() {
    let mut s = spec(1, 1, true);
    s.edge.retries = 1;
    s.edge.breaker_failures = 2;
    s.edge.timeouts.origin_fetch = HumanDuration::millis(300);
    let c = Cluster::start(s).await.expect("cluster");
    c.wait_ready(Duration::from_secs(10)).await.expect("ready");
    for p in ["/a.txt", "/b.txt", "/c.txt"] {
        c.store()
            .put(p, bytes::Bytes::from_static(b"x"), None)
            .expect("put");
    }
    let (edge, admin) = (
        c.regions[0].addrs[0],
        c.edge(0, 0).expect("edge").admin_addr,
    );
    let relay = c.relay.as_ref().expect("relay");
    relay.set_blackhole(true);
    let cut = Instant::now();

    // One fetch, two attempts (retries = 1): with breaker_failures = 2 that opens it.
    let r = raw_http(edge, &request("GET", "/a.txt", &[])).await;
    assert_eq!(r.status, 504);
    let r = raw_http(edge, &request("GET", "/b.txt", &[])).await;
    assert_eq!(r.status, 502);
    assert!(String::from_utf8_lossy(&r.body).contains("circuit open"));

    // Readiness: every probe answers at once; not ready within the idle bound.
    let mut slowest = Duration::ZERO;
    loop {
        let t = Instant::now();
        let status = raw_http(admin, &request("GET", "/readyz", &[]))
            .await
            .status;
        slowest = slowest.max(t.elapsed());
        if status == 503 {
            break;
        }
        assert!(
            cut.elapsed() < Duration::from_secs(8),
            "still ready 8 s after the cut"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let noticed = cut.elapsed();
    assert!(
        slowest < Duration::from_millis(500),
        "a probe took {slowest:?}"
    );
    assert!(
        noticed < Duration::from_secs(6),
        "noticed after {noticed:?} (idle bound 3 s)"
    );

    // Known down: a never-fetched object fails at once, well under the connect timeout.
    eventually(Duration::from_secs(5), "breaker half-open", || async {
        let t = Instant::now();
        let r = raw_http(edge, &request("GET", "/c.txt", &[])).await;
        let body = String::from_utf8_lossy(&r.body).to_string();
        if body.contains("circuit open") {
            return false;
        }
        assert_eq!(r.status, 502, "{body}");
        assert!(body.contains("origin link down"), "{body}");
        assert!(
            t.elapsed() < Duration::from_millis(400),
            "took {:?}",
            t.elapsed()
        );
        true
    })
    .await;

    relay.set_blackhole(false);
    let e = c.edge(0, 0).expect("edge");
    eventually(
        Duration::from_secs(10),
        "the edge reconnects by itself",
        || std::future::ready(e.is_ready()),
    )
    .await;
    let ok = raw_http(edge, &request("GET", "/c.txt", &[])).await;
    assert_eq!(ok.status, 200);
    c.shutdown().await;
}

/// An origin that generated its own certificate keeps it across a restart, so the edges
/// that pinned it trust it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_origin_keeps_its_generated_identity() {
    let dir = temp_dir("identity");
    let cfg = OriginConfig {
        quic_listen: loopback(),
        admin_listen: loopback(),
        cert_out: Some(dir.join("origin.pem")),
        ..OriginConfig::default()
    };
    let o = Origin::start(cfg.clone(), None).await.expect("origin");
    let (addr, fingerprint) = (o.quic_addr, o.fingerprint.clone());
    assert!(
        dir.join("origin.key").exists(),
        "the key is kept beside the certificate"
    );
    let e = edge_for(addr, |c| c.origin.cert_file = Some(dir.join("origin.pem"))).await;
    eventually(Duration::from_secs(10), "edge trusts the origin", || {
        std::future::ready(e.is_ready())
    })
    .await;
    let store = o.store.clone();
    o.shutdown().await;
    eventually(
        Duration::from_secs(10),
        "edge notices the origin left",
        || std::future::ready(!e.is_ready()),
    )
    .await;
    let again = OriginConfig {
        quic_listen: addr,
        ..cfg
    };
    // quinn releases the UDP socket from its driver task, just after shutdown returns.
    let mut tries = 0;
    let o = loop {
        match Origin::start(again.clone(), Some(store.clone())).await {
            Ok(o) => break o,
            Err(e) if tries < 40 => {
                tries += 1;
                eprintln!("origin not restarted yet: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("origin restarts: {e}"),
        }
    };
    assert_eq!(
        o.fingerprint, fingerprint,
        "same certificate after the restart"
    );
    eventually(
        Duration::from_secs(10),
        "edge trusts the restarted origin",
        || std::future::ready(e.is_ready()),
    )
    .await;
    e.shutdown().await;
    o.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// An edge may pin several certificates (rotation) and trusts no other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_pin_several_certificates_and_no_other() {
    let o = Origin::start(
        OriginConfig {
            quic_listen: loopback(),
            admin_listen: loopback(),
            ..OriginConfig::default()
        },
        None,
    )
    .await
    .expect("origin");
    let other = "ab".repeat(32);
    let both = edge_for(o.quic_addr, |c| {
        c.origin.fingerprints = vec![other.clone(), o.fingerprint.clone()];
    })
    .await;
    let wrong = edge_for(o.quic_addr, |c| c.origin.fingerprints = vec![other.clone()]).await;
    eventually(
        Duration::from_secs(10),
        "the edge pinning old and new connects",
        || std::future::ready(both.is_ready()),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !wrong.is_ready(),
        "an edge pinning another certificate must not connect"
    );
    let r = raw_http(wrong.http_addr, &request("GET", "/x", &[])).await;
    assert_eq!(r.status, 502);
    assert!(String::from_utf8_lossy(&r.body).contains("origin link down"));
    both.shutdown().await;
    wrong.shutdown().await;
    o.shutdown().await;
}

/// The listen backlog, as the kernel reports it (`ss`: Send-Q of a listening socket), is
/// the configured one (capped by `net.core.somaxconn`), not tokio's 1024 or the old 128;
/// the QUIC endpoint binds loopback for a loopback origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_have_the_configured_backlog_and_quic_binds_loopback() {
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096);
    let e = edge_for(SocketAddr::from(([127, 0, 0, 1], 9)), |c| {
        c.origin.fingerprints = vec!["ab".repeat(32)];
    })
    .await;
    for port in [e.http_addr.port(), e.admin_addr.port()] {
        let out = std::process::Command::new("ss")
            .args(["-Hltn", &format!("sport = :{port}")])
            .output()
            .expect("ss (Debian's iproute2, installed by .ci/run)");
        let text = String::from_utf8_lossy(&out.stdout);
        let backlog: u32 = text
            .split_whitespace()
            .nth(2)
            .and_then(|q| q.parse().ok())
            .unwrap_or_else(|| panic!("no listening socket in {text:?}"));
        assert_eq!(backlog, 4096.min(somaxconn), "port {port}: {text}");
    }
    let quic = e.quic_local_addr().expect("quic endpoint");
    assert!(quic.ip().is_loopback(), "QUIC bound to {quic}");
    e.shutdown().await;
}

fn promtool(text: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("promtool (Debian's prometheus package, installed by .ci/run): {e}")
        })?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(text)
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `/metrics` sends what its content type says: Prometheus text 0.0.4 by default, which
/// `promtool check metrics` accepts as valid and lint-clean, and OpenMetrics (ending in
/// `# EOF`) to a scraper that asks for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_in_the_format_they_announce() {
    let c = Cluster::start(spec(1, 1, false)).await.expect("cluster");
    c.wait_ready(Duration::from_secs(10)).await.expect("ready");
    c.store()
        .put("/m.txt", bytes::Bytes::from_static(b"m"), None)
        .expect("put");
    let edge = c.regions[0].addrs[0];
    for _ in 0..2 {
        assert_eq!(
            raw_http(edge, &request("GET", "/m.txt", &[])).await.status,
            200
        );
    }
    let admins = [
        c.edge(0, 0).expect("edge").admin_addr,
        c.origin.as_ref().expect("origin").admin_addr,
    ];
    for admin in admins {
        let text = raw_http(admin, &request("GET", "/metrics", &[])).await;
        assert_eq!(
            text.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert!(!String::from_utf8_lossy(&text.body).contains("# EOF"));
        if let Err(e) = promtool(&text.body) {
            panic!(
                "promtool rejects {admin}/metrics: {e}\n{}",
                String::from_utf8_lossy(&text.body)
            );
        }
        let accept = [(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )];
        let om = raw_http(admin, &request("GET", "/metrics", &accept)).await;
        assert_eq!(
            om.header("content-type"),
            Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
        );
        assert!(
            String::from_utf8_lossy(&om.body)
                .trim_end()
                .ends_with("# EOF")
        );
    }
    c.shutdown().await;
}

/// The origin is asked for the path and query the cache key holds; its rules match the
/// path, whatever the query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_reach_the_origin_and_its_rules_match_the_path() {
    let c = Cluster::start(spec(1, 1, false)).await.expect("cluster");
    c.wait_ready(Duration::from_secs(10)).await.expect("ready");
    c.store()
        .put("/v/seg_1.ts", bytes::Bytes::from_static(b"seg"), None)
        .expect("put");
    let edge = c.regions[0].addrs[0];
    let r = raw_http(
        edge,
        &request("GET", "/v/seg_1.ts?session=9&utm_source=x", &[]),
    )
    .await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"seg"[..]));
    assert_eq!(
        r.header("cache-control"),
        Some("public, max-age=31536000, immutable"),
        "the .ts rule applies with a query"
    );
    // A tracking parameter is not part of the key: the same object, from cache.
    let again = raw_http(
        edge,
        &request("GET", "/v/seg_1.ts?utm_medium=y&session=9", &[]),
    )
    .await;
    assert_eq!(again.header("cache-status"), Some("shoal; hit"));
    c.shutdown().await;
}

fn rss_mib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096 / (1 << 20)
}

/// Slow readers cannot make the origin hold a file per fetch: 20 stalled fetches of a
/// 17 MiB file (the case: +380 MiB when each fetch read the file whole) hold
/// little more than QUIC's flow-control windows; the stalled bodies still arrive intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_do_not_make_the_origin_hold_whole_files() {
    use shoal_edge::upstream::{Fetch, LinkSettings, OriginClient, OriginReply};
    let dir = temp_dir("slow-readers");
    let body: Vec<u8> = (0..17u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("big.ts"), &body).expect("write");
    let o = Origin::start(
        OriginConfig {
            quic_listen: loopback(),
            admin_listen: loopback(),
            content_dir: Some(dir.clone()),
            ..OriginConfig::default()
        },
        None,
    )
    .await
    .expect("origin");
    let mut c = EdgeConfig::default();
    c.origin.addr = o.quic_addr.into();
    c.origin.fingerprints = vec![o.fingerprint.clone()];
    let link = std::sync::Arc::new(
        OriginClient::new(LinkSettings::from_config(&c).expect("settings")).expect("client"),
    );
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(
        link.clone()
            .maintain(cancel.clone(), Duration::from_millis(100)),
    );
    let fetch = Fetch {
        method: "GET".into(),
        target: "/big.ts".into(),
        headers: Vec::new(),
        body: bytes::Bytes::new(),
        etag: None,
        collect_up_to: 0, // every body streams: held unread, it stalls its origin stream
    };
    let before = rss_mib();
    let mut stalled = Vec::new();
    for _ in 0..20 {
        match link.fetch(&fetch).await.expect("fetch") {
            OriginReply::Streaming { body, .. } => stalled.push(body),
            other => panic!("expected a stream, got {other:?}"),
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // let the origin fill every window
    let grew = rss_mib().saturating_sub(before);
    eprintln!("RSS grew {grew} MiB with 20 stalled readers of a 17 MiB file");
    assert!(grew < 200, "RSS grew {grew} MiB");
    let first = stalled.swap_remove(0).collect().await.expect("body");
    assert_eq!(first.len(), body.len());
    assert!(
        first.as_ref() == body.as_slice(),
        "streamed from the file intact"
    );
    drop(stalled);
    cancel.cancel();
    link.close();
    o.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// With an edge token set, the origin serves only edges that present it: an edge with a
/// wrong token or none never gets a fetch through (its connection is closed after the
/// refused `Hello`), and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_edges_with_the_token_reach_the_origin() {
    let o = Origin::start(
        OriginConfig {
            quic_listen: loopback(),
            admin_listen: loopback(),
            edge_token: Some("edge-secret".into()),
            ..OriginConfig::default()
        },
        None,
    )
    .await
    .expect("origin");
    o.store
        .put("/x.txt", bytes::Bytes::from_static(b"x"), None)
        .expect("put");
    let pin = |token: Option<&str>| {
        let (fp, token) = (o.fingerprint.clone(), token.map(str::to_string));
        move |c: &mut EdgeConfig| {
            c.origin.fingerprints = vec![fp];
            c.origin.token = token;
        }
    };
    let good = edge_for(o.quic_addr, pin(Some("edge-secret"))).await;
    let wrong = edge_for(o.quic_addr, pin(Some("guess"))).await;
    let none = edge_for(o.quic_addr, pin(None)).await;
    eventually(
        Duration::from_secs(10),
        "the edge with the token connects",
        || std::future::ready(good.is_ready()),
    )
    .await;
    let r = raw_http(good.http_addr, &request("GET", "/x.txt", &[])).await;
    assert_eq!(r.status, 200);
    for stranger in [&wrong, &none] {
        assert!(!stranger.is_ready());
        let r = raw_http(stranger.http_addr, &request("GET", "/x.txt", &[])).await;
        assert_eq!(r.status, 502);
        let body = String::from_utf8_lossy(&r.body);
        assert!(body.contains("origin refused this edge"), "{body}");
        assert!(!body.contains("edge-secret"));
    }
    assert_eq!(
        o.metrics.fetches(shoal_origin::metrics::FetchResult::Ok),
        1,
        "only the edge with the token fetched"
    );
    for e in [good, wrong, none] {
        e.shutdown().await;
    }
    o.shutdown().await;
}

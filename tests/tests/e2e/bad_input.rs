//! Hostile and malformed input: each gets the right status, and nothing in any cache or
//! store changes.

use shoal_loadgen::harness::cluster::Cluster;
use shoal_origin::metrics::FetchResult;
use shoal_tests::{raw_http, request, spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_right_status_and_change_nothing() {
    let c = Cluster::start(spec(1, 1, false)).await.expect("cluster");
    c.store()
        .put("/ok.txt", bytes::Bytes::from_static(b"fine"), None)
        .expect("put");
    let edge = c.regions[0].addrs[0];
    // Warm one object so there is something that could be poisoned.
    assert_eq!(
        raw_http(edge, &request("GET", "/ok.txt", &[])).await.status,
        200
    );
    let before = c.edge(0, 0).expect("edge").cache_stats();
    let origin_before = c
        .origin
        .as_ref()
        .expect("origin")
        .metrics
        .fetches(FetchResult::Ok);

    let long_uri = format!("/{}", "a".repeat(10_000));
    let big_header = "x".repeat(40_000);
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            request("GET", "/ok.txt", &[("Range", "bytes=alpha")]),
            416,
            "malformed range",
        ),
        (
            request("GET", "/ok.txt", &[("Range", "bytes=5-1")]),
            416,
            "reversed range",
        ),
        (request("GET", &long_uri, &[]), 414, "oversized URI"),
        (
            request("GET", "/ok.txt", &[("X-Big", &big_header)]),
            431,
            "oversized header",
        ),
        (request("BREW", "/ok.txt", &[]), 405, "unknown method"),
        (request("DELETE", "/ok.txt", &[]), 405, "DELETE at the edge"),
        (request("GET", "/../etc/passwd", &[]), 400, "raw traversal"),
        (
            request("GET", "/%2e%2e/etc/passwd", &[]),
            400,
            "encoded traversal",
        ),
        (
            request("GET", "/a/..%2f..%2fetc/passwd", &[]),
            400,
            "encoded slash",
        ),
        (request("GET", "/ok.txt%00", &[]), 400, "NUL"),
        (
            b"GET /ok.txt HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(),
            400,
            "missing Host",
        ),
        (
            request("GET", "/ok.txt", &[("Content-Length", "5")])
                .into_iter()
                .chain(*b"hello")
                .collect(),
            400,
            "GET with a body",
        ),
    ];
    for (req, want, what) in cases {
        let r = raw_http(edge, &req).await;
        assert_eq!(
            r.status,
            want,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        if want == 405 {
            assert_eq!(r.header("allow"), Some("GET, HEAD"), "{what}");
        }
    }
    // The clean object is unpoisoned, on a new connection.
    let again = raw_http(edge, &request("GET", "/ok.txt", &[])).await;
    assert_eq!((again.status, again.body.as_slice()), (200, &b"fine"[..]));
    assert_eq!(again.header("cache-status"), Some("shoal; hit"));
    let after = c.edge(0, 0).expect("edge").cache_stats();
    assert_eq!(
        (after.entries, after.fills),
        (before.entries, before.fills),
        "cache unchanged"
    );
    let origin_after = c
        .origin
        .as_ref()
        .expect("origin")
        .metrics
        .fetches(FetchResult::Ok);
    assert_eq!(origin_after, origin_before, "nothing reached the origin");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_admin_requires_the_token_and_rejects_traversal() {
    let mut s = spec(1, 1, false);
    s.origin.admin_token = Some("s3cret".into());
    let c = Cluster::start(s).await.expect("cluster");
    let admin = c.origin.as_ref().expect("origin").admin_addr;
    let put = |auth: Option<&str>, path: &str| {
        let mut r = format!(
            "PUT /objects{path} HTTP/1.1\r\nHost: origin\r\nConnection: close\r\nContent-Length: 3\r\n"
        );
        if let Some(a) = auth {
            r.push_str(&format!("Authorization: Bearer {a}\r\n"));
        }
        r.push_str("\r\nabc");
        r.into_bytes()
    };
    for auth in [None, Some("wrong"), Some("s3cret2"), Some("")] {
        let r = raw_http(admin, &put(auth, "/x.txt")).await;
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    assert_eq!(c.store().len(), 0, "nothing written without the token");
    let r = raw_http(admin, &put(Some("s3cret"), "/%2e%2e/escape.txt")).await;
    assert_eq!(r.status, 400);
    assert_eq!(c.store().len(), 0);
    let r = raw_http(admin, &put(Some("s3cret"), "/x.txt")).await;
    assert_eq!(r.status, 201);
    assert_eq!(c.store().len(), 1);
    let del = b"DELETE /objects/x.txt HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_http(admin, del).await.status, 401);
    assert_eq!(c.store().len(), 1);
    c.shutdown().await;
}

/// Writes are authenticated before the body is read: a stranger declaring a huge body (or
/// asking for `100 Continue`) is refused at once, with nothing read or stored; an
/// over-limit declared length is refused up front; paths are decoded exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_admin_authenticates_before_reading_and_decodes_once() {
    let mut s = spec(1, 1, false);
    s.origin.admin_token = Some("s3cret".into());
    s.origin.max_object_bytes = 1 << 20;
    let c = Cluster::start(s).await.expect("cluster");
    let admin = c.origin.as_ref().expect("origin").admin_addr;
    // Heads only: a server that waited for these bodies would never answer.
    let head = |path: &str, extra: &str| {
        format!("PUT /objects{path} HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n{extra}\r\n")
            .into_bytes()
    };
    let huge = "Content-Length: 314572800\r\n";
    let r = raw_http(admin, &head("/big.bin", huge)).await;
    assert_eq!(r.status, 401, "no token: refused before the 300 MiB body");
    let expect = format!("{huge}Expect: 100-continue\r\n");
    let r = raw_http(admin, &head("/big.bin", &expect)).await;
    assert_eq!(r.status, 401, "no 100 Continue for a stranger");
    let authed = format!("{huge}Authorization: Bearer s3cret\r\n");
    let r = raw_http(admin, &head("/big.bin", &authed)).await;
    assert_eq!(
        r.status, 413,
        "declared length over the limit: refused up front"
    );
    assert!(String::from_utf8_lossy(&r.body).contains("exceeds"));
    let two =
        "Content-Length: 0\r\nAuthorization: Bearer s3cret\r\nAuthorization: Bearer s3cret\r\n";
    assert_eq!(
        raw_http(admin, &head("/d.txt", two)).await.status,
        401,
        "duplicates"
    );
    assert_eq!(c.store().len(), 0, "nothing written");

    let put = |path: &str| {
        format!(
            "PUT /objects{path} HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\
             Authorization: bearer s3cret\r\nContent-Length: 1\r\n\r\nx"
        )
        .into_bytes()
    };
    assert_eq!(
        raw_http(admin, &put("/dd%2541.txt")).await.status,
        201,
        "scheme case-insensitive"
    );
    assert!(
        c.store().get("/dd%2541.txt").await.is_ok(),
        "stored as /dd%41.txt"
    );
    assert!(
        c.store().get("/ddA.txt").await.is_err(),
        "not decoded twice"
    );
    for bad in ["/a%2fb.txt", "/%2F%2F", "/a%5cb.txt"] {
        assert_eq!(raw_http(admin, &put(bad)).await.status, 400, "{bad}");
    }
    assert_eq!(c.store().len(), 1);
    c.shutdown().await;
}

/// The origin's content directory: files are served, nothing outside it is, symlinks out
/// included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_directory_cannot_be_escaped() {
    let base = std::env::temp_dir().join(format!("shoal-content-{}", std::process::id()));
    let root = base.join("root");
    std::fs::create_dir_all(root.join("sub")).expect("dirs");
    std::fs::write(root.join("sub/file.txt"), b"inside").expect("file");
    std::fs::write(base.join("secret.txt"), b"TOPSECRET").expect("secret");
    std::os::unix::fs::symlink(base.join("secret.txt"), root.join("link.txt")).expect("symlink");
    let mut s = spec(1, 1, false);
    s.origin.content_dir = Some(root.clone());
    let c = Cluster::start(s).await.expect("cluster");
    let edge = c.regions[0].addrs[0];
    let ok = raw_http(edge, &request("GET", "/sub/file.txt", &[])).await;
    assert_eq!((ok.status, ok.body.as_slice()), (200, &b"inside"[..]));
    for (path, want) in [
        ("/link.txt", 400),
        ("/../secret.txt", 400),
        ("/%2e%2e/secret.txt", 400),
        ("/sub", 404),
        ("/", 404),
    ] {
        let r = raw_http(edge, &request("GET", path, &[])).await;
        assert_eq!(r.status, want, "{path}");
        assert!(
            !String::from_utf8_lossy(&r.body).contains("TOPSECRET"),
            "{path} leaked"
        );
    }
    c.shutdown().await;
    let _ = std::fs::remove_dir_all(&base);
}

//! The demo's last part: Shoal in front of a plain HTTP server. A small web server on
//! loopback (pages with `Cache-Control`, one that varies on `Accept-Language`, POSTs
//! that change a page), an origin pulling through to it, and a region of two edges that
//! pass every method through. Reports what reached the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Serialize;

use crate::LoadgenError;
use crate::harness::cluster::{Cluster, ClusterSpec};

/// Pages the server has.
const PAGES: usize = 50;

/// What fronting a plain HTTP server did.
#[derive(Debug, Clone, Serialize)]
pub struct FrontReport {
    /// GETs of pages through the region (every page three times).
    pub page_gets: u64,
    /// Of those, served from an edge's cache.
    pub page_hits: u64,
    /// Requests the server saw for pages (GET).
    pub server_page_gets: u64,
    /// POSTs passed through (one per page).
    pub posts: u64,
    /// POSTs the server saw.
    pub server_posts: u64,
    /// GETs of the varying page (two languages, three times each).
    pub vary_gets: u64,
    /// Requests the server saw for it.
    pub server_vary_gets: u64,
    /// Requests that failed.
    pub errors: u64,
}

#[derive(Default)]
struct Counts {
    pages: AtomicU64,
    posts: AtomicU64,
    vary: AtomicU64,
}

async fn server(
    axum::extract::State(n): axum::extract::State<Arc<Counts>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let cc = [("cache-control", "public, max-age=300")];
    match (method.as_str(), uri.path()) {
        ("GET", "/hello") => {
            n.vary.fetch_add(1, Ordering::Relaxed);
            let lang = headers
                .get("accept-language")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("en");
            let text = if lang.starts_with("de") {
                "Hallo"
            } else {
                "Hello"
            };
            (
                [
                    ("cache-control", "public, max-age=300"),
                    ("vary", "Accept-Language"),
                ],
                text,
            )
                .into_response()
        }
        ("GET", p) if p.starts_with("/page/") => {
            n.pages.fetch_add(1, Ordering::Relaxed);
            (cc, format!("<html>{}</html>", "x".repeat(2048))).into_response()
        }
        ("POST", p) if p.starts_with("/page/") => {
            n.posts.fetch_add(1, Ordering::Relaxed);
            StatusCode::NO_CONTENT.into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Runs the server, the origin and a region of two edges; GETs every page twice, POSTs to
/// each (which invalidates it), GETs each again, and GETs the varying page in two
/// languages; then stops everything.
pub async fn run() -> Result<FrontReport, LoadgenError> {
    let counts = Arc::new(Counts::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(LoadgenError::Harness)?;
    let addr = listener.local_addr().map_err(LoadgenError::Harness)?;
    let app = axum::Router::new()
        .fallback(server)
        .with_state(counts.clone());
    let server_task = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut spec = ClusterSpec {
        regions: vec!["front".into()],
        edges_per_region: 2,
        ..ClusterSpec::default()
    };
    spec.origin.upstream = Some(shoal_origin::UpstreamConfig {
        url: format!("http://{addr}"),
        ..Default::default()
    });
    spec.edge.pass_through = true;
    let cluster = Cluster::start(spec).await?;
    cluster.wait_ready(Duration::from_secs(5)).await?;
    let client = cluster.client(0)?;
    let edge = cluster.regions[0].addrs[0];
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let send = |method: Method, path: String, lang: Option<&'static str>| {
        let http = http.clone();
        async move {
            let mut b = http::Request::builder()
                .method(method)
                .uri(format!("http://{edge}{path}"))
                .header(http::header::HOST, crate::harness::cluster::HOST);
            if let Some(l) = lang {
                b = b.header(http::header::ACCEPT_LANGUAGE, l);
            }
            let req = b.body(Full::new(Bytes::new())).ok()?;
            let resp = tokio::time::timeout(Duration::from_secs(5), http.request(req))
                .await
                .ok()?
                .ok()?;
            let ok = resp.status().is_success();
            let _ = resp.into_body().collect().await.ok()?;
            ok.then_some(())
        }
    };

    let mut r = FrontReport {
        page_gets: 0,
        page_hits: 0,
        server_page_gets: 0,
        posts: 0,
        server_posts: 0,
        vary_gets: 0,
        server_vary_gets: 0,
        errors: 0,
    };
    let pages: Vec<String> = (0..PAGES).map(|i| format!("/page/{i}")).collect();
    for round in 0..3 {
        if round == 2 {
            for p in &pages {
                r.posts += 1;
                if send(Method::POST, p.clone(), None).await.is_none() {
                    r.errors += 1;
                }
            }
        }
        for p in &pages {
            r.page_gets += 1;
            match client.get(p).await {
                Ok(f) if f.status == 200 => r.page_hits += u64::from(f.is_hit()),
                _ => r.errors += 1,
            }
        }
    }
    for lang in ["en", "de", "en", "de", "en", "de"] {
        r.vary_gets += 1;
        if send(Method::GET, "/hello".into(), Some(lang))
            .await
            .is_none()
        {
            r.errors += 1;
        }
    }
    r.server_page_gets = counts.pages.load(Ordering::Relaxed);
    r.server_posts = counts.posts.load(Ordering::Relaxed);
    r.server_vary_gets = counts.vary.load(Ordering::Relaxed);
    cluster.shutdown().await;
    server_task.abort();
    Ok(r)
}

/// The report as the demo prints it.
pub fn render(r: &FrontReport) -> String {
    format!(
        "\nIn front of a plain HTTP server (`shoal front URL`: origin pull-through, edges passing every method):\n\
         {} page GETs through a region of 2 edges: {} hits, {} reached the server (pages fetched, POSTed to, fetched again).\n\
         {} POSTs passed through ({} reached the server), each invalidating its page.\n\
         {} GETs of a page that varies on Accept-Language, in 2 languages: {} reached the server (one per variant).\n\
         errors: {}\n",
        r.page_gets,
        r.page_hits,
        r.server_page_gets,
        r.posts,
        r.server_posts,
        r.vary_gets,
        r.server_vary_gets,
        r.errors
    )
}

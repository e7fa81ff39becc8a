//! `shoal loadgen` against a region: a 10× spike of Zipf traffic over stored objects, open
//! loop, scraped edge metrics, and the HTML report drawn by a real browser.

use std::time::Duration;

use shoal_loadgen::harness::cluster::Cluster;
use shoal_loadgen::load::{Keys, Options, Plan, Target, report, run};
use shoal_tests::spec;

use crate::video::{chromium, have, screenshot, tempdir_in};

/// One region of `edges` edges, ready, whose origin holds `prefix0` … `prefix{n-1}`.
async fn region_with(edges: usize, prefix: &str, n: usize, body: bytes::Bytes) -> Cluster {
    let c = Cluster::start(spec(1, edges, false))
        .await
        .expect("cluster");
    for i in 0..n {
        c.store()
            .put(&format!("{prefix}{i}"), body.clone(), None)
            .expect("put");
    }
    c.wait_ready(Duration::from_secs(10)).await.expect("ready");
    c
}

/// `plan` through region 0 of `c`, owner-routed, with no scraping and no progress lines.
async fn quietly(c: &Cluster, plan: &Plan, seed: u64) -> shoal_loadgen::load::Results {
    let target = Target::Region(c.client(0).expect("client"));
    let opts = Options {
        metrics: Vec::new(),
        progress: false,
        seed,
    };
    run::run(plan, &target, &opts).await.expect("run")
}

/// A 10× spike (100 → 1,000 → 100 requests/s, 2 s each) of Zipf requests over 300 stored
/// objects through a region of two edges, owner-routed: no request fails, the region asks
/// the origin at most once per distinct object, the hit ratio after the spike is above the
/// baseline's, the per-second timeline covers the run with the origin fetches scraped
/// from the edges, and the HTML report is one self-contained file with its five charts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spike_through_a_region_is_measured_and_reported() {
    let c = region_with(2, "/o/", 300, bytes::Bytes::from(vec![b'x'; 2048])).await;
    let keys = Keys::Zipf {
        prefix: "/o/".into(),
        objects: 300,
        alpha: 0.9,
    };
    let plan = Plan::spike(100.0, 10.0, [Duration::from_secs(2); 3], keys);
    let opts = Options {
        metrics: c.regions[0]
            .edges
            .iter()
            .flatten()
            .map(|e| e.admin_addr)
            .collect(),
        progress: false,
        seed: 1,
    };
    let target = Target::Region(c.client(0).expect("client"));
    let r = run::run(&plan, &target, &opts).await.expect("run");
    println!("{}", report::table(&r));
    let sent: u64 = r.phases.iter().map(|p| p.sent).sum();
    assert!((2350..=2450).contains(&sent), "{sent}");
    assert_eq!(r.phases.iter().map(|p| p.errors).sum::<u64>(), 0, "{r:?}");
    let fetched: f64 = r.phases.iter().filter_map(|p| p.origin_fetches).sum();
    assert!(
        fetched > 0.0 && fetched <= r.distinct_paths as f64,
        "{fetched} origin fetches for {} paths",
        r.distinct_paths
    );
    assert!(
        r.phases[2].hit_ratio > r.phases[0].hit_ratio,
        "{:?}",
        r.phases
    );
    assert!(r.timeline.len() >= 6);
    assert!(r.timeline.iter().any(|s| s.origin_fetches.is_some()));
    let spike = &r.timeline[3];
    assert_eq!(spike.phase, "spike");
    assert!(spike.sent >= 900, "{spike:?}");

    let html = report::html("Shoal loadgen: 10× spike", &r);
    assert_eq!(html.matches("<svg").count(), 5);
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("<script"));
    let work = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("loadgen-report");
    let dir = tempdir_in(&work, "out");
    let page = dir.join("report.html");
    std::fs::write(&page, &html).expect("report");
    c.shutdown().await;

    if !have("chromium", "--version") {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is missing: .ci/run installs it (apt-get install chromium)"
        );
        eprintln!("skipped the browser check: needs chromium");
        return;
    }
    // The browser's own DOM: every chart has its lines, with a point per second.
    let profile = tempdir_in(&work, "profile");
    let dom = chromium(&profile)
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(dom.matches("<svg").count(), 5, "charts in the rendered DOM");
    let lines: Vec<usize> = dom
        .split("<polyline")
        .skip(1)
        .map(|p| {
            p.split("points=\"")
                .nth(1)
                .and_then(|x| x.split('"').next())
                .map_or(0, |pts| pts.split_whitespace().count())
        })
        .collect();
    assert!(lines.len() >= 7, "{lines:?}");
    assert!(lines.iter().filter(|n| **n >= 6).count() >= 6, "{lines:?}");
    assert!(dom.contains("class=\"spike\""), "the spike is shaded");
    let shot = work.join("loadgen-report.png");
    let url = format!("file://{}", page.display());
    let png = screenshot(&profile, &["--window-size=960,1400"], &url, &shot);
    assert!(png.len() > 20_000, "{} bytes: a blank page?", png.len());
    println!("report {} screenshot {}", page.display(), shot.display());
}

/// 5,000 connections opened at once against one edge, each asking for a cached
/// object and closing: every one is accepted and answered 200 (the listen backlog of 4,096
/// and a fast accept loop; a SYN the kernel had to drop would show as a retry a second
/// later, or as a failure). Prints the time to answer all of them and the slowest connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_5000_connections_is_accepted_and_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let c = Cluster::start(spec(1, 1, false)).await.expect("cluster");
    c.store()
        .put("/burst.txt", bytes::Bytes::from_static(b"burst"), None)
        .expect("put");
    c.wait_ready(Duration::from_secs(10)).await.expect("ready");
    let addr = c.regions[0].addrs[0];
    let warm = c
        .client(0)
        .expect("client")
        .get("/burst.txt")
        .await
        .expect("warm");
    assert_eq!(warm.status, 200);
    let request = format!(
        "GET /burst.txt HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        shoal_loadgen::harness::cluster::HOST
    );
    // The clients run on their own thread and runtime, as a separate client machine would:
    // 5,000 client tasks on the edge's own two workers would starve its accept loop.
    let clients = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("client runtime");
        rt.block_on(async move {
            let started = std::time::Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..5000 {
                let request = request.clone();
                set.spawn(async move {
                    let t = std::time::Instant::now();
                    let mut s = tokio::time::timeout(
                        Duration::from_secs(10),
                        tokio::net::TcpStream::connect(addr),
                    )
                    .await
                    .map_err(|_| "connect timed out".to_string())?
                    .map_err(|e| e.to_string())?;
                    let connected = t.elapsed();
                    s.write_all(request.as_bytes())
                        .await
                        .map_err(|e| e.to_string())?;
                    let mut answer = Vec::new();
                    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
                        .await
                        .map_err(|_| "answer timed out".to_string())?
                        .map_err(|e| e.to_string())?;
                    if answer.starts_with(b"HTTP/1.1 200") && answer.ends_with(b"burst") {
                        Ok(connected)
                    } else {
                        Err(String::from_utf8_lossy(&answer).into_owned())
                    }
                });
            }
            let mut out = Vec::new();
            while let Some(r) = set.join_next().await {
                out.push(r.unwrap_or_else(|e| Err(e.to_string())));
            }
            (out, started.elapsed())
        })
    });
    let (results, took) = tokio::task::spawn_blocking(move || clients.join().expect("clients"))
        .await
        .expect("join");
    let (mut ok, mut failed, mut slowest, mut retried) = (0, Vec::new(), Duration::ZERO, 0);
    for r in results {
        match r {
            Ok(t) => {
                ok += 1;
                slowest = slowest.max(t);
                // A connect over 900 ms waited for the kernel's SYN retransmission (1 s).
                retried += usize::from(t > Duration::from_millis(900));
            }
            Err(e) => failed.push(e),
        }
    }
    println!(
        "5000-connection burst: {ok} answered 200 in {:.2} s; {retried} connects needed a SYN retry (slowest {:.0} ms); {} failed",
        took.as_secs_f64(),
        slowest.as_secs_f64() * 1000.0,
        failed.len()
    );
    assert_eq!(ok, 5000, "failures: {:?}", &failed[..failed.len().min(5)]);
    c.shutdown().await;
}

/// The `viewers` scenario: viewers join a VOD ladder by a Poisson process (3 a second),
/// then a spike of joins (15 a second); every session plays its segments, each checked,
/// and later viewers find the segments cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_joining_by_a_poisson_process_with_a_spike_of_joins() {
    let mut s = spec(1, 2, false);
    s.origin.ladders = vec![shoal_cache_core::video::LadderConfig::named("v")];
    let c = Cluster::start(s).await.expect("cluster");
    c.wait_ready(Duration::from_secs(10)).await.expect("ready");
    let plan = Plan::from_toml(
        r#"
        [[phase]]
        name = "joins"
        duration = "2s"
        rate = 3
        arrivals = "poisson"
        keys = { kind = "fixed", path = "/video/v/master.m3u8" }
        viewers = { segments = 6, speed = 10 }
        [[phase]]
        name = "join-spike"
        duration = "1s"
        rate = 15
        arrivals = "poisson"
        keys = { kind = "fixed", path = "/video/v/master.m3u8" }
        viewers = { segments = 6, speed = 10 }
        "#,
    )
    .expect("plan");
    let r = quietly(&c, &plan, 5).await;
    println!("{}", report::table(&r));
    assert_eq!(r.viewers.len(), 2);
    let (joins, spike) = (&r.viewers[0], &r.viewers[1]);
    assert_eq!(joins.failed + spike.failed, 0, "{r:?}");
    assert!(
        joins.sessions >= 1 && spike.sessions > joins.sessions / 2,
        "{r:?}"
    );
    for v in &r.viewers {
        assert_eq!(v.segments, v.sessions * 6, "{v:?}");
    }
    assert!(
        spike.hits > 0,
        "later viewers are served from cache: {spike:?}"
    );
    let html = report::html("viewers", &r);
    assert!(html.contains("<h2>Viewers</h2>"));
    c.shutdown().await;
}

/// The same generator over HTTP/2 (h2c, the edges' prior-knowledge listener): a second of
/// 500 requests/s over 2 connections per edge, every one answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_over_http2_is_answered() {
    let c = region_with(2, "/h/", 20, bytes::Bytes::from_static(b"h2")).await;
    let mut plan = Plan::from_toml(
        r#"
        connections = 2
        http2 = true
        [[phase]]
        name = "h2"
        duration = "1s"
        rate = 500
        keys = { kind = "uniform", prefix = "/h/", objects = 20 }
        "#,
    )
    .expect("plan");
    let seed = 9;
    let r = quietly(&c, &plan, seed).await;
    assert_eq!((r.phases[0].sent, r.phases[0].ok), (500, 500), "{r:?}");
    assert!(r.phases[0].hit_ratio > 0.9, "{r:?}");
    // And the same plan over HTTP/1.1, for comparison in the output.
    plan.http2 = false;
    let r1 = quietly(&c, &plan, seed).await;
    assert_eq!(r1.phases[0].ok, 500);
    println!(
        "h2 p99 {:.2} ms, h1 p99 {:.2} ms",
        r.phases[0].p99_ms, r1.phases[0].p99_ms
    );
    c.shutdown().await;
}

/// A trace replayed at its own timestamps, 10× faster: 12 requests over 6 trace seconds
/// arrive over 0.6 s, each for the object the trace names (renumbered densely).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_replays_at_its_timestamps_time_scaled() {
    let c = region_with(1, "/t/", 3, bytes::Bytes::from_static(b"t")).await;
    let dir = tempdir_in(
        &std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
        "trace-replay",
    );
    let file = dir.join("tiny.csv");
    let mut text = String::from("timestamp,object_id,size\n");
    for (ts, id) in [(100, 7), (100, 8), (101, 7), (102, 9), (102, 7), (103, 8)] {
        text.push_str(&format!("{ts},{id},10\n{},{id},10\n", ts + 2));
    }
    std::fs::write(&file, text).expect("trace");
    let plan = Plan::from_toml(&format!(
        "[[phase]]\nname = \"replay\"\nduration = \"1s\"\nkeys = {{ kind = \"trace\", prefix = \"/t/\", file = {:?}, speed = 10 }}\n",
        file.display().to_string()
    ))
    .expect("plan");
    let started = std::time::Instant::now();
    let r = quietly(&c, &plan, 1).await;
    assert_eq!((r.phases[0].sent, r.phases[0].ok), (12, 12), "{r:?}");
    assert_eq!(r.distinct_paths, 3);
    // Sent by the trace's clock: the run lasts its 1 s phase, not less.
    assert!(started.elapsed() >= Duration::from_millis(900));
    c.shutdown().await;
}

/// Requests sent and failed over every phase of `r`.
fn totals(r: &shoal_loadgen::load::Results) -> (u64, u64) {
    r.phases
        .iter()
        .fold((0, 0), |(s, e), p| (s + p.sent, e + p.errors))
}

/// An edge that dies before the run: its keys go to the next edge on the ring, as the region
/// client fails over. Only the first requests to it fail (a connection that finds it gone
/// marks it down until a probe finds it answering), not its whole share of the keys; with
/// client failover (`failover = true`), not even those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_edge_costs_a_few_requests_not_its_share_of_the_keys() {
    let mut c = region_with(2, "/d/", 50, bytes::Bytes::from_static(b"d")).await;
    c.kill_edge(0, 1);
    let keys = Keys::Uniform {
        prefix: "/d/".into(),
        objects: 50,
    };
    let mut plan = Plan::spike(300.0, 1.0, [Duration::from_millis(700); 3], keys);
    plan.connections = 4;
    let r = quietly(&c, &plan, 2).await;
    let (sent, errors) = totals(&r);
    println!("{errors} errors of {sent} with one of two edges dead");
    assert!(sent >= 600, "{sent}");
    // Without failover about half would fail; a handful of probes per second remain.
    assert!(errors * 10 < sent, "{errors} of {sent}");
    assert!(errors > 0, "the dead edge refused nothing?");
    // With client failover, a refused request goes to the live edge: none fails.
    plan.failover = true;
    let r = quietly(&c, &plan, 2).await;
    let (sent, errors) = totals(&r);
    println!("{errors} errors of {sent} with failover");
    assert!(sent >= 600, "{sent}");
    assert_eq!(errors, 0, "{r:?}");
    c.shutdown().await;
}

/// An edge overloaded five times over with distinct misses in front of a distant origin
/// (`shoal overload`, shortened): the requests it cannot fill are refused with a 503, never
/// timed out or dropped; it keeps answering while overloaded; and once the overload ends,
/// every request of the last seconds is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_edge_refuses_what_it_cannot_fill_and_recovers() {
    use shoal_loadgen::overload::{OverloadConfig, run};
    let cfg = OverloadConfig {
        objects: 50_000,
        factor: 5.0,
        probe: Duration::from_secs(3),
        phases: [
            Duration::from_secs(2),
            Duration::from_secs(3),
            Duration::from_secs(4),
        ],
        ..OverloadConfig::default()
    };
    let r = run(&cfg).await.expect("overload run");
    eprintln!(
        "capacity {:.0}/s, goodput {:.0}/s ({:.0}%), refused {} (p99 {:.2} ms), recovered {:?}",
        r.capacity,
        r.goodput,
        100.0 * r.goodput_share,
        r.refused,
        r.refused_p99_ms,
        r.recovered_after_s
    );
    let spike = &r.run.phases[1];
    assert!(
        r.refused > 0,
        "an overload of 5× refused nothing: {spike:?}"
    );
    assert!(spike.ok > 0, "nothing answered while overloaded");
    for s in &r.run.timeline {
        for kind in s.errors.keys() {
            assert_eq!(kind, "5xx", "second {}: {:?}", s.t, s.errors);
        }
    }
    let last = r.run.timeline.last().expect("a timeline");
    assert!(
        last.sent > 0 && last.errors.is_empty(),
        "the last second after the overload still failed: {last:?}"
    );
}

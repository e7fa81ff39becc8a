//! `shoal loadgen` against a region: a 10× spike of Zipf traffic over stored objects, open
//! loop, scraped edge metrics, and the HTML report drawn by a real browser.

use std::time::Duration;

use shoal_loadgen::harness::cluster::Cluster;
use shoal_loadgen::load::{Keys, Options, Plan, Target, report, run};
use shoal_tests::spec;

use crate::video::{chromium, have, tempdir_in};

/// A 10× spike (100 → 1,000 → 100 requests/s, 2 s each) of Zipf requests over 300 stored
/// objects through a region of two edges, owner-routed: no request fails, the region asks
/// the origin at most once per distinct object, the hit ratio after the spike is above the
/// baseline's, the per-second timeline covers the run with the origin fetches scraped
/// from the edges, and the HTML report is one self-contained file with its five charts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spike_through_a_region_is_measured_and_reported() {
    let c = Cluster::start(spec(1, 2, false)).await.expect("cluster");
    for i in 0..300 {
        c.store()
            .put(
                &format!("/o/{i}"),
                bytes::Bytes::from(vec![b'x'; 2048]),
                None,
            )
            .expect("put");
    }
    c.wait_ready(Duration::from_secs(10)).await.expect("ready");
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
    let _ = std::fs::remove_file(&shot);
    let status = chromium(&profile)
        .args(["--window-size=960,1400"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("screenshot");
    assert!(status.success());
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    println!("report {} screenshot {}", page.display(), shot.display());
}

//! Synthetic adaptive-bitrate ladders served by the origin, through the edges: playlists
//! parse, segments are the size their bitrate implies and check out after passing an edge,
//! segments and playlists get the caching each needs, and a live window advances.

use std::time::Duration;

use shoal_cache_core::size::HumanDuration;
use shoal_cache_core::video::{LadderConfig, verify_segment};
use shoal_client::RegionClient;
use shoal_loadgen::harness::cluster::Cluster;
use shoal_origin::metrics::FetchResult;
use shoal_tests::{eventually, spec};

async fn cluster() -> Cluster {
    let mut s = spec(1, 2, false);
    s.origin.ladders = vec![
        LadderConfig {
            length: HumanDuration::secs(10),
            ..LadderConfig::named("vod")
        },
        LadderConfig {
            live: true,
            segment: HumanDuration::secs(1),
            window: 4,
            ..LadderConfig::named("live")
        },
    ];
    let c = Cluster::start(s).await.expect("cluster");
    c.wait_ready(Duration::from_secs(10)).await.expect("ready");
    c
}

async fn text(client: &RegionClient, path: &str) -> (String, shoal_client::Fetched) {
    let f = client.get(path).await.expect(path);
    assert_eq!(
        f.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&f.body)
    );
    (String::from_utf8_lossy(&f.body).into_owned(), f)
}

fn cache_control(f: &shoal_client::Fetched) -> &str {
    f.headers
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// A VOD ladder through a region: the master lists 4 renditions, each media playlist 5
/// segments, and every segment has exactly `bandwidth × 2 s / 8` bytes and verifies; a
/// second viewer is served every object from cache, and a Range on a segment is answered
/// from the cached copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vod_ladder_plays_through_a_region_and_every_segment_checks_out() {
    let c = cluster().await;
    let client = c.client(0).expect("client");
    let o = c.origin.as_ref().expect("origin");
    let (master, f) = text(&client, "/video/vod/master.m3u8").await;
    assert_eq!(
        f.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/vnd.apple.mpegurl")
    );
    let master = m3u8_rs::parse_master_playlist_res(master.as_bytes()).expect("master parses");
    assert_eq!(master.variants.len(), 4);
    // The same ladder as a DASH MPD, cached like a VOD playlist.
    let (mpd, f) = text(&client, "/video/vod/manifest.mpd").await;
    assert_eq!(
        f.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/dash+xml")
    );
    assert!(cache_control(&f).contains("max-age=86400"));
    assert!(
        mpd.contains("type=\"static\"") && mpd.contains("mediaPresentationDuration=\"PT10.000S\"")
    );
    assert_eq!(mpd.matches("<Representation ").count(), 4);
    let mut segments = 0;
    for v in &master.variants {
        let media_path = format!("/video/vod/{}", v.uri);
        let (media, f) = text(&client, &media_path).await;
        assert!(cache_control(&f).contains("max-age=86400"), "{media_path}");
        let media = m3u8_rs::parse_media_playlist_res(media.as_bytes()).expect("media parses");
        assert!(media.end_list);
        assert_eq!(media.segments.len(), 5);
        let dir = media_path.trim_end_matches("index.m3u8");
        for (i, s) in media.segments.iter().enumerate() {
            let f = client
                .get(&format!("{dir}{}", s.uri))
                .await
                .expect("segment");
            assert_eq!(f.status, 200);
            assert_eq!(f.body.len() as u64, v.bandwidth * 2 / 8, "{}", s.uri);
            let info = verify_segment(&f.body).expect("segment checks out");
            assert_eq!(info.index, i as u64);
            assert!(cache_control(&f).contains("immutable"));
            segments += 1;
        }
    }
    assert_eq!(segments, 20);
    // A second viewer: every object from cache, no origin fetch.
    let fetched = o.metrics.fetches(FetchResult::Ok);
    let seg = "/video/vod/1080p/seg_00003.ts";
    for p in ["/video/vod/master.m3u8", "/video/vod/1080p/index.m3u8", seg] {
        let f = client.get(p).await.expect(p);
        assert!(f.is_hit(), "{p}: {:?}", f.cache_status);
    }
    let whole = client.get(seg).await.expect("segment");
    let part = client
        .get_with(seg, &[("range", "bytes=1000-1999")])
        .await
        .expect("range");
    assert_eq!(part.status, 206);
    assert_eq!(part.body, whole.body.slice(1000..2000));
    // CMCD data (CTA-5004, as hls.js sends it) is not part of the key: still a hit.
    let cmcd = client
        .get(&format!(
            "{seg}?CMCD=bl%3D12000%2Cbr%3D5000%2Cnor%3D%22seg_00004.ts%22%2Cot%3Dv"
        ))
        .await
        .expect("cmcd");
    assert!(cmcd.is_hit(), "{:?}", cmcd.cache_status);
    assert_eq!(cmcd.body, whole.body);
    assert_eq!(o.metrics.fetches(FetchResult::Ok), fetched);
    // Past the end and unknown names are 404, not a generated body.
    for p in ["/video/vod/240p/seg_00005.ts", "/video/vod/4k/index.m3u8"] {
        assert_eq!(client.get(p).await.expect(p).status, 404, "{p}");
    }
    c.shutdown().await;
}

/// A live ladder: the media playlist holds the window, is cached for half a segment, and
/// its media sequence moves on in real time; the newest listed segment exists and checks
/// out, the next one does not yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_window_advances_through_the_edges() {
    let c = cluster().await;
    let client = c.client(0).expect("client");
    let path = "/video/live/360p/index.m3u8";
    let read = || async {
        let (t, f) = text(&client, path).await;
        let m = m3u8_rs::parse_media_playlist_res(t.as_bytes()).expect("live playlist parses");
        (m, f)
    };
    let (first, f) = read().await;
    assert_eq!(cache_control(&f), "public, max-age=1");
    assert!(!first.end_list);
    assert_eq!(first.segments.len(), 4);
    let newest = first.media_sequence + 3;
    let newest_path = format!(
        "/video/live/360p/{}",
        shoal_cache_core::video::segment_name(newest)
    );
    let s = client.get(&newest_path).await.expect("segment");
    assert_eq!(s.status, 200);
    assert_eq!(verify_segment(&s.body).expect("checks out").index, newest);
    eventually(
        Duration::from_secs(5),
        "the live window moves on",
        || async { read().await.0.media_sequence > first.media_sequence },
    )
    .await;
    let far = shoal_cache_core::video::segment_name(newest + 100);
    assert_eq!(
        client
            .get(&format!("/video/live/360p/{far}"))
            .await
            .expect("future")
            .status,
        404
    );
    c.shutdown().await;
}

/// `shoal abr` over the shared real traces (FCC broadband, Norway 3G): every rule plays
/// every trace; on the FCC trace that averages 0.19 Mb/s, below the lowest rung, every rule
/// stays on it and stalls most of the time (the floor case); the buffer-aware rules switch
/// far less than BBA-0, dash.js's dynamic strategy scores at least the throughput rule's
/// median QoE, RobustMPC beats the throughput rule's mean QoE, and abandonment raises
/// BBA-0's median. The simulation is deterministic, so these are exact regressions.
#[test]
fn abr_rules_over_the_shared_traces() {
    use shoal_client::abr::Rule;
    let dir = shoal_tests::shared_dir().join("abr-traces");
    let rules = Rule::ALL;
    let ladder = [400_000, 800_000, 2_500_000, 5_000_000];
    let sessions = shoal_loadgen::abr::evaluate(&dir, &rules, &ladder, 150, false).expect("traces");
    let traces = shoal_loadgen::abr::trace_files(&dir)
        .expect("trace files")
        .len();
    assert!(traces >= 10, "{traces} traces");
    assert_eq!(sessions.len(), traces * rules.len());
    let floor: Vec<_> = sessions
        .iter()
        .filter(|s| s.trace.contains("trace_5294"))
        .collect();
    assert_eq!(floor.len(), rules.len());
    for s in floor {
        assert_eq!(s.qoe.mean_kbps, 400.0, "{}: {:?}", s.rule, s.qoe);
        assert!(s.qoe.rebuffer_ratio > 0.5, "{}: {:?}", s.rule, s.qoe);
    }
    let of = |rule: &str| -> Vec<&shoal_client::abr::Qoe> {
        sessions
            .iter()
            .filter(|s| s.rule == rule)
            .map(|s| &s.qoe)
            .collect()
    };
    let switches = |rule| of(rule).iter().map(|q| q.switches_per_min).sum::<f64>();
    assert!(switches("bola") < switches("bba") / 4.0);
    assert!(switches("dynamic") < switches("bba") / 4.0);
    let median = |rule| {
        let mut v: Vec<f64> = of(rule).iter().map(|q| q.qoe_4s).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    assert!(median("dynamic") >= median("throughput"));
    // RobustMPC plans for QoE: a better mean than the throughput rule, at a higher bitrate.
    let mean = |rule, f: &dyn Fn(&shoal_client::abr::Qoe) -> f64| {
        let q = of(rule);
        q.iter().map(|x| f(x)).sum::<f64>() / q.len() as f64
    };
    assert!(mean("mpc", &|q| q.qoe_4s) > mean("throughput", &|q| q.qoe_4s));
    assert!(mean("mpc", &|q| q.mean_kbps) > mean("dynamic", &|q| q.mean_kbps));
    // Abandonment rescues the rule that aims highest from its own stalls.
    let abandoning =
        shoal_loadgen::abr::evaluate(&dir, &[Rule::Bba], &ladder, 150, true).expect("traces");
    let mut with: Vec<f64> = abandoning.iter().map(|s| s.qoe.qoe_4s).collect();
    with.sort_by(f64::total_cmp);
    assert!(with[with.len() / 2] > median("bba"), "{with:?}");
    println!("{}", shoal_loadgen::abr::render(&sessions));
}

/// `shoal play` through a region: a VOD session in accelerated time plays to the end list,
/// every segment checks out, and on loopback the ABR climbs to the top rung; a second
/// viewer is served from cache wherever it chose what the first one did; a live session
/// starts three segments behind the newest, reloads the playlist, and plays on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_player_plays_vod_and_live_through_a_region() {
    use shoal_client::player::{PlayConfig, play};
    let c = cluster().await;
    let client = c.client(0).expect("client");
    let cfg = PlayConfig {
        segments: 100,
        speed: 20.0,
        ..Default::default()
    };
    let first = play(&client, "/video/vod/master.m3u8", &cfg)
        .await
        .expect("vod plays");
    assert_eq!((first.segments, first.verified), (5, 5), "{first:?}");
    assert_eq!(first.renditions.last().map(String::as_str), Some("1080p"));
    assert!(first.qoe.startup_s > 0.0 && first.qoe.media_s == 10.0);
    let second = play(&client, "/video/vod/master.m3u8", &cfg)
        .await
        .expect("vod plays again");
    let same = first
        .renditions
        .iter()
        .zip(&second.renditions)
        .filter(|(a, b)| a == b)
        .count() as u64;
    assert!(same > 0 && second.hits >= same, "{first:?}\n{second:?}");

    let live = play(
        &client,
        "/video/live/master.m3u8",
        &PlayConfig {
            segments: 5,
            ..Default::default()
        },
    )
    .await
    .expect("live plays");
    assert_eq!((live.segments, live.verified), (5, 5), "{live:?}");
    assert!(
        live.playlist_fetches >= 2,
        "a live playlist is reloaded: {live:?}"
    );
    c.shutdown().await;
}

/// 200 concurrent viewers of a live rendition in one region, each reloading its playlist
/// every half target duration for 3 s, cost the origin about one playlist fetch per update
/// (the playlist is cached for half a segment and fills are coalesced at the key's owner).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_audience_costs_the_origin_about_one_playlist_fetch_per_update() {
    let c = cluster().await;
    let client = c.client(0).expect("client");
    let o = c.origin.as_ref().expect("origin");
    let path = "/video/live/720p/index.m3u8";
    let before = o.metrics.fetches(FetchResult::Ok);
    let started = std::time::Instant::now();
    let run = Duration::from_secs(3);
    let mut viewers = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let client = client.clone();
        viewers.spawn(async move {
            let mut sequences = Vec::new();
            while started.elapsed() < run {
                if let Ok(f) = client.get(path).await
                    && f.status == 200
                    && let Ok(m) = m3u8_rs::parse_media_playlist_res(&f.body)
                {
                    sequences.push(m.media_sequence);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            sequences
        });
    }
    let mut reads = 0;
    let mut seen = std::collections::BTreeSet::new();
    while let Some(r) = viewers.join_next().await {
        let s = r.expect("viewer");
        reads += s.len();
        seen.extend(s);
    }
    let fetches = o.metrics.fetches(FetchResult::Ok) - before;
    // 1 s segments over 3 s: 3 or 4 windows seen; the playlist is fresh for 1 s, so the
    // region refetches it about once per update.
    let updates = seen.len() as u64;
    println!("{reads} playlist reads, {updates} updates seen, {fetches} origin fetches");
    assert!(reads >= 200 * 5, "{reads}");
    assert!(updates >= 3, "{seen:?}");
    assert!(
        fetches <= 2 * updates + 1,
        "{fetches} fetches for {updates} updates"
    );
    c.shutdown().await;
}

/// The demo's video phase (a smaller demo): every viewer in every region plays the whole
/// ladder with every segment checked, and each region fetches each object it played from
/// the origin once, however many viewers asked for it at the same moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_viewers_play_every_segment_with_one_origin_fetch_per_object_per_region() {
    let reports = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("demo-reports");
    let report = shoal_loadgen::demo::run(shoal_loadgen::demo::DemoConfig {
        objects: 12,
        purges: 10,
        players: 4,
        spike: Some(shoal_loadgen::demo::SpikeConfig {
            rate: 50.0,
            phase: Duration::from_secs(1),
            objects: 50,
            ..Default::default()
        }),
        report_dir: reports.clone(),
        ..Default::default()
    })
    .await
    .expect("demo runs");
    // The spike: every request answered, in every region, with its report written.
    assert_eq!(report.spike.len(), 3);
    for s in &report.spike {
        let sent: u64 = s.results.phases.iter().map(|p| p.sent).sum();
        assert_eq!(sent, 50 + 500 + 50, "{}", s.region);
        assert!(s.results.phases.iter().all(|p| p.errors == 0), "{s:?}");
        let html = std::fs::read_to_string(&s.html).expect("report written");
        assert_eq!(html.matches("<svg").count(), 5);
    }
    assert_eq!(report.video.len(), 3);
    for v in &report.video {
        assert_eq!((v.players, v.failed), (4, 0), "{v:?}");
        assert_eq!(v.segments, 4 * 30, "{v:?}");
        assert_eq!(v.verified, v.segments, "{v:?}");
        // 30 segments of the chosen renditions, the master and their media playlists:
        // at most one fetch per distinct object, so well under one per viewer request.
        assert!(v.origin_fetches <= 30 * 4 + 5, "{v:?}");
        assert!(v.origin_fetches < v.segments, "{v:?}");
    }
    assert_eq!(report.purge.incomplete, 0);
    // In front of a plain HTTP server: 50 pages fetched, POSTed to (which invalidates
    // them), fetched again; a page in two languages.
    let f = report.front.expect("the front part ran");
    assert_eq!(f.errors, 0, "{f:?}");
    assert_eq!((f.page_gets, f.page_hits), (150, 50), "{f:?}");
    assert_eq!((f.server_page_gets, f.server_posts), (100, 50), "{f:?}");
    assert_eq!((f.vary_gets, f.server_vary_gets), (6, 2), "{f:?}");
}

/// Real media: `deploy/media/make-ladder.sh` encodes a 4 s ladder with Debian's ffmpeg
/// (fMP4 HLS and DASH), an origin serves it from its content directory, and the player
/// plays it through a region: playlists parse (with the CODECS the script derives), every
/// rendition's initialisation section and segments arrive intact (compared byte for byte
/// with the files), and a second viewer is served from cache. Needs ffmpeg, which `.ci/run`
/// installs: under CI a missing ffmpeg fails the test; elsewhere it is skipped, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ffmpeg_ladder_plays_through_a_region() {
    let have_ffmpeg = have("ffmpeg", "-version");
    if !have_ffmpeg {
        assert!(
            std::env::var_os("CI").is_none(),
            "ffmpeg is missing: .ci/run installs it (apt-get install ffmpeg)"
        );
        eprintln!("skipped: ffmpeg not installed (apt-get install ffmpeg)");
        return;
    }
    let out = std::env::temp_dir().join(format!("shoal-ladder-{}", std::process::id()));
    make_ladder(&out, 4);
    let master = std::fs::read_to_string(out.join("hls/master.m3u8")).expect("master written");
    assert_eq!(master.matches("CODECS=\"avc1.").count(), 4, "{master}");
    let mpd = std::fs::read_to_string(out.join("dash/manifest.mpd")).expect("MPD written");
    assert!(
        mpd.contains("<MPD") && mpd.contains("SegmentTemplate"),
        "{mpd}"
    );

    let mut s = spec(1, 2, false);
    s.origin.content_dir = Some(out.clone());
    let c = Cluster::start(s).await.expect("cluster");
    c.wait_ready(Duration::from_secs(10)).await.expect("ready");
    let client = c.client(0).expect("client");
    let cfg = shoal_client::player::PlayConfig {
        segments: 100,
        speed: 20.0,
        verify: false,
        ..Default::default()
    };
    let first = shoal_client::player::play(&client, "/hls/master.m3u8", &cfg)
        .await
        .expect("the ffmpeg ladder plays");
    assert_eq!(first.segments, 2, "4 s in 2 s segments: {first:?}");
    assert!(first.init_fetches >= 1, "{first:?}");
    // Byte for byte what ffmpeg wrote, after the edge.
    for (i, r) in first.renditions.iter().enumerate() {
        let rel = format!("hls/{r}/seg_{i:05}.m4s");
        let want = std::fs::read(out.join(&rel)).expect(&rel);
        let got = client.get(&format!("/{rel}")).await.expect("segment");
        assert_eq!(got.status, 200, "{rel}");
        assert!(got.body == want, "{rel} differs after the edge");
    }
    let second = shoal_client::player::play(&client, "/hls/master.m3u8", &cfg)
        .await
        .expect("plays again");
    assert!(second.hits > 0, "{second:?}");
    c.shutdown().await;
    let _ = std::fs::remove_dir_all(&out);
}

/// The page the browser test loads from the edge: it plays the ladder in a `<video>` and
/// logs its state as JSON on the console every 100 ms.
const PLAYER_PAGE: &str = r#"<!doctype html><html><body>
<video id="v" muted autoplay playsinline width="640" height="360"></video><pre id="out"></pre>
<script>
const v = document.getElementById('v'), out = document.getElementById('out');
let err = null;
v.addEventListener('error', () => { err = v.error ? v.error.code + ':' + v.error.message : 'error'; });
v.src = '/hls/master.m3u8';
v.play().catch(e => { err = 'play: ' + e; });
setInterval(() => {
  const s = JSON.stringify({t: v.currentTime, err: err});
  out.textContent = s;
  console.log('SHOAL ' + s);
}, 100);
</script></body></html>
"#;

/// Encodes a `seconds`-long ultrafast ladder into `out` with `deploy/media/make-ladder.sh`.
fn make_ladder(out: &std::path::Path, seconds: u32) {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/media/make-ladder.sh");
    let made = std::process::Command::new("bash")
        .arg(&script)
        .arg(out)
        .args([seconds.to_string().as_str(), "ultrafast"])
        .output()
        .expect("run make-ladder.sh");
    assert!(
        made.status.success(),
        "make-ladder.sh failed: {}",
        String::from_utf8_lossy(&made.stderr)
    );
}

pub(crate) fn have(tool: &str, arg: &str) -> bool {
    std::process::Command::new(tool)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

pub(crate) fn chromium(profile: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new("chromium");
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// Plays the page in headless Chromium until the video is `want` seconds in (or an error,
/// or 30 s); returns the furthest `currentTime` seen and the last error reported.
async fn play_in_chromium(url: &str, dir: &std::path::Path, want: f64) -> (f64, Option<String>) {
    let profile = tempdir_in(dir, "profile");
    let log = dir.join("chromium.log");
    let mut child = chromium(&profile)
        .args(["--enable-logging=stderr", "--v=0", url])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start chromium");
    let started = std::time::Instant::now();
    let (mut furthest, mut error) = (0.0f64, None);
    while started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        for line in text.lines().filter_map(|l| l.split("SHOAL ").nth(1)) {
            let json = line.split("\", source").next().unwrap_or_default();
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(json) {
                furthest = furthest.max(v["t"].as_f64().unwrap_or(0.0));
                if let Some(e) = v["err"].as_str() {
                    error = Some(e.to_string());
                }
            }
        }
        if furthest >= want || error.is_some() {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    (furthest, error)
}

/// A PNG of `url` taken by headless Chromium (with `args`), kept at `shot`; its bytes.
pub(crate) fn screenshot(
    profile: &std::path::Path,
    args: &[&str],
    url: &str,
    shot: &std::path::Path,
) -> Vec<u8> {
    let _ = std::fs::remove_file(shot);
    let status = chromium(profile)
        .args(args)
        .arg(format!("--screenshot={}", shot.display()))
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("screenshot");
    assert!(status.success());
    let png = std::fs::read(shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    png
}

pub(crate) fn tempdir_in(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("temp dir");
    p
}

/// A real browser: headless Chromium (Debian's, which plays HLS natively) loads a page from
/// an edge whose `<video>` plays the ffmpeg ladder's master playlist through the edge;
/// playback starts and `currentTime` passes 6 s (three 2 s segments) with no media error. A
/// second viewer plays it again with fewer origin fetches (the edge serves its copies), and a
/// screenshot is kept in the test's target directory. Needs ffmpeg and chromium, which
/// `.ci/run` installs: under CI a missing one fails the test; elsewhere it is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ffmpeg_ladder_plays_in_headless_chromium() {
    if !(have("ffmpeg", "-version") && have("chromium", "--version")) {
        assert!(
            std::env::var_os("CI").is_none(),
            "ffmpeg or chromium is missing: .ci/run installs them (apt-get install ffmpeg chromium)"
        );
        eprintln!("skipped: needs ffmpeg and chromium (apt-get install ffmpeg chromium)");
        return;
    }
    let work = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chromium-ladder");
    let media = tempdir_in(&work, "media");
    make_ladder(&media, 8);
    std::fs::write(media.join("play.html"), PLAYER_PAGE).expect("page");

    let mut s = spec(1, 1, false);
    s.origin.content_dir = Some(media.clone());
    let c = Cluster::start(s).await.expect("cluster");
    c.wait_ready(Duration::from_secs(10)).await.expect("ready");
    let o = c.origin.as_ref().expect("origin");
    let url = format!("http://{}/play.html", c.regions[0].addrs[0]);

    let before = o.metrics.fetches(FetchResult::Ok);
    let (t, err) = play_in_chromium(&url, &work, 6.0).await;
    assert_eq!(err, None, "the browser reported a media error");
    assert!(t >= 6.0, "playback reached only {t:.2} s");
    let first = o.metrics.fetches(FetchResult::Ok) - before;

    let before = o.metrics.fetches(FetchResult::Ok);
    let (t2, err2) = play_in_chromium(&url, &work, 6.0).await;
    assert!(
        err2.is_none() && t2 >= 6.0,
        "second viewer: {t2:.2} s, {err2:?}"
    );
    let second = o.metrics.fetches(FetchResult::Ok) - before;
    assert!(
        second < first,
        "the second viewer is served from the edge: {second} origin fetches after {first}"
    );

    let shot = work.join("chromium-ladder.png");
    let profile = tempdir_in(&work, "shot-profile");
    let png = screenshot(
        &profile,
        &["--window-size=800,480", "--virtual-time-budget=3000"],
        &url,
        &shot,
    );
    assert!(!png.is_empty());
    println!(
        "chromium played {t:.2} s (first viewer: {first} origin fetches; second: {second}); screenshot {}",
        shot.display()
    );
    c.shutdown().await;
}

/// A flash crowd on a segment no edge holds yet, over a 20 ms (each way) link to the
/// origin: 60 viewers in each of two regions ask at the same instant. Each region makes
/// one origin fetch; every viewer gets the whole segment, intact; the viewers that joined
/// the fill are served from its bytes as they arrive (`collapsed`). Prints the filler's and
/// the joiners' time to first byte next to the time the whole body took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flash_crowd_on_a_new_segment_costs_one_origin_fetch_per_region() {
    let mut s = spec(2, 2, true);
    s.origin.ladders = vec![LadderConfig::named("vod")];
    let c = Cluster::start(s).await.expect("cluster");
    c.wait_ready(Duration::from_secs(10)).await.expect("ready");
    c.relay
        .as_ref()
        .expect("relay")
        .set_delay(Duration::from_millis(20));
    let o = c.origin.as_ref().expect("origin");
    let path = "/video/vod/1080p/seg_00002.ts";
    let before = o.metrics.fetches(FetchResult::Ok);
    let crowd = 60;
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(2 * crowd));
    let mut viewers = tokio::task::JoinSet::new();
    for r in 0..2 {
        let client = c.client(r).expect("client");
        for _ in 0..crowd {
            let (client, start) = (client.clone(), start.clone());
            viewers.spawn(async move {
                start.wait().await;
                client.get(path).await
            });
        }
    }
    let (mut filler, mut joiners, mut totals) = (Vec::new(), Vec::new(), Vec::new());
    let mut size = 0;
    while let Some(r) = viewers.join_next().await {
        let f = r.expect("viewer").expect("segment");
        assert_eq!(f.status, 200);
        verify_segment(&f.body).expect("segment checks out");
        size = f.body.len();
        let status = f.cache_status.clone().unwrap_or_default();
        totals.push(f.total);
        if status.contains("stored") {
            filler.push(f.ttfb);
        } else {
            assert!(
                status.contains("collapsed") || status.contains("hit"),
                "{status}"
            );
            joiners.push(f.ttfb);
        }
    }
    let fetches = o.metrics.fetches(FetchResult::Ok) - before;
    assert_eq!(fetches, 2, "one origin fetch per region");
    assert_eq!(filler.len(), 2, "one filler per region");
    joiners.sort();
    totals.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "flash crowd of {} on one {} kB segment: filler TTFB {:.1}/{:.1} ms; joiner TTFB p50 {:.1} p99 {:.1} ms; whole body p50 {:.1} ms",
        2 * crowd,
        size / 1000,
        ms(filler[0]),
        ms(filler[1]),
        ms(joiners[joiners.len() / 2]),
        ms(joiners[joiners.len() * 99 / 100]),
        ms(totals[totals.len() / 2]),
    );
    c.shutdown().await;
}

/// CMCD prefetch on a cold audience (a smaller `shoal prefetch`): the player names its
/// next segment in CMCD, the edge serving a segment has the next one's owner fill it, and
/// the audience's segment hit ratio rises over the same run without prefetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cmcd_prefetch_raises_a_cold_audiences_segment_hit_ratio() {
    use shoal_loadgen::audience::{AudienceConfig, render, run};
    let cfg = AudienceConfig {
        players: 3,
        segments: 12,
        ..AudienceConfig::default()
    };
    let off = run(&cfg, false).await.expect("without prefetch");
    let on = run(&cfg, true).await.expect("with prefetch");
    println!("{}", render(&cfg, &[off.clone(), on.clone()]));
    for r in [&off, &on] {
        assert_eq!((r.players, r.failed), (3, 0), "{r:?}");
        assert_eq!(r.segments, 3 * 12, "{r:?}");
    }
    assert_eq!(off.prefetched, 0);
    assert!(on.prefetched > 0, "{on:?}");
    assert!(
        on.hit_ratio() > off.hit_ratio(),
        "prefetch did not raise the hit ratio: {off:?} {on:?}"
    );
}

/// The player over real sockets with its downloads shaped by a trace (80 ms per request,
/// Pensieve's convention): on a flat 1.6 Mb/s link it settles at or below 360p (800 kb/s),
/// the highest rung the link sustains, without stalling once started; on a flat 50 Mb/s
/// link it climbs to 1080p; when the link collapses under a 1080p download, abandoning it
/// for a lower rung stalls less than finishing it. Every segment checks out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_player_settles_low_on_a_throttled_link_and_climbs_on_a_fast_one() {
    use shoal_client::abr::Trace;
    use shoal_client::player::{PlayConfig, Shaping, play};
    let mut s = spec(1, 2, false);
    s.origin.ladders = vec![LadderConfig::named("long")];
    let c = Cluster::start(s).await.expect("cluster");
    c.wait_ready(Duration::from_secs(10)).await.expect("ready");
    let client = c.client(0).expect("client");
    let flat = |mbps| Trace::new(vec![(0.0, mbps), (1.0, mbps)]).expect("trace");
    let session = |mbps| PlayConfig {
        segments: 30,
        speed: 20.0,
        network: Some(Shaping {
            trace: flat(mbps),
            rtt: 0.08,
            start: 0.0,
        }),
        ..Default::default()
    };
    let slow = play(&client, "/video/long/master.m3u8", &session(1.6))
        .await
        .expect("plays on a slow link");
    assert_eq!((slow.segments, slow.verified), (30, 30), "{slow:?}");
    let tail = &slow.renditions[15..];
    assert!(
        tail.iter().all(|r| r == "240p" || r == "360p"),
        "1.6 Mb/s: {:?}",
        slow.renditions
    );
    assert!(slow.qoe.rebuffer_s < 1.0, "{:?}", slow.qoe);
    let fast = play(&client, "/video/long/master.m3u8", &session(50.0))
        .await
        .expect("plays on a fast link");
    assert_eq!(fast.verified, 30);
    assert!(
        fast.renditions[15..].iter().all(|r| r == "1080p"),
        "50 Mb/s: {:?}",
        fast.renditions
    );
    println!(
        "shaped player: 1.6 Mb/s → {:?}; 50 Mb/s → {:?}",
        slow.renditions, fast.renditions
    );
    // The link collapses from 20 to 0.8 Mb/s after 20 s with a 1080p download under way and
    // 8 s buffered: abandoning it for 240p costs far less stall than finishing it.
    let collapse = |abandon| PlayConfig {
        segments: 16,
        speed: 20.0,
        max_buffer: 8.0,
        abandon,
        network: Some(Shaping {
            trace: Trace::new(vec![(0.0, 20.0), (20.0, 0.8), (1000.0, 0.8)]).expect("trace"),
            rtt: 0.08,
            start: 0.0,
        }),
        ..Default::default()
    };
    let kept = play(&client, "/video/long/master.m3u8", &collapse(false))
        .await
        .expect("plays without abandonment");
    let dropped = play(&client, "/video/long/master.m3u8", &collapse(true))
        .await
        .expect("plays with abandonment");
    println!(
        "link collapse: without abandonment {:.1} s of stall, with {:.1} s ({} abandoned)",
        kept.qoe.rebuffer_s, dropped.qoe.rebuffer_s, dropped.abandoned
    );
    assert_eq!(kept.abandoned, 0);
    assert!(dropped.abandoned >= 1, "{dropped:?}");
    assert_eq!(dropped.verified, 16);
    assert!(
        dropped.qoe.rebuffer_s < kept.qoe.rebuffer_s,
        "{:?}\n{:?}",
        kept.qoe,
        dropped.qoe
    );
    c.shutdown().await;
}

//! The public HTTP caching test suite (cache-tests.fyi, in `shared/conformance/`) run
//! through one edge in front of the suite's own server: origin `upstream` at the server,
//! edge `pass_through`, everything else default. Asserts the floor Shoal has reached, so
//! a change that loses conformance fails here instead of going unnoticed.
//!
//! Takes about a minute (the suite waits out real lifetimes). Needs node ≥ 18 (`.ci/run`
//! installs Debian's `nodejs` where it is missing).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_loadgen::harness::cluster::Cluster;
use shoal_origin::UpstreamConfig;
use shoal_tests::{shared_dir, spec};

/// Required tests passed (of 163) that must hold: measured 153 (see the README's table);
/// a little room for the suite's own timing on a loaded 2-core machine.
const REQUIRED_FLOOR: u32 = 150;
/// Optimal tests passed (of 107): measured 84.
const OPTIMAL_FLOOR: u32 = 80;

/// A child process killed when dropped, also when the test fails.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `(passed, total)` from a score line's `label NNN/TTT`.
fn score(line: &str, label: &str) -> Option<(u32, u32)> {
    let rest = line.split(label).nth(1)?.trim_start();
    let (p, t) = rest.split_whitespace().next()?.split_once('/')?;
    Some((p.parse().ok()?, t.parse().ok()?))
}

#[test]
fn score_parsing_reads_the_this_run_line() {
    let line = "  r.json                required 153/163   optimal  84/107   checks yes 41/100";
    assert_eq!(score(line, "required"), Some((153, 163)));
    assert_eq!(score(line, "optimal"), Some((84, 107)));
    assert_eq!(score("nothing here", "required"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_cache_test_suite_scores_at_least_the_floor() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "node is needed to run the cache test suite (Debian: apt-get install nodejs)"
    );
    let script = shared_dir().join("conformance/run-cache-tests.sh");
    assert!(script.is_file(), "missing {}", script.display());

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let _server = Killed(
        Command::new("bash")
            .arg(&script)
            .args(["serve", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the suite's server"),
    );
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the suite's server did not listen on {port}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Product defaults but for the two settings that put Shoal in front of a server.
    let mut s = spec(1, 1, false);
    s.edge = shoal_edge::EdgeConfig::default();
    s.edge.pass_through = true;
    s.origin = shoal_origin::OriginConfig::default();
    s.origin.upstream = Some(UpstreamConfig {
        url: format!("http://127.0.0.1:{port}"),
        ..UpstreamConfig::default()
    });
    let c = Cluster::start(s).await.expect("cluster");
    let edge = c.regions[0].addrs[0];
    let out = std::env::temp_dir().join(format!("shoal-cache-tests-{}.json", std::process::id()));
    let (script2, out2) = (script.clone(), out.clone());
    let run = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .arg(&script2)
            .args(["run", &format!("http://{edge}")])
            .arg(&out2)
            .env("SHOW_FAILED", "1")
            .output()
    });
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the suite ran for over 5 minutes")
        .expect("join")
        .expect("run the suite");
    c.shutdown().await;
    let _ = std::fs::remove_file(&out);
    let text = String::from_utf8_lossy(&output.stdout);
    println!("{text}");
    assert!(
        output.status.success(),
        "the suite failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = text
        .lines()
        .skip_while(|l| !l.starts_with("this run:"))
        .nth(1)
        .expect("a score line for this run");
    let (required, of_required) = score(line, "required").expect("required score");
    let (optimal, of_optimal) = score(line, "optimal").expect("optimal score");
    assert!(
        required >= REQUIRED_FLOOR && optimal >= OPTIMAL_FLOOR,
        "cache-tests score fell: required {required}/{of_required} (floor {REQUIRED_FLOOR}), \
         optimal {optimal}/{of_optimal} (floor {OPTIMAL_FLOOR})\n{text}"
    );
}

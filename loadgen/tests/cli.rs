//! The `shoal` binary as a user runs it.

use std::path::PathBuf;
use std::process::Command;

fn shoal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
}

fn temp_trace(name: &str, body: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shoal-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write trace");
    p
}

#[test]
fn hitrate_prints_json_for_every_policy() {
    let mut t = String::from("timestamp,object_id,size\n");
    for i in 0..2_000u64 {
        t.push_str(&format!("{i},{},100\n", (i * 31) % 97));
    }
    let p = temp_trace("ok.csv", &t);
    let out = shoal()
        .args(["hitrate", "--trace"])
        .arg(&p)
        .args(["--capacity", "10%,20obj", "--json"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["requests"], 2_000);
    assert_eq!(v["distinct_objects"], 97);
    let runs = v["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1]["units"], "objects");
    assert_eq!(runs[1]["capacity_units"], 20);
    let policies: Vec<&str> = runs[0]["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["policy"].as_str().expect("name"))
        .collect();
    assert_eq!(
        policies,
        [
            "lru",
            "tinylfu",
            "s3fifo",
            "fifo",
            "belady-size (heuristic)"
        ]
    );
}

#[test]
fn bad_input_gets_a_clear_error() {
    let p = temp_trace("bad.csv", "1,2,3\n1,oops,3\n");
    let cases: [(&[&str], &str); 3] = [
        (
            &["--capacity", "1%"],
            "bad.csv:2: object_id and size must be unsigned integers",
        ),
        (&["--capacity", "150%"], "invalid capacity \"150%\""),
        (&["--capacity", "12 parsecs"], "unknown unit"),
    ];
    for (args, want) in cases {
        let out = shoal()
            .args(["hitrate", "--trace"])
            .arg(&p)
            .args(args)
            .output()
            .expect("runs");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let out = shoal()
        .args([
            "hitrate",
            "--trace",
            "/nonexistent/t.csv",
            "--capacity",
            "1%",
        ])
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read trace /nonexistent/t.csv"));
}

#[test]
fn demo_runs_end_to_end_and_reports_every_region() {
    let out = shoal()
        .args(["demo", "--objects", "18", "--concurrency", "4", "--json"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let regions = v["regions"].as_array().expect("regions");
    assert_eq!(regions.len(), 3);
    for r in regions {
        assert_eq!(r["requests"], 36);
        assert_eq!(r["errors"], 0);
        // Every object reaches the origin once per region; the second pass is all hits.
        assert_eq!(r["origin_fetches"], 18, "{r}");
        assert_eq!(r["hit_ratio"], 50.0, "{r}");
    }
}

#[test]
fn sign_prints_a_url_the_edge_accepts() {
    let out = shoal()
        .args([
            "sign",
            "--path",
            "/video/a.ts",
            "--key-id",
            "k1",
            "--ttl",
            "60s",
        ])
        .env("SHOAL_SIGNING_SECRET", "s3cret")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut c = shoal_edge::request::sign::SignedUrls::default();
    c.prefixes.push("/video/".into());
    c.keys.insert("k1".into(), "s3cret".into());
    c.verify(&url, None, std::time::SystemTime::now())
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("s3cret") && !url.contains("s3cret"),
        "the secret is never printed"
    );
}

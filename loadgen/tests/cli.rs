//! The `shoal` binary as a user runs it.

use std::path::PathBuf;
use std::process::Command;

fn shoal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
}

/// Fails the test with the command's stderr unless it exited 0.
fn succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    succeeded(&out);
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
        .args([
            "demo",
            "--objects",
            "18",
            "--concurrency",
            "4",
            "--purges",
            "50",
            "--json",
        ])
        .output()
        .expect("runs");
    succeeded(&out);
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
    // Every purge was answered only once all six edges had applied it.
    let p = &v["purge"];
    assert_eq!(
        (p["purges"].as_u64(), p["edges"].as_u64()),
        (Some(50), Some(6)),
        "{p}"
    );
    assert_eq!(p["incomplete"], 0, "{p}");
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
    succeeded(&out);
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

/// A raw HTTP/1.1 exchange (`Connection: close`), for the canary test.
fn http(addr: &str, req: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Spawns `shoal` with `args` and returns it with the first stdout line (its addresses).
fn spawn(args: &[&str], env: &[(&str, &str)]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = shoal()
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    let stdout = child.stdout.as_mut().expect("stdout");
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    (child, line)
}

fn word_after<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .skip_while(|w| *w != key)
        .nth(1)
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

/// No secret ever reaches a log line or a metric: the servers run at debug level with
/// canary secrets (admin token, edge token, URL-signing key) and see them used, right and
/// wrong; then every line they wrote and every metric is searched.
#[test]
fn secrets_never_appear_in_logs_or_metrics() {
    let dir = std::env::temp_dir().join(format!("shoal-canary-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (admin_token, edge_token, sign_key) =
        ("CANARY-ADMIN-7f3a", "CANARY-EDGE-91bc", "CANARY-SIGN-55d0");
    let cert = dir.join("o.pem");
    let (origin, line) = spawn(
        &[
            "origin",
            "--quic-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--cert-out",
            cert.to_str().expect("utf-8 path"),
        ],
        &[
            ("SHOAL_ADMIN_TOKEN", admin_token),
            ("SHOAL_EDGE_TOKEN", edge_token),
        ],
    );
    let (quic, origin_admin) = (word_after(&line, "quic"), word_after(&line, "admin"));
    let conf = dir.join("edge.toml");
    std::fs::write(
        &conf,
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
             [origin]\naddr = \"{quic}\"\ncert_file = \"{}\"\n\
             [signed_urls]\nprefixes = [\"/video/\"]\nkeys = {{ k1 = \"{sign_key}\" }}\n",
            cert.display()
        ),
    )
    .expect("config");
    let (edge, line) = spawn(
        &["edge", "--config", conf.to_str().expect("utf-8 path")],
        &[("SHOAL_EDGE_TOKEN", edge_token)],
    );
    let (http_addr, edge_admin) = (word_after(&line, "http"), word_after(&line, "admin"));
    let put = |token: &str| {
        http(
            origin_admin,
            &format!(
                "PUT /objects/video/a.ts HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\
                 Authorization: Bearer {token}\r\nContent-Length: 3\r\n\r\nabc"
            ),
        )
    };
    assert!(put("CANARY-WRONG-0000").starts_with("HTTP/1.1 401"));
    assert!(put(admin_token).starts_with("HTTP/1.1 201"));
    let signed = String::from_utf8(
        shoal()
            .args(["sign", "--path", "/video/a.ts", "--key-id", "k1"])
            .env("SHOAL_SIGNING_SECRET", sign_key)
            .output()
            .expect("sign")
            .stdout,
    )
    .expect("utf-8");
    let signed = signed.trim();
    let sig = signed.rsplit("sig=").next().expect("sig");
    let mut served = String::new();
    for _ in 0..100 {
        served = http(
            http_addr,
            &format!("GET {signed} HTTP/1.1\r\nHost: site\r\nConnection: close\r\n\r\n"),
        );
        if served.starts_with("HTTP/1.1 200") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(served.ends_with("abc"), "{served}");
    let refused = http(
        http_addr,
        "GET /video/a.ts?exp=1&kid=k1&sig=CANARY-FORGED HTTP/1.1\r\nHost: site\r\nConnection: close\r\n\r\n",
    );
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    // `shoal purge` through the admin API: applied at the one edge before it returns.
    let purged = shoal()
        .args([
            "purge",
            "--origin",
            origin_admin,
            "--key",
            "/video/a.ts",
            "--wait",
        ])
        .env("SHOAL_ADMIN_TOKEN", admin_token)
        .output()
        .expect("purge");
    succeeded(&purged);
    let said = String::from_utf8_lossy(&purged.stdout);
    assert!(said.contains("applied at 1/1 subscribed edges"), "{said}");
    let after = http(
        http_addr,
        &format!("GET {signed} HTTP/1.1\r\nHost: site\r\nConnection: close\r\n\r\n"),
    );
    assert!(
        after.contains("fwd=miss"),
        "purged, so fetched again: {after}"
    );
    let no_target = shoal()
        .args(["purge", "--origin", origin_admin])
        .env("SHOAL_ADMIN_TOKEN", admin_token)
        .output()
        .expect("purge");
    assert!(!no_target.status.success());
    let mut seen = String::new();
    for admin in [edge_admin, origin_admin] {
        seen.push_str(&http(
            admin,
            "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        ));
    }
    for mut child in [edge, origin] {
        let _ = child.kill();
        let out = child.wait_with_output().expect("output");
        seen.push_str(&String::from_utf8_lossy(&out.stdout));
        seen.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    eprintln!(
        "searched {} lines of logs and metrics",
        seen.lines().count()
    );
    assert!(
        seen.contains("shoal_edge_requests_total"),
        "metrics were read"
    );
    assert!(seen.contains("DEBUG"), "debug logs were captured");
    for secret in [
        admin_token,
        edge_token,
        sign_key,
        "CANARY-WRONG",
        "CANARY-FORGED",
        sig,
    ] {
        assert!(
            !seen.contains(secret),
            "{secret} appeared in logs or metrics"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

//! Arbitrary request targets and clients against a signed prefix: never a panic, and only
//! a target that carries the exact signature of its own path passes.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use shoal_cache_core::signed::{SignedUrls, sign};

fuzz_target!(|input: (&str, Option<[u8; 4]>, u32)| {
    let (target, ip, secs) = input;
    let mut c = SignedUrls::default();
    c.prefixes.push("/v/".into());
    c.keys.insert("k".into(), "secret".into());
    let now = UNIX_EPOCH + Duration::from_secs(u64::from(secs));
    let client = ip.map(std::net::IpAddr::from);
    if c.verify(target, client, now).is_ok() {
        // It passed: then it must be exactly what the signer makes for its own path.
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let exp = query
            .split('&')
            .find_map(|p| p.strip_prefix("exp="))
            .and_then(|e| e.parse::<u64>().ok())
            .expect("a passing URL has an expiry");
        assert!(exp > u64::from(secs), "{target:?} passed after expiring");
        let ip = query.split('&').find_map(|p| p.strip_prefix("ip="));
        let signed = sign(path, exp, ip.and_then(|i| i.parse().ok()), "k", "secret");
        let sig = signed.rsplit("sig=").next().unwrap_or("");
        assert!(query.contains(&format!("sig={sig}")), "{target:?} passed with another signature");
    }
});

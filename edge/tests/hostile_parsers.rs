//! Property tests for what an attacker's bytes reach first at the edge: Range and signed
//! URLs (Cache-Control and keys are in `cache-core/tests/parsers.rs`). Any input: no panic,
//! and every answer obeys the invariant that keeps the cache safe.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use shoal_edge::range::{RangeOutcome, parse};
use shoal_edge::request::sign::{SignedUrls, sign};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// A satisfiable range always lies inside the body.
    #[test]
    fn ranges_never_reach_outside_the_body(h in "\\PC{0,60}", len in 0u64..10_000) {
        if let RangeOutcome::Single { start, end } = parse(&h, len) {
            prop_assert!(start <= end && end < len, "{h:?} on {len}: {start}-{end}");
        }
    }

    /// Range-shaped input with any numbers, the kind that reaches the arithmetic.
    #[test]
    fn range_arithmetic_holds_for_any_numbers(
        a in proptest::option::of(any::<u64>()),
        b in proptest::option::of(any::<u64>()),
        len in any::<u64>(),
    ) {
        let spec = format!(
            "bytes={}-{}",
            a.map(|v| v.to_string()).unwrap_or_default(),
            b.map(|v| v.to_string()).unwrap_or_default()
        );
        if let RangeOutcome::Single { start, end } = parse(&spec, len) {
            prop_assert!(start <= end && end < len, "{spec} on {len}");
        }
    }

    /// Only the exact signature passes: junk, a changed digit, or expiry are refused.
    #[test]
    fn only_exact_signatures_pass(
        path in "/video/[a-z0-9/._-]{0,30}",
        junk in "\\PC{0,80}",
        flip in 0usize..64,
    ) {
        let mut c = SignedUrls::default();
        c.prefixes.push("/video/".into());
        c.keys.insert("k".into(), "secret".into());
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let q = sign(&path, 1_000_100, None, "k", "secret");
        let good = format!("{path}?{q}");
        let junk = format!("{path}?{junk}");
        prop_assert!(c.verify(&good, None, now).is_ok());
        prop_assert!(c.verify(&junk, None, now).is_err());
        let at = q.find("sig=").map_or(0, |i| i + 4 + flip);
        let mut bad = q.into_bytes();
        bad[at] = if bad[at] == b'0' { b'1' } else { b'0' };
        let bad = format!("{path}?{}", String::from_utf8(bad).unwrap_or_default());
        prop_assert!(c.verify(&bad, None, now).is_err());
        let later = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_100);
        prop_assert!(c.verify(&good, None, later).is_err(), "expired");
    }
}

//! Arbitrary admin request paths into the decoding the origin's admin API and the edges
//! share: never a panic, and what is accepted is decoded exactly once — it starts with
//! `/`, holds no empty, `.` or `..` segment, no backslash or control character, and
//! encoded again it decodes back to itself (`dd%2541` stays `dd%41`, never `ddA`); a raw
//! path with an encoded separator is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use shoal_cache_core::{canonical_path, normalise_path};

fuzz_target!(|raw: &str| {
    let Ok(p) = normalise_path(raw) else { return };
    assert!(p.starts_with('/'), "{raw:?} -> {p:?}");
    if p != "/" {
        for seg in p[1..].split('/') {
            assert!(!seg.is_empty() && seg != "." && seg != "..", "{raw:?} -> {p:?}");
        }
    }
    assert!(!p.contains('\\') && !p.chars().any(char::is_control), "{raw:?} -> {p:?}");
    // Decoded once: encoded again, it decodes back to itself.
    const SET: &AsciiSet = &NON_ALPHANUMERIC.remove(b'/');
    let again = utf8_percent_encode(&p, SET).to_string();
    assert_eq!(normalise_path(&again).as_deref(), Ok(p.as_str()), "{raw:?}");
    // Every spelling has one canonical form, and it names the same path.
    if let Ok(c) = canonical_path(raw) {
        assert_eq!(normalise_path(&c).as_deref(), Ok(p.as_str()), "{raw:?}");
    }
    // An encoded separator never survives as one: the raw path (before any query or
    // fragment, which are not part of it) had no `%2f` or `%5c`.
    let lower = raw.split(['?', '#']).next().unwrap_or("").to_ascii_lowercase();
    assert!(!lower.contains("%2f") && !lower.contains("%5c"), "{raw:?} accepted");
});

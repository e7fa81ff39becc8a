//! Arbitrary Cache-Control values: never a panic, and a parsed `private`, or `no-store`
//! without `must-understand` (which may lift it, RFC 9111 §5.2.2.3), always makes the
//! response unstorable, whatever else the value holds. The same bytes as a
//! `CDN-Cache-Control` (a Structured Fields dictionary), an HTTP date and a `Vary` list
//! must never panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_cache_core::freshness::{CacheControl, parse_date, storable};

fuzz_target!(|input: (&str, u16, bool)| {
    let (value, status, authorized) = input;
    let headers = vec![("cache-control".to_string(), value.to_string())];
    let cc = CacheControl::from_headers(&headers);
    if (cc.no_store && !cc.must_understand) || cc.private {
        assert!(
            storable(status, &headers, authorized, None).is_err(),
            "{value:?}"
        );
    }
    let targeted = vec![
        ("cdn-cache-control".to_string(), value.to_string()),
        ("cache-control".to_string(), "no-store".to_string()),
    ];
    let cc = CacheControl::from_headers(&targeted);
    // Valid or ignored whole: when ignored, Cache-Control's no-store stands.
    assert!(cc.targeted || cc.no_store, "{value:?}");
    let _ = parse_date(value);
    let vary = vec![("vary".to_string(), value.to_string())];
    if let shoal_cache_core::vary::Vary::Fields(f) = shoal_cache_core::vary::of(&vary) {
        let _ = shoal_cache_core::vary::secondary("a.test/p", &f, [(value, value)].into_iter());
    }
});

//! Arbitrary Cache-Control values: never a panic, and a parsed `no-store` or `private`
//! always makes the response unstorable, whatever else the value holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_cache_core::freshness::{CacheControl, storable};

fuzz_target!(|input: (&str, u16, bool)| {
    let (value, status, authorized) = input;
    let headers = vec![("cache-control".to_string(), value.to_string())];
    let cc = CacheControl::from_headers(&headers);
    if cc.no_store || cc.private {
        assert!(storable(status, &headers, authorized, None).is_err(), "{value:?}");
    }
});

//! Arbitrary hosts and request targets into key building: never a panic; a canonical path
//! is stable (canonicalising it again changes nothing) and decodes to what the raw path
//! decodes to, so edge and origin agree on the object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_cache_core::{CacheKey, KeyPolicy, canonical_path, normalise_path};

fuzz_target!(|input: (&str, &str)| {
    let (host, target) = input;
    let _ = CacheKey::new(host, target, &KeyPolicy { ignored_params: vec!["utm_*".into()] });
    let path = target.split(['?', '#']).next().unwrap_or("");
    if let Ok(c) = canonical_path(path) {
        assert_eq!(canonical_path(&c).as_deref(), Ok(c.as_str()), "{path:?}");
        assert_eq!(normalise_path(&c), normalise_path(path), "{path:?}");
    }
});

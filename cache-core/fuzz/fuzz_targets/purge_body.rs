//! Arbitrary bytes as the body of the origin's `POST /purge`: never a panic; a body that
//! names a target names exactly one, its paths are decoded once and normalised (their
//! canonical encoding decodes back to them) and carry no dot segment, and its tag is visible ASCII within the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_cache_core::invalidation::{MAX_PURGE_KEYS, MAX_TAG_LEN, Purge};
use shoal_cache_core::{canonical_path, normalise_path};
use shoal_cache_core::wire::InvalidationTarget;

/// A decoded path (a prefix may keep a trailing slash): its canonical encoding decodes
/// back to it, and it has no dot segment.
fn normalised(p: &str) -> bool {
    let path = p.split('?').next().unwrap_or("");
    let path = path.strip_suffix('/').filter(|s| !s.is_empty()).unwrap_or(path);
    canonical_path(path).is_ok_and(|c| normalise_path(&c).as_deref() == Ok(path))
        && !path.split('/').any(|s| s == "." || s == "..")
}

fuzz_target!(|data: &[u8]| {
    let Ok(purge) = Purge::from_json(data) else { return };
    let Ok(target) = purge.target() else { return };
    match target {
        InvalidationTarget::Keys(keys) => {
            assert!(!keys.is_empty() && keys.len() <= MAX_PURGE_KEYS);
            assert!(purge.prefix.is_none() && purge.tag.is_none());
            for k in &keys {
                assert!(normalised(k), "{k:?}");
            }
        }
        InvalidationTarget::Prefix(p) => {
            assert!(purge.keys.is_empty() && purge.tag.is_none());
            assert!(normalised(&p), "{p:?}");
        }
        InvalidationTarget::Tag(t) => {
            assert!(purge.keys.is_empty() && purge.prefix.is_none());
            assert!(!t.is_empty() && t.len() <= MAX_TAG_LEN);
            assert!(t.bytes().all(|b| b.is_ascii_graphic()), "{t:?}");
        }
    }
});

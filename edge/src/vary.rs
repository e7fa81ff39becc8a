//! Which primary keys have varying responses, and on which request fields: the index a
//! request consults to find its secondary key (see [`shoal_cache_core::vary`]).
//!
//! Bounded twice: at most [`MAX_URLS`] primary keys (past that the index starts over — a
//! forgotten entry costs one fetch that relearns it), and at most [`MAX_VARIANTS`] variants
//! stored per primary key (more are served but not stored), so a field with unbounded
//! values (`User-Agent`, `Cookie`) cannot fill the cache with copies of one URL.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Primary keys remembered.
pub(crate) const MAX_URLS: usize = 100_000;
/// Variants stored per primary key.
pub(crate) const MAX_VARIANTS: u32 = 32;

#[derive(Debug)]
struct Entry {
    fields: Arc<[String]>,
    /// Hashes of the secondary keys stored (at most [`MAX_VARIANTS`]).
    variants: Vec<u64>,
}

/// Primary key → the fields its responses vary on.
#[derive(Debug, Default)]
pub(crate) struct VaryIndex(RwLock<HashMap<Arc<str>, Entry>>);

impl VaryIndex {
    /// The fields `primary`'s responses vary on, if they do.
    pub(crate) fn fields(&self, primary: &str) -> Option<Arc<[String]>> {
        // Every cacheable read asks: a read lock, so they never wait on each other.
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        if map.is_empty() {
            return None;
        }
        map.get(primary).map(|e| e.fields.clone())
    }

    /// Records that `primary` varies on `fields`, and whether its variant `secondary` may
    /// be stored: `false` when the URL already has [`MAX_VARIANTS`] others.
    pub(crate) fn learn(&self, primary: &str, fields: &[String], secondary: &str) -> bool {
        let id = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            secondary.hash(&mut h);
            h.finish()
        };
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_URLS && !map.contains_key(primary) {
            map.clear();
        }
        let e = map.entry(primary.into()).or_insert_with(|| Entry {
            fields: fields.into(),
            variants: Vec::new(),
        });
        if *e.fields != *fields {
            // The resource changed what it varies on: variants stored under the old fields
            // are no longer found, so the count starts over.
            e.fields = fields.into();
            e.variants.clear();
        }
        if e.variants.contains(&id) {
            return true;
        }
        if e.variants.len() >= MAX_VARIANTS as usize {
            return false;
        }
        e.variants.push(id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_fields_and_bounds_variants_per_url() {
        let idx = VaryIndex::default();
        let f: Vec<String> = vec!["accept-language".into()];
        assert!(idx.fields("a/p").is_none());
        for i in 0..MAX_VARIANTS {
            assert!(idx.learn("a/p", &f, &format!("v{i}")));
        }
        assert!(idx.learn("a/p", &f, "v0"), "a stored variant again");
        assert!(!idx.learn("a/p", &f, "new"), "one variant too many");
        assert_eq!(idx.fields("a/p").as_deref(), Some(&f[..]));
        // New fields start the count over.
        let g: Vec<String> = vec!["accept-encoding".into()];
        assert!(idx.learn("a/p", &g, "new"));
        assert_eq!(idx.fields("a/p").as_deref(), Some(&g[..]));
    }
}

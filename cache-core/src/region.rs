//! The routing contract of a region: which key a request has and which edges serve it, in
//! which order. Edges, the region client, `shoal get` and the load generator all build one
//! [`RegionMap`] from the same settings (vnodes, node ids, key policy), so they can never
//! disagree on an owner or on what a key is.

use crate::error::RingError;
use crate::key::{CacheKey, KeyError, KeyPolicy};
use crate::ring::Ring;

/// A region's ring plus the key policy its edges use.
#[derive(Debug, Clone, Default)]
pub struct RegionMap {
    ring: Ring,
    keys: KeyPolicy,
}

impl RegionMap {
    /// A map of `nodes` with `vnodes` virtual nodes each, keying with `keys`.
    pub fn new<'a>(
        vnodes: u32,
        nodes: impl IntoIterator<Item = &'a str>,
        keys: KeyPolicy,
    ) -> Result<Self, RingError> {
        Ok(Self {
            ring: Ring::with_nodes(vnodes, nodes)?,
            keys,
        })
    }

    /// The cache key of `path_and_query` under `host`.
    pub fn key(&self, host: &str, path_and_query: &str) -> Result<CacheKey, KeyError> {
        CacheKey::new(host, path_and_query, &self.keys)
    }

    /// The node that owns `key`, if the region has any node.
    pub fn owner(&self, key: &CacheKey) -> Option<&str> {
        self.ring.owner(key.as_str()).ok()
    }

    /// Every node of the region in the order to try them for `key`: the owner first, then
    /// the distinct nodes that inherit its keys, clockwise. A dead owner's fallback is thus
    /// exactly the node that takes its keys when it is removed.
    pub fn candidates(&self, key: &CacheKey) -> Vec<&str> {
        self.ring.successors(key.as_str(), self.ring.len())
    }

    /// The key policy.
    pub fn key_policy(&self) -> &KeyPolicy {
        &self.keys
    }

    /// The ring.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether the region has no node.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_start_at_the_owner_and_cover_every_node_once() {
        let keys = KeyPolicy {
            ignored_params: vec!["utm_*".into()],
        };
        let m = RegionMap::new(64, ["a", "b", "c"], keys).unwrap();
        for i in 0..200 {
            let k = m
                .key("h.test", &format!("/o/{i}?x=1&utm_source=y"))
                .unwrap();
            let c = m.candidates(&k);
            assert_eq!(Some(c[0]), m.owner(&k));
            let mut sorted = c.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, ["a", "b", "c"]);
        }
        // The key policy is part of the contract: a tracking parameter does not change the key.
        assert_eq!(
            m.key("h.test", "/p?utm_source=x&b=2").unwrap(),
            m.key("h.test", "/p?b=2").unwrap()
        );
        assert!(
            RegionMap::default()
                .candidates(&m.key("h", "/").unwrap())
                .is_empty()
        );
    }
}

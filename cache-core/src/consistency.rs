//! Consistency modes, chosen per path prefix at the origin and announced to edges when they
//! subscribe. The course's CAP examples, made configurable:
//!
//! | mode | the course's name | reads | writes (through an edge or at the origin) |
//! |---|---|---|---|
//! | `direct` | System 1 | never cached | forwarded to the origin |
//! | `ttl` | plain CDN caching | cached until the TTL runs out | stored at the origin; edges are not told |
//! | `write-through` | System 2 | cached | the owner edge writes to the origin, waits, stores the new version; other edges are not told |
//! | `invalidate` | System 2 + pushed invalidations | cached | as write-through, and every edge is told (asynchronously) |
//! | `consistent` | System 3, leases | cached while the edge holds a lease; without one, revalidated (and an error, never a stale copy, when the origin cannot be reached) | acknowledged once every edge holding a lease has applied the invalidation or its lease has run out |
//! | `write-back` | the thought experiment | cached; the owner edge serves its own unflushed writes | acknowledged once in the owner edge's write-back buffer; written to the origin after a bounded delay, when the buffer is full, and on drain; **lost if the edge dies** |
//!
//! Explicit purges reach every edge in every mode.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How one path is kept consistent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// System 1: every read goes to the origin; nothing is cached.
    Direct,
    /// Cached until the TTL runs out; writes do not invalidate edges.
    Ttl,
    /// System 2: a write through an edge updates the origin, then that edge's cache; other
    /// edges keep what they hold until its TTL runs out.
    WriteThrough,
    /// System 2 with pushed invalidations: every write invalidates every edge.
    #[default]
    Invalidate,
    /// System 3: reads are served from cache only under a lease; a write completes once
    /// every lease holder has applied it or its lease has expired.
    Consistent,
    /// The course's write-back thought experiment: a write is acknowledged once it is in
    /// the owner edge's buffer and reaches the origin later. Unsafe: lost if the edge dies.
    WriteBack,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 6] = [
        Mode::Direct,
        Mode::Ttl,
        Mode::WriteThrough,
        Mode::Invalidate,
        Mode::Consistent,
        Mode::WriteBack,
    ];

    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Ttl => "ttl",
            Self::WriteThrough => "write-through",
            Self::Invalidate => "invalidate",
            Self::Consistent => "consistent",
            Self::WriteBack => "write-back",
        }
    }

    /// Whether edges may cache reads.
    pub fn caches(self) -> bool {
        self != Self::Direct
    }

    /// Whether a write invalidates every edge (for `write-back`, when it is flushed).
    pub fn pushes_writes(self) -> bool {
        matches!(self, Self::Invalidate | Self::Consistent | Self::WriteBack)
    }

    /// Whether a write through an edge is acknowledged before it reaches the origin.
    pub fn defers_writes(self) -> bool {
        self == Self::WriteBack
    }

    /// Whether a write waits for every lease holder (or its lease's expiry).
    pub fn waits_for_leases(self) -> bool {
        self == Self::Consistent
    }

    /// Whether the edge that forwarded a write drops its own copies of the path at once
    /// (and, in `write-through`, stores the version it wrote).
    pub fn drops_own_copies(self) -> bool {
        matches!(
            self,
            Self::WriteThrough | Self::Invalidate | Self::Consistent | Self::WriteBack
        )
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|m| m.as_str()).collect();
                format!(
                    "unknown consistency mode {s:?} (one of {})",
                    names.join(", ")
                )
            })
    }
}

/// A path prefix and its mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeRule {
    /// Path prefix (`/account/`).
    pub prefix: String,
    /// Its mode.
    pub mode: Mode,
}

/// The modes of every path: the longest matching prefix wins, else the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Modes {
    /// Rules, any order.
    pub rules: Vec<ModeRule>,
    /// Mode of paths no rule names.
    pub default: Mode,
}

impl Modes {
    /// The mode of `path` (a path, or a path with a query).
    pub fn of(&self, path: &str) -> Mode {
        let path = path.split('?').next().unwrap_or(path);
        self.rules
            .iter()
            .filter(|r| path.starts_with(&r.prefix))
            .max_by_key(|r| r.prefix.len())
            .map_or(self.default, |r| r.mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let m = Modes {
            rules: vec![
                ModeRule {
                    prefix: "/a/".into(),
                    mode: Mode::Ttl,
                },
                ModeRule {
                    prefix: "/a/live/".into(),
                    mode: Mode::Direct,
                },
            ],
            default: Mode::Invalidate,
        };
        assert_eq!(m.of("/a/x"), Mode::Ttl);
        assert_eq!(m.of("/a/live/x?y=1"), Mode::Direct);
        assert_eq!(m.of("/b"), Mode::Invalidate);
        for mode in Mode::ALL {
            assert_eq!(mode.as_str().parse::<Mode>(), Ok(mode));
        }
        assert!("strong".parse::<Mode>().is_err());
    }
}

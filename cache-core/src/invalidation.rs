//! Invalidation bookkeeping, without I/O: the origin's log, an edge's position in it, and
//! what an invalidation names in an edge's store.
//!
//! The origin numbers invalidations 1, 2, 3, … within an *epoch* (chosen when the origin
//! starts) and keeps the last few thousand in a [`Log`]. An edge subscribes with the last
//! position it applied ([`Resume`]); the log answers with the entries it missed, or with a
//! reset when it no longer reaches back that far (or the epoch changed), and the edge then
//! drops everything it holds. An edge's [`Position`] turns each received sequence number
//! into apply, ignore (a duplicate or replay) or resubscribe (a gap).

use std::collections::VecDeque;
use std::sync::Arc;

use crate::key::canonical_path;
use crate::object::CachedObject;
use crate::store::Matcher;
use crate::wire::{Invalidation, InvalidationTarget, Resume};

/// The origin's invalidation log: a sequence counter and the most recent entries.
#[derive(Debug, Clone)]
pub struct Log {
    epoch: u64,
    last: u64,
    entries: VecDeque<Invalidation>,
    capacity: usize,
}

/// What a subscriber that resumes at some position must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// Apply these (possibly none), in order; then the live entries follow.
    Entries(Vec<Invalidation>),
    /// The log does not reach back to the position, or it is another epoch's: drop
    /// everything held from this origin.
    Reset,
}

impl Log {
    /// An empty log in `epoch`, keeping the last `capacity` entries (at least one).
    pub fn new(epoch: u64, capacity: usize) -> Self {
        Self {
            epoch,
            last: 0,
            entries: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// The log's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The newest sequence number (0 before the first entry).
    pub fn last_seq(&self) -> u64 {
        self.last
    }

    /// Appends an invalidation and returns it with its sequence number.
    pub fn append(&mut self, target: InvalidationTarget, soft: bool) -> Invalidation {
        self.last += 1;
        let inv = Invalidation {
            seq: self.last,
            target,
            soft,
        };
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(inv.clone());
        inv
    }

    /// What a subscriber at `resume` must do to catch up. `None` is a first contact: the
    /// subscriber holds nothing it could have missed an invalidation for, so nothing is
    /// replayed (an edge that does hold objects must not subscribe with `None`).
    pub fn replay(&self, resume: Option<Resume>) -> Replay {
        let Some(r) = resume else {
            return Replay::Entries(Vec::new());
        };
        if r.epoch != self.epoch || r.seq > self.last {
            return Replay::Reset;
        }
        if r.seq == self.last {
            return Replay::Entries(Vec::new());
        }
        match self.entries.front() {
            Some(first) if first.seq <= r.seq + 1 => Replay::Entries(
                self.entries
                    .iter()
                    .filter(|i| i.seq > r.seq)
                    .cloned()
                    .collect(),
            ),
            _ => Replay::Reset,
        }
    }
}

/// An edge's position in one origin's log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position(Option<Resume>);

/// What to do with a received sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The next one: apply it, then acknowledge.
    Apply,
    /// Already applied (a replay overlapping a live entry, a duplicate): ignore it.
    Duplicate,
    /// Entries are missing before it: resubscribe from the current position.
    Gap {
        /// The sequence number expected.
        expected: u64,
        /// The one received.
        got: u64,
    },
}

impl Position {
    /// Where to resume a subscription; `None` before the first subscription succeeded.
    pub fn resume(&self) -> Option<Resume> {
        self.0
    }

    /// The subscription was answered. After a reset (or on first contact) the position
    /// becomes the log's newest entry, and the caller must drop what it holds first.
    pub fn subscribed(&mut self, epoch: u64, seq: u64, reset: bool) {
        if reset || self.0.is_none_or(|r| r.epoch != epoch) {
            self.0 = Some(Resume { epoch, seq });
        }
    }

    /// Classifies `seq`; on [`Step::Apply`] the position moves to it.
    pub fn step(&mut self, seq: u64) -> Step {
        let Some(r) = &mut self.0 else {
            return Step::Gap {
                expected: 1,
                got: seq,
            };
        };
        if seq <= r.seq {
            Step::Duplicate
        } else if seq == r.seq + 1 {
            r.seq = seq;
            Step::Apply
        } else {
            Step::Gap {
                expected: r.seq + 1,
                got: seq,
            }
        }
    }

    /// The last applied sequence number.
    pub fn seq(&self) -> u64 {
        self.0.map_or(0, |r| r.seq)
    }
}

/// The path part of a stored key (`host/path?query` → `/path`).
fn key_path(key: &str) -> &str {
    let key = crate::vary::primary(key);
    let pq = key.find('/').map_or("", |i| &key[i..]);
    pq.split('?').next().unwrap_or(pq)
}

/// A path as an edge's keys spell it; a trailing `/` (a directory prefix) is kept.
fn canonical(path: &str) -> Option<String> {
    let mut c = canonical_path(path).ok()?;
    if path.len() > 1 && path.ends_with('/') && !c.ends_with('/') {
        c.push('/');
    }
    Some(c)
}

/// Which stored objects `target` names in an edge's store (keys `host/path?query`):
/// - a key `/p` names `/p` under every host and with every query; `/p?q` names exactly it;
/// - a prefix names every key whose path starts with it;
/// - a tag names every object carrying that surrogate key.
///
/// A target that cannot be a path names everything: dropping too much is safe, keeping an
/// invalidated object is not.
pub fn matcher(target: &InvalidationTarget) -> Matcher<CachedObject> {
    let everything: Matcher<CachedObject> = Arc::new(|_: &str, _: &CachedObject| true);
    match target {
        InvalidationTarget::Keys(keys) => {
            let mut paths = Vec::with_capacity(keys.len());
            for k in keys {
                let (p, q) = match k.split_once('?') {
                    Some((p, q)) => (p, Some(q.to_string())),
                    None => (k.as_str(), None),
                };
                let Ok(p) = canonical_path(p) else {
                    return everything;
                };
                paths.push((p, q));
            }
            Arc::new(move |key: &str, _: &CachedObject| {
                // Every variant of a key is named with it.
                let key = crate::vary::primary(key);
                let path = key_path(key);
                paths.iter().any(|(p, q)| {
                    p == path
                        && q.as_deref()
                            .is_none_or(|q| key.split_once('?').map(|(_, kq)| kq) == Some(q))
                })
            })
        }
        InvalidationTarget::Prefix(prefix) => {
            let Some(p) = canonical(prefix) else {
                return everything;
            };
            Arc::new(move |key: &str, _: &CachedObject| key_path(key).starts_with(&p))
        }
        InvalidationTarget::Tag(tag) => {
            let tag = tag.clone();
            Arc::new(move |_: &str, obj: &CachedObject| obj.tags.contains(&tag))
        }
    }
}

/// Most surrogate keys one object may carry.
pub const MAX_TAGS: usize = 64;
/// Longest surrogate key, in bytes.
pub const MAX_TAG_LEN: usize = 256;

/// Checks an object's surrogate keys against the limits.
pub fn check_tags(tags: &[String]) -> Result<(), String> {
    if tags.len() > MAX_TAGS || tags.iter().any(|t| t.len() > MAX_TAG_LEN) {
        return Err(format!(
            "Surrogate-Key: at most {MAX_TAGS} tags of at most {MAX_TAG_LEN} bytes"
        ));
    }
    Ok(())
}

/// The surrogate keys of a response: the space-separated tokens of its `Surrogate-Key`
/// headers (the convention Fastly and Varnish use).
pub fn surrogate_keys(headers: &[(String, String)]) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("surrogate-key"))
        .flat_map(|(_, v)| v.split_ascii_whitespace())
        .map(str::to_string)
        .collect()
}

/// Most keys one purge may name.
pub const MAX_PURGE_KEYS: usize = 1000;

/// The body of the origin's `POST /purge` (JSON): what a purge names (exactly one of
/// `keys`, `prefix` or `tag`), and how. The admin client writes it, the origin reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Purge {
    /// Paths; with a query, only that variant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// A path prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// A surrogate key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Mark stale instead of dropping.
    #[serde(default)]
    pub soft: bool,
    /// Answer once every subscribed edge has applied it (or the origin's `purge_wait`
    /// has passed).
    #[serde(default)]
    pub wait: bool,
}

impl Purge {
    /// Reads a purge body, or says what is wrong with it.
    pub fn from_json(body: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(body).map_err(|e| format!("purge body: {e}"))
    }

    /// The one target the purge names, checked: paths decoded once and normalised with
    /// the edge's rules (dot segments and encoded separators refused), a prefix keeping
    /// its trailing slash, a tag of visible ASCII.
    pub fn target(&self) -> Result<InvalidationTarget, String> {
        let named = usize::from(!self.keys.is_empty())
            + usize::from(self.prefix.is_some())
            + usize::from(self.tag.is_some());
        if named != 1 {
            return Err("name exactly one of keys, prefix or tag".into());
        }
        let path = |p: &str| -> Result<String, String> {
            let (path, query) = match p.split_once('?') {
                Some((a, q)) => (a, Some(q)),
                None => (p, None),
            };
            let mut norm = crate::normalise_path(path).map_err(|e| e.to_string())?;
            if let Some(q) = query {
                norm.push('?');
                norm.push_str(q);
            }
            Ok(norm)
        };
        if let Some(prefix) = &self.prefix {
            // A prefix keeps its trailing slash: "/img/" must not name "/imgx".
            let mut p = path(prefix)?;
            if prefix.len() > 1 && prefix.ends_with('/') && !p.ends_with('/') {
                p.push('/');
            }
            return Ok(InvalidationTarget::Prefix(p));
        }
        if let Some(tag) = &self.tag {
            if tag.is_empty()
                || tag.len() > MAX_TAG_LEN
                || !tag.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(format!(
                    "tag must be 1 to {MAX_TAG_LEN} visible ASCII characters"
                ));
            }
            return Ok(InvalidationTarget::Tag(tag.clone()));
        }
        if self.keys.len() > MAX_PURGE_KEYS {
            return Err(format!("at most {MAX_PURGE_KEYS} keys per purge"));
        }
        let keys = self
            .keys
            .iter()
            .map(|k| path(k))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(InvalidationTarget::Keys(keys))
    }
}

/// The paths a successful unsafe request (POST, PUT, DELETE, …) to `path` on `host` may
/// have changed, so caches must drop (RFC 9111 §4.4): the target's, and those of its
/// response's same-host `Location` and `Content-Location`.
pub fn changed_by_unsafe(path: &str, host: &str, response: &[(String, String)]) -> Vec<String> {
    let mut paths = vec![path.to_string()];
    for name in ["location", "content-location"] {
        if let Some(p) = crate::freshness::header_values(response, name)
            .next()
            .and_then(|v| same_host_path(v, host))
        {
            paths.push(p);
        }
    }
    paths
}

/// The path a `Location`-style URI names on `host`: a relative reference's, or an absolute
/// URI's when its authority is `host` (another host's URIs must not be invalidated by this
/// one's responses, RFC 9111 §4.4).
pub fn same_host_path(uri: &str, host: &str) -> Option<String> {
    let uri = uri.trim();
    let rest = if let Some(r) = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("https://"))
    {
        let (authority, path) = r.split_at(r.find('/').unwrap_or(r.len()));
        if !authority.eq_ignore_ascii_case(host) {
            return None;
        }
        if path.is_empty() { "/" } else { path }
    } else if uri.starts_with('/') && !uri.starts_with("//") {
        uri
    } else {
        return None;
    };
    let path = rest.split(['?', '#']).next().unwrap_or("/");
    canonical_path(path).ok()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use bytes::Bytes;

    use super::*;
    use crate::freshness::Freshness;

    fn keys(k: &[&str]) -> InvalidationTarget {
        InvalidationTarget::Keys(k.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn log_replays_what_a_subscriber_missed_or_resets() {
        let mut log = Log::new(7, 3);
        assert_eq!(log.replay(None), Replay::Entries(vec![]));
        for i in 0..5 {
            let inv = log.append(keys(&[&format!("/{i}")]), false);
            assert_eq!(inv.seq, i + 1);
        }
        let at = |seq| Some(Resume { epoch: 7, seq });
        let seqs = |r: Replay| match r {
            Replay::Entries(e) => Some(e.iter().map(|i| i.seq).collect::<Vec<_>>()),
            Replay::Reset => None,
        };
        assert_eq!(seqs(log.replay(at(5))), Some(vec![]));
        assert_eq!(seqs(log.replay(at(4))), Some(vec![5]));
        // The log holds 3..=5: a subscriber at 2 needs exactly those.
        assert_eq!(seqs(log.replay(at(2))), Some(vec![3, 4, 5]));
        assert_eq!(log.replay(at(1)), Replay::Reset);
        assert_eq!(log.replay(at(9)), Replay::Reset, "ahead of the log");
        let other_epoch = Some(Resume { epoch: 8, seq: 5 });
        assert_eq!(log.replay(other_epoch), Replay::Reset);
    }

    #[test]
    fn position_applies_in_order_ignores_duplicates_and_reports_gaps() {
        let mut p = Position::default();
        assert!(matches!(p.step(1), Step::Gap { .. }), "not subscribed yet");
        p.subscribed(1, 10, false);
        assert_eq!(p.step(11), Step::Apply);
        assert_eq!(p.step(11), Step::Duplicate);
        assert_eq!(p.step(3), Step::Duplicate);
        assert_eq!(
            p.step(13),
            Step::Gap {
                expected: 12,
                got: 13
            }
        );
        assert_eq!(p.seq(), 11);
        // A resubscription in the same epoch keeps the position (the replay follows)...
        p.subscribed(1, 20, false);
        assert_eq!(p.seq(), 11);
        // ...a reset or a new epoch moves it to the log's head.
        p.subscribed(2, 4, false);
        assert_eq!(p.resume(), Some(Resume { epoch: 2, seq: 4 }));
        p.subscribed(2, 9, true);
        assert_eq!(p.seq(), 9);
    }

    fn obj(tags: &[&str]) -> CachedObject {
        CachedObject {
            status: 200,
            headers: vec![],
            body: Bytes::new(),
            etag: None,
            version: 1,
            freshness: Freshness::fixed(SystemTime::now(), Duration::from_secs(60)),
            tags: tags.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn matcher_table() {
        let plain = obj(&[]);
        let tagged = obj(&["product-7", "home"]);
        let cases: &[(InvalidationTarget, &str, &CachedObject, bool)] = &[
            (keys(&["/a"]), "h.test/a", &plain, true),
            (keys(&["/a"]), "h.test/a?x=1", &plain, true),
            (keys(&["/a"]), "other.test/a", &plain, true),
            (keys(&["/a"]), "h.test/ab", &plain, false),
            (keys(&["/a"]), "h.test/a/b", &plain, false),
            (keys(&["/a?x=1"]), "h.test/a?x=1", &plain, true),
            (keys(&["/a?x=1"]), "h.test/a?x=2", &plain, false),
            (keys(&["/a?x=1"]), "h.test/a", &plain, false),
            (keys(&["/b", "/a"]), "h.test/a", &plain, true),
            // Spelled the way keys are: decoded once, re-encoded one way.
            (keys(&["/%61"]), "h.test/a", &plain, true),
            (keys(&["//a/"]), "h.test/a", &plain, true),
            (
                InvalidationTarget::Prefix("/img/".into()),
                "h.test/img/x.png",
                &plain,
                true,
            ),
            (
                InvalidationTarget::Prefix("/img/".into()),
                "h.test/imgx",
                &plain,
                false,
            ),
            (
                InvalidationTarget::Prefix("/img".into()),
                "h.test/imgx",
                &plain,
                true,
            ),
            (
                InvalidationTarget::Prefix("/".into()),
                "h.test/anything",
                &plain,
                true,
            ),
            (
                InvalidationTarget::Tag("home".into()),
                "h.test/a",
                &tagged,
                true,
            ),
            (
                InvalidationTarget::Tag("hom".into()),
                "h.test/a",
                &tagged,
                false,
            ),
            (
                InvalidationTarget::Tag("home".into()),
                "h.test/a",
                &plain,
                false,
            ),
            // Not a path: everything goes.
            (keys(&["/../x"]), "h.test/a", &plain, true),
            (
                InvalidationTarget::Prefix("nope".into()),
                "h.test/a",
                &plain,
                true,
            ),
        ];
        for (target, key, o, want) in cases {
            assert_eq!(matcher(target)(key, o), *want, "{target:?} on {key}");
        }
    }

    #[test]
    fn surrogate_keys_are_split_on_whitespace() {
        let h = vec![
            ("content-type".to_string(), "text/plain".to_string()),
            ("Surrogate-Key".to_string(), " a  b\tc ".to_string()),
            ("surrogate-key".to_string(), "d".to_string()),
        ];
        assert_eq!(surrogate_keys(&h), vec!["a", "b", "c", "d"]);
    }

    #[test]
    fn only_same_host_locations_are_changed_by_unsafe_requests() {
        let host = "a.test";
        assert_eq!(same_host_path("/x/y?q=1", host).as_deref(), Some("/x/y"));
        assert_eq!(
            same_host_path("http://A.test/z#f", host).as_deref(),
            Some("/z")
        );
        assert_eq!(same_host_path("http://a.test", host).as_deref(), Some("/"));
        assert_eq!(same_host_path("http://b.test/z", host), None);
        assert_eq!(same_host_path("//b.test/z", host), None);
        assert_eq!(same_host_path("z", host), None);
        let resp = vec![
            ("location".to_string(), "/new".to_string()),
            (
                "content-location".to_string(),
                "http://b.test/other".to_string(),
            ),
        ];
        assert_eq!(changed_by_unsafe("/p", host, &resp), ["/p", "/new"]);
    }
}

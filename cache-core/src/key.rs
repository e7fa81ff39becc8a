//! Normalised cache keys: `host + path + ?sorted-query`.
//!
//! Two requests that the origin answers identically should share one entry: the host is
//! lower-cased (and a trailing dot or default port dropped), query parameters are sorted and
//! configured tracking parameters dropped. The path is canonical ([`canonical_path`]): decoded
//! once and re-encoded one way, so `//a`, `/a/` and `/%61` share one entry (and an attacker
//! cannot fill the cache with spellings of one object); unsafe paths get no key at all.

use std::fmt;
use std::sync::Arc;

/// What the key keeps of a query string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPolicy {
    /// Parameter names dropped from the key; a trailing `*` matches a prefix (`utm_*`).
    pub ignored_params: Vec<String>,
}

impl KeyPolicy {
    fn ignores(&self, name: &str) -> bool {
        self.ignored_params
            .iter()
            .any(|p| match p.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == p,
            })
    }
}

/// Why a key could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The host is empty.
    #[error("empty host")]
    EmptyHost,
    /// The host has characters no host name or address has.
    #[error("invalid host {0:?}")]
    InvalidHost(String),
    /// The path does not start with `/`.
    #[error("path {0:?} does not start with '/'")]
    RelativePath(String),
    /// The path is unsafe or ambiguous.
    #[error("bad path {path:?}: {reason}")]
    BadPath {
        /// The path as received.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Checks a request path and returns it normalised: percent-decoded, without empty
/// segments or query. Rejects anything that could name something above the root, or that
/// two layers could read differently: `.`/`..` segments (also percent-encoded), encoded `/`
/// or `\`, backslashes, NUL and other control characters, malformed escapes and relative
/// paths.
pub fn normalise_path(raw: &str) -> Result<String, KeyError> {
    let bad = |reason| KeyError::BadPath {
        path: raw.chars().take(200).collect(),
        reason,
    };
    let path = raw.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return Err(bad("must start with '/'"));
    }
    let mut out = String::with_capacity(path.len());
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        let decoded = percent_decode(seg).ok_or_else(|| bad("malformed percent-encoding"))?;
        if decoded == "." || decoded == ".." {
            return Err(bad("dot segments are not allowed"));
        }
        if decoded.contains(['/', '\\']) {
            return Err(bad("encoded or backslash separators are not allowed"));
        }
        if decoded.chars().any(char::is_control) {
            return Err(bad("control characters are not allowed"));
        }
        out.push('/');
        out.push_str(&decoded);
    }
    if out.is_empty() {
        out.push('/'); // the root: a valid request, whatever the origin has there
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A normalised cache key. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(Arc<str>);

impl CacheKey {
    /// Builds the key of `host` and `path_and_query` (`/a/b?x=1`) under `policy`.
    pub fn new(host: &str, path_and_query: &str, policy: &KeyPolicy) -> Result<Self, KeyError> {
        let host = normalise_host(host)?;
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        if !path.starts_with('/') {
            return Err(KeyError::RelativePath(path.to_string()));
        }
        let path = canonical_path(path)?;
        let mut params: Vec<&str> = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|p| !p.is_empty())
            .filter(|p| !policy.ignores(p.split_once('=').map_or(*p, |(n, _)| n)))
            .collect();
        // Sort by name, then value; stable so repeated names keep a deterministic order.
        params.sort_by(|a, b| {
            let (an, av) = a.split_once('=').unwrap_or((a, ""));
            let (bn, bv) = b.split_once('=').unwrap_or((b, ""));
            an.cmp(bn).then(av.cmp(bv))
        });
        let mut key = String::with_capacity(host.len() + path_and_query.len());
        key.push_str(&host);
        key.push_str(&path);
        if !params.is_empty() {
            key.push('?');
            key.push_str(&params.join("&"));
        }
        Ok(Self(key.into()))
    }

    /// A key taken verbatim (already normalised, e.g. received on the wire).
    pub fn from_normalised(key: impl Into<Arc<str>>) -> Self {
        Self(key.into())
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after the host: the path and the query the key keeps (sorted, without
    /// ignored parameters). This is what an edge asks the origin for.
    pub fn path_and_query(&self) -> &str {
        let primary = crate::vary::primary(&self.0);
        primary.find('/').map_or("/", |i| &primary[i..])
    }

    /// The shared string behind the key.
    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn normalise_host(host: &str) -> Result<String, KeyError> {
    let mut h = host.trim().to_ascii_lowercase();
    if let Some(stripped) = h.strip_suffix(":80") {
        h = stripped.to_string();
    }
    if let Some(stripped) = h.strip_suffix('.') {
        h = stripped.to_string();
    }
    if h.is_empty() {
        return Err(KeyError::EmptyHost);
    }
    if !valid_authority(&h) {
        return Err(KeyError::InvalidHost(host.chars().take(100).collect()));
    }
    Ok(h)
}

/// `host[:port]` where host is an IP literal in brackets, or a name of non-empty labels
/// of letters, digits, `-` and `_` that do not start or end with `-`.
fn valid_authority(h: &str) -> bool {
    let (host, port) = if let Some(rest) = h.strip_prefix('[') {
        let Some((ip, tail)) = rest.split_once(']') else {
            return false;
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match tail.strip_prefix(':') {
            Some(p) => ("", Some(p)),
            None if tail.is_empty() => ("", None),
            None => return false,
        }
    } else {
        match h.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (h, None),
        }
    };
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return false;
    }
    host.is_empty() && h.starts_with('[')
        || !host.is_empty()
            && host.split('.').all(|l| {
                !l.is_empty()
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
}

/// The path decoded once ([`normalise_path`]) and re-encoded one way: every spelling of a
/// path that names the same object (`//a`, `/a/`, `/%61`) gets the same key, and what is
/// sent to the origin decodes, once, to the same path. Unreserved characters, sub-delims,
/// `:`, `@` and `/` stay as they are; everything else is percent-encoded (UTF-8, upper-case
/// hex).
pub fn canonical_path(raw: &str) -> Result<String, KeyError> {
    let decoded = normalise_path(raw)?;
    let mut out = String::with_capacity(decoded.len());
    for b in decoded.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
                    | b'/'
            );
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths_are_one_spelling_per_object() {
        for same in [
            "/a/b c",
            "//a//b%20c",
            "/a/b%20c/",
            "/%61/b c",
            "/a/./b%20c",
        ] {
            if let Ok(p) = canonical_path(same) {
                assert_eq!(p, "/a/b%20c", "{same}");
            }
        }
        assert_eq!(
            canonical_path("/x%25y").unwrap(),
            "/x%25y",
            "a literal % stays encoded"
        );
        assert_eq!(
            normalise_path(&canonical_path("/x%25y").unwrap()).unwrap(),
            "/x%y"
        );
        assert_eq!(canonical_path("/caf%C3%A9").unwrap(), "/caf%C3%A9");
    }

    #[test]
    fn hosts_must_be_well_formed() {
        let ok = [
            "a.test",
            "a.test:8080",
            "[::1]",
            "[::1]:8080",
            "127.0.0.1:80",
            "x_y.test",
        ];
        for h in ok {
            assert!(normalise_host(h).is_ok(), "{h}");
        }
        for h in [
            "[::1",
            "a..b",
            "-.test",
            "a-.test",
            "a.test:99999",
            "a.test:x",
            "[zz]",
            "a b",
            "a/b",
            "[::1]x",
        ] {
            assert!(normalise_host(h).is_err(), "{h}");
        }
    }

    #[test]
    fn safe_paths() {
        assert_eq!(normalise_path("/a//b/c.ts?x=1").unwrap(), "/a/b/c.ts");
        assert_eq!(normalise_path("/a%20b").unwrap(), "/a b");
        assert_eq!(normalise_path("//").unwrap(), "/");
        for bad in [
            "/../etc/passwd",
            "/a/%2e%2e/b",
            "/a/%2E%2E/b",
            "/a/..%2fb",
            "/a%2fb",
            "/a%5cb",
            "/a\\b",
            "/a/./b",
            "/a%00b",
            "/a%zz",
            "etc/passwd",
            "",
        ] {
            assert!(normalise_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn normalisation() {
        let p = KeyPolicy {
            ignored_params: vec!["utm_*".into(), "fbclid".into()],
        };
        let k = |h, pq| CacheKey::new(h, pq, &p).unwrap().as_str().to_string();
        assert_eq!(k("Example.COM", "/a?b=2&a=1"), "example.com/a?a=1&b=2");
        assert_eq!(k("example.com:80", "/a?a=1&b=2"), "example.com/a?a=1&b=2");
        assert_eq!(
            k("example.com.", "/a?utm_source=x&fbclid=y&&z"),
            "example.com/a?z"
        );
        assert_eq!(k("example.com", "/a?"), "example.com/a");
        assert_eq!(
            k("example.com:8080", "/a?x=2&x=1"),
            "example.com:8080/a?x=1&x=2"
        );
        assert_eq!(k("[::1]:8080", "/"), "[::1]:8080/");
        assert_eq!(CacheKey::new("", "/", &p), Err(KeyError::EmptyHost));
        assert!(matches!(
            CacheKey::new("a b", "/", &p),
            Err(KeyError::InvalidHost(_))
        ));
        assert!(matches!(
            CacheKey::new("a/b", "/", &p),
            Err(KeyError::InvalidHost(_))
        ));
        assert!(matches!(
            CacheKey::new("a", "x", &p),
            Err(KeyError::RelativePath(_))
        ));
    }
}

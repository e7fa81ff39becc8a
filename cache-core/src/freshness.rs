//! HTTP caching rules for a shared cache (RFC 9111): Cache-Control parsing, storability,
//! freshness lifetime (§4.2.1), age (§4.2.3), and serving stale (§4.2.4, RFC 5861).
//!
//! Everything takes the time as an argument: no clock is read here, so each rule is a plain
//! function the table-driven tests can pin down. Dates are parsed with the `httpdate` crate.
//! Cache-Control directives are parsed here: the well-kept typed parser (`headers`'
//! `CacheControl`) does not know `stale-while-revalidate` or `stale-if-error`, and the
//! grammar (§5.2: comma-separated `token[=token|quoted-string]`) is small.

use std::time::{Duration, SystemTime};

use crate::status::NoStoreReason;

/// Largest delta-seconds value honoured (RFC 9111 §1.2.2: 2^31).
pub const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// Values of `name` among `headers`, compared case-insensitively.
pub fn header_values<'a>(
    headers: &'a [(String, String)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The parsed directives of one or more `Cache-Control` field lines (request or response).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheControl {
    /// `max-age`, seconds. An invalid or conflicting value is read as 0 (stale), as §4.2.1
    /// allows.
    pub max_age: Option<u64>,
    /// `s-maxage`, seconds (shared caches only; implies `proxy-revalidate`).
    pub s_maxage: Option<u64>,
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache` (a field-qualified form is treated as unqualified: the conservative reading).
    pub no_cache: bool,
    /// `private` (field-qualified forms likewise treated as unqualified).
    pub private: bool,
    /// `public`.
    pub public: bool,
    /// `must-revalidate`.
    pub must_revalidate: bool,
    /// `proxy-revalidate`.
    pub proxy_revalidate: bool,
    /// `stale-while-revalidate`, seconds (RFC 5861).
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error`, seconds (RFC 5861).
    pub stale_if_error: Option<u64>,
    /// `immutable` (RFC 8246).
    pub immutable: bool,
    /// Request `max-stale`: `Some(u64::MAX)` when given without a value.
    pub max_stale: Option<u64>,
    /// Request `min-fresh`, seconds.
    pub min_fresh: Option<u64>,
    /// Request `only-if-cached`.
    pub only_if_cached: bool,
    /// `must-understand`: `no-store` yields to it where the status's caching rules are
    /// understood (RFC 9111 §5.2.2.3).
    pub must_understand: bool,
    /// The directives came from `CDN-Cache-Control` (RFC 9213), which replaces
    /// `Cache-Control` and `Expires` for a CDN.
    pub targeted: bool,
}

/// Splits a field value at commas outside quoted strings.
fn split_directives(value: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    // A quoted string can only be a directive's argument, so a quote opens one only right
    // after `=`: elsewhere it is a stray character and cannot hide a directive.
    let mut after_eq = false;
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' if quoted => quoted = false,
            '"' if after_eq => quoted = true,
            ',' if !quoted => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !c.is_whitespace() {
            after_eq = c == '=' && !quoted;
        }
    }
    parts.push(&value[start..]);
    if quoted {
        // An unterminated quote would hide every directive after it (`a=", no-store`): read
        // a malformed value without quoting, so a restriction in it still counts.
        parts = value.split(',').collect();
    }
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty())
}

/// Parses delta-seconds (§1.2.2): digits only, capped at [`MAX_DELTA_SECONDS`].
fn delta_seconds(arg: Option<&str>) -> Option<u64> {
    let s = arg?.trim_matches('"');
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<u64>().unwrap_or(u64::MAX).min(MAX_DELTA_SECONDS))
}

/// Records a seconds directive; a second, different value or an invalid one reads as 0.
fn set_seconds(slot: &mut Option<u64>, arg: Option<&str>) {
    let v = delta_seconds(arg).unwrap_or(0);
    *slot = match *slot {
        Some(old) if old != v => Some(0),
        _ => Some(v),
    };
}

impl CacheControl {
    /// Parses every `Cache-Control` field line given (their directives are combined).
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        let mut cc = Self::default();
        for line in lines {
            for d in split_directives(line) {
                let (name, arg) = match d.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim())),
                    None => (d, None),
                };
                match name.to_ascii_lowercase().as_str() {
                    "max-age" => set_seconds(&mut cc.max_age, arg),
                    "s-maxage" => set_seconds(&mut cc.s_maxage, arg),
                    "no-store" => cc.no_store = true,
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    "public" => cc.public = true,
                    "must-revalidate" => cc.must_revalidate = true,
                    "proxy-revalidate" => cc.proxy_revalidate = true,
                    "immutable" => cc.immutable = true,
                    "must-understand" => cc.must_understand = true,
                    "only-if-cached" => cc.only_if_cached = true,
                    // An invalid stale window grants nothing (stale serving is opt-in).
                    "stale-while-revalidate" => cc.stale_while_revalidate = delta_seconds(arg),
                    "stale-if-error" => cc.stale_if_error = delta_seconds(arg),
                    "min-fresh" => cc.min_fresh = delta_seconds(arg),
                    "max-stale" => {
                        cc.max_stale = match arg {
                            None => Some(u64::MAX),
                            Some(_) => delta_seconds(arg),
                        }
                    }
                    _ => {} // Unknown extensions are ignored (§5.2.3).
                }
            }
        }
        cc
    }

    /// The directives a shared cache obeys among `headers`: `CDN-Cache-Control`'s when the
    /// response has a valid one (RFC 9213: a Structured Fields dictionary, its delta-seconds
    /// integers), else `Cache-Control`'s. An invalid `CDN-Cache-Control` is ignored whole.
    pub fn from_headers(headers: &[(String, String)]) -> Self {
        let cdn: Vec<&str> = header_values(headers, "cdn-cache-control").collect();
        if !cdn.is_empty() && cdn.iter().all(|v| targeted_field_ok(v)) {
            return Self {
                targeted: true,
                ..Self::parse(cdn)
            };
        }
        Self::parse(header_values(headers, "cache-control"))
    }
}

/// Whether a `CDN-Cache-Control` value is a Structured Fields dictionary (RFC 8941 §3.2)
/// whose seconds directives are integers.
fn targeted_field_ok(v: &str) -> bool {
    let b = v.as_bytes();
    let mut i = 0;
    let skip_sp = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t') {
            *i += 1;
        }
    };
    let key = |i: &mut usize| -> Option<String> {
        let start = *i;
        if *i < b.len() && (b[*i].is_ascii_lowercase() || b[*i] == b'*') {
            *i += 1;
            while *i < b.len()
                && (b[*i].is_ascii_lowercase()
                    || b[*i].is_ascii_digit()
                    || matches!(b[*i], b'_' | b'-' | b'.' | b'*'))
            {
                *i += 1;
            }
            Some(v[start..*i].to_string())
        } else {
            None
        }
    };
    // A bare item; `Some(true)` when it is an integer.
    let item = |i: &mut usize| -> Option<bool> {
        let c = *b.get(*i)?;
        match c {
            b'-' | b'0'..=b'9' => {
                let start = *i;
                *i += 1;
                while *i < b.len() && (b[*i].is_ascii_digit() || b[*i] == b'.') {
                    *i += 1;
                }
                let n = &v[start..*i];
                let digits = n.trim_start_matches('-');
                if digits.is_empty() || n.matches('.').count() > 1 || digits.len() > 16 {
                    return None;
                }
                Some(!n.contains('.') && digits.len() <= 15)
            }
            b'"' => {
                *i += 1;
                loop {
                    match *b.get(*i)? {
                        b'\\' => *i += 2,
                        b'"' => {
                            *i += 1;
                            return Some(false);
                        }
                        c if (0x20..0x7f).contains(&c) => *i += 1,
                        _ => return None,
                    }
                }
            }
            b'?' => match b.get(*i + 1)? {
                b'0' | b'1' => {
                    *i += 2;
                    Some(false)
                }
                _ => None,
            },
            b':' => {
                *i += 1;
                while *b.get(*i)? != b':' {
                    *i += 1;
                }
                *i += 1;
                Some(false)
            }
            c if c.is_ascii_alphabetic() || c == b'*' => {
                *i += 1;
                while *i < b.len()
                    && (b[*i].is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b[*i]))
                {
                    *i += 1;
                }
                Some(false)
            }
            _ => None,
        }
    };
    skip_sp(&mut i);
    loop {
        let Some(k) = key(&mut i) else {
            return false;
        };
        if b.get(i) == Some(&b'=') {
            i += 1;
            let Some(integer) = item(&mut i) else {
                return false;
            };
            let seconds = matches!(
                k.as_str(),
                "max-age" | "s-maxage" | "stale-while-revalidate" | "stale-if-error"
            );
            if seconds && !integer {
                return false;
            }
        }
        // Parameters: `;key[=item]`.
        while b.get(i) == Some(&b';') {
            i += 1;
            skip_sp(&mut i);
            if key(&mut i).is_none() {
                return false;
            }
            if b.get(i) == Some(&b'=') {
                i += 1;
                if item(&mut i).is_none() {
                    return false;
                }
            }
        }
        skip_sp(&mut i);
        if i == b.len() {
            return true;
        }
        if b[i] != b',' {
            return false;
        }
        i += 1;
        skip_sp(&mut i);
        if i == b.len() {
            return false;
        }
    }
}

/// Statuses whose caching rules Shoal implements, for `must-understand`.
fn understood(status: u16) -> bool {
    heuristically_cacheable(status) || matches!(status, 302 | 303 | 307)
}

/// Statuses a cache may store without explicit freshness (§4.2.2, RFC 9110 §15.1).
pub fn heuristically_cacheable(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// The edge's own freshness settings, applied where the origin says nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct FreshnessPolicy {
    /// Lifetime for a response without explicit freshness. `None`: such a response is stored
    /// only if heuristic freshness applies, else it is stale on arrival.
    pub default_ttl: Option<Duration>,
    /// Heuristic freshness (§4.2.2) as a fraction of (Date − Last-Modified), e.g. 0.1.
    /// Off (`None`) unless configured.
    pub heuristic_fraction: Option<f64>,
    /// Upper bound of a heuristic lifetime.
    pub heuristic_max: Duration,
    /// Stale-while-revalidate window where the origin gives none.
    pub default_stale_while_revalidate: Duration,
    /// Stale-if-error window where the origin gives none.
    pub default_stale_if_error: Duration,
    /// How long a stale object with a validator (ETag or Last-Modified) is kept beyond its
    /// stale windows, so it can be revalidated with a conditional fetch instead of refetched.
    pub keep_for_revalidation: Duration,
}

impl Default for FreshnessPolicy {
    fn default() -> Self {
        Self {
            default_ttl: Some(Duration::from_secs(60)),
            heuristic_fraction: None,
            heuristic_max: Duration::from_secs(24 * 3600),
            default_stale_while_revalidate: Duration::ZERO,
            default_stale_if_error: Duration::ZERO,
            keep_for_revalidation: Duration::from_secs(300),
        }
    }
}

/// When the request that produced a response was sent and the response received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    /// Time the request was sent upstream (`request_time` of §4.2.3).
    pub request_time: SystemTime,
    /// Time the response head arrived (`response_time` of §4.2.3).
    pub response_time: SystemTime,
}

impl Exchange {
    /// An exchange with no measurable delay, at `t`.
    pub fn at(t: SystemTime) -> Self {
        Self {
            request_time: t,
            response_time: t,
        }
    }
}

/// The freshness facts of one stored response: enough to answer "fresh or stale, and may
/// it be served stale?" at any later time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    /// When the response was received.
    pub response_time: SystemTime,
    /// `corrected_initial_age` of §4.2.3.
    pub initial_age: Duration,
    /// Freshness lifetime (§4.2.1).
    pub lifetime: Duration,
    /// Stale-while-revalidate window.
    pub stale_while_revalidate: Duration,
    /// Stale-if-error window.
    pub stale_if_error: Duration,
    /// Stale copies must never be served (must-revalidate, proxy-revalidate, s-maxage).
    pub no_stale: bool,
    /// Every use must be revalidated first (`no-cache`).
    pub always_revalidate: bool,
    /// `immutable`: a fresh copy needs no revalidation even when a client asks.
    pub immutable: bool,
    /// How long memory may hold the object, from `response_time` (see [`Self::keep_for`]).
    pub keep: Duration,
}

/// The state of a stored response at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreshnessState {
    /// Usable as is for `remaining` more.
    Fresh {
        /// Time left until it goes stale.
        remaining: Duration,
    },
    /// Past its lifetime by `staleness`.
    Stale {
        /// How far past its lifetime.
        staleness: Duration,
        /// May be served while a background revalidation runs.
        serve_while_revalidate: bool,
        /// May be served if the origin fails.
        serve_if_error: bool,
    },
}

fn http_date(headers: &[(String, String)], name: &str) -> Option<Option<SystemTime>> {
    let v = header_values(headers, name).next()?;
    Some(parse_date(v.trim()))
}

/// An HTTP date in any of the three formats of RFC 9110 §5.6.7, read as recipients do:
/// names in any case, and a weekday that does not match the date ignored (the date and
/// time decide). Anything else malformed is `None`.
pub fn parse_date(v: &str) -> Option<SystemTime> {
    if let Ok(t) = httpdate::parse_http_date(v) {
        return Some(t);
    }
    // Names title-cased (`THU` → `Thu`, `gMT` → `GMT`), the layout untouched.
    let mut fixed = String::with_capacity(v.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.eq_ignore_ascii_case("gmt") {
            out.push_str("GMT");
        } else {
            for (i, c) in word.chars().enumerate() {
                out.push(if i == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                });
            }
        }
        word.clear();
    };
    for c in v.chars() {
        if c.is_ascii_alphabetic() {
            word.push(c);
        } else {
            flush(&mut word, &mut fixed);
            fixed.push(c);
        }
    }
    flush(&mut word, &mut fixed);
    if let Ok(t) = httpdate::parse_http_date(&fixed) {
        return Some(t);
    }
    // The weekday is redundant: try the date with each one.
    let rest = fixed.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    let long = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    long.iter()
        .flat_map(|d| [&d[..3], *d])
        .find_map(|d| httpdate::parse_http_date(&format!("{d}{rest}")).ok())
}

impl Freshness {
    /// Derives the freshness facts of a response (`status`, `headers`) received in `exchange`.
    pub fn from_response(
        status: u16,
        headers: &[(String, String)],
        exchange: Exchange,
        policy: &FreshnessPolicy,
    ) -> Self {
        let cc = CacheControl::from_headers(headers);
        let resp = exchange.response_time;
        // §4.2.3 age calculation.
        let date = http_date(headers, "date").flatten().unwrap_or(resp);
        // A list (`7200, 0`, or two lines) is read by its first member, as caches do.
        let age_value = header_values(headers, "age")
            .next()
            .and_then(|v| delta_seconds(v.split(',').next().map(str::trim)))
            .map_or(Duration::ZERO, Duration::from_secs);
        let apparent_age = resp.duration_since(date).unwrap_or(Duration::ZERO);
        let response_delay = resp
            .duration_since(exchange.request_time)
            .unwrap_or(Duration::ZERO);
        let initial_age = apparent_age.max(age_value + response_delay);

        // §4.2.1 lifetime: s-maxage, max-age, Expires − Date, heuristic, configured default.
        let lifetime = if let Some(s) = cc.s_maxage {
            Duration::from_secs(s)
        } else if let Some(m) = cc.max_age {
            Duration::from_secs(m)
        } else if let Some(expires) = http_date(headers, "expires").filter(|_| !cc.targeted) {
            // An invalid Expires (such as "0") is a time in the past (§5.3).
            expires.map_or(Duration::ZERO, |e| {
                e.duration_since(date).unwrap_or(Duration::ZERO)
            })
        } else if let Some(h) = Self::heuristic(status, headers, date, policy) {
            h
        } else {
            policy.default_ttl.unwrap_or(Duration::ZERO)
        };

        let no_stale = cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some();
        let swr = cc
            .stale_while_revalidate
            .map_or(policy.default_stale_while_revalidate, Duration::from_secs);
        let sie = cc
            .stale_if_error
            .map_or(policy.default_stale_if_error, Duration::from_secs);
        let has_validator = header_values(headers, "etag").next().is_some()
            || header_values(headers, "last-modified").next().is_some();
        let mut f = Self {
            response_time: resp,
            initial_age,
            lifetime,
            stale_while_revalidate: if no_stale { Duration::ZERO } else { swr },
            stale_if_error: if no_stale { Duration::ZERO } else { sie },
            no_stale,
            always_revalidate: cc.no_cache,
            immutable: cc.immutable,
            keep: Duration::ZERO,
        };
        let windows = f.stale_while_revalidate.max(f.stale_if_error);
        let revalidation = if has_validator {
            policy.keep_for_revalidation
        } else {
            Duration::ZERO
        };
        f.keep = (f.lifetime.saturating_sub(f.initial_age)) + windows.max(revalidation);
        f
    }

    /// A freshness for content with an explicit lifetime and nothing else (replays, tests).
    pub fn fixed(response_time: SystemTime, lifetime: Duration) -> Self {
        Self {
            response_time,
            initial_age: Duration::ZERO,
            lifetime,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            no_stale: false,
            always_revalidate: false,
            immutable: false,
            keep: lifetime,
        }
    }

    fn heuristic(
        status: u16,
        headers: &[(String, String)],
        date: SystemTime,
        policy: &FreshnessPolicy,
    ) -> Option<Duration> {
        let fraction = policy.heuristic_fraction?;
        if !heuristically_cacheable(status) {
            return None;
        }
        let lm = http_date(headers, "last-modified").flatten()?;
        let since = date.duration_since(lm).ok()?;
        Some(since.mul_f64(fraction).min(policy.heuristic_max))
    }

    /// A soft purge: stale from `now` on (staleness counted from `now`), with its stale
    /// windows and memory bound unchanged, so stale-while-revalidate and stale-if-error
    /// still protect the origin.
    pub fn mark_stale(&mut self, now: SystemTime) {
        self.lifetime = self.lifetime.min(self.current_age(now));
    }

    /// `current_age` at `now` (§4.2.3).
    pub fn current_age(&self, now: SystemTime) -> Duration {
        self.initial_age
            + now
                .duration_since(self.response_time)
                .unwrap_or(Duration::ZERO)
    }

    /// Fresh or stale at `now`, and whether a stale copy may be served.
    pub fn state(&self, now: SystemTime) -> FreshnessState {
        let age = self.current_age(now);
        if !self.always_revalidate && age < self.lifetime {
            return FreshnessState::Fresh {
                remaining: self.lifetime - age,
            };
        }
        let staleness = age.saturating_sub(self.lifetime);
        let may = !self.no_stale && !self.always_revalidate;
        FreshnessState::Stale {
            staleness,
            // Strict: a window of N seconds covers staleness in [0, N); an empty one covers nothing.
            serve_while_revalidate: may && staleness < self.stale_while_revalidate,
            serve_if_error: may && staleness < self.stale_if_error,
        }
    }

    /// How long after `now` memory should still hold the object: its remaining lifetime
    /// plus its stale windows (and the revalidation grace for objects with validators).
    /// This bounds memory only; serving decisions come from [`Self::state`].
    pub fn keep_for(&self, now: SystemTime) -> Duration {
        let held = now
            .duration_since(self.response_time)
            .unwrap_or(Duration::ZERO);
        self.keep.saturating_sub(held)
    }
}

/// Whether a shared cache may store this response (§3, §3.5), or why not.
/// `request_authorized`: the request carried `Authorization`.
/// `negative_ttl`: the configured negative-caching TTL for this status, if any.
pub fn storable(
    status: u16,
    headers: &[(String, String)],
    request_authorized: bool,
    negative_ttl: Option<Duration>,
) -> Result<(), NoStoreReason> {
    let cc = CacheControl::from_headers(headers);
    if cc.no_store && !(cc.must_understand && understood(status)) {
        return Err(NoStoreReason::NoStore);
    }
    if cc.private {
        return Err(NoStoreReason::Private);
    }
    if request_authorized && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate) {
        return Err(NoStoreReason::Authorization);
    }
    // `Vary: *` is never reused; a response that varies on fields is stored under its
    // secondary key, which is the caller's to compute (see [`crate::vary`]).
    if crate::vary::of(headers) == crate::vary::Vary::Any {
        return Err(NoStoreReason::Vary);
    }
    if header_values(headers, "set-cookie").next().is_some() {
        return Err(NoStoreReason::SetCookie);
    }
    let explicit = cc.max_age.is_some()
        || cc.s_maxage.is_some()
        || (!cc.targeted && header_values(headers, "expires").next().is_some());
    if status >= 400 {
        // An error with explicit freshness is cached as its origin says (RFC 9111 §3);
        // without, only where negative caching is configured for the status.
        return match (negative_ttl, explicit) {
            (Some(_), _) | (None, true) => Ok(()),
            (None, false) => Err(NoStoreReason::ErrorStatus),
        };
    }
    if !(explicit || cc.public || heuristically_cacheable(status)) {
        return Err(NoStoreReason::Status);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    const T0: u64 = 1_700_000_000;
    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + secs)
    }
    fn date(secs_from_t0: i64) -> String {
        httpdate::fmt_http_date(
            SystemTime::UNIX_EPOCH + Duration::from_secs((T0 as i64 + secs_from_t0) as u64),
        )
    }

    #[test]
    fn cache_control_parsing() {
        let cc = CacheControl::parse([
            "Max-Age=60, s-maxage=\"30\", no-cache=\"Set-Cookie, X\"",
            "stale-while-revalidate=10,stale-if-error=abc, immutable, foo=bar",
        ]);
        assert_eq!(cc.max_age, Some(60));
        assert_eq!(cc.s_maxage, Some(30));
        assert!(cc.no_cache && cc.immutable && !cc.no_store);
        assert_eq!(cc.stale_while_revalidate, Some(10));
        assert_eq!(cc.stale_if_error, None, "invalid window grants nothing");
        // Conflicting duplicates and garbage read as stale.
        assert_eq!(
            CacheControl::parse(["max-age=5, max-age=10"]).max_age,
            Some(0)
        );
        assert_eq!(
            CacheControl::parse(["max-age=5", "max-age=5"]).max_age,
            Some(5)
        );
        assert_eq!(CacheControl::parse(["max-age=-1"]).max_age, Some(0));
        assert_eq!(CacheControl::parse(["max-age"]).max_age, Some(0));
        assert_eq!(
            CacheControl::parse(["max-age=99999999999999999999999"]).max_age,
            Some(MAX_DELTA_SECONDS)
        );
        assert_eq!(CacheControl::parse(["max-stale"]).max_stale, Some(u64::MAX));
        assert_eq!(CacheControl::parse([",,,"]), CacheControl::default());
    }

    /// One row: response headers, seconds between request and response, seconds after the
    /// response we look; expected lifetime, current age, and the state at that instant.
    struct Case {
        name: &'static str,
        headers: Vec<(String, String)>,
        delay: u64,
        at: u64,
        lifetime: u64,
        age: u64,
        fresh: bool,
        swr: bool,
        sie: bool,
    }

    #[test]
    fn rfc9111_freshness_table() {
        let no_default = FreshnessPolicy {
            default_ttl: None,
            keep_for_revalidation: Duration::ZERO,
            ..FreshnessPolicy::default()
        };
        #[rustfmt::skip]
        let cases = vec![
            Case { name: "max-age", headers: h(&[("cache-control", "max-age=100")]), delay: 0, at: 50, lifetime: 100, age: 50, fresh: true, swr: false, sie: false },
            Case { name: "max-age expired", headers: h(&[("cache-control", "max-age=100")]), delay: 0, at: 100, lifetime: 100, age: 100, fresh: false, swr: false, sie: false },
            Case { name: "s-maxage beats max-age", headers: h(&[("cache-control", "max-age=100, s-maxage=10")]), delay: 0, at: 20, lifetime: 10, age: 20, fresh: false, swr: false, sie: false },
            Case { name: "max-age beats Expires", headers: h(&[("cache-control", "max-age=10"), ("date", &date(0)), ("expires", &date(1000))]), delay: 0, at: 5, lifetime: 10, age: 5, fresh: true, swr: false, sie: false },
            Case { name: "Expires - Date", headers: h(&[("date", &date(0)), ("expires", &date(300))]), delay: 0, at: 299, lifetime: 300, age: 299, fresh: true, swr: false, sie: false },
            Case { name: "invalid Expires is past", headers: h(&[("expires", "0")]), delay: 0, at: 0, lifetime: 0, age: 0, fresh: false, swr: false, sie: false },
            Case { name: "Age header counts", headers: h(&[("cache-control", "max-age=100"), ("age", "30")]), delay: 0, at: 60, lifetime: 100, age: 90, fresh: true, swr: false, sie: false },
            Case { name: "response delay corrects Age", headers: h(&[("cache-control", "max-age=100"), ("age", "30")]), delay: 5, at: 0, lifetime: 100, age: 35, fresh: true, swr: false, sie: false },
            Case { name: "apparent age from Date", headers: h(&[("cache-control", "max-age=100"), ("date", &date(-40))]), delay: 0, at: 0, lifetime: 100, age: 40, fresh: true, swr: false, sie: false },
            Case { name: "an Age list counts by its first member", headers: h(&[("cache-control", "max-age=100"), ("age", "30, 0")]), delay: 0, at: 0, lifetime: 100, age: 30, fresh: true, swr: false, sie: false },
            Case { name: "Age larger than apparent", headers: h(&[("cache-control", "max-age=100"), ("date", &date(-10)), ("age", "50")]), delay: 0, at: 0, lifetime: 100, age: 50, fresh: true, swr: false, sie: false },
            Case { name: "swr window open", headers: h(&[("cache-control", "max-age=10, stale-while-revalidate=30, stale-if-error=5")]), delay: 0, at: 25, lifetime: 10, age: 25, fresh: false, swr: true, sie: false },
            Case { name: "sie window open", headers: h(&[("cache-control", "max-age=10, stale-if-error=60")]), delay: 0, at: 69, lifetime: 10, age: 69, fresh: false, swr: false, sie: true },
            Case { name: "sie window closed", headers: h(&[("cache-control", "max-age=10, stale-if-error=60")]), delay: 0, at: 70, lifetime: 10, age: 70, fresh: false, swr: false, sie: false },
            Case { name: "must-revalidate forbids stale", headers: h(&[("cache-control", "max-age=10, must-revalidate, stale-if-error=60")]), delay: 0, at: 20, lifetime: 10, age: 20, fresh: false, swr: false, sie: false },
            Case { name: "s-maxage implies proxy-revalidate", headers: h(&[("cache-control", "s-maxage=10, stale-while-revalidate=60")]), delay: 0, at: 20, lifetime: 10, age: 20, fresh: false, swr: false, sie: false },
            Case { name: "no-cache always revalidates", headers: h(&[("cache-control", "no-cache, max-age=100")]), delay: 0, at: 1, lifetime: 100, age: 1, fresh: false, swr: false, sie: false },
            Case { name: "no explicit freshness, no default", headers: h(&[]), delay: 0, at: 0, lifetime: 0, age: 0, fresh: false, swr: false, sie: false },
        ];
        for c in cases {
            let ex = Exchange {
                request_time: t(0),
                response_time: t(c.delay),
            };
            let f = Freshness::from_response(200, &c.headers, ex, &no_default);
            let now = t(c.delay + c.at);
            assert_eq!(
                f.lifetime,
                Duration::from_secs(c.lifetime),
                "{}: lifetime",
                c.name
            );
            assert_eq!(
                f.current_age(now),
                Duration::from_secs(c.age),
                "{}: age",
                c.name
            );
            match f.state(now) {
                FreshnessState::Fresh { .. } => assert!(c.fresh, "{}: fresh", c.name),
                FreshnessState::Stale {
                    serve_while_revalidate,
                    serve_if_error,
                    ..
                } => {
                    assert!(!c.fresh, "{}: stale", c.name);
                    assert_eq!(serve_while_revalidate, c.swr, "{}: swr", c.name);
                    assert_eq!(serve_if_error, c.sie, "{}: sie", c.name);
                }
            }
        }
    }

    #[test]
    fn defaults_heuristics_and_keep() {
        let hs = h(&[("date", &date(0)), ("last-modified", &date(-1000))]);
        let ex = Exchange::at(t(0));
        let p = FreshnessPolicy {
            default_ttl: Some(Duration::from_secs(60)),
            keep_for_revalidation: Duration::ZERO,
            ..FreshnessPolicy::default()
        };
        assert_eq!(
            Freshness::from_response(200, &hs, ex, &p)
                .lifetime
                .as_secs(),
            60
        );
        let heur = FreshnessPolicy {
            heuristic_fraction: Some(0.1),
            ..p
        };
        assert_eq!(
            Freshness::from_response(200, &hs, ex, &heur)
                .lifetime
                .as_secs(),
            100
        );
        // Heuristics never apply to a status that is not heuristically cacheable.
        assert_eq!(
            Freshness::from_response(302, &hs, ex, &heur)
                .lifetime
                .as_secs(),
            60
        );
        // Memory keeps the object for lifetime + the larger stale window.
        let f = Freshness::from_response(
            200,
            &h(&[(
                "cache-control",
                "max-age=10, stale-if-error=50, stale-while-revalidate=5",
            )]),
            ex,
            &p,
        );
        assert_eq!(f.keep_for(t(0)).as_secs(), 60);
        assert_eq!(f.keep_for(t(59)).as_secs(), 1);
        assert_eq!(f.keep_for(t(61)), Duration::ZERO);
        // With a validator, it stays for the revalidation grace as well.
        let grace = FreshnessPolicy {
            default_ttl: Some(Duration::from_secs(60)),
            keep_for_revalidation: Duration::from_secs(300),
            ..FreshnessPolicy::default()
        };
        let f = Freshness::from_response(
            200,
            &h(&[("cache-control", "max-age=10"), ("etag", "\"a\"")]),
            ex,
            &grace,
        );
        assert_eq!(f.keep_for(t(0)).as_secs(), 310);
    }

    #[test]
    fn storability() {
        let ok = |s, hs: &[(&str, &str)], auth| storable(s, &h(hs), auth, None);
        assert_eq!(ok(200, &[], false), Ok(()));
        assert_eq!(
            ok(200, &[("cache-control", "no-store")], false),
            Err(NoStoreReason::NoStore)
        );
        assert_eq!(
            ok(200, &[("cache-control", "private")], false),
            Err(NoStoreReason::Private)
        );
        assert_eq!(ok(200, &[], true), Err(NoStoreReason::Authorization));
        assert_eq!(ok(200, &[("cache-control", "public")], true), Ok(()));
        assert_eq!(ok(200, &[("vary", "accept-encoding")], false), Ok(()));
        assert_eq!(ok(200, &[("vary", "*")], false), Err(NoStoreReason::Vary));
        assert_eq!(
            ok(200, &[("set-cookie", "a=b")], false),
            Err(NoStoreReason::SetCookie)
        );
        assert_eq!(ok(302, &[], false), Err(NoStoreReason::Status));
        assert_eq!(ok(302, &[("cache-control", "max-age=5")], false), Ok(()));
        // An error is stored when it says how long it is fresh, or negative caching is on.
        assert_eq!(ok(404, &[("cache-control", "max-age=5")], false), Ok(()));
        assert_eq!(ok(503, &[], false), Err(NoStoreReason::ErrorStatus));
        assert_eq!(
            storable(404, &[], false, Some(Duration::from_secs(5))),
            Ok(())
        );
    }

    #[test]
    fn dates_are_read_in_any_case_and_with_a_wrong_weekday_but_not_otherwise_malformed() {
        let want = parse_date("Thu, 18 Aug 2050 02:01:18 GMT").unwrap();
        for ok in [
            "THU, 18 Aug 2050 02:01:18 GMT",
            "Thu, 18 AUG 2050 02:01:18 gMT",
            "Mon, 18 Aug 2050 02:01:18 GMT",
            "Thu Aug 18 02:01:18 2050",
            "Thursday, 18-Aug-50 02:01:18 GMT",
        ] {
            assert_eq!(parse_date(ok), Some(want), "{ok}");
        }
        for bad in [
            "Thu, 18 Aug 2050 02:01:18 UTC",
            "Thu, 18 Aug 2050 2:01:18 GMT",
            "Thu, 18 Aug 2050 02.01.18 GMT",
            "Thu 18 Aug 2050 02:01:18 GMT",
            "0",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn cdn_cache_control_replaces_cache_control_when_it_is_a_valid_dictionary() {
        let cc = CacheControl::from_headers(&h(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "foobar, max-age=3600"),
        ]));
        assert!(cc.targeted && !cc.no_store);
        assert_eq!(cc.max_age, Some(3600));
        for bad in [
            "max-age=10000, &&&&&",
            "max-age=\"10000\"",
            "max-age =100",
            "MaX-aGe=1",
        ] {
            let cc = CacheControl::from_headers(&h(&[
                ("cache-control", "no-store"),
                ("cdn-cache-control", bad),
            ]));
            assert!(!cc.targeted && cc.no_store, "{bad} must be ignored");
        }
        assert!(targeted_field_ok(
            "private;a=1, x=?1, y=:AAA=:, z=tok/en, q=1.5"
        ));
        // Expires does not count beside a targeted field.
        let ex = Exchange::at(SystemTime::now());
        let f = Freshness::from_response(
            200,
            &h(&[
                ("cdn-cache-control", "no-cache"),
                ("expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
            ]),
            ex,
            &FreshnessPolicy::default(),
        );
        assert_eq!(
            f.lifetime,
            FreshnessPolicy::default().default_ttl.unwrap_or_default()
        );
        // `must-understand` overrides `no-store` for a status whose rules are known.
        assert_eq!(
            storable(
                200,
                &h(&[("cache-control", "no-store, must-understand, max-age=9")]),
                false,
                None
            ),
            Ok(())
        );
        assert_eq!(
            storable(
                299,
                &h(&[("cache-control", "no-store, must-understand, max-age=9")]),
                false,
                None
            ),
            Err(NoStoreReason::NoStore)
        );
    }
}

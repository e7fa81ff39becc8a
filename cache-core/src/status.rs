//! Cache outcomes as enums with stable string forms, shared by the `Cache-Status` header
//! (RFC 9211), metric labels (bounded cardinality) and log fields.

/// Why a response was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoStoreReason {
    /// `Cache-Control: no-store`.
    NoStore,
    /// `Cache-Control: private` (this is a shared cache).
    Private,
    /// The request carried `Authorization` and the response did not allow sharing it
    /// (`public`, `s-maxage` or `must-revalidate`, RFC 9111 §3.5).
    Authorization,
    /// The response has `Vary: *`, or varies on fields other than the ones its key was
    /// made for (it is then stored under its own secondary key, if the URL has room for
    /// another variant), so it is not stored under this key.
    Vary,
    /// The response sets a cookie: per-client state must not be shared.
    SetCookie,
    /// The status is not cacheable without explicit freshness.
    Status,
    /// An error status, and no negative-caching TTL is configured for it.
    ErrorStatus,
    /// The object is larger than the maximum object size (or the whole cache).
    TooLarge,
    /// The body is larger than the maximum object size, so it was passed through as a
    /// stream and never held whole (only the request that fetched it has it).
    Streamed,
    /// The eviction policy declined to admit it (TinyLFU admission).
    Rejected,
    /// An invalidation that matches it arrived while it was being fetched: what was fetched
    /// may predate it, so it is served to the requests that waited for it but not kept.
    Invalidated,
    /// The path's consistency mode is `direct`: every read goes to the origin.
    Direct,
    /// The body is still arriving and is shared as it does; whoever registered the fill
    /// stores it when it is complete (not a refusal: not counted as one).
    Filling,
}

impl NoStoreReason {
    /// Stable lower-case name, for headers, labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoStore => "no-store",
            Self::Private => "private",
            Self::Authorization => "authorization",
            Self::Vary => "vary",
            Self::SetCookie => "set-cookie",
            Self::Status => "status",
            Self::ErrorStatus => "error-status",
            Self::TooLarge | Self::Streamed => "too-large",
            Self::Rejected => "rejected",
            Self::Invalidated => "invalidated",
            Self::Direct => "direct",
            Self::Filling => "filling",
        }
    }
}

/// How a request was answered with respect to the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheStatus {
    /// Served fresh from the cache.
    Hit,
    /// Served stale from the cache (while revalidating, or because the origin failed).
    StaleHit,
    /// Not in the cache: fetched and stored.
    MissStored,
    /// Not in the cache: joined a fetch another request had started, and got its
    /// response (RFC 9211 `collapsed`).
    Collapsed,
    /// Not in the cache: fetched, not stored for the reason given.
    MissNotStored(NoStoreReason),
    /// Stale in the cache; revalidated upstream (304) and served.
    Revalidated,
    /// Stale in the cache; refetched in full.
    Expired,
    /// Passed through because of the request method (POST, PATCH, …): never looked up,
    /// never stored (RFC 9211 `fwd=method`).
    Passed,
}

impl CacheStatus {
    /// Stable lower-case name for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::StaleHit => "stale",
            Self::MissStored => "miss",
            Self::Collapsed => "collapsed",
            Self::MissNotStored(_) => "bypass",
            Self::Revalidated => "revalidated",
            Self::Expired => "expired",
            Self::Passed => "pass",
        }
    }

    /// The `Cache-Status` member for a cache named `cache` (RFC 9211 §2).
    pub fn header_value(self, cache: &str) -> String {
        match self {
            Self::Hit => format!("{cache}; hit"),
            Self::StaleHit => format!("{cache}; hit; detail=stale"),
            Self::MissStored => format!("{cache}; fwd=miss; stored"),
            Self::Collapsed => format!("{cache}; fwd=miss; collapsed"),
            Self::MissNotStored(r) => format!("{cache}; fwd=miss; detail={}", r.as_str()),
            Self::Revalidated => format!("{cache}; fwd=stale; fwd-status=304; stored"),
            Self::Expired => format!("{cache}; fwd=stale; stored"),
            Self::Passed => format!("{cache}; fwd=method"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_follow_rfc9211() {
        assert_eq!(CacheStatus::Hit.header_value("shoal"), "shoal; hit");
        assert_eq!(
            CacheStatus::StaleHit.header_value("shoal"),
            "shoal; hit; detail=stale"
        );
        assert_eq!(
            CacheStatus::MissStored.header_value("shoal"),
            "shoal; fwd=miss; stored"
        );
        assert_eq!(
            CacheStatus::MissNotStored(NoStoreReason::Vary).header_value("e1"),
            "e1; fwd=miss; detail=vary"
        );
    }
}

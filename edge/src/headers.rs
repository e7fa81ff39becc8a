//! Which origin headers an edge keeps and sends on, and the one conversion from the stored
//! header list to an HTTP header map.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// End-to-end headers of an origin response worth keeping and sending on.
const KEPT: &[&str] = &[
    "content-type",
    "cache-control",
    "etag",
    "last-modified",
    "expires",
    "date",
    "content-encoding",
    "content-language",
    "vary",
    "set-cookie",
];

/// Whether an origin header is kept.
pub(crate) fn is_kept(name: &str) -> bool {
    KEPT.iter().any(|k| k.eq_ignore_ascii_case(name))
}

/// The kept headers of an origin response.
pub(crate) fn keep(headers: Vec<(String, String)>) -> Vec<(String, String)> {
    headers.into_iter().filter(|(n, _)| is_kept(n)).collect()
}

/// The headers as a map, leaving out `skip` (lower-case names) and anything that is not a
/// valid header.
pub(crate) fn to_map(headers: &[(String, String)], skip: &[&str]) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len() + 6);
    for (n, v) in headers {
        if skip.iter().any(|s| n.eq_ignore_ascii_case(s)) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (n.parse::<HeaderName>(), HeaderValue::from_str(v)) {
            out.append(n, v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_end_to_end_headers_and_converts_once() {
        let h = |n: &str, v: &str| (n.to_string(), v.to_string());
        let kept = keep(vec![
            h("Content-Type", "text/plain"),
            h("Connection", "close"),
            h("ETag", "\"1\""),
            h("X-Internal", "secret"),
        ]);
        assert_eq!(kept.len(), 2);
        let map = to_map(&kept, &["etag"]);
        assert_eq!(map.len(), 1);
        assert_eq!(map["content-type"], "text/plain");
        let bad = to_map(&[h("bad name", "v"), h("x", "bad\nvalue")], &[]);
        assert!(bad.is_empty());
    }
}

//! Which headers an edge keeps and sends on — of an origin's response, and of a client's
//! request on its way to the origin's upstream — and the one conversion from the stored
//! header list to an HTTP header map.

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use shoal_cache_core::hop;

/// Whether an origin response header is kept and sent on: every end-to-end header but the
/// surrogate keys, which are indexed for purges and never shown to clients.
pub(crate) fn is_kept(name: &str) -> bool {
    !hop::is_hop_by_hop(name) && !name.eq_ignore_ascii_case("surrogate-key")
}

/// The kept headers of an origin response.
pub(crate) fn keep(headers: Vec<(String, String)>) -> Vec<(String, String)> {
    headers.into_iter().filter(|(n, _)| is_kept(n)).collect()
}

/// Request headers a cache fill does not carry: the fill is shared by every request for
/// the key, so one client's conditions and ranges are answered here, from the whole
/// object, and never shape what is stored.
const PER_CLIENT: &[&str] = &[
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "if-range",
    "range",
];

/// Headers naming the client that only Shoal sets (never trusted from a client).
const FORWARDING: &[&str] = &["forwarded", "x-forwarded-for", "x-forwarded-proto"];

/// The request headers the origin's upstream sees: the end-to-end ones (RFC 9110 §7.6.1),
/// without Shoal's own `x-shoal-*` fields, without a client's conditions and ranges for a
/// `fill`, and with `Forwarded`/`X-Forwarded-For` naming `client` — set here, never taken
/// from the client. A forward from a region peer (`trusted`) keeps the ones that peer set.
pub(crate) fn forwarded(
    req: &HeaderMap,
    client: Option<IpAddr>,
    trusted: bool,
    fill: bool,
) -> Vec<(String, String)> {
    let fields: Vec<(&str, &str)> = req
        .iter()
        .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
        .collect();
    let mut out: Vec<(String, String)> = hop::end_to_end(fields.iter().copied())
        .into_iter()
        .filter(|(n, _)| !n.starts_with("x-shoal-"))
        .filter(|(n, _)| !(fill && PER_CLIENT.contains(&n.as_str())))
        .filter(|(n, _)| trusted || !FORWARDING.contains(&n.as_str()))
        .collect();
    if !trusted && let Some(ip) = client {
        let node = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("\"[{v6}]\""),
        };
        out.push(("forwarded".into(), format!("for={node};proto=http")));
        out.push(("x-forwarded-for".into(), ip.to_string()));
        out.push(("x-forwarded-proto".into(), "http".into()));
    }
    out
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
            h("X-Custom", "passed on"),
            h("Surrogate-Key", "a b"),
            h("Transfer-Encoding", "chunked"),
        ]);
        assert_eq!(kept.len(), 3);
        let map = to_map(&kept, &["etag"]);
        assert_eq!(map.len(), 2);
        assert_eq!(map["content-type"], "text/plain");
        assert_eq!(map["x-custom"], "passed on");
        let bad = to_map(&[h("bad name", "v"), h("x", "bad\nvalue")], &[]);
        assert!(bad.is_empty());
    }

    #[test]
    fn forwarded_headers_name_the_client_and_never_trust_the_clients_own() {
        let mut req = HeaderMap::new();
        for (n, v) in [
            ("host", "a.test"),
            ("accept", "text/html"),
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("if-none-match", "\"a\""),
            ("range", "bytes=0-1"),
            ("x-shoal-forwarded", "eu-1"),
        ] {
            req.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let get = |out: &[(String, String)], n: &str| -> Vec<String> {
            out.iter()
                .filter(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .collect()
        };
        let fill = forwarded(&req, Some(ip), false, true);
        assert_eq!(get(&fill, "x-forwarded-for"), ["192.0.2.7"]);
        assert_eq!(get(&fill, "forwarded"), ["for=192.0.2.7;proto=http"]);
        assert_eq!(get(&fill, "host"), ["a.test"]);
        assert_eq!(get(&fill, "accept"), ["text/html"]);
        for gone in [
            "x-hop",
            "connection",
            "if-none-match",
            "range",
            "x-shoal-forwarded",
        ] {
            assert!(get(&fill, gone).is_empty(), "{gone} forwarded");
        }
        // A pass carries the client's conditions; a peer's forward keeps what it set.
        let pass = forwarded(&req, Some(ip), false, false);
        assert_eq!(get(&pass, "if-none-match"), ["\"a\""]);
        let v6 = forwarded(&req, Some("::1".parse().unwrap()), false, false);
        assert_eq!(get(&v6, "forwarded"), ["for=\"[::1]\";proto=http"]);
        let from_peer = forwarded(&req, None, true, true);
        assert_eq!(get(&from_peer, "x-forwarded-for"), ["6.6.6.6"]);
    }
}

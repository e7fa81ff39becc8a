//! Hop-by-hop header fields (RFC 9110 §7.6.1): what a proxy must not forward. The edge
//! strips them from a client's request before the fetch carries it; the origin strips them
//! from an upstream server's response before the edge sees it.

/// Fields that are hop-by-hop whatever `Connection` says (RFC 9110 §7.6.1, and the
/// pre-standard `Keep-Alive` and `Proxy-Connection` every proxy drops too). `Content-Length`
/// is not hop-by-hop, but every hop frames the body itself, so it is not carried either.
const ALWAYS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// The end-to-end fields of a message: `fields` without the hop-by-hop ones, those the
/// message's own `Connection` header names among them. Names come back lower-case.
pub fn end_to_end<'a>(
    fields: impl IntoIterator<Item = (&'a str, &'a str)> + Clone,
) -> Vec<(String, String)> {
    let named: Vec<String> = fields
        .clone()
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    fields
        .into_iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v))
        .filter(|(n, _)| !ALWAYS.contains(&n.as_str()) && !named.contains(n))
        .map(|(n, v)| (n, v.to_string()))
        .collect()
}

/// Whether `name` is always hop-by-hop (or a framing field), whatever `Connection` says.
pub fn is_hop_by_hop(name: &str) -> bool {
    ALWAYS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_fields_and_those_connection_names() {
        let fields = [
            ("Connection", "close, X-Hop"),
            ("X-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("TE", "trailers"),
            ("Content-Length", "12"),
            ("Cache-Control", "max-age=60"),
            ("X-End", "kept"),
            ("Set-Cookie", "a=1"),
        ];
        let kept = end_to_end(fields.iter().map(|(n, v)| (*n, *v)));
        assert_eq!(
            kept,
            vec![
                ("cache-control".to_string(), "max-age=60".to_string()),
                ("x-end".into(), "kept".into()),
                ("set-cookie".into(), "a=1".into()),
            ]
        );
        assert!(is_hop_by_hop("Upgrade") && !is_hop_by_hop("etag"));
    }
}

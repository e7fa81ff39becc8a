//! Phase 1, **validate**: refuse what must not reach the cache (methods other than GET and
//! HEAD — but PUT and DELETE on an edge with a write token, and any method on one that
//! passes them through —, oversized targets and
//! headers, bodies on reads, ambiguous Host, unsafe paths) and pull out the facts the later
//! phases need.

use axum::http::{HeaderMap, Method, Uri, header};

use crate::error::EdgeError;

const MAX_URI: usize = 8 * 1024;
const MAX_HEADER_BYTES: usize = 32 * 1024;
const MAX_HEADERS: usize = 100;

/// What a valid request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The Host (or the absolute URI's authority).
    pub(crate) host: String,
    /// Path and query as received.
    pub(crate) path_and_query: String,
    /// The path, percent-decoded once and checked: what path rules (signed prefixes) see.
    pub(crate) path: String,
    /// The request carries `Authorization` (RFC 9111 §3.5 limits storing its response).
    pub(crate) authorized: bool,
}

/// Which methods other than GET and HEAD an edge takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Methods {
    /// PUT and DELETE, as writes to Shoal's origin (the edge has a write token).
    pub(crate) writes: bool,
    /// Every other method, passed through to the origin's upstream.
    pub(crate) pass: bool,
}

/// Checks a request head. GET and HEAD must carry no body; PUT and DELETE pass only when
/// the edge takes writes, other methods only when it passes them through, and the write
/// and pass phases check the rest.
pub(crate) fn request(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    methods: Methods,
) -> Result<Target, EdgeError> {
    let read = method == Method::GET || method == Method::HEAD;
    let write = *method == Method::PUT || *method == Method::DELETE;
    if !(read || (methods.writes && write) || methods.pass) {
        return Err(EdgeError::MethodNotAllowed(method.to_string()));
    }
    let uri_len = uri.path_and_query().map_or(0, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    if uri_len > MAX_URI {
        return Err(EdgeError::UriTooLong(MAX_URI));
    }
    let header_bytes: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES || headers.len() > MAX_HEADERS {
        return Err(EdgeError::HeadersTooLarge {
            fields: MAX_HEADERS,
            bytes: MAX_HEADER_BYTES,
        });
    }
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body && read {
        return Err(EdgeError::BadRequest(
            "GET and HEAD requests must not carry a body".into(),
        ));
    }
    // Duplicate Host headers are refused whatever the target (two layers could pick
    // different ones); an absolute-form target's authority wins over Host (RFC 9112 §3.2.2).
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next(), uri.authority()) {
        (Some(_), Some(_), _) => {
            return Err(EdgeError::BadRequest("more than one Host header".into()));
        }
        (_, _, Some(a)) => a.as_str().to_string(),
        (Some(h), None, None) => h
            .to_str()
            .map_err(|_| EdgeError::BadRequest("Host header is not visible ASCII".into()))?
            .to_string(),
        (None, _, None) => return Err(EdgeError::BadRequest("missing Host header".into())),
    };
    let path = shoal_cache_core::normalise_path(uri.path())
        .map_err(|e| EdgeError::BadRequest(e.to_string()))?;
    Ok(Target {
        host,
        path,
        path_and_query: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_string(), |p| p.as_str().to_string()),
        authorized: headers.contains_key(header::AUTHORIZATION),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: &str, uri: &str, headers: &[(&str, &str)]) -> Result<Target, EdgeError> {
        let mut h = HeaderMap::new();
        for (n, v) in headers {
            h.append(n.parse::<header::HeaderName>().unwrap(), v.parse().unwrap());
        }
        request(&method.parse().unwrap(), &uri.parse().unwrap(), &h, NONE)
    }

    const NONE: Methods = Methods {
        writes: false,
        pass: false,
    };
    const WRITES: Methods = Methods {
        writes: true,
        pass: false,
    };

    /// Method, target, headers, expected status.
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], u16);

    #[test]
    fn refuses_what_must_not_reach_the_cache() {
        let host = [("host", "a.test")];
        let cases: [Case<'_>; 8] = [
            ("POST", "/x", &host, 405),
            ("GET", "/x", &[], 400),
            ("GET", "/x", &[("host", "a"), ("host", "b")], 400),
            ("GET", "/x", &[("host", "a"), ("content-length", "3")], 400),
            (
                "GET",
                "/x",
                &[("host", "a"), ("transfer-encoding", "chunked")],
                400,
            ),
            ("GET", "/a/../b", &host, 400),
            ("GET", "/a%2fb", &host, 400),
            ("GET", &format!("/{}", "a".repeat(9000)), &host, 414),
        ];
        for (m, uri, headers, status) in cases {
            let e = check(m, uri, headers).unwrap_err();
            assert_eq!(e.status().as_u16(), status, "{m} {uri}: {e}");
        }
        let many: Vec<(String, String)> =
            (0..101).map(|i| (format!("x-{i}"), "v".into())).collect();
        let mut refs: Vec<(&str, &str)> =
            many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        refs.push(("host", "a"));
        assert_eq!(check("GET", "/", &refs).unwrap_err().status().as_u16(), 431);
        // Writes pass only on an edge that takes them, and may carry a body.
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "a".parse().unwrap());
        h.insert(header::CONTENT_LENGTH, "3".parse().unwrap());
        let put: Method = "PUT".parse().unwrap();
        let uri: Uri = "/x".parse().unwrap();
        assert_eq!(
            request(&put, &uri, &h, NONE).unwrap_err().status().as_u16(),
            405
        );
        assert!(request(&put, &uri, &h, WRITES).is_ok());
        let post: Method = "POST".parse().unwrap();
        assert_eq!(
            request(&post, &uri, &h, WRITES)
                .unwrap_err()
                .status()
                .as_u16(),
            405
        );
        // A passing edge takes any method, with a body.
        let pass = Methods {
            writes: false,
            pass: true,
        };
        assert!(request(&post, &uri, &h, pass).is_ok());
        let purge: Method = "PURGE".parse().unwrap();
        assert!(request(&purge, &uri, &h, pass).is_ok());
    }

    #[test]
    fn extracts_host_target_and_authorization() {
        let t = check(
            "HEAD",
            "/a?b=1",
            &[("host", "a.test"), ("authorization", "Bearer x")],
        )
        .unwrap();
        assert_eq!(
            t,
            Target {
                host: "a.test".into(),
                path_and_query: "/a?b=1".into(),
                path: "/a".into(),
                authorized: true
            }
        );
        let t = check("GET", "http://b.test/p", &[]).unwrap();
        assert_eq!((t.host.as_str(), t.authorized), ("b.test", false));
        // Absolute form: the target's authority, not Host, names the object.
        let t = check("GET", "http://b.test/p", &[("host", "evil.test")]).unwrap();
        assert_eq!(t.host, "b.test");
    }
}

//! CTA-5004 Common Media Client Data: what a player tells its CDN with each request.
//!
//! A player sends CMCD as one query parameter (`CMCD=<percent-encoded value>`) or as four
//! headers (`CMCD-Object`, `CMCD-Request`, `CMCD-Session`, `CMCD-Status`); either way the
//! value is a structured-field dictionary (RFC 9651), parsed here with the `sfv` crate.
//! Shoal reads the keys a cache can act on — above all `nor`, the next object the player
//! will request — and writes the same keys for its own player. Keys it does not know are
//! ignored, as CTA-5004 requires.

use sfv::{DictSerializer, Dictionary, KeyRef, ListEntry, Parser, StringRef, TokenRef};

use crate::error::CmcdError;
use crate::key::canonical_path;

/// The query parameter carrying CMCD.
pub const QUERY_PARAM: &str = "CMCD";

/// The request headers carrying CMCD, by the keys' persistence class.
pub const HEADERS: [&str; 4] = ["cmcd-object", "cmcd-request", "cmcd-session", "cmcd-status"];

/// What an object is (`ot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    /// A manifest or playlist (`m`).
    Manifest,
    /// Video only, or muxed audio and video (`v`, `av`).
    Video,
    /// An initialisation segment (`i`).
    Init,
    /// Anything else CTA-5004 names (`a`, `c`, `tt`, `k`, `o`).
    Other,
}

impl ObjectType {
    fn token(self) -> &'static str {
        match self {
            Self::Manifest => "m",
            Self::Video => "v",
            Self::Init => "i",
            Self::Other => "o",
        }
    }
}

/// The CMCD keys Shoal reads and writes. Times in milliseconds, rates in kbit/s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmcd {
    /// Buffer length (`bl`), ms.
    pub buffer_ms: Option<u64>,
    /// Encoded bitrate of the object (`br`), kbit/s.
    pub bitrate_kbps: Option<u64>,
    /// Object duration (`d`), ms.
    pub duration_ms: Option<u64>,
    /// Measured throughput (`mtp`), kbit/s.
    pub throughput_kbps: Option<u64>,
    /// Next object request (`nor`): a URL relative to this request's.
    pub next: Option<String>,
    /// Object type (`ot`).
    pub object: Option<ObjectType>,
    /// Session id (`sid`).
    pub session: Option<String>,
    /// Startup: the object is needed urgently (`su`).
    pub startup: bool,
    /// Top bitrate the player may choose (`tb`), kbit/s.
    pub top_kbps: Option<u64>,
}

impl Cmcd {
    /// Parses one dictionary (a header's value, or the decoded query value). Unknown keys
    /// are skipped; a known key with a value of the wrong type is an error.
    pub fn parse(value: &str) -> Result<Self, CmcdError> {
        let mut c = Self::default();
        c.merge(value)?;
        Ok(c)
    }

    fn merge(&mut self, value: &str) -> Result<(), CmcdError> {
        let dict: Dictionary = Parser::new(value)
            .parse()
            .map_err(|e| CmcdError::Syntax(e.to_string()))?;
        for (key, entry) in &dict {
            let ListEntry::Item(item) = entry else {
                continue;
            };
            let v = &item.bare_item;
            let int = || {
                v.as_integer()
                    .and_then(|i| u64::try_from(i64::from(i)).ok())
                    .ok_or_else(|| CmcdError::Value(key.as_str().to_string()))
            };
            let string = || {
                v.as_string()
                    .map(|s| s.as_str().to_string())
                    .ok_or_else(|| CmcdError::Value(key.as_str().to_string()))
            };
            match key.as_str() {
                "bl" => self.buffer_ms = Some(int()?),
                "br" => self.bitrate_kbps = Some(int()?),
                "d" => self.duration_ms = Some(int()?),
                "mtp" => self.throughput_kbps = Some(int()?),
                "tb" => self.top_kbps = Some(int()?),
                "nor" => self.next = Some(string()?),
                "sid" => self.session = Some(string()?),
                "su" => {
                    self.startup = v
                        .as_boolean()
                        .ok_or_else(|| CmcdError::Value("su".into()))?;
                }
                "ot" => {
                    let t = v.as_token().ok_or_else(|| CmcdError::Value("ot".into()))?;
                    self.object = Some(match t.as_str() {
                        "m" => ObjectType::Manifest,
                        "v" | "av" => ObjectType::Video,
                        "i" => ObjectType::Init,
                        _ => ObjectType::Other,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The CMCD of a request: the `CMCD` query parameter if there is one, else the CMCD
    /// headers (`header` looks one up by its lower-case name). `Ok(None)`: the request
    /// carries none.
    pub fn from_request<'a>(
        query: Option<&str>,
        header: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Option<Self>, CmcdError> {
        let param = query.into_iter().flat_map(|q| q.split('&')).find_map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            (name == QUERY_PARAM).then_some(value)
        });
        if let Some(raw) = param {
            let value = percent_encoding::percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| CmcdError::Syntax("query value is not UTF-8".into()))?;
            return Self::parse(&value).map(Some);
        }
        let mut found = None;
        for name in HEADERS {
            if let Some(v) = header(name) {
                found.get_or_insert_with(Self::default).merge(v)?;
            }
        }
        Ok(found)
    }

    /// The dictionary, keys in alphabetical order and without spaces, as CTA-5004 asks
    /// (each member is serialised by `sfv`; RFC 9651 would put a space after each comma).
    pub fn to_value(&self) -> String {
        fn member(
            key: &'static str,
            put: impl FnOnce(&mut DictSerializer<String>, &KeyRef),
        ) -> String {
            let mut ser = DictSerializer::new();
            put(&mut ser, KeyRef::constant(key));
            ser.finish().unwrap_or_default()
        }
        let int = |key: &'static str, v: Option<u64>| {
            v.and_then(|v| sfv::Integer::try_from(v.min(999_999_999_999_999)).ok())
                .map(|i| member(key, |s, k| _ = s.bare_item(k, i)))
        };
        let string = |key: &'static str, v: Option<&str>| {
            v.and_then(|v| StringRef::from_str(v).ok())
                .map(|v| member(key, |s, k| _ = s.bare_item(k, v)))
        };
        let token = |key: &'static str, v: Option<&'static str>| {
            v.map(|v| member(key, |s, k| _ = s.bare_item(k, TokenRef::constant(v))))
        };
        let members = [
            int("bl", self.buffer_ms),
            int("br", self.bitrate_kbps),
            int("d", self.duration_ms),
            int("mtp", self.throughput_kbps),
            string("nor", self.next.as_deref()),
            token("ot", self.object.map(ObjectType::token)),
            token("sf", Some("h")),
            string("sid", self.session.as_deref()),
            self.startup
                .then(|| member("su", |s, k| _ = s.bare_item(k, true))),
            int("tb", self.top_kbps),
        ];
        members.into_iter().flatten().collect::<Vec<_>>().join(",")
    }

    /// `CMCD=<value>`, percent-encoded for a query string.
    pub fn to_query(&self) -> String {
        let v = percent_encoding::utf8_percent_encode(&self.to_value(), QUERY_VALUE).to_string();
        format!("{QUERY_PARAM}={v}")
    }
}

/// What a CMCD query value must encode (`encodeURIComponent`'s set).
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// The path and query `nor` names, resolved against the path of the request that carried
/// it (RFC 3986 §5.2, for the relative references players send). `None` for an absolute
/// URL (Shoal never fetches another host on a client's word) or a path that does not
/// normalise.
pub fn resolve_next(request_path: &str, next: &str) -> Option<String> {
    if next.contains("://") || next.starts_with("//") || next.is_empty() {
        return None;
    }
    let (path, query) = match next.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (next, None),
    };
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        let dir = &request_path[..request_path.rfind('/').map_or(0, |i| i + 1)];
        format!("{}{path}", if dir.is_empty() { "/" } else { dir })
    };
    // Dot segments, as a browser would remove them, before the one canonical form.
    let mut out: Vec<&str> = Vec::new();
    for seg in joined.split('/').skip(1) {
        match seg {
            "." => {}
            ".." => {
                out.pop()?;
            }
            s => out.push(s),
        }
    }
    let path = canonical_path(&format!("/{}", out.join("/"))).ok()?;
    Some(match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_value_round_trips_with_its_keys_in_order() {
        let c = Cmcd {
            buffer_ms: Some(12_000),
            bitrate_kbps: Some(2_500),
            duration_ms: Some(2_000),
            throughput_kbps: Some(25_400),
            next: Some("seg_00004.ts".into()),
            object: Some(ObjectType::Video),
            session: Some("6e2fb550-c457-11e9-bb97-0800200c9a66".into()),
            startup: true,
            top_kbps: Some(5_000),
        };
        assert_eq!(
            c.to_value(),
            "bl=12000,br=2500,d=2000,mtp=25400,nor=\"seg_00004.ts\",ot=v,sf=h,\
             sid=\"6e2fb550-c457-11e9-bb97-0800200c9a66\",su,tb=5000"
        );
        let q = c.to_query();
        assert!(q.starts_with("CMCD=bl%3D12000%2Cbr%3D2500"), "{q}");
        let back = Cmcd::from_request(Some(&format!("a=1&{q}")), |_| None).unwrap();
        assert_eq!(back, Some(c));
    }

    #[test]
    fn headers_are_merged_and_unknown_keys_ignored() {
        let headers = [
            ("cmcd-object", "br=800,d=2000,ot=v"),
            (
                "cmcd-request",
                "bl=2100,nor=\"../720p/seg_00001.ts\",nrr=\"0-99\"",
            ),
            ("cmcd-session", "sf=d,sid=\"x\",v=1"),
        ];
        let c = Cmcd::from_request(None, |n| {
            headers.iter().find(|(h, _)| *h == n).map(|(_, v)| *v)
        })
        .unwrap()
        .unwrap();
        assert_eq!(c.bitrate_kbps, Some(800));
        assert_eq!(c.buffer_ms, Some(2100));
        assert_eq!(c.next.as_deref(), Some("../720p/seg_00001.ts"));
        assert_eq!(c.session.as_deref(), Some("x"));
        assert_eq!(Cmcd::from_request(Some("a=1"), |_| None).unwrap(), None);
    }

    #[test]
    fn bad_values_are_errors_that_name_the_key() {
        assert_eq!(
            Cmcd::parse("br=\"fast\""),
            Err(CmcdError::Value("br".into()))
        );
        assert_eq!(Cmcd::parse("bl=-5"), Err(CmcdError::Value("bl".into())));
        assert!(matches!(
            Cmcd::parse("nor=\"unterminated"),
            Err(CmcdError::Syntax(_))
        ));
        assert!(matches!(
            Cmcd::from_request(Some("CMCD=%ff"), |_| None),
            Err(CmcdError::Syntax(_))
        ));
    }

    #[test]
    fn next_requests_resolve_relative_to_the_request_and_never_leave_the_host() {
        let base = "/video/vod/720p/seg_00003.ts";
        for (nor, want) in [
            ("seg_00004.ts", Some("/video/vod/720p/seg_00004.ts")),
            (
                "../1080p/seg_00004.ts",
                Some("/video/vod/1080p/seg_00004.ts"),
            ),
            (
                "./seg_00004.ts?x=1",
                Some("/video/vod/720p/seg_00004.ts?x=1"),
            ),
            ("/other/a.ts", Some("/other/a.ts")),
            ("../../../../../etc/passwd", None),
            ("https://evil.test/a.ts", None),
            ("//evil.test/a.ts", None),
            ("", None),
        ] {
            assert_eq!(resolve_next(base, nor).as_deref(), want, "{nor}");
        }
    }
}

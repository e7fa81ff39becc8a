//! `Vary` (RFC 9111 §4.1): a response that varies is stored under a **secondary key**, the
//! primary key plus the request's values of the fields the response names, so a later
//! request is served a stored variant only when those fields match.
//!
//! A secondary key is the primary key, [`VARIANT_SEP`], and one `name=value` member per
//! field (in the order the response names them, values normalised as §4.1 allows:
//! whitespace collapsed, and `Accept-Encoding`/`Accept-Language` reduced to what they
//! accept, lower-case and sorted),
//! an absent field spelt `name!`. Purges and routing see only the primary key
//! ([`primary`]).

/// Separates a secondary key's primary key from its variant: a control character, which a
/// request target cannot carry.
pub const VARIANT_SEP: char = '\u{1f}';

/// What a response's `Vary` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vary {
    /// No `Vary` (or only empty ones): one response serves every request.
    None,
    /// `Vary: *`: no later request can be matched; never reused.
    Any,
    /// The fields (lower-case, duplicates removed, in the order named).
    Fields(Vec<String>),
}

/// Parses the `Vary` lines among `headers`.
pub fn of(headers: &[(String, String)]) -> Vary {
    let mut fields: Vec<String> = Vec::new();
    for v in crate::freshness::header_values(headers, "vary") {
        for f in v.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            if f == "*" {
                return Vary::Any;
            }
            let f = f.to_ascii_lowercase();
            if !fields.contains(&f) {
                fields.push(f);
            }
        }
    }
    if fields.is_empty() {
        Vary::None
    } else {
        Vary::Fields(fields)
    }
}

/// The primary key of `key` (itself, if it is not a secondary key).
pub fn primary(key: &str) -> &str {
    key.split(VARIANT_SEP).next().unwrap_or(key)
}

/// The secondary key of `primary` for a request with `request` headers (names compared
/// case-insensitively), varying on `fields`.
pub fn secondary<'a>(
    primary: &str,
    fields: &[String],
    request: impl Iterator<Item = (&'a str, &'a str)> + Clone,
) -> String {
    let mut key = String::with_capacity(primary.len() + 16 * fields.len());
    key.push_str(primary);
    key.push(VARIANT_SEP);
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            key.push('&');
        }
        let values: Vec<&str> = request
            .clone()
            .filter(|(n, _)| n.eq_ignore_ascii_case(f))
            .map(|(_, v)| v)
            .collect();
        key.push_str(f);
        if values.is_empty() {
            key.push('!');
            continue;
        }
        key.push('=');
        if f == "accept-encoding" || f == "accept-language" {
            key.push_str(&accepted(&values));
        } else {
            // Combined lines and collapsed whitespace: `a,  b` and two lines `a` `b` match.
            let joined = values
                .iter()
                .flat_map(|v| v.split(','))
                .map(|m| m.split_whitespace().collect::<Vec<_>>().join(" "))
                .filter(|m| !m.is_empty())
                .collect::<Vec<_>>()
                .join(",");
            key.push_str(&joined);
        }
    }
    key
}

/// What an `Accept-Encoding` or `Accept-Language` accepts (q > 0), lower-case and sorted,
/// so `gzip, br` and `br;q=1, gzip` (or `en, de` and `De, en`) are one variant.
fn accepted(values: &[&str]) -> String {
    let mut out: Vec<String> = values
        .iter()
        .flat_map(|v| v.split(','))
        .filter_map(|m| {
            let mut parts = m.split(';');
            let coding = parts.next()?.trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (!coding.is_empty() && !refused).then_some(coding)
        })
        .collect();
    out.sort();
    out.dedup();
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::freshness::tests::h;

    fn key(fields: &[&str], req: &[(&str, &str)]) -> String {
        let fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
        secondary("a.test/p", &fields, req.iter().copied())
    }

    #[test]
    fn parses_vary_lines() {
        assert_eq!(of(&h(&[])), Vary::None);
        assert_eq!(of(&h(&[("vary", " ")])), Vary::None);
        assert_eq!(of(&h(&[("vary", "Foo, *")])), Vary::Any);
        assert_eq!(
            of(&h(&[("Vary", "Foo, bar"), ("vary", "FOO, Baz")])),
            Vary::Fields(vec!["foo".into(), "bar".into(), "baz".into()])
        );
    }

    #[test]
    fn secondary_keys_match_only_when_the_named_fields_do() {
        let a = key(&["foo"], &[("Foo", "1"), ("Other", "x")]);
        assert_eq!(a, key(&["foo"], &[("foo", "1"), ("Other", "y")]));
        assert_ne!(a, key(&["foo"], &[("foo", "2")]));
        // Absent differs from empty and from any value.
        assert_ne!(key(&["foo"], &[]), key(&["foo"], &[("foo", "")]));
        // Whitespace and line splits are normalised.
        assert_eq!(
            key(&["foo"], &[("foo", "a,  b")]),
            key(&["foo"], &[("foo", "a"), ("foo", "b")])
        );
        assert_eq!(
            key(&["accept-encoding"], &[("accept-encoding", "gzip, br")]),
            key(
                &["accept-encoding"],
                &[("accept-encoding", "BR;q=1,gzip, zstd;q=0")]
            )
        );
        assert_eq!(
            key(&["accept-language"], &[("accept-language", "en, de")]),
            key(&["accept-language"], &[("Accept-Language", " De ,eN")])
        );
        assert_eq!(primary(&a), "a.test/p");
        assert_eq!(primary("a.test/p?x=1"), "a.test/p?x=1");
    }
}

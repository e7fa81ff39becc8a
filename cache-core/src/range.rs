//! `Range` requests (RFC 9110 §14) against a stored representation of known length.
//!
//! Choices, as in nginx and Varnish: one satisfiable range → 206; a syntactically malformed
//! `bytes=` range → 416; an unknown range unit → ignored (200, as the RFC allows). Several
//! ranges → the full representation with 200 (no multipart/byteranges: players send one
//! range, and answering many ranges is an amplification vector); more than
//! [`MAX_RANGES`] specs are rejected as malformed.

/// Most range specs looked at in one header.
pub const MAX_RANGES: usize = 16;

/// What to send for a Range header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOutcome {
    /// Ignore the header: send everything (200).
    Full,
    /// Send bytes `start..=end` (206).
    Single {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// No range overlaps the representation (416).
    Unsatisfiable,
    /// The header is malformed (416).
    Invalid,
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Interprets `header` for a representation of `len` bytes.
pub fn parse(header: &str, len: u64) -> RangeOutcome {
    let Some((unit, specs)) = header.split_once('=') else {
        return RangeOutcome::Invalid;
    };
    if !unit.eq_ignore_ascii_case("bytes") {
        return if unit.trim().eq_ignore_ascii_case("bytes") {
            RangeOutcome::Invalid // "bytes =0-9": whitespace where none is allowed
        } else {
            RangeOutcome::Full // unknown unit
        };
    }
    let mut ranges = Vec::new();
    for spec in specs.split(',').map(str::trim) {
        if ranges.len() == MAX_RANGES {
            return RangeOutcome::Invalid;
        }
        let Some((a, b)) = spec.split_once('-') else {
            return RangeOutcome::Invalid;
        };
        let r = match (a.is_empty(), b.is_empty()) {
            (true, true) => return RangeOutcome::Invalid,
            (true, false) => {
                let Some(n) = digits(b) else {
                    return RangeOutcome::Invalid;
                };
                // Suffix: the last n bytes.
                (n > 0 && len > 0).then(|| (len.saturating_sub(n), len - 1))
            }
            (false, _) => {
                let Some(start) = digits(a) else {
                    return RangeOutcome::Invalid;
                };
                let end = if b.is_empty() {
                    u64::MAX
                } else {
                    match digits(b) {
                        Some(e) if e >= start => e,
                        _ => return RangeOutcome::Invalid,
                    }
                };
                (start < len).then(|| (start, end.min(len - 1)))
            }
        };
        ranges.push(r);
    }
    let satisfiable: Vec<(u64, u64)> = ranges.into_iter().flatten().collect();
    match satisfiable.as_slice() {
        [] => RangeOutcome::Unsatisfiable,
        [(start, end)] => RangeOutcome::Single {
            start: *start,
            end: *end,
        },
        _ => RangeOutcome::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::RangeOutcome::*;
    use super::*;

    #[test]
    fn ranges() {
        let s = |start, end| Single { start, end };
        assert_eq!(parse("bytes=0-9", 100), s(0, 9));
        assert_eq!(parse("bytes=90-", 100), s(90, 99));
        assert_eq!(parse("bytes=90-200", 100), s(90, 99));
        assert_eq!(parse("bytes=-10", 100), s(90, 99));
        assert_eq!(parse("bytes=-1000", 100), s(0, 99));
        assert_eq!(parse("Bytes=0-0", 1), s(0, 0));
        assert_eq!(parse("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse("bytes=0-0", 0), Unsatisfiable);
        assert_eq!(parse("bytes=0-1,5-6", 100), Full);
        assert_eq!(parse("bytes=0-1,200-300", 100), s(0, 1));
        assert_eq!(parse("items=0-1", 100), Full);
        for bad in [
            "bytes =0-9",
            "bytes=alpha",
            "bytes=10-5",
            "bytes=10",
            "bytes=",
            "bytes=-",
            "bytes=+1-2",
            "bytes=0x1-2",
            "nonsense",
        ] {
            assert_eq!(parse(bad, 100), Invalid, "{bad}");
        }
        let many = format!("bytes={}", vec!["0-"; 1000].join(","));
        assert_eq!(parse(&many, 100), Invalid);
    }
}

//! Request traces in the format of `../shared/traces/README.md`: CSV lines
//! `timestamp,object_id,size`, optionally gzip-compressed, one request per line in replay
//! order, with an optional header line.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use crate::LoadgenError;

/// One request, with the object renumbered densely (0..distinct) for fast replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Dense object index.
    pub object: u32,
    /// Object size in bytes (≥ 1).
    pub size: u64,
}

/// A loaded trace.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Where it came from (file name).
    pub name: String,
    /// Requests in order.
    pub requests: Vec<Request>,
    /// Size of each distinct object, by dense index.
    pub object_sizes: Vec<u64>,
    /// Each request's timestamp (seconds, or the trace's own ordinal; see its README).
    pub times: Vec<u64>,
}

impl Trace {
    /// Reads a trace file; gzip is recognised by its magic bytes.
    pub fn load(path: &Path) -> Result<Self, LoadgenError> {
        let p = path.display().to_string();
        let io = |source| LoadgenError::Io {
            path: p.clone(),
            source,
        };
        let raw = std::fs::read(path).map_err(io)?;
        let text = if raw.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::with_capacity(raw.len() * 4);
            flate2::read::MultiGzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .map_err(io)?;
            out
        } else {
            raw
        };
        let name = path
            .file_name()
            .map_or_else(|| p.clone(), |n| n.to_string_lossy().into_owned());
        Self::parse(&name, &text)
    }

    /// Parses trace text.
    pub fn parse(name: &str, text: &[u8]) -> Result<Self, LoadgenError> {
        let mut t = Self {
            name: name.to_string(),
            ..Self::default()
        };
        let mut ids: HashMap<u64, u32> = HashMap::new();
        for (i, line) in text.split(|&b| b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            let err = |reason: String| LoadgenError::Parse {
                path: name.to_string(),
                line: i + 1,
                reason,
            };
            let mut fields = line.split(|&b| b == b',');
            let (Some(ts), Some(id), Some(size), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(err("expected 3 fields: timestamp,object_id,size".into()));
            };
            let (Some(id), Some(size)) = (parse_u64(id), parse_u64(size)) else {
                if i == 0 {
                    continue; // header line
                }
                return Err(err(format!(
                    "object_id and size must be unsigned integers, got {:?}",
                    String::from_utf8_lossy(line)
                )));
            };
            if size == 0 {
                return Err(err("size must be at least 1".into()));
            }
            let next = ids.len();
            let object = *ids.entry(id).or_insert_with(|| next as u32);
            if object as usize == t.object_sizes.len() {
                t.object_sizes.push(size);
            }
            t.requests.push(Request { object, size });
            // An unreadable timestamp repeats the previous one (they are informational).
            let at = parse_u64(ts).unwrap_or_else(|| t.times.last().copied().unwrap_or(0));
            t.times.push(at);
        }
        if t.requests.is_empty() {
            return Err(LoadgenError::EmptyTrace(name.to_string()));
        }
        Ok(t)
    }

    /// Sum of the sizes of the distinct objects.
    pub fn unique_bytes(&self) -> u64 {
        self.object_sizes.iter().sum()
    }

    /// Number of distinct objects.
    pub fn distinct_objects(&self) -> u64 {
        self.object_sizes.len() as u64
    }
}

fn parse_u64(field: &[u8]) -> Option<u64> {
    let field = field.trim_ascii();
    if field.is_empty() || field.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in field {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renumbers() {
        let t = Trace::parse(
            "t",
            b"timestamp,object_id,size\n1,99,10\r\n2,7,5\n3,99,10\n\n",
        )
        .unwrap();
        assert_eq!(
            t.requests,
            vec![
                Request {
                    object: 0,
                    size: 10
                },
                Request { object: 1, size: 5 },
                Request {
                    object: 0,
                    size: 10
                }
            ]
        );
        assert_eq!(t.unique_bytes(), 15);
        assert_eq!(t.distinct_objects(), 2);
    }

    #[test]
    fn bad_lines_name_the_line() {
        let e = Trace::parse("t", b"1,2,3\n1,x,3\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "t:2: object_id and size must be unsigned integers, got \"1,x,3\""
        );
        assert!(
            Trace::parse("t", b"1,2\n")
                .unwrap_err()
                .to_string()
                .contains("3 fields")
        );
        assert!(
            Trace::parse("t", b"1,2,0\n")
                .unwrap_err()
                .to_string()
                .contains("at least 1")
        );
        assert!(Trace::parse("t", b"1,99999999999999999999999,1\n").is_err());
        assert!(matches!(
            Trace::parse("t", b""),
            Err(LoadgenError::EmptyTrace(_))
        ));
    }
}

//! Synthetic adaptive-bitrate ladders: HLS master and media playlists, VOD and live, and
//! segments of exactly the size their bitrate implies whose bodies a client can verify.
//!
//! The origin serves them so that the demo, the tests and load runs need no encoder; the
//! player checks every segment it receives with [`verify_segment`]. A segment body starts
//! with one text line naming the ladder, rendition, index, length and the xxh3 of the
//! rest, which is deterministic filler; it is not decodable media (real media comes from
//! `deploy/media/make-ladder.sh`).
//!
//! Paths under a ladder's root (`/video/<ladder>/`): `master.m3u8`,
//! `<rendition>/index.m3u8` and `<rendition>/seg_<index, 5 digits>.ts`.

use std::fmt::Write;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use crate::size::HumanDuration;

/// Where every ladder is served: `/video/<ladder>/…`.
pub const ROOT: &str = "/video/";
/// Cache-Control of segments (AWS MediaPackage's CDN guidance: 14 days; never change).
pub const SEGMENT_CACHE_CONTROL: &str = "public, max-age=1209600, immutable";
/// Cache-Control of playlists that never change (VOD, and every master playlist).
pub const VOD_PLAYLIST_CACHE_CONTROL: &str = "public, max-age=86400";
/// Media type of playlists.
pub const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
/// Media type of segments.
pub const SEGMENT_TYPE: &str = "video/mp2t";
/// Media type of a DASH MPD.
pub const MPD_TYPE: &str = "application/dash+xml";
const MAGIC: &str = "SHOAL-SEGMENT";
/// The smallest segment (it must hold its header line).
const MIN_SEGMENT: u64 = 256;
/// The largest segment a ladder may imply (a 5 Mb/s rung with 2 s segments is 1.25 MB).
const MAX_SEGMENT: u64 = 64 << 20;

/// Errors of ladder configuration and segment verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VideoError {
    /// A ladder's configuration is invalid.
    #[error("ladder {ladder}: {reason}")]
    Config {
        /// The ladder's name.
        ladder: String,
        /// What is wrong.
        reason: String,
    },
    /// A segment body does not check out.
    #[error("bad segment: {0}")]
    BadSegment(String),
}

/// One rung of a ladder.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rendition {
    /// Name, also its directory (`240p`).
    pub name: String,
    /// Bits per second; a segment is `bandwidth × segment / 8` bytes.
    pub bandwidth: u64,
    /// Width in pixels (announced in the master playlist).
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// A ladder as configured (`[[ladders]]` in the origin's config).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LadderConfig {
    /// Name, also its directory under [`ROOT`].
    pub name: String,
    /// Rungs, lowest first. Default: the four of `shared/docs/VIDEO.md` (400 kb/s 240p to
    /// 5 Mb/s 1080p).
    #[serde(default = "default_renditions")]
    pub renditions: Vec<Rendition>,
    /// Segment duration. Default 2 s.
    #[serde(default = "default_segment")]
    pub segment: HumanDuration,
    /// VOD length, rounded up to whole segments. Default 60 s. Ignored when `live`.
    #[serde(default = "default_length")]
    pub length: HumanDuration,
    /// A live stream: the media playlists' window slides in real time.
    #[serde(default)]
    pub live: bool,
    /// Segments in a live media playlist (at least 3, RFC 8216 §6.2.2). Default 6.
    #[serde(default = "default_window")]
    pub window: u64,
}

fn default_renditions() -> Vec<Rendition> {
    [
        ("240p", 400_000, 426, 240),
        ("360p", 800_000, 640, 360),
        ("720p", 2_500_000, 1280, 720),
        ("1080p", 5_000_000, 1920, 1080),
    ]
    .into_iter()
    .map(|(n, b, w, h)| Rendition {
        name: n.into(),
        bandwidth: b,
        width: w,
        height: h,
    })
    .collect()
}

fn default_segment() -> HumanDuration {
    HumanDuration::secs(2)
}

fn default_length() -> HumanDuration {
    HumanDuration::secs(60)
}

fn default_window() -> u64 {
    6
}

impl LadderConfig {
    /// A ladder with every default but its name.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.into(),
            renditions: default_renditions(),
            segment: default_segment(),
            length: default_length(),
            live: false,
            window: default_window(),
        }
    }
}

/// What a path under a ladder names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `master.m3u8`.
    Master,
    /// `manifest.mpd`: the same ladder as a DASH MPD (SegmentTemplate, MPEG-2 TS).
    Mpd,
    /// `<rendition>/index.m3u8`: the rendition's index.
    Media(usize),
    /// `<rendition>/seg_<n>.ts`: rendition and segment index.
    Segment(usize, u64),
}

/// A generated object.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The body.
    pub body: Bytes,
    /// Media type.
    pub content_type: &'static str,
    /// Cache-Control to serve it with.
    pub cache_control: String,
    /// Its version: 1 for what never changes; for a live media playlist, the time (µs
    /// since the stream's zero) its newest segment completed, so it rises with every
    /// update and is the same on every origin.
    pub version: u64,
}

/// A validated ladder.
#[derive(Debug, Clone)]
pub struct Ladder {
    cfg: LadderConfig,
}

fn is_segment_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Ladder {
    /// Checks a configuration.
    pub fn new(cfg: LadderConfig) -> Result<Self, VideoError> {
        let bad = |reason: String| VideoError::Config {
            ladder: cfg.name.clone(),
            reason,
        };
        if !is_segment_name(&cfg.name) {
            return Err(bad("the name must be 1–64 of A-Z a-z 0-9 - _".into()));
        }
        if cfg.renditions.is_empty() {
            return Err(bad("no renditions".into()));
        }
        let seg = cfg.segment.get();
        if seg < Duration::from_millis(100) || seg > Duration::from_secs(60) {
            return Err(bad(format!("segment {} is outside 100ms–60s", cfg.segment)));
        }
        if !cfg.live && cfg.length.get() < seg {
            return Err(bad(format!(
                "length {} is shorter than one segment",
                cfg.length
            )));
        }
        if cfg.live && cfg.window < 3 {
            return Err(bad(format!(
                "a live window of {} segments is under 3 (RFC 8216 §6.2.2)",
                cfg.window
            )));
        }
        for (i, r) in cfg.renditions.iter().enumerate() {
            if !is_segment_name(&r.name) {
                return Err(bad(format!(
                    "rendition name {:?} must be 1–64 of A-Z a-z 0-9 - _",
                    r.name
                )));
            }
            if cfg.renditions[..i].iter().any(|o| o.name == r.name) {
                return Err(bad(format!("rendition {} is named twice", r.name)));
            }
            let len = segment_bytes(r.bandwidth, seg);
            if !(MIN_SEGMENT..=MAX_SEGMENT).contains(&len) {
                return Err(bad(format!(
                    "rendition {} implies {len}-byte segments, outside {MIN_SEGMENT}–{MAX_SEGMENT}",
                    r.name
                )));
            }
        }
        Ok(Self { cfg })
    }

    /// The configuration.
    pub fn config(&self) -> &LadderConfig {
        &self.cfg
    }

    /// The ladder's root path, `/video/<name>/`.
    pub fn root(&self) -> String {
        format!("{ROOT}{}/", self.cfg.name)
    }

    /// What `path` (absolute) names in this ladder, if anything.
    pub fn resolve(&self, path: &str) -> Option<Resource> {
        let rest = path
            .strip_prefix(ROOT)?
            .strip_prefix(self.cfg.name.as_str())?
            .strip_prefix('/')?;
        if rest == "master.m3u8" {
            return Some(Resource::Master);
        }
        if rest == "manifest.mpd" {
            return Some(Resource::Mpd);
        }
        let (rendition, file) = rest.split_once('/')?;
        let r = self
            .cfg
            .renditions
            .iter()
            .position(|x| x.name == rendition)?;
        if file == "index.m3u8" {
            return Some(Resource::Media(r));
        }
        let digits = file.strip_prefix("seg_")?.strip_suffix(".ts")?;
        if digits.len() < 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let index = digits.parse().ok()?;
        // One spelling per segment, so one cache entry.
        (segment_name(index) == file).then_some(Resource::Segment(r, index))
    }

    /// Bytes of one segment of rendition `r`.
    pub fn segment_len(&self, r: usize) -> u64 {
        self.cfg
            .renditions
            .get(r)
            .map_or(0, |x| segment_bytes(x.bandwidth, self.cfg.segment.get()))
    }

    /// Segments of a VOD ladder.
    pub fn vod_segments(&self) -> u64 {
        let (len, seg) = (self.cfg.length.get(), self.cfg.segment.get());
        len.as_nanos().div_ceil(seg.as_nanos()) as u64
    }

    /// Segments complete at `elapsed` into the stream; counted from one window before its
    /// zero, so that its first playlist is already full.
    fn live_complete(&self, elapsed: Duration) -> u64 {
        self.cfg.window + (elapsed.as_nanos() / self.cfg.segment.get().as_nanos()) as u64
    }

    /// Whether segment `index` exists at `elapsed` into the stream.
    pub fn exists(&self, index: u64, elapsed: Duration) -> bool {
        if self.cfg.live {
            index < self.live_complete(elapsed)
        } else {
            index < self.vod_segments()
        }
    }

    /// Generates what `res` names at `elapsed` into the stream (the origin uses the time
    /// since the Unix epoch, so every origin and every restart agree on a live window);
    /// `None` for a segment that does not exist (yet).
    pub fn generate(&self, res: Resource, elapsed: Duration) -> Option<Generated> {
        match res {
            Resource::Master => Some(Generated {
                body: Bytes::from(self.master()),
                content_type: PLAYLIST_TYPE,
                cache_control: VOD_PLAYLIST_CACHE_CONTROL.into(),
                version: 1,
            }),
            Resource::Mpd => Some(Generated {
                body: Bytes::from(self.mpd(elapsed)),
                content_type: MPD_TYPE,
                cache_control: self.media_cache_control(),
                version: 1,
            }),
            Resource::Media(r) => {
                let (text, sequence) = self.media(r, elapsed)?;
                let version = if self.cfg.live {
                    let end = sequence + self.cfg.window;
                    (u128::from(end) * self.cfg.segment.get().as_micros()).max(1) as u64
                } else {
                    1
                };
                Some(Generated {
                    body: Bytes::from(text),
                    content_type: PLAYLIST_TYPE,
                    cache_control: self.media_cache_control(),
                    version,
                })
            }
            Resource::Segment(r, index) => {
                if !self.exists(index, elapsed) {
                    return None;
                }
                Some(Generated {
                    body: self.segment(r, index)?,
                    content_type: SEGMENT_TYPE,
                    cache_control: SEGMENT_CACHE_CONTROL.into(),
                    version: 1,
                })
            }
        }
    }

    /// Cache-Control of media playlists: long for VOD; half a segment for live (at least
    /// 1 s, the header's unit), as RFC 8216 §6.3.4's reload cadence and the usual CDN
    /// guidance have it.
    pub fn media_cache_control(&self) -> String {
        if self.cfg.live {
            let half = (self.cfg.segment.get().as_millis() / 2000).max(1);
            format!("public, max-age={half}")
        } else {
            VOD_PLAYLIST_CACHE_CONTROL.into()
        }
    }

    /// The master (multivariant) playlist.
    pub fn master(&self) -> String {
        let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n");
        for r in &self.cfg.renditions {
            let _ = writeln!(
                out,
                "#EXT-X-STREAM-INF:BANDWIDTH={b},AVERAGE-BANDWIDTH={b},RESOLUTION={}x{}\n{}/index.m3u8",
                r.width,
                r.height,
                r.name,
                b = r.bandwidth,
            );
        }
        out
    }

    /// The ladder as a DASH MPD (ISO/IEC 23009-1, MPEG-2 TS simple profile): one adaptation
    /// set, one representation per rendition, a `SegmentTemplate` naming the same segment
    /// files the HLS playlists list. VOD is `static`. Live is `dynamic`: segment `n` is
    /// available `n − window + 1` segment durations after 1970-01-01T00:00:00Z (the stream's
    /// zero, as for HLS), so `startNumber` is the window and the time-shift buffer one
    /// window deep; `publishTime` is `elapsed` after the zero.
    pub fn mpd(&self, elapsed: Duration) -> String {
        let seg_ms = self.cfg.segment.get().as_millis();
        let secs = |ms: u128| format!("PT{}.{:03}S", ms / 1000, ms % 1000);
        let mut out = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" profiles=\"urn:mpeg:dash:profile:mp2t-simple:2011\"",
        );
        let start = if self.cfg.live {
            let window = u128::from(self.cfg.window) * seg_ms;
            let _ = write!(
                out,
                " type=\"dynamic\" availabilityStartTime=\"1970-01-01T00:00:00Z\" publishTime=\"{}\" minimumUpdatePeriod=\"{}\" timeShiftBufferDepth=\"{}\" suggestedPresentationDelay=\"{}\"",
                iso8601(elapsed),
                secs(seg_ms),
                secs(window),
                secs(3 * seg_ms),
            );
            self.cfg.window
        } else {
            let total = u128::from(self.vod_segments()) * seg_ms;
            let _ = write!(
                out,
                " type=\"static\" mediaPresentationDuration=\"{}\"",
                secs(total)
            );
            0
        };
        let _ = write!(
            out,
            " minBufferTime=\"{}\">\n  <Period id=\"0\" start=\"PT0S\">\n    <AdaptationSet contentType=\"video\" mimeType=\"{SEGMENT_TYPE}\" segmentAlignment=\"true\" startWithSAP=\"1\">\n      <SegmentTemplate media=\"$RepresentationID$/seg_$Number%05d$.ts\" startNumber=\"{start}\" duration=\"{seg_ms}\" timescale=\"1000\"/>\n",
            secs(seg_ms)
        );
        for r in &self.cfg.renditions {
            let _ = writeln!(
                out,
                "      <Representation id=\"{}\" bandwidth=\"{}\" width=\"{}\" height=\"{}\"/>",
                r.name, r.bandwidth, r.width, r.height
            );
        }
        out.push_str("    </AdaptationSet>\n  </Period>\n</MPD>\n");
        out
    }

    /// Rendition `r`'s media playlist and its media sequence number.
    pub fn media(&self, r: usize, elapsed: Duration) -> Option<(String, u64)> {
        self.cfg.renditions.get(r)?;
        let seg = self.cfg.segment.get();
        let (first, end) = if self.cfg.live {
            let complete = self.live_complete(elapsed);
            (complete - self.cfg.window, complete)
        } else {
            (0, self.vod_segments())
        };
        let target = seg.as_millis().div_ceil(1000);
        let mut out = format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{first}\n"
        );
        if !self.cfg.live {
            out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n");
        }
        for i in first..end {
            let _ = writeln!(
                out,
                "#EXTINF:{:.3},\n{}",
                seg.as_secs_f64(),
                segment_name(i)
            );
        }
        if !self.cfg.live {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        Some((out, first))
    }

    /// Segment `index` of rendition `r` (whether or not it exists yet).
    pub fn segment(&self, r: usize, index: u64) -> Option<Bytes> {
        let rendition = self.cfg.renditions.get(r)?;
        let len = self.segment_len(r) as usize;
        let seed = xxhash_rust::xxh3::xxh3_64(
            format!("{}/{}/{index}", self.cfg.name, rendition.name).as_bytes(),
        );
        // The header's own length depends on the checksum's, which is fixed (16 hex digits).
        let probe = header(&self.cfg.name, &rendition.name, index, len as u64, 0);
        let mut payload = vec![0u8; len.saturating_sub(probe.len())];
        fill(&mut payload, seed);
        let sum = xxhash_rust::xxh3::xxh3_64(&payload);
        let mut body = header(&self.cfg.name, &rendition.name, index, len as u64, sum).into_bytes();
        body.extend_from_slice(&payload);
        Some(Bytes::from(body))
    }
}

/// `elapsed` after 1970-01-01T00:00:00Z as an ISO 8601 UTC date-time (whole seconds).
fn iso8601(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days to a civil date (H. Hinnant's algorithm), for dates from 1970 on.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `seg_00042.ts`.
pub fn segment_name(index: u64) -> String {
    format!("seg_{index:05}.ts")
}

fn segment_bytes(bandwidth: u64, segment: Duration) -> u64 {
    (u128::from(bandwidth) * segment.as_nanos() / 8 / 1_000_000_000) as u64
}

fn header(ladder: &str, rendition: &str, index: u64, len: u64, sum: u64) -> String {
    format!(
        "{MAGIC} ladder={ladder} rendition={rendition} index={index} length={len} xxh3={sum:016x}\n"
    )
}

/// Deterministic filler (splitmix64), cheap enough to generate per request.
fn fill(buf: &mut [u8], seed: u64) {
    let mut state = seed;
    for chunk in buf.chunks_mut(8) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
}

/// What a verified segment says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Ladder name.
    pub ladder: String,
    /// Rendition name.
    pub rendition: String,
    /// Segment index.
    pub index: u64,
    /// Total length in bytes.
    pub length: u64,
}

/// Checks a segment body: its header line, its length and the checksum of the rest.
pub fn verify_segment(body: &[u8]) -> Result<SegmentInfo, VideoError> {
    let bad = |m: String| VideoError::BadSegment(m);
    let nl = body
        .iter()
        .take(512)
        .position(|&b| b == b'\n')
        .ok_or_else(|| bad("no header line in the first 512 bytes".into()))?;
    let line = std::str::from_utf8(&body[..nl]).map_err(|_| bad("header is not UTF-8".into()))?;
    let mut parts = line.split(' ');
    if parts.next() != Some(MAGIC) {
        return Err(bad(format!("header does not start with {MAGIC}")));
    }
    let mut field = |name: &str| -> Result<&str, VideoError> {
        parts
            .next()
            .and_then(|p| p.strip_prefix(name)?.strip_prefix('='))
            .ok_or_else(|| bad(format!("header has no {name}")))
    };
    let ladder = field("ladder")?.to_string();
    let rendition = field("rendition")?.to_string();
    let index = field("index")?
        .parse()
        .map_err(|_| bad("index is not a number".into()))?;
    let length: u64 = field("length")?
        .parse()
        .map_err(|_| bad("length is not a number".into()))?;
    let sum = u64::from_str_radix(field("xxh3")?, 16).map_err(|_| bad("bad checksum".into()))?;
    if body.len() as u64 != length {
        return Err(bad(format!("{} bytes, header says {length}", body.len())));
    }
    if xxhash_rust::xxh3::xxh3_64(&body[nl + 1..]) != sum {
        return Err(bad(format!(
            "checksum mismatch in {ladder}/{rendition} segment {index}"
        )));
    }
    Ok(SegmentInfo {
        ladder,
        rendition,
        index,
        length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder(live: bool) -> Ladder {
        Ladder::new(LadderConfig {
            live,
            length: HumanDuration::secs(9),
            ..LadderConfig::named("t")
        })
        .unwrap()
    }

    #[test]
    fn segments_have_the_size_their_bitrate_implies_and_verify() {
        let l = ladder(false);
        for (r, bits) in [400_000u64, 800_000, 2_500_000, 5_000_000]
            .iter()
            .enumerate()
        {
            let s = l.segment(r, 3).unwrap();
            assert_eq!(s.len() as u64, bits * 2 / 8);
            let info = verify_segment(&s).unwrap();
            assert_eq!(
                (info.index, info.rendition.as_str()),
                (3, l.config().renditions[r].name.as_str())
            );
        }
        assert_eq!(l.segment(0, 3), l.segment(0, 3), "deterministic");
        assert_ne!(l.segment(0, 3), l.segment(0, 4));
        let mut s = l.segment(1, 0).unwrap().to_vec();
        let last = s.len() - 1;
        s[last] ^= 1;
        assert!(
            matches!(verify_segment(&s), Err(VideoError::BadSegment(m)) if m.contains("checksum"))
        );
        assert!(verify_segment(&s[..100]).is_err());
        assert!(verify_segment(b"GET / HTTP/1.1\r\n").is_err());
    }

    #[test]
    fn paths_resolve_one_spelling_each() {
        let l = ladder(false);
        assert_eq!(l.resolve("/video/t/master.m3u8"), Some(Resource::Master));
        assert_eq!(
            l.resolve("/video/t/720p/index.m3u8"),
            Some(Resource::Media(2))
        );
        assert_eq!(
            l.resolve("/video/t/240p/seg_00012.ts"),
            Some(Resource::Segment(0, 12))
        );
        assert_eq!(
            l.resolve("/video/t/240p/seg_123456.ts"),
            Some(Resource::Segment(0, 123_456))
        );
        for p in [
            "/video/t/240p/seg_012.ts",
            "/video/t/240p/seg_000012.ts",
            "/video/t/240p/seg_+0012.ts",
            "/video/t/999p/index.m3u8",
            "/video/tt/master.m3u8",
            "/video/t/240p/index.m3u8/x",
        ] {
            assert_eq!(l.resolve(p), None, "{p}");
        }
    }

    #[test]
    fn vod_playlists_list_every_segment_and_end() {
        let l = ladder(false);
        assert_eq!(l.vod_segments(), 5, "9 s in 2 s segments, rounded up");
        let (m, seq) = l.media(0, Duration::from_secs(1000)).unwrap();
        assert_eq!(seq, 0);
        assert_eq!(m.matches("#EXTINF:2.000,").count(), 5);
        assert!(m.contains("seg_00004.ts") && !m.contains("seg_00005.ts"));
        assert!(m.ends_with("#EXT-X-ENDLIST\n"));
        assert!(
            l.generate(Resource::Segment(0, 5), Duration::ZERO)
                .is_none()
        );
        assert_eq!(l.master().matches("#EXT-X-STREAM-INF").count(), 4);
    }

    #[test]
    fn a_live_window_slides_in_real_time() {
        let l = ladder(true);
        let (m0, s0) = l.media(1, Duration::from_millis(500)).unwrap();
        assert_eq!(s0, 0);
        assert_eq!(m0.matches("#EXTINF").count(), 6);
        assert!(!m0.contains("ENDLIST"));
        let (m1, s1) = l.media(1, Duration::from_millis(4100)).unwrap();
        assert_eq!(s1, 2, "two segments later");
        assert!(m1.contains("#EXT-X-MEDIA-SEQUENCE:2\n") && m1.contains("seg_00007.ts"));
        assert!(l.exists(7, Duration::from_millis(4100)));
        assert!(
            !l.exists(8, Duration::from_millis(4100)),
            "not produced yet"
        );
        assert_eq!(l.media_cache_control(), "public, max-age=1");
    }

    #[test]
    fn the_mpd_describes_the_same_segments_as_the_hls_playlists() {
        let attr = |doc: &roxmltree::Document<'_>, tag: &str, name: &str| {
            doc.descendants()
                .find(|n| n.has_tag_name(tag))
                .and_then(|n| n.attribute(name))
                .map(str::to_string)
                .unwrap_or_else(|| panic!("<{tag} {name}>"))
        };
        let vod = ladder(false);
        let text = vod.mpd(Duration::ZERO);
        let doc = roxmltree::Document::parse(&text).expect("well-formed XML");
        assert_eq!(attr(&doc, "MPD", "type"), "static");
        assert_eq!(
            attr(&doc, "MPD", "mediaPresentationDuration"),
            format!("PT{}.000S", 2 * vod.vod_segments())
        );
        let reps: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("Representation"))
            .map(|n| {
                (
                    n.attribute("id").unwrap_or_default(),
                    n.attribute("bandwidth"),
                )
            })
            .collect();
        assert_eq!(reps.len(), 4);
        assert_eq!(reps[1], ("360p", Some("800000")));
        // The template names files the ladder resolves, for every segment of the playlists.
        let media = attr(&doc, "SegmentTemplate", "media");
        let name = media
            .replace("$RepresentationID$", "720p")
            .replace("$Number%05d$", "00003");
        assert_eq!(
            vod.resolve(&format!("{}{name}", vod.root())),
            Some(Resource::Segment(2, 3))
        );
        assert_eq!(
            vod.resolve(&format!("{}manifest.mpd", vod.root())),
            Some(Resource::Mpd)
        );

        // Live: the newest segment available by the MPD's clock is the HLS window's last.
        let live = ladder(true);
        let at = Duration::from_millis(4100);
        let doc_text = live.mpd(at);
        let doc = roxmltree::Document::parse(&doc_text).expect("well-formed XML");
        assert_eq!(attr(&doc, "MPD", "type"), "dynamic");
        assert_eq!(attr(&doc, "MPD", "publishTime"), "1970-01-01T00:00:04Z");
        assert_eq!(attr(&doc, "MPD", "timeShiftBufferDepth"), "PT12.000S");
        let start: u64 = attr(&doc, "SegmentTemplate", "startNumber")
            .parse()
            .unwrap();
        let newest = start + at.as_secs() / 2 - 1;
        let (hls, first) = live.media(0, at).unwrap();
        assert_eq!(newest, first + 6 - 1);
        assert!(hls.contains(&segment_name(newest)) && live.exists(newest, at));
        assert!(!live.exists(newest + 1, at));
        assert_eq!(
            iso8601(Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            iso8601(Duration::from_secs(1_796_488_563)),
            "2026-12-05T16:36:03Z"
        );
    }

    #[test]
    fn bad_ladders_are_refused_with_the_reason() {
        let bad = |f: &dyn Fn(&mut LadderConfig)| {
            let mut c = LadderConfig::named("x");
            f(&mut c);
            Ladder::new(c).unwrap_err().to_string()
        };
        assert!(bad(&|c| c.name = "../x".into()).contains("name"));
        assert!(bad(&|c| c.renditions.clear()).contains("no renditions"));
        assert!(bad(&|c| c.segment = HumanDuration::millis(10)).contains("outside"));
        assert!(bad(&|c| c.renditions[1].name = "240p".into()).contains("twice"));
        assert!(
            bad(&|c| {
                c.live = true;
                c.window = 2;
            })
            .contains("under 3")
        );
        assert!(bad(&|c| c.renditions[0].bandwidth = 10).contains("2-byte segments"));
    }
}

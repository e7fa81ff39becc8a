//! HLS playlists as the player trusts them: parsed with m3u8-rs, then checked, so that a
//! hostile or broken playlist is refused with a reason instead of steering the player.
//!
//! What is refused: a master with no variant that has a `BANDWIDTH`; a URI that leaves the
//! site (a scheme, `//host`) or does not join into a safe path (dot segments, encoded
//! separators, control characters: the edges' own rules); a media playlist whose target
//! duration or segment durations are not between 0 and [`MAX_SEGMENT_S`] seconds (a live
//! playlist is reloaded every half target duration), or whose media sequence numbers would
//! overflow.

use m3u8_rs::MediaPlaylist;

use crate::player::PlayError;

/// Longest target or segment duration the player accepts, seconds.
pub const MAX_SEGMENT_S: u64 = 600;

/// One variant of a master playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rung {
    /// `BANDWIDTH`, bits per second.
    pub bitrate: u64,
    /// Its media playlist's path on the site.
    pub path: String,
    /// A short name (the URI's first segment, `240p` in `240p/index.m3u8`).
    pub name: String,
}

fn bad(path: &str, kind: &'static str, reason: impl Into<String>) -> PlayError {
    PlayError::Playlist {
        path: path.into(),
        kind,
        reason: reason.into(),
    }
}

/// `uri` from a playlist at `base`, as a path on the same site; refused when it names
/// another site or joins into an unsafe path.
pub fn join(base: &str, uri: &str) -> Result<String, String> {
    if uri.contains("://") || uri.starts_with("//") {
        return Err(format!("URI {uri:?} leaves the site"));
    }
    let joined = if uri.starts_with('/') {
        uri.to_string()
    } else {
        let dir = base.rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/{uri}")
    };
    shoal_cache_core::normalise_path(&joined)
        .map(|_| joined)
        .map_err(|e| format!("URI {uri:?}: {e}"))
}

/// The ladder of the master playlist at `path`: its variants (no I-frame ones) by
/// ascending bitrate.
pub fn ladder(path: &str, body: &[u8]) -> Result<Vec<Rung>, PlayError> {
    let parsed =
        m3u8_rs::parse_master_playlist_res(body).map_err(|e| bad(path, "master", e.to_string()))?;
    let mut rungs = Vec::new();
    for v in parsed.variants.iter().filter(|v| !v.is_i_frame) {
        rungs.push(Rung {
            bitrate: v.bandwidth,
            path: join(path, &v.uri).map_err(|e| bad(path, "master", e))?,
            name: v.uri.split('/').next().unwrap_or(&v.uri).to_string(),
        });
    }
    rungs.sort_by_key(|r| r.bitrate);
    if rungs.is_empty() || rungs[0].bitrate == 0 {
        return Err(bad(path, "master", "no variant with a BANDWIDTH"));
    }
    Ok(rungs)
}

/// The media playlist at `path`, checked: durations within bounds, sequence numbers that
/// do not overflow, and every segment and map URI a safe path on the site.
pub fn media(path: &str, body: &[u8]) -> Result<MediaPlaylist, PlayError> {
    let pl =
        m3u8_rs::parse_media_playlist_res(body).map_err(|e| bad(path, "media", e.to_string()))?;
    if pl.target_duration > MAX_SEGMENT_S {
        return Err(bad(
            path,
            "media",
            format!(
                "TARGETDURATION {} s is over {MAX_SEGMENT_S} s",
                pl.target_duration
            ),
        ));
    }
    if pl
        .media_sequence
        .checked_add(pl.segments.len() as u64)
        .is_none()
    {
        return Err(bad(path, "media", "MEDIA-SEQUENCE overflows"));
    }
    for s in &pl.segments {
        let d = f64::from(s.duration);
        if !(d.is_finite() && d >= 0.0 && d <= MAX_SEGMENT_S as f64) {
            return Err(bad(
                path,
                "media",
                format!("segment {:?} lasts {} s", s.uri, s.duration),
            ));
        }
        join(path, &s.uri).map_err(|e| bad(path, "media", e))?;
        if let Some(m) = &s.map {
            join(path, &m.uri).map_err(|e| bad(path, "media", e))?;
        }
    }
    Ok(pl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_uris_join_the_playlist_directory_and_foreign_ones_are_refused() {
        assert_eq!(
            join("/video/a/master.m3u8", "240p/index.m3u8").as_deref(),
            Ok("/video/a/240p/index.m3u8")
        );
        assert_eq!(
            join("/video/a/240p/index.m3u8", "seg_00001.ts").as_deref(),
            Ok("/video/a/240p/seg_00001.ts")
        );
        assert_eq!(
            join("/video/a/master.m3u8", "/other/x.m3u8").as_deref(),
            Ok("/other/x.m3u8")
        );
        for evil in [
            "http://evil.test/x.ts",
            "//evil.test/x.ts",
            "../../../etc/passwd",
            "a/%2e%2e/b.ts",
            "a%2fb.ts",
        ] {
            assert!(join("/video/a/index.m3u8", evil).is_err(), "{evil}");
        }
    }

    #[test]
    fn hostile_media_playlists_are_refused_with_a_reason() {
        let head = "#EXTM3U\n#EXT-X-VERSION:3\n";
        let cases = [
            (
                format!("{head}#EXT-X-TARGETDURATION:99999999999\n#EXTINF:2,\na.ts\n"),
                "TARGETDURATION",
            ),
            (
                format!(
                    "{head}#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:18446744073709551615\n#EXTINF:2,\na.ts\n"
                ),
                "overflows",
            ),
            (
                format!("{head}#EXT-X-TARGETDURATION:2\n#EXTINF:99999.5,\na.ts\n"),
                "lasts",
            ),
            (
                format!("{head}#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nhttp://evil.test/a.ts\n"),
                "leaves the site",
            ),
        ];
        for (body, why) in cases {
            match media("/v/index.m3u8", body.as_bytes()) {
                Err(e) => assert!(e.to_string().contains(why), "{e} (wanted {why})"),
                Ok(_) => panic!("accepted: {body}"),
            }
        }
        let ok = format!("{head}#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na.ts\n#EXT-X-ENDLIST\n");
        assert_eq!(
            media("/v/index.m3u8", ok.as_bytes())
                .unwrap()
                .segments
                .len(),
            1
        );
    }

    #[test]
    fn a_ladder_is_sorted_and_needs_a_bandwidth() {
        let m = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nhi/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=200000\nlo/index.m3u8\n";
        let l = ladder("/v/master.m3u8", m.as_bytes()).unwrap();
        assert_eq!(
            l.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["lo", "hi"]
        );
        assert_eq!(l[0].path, "/v/lo/index.m3u8");
        let none = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=0\nx/index.m3u8\n";
        assert!(ladder("/v/master.m3u8", none.as_bytes()).is_err());
    }
}

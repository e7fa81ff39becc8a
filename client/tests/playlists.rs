//! Property tests of the player's playlist checks (the fuzz target `playlist` runs the same
//! properties on arbitrary bytes): playlists built from real and hostile tag lines are
//! either refused or safe to play.

use proptest::prelude::*;
use shoal_cache_core::normalise_path;
use shoal_client::playlist::{MAX_SEGMENT_S, ladder, media};

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        "#EXT-X-TARGETDURATION:[0-9]{1,21}",
        "#EXT-X-MEDIA-SEQUENCE:[0-9]{1,21}",
        "#EXTINF:[0-9.e+-]{1,8},",
        "#EXT-X-MAP:URI=\"[a-z./%:]{1,12}\"",
        "#EXT-X-STREAM-INF:BANDWIDTH=[0-9]{1,21}",
        "#EXT-X-ENDLIST",
        "[a-z./%:]{1,16}",
        "[ -~]{0,20}",
    ]
}

proptest! {
    #[test]
    fn accepted_playlists_are_safe_to_play(lines in prop::collection::vec(line(), 0..12)) {
        let body = format!("#EXTM3U\n{}\n", lines.join("\n"));
        if let Ok(rungs) = ladder("/v/master.m3u8", body.as_bytes()) {
            prop_assert!(rungs[0].bitrate > 0);
            prop_assert!(rungs.windows(2).all(|w| w[0].bitrate <= w[1].bitrate));
            for r in &rungs {
                prop_assert!(normalise_path(&r.path).is_ok(), "{:?}", r.path);
            }
        }
        if let Ok(pl) = media("/v/240p/index.m3u8", body.as_bytes()) {
            prop_assert!(pl.target_duration <= MAX_SEGMENT_S);
            prop_assert!(pl.media_sequence.checked_add(pl.segments.len() as u64).is_some());
            for s in &pl.segments {
                let d = f64::from(s.duration);
                prop_assert!(d.is_finite() && (0.0..=MAX_SEGMENT_S as f64).contains(&d));
                prop_assert!(!s.uri.contains("://"), "{:?}", s.uri);
            }
        }
    }
}

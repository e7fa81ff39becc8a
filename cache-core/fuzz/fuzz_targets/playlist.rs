//! Arbitrary bytes as HLS master and media playlists, through the checks the player applies
//! before it trusts one: never a panic; an accepted ladder is sorted with a bandwidth on
//! every rung and safe paths; an accepted media playlist has bounded durations, sequence
//! numbers that cannot overflow, and only URIs that join into safe paths on the site.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_cache_core::normalise_path;
use shoal_client::playlist::{MAX_SEGMENT_S, join, ladder, media};

fuzz_target!(|data: &[u8]| {
    if let Ok(rungs) = ladder("/video/x/master.m3u8", data) {
        assert!(!rungs.is_empty() && rungs[0].bitrate > 0);
        assert!(rungs.windows(2).all(|w| w[0].bitrate <= w[1].bitrate));
        for r in &rungs {
            assert!(normalise_path(&r.path).is_ok(), "{:?}", r.path);
        }
    }
    if let Ok(pl) = media("/video/x/240p/index.m3u8", data) {
        assert!(pl.target_duration <= MAX_SEGMENT_S);
        assert!(pl.media_sequence.checked_add(pl.segments.len() as u64).is_some());
        for s in &pl.segments {
            let d = f64::from(s.duration);
            assert!(d.is_finite() && (0.0..=MAX_SEGMENT_S as f64).contains(&d));
            let p = join("/video/x/240p/index.m3u8", &s.uri).expect("checked URI joins");
            assert!(normalise_path(&p).is_ok(), "{p:?}");
        }
    }
});

//! Arbitrary `Range` headers against arbitrary lengths: never a panic, and a satisfiable
//! range always lies inside the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_cache_core::range::{RangeOutcome, parse};

fuzz_target!(|input: (&str, u64)| {
    let (header, len) = input;
    if let RangeOutcome::Single { start, end } = parse(header, len) {
        assert!(start <= end && end < len, "{header:?} on {len}: {start}-{end}");
    }
});

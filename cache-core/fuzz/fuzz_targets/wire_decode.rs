//! Arbitrary bytes into the frame decoder: it must never panic, never claim more bytes than
//! it was given, and anything it accepts must re-encode to a frame that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_cache_core::wire::FrameCodec;

fuzz_target!(|data: &[u8]| {
    let codec = FrameCodec::new(64 * 1024);
    // Also exercise the common case of a valid header by patching one in front.
    let mut framed = Vec::with_capacity(data.len() + 8);
    framed.extend_from_slice(&[b'S', b'H', shoal_cache_core::wire::PROTOCOL_VERSION, 0]);
    framed.extend_from_slice(&(data.len() as u32).to_be_bytes());
    framed.extend_from_slice(data);
    for input in [data, &framed[..]] {
        if let Ok((msg, used)) = codec.decode(input) {
            assert!(used <= input.len());
            let again = codec.encode(&msg).expect("a decoded message re-encodes");
            let (back, _) = codec.decode(&again).expect("a re-encoded message decodes");
            assert_eq!(back, msg);
        }
    }
});

//! # Shoal origin
//!
//! The authoritative content store that edges reach over QUIC. Not built yet: the request
//! path (issue "Origin and edge over QUIC") lands here. This crate deliberately exports
//! nothing until then.

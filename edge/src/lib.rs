//! # Shoal edge
//!
//! The HTTP edge: cache, owner routing on the ring, QUIC to the origin. Not built yet: the
//! request path (issue "Origin and edge over QUIC") lands here. This crate deliberately
//! exports nothing until then.

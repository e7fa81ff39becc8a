//! # Shoal client
//!
//! The region-aware client and, later, the ABR player. Not built yet: it lands with the
//! request path (issue "Origin and edge over QUIC"). This crate deliberately exports nothing
//! until then.

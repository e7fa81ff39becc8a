//! The test and demo harness: real Shoal servers in one process on loopback.
//!
//! - [`cluster`]: an origin and regions of edges, every listener on `127.0.0.1:0`.
//! - [`relay`]: a UDP relay that delays or black-holes edge ↔ origin QUIC traffic.

pub mod cluster;
pub mod relay;

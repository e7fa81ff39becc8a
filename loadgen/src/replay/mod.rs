//! Offline replay of request traces through the real cache.
//!
//! - [`trace`]: reads request traces (`timestamp,object_id,size`, gzip or plain).
//! - [`hitrate`]: replays a trace through the real [`shoal_cache_core::Store`] under every
//!   policy, plus the FIFO and Belady references, and reports object and byte hit ratios.

pub mod hitrate;
pub mod trace;

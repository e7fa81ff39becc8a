//! End-to-end scenarios against real servers on loopback ports.

mod bad_input;
mod conformance;
mod consistency;
mod discovery;
mod hitrate;
mod hostile;
mod invalidation;
mod limits;
mod loadgen;
mod operations;
mod request_path;
mod upstream;
mod video;

//! `shoal loadgen`: open-loop load with traffic spikes, ramps, flash crowds, Zipf and trace
//! key distributions, measured per second and per phase, reported as a table, JSON and a
//! self-contained HTML page.

mod h1;
pub mod plan;
pub mod report;
pub mod run;

pub use plan::{Arrivals, Keys, Phase, Plan};
pub use run::{Options, Results, Target};

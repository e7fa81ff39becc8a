//! Criterion benchmarks for Shoal; see `benches/`. Run with `cargo bench -p shoal-benches`.

//! # Shoal integration tests
//!
//! Cross-crate tests live in `tests/tests/`; this library holds what they share. The
//! in-process cluster harness (origin + edges on loopback, UDP relay for faults) arrives
//! with the request path.

use std::path::PathBuf;

/// The read-only `shared/` directory beside the project root (traces, docs). Tests that
/// need it fail with a message naming the path when it is missing, rather than skipping.
pub fn shared_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("../../shared");
    assert!(
        dir.join("traces").is_dir(),
        "expected the shared reference data at {}",
        dir.display()
    );
    dir
}

/// Path of one of the shared request traces.
pub fn trace(name: &str) -> PathBuf {
    shared_dir().join("traces").join(name)
}

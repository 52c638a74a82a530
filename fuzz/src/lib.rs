//! kiln's fuzz targets as a library; the binaries in `src/bin/` hand them to AFL++.
//! See docs/testing.md for how to run them.

#[path = "targets.rs"]
mod targets;

pub use targets::{csv, dsl, idx, safetensors, Fuzzed};

//! Benchmarks that print figures: `tandem bench storage` ([`storage`]) and `tandem bench cluster`
//! ([`cluster`]). Speed is measured here, never asserted in tests.

pub mod cluster;
pub mod storage;

pub use storage::{StorageBenchOptions, storage};

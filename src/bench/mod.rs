//! Benchmarks that print figures: `tandem bench storage` ([`storage`](mod@storage)), `tandem bench cluster`
//! ([`cluster`]) and `tandem bench boot` ([`boot`]). Speed is measured here, never asserted in tests.

pub mod boot;
pub mod cluster;
pub mod operations;
pub mod storage;

pub use storage::{StorageBenchOptions, storage};

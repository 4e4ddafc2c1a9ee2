//! Benchmarks that print figures: `tandem bench storage` ([`storage`](mod@storage)), `tandem bench cluster`
//! ([`cluster`]) and `tandem bench boot` ([`boot`]). Speed is measured here, never asserted in tests.

pub mod boot;
pub mod cluster;
pub mod etcd;
pub mod handover;
pub mod operations;
pub mod storage;
pub mod storm;

pub use crate::http::free_port;

pub use storage::{StorageBenchOptions, storage};

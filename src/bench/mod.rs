//! Benchmarks that print figures: `tandem bench storage` ([`storage`](mod@storage)), `tandem bench cluster`
//! ([`cluster`]) and `tandem bench boot` ([`boot`]). Speed is measured here, never asserted in tests.

pub mod boot;
pub mod cluster;
pub mod etcd;
pub mod handover;
pub mod operations;
pub mod storage;

/// A free TCP port on 127.0.0.1 for a benchmark's or a test's server (bound and released), never one this
/// process was given before: the kernel may hand out a released port again at once, and a node given the same port for
/// two of its addresses refuses to start.
pub fn free_port() -> std::io::Result<u16> {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..1000 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if given.insert(port) {
            return Ok(port);
        }
    }
    Err(std::io::Error::other("no new free port in 1000 tries"))
}

pub use storage::{StorageBenchOptions, storage};

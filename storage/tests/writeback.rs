//! sled's buffered writes reach its file without a flush, a little at a time (`engine::spawn_writeback`).

use std::time::{Duration, Instant};

use tandem_storage::engine::{Database, SledDatabase, WriteBatch};

/// Whether `needle` occurs in the file at `path`.
fn file_holds(path: &std::path::Path, needle: &[u8]) -> bool {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes.windows(needle.len()).any(|window| window == needle)
}

#[test]
fn buffered_writes_reach_the_file_within_moments_and_the_thread_lets_go_of_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let marker = b"a value that only this test writes: 7f3c9e1a";
    {
        let database = SledDatabase::open(&path).unwrap();
        let space = database.current().unwrap();
        let mut batch = WriteBatch::new();
        batch.put(b"key".to_vec(), marker.to_vec());
        space.write_in_order(batch).unwrap();
        // sled buffers up to a whole 8 MiB segment before it writes: without the writeback thread these few
        // bytes would stay in memory until a flush.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !file_holds(&path.join("db"), marker) {
            assert!(Instant::now() < deadline, "the write never reached sled's file");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // The last handle is gone: the thread must have dropped its own, or sled's file lock would keep the
    // database from opening again (the open waits a moment for it).
    let database = SledDatabase::open(&path).unwrap();
    assert_eq!(database.current().unwrap().get(b"key").unwrap().as_deref(), Some(&marker[..]));
}

//! Reading and editing a closed store's keyspace directly, as a crash, damage or an older build would have
//! left it (shared by the storage tests that need it).

#![allow(dead_code)]

use std::path::Path;

use tandem_storage::engine::WriteBatch;
use tandem_storage::{Database, Keyspace, SledDatabase, database_dir};

/// A value encoded as every stored value is (bincode 2, standard configuration).
pub fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap()
}

/// Runs `edit` on the stored keyspace of the closed store in `dir` and makes the result durable.
pub fn edit_disk(dir: &Path, edit: impl FnOnce(&dyn Keyspace, &mut WriteBatch)) {
    let database = SledDatabase::open(&database_dir(dir)).unwrap();
    let space = database.current().unwrap();
    let mut batch = WriteBatch::new();
    edit(space.as_ref(), &mut batch);
    space.write(batch).unwrap();
    database.durable().unwrap();
}

/// The stored value of `key` in the closed store in `dir`.
pub fn stored(dir: &Path, key: &[u8]) -> Option<Vec<u8>> {
    let database = SledDatabase::open(&database_dir(dir)).unwrap();
    database.current().unwrap().get(key).unwrap()
}

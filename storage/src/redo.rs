//! Atomic write batches without sled's batches: a redo record written first, replayed at open.
//!
//! sled 0.34 makes a `Batch` crash-atomic by writing its I/O buffer twice per batch — once before reserving a
//! batch manifest and once after — and each of those writes ends in a waiting `sync_file_range` (measured: two
//! per applied change, ~195 µs each on this machine's disk, on the path of every acknowledged write). Single-key
//! writes do not pay that: sled appends them to its in-memory buffer, and its recovery replays its log in order
//! and stops at the first message that is missing or damaged, so what comes back after a crash is always a
//! *prefix* of the writes.
//!
//! A prefix is all a redo record needs. [`write_atomically`] writes, each as a plain single-key write:
//!
//! 1. the whole batch, encoded, under `redo:<tree name>` in sled's default tree;
//! 2. every put and delete of the batch, in order;
//! 3. the removal of the redo record.
//!
//! Whatever prefix survives a crash, the batch is either wholly absent (the record and any of its writes
//! were lost together) or recoverable: a surviving write implies a surviving record, and a record still
//! present means step 3 did not survive, so [`replay`] at open applies the batch again (puts and deletes are
//! idempotent) and then removes the record. Only one batch per tree is ever in flight (the store applies
//! under its write lock), so one record name per tree suffices.
//!
//! Batches larger than [`REDO_LIMIT`] still go through sled's own batch: the record would be a large value,
//! and sled writes values over a quarter of its segment size to separate files (see [`crate::engine`]).
//! Concurrent readers may see a batch half-applied, exactly as with sled's batches, which are atomic for
//! crashes but not isolated from readers; the store's lock provides that.

use crate::error::{Error, Result};

/// The prefix of redo records in sled's default tree.
const REDO_PREFIX: &[u8] = b"redo:";

/// Batches whose encoding is larger than this use sled's batch instead of a redo record.
pub const REDO_LIMIT: usize = 64 * 1024;

/// The largest redo record decoded (a damaged length prefix must not make us allocate more).
const DECODE_LIMIT: usize = 2 * REDO_LIMIT;

/// One write of a batch: a put (`Some`) or a delete (`None`).
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// The name of `tree`'s redo record.
fn record_key(tree: &sled::Tree) -> Vec<u8> {
    [REDO_PREFIX, &tree.name()].concat()
}

/// The encoded batch, if it is small enough for a redo record.
fn encode(writes: &[Write]) -> Option<Vec<u8>> {
    // bincode 2 in its standard configuration, as every stored value (not through `codec`, which builds
    // on the engine's batches: this module sits below it). Encoding byte vectors cannot fail.
    let record = bincode::serde::encode_to_vec(writes, bincode::config::standard()).ok()?;
    (record.len() <= REDO_LIMIT).then_some(record)
}

/// The batch a redo record holds.
fn decode(record: &[u8]) -> Result<Vec<Write>> {
    let config = bincode::config::standard().with_limit::<DECODE_LIMIT>();
    match bincode::serde::decode_from_slice(record, config) {
        Ok((writes, used)) if used == record.len() => Ok(writes),
        Ok(_) => Err(Error::Corrupt("a redo record has trailing bytes".into())),
        Err(e) => Err(Error::Corrupt(format!("a redo record does not decode: {e}"))),
    }
}

/// Applies `writes` to `tree` crash-atomically, with `meta` (sled's default tree) holding the redo record
/// (see the module documentation). A batch too large for a record is handed back untouched, for sled's own
/// batch.
pub fn write_atomically(
    meta: &sled::Tree,
    tree: &sled::Tree,
    writes: Vec<Write>,
) -> Result<Option<Vec<Write>>> {
    if writes.len() <= 1 {
        // A single write is atomic on its own.
        return apply(tree, writes).map(|()| None);
    }
    let Some(record) = encode(&writes) else { return Ok(Some(writes)) };
    let key = record_key(tree);
    meta.insert(&key, record).map_err(|e| Error::engine("writing a redo record", e))?;
    apply(tree, writes)?;
    meta.remove(&key).map_err(|e| Error::engine("removing a redo record", e))?;
    Ok(None)
}

/// Applies every write in order, each on its own (after a crash: any prefix of them).
pub(crate) fn apply(tree: &sled::Tree, writes: Vec<Write>) -> Result<()> {
    for (key, value) in writes {
        match value {
            Some(value) => tree.insert(key, value).map(drop),
            None => tree.remove(key).map(drop),
        }
        .map_err(|e| Error::engine("writing", e))?;
    }
    Ok(())
}

/// Applies again every batch whose redo record a crash left in `db`, then removes the records; returns how
/// many there were. A record naming a tree that no longer exists (a generation dropped since) is removed.
pub fn replay(db: &sled::Db) -> Result<usize> {
    let existing = db.tree_names();
    let mut replayed = 0;
    for item in db.scan_prefix(REDO_PREFIX) {
        let (key, record) = item.map_err(|e| Error::engine("reading redo records", e))?;
        let name = &key[REDO_PREFIX.len()..];
        if existing.iter().any(|tree| tree.as_ref() == name) {
            let writes = decode(&record)?;
            let tree = db.open_tree(name).map_err(|e| Error::engine("opening a tree to replay into", e))?;
            apply(&tree, writes)?;
            replayed += 1;
        }
        db.remove(&key).map_err(|e| Error::engine("removing a redo record", e))?;
    }
    if replayed > 0 {
        tracing::info!(batches = replayed, "replayed write batches a crash interrupted");
    }
    Ok(replayed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes() -> Vec<Write> {
        vec![
            (b"a".to_vec(), Some(b"1".to_vec())),
            (b"b".to_vec(), Some(b"2".to_vec())),
            (b"gone".to_vec(), None),
        ]
    }

    #[test]
    fn a_batch_is_applied_and_leaves_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = db.open_tree("state.1").unwrap();
        tree.insert("gone", "x").unwrap();
        assert!(write_atomically(&db, &tree, writes()).unwrap().is_none(), "small enough for a record");
        assert_eq!(tree.get("a").unwrap().unwrap().as_ref(), b"1");
        assert!(tree.get("gone").unwrap().is_none());
        assert_eq!(db.scan_prefix(REDO_PREFIX).count(), 0);
    }

    #[test]
    fn an_interrupted_batch_is_completed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = db.open_tree("state.1").unwrap();
        tree.insert("gone", "x").unwrap();
        // The crash came after the record and the first write: the rest must come back.
        let batch = writes();
        db.insert(record_key(&tree), encode(&batch).unwrap()).unwrap();
        tree.insert("a", "1").unwrap();
        assert_eq!(replay(&db).unwrap(), 1);
        assert_eq!(tree.get("b").unwrap().unwrap().as_ref(), b"2");
        assert!(tree.get("gone").unwrap().is_none());
        assert_eq!(replay(&db).unwrap(), 0, "the record is gone after the replay");
    }

    #[test]
    fn a_record_of_a_dropped_tree_is_discarded_without_recreating_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        db.insert([REDO_PREFIX, b"state.9"].concat(), encode(&writes()).unwrap()).unwrap();
        assert_eq!(replay(&db).unwrap(), 0);
        assert!(!db.tree_names().iter().any(|name| name.as_ref() == b"state.9"));
        assert_eq!(db.scan_prefix(REDO_PREFIX).count(), 0);
    }

    #[test]
    fn a_damaged_record_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        db.open_tree("state.1").unwrap();
        db.insert([REDO_PREFIX, b"state.1"].concat(), vec![0xff; 7]).unwrap();
        assert!(matches!(replay(&db), Err(Error::Corrupt(_))));
    }

    #[test]
    fn large_batches_are_left_to_sled() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = db.open_tree("state.1").unwrap();
        let big = vec![(b"k".to_vec(), Some(vec![0u8; REDO_LIMIT])), (b"l".to_vec(), None)];
        let handed_back = write_atomically(&db, &tree, big.clone()).unwrap();
        assert_eq!(handed_back, Some(big), "handed back untouched");
        assert!(tree.get("k").unwrap().is_none(), "nothing written");
    }
}

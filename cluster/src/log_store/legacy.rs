//! Format 1 of the Raft log, read once to move it out of sled.
//!
//! Until data directory format 2 the log lived in two sled trees of the node's database: `raft-log` (key
//! `index: u64 BE ‖ part: u32 BE`; part 0 starts with `format: u8 (= 1) ‖ parts: u32 BE`, then the first
//! piece of the entry's bincode, parts 1… the following pieces of at most 32 KiB) and `raft-meta` (`vote`,
//! `last-purged`, `committed`, each bincode). [`take`] reads all of it; once the caller has the log durably in
//! segment files, [`drop_trees`] removes the trees. So while the trees exist, the copy is unfinished: a crash
//! during it leaves the trees, and the next open deletes whatever segments the copy had written and makes it
//! again from the start.

#![allow(clippy::result_large_err)]

use openraft::{AnyError, StorageError, StorageIOError, Vote};
use serde::de::DeserializeOwned;
use tandem_storage::{Database, SledDatabase};

use crate::types::{LogId, NodeId, decode_exact};

/// A log entry as openraft hands it over.
type Entry = super::Entry;

/// The sled tree that held the entries.
pub const LOG_TREE: &str = "raft-log";
/// The sled tree that held the vote, the last purged log id and the committed log id.
pub const META_TREE: &str = "raft-meta";

const VOTE_KEY: &[u8] = b"vote";
const LAST_PURGED_KEY: &[u8] = b"last-purged";
const COMMITTED_KEY: &[u8] = b"committed";

/// The format byte at the start of part 0.
const ENTRY_FORMAT: u8 = 1;
/// The length of part 0's header: format byte and part count.
const HEADER_BYTES: usize = 5;

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

/// Everything a format-1 log held.
#[derive(Debug, Default)]
pub struct LegacyLog {
    pub entries: Vec<Entry>,
    pub vote: Option<Vote<NodeId>>,
    pub committed: Option<LogId>,
    pub last_purged: Option<LogId>,
}

fn has_tree(database: &SledDatabase, name: &str) -> bool {
    database.sled().tree_names().iter().any(|tree| tree.as_ref() == name.as_bytes())
}

/// Whether `database` still holds a format-1 log (whose copy into segments has not finished).
pub fn exists(database: &SledDatabase) -> bool {
    has_tree(database, LOG_TREE) || has_tree(database, META_TREE)
}

/// Reads the format-1 log out of `database`, if it has one.
pub fn take(database: &SledDatabase) -> Result<Option<LegacyLog>> {
    if !exists(database) {
        return Ok(None);
    }
    let open = |name: &str| database.sled().open_tree(name).map_err(read_error);
    let log = open(LOG_TREE)?;
    let meta = open(META_TREE)?;
    let read_meta = |key: &[u8]| -> Result<Option<Vec<u8>>> {
        Ok(meta.get(key).map_err(read_error)?.map(|value| value.to_vec()))
    };
    fn decode_meta<T: DeserializeOwned>(bytes: Option<Vec<u8>>, what: &str) -> Result<Option<T>> {
        bytes
            .map(|bytes| {
                decode_exact(&bytes).map_err(|e| corrupt(format!("the stored {what} does not decode: {e}")))
            })
            .transpose()
    }
    Ok(Some(LegacyLog {
        entries: read_entries(&log, 0, None, None)?,
        vote: decode_meta(read_meta(VOTE_KEY)?, "vote")?,
        committed: decode_meta(read_meta(COMMITTED_KEY)?, "committed log id")?,
        last_purged: decode_meta(read_meta(LAST_PURGED_KEY)?, "last purged log id")?,
    }))
}

/// Drops the format-1 trees, durably.
pub fn drop_trees(database: &SledDatabase) -> Result<()> {
    for name in [LOG_TREE, META_TREE] {
        database.sled().drop_tree(name).map_err(read_error)?;
    }
    database.durable().map_err(read_error)
}

/// The key of one part of the entry at `index`.
fn entry_key(index: u64, part: u32) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&index.to_be_bytes());
    key[8..].copy_from_slice(&part.to_be_bytes());
    key
}

/// The index and part of a key, if it has the right shape.
fn parse_key(key: &[u8]) -> Option<(u64, u32)> {
    let key: &[u8; 12] = key.try_into().ok()?;
    let index = u64::from_be_bytes(key[..8].try_into().ok()?);
    let part = u32::from_be_bytes(key[8..].try_into().ok()?);
    Some((index, part))
}

fn corrupt(message: String) -> StorageError<NodeId> {
    StorageIOError::read_logs(AnyError::error(format!("the Raft log is damaged: {message}"))).into()
}

fn read_error(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

/// An entry whose parts are being read back.
struct PartialEntry {
    index: u64,
    parts: u32,
    next_part: u32,
    bytes: Vec<u8>,
}

impl PartialEntry {
    fn start(index: u64, part: u32, value: &[u8]) -> Result<PartialEntry> {
        if part != 0 {
            return Err(corrupt(format!("entry {index} has part {part} but no part 0")));
        }
        if value.len() < HEADER_BYTES {
            return Err(corrupt(format!("entry {index} has a truncated header")));
        }
        if value[0] != ENTRY_FORMAT {
            return Err(corrupt(format!(
                "entry {index} has format {}, this build reads format {ENTRY_FORMAT}",
                value[0]
            )));
        }
        let parts = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
        Ok(PartialEntry { index, parts, next_part: 1, bytes: value[HEADER_BYTES..].to_vec() })
    }

    fn push(&mut self, part: u32, value: &[u8]) -> Result<()> {
        if part != self.next_part || part >= self.parts {
            return Err(corrupt(format!(
                "entry {} has part {part} where part {} of {} was expected",
                self.index, self.next_part, self.parts
            )));
        }
        self.next_part += 1;
        self.bytes.extend_from_slice(value);
        Ok(())
    }

    fn finish(self) -> Result<(Entry, usize)> {
        if self.next_part != self.parts {
            return Err(corrupt(format!(
                "entry {} has {} of its {} parts",
                self.index, self.next_part, self.parts
            )));
        }
        let entry: Entry = decode_exact(&self.bytes)
            .map_err(|e| corrupt(format!("entry {} does not decode: {e}", self.index)))?;
        if entry.log_id.index != self.index {
            return Err(corrupt(format!(
                "the entry stored at index {} has log id {}",
                self.index, entry.log_id
            )));
        }
        Ok((entry, self.bytes.len()))
    }
}

/// Reads the entries with `start <= index < end` (`end` unbounded when `None`). With a `byte_limit`, stops
/// before the first entry that begins once that many bytes were collected (so at least one is returned).
fn read_entries(
    log: &sled::Tree,
    start: u64,
    end: Option<u64>,
    byte_limit: Option<usize>,
) -> Result<Vec<Entry>> {
    let from = entry_key(start, 0);
    let iter = match end {
        Some(end) if end <= start => return Ok(Vec::new()),
        Some(end) => log.range(from..entry_key(end, 0)),
        None => log.range(from..),
    };
    let mut entries = Vec::new();
    let mut collected = 0usize;
    let mut pending: Option<PartialEntry> = None;
    for item in iter {
        let (key, value) = item.map_err(read_error)?;
        let (index, part) =
            parse_key(&key).ok_or_else(|| corrupt(format!("a key of {} bytes", key.len())))?;
        match pending.as_mut() {
            Some(entry) if entry.index == index => entry.push(part, &value)?,
            _ => {
                if let Some(done) = pending.take() {
                    let (entry, size) = done.finish()?;
                    entries.push(entry);
                    collected += size;
                    if byte_limit.is_some_and(|limit| collected >= limit) {
                        return Ok(entries);
                    }
                }
                pending = Some(PartialEntry::start(index, part, &value)?);
            }
        }
    }
    if let Some(done) = pending {
        entries.push(done.finish()?.0);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_index_then_part() {
        assert!(entry_key(1, 7) < entry_key(2, 0));
        assert!(entry_key(255, 0) < entry_key(256, 0));
        assert!(entry_key(3, 0) < entry_key(3, 1));
        assert_eq!(parse_key(&entry_key(42, 3)), Some((42, 3)));
        assert_eq!(parse_key(b"short"), None);
    }

    #[test]
    fn damaged_headers_are_errors_not_panics() {
        assert!(PartialEntry::start(1, 1, b"xxxxxx").is_err());
        assert!(PartialEntry::start(1, 0, b"\x01\x00").is_err());
        assert!(PartialEntry::start(1, 0, b"\x09\x00\x00\x00\x01").is_err());
        let partial = PartialEntry::start(1, 0, b"\x01\x00\x00\x00\x02abc").unwrap();
        assert!(partial.finish().is_err(), "a missing part is reported");
        let partial = PartialEntry::start(1, 0, b"\x01\x00\x00\x00\x01abc").unwrap();
        assert!(partial.finish().is_err(), "garbage does not decode");
    }
}

//! The Raft log and vote on disk: openraft's [`RaftLogStorage`] over two sled trees of the node's database.
//!
//! ## What is stored where
//! Both trees live in the node's one sled database (the one the [`tandem_storage::Store`] uses), so one
//! [`Database::durable`] call — a sled flush followed by a real `fsync` — covers the log, the vote and the
//! state machine together.
//!
//! - `raft-log`: the entries. Key `index: u64 BE ‖ part: u32 BE` (12 bytes, so keys sort by index, then part);
//!   the value is one piece of the entry's bincode encoding. Part 0 starts with a 5-byte header,
//!   `format: u8 (= 1) ‖ parts: u32 BE`, followed by the first piece; parts 1… hold the following pieces.
//! - `raft-meta`: `vote` (the last saved [`Vote`]), `last-purged` (the [`LogId`] of the last purged entry) and
//!   `committed` (the last committed [`LogId`]), each as bincode.
//!
//! ## Why entries are split into parts
//! A Raft entry can be large: a blob chunk is up to 1 MiB and a change set up to 32 MiB. sled writes values
//! over ~128 KiB into separate blob files that it never fsyncs (see `shared/notes/openraft-sled.md`), so a big
//! entry written as one value could be lost on power failure even after our `fsync`. Every value this module
//! writes is therefore at most [`PART_BYTES`] (32 KiB) plus the 5-byte header, well inside sled's own log.
//! All parts of all entries of one `append` that has a multi-part entry go into one [`sled::Batch`], so an
//! entry is never half written; the part count in the header and the check that parts run 0, 1, 2 … catch
//! any damage anyway.
//!
//! ## Durability and the crash story
//! openraft relies on these promises, and each is kept with exactly one `durable()` call (a sled flush, then
//! an `fsync` of sled's file) per operation:
//!
//! - [`RaftLogStorage::save_vote`]: written, then made durable before returning. A node that voted and
//!   crashed remembers its vote and cannot vote twice in one term.
//! - [`RaftLogStorage::append`]: the entries are written (visible to readers at once, as openraft requires
//!   when `append` returns), then the flush and fsync run on the log's flusher thread, which calls openraft's
//!   callback only once they are done — the leader counts this node towards a quorum only from that moment.
//!   A follower receives many entries per AppendEntries request and makes them all durable with one fsync.
//! - [`RaftLogStorage::truncate`]: the entries from the given index on are removed in one batch, then made
//!   durable, so a truncated (conflicting) suffix cannot reappear after a crash.
//! - [`RaftLogStorage::purge`]: the deletions and the new `last-purged` id are written in one sled
//!   transaction across both trees, then made durable: after a crash the log either still holds the entries
//!   and the old `last-purged`, or neither. This fsync also makes the state machine durable up to the purged
//!   entries (see "The state machine is not fsynced" below).
//! - [`RaftLogStorage::save_committed`] is *not* fsynced: it is an optimisation (fewer entries to re-apply
//!   at start), the state machine stores its own applied position, and sled's log is replayed as a
//!   prefix, so a `committed` that reached the disk implies that the entries written before it did too.
//!
//! **sled's log is a prefix after a crash.** Every write to the database (log, vote, state machine) goes into
//! sled's one write-ahead log in order, and recovery replays a prefix of it. So one flush + fsync makes
//! *everything* written before it durable, whichever tree it went to, and a crash loses a suffix of writes,
//! never a middle. The rules above and below rely on this.
//!
//! **Entries are written with plain inserts when that is atomic enough.** A sled [`sled::Batch`] is atomic,
//! but sled pays for it with two extra writes of its I/O buffer (each a `pwrite` plus a waiting
//! `sync_file_range`) before the flush even starts — measured, a batch + flush + fsync takes about 1.6x an
//! insert + flush + fsync. When every entry of an `append` is a single part and no stale parts of an
//! overwritten entry need deleting (the usual case), each entry is one `insert`, atomic by itself; a crash
//! before the fsync keeps a prefix of them (sled's prefix rule), which is a valid shorter log (openraft never
//! counted them: the callback had not been called). Otherwise (an entry over [`PART_BYTES`], or an overwrite)
//! the whole append is one batch as before, so an entry is never half written.
//!
//! **Flushes run on a dedicated thread.** A flush + fsync takes from 0.3 ms to several milliseconds when
//! three nodes share a disk. Done inside `append`, it would block one of the runtime's worker threads (there
//! are two on a 2-core machine) for that long, stalling the HTTP servers and the replication tasks; on the
//! flusher thread it blocks nothing but the Raft core task, which waits for the callback anyway. The flusher
//! takes every request queued while it was busy and serves them with one flush + fsync (group commit).
//!
//! **The state machine is not fsynced.** It shares this database (the state machine writes its own trees of
//! the same sled `Db`), and its applied position is stored atomically with the state it describes. It only
//! ever applies committed entries, which are durable in this node's log (a node applies entries from its own
//! log, and they were flushed before openraft counted them). After a crash the state machine comes back at
//! some earlier applied position, and openraft re-applies the committed entries after it from the log at
//! start (`read_committed`) or once the leader says they are committed. That needs the log to still hold
//! those entries: a purge removes only entries at or below a snapshot, which is built from state applied
//! before the purge was written, so by the prefix rule the purge's fsync makes that state durable first.
//!
//! All writes to sled happen synchronously inside the async methods, in the order openraft calls them (its
//! rule: log and vote I/O is serialized); only the flushes go to the flusher thread, which serves them in
//! order, and every method but `append` waits for its flush before returning. Reads go through
//! [`LogReader`], a cheap clone of the log tree that replication tasks use concurrently. A sled range scan is
//! not a snapshot, so a read racing a truncate or purge of the same entries could see an entry's first part
//! without the rest and report damage; openraft never does that (followers, which truncate, run no
//! replication tasks, and a leader postpones a purge while a replication task still needs the entries), and
//! appends only add entries past the ones being read.
//!
//! [`RaftLogReader::limited_get_log_entries`], which replication uses, stops after about
//! [`READ_LIMIT_BYTES`] so that one AppendEntries request stays bounded even when it carries 1 MiB blob chunks.
//!
//! Nothing read from disk is trusted: a key, header or entry that does not parse becomes a
//! [`StorageError`] (fatal for the node), never a panic.

// openraft's traits return `StorageError` (over 200 bytes); the helpers here return the same type so that
// `?` passes it through unchanged, and errors are rare and fatal, so their size does not matter.
#![allow(clippy::result_large_err)]

use std::fmt;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, OnceLock};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, LogState, RaftLogReader, StorageError, StorageIOError, Vote,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;
use tandem_storage::{Database, SledDatabase};

use crate::types::{LogId, NodeId, TypeConfig, decode_exact, try_encode};

/// A log entry as openraft hands it over.
pub type Entry = openraft::Entry<TypeConfig>;

/// The sled tree holding the entries.
pub const LOG_TREE: &str = "raft-log";
/// The sled tree holding the vote, the last purged log id and the committed log id.
pub const META_TREE: &str = "raft-meta";

const VOTE_KEY: &[u8] = b"vote";
const LAST_PURGED_KEY: &[u8] = b"last-purged";
const COMMITTED_KEY: &[u8] = b"committed";

/// The largest piece of an encoded entry stored as one sled value.
pub const PART_BYTES: usize = 32 * 1024;
/// The format byte at the start of part 0.
const ENTRY_FORMAT: u8 = 1;
/// The length of part 0's header: format byte and part count.
const HEADER_BYTES: usize = 5;
/// [`RaftLogReader::limited_get_log_entries`] stops adding entries once this many encoded bytes are
/// collected (it always returns at least one entry), so one AppendEntries request stays a few MiB even when
/// it carries blob chunks.
pub const READ_LIMIT_BYTES: usize = 8 * 1024 * 1024;

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

/// The Raft log store of one node (see the module documentation).
pub struct LogStore {
    database: SledDatabase,
    log: sled::Tree,
    meta: sled::Tree,
    flusher: Flusher,
    /// Set by [`LogStore::with_metrics`]; shared with the flusher thread.
    metrics: Metrics,
}

impl fmt::Debug for LogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore").field("database", &self.database).finish()
    }
}

/// A reader of the log, for openraft's replication tasks. Cheap to clone; sees every write of the
/// [`LogStore`] it came from at once.
#[derive(Clone)]
pub struct LogReader {
    log: sled::Tree,
}

impl fmt::Debug for LogReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogReader").field("entries", &self.log.len()).finish()
    }
}

impl LogStore {
    /// Opens (creating if needed) the log trees in `database`. The same database can hold the
    /// [`tandem_storage::Store`]; opening a second `LogStore` on it sees the same log.
    pub fn open(database: SledDatabase) -> Result<LogStore> {
        let open = |name: &str| {
            database.sled().open_tree(name).map_err(|e| {
                StorageError::from(StorageIOError::new(
                    ErrorSubject::Store,
                    ErrorVerb::Read,
                    AnyError::error(format!("opening the sled tree {name}: {e}")),
                ))
            })
        };
        let log = open(LOG_TREE)?;
        let meta = open(META_TREE)?;
        let metrics = Metrics::default();
        let flusher = Flusher::start(database.clone(), metrics.clone()).map_err(|e| {
            StorageError::from(StorageIOError::new(
                ErrorSubject::Store,
                ErrorVerb::Write,
                AnyError::error(format!("starting the log flusher thread: {e}")),
            ))
        })?;
        Ok(LogStore { database, log, meta, flusher, metrics })
    }

    /// A reader of this log.
    pub fn reader(&self) -> LogReader {
        LogReader { log: self.log.clone() }
    }

    /// Appends entries while Raft is not running (offline recovery), durably. The caller guarantees that
    /// they follow the last entry.
    pub fn append_offline(&self, entries: &[Entry]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = try_encode(entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, AnyError::new(&e)))?;
            put_entry(&mut batch, entry.log_id.index, &bytes)?;
        }
        self.log.apply_batch(batch).map_err(write_error)?;
        self.durable().map_err(write_error)
    }

    /// Observes every durable step in `metrics`.
    pub fn with_metrics(self, metrics: crate::metrics::ClusterMetrics) -> Self {
        let _ = self.metrics.set(metrics);
        self
    }

    /// Makes every write so far durable, on the calling thread (for [`LogStore::append_offline`], which runs
    /// without Raft).
    fn durable(&self) -> std::result::Result<(), tandem_storage::Error> {
        durable(&self.database, &self.metrics)
    }

    /// Makes every write so far durable, on the flusher thread; returns once it is.
    async fn flushed(&self) -> std::result::Result<(), io::Error> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.flusher.submit(Box::new(move |result| {
            let _ = done.send(result);
        }))?;
        wait.await.map_err(|_| io::Error::other("the log flusher thread stopped"))?
    }

    fn read_meta<T: DeserializeOwned>(
        &self,
        key: &[u8],
        error: fn(AnyError) -> StorageIOError<NodeId>,
    ) -> Result<Option<T>> {
        match self.meta.get(key).map_err(|e| error(AnyError::new(&e)))? {
            None => Ok(None),
            Some(bytes) => decode_exact(&bytes).map(Some).map_err(|e| {
                error(AnyError::error(format!(
                    "{} in {META_TREE} does not decode: {e}",
                    String::from_utf8_lossy(key)
                )))
                .into()
            }),
        }
    }

    fn write_meta<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        error: fn(AnyError) -> StorageIOError<NodeId>,
    ) -> Result<()> {
        let bytes = try_encode(value).map_err(|e| error(AnyError::new(&e)))?;
        self.meta.insert(key, bytes).map_err(|e| error(AnyError::new(&e)))?;
        Ok(())
    }
}

/// The metrics the log store observes, once [`LogStore::with_metrics`] set them.
type Metrics = Arc<OnceLock<crate::metrics::ClusterMetrics>>;

/// One flush + fsync of `database`, timed in `metrics`.
fn durable(database: &SledDatabase, metrics: &Metrics) -> std::result::Result<(), tandem_storage::Error> {
    let _timer = metrics.get().map(|m| m.fsync_seconds.start_timer());
    database.durable()
}

/// What to do once a flush is done (or failed).
type FlushDone = Box<dyn FnOnce(std::result::Result<(), io::Error>) + Send>;

/// The log's flusher thread (see "Flushes run on a dedicated thread" in the module documentation). It stops
/// when the [`LogStore`] is dropped.
struct Flusher {
    queue: std::sync::mpsc::Sender<FlushDone>,
}

impl Flusher {
    fn start(database: SledDatabase, metrics: Metrics) -> io::Result<Flusher> {
        let (queue, requests) = std::sync::mpsc::channel::<FlushDone>();
        std::thread::Builder::new().name("tandem-log-flush".into()).spawn(move || {
            while let Ok(first) = requests.recv() {
                // Everything queued meanwhile was written before this flush starts: one flush covers it all.
                let waiting: Vec<FlushDone> = std::iter::once(first).chain(requests.try_iter()).collect();
                let result = durable(&database, &metrics).map_err(|e| e.to_string());
                for done in waiting {
                    done(result.clone().map_err(io::Error::other));
                }
            }
        })?;
        Ok(Flusher { queue })
    }

    /// Queues a flush of everything written so far; `done` runs on the flusher thread once it is durable.
    fn submit(&self, done: FlushDone) -> io::Result<()> {
        self.queue.send(done).map_err(|_| io::Error::other("the log flusher thread stopped"))
    }
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

fn write_error(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

fn read_error(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

/// Adds the parts of an encoded entry to `batch`; returns how many there are.
fn put_entry(batch: &mut sled::Batch, index: u64, bytes: &[u8]) -> Result<u32> {
    let mut pieces = bytes.chunks(PART_BYTES);
    let parts = u32::try_from(bytes.len().div_ceil(PART_BYTES).max(1))
        .map_err(|_| write_error(io::Error::other(format!("entry {index} is too large to store"))))?;
    let mut first = Vec::with_capacity(HEADER_BYTES + PART_BYTES.min(bytes.len()));
    first.push(ENTRY_FORMAT);
    first.extend_from_slice(&parts.to_be_bytes());
    first.extend_from_slice(pieces.next().unwrap_or_default());
    batch.insert(&entry_key(index, 0)[..], first);
    for (part, piece) in (1u32..).zip(pieces) {
        batch.insert(&entry_key(index, part)[..], piece);
    }
    Ok(parts)
}

/// Part 0 of an entry that fits in one part: the header (one part) and the bytes.
fn single_part(bytes: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(HEADER_BYTES + bytes.len());
    value.push(ENTRY_FORMAT);
    value.extend_from_slice(&1u32.to_be_bytes());
    value.extend_from_slice(bytes);
    value
}

/// The keys of the parts of the entry at `index` from part `from` on.
fn stale_parts(index: u64, from: u32) -> (Bound<[u8; 12]>, Bound<[u8; 12]>) {
    let end = match index.checked_add(1) {
        Some(next) => Bound::Excluded(entry_key(next, 0)),
        None => Bound::Unbounded,
    };
    (Bound::Included(entry_key(index, from)), end)
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

/// `[start, end)` of a range of log indexes (`end` unbounded when `None`).
fn bounds(range: &impl RangeBounds<u64>) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(&start) => start,
        Bound::Excluded(&start) => start.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&end) => end.checked_add(1),
        Bound::Excluded(&end) => Some(end),
        Bound::Unbounded => None,
    };
    (start, end)
}

/// Reads the last entry's log id, if the log holds any entry.
fn last_log_id(log: &sled::Tree) -> Result<Option<LogId>> {
    let Some((key, _)) = log.last().map_err(read_error)? else {
        return Ok(None);
    };
    let (index, _) = parse_key(&key).ok_or_else(|| corrupt(format!("a key of {} bytes", key.len())))?;
    let entries = read_entries(log, index, index.checked_add(1), None)?;
    match entries.into_iter().next() {
        Some(entry) => Ok(Some(entry.log_id)),
        None => Err(corrupt(format!("the last entry {index} cannot be read back"))),
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>> {
        let (start, end) = bounds(&range);
        read_entries(&self.log, start, end, None)
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>> {
        read_entries(&self.log, start, Some(end), Some(READ_LIMIT_BYTES))
    }
}

/// The store reads exactly as its readers do.
impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>> {
        self.reader().try_get_log_entries(range).await
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>> {
        self.reader().limited_get_log_entries(start, end).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId> = self.read_meta(LAST_PURGED_KEY, StorageIOError::read_logs)?;
        let last_log_id = last_log_id(&self.log)?.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<()> {
        self.write_meta(VOTE_KEY, vote, StorageIOError::write_vote)?;
        self.flushed().await.map_err(|e| StorageIOError::write_vote(AnyError::new(&e)))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>> {
        self.read_meta(VOTE_KEY, StorageIOError::read_vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<()> {
        match committed {
            Some(committed) => self.write_meta(COMMITTED_KEY, &committed, StorageIOError::write)?,
            None => {
                self.meta.remove(COMMITTED_KEY).map_err(write_error)?;
            }
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>> {
        self.read_meta(COMMITTED_KEY, StorageIOError::read)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut encoded = Vec::new();
        let mut simple = true;
        for entry in entries {
            let index = entry.log_id.index;
            let bytes = try_encode(&entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, AnyError::new(&e)))?;
            // One part, and no parts of an earlier, longer entry at this index left to delete.
            simple =
                simple && bytes.len() <= PART_BYTES && self.log.range(stale_parts(index, 1)).next().is_none();
            encoded.push((index, bytes));
        }
        if simple {
            for (index, bytes) in &encoded {
                self.log.insert(&entry_key(*index, 0)[..], single_part(bytes)).map_err(write_error)?;
            }
        } else {
            let mut batch = sled::Batch::default();
            for (index, bytes) in &encoded {
                let parts = put_entry(&mut batch, *index, bytes)?;
                // An entry overwritten in place may have had more parts than the new one: drop the leftovers.
                for key in self.log.range(stale_parts(*index, parts)).keys() {
                    batch.remove(key.map_err(read_error)?);
                }
            }
            self.log.apply_batch(batch).map_err(write_error)?;
        }
        // The flusher calls back once the entries are durable; openraft waits for that, not for this method.
        let result = self.flusher.submit(Box::new(move |result| callback.log_io_completed(result)));
        result.map_err(write_error)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<()> {
        let mut batch = sled::Batch::default();
        for key in self.log.range(entry_key(log_id.index, 0)..).keys() {
            batch.remove(key.map_err(read_error)?);
        }
        self.log.apply_batch(batch).map_err(write_error)?;
        self.flushed().await.map_err(write_error)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<()> {
        let purged = match log_id.index.checked_add(1) {
            Some(next) => self.log.range(..entry_key(next, 0)),
            None => self.log.range::<&[u8], _>(..),
        };
        let keys = purged.keys().collect::<std::result::Result<Vec<_>, _>>().map_err(read_error)?;
        let value = try_encode(&log_id).map_err(write_error)?;
        (&self.log, &self.meta)
            .transaction(|(log, meta)| {
                for key in &keys {
                    log.remove(key)?;
                }
                meta.insert(LAST_PURGED_KEY, value.as_slice())?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| write_error(io::Error::other(format!("purging the log up to {log_id}: {e:?}"))))?;
        self.flushed().await.map_err(write_error)
    }
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
    fn range_bounds_convert() {
        assert_eq!(bounds(&(3..7)), (3, Some(7)));
        assert_eq!(bounds(&(3..=7)), (3, Some(8)));
        assert_eq!(bounds(&(..)), (0, None));
        assert_eq!(bounds(&(5..)), (5, None));
        assert_eq!(bounds(&(..=u64::MAX)), (0, None));
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

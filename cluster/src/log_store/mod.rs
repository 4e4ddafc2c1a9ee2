//! The Raft log and vote on disk: openraft's [`RaftLogStorage`] over append-only segment files that this
//! module alone writes and fsyncs.
//!
//! ## Why not sled
//! Until format 2 the log lived in sled trees beside the state machine. sled writes every B-tree page over
//! 128 KiB into a file of its own under `db/blobs/` and never fsyncs it, and on Linux its flush is a
//! `sync_file_range`, not an fsync: after a power cut (simulated with LazyFS) acknowledged entries were
//! gone and sled sometimes could not open at all. A Raft log needs none of a B-tree's features: it is
//! appended at the end, cut at the end (a conflicting suffix) and at the front (after a snapshot). So it is
//! now a plain log whose every byte's durability is decided here (see `docs/storage.md`, "Where every byte
//! lives").
//!
//! ## Layout
//! A directory (`<data dir>/raft-log`) of segment files written strictly in order (format: [`segment`]).
//! Everything openraft asks to store is a *record* appended to the newest segment: entries, the vote, the
//! committed log id, the last purged log id, and truncations. The state of the log is what replaying every
//! record in order gives; [`LogStore::open`] does that once and keeps, in memory, only where each entry is
//! (segment and offset), never the entries themselves. A new segment starts with a copy of the vote, the
//! committed and the purged log id, so deleting older segments never loses them.
//!
//! ## Durability and the crash story
//! Records are written with `pwrite` at the end of the active segment (visible to readers at once, as
//! openraft requires when `append` returns) and made durable by `fdatasync` on the flusher thread (`flusher.rs`), which
//! serves every request waiting with one sync (group commit at the disk). openraft's rules are kept as follows:
//!
//! - `save_vote`: written, then synced before returning. A node that voted and crashed remembers its vote.
//! - `append`: written, then the flusher calls openraft's callback once the sync is done; openraft counts
//!   this node towards a quorum only from that moment. A follower receives many entries per AppendEntries
//!   request and makes them durable with one sync. The exception, with [`LogStore::with_leader_early_ack`]:
//!   a leader's own entries are acknowledged once written, so that its sync overlaps replication, and
//!   what makes a commit visible waits for the [`DurablePosition`] instead ([`durable`]).
//! - `open`: every segment is synced before anything is read from it: a killed process leaves its last
//!   writes in the page cache, readable but not durable.
//! - `truncate`: a truncation record, synced before returning, so a cut suffix never comes back.
//! - `purge`: first it waits, at the [`PurgeGate`], until a snapshot covering the purged entries is durable
//!   (openraft 0.9 asks for the purge after a snapshot install without waiting for the install to finish;
//!   see [`crate::purge_gate`]). Then everything written to the log is synced, the state machine's database is made
//!   durable ([`tandem_storage::Database::durable`]):
//!   the purged entries are covered by a snapshot of state applied before the purge, and after a crash the
//!   state machine must not come back behind a log that no longer has the entries to catch up from. Then a
//!   purge record is synced, and whole segments that hold nothing past the purged index are deleted (and the
//!   directory fsynced).
//! - `save_committed`: kept in memory and written in front of the next record written for any other reason
//!   (the next entries, as a rule), not synced (it rides along with the next sync). It only saves re-applying
//!   entries at start; a crash that loses it loses nothing else (openraft starts from the state machine's
//!   applied position when that is further). Writing it at once cost every node a `pwrite` on the Raft
//!   core's path per commit, and on the leader it sat between openraft's "committed" message to the
//!   replication tasks and the next entries for them, so they sent a commit-only heartbeat first more often.
//!
//! Segments are preallocated at creation, so a sync writes only data, never the file's size. A crash in the
//! middle of a write leaves a torn tail in the newest segment: [`LogStore::open`] cuts it off and logs what it
//! dropped (it was never acknowledged). A bad record in an older segment is damage, and the node refuses to
//! start, naming the segment and the offset.
//!
//! Reads go through [`LogReader`], which replication tasks clone: it looks the locations up under a read
//! lock, then reads the files without holding it. A purge deletes a segment a reader may still be reading;
//! the reader's open file stays readable on Linux.
//!
//! ## Upgrading
//! A data directory of format 1 has its log in sled's `raft-log` and `raft-meta` trees: the first
//! [`LogStore::open`] copies it into segments, syncs them, and only then drops the trees ([`legacy`]).

// openraft's traits return `StorageError` (over 200 bytes); the helpers here return the same type so that
// `?` passes it through unchanged, and errors are rare and fatal, so their size does not matter.
#![allow(clippy::result_large_err)]

mod durable;
mod flusher;
pub mod legacy;
pub mod segment;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, RaftLogReader, StorageError, StorageIOError, Vote};
use tandem_storage::{Database, SledDatabase};

use crate::purge_gate::PurgeGate;
use crate::types::{LogId, NodeId, TypeConfig, decode_exact, try_encode};
pub use durable::{DurablePosition, SyncFailed, spawn_commit_announcer};
use flusher::Flusher;
use segment::{End, HEADER_BYTES, Record, RecordKind, Segment};

/// A log entry as openraft hands it over.
pub type Entry = openraft::Entry<TypeConfig>;

/// [`RaftLogReader::limited_get_log_entries`] stops adding entries once this many encoded bytes are
/// collected (it always returns at least one entry), so one AppendEntries request stays a few MiB even when
/// it carries blob chunks.
pub const READ_LIMIT_BYTES: usize = 8 * 1024 * 1024;

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

/// The metrics the log store observes, once [`LogStore::with_metrics`] set them.
type Metrics = Arc<OnceLock<crate::metrics::ClusterMetrics>>;

/// Where an entry is.
#[derive(Clone, Debug)]
struct Location {
    segment: Arc<Segment>,
    offset: u64,
    len: usize,
    log_id: LogId,
    /// The encoded entry, while it is among the [`RECENT_ENTRIES`] last written by this process (and no
    /// larger than [`RECENT_ENTRY_BYTES`]): read from memory instead of the segment file.
    recent: Option<Bytes>,
}

/// How many of the last written entries are also kept in memory, encoded, for readers. Every entry is read
/// back right after it is written: by the leader's replication task to each follower and by the state
/// machine on every node (three `pread`s per entry on a leader of two followers); those reads come from
/// here. A few hundred cover a replication stream that is a little behind.
const RECENT_ENTRIES: usize = 512;
/// Larger entries (blob chunks) are always read from their segment.
const RECENT_ENTRY_BYTES: usize = 64 * 1024;
/// The most encoded bytes kept in memory that way (small entries of a few hundred bytes reach
/// [`RECENT_ENTRIES`] first).
const RECENT_BYTES: usize = 2 * 1024 * 1024;

/// Every entry in the log, by index.
type Index = BTreeMap<u64, Location>;

/// A live segment and the highest entry index it holds.
#[derive(Debug)]
struct SegmentInfo {
    segment: Arc<Segment>,
    max_index: Option<u64>,
}

/// The Raft log store of one node (see the module documentation).
pub struct LogStore {
    dir: PathBuf,
    /// The state machine's database: made durable before a purge.
    state: SledDatabase,
    index: Arc<RwLock<Index>>,
    segments: BTreeMap<u64, SegmentInfo>,
    active: Arc<Segment>,
    write_offset: u64,
    /// Segments written since the last flush request other than the active one (after a rotation).
    unsynced: Vec<Arc<Segment>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId>,
    /// `committed` changed since its last record: written in front of the next record (see the module docs).
    committed_unwritten: bool,
    last_purged: Option<LogId>,
    flusher: Flusher,
    metrics: Metrics,
    /// The size new segments are created with.
    segment_bytes: u64,
    /// Where purges wait for a durable snapshot that covers them, once [`LogStore::with_purge_gate`] set it.
    purge_gate: Option<PurgeGate>,
    /// The last entry a sync has covered ([`durable`]).
    durable: DurablePosition,
    /// This node's id, once [`LogStore::with_leader_early_ack`] set it: as leader it acknowledges its own
    /// entries to openraft when written, not when synced ([`durable`]).
    early_ack_as: Option<NodeId>,
    /// Set by [`LogStore::with_leader_early_ack`] when the saved vote was this node's, as leader.
    led_when_stopped: bool,
    /// The indexes whose [`Location::recent`] holds the entry, and its size, oldest first (at most
    /// [`RECENT_ENTRIES`] and [`RECENT_BYTES`]).
    recent: VecDeque<(u64, usize)>,
    recent_bytes: usize,
}

impl fmt::Debug for LogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore").field("dir", &self.dir).field("segments", &self.segments.len()).finish()
    }
}

/// A reader of the log, for openraft's replication tasks. Cheap to clone; sees every write of the
/// [`LogStore`] it came from at once.
#[derive(Clone)]
pub struct LogReader {
    index: Arc<RwLock<Index>>,
}

impl fmt::Debug for LogReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogReader").finish_non_exhaustive()
    }
}

/// `vote` if it is `me`'s as the leader of its term (committed: `me` won the election).
fn leading_vote(vote: Option<Vote<NodeId>>, me: NodeId) -> Option<Vote<NodeId>> {
    vote.filter(|vote| vote.is_committed() && vote.leader_id().voted_for() == Some(me))
}

fn write_error(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

fn read_error(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn corrupt(message: String) -> StorageError<NodeId> {
    StorageIOError::read_logs(AnyError::error(format!("the Raft log is damaged: {message}"))).into()
}

fn lock_error() -> StorageError<NodeId> {
    StorageIOError::read_logs(AnyError::error("the log index lock is poisoned (a thread panicked)")).into()
}

/// What replaying the records of the log gives.
#[derive(Default)]
struct Replayed {
    index: Index,
    max_index: BTreeMap<u64, u64>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
}

impl Replayed {
    fn apply(&mut self, segment: &Arc<Segment>, record: Record) -> std::result::Result<(), String> {
        let payload = &record.payload;
        match record.kind {
            RecordKind::Entry => {
                let config = bincode::config::standard().with_limit::<1024>();
                let (log_id, _): (LogId, _) = bincode::serde::decode_from_slice(payload, config)
                    .map_err(|e| format!("an entry's log id does not decode: {e}"))?;
                // Entries are appended in order: an entry past the one after the previous entry means entries
                // are missing (the start of the oldest segment may follow entries of segments a purge deleted:
                // the purge record comes later, so only a gap after an entry read here is one).
                if let Some(&last) = self.index.keys().next_back()
                    && log_id.index > last + 1
                {
                    return Err(format!(
                        "entry {} follows entry {last}: the entries between are missing",
                        log_id.index
                    ));
                }
                self.index.split_off(&log_id.index);
                let location = Location {
                    segment: segment.clone(),
                    offset: record.payload_offset,
                    len: payload.len(),
                    log_id,
                    recent: None,
                };
                self.index.insert(log_id.index, location);
                let max = self.max_index.entry(segment.sequence).or_default();
                *max = (*max).max(log_id.index);
            }
            RecordKind::Vote => {
                self.vote = Some(decode_exact(payload).map_err(|e| format!("the vote does not decode: {e}"))?)
            }
            RecordKind::Committed => {
                self.committed =
                    decode_exact(payload).map_err(|e| format!("the committed id does not decode: {e}"))?
            }
            RecordKind::Purged => {
                let purged: LogId =
                    decode_exact(payload).map_err(|e| format!("the purged id does not decode: {e}"))?;
                self.index = self.index.split_off(&(purged.index + 1));
                self.last_purged = self.last_purged.max(Some(purged));
            }
            RecordKind::Truncate => {
                let from: [u8; 8] =
                    payload.as_slice().try_into().map_err(|_| "a truncation is not 8 bytes".to_string())?;
                self.index.split_off(&u64::from_le_bytes(from));
            }
        }
        Ok(())
    }
}

impl LogStore {
    /// Opens (creating if needed) the log in `dir`: replays its segments, cuts a torn tail off the newest
    /// one, and copies a format-1 log out of `state`'s sled trees if `dir` has no segment yet. `state` is the
    /// state machine's database, made durable before every purge.
    pub fn open(dir: &Path, state: SledDatabase) -> Result<LogStore> {
        Self::open_with_segment_bytes(dir, state, segment::SEGMENT_BYTES)
    }

    /// [`LogStore::open`], creating new segments with `segment_bytes` each (tests and experiments: small
    /// segments make rotation and purging by deleting segments cheap to exercise).
    pub fn open_with_segment_bytes(dir: &Path, state: SledDatabase, segment_bytes: u64) -> Result<LogStore> {
        std::fs::create_dir_all(dir).map_err(write_error)?;
        if legacy::exists(&state) {
            // An unfinished copy out of a format-1 database: start it again (see `legacy`).
            for sequence in segment::list(dir).map_err(read_error)? {
                std::fs::remove_file(segment::segment_path(dir, sequence)).map_err(write_error)?;
            }
        }
        let sequences = segment::list(dir).map_err(read_error)?;
        let metrics = Metrics::default();
        let flusher = Flusher::start(metrics.clone()).map_err(write_error)?;
        let mut replayed = Replayed::default();
        let mut segments = BTreeMap::new();
        let mut write_offset = HEADER_BYTES;
        for (position, &sequence) in sequences.iter().enumerate() {
            let path = segment::segment_path(dir, sequence);
            let segment = Arc::new(Segment::open(&path, sequence, segment_bytes).map_err(read_error)?);
            let end = segment::scan(&segment, |record| {
                let offset = record.payload_offset;
                replayed
                    .apply(&segment, record)
                    .map_err(|why| segment::ScanError::damaged(&segment.path, offset, why))
            })
            .map_err(read_error)?;
            if let End::Bad(offset, why) = &end {
                if position + 1 < sequences.len() {
                    return Err(corrupt(format!(
                        "segment {} has a bad record at offset {offset} ({why}), and newer segments follow it: \
                         acknowledged entries are unreadable. Do not restart this node on this directory: \
                         move the data directory aside and add the node back as a new member (docs/cluster.md), \
                         or restore a backup",
                        path.display()
                    )));
                }
                cut_torn_tail(&segment, *offset, why).map_err(write_error)?;
            }
            write_offset = end.offset();
            let max_index = replayed.max_index.get(&sequence).copied();
            segments.insert(sequence, SegmentInfo { segment, max_index });
        }
        // What a crash of the process left in the page cache is read back as the log, but it may never have
        // reached the disk: sync it before anything counts on it (a follower reporting an entry it holds, the
        // durable position below).
        for info in segments.values() {
            info.segment.file.sync_data().map_err(write_error)?;
        }
        let migrate = legacy::take(&state)?;
        let active = match segments.last_key_value() {
            Some((_, info)) => info.segment.clone(),
            None => {
                let segment = Arc::new(Segment::create(dir, 1, segment_bytes, 0).map_err(write_error)?);
                segments.insert(1, SegmentInfo { segment: segment.clone(), max_index: None });
                segment
            }
        };
        let mut store = LogStore {
            dir: dir.to_path_buf(),
            state,
            index: Arc::new(RwLock::new(replayed.index)),
            segments,
            active,
            write_offset,
            unsynced: Vec::new(),
            vote: replayed.vote,
            committed: replayed.committed,
            committed_unwritten: false,
            last_purged: replayed.last_purged,
            flusher,
            metrics,
            segment_bytes,
            purge_gate: None,
            durable: DurablePosition::new(None),
            early_ack_as: None,
            recent: VecDeque::new(),
            recent_bytes: 0,
            led_when_stopped: false,
        };
        if let Some(old) = migrate {
            store.import_legacy(old)?;
        }
        // Synced above (or by the import): all of it is durable.
        let last = store.last_log_id()?;
        store.durable.written_to(last);
        if let Some(last) = last {
            store.durable.advance(last);
        }
        Ok(store)
    }

    /// Copies a format-1 log in, durably, then drops the sled trees it came from.
    fn import_legacy(&mut self, old: legacy::LegacyLog) -> Result<()> {
        tracing::info!(
            entries = old.entries.len(),
            "moving the Raft log out of the sled database into segment files (data directory format 1 to 2)"
        );
        if let Some(vote) = &old.vote {
            self.vote = Some(*vote);
        }
        self.committed = old.committed;
        self.last_purged = old.last_purged;
        let meta = self.meta_records()?;
        self.write_synced(meta)?;
        for chunk in old.entries.chunks(256) {
            self.write_entries(chunk)?;
            self.sync_now()?;
        }
        legacy::drop_trees(&self.state)
    }

    /// The id of the last entry in the log (or the last purged one when the log is empty).
    pub fn last_log_id(&self) -> Result<Option<LogId>> {
        Ok(self.reader().last_log_id()?.or(self.last_purged))
    }

    /// The segment files the log is in now, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments.values().map(|info| info.segment.path.clone()).collect()
    }

    /// A reader of this log.
    pub fn reader(&self) -> LogReader {
        LogReader { index: self.index.clone() }
    }

    /// Makes every purge wait until a durable snapshot covers it (see [`crate::purge_gate`]). A node always
    /// sets it; without it (openraft's storage test suite purges logs with no snapshot at all) a purge only
    /// makes the state machine's database durable first.
    pub fn with_purge_gate(mut self, gate: PurgeGate) -> Self {
        self.purge_gate = Some(gate);
        self
    }

    /// Lets this node, as leader, acknowledge its own entries to openraft once written rather than once
    /// synced, so that its flush overlaps the followers' (see [`durable`]). Whoever makes commits visible
    /// must then wait for [`LogStore::durable_position`]: the state machine and the commit index sent to
    /// followers. Without it (openraft's storage test suite, offline tools) every append is acknowledged
    /// when synced.
    ///
    /// A node that led when it stopped comes back as a candidate of its old term, not as its leader: its
    /// saved vote is read as not committed. openraft 0.9 would otherwise resume leading the same term
    /// (`Engine::startup`), and after a power cut that took the tail its flush had not covered, number new
    /// entries with the log ids of entries it had already sent: a follower holding the old entry under the
    /// same id keeps it and acknowledges the new one (Raft's log matching relies on one id naming one
    /// entry). A new term gives new ids; the price is an election after a leader restarts.
    pub fn with_leader_early_ack(mut self, node_id: NodeId) -> Self {
        self.early_ack_as = Some(node_id);
        if let Some(vote) = leading_vote(self.vote, node_id) {
            self.vote = Some(Vote::new(vote.leader_id().term, node_id));
            self.led_when_stopped = true;
        }
        self
    }

    /// Whether this node led when it stopped (and so comes back as a candidate, see
    /// [`LogStore::with_leader_early_ack`]): the caller triggers its election at once rather than after an
    /// election timeout, so that a single node is back to taking writes as soon as it starts.
    pub fn led_when_stopped(&self) -> bool {
        self.led_when_stopped
    }

    /// The last entry a sync has covered, advancing as syncs complete.
    pub fn durable_position(&self) -> DurablePosition {
        self.durable.clone()
    }

    /// Whether `entries` are this node's own, appended as the leader of their term with its vote committed,
    /// and carry no membership change: the only entries acknowledged before they are synced.
    fn may_ack_early(&self, entries: &[Entry]) -> bool {
        let Some(vote) = self.early_ack_as.and_then(|me| leading_vote(self.vote, me)) else { return false };
        entries.iter().all(|entry| {
            entry.log_id.leader_id.term == vote.leader_id().term
                && !matches!(entry.payload, openraft::EntryPayload::Membership(_))
        })
    }

    /// Observes every durable step in `metrics`.
    pub fn with_metrics(self, metrics: crate::metrics::ClusterMetrics) -> Self {
        let _ = self.metrics.set(metrics);
        self
    }

    /// Appends entries while Raft is not running (offline recovery), durably. The caller guarantees that
    /// they follow the last entry.
    pub fn append_offline(&mut self, entries: &[Entry]) -> Result<()> {
        self.write_entries(entries)?;
        self.sync_now()?;
        if let Some(last) = self.last_log_id()? {
            self.durable.advance(last);
        }
        Ok(())
    }

    /// The records that start every new segment: the vote, the committed and the purged log id.
    fn meta_records(&self) -> Result<Vec<(RecordKind, Vec<u8>)>> {
        let mut records = Vec::new();
        if let Some(vote) = &self.vote {
            records.push((RecordKind::Vote, try_encode(vote).map_err(write_error)?));
        }
        records.push((RecordKind::Committed, try_encode(&self.committed).map_err(write_error)?));
        if let Some(purged) = &self.last_purged {
            records.push((RecordKind::Purged, try_encode(purged).map_err(write_error)?));
        }
        Ok(records)
    }

    /// Writes records at the end of the log (rotating to a new segment when the active one is full) and
    /// returns where each payload went. Nothing is synced.
    fn write(&mut self, mut records: Vec<(RecordKind, Vec<u8>)>) -> Result<Vec<(Arc<Segment>, u64)>> {
        let committed_first = self.committed_unwritten;
        if committed_first {
            records.insert(0, (RecordKind::Committed, try_encode(&self.committed).map_err(write_error)?));
        }
        let mut buffer = Vec::new();
        let mut places = Vec::with_capacity(records.len());
        for (kind, payload) in records {
            let framed = segment::framed_len(payload.len());
            if self.write_offset + buffer.len() as u64 + framed > self.active.capacity {
                self.write_buffer(&mut buffer)?;
                self.rotate(framed)?;
                for (kind, payload) in self.meta_records()? {
                    segment::frame(&mut buffer, kind, &payload).map_err(write_error)?;
                }
            }
            let offset = self.write_offset + buffer.len() as u64 + segment::RECORD_HEADER_BYTES as u64;
            segment::frame(&mut buffer, kind, &payload).map_err(write_error)?;
            places.push((self.active.clone(), offset));
        }
        self.write_buffer(&mut buffer)?;
        self.committed_unwritten = false;
        if committed_first {
            places.remove(0);
        }
        Ok(places)
    }

    fn write_buffer(&mut self, buffer: &mut Vec<u8>) -> Result<()> {
        if !buffer.is_empty() {
            self.active.file.write_all_at(buffer, self.write_offset).map_err(write_error)?;
            self.write_offset += buffer.len() as u64;
            buffer.clear();
        }
        Ok(())
    }

    /// Starts a new active segment with room for a record of `framed` bytes (plus the meta copies, a few
    /// hundred bytes).
    fn rotate(&mut self, framed: u64) -> Result<()> {
        // The outgoing segment is synced before anything goes into the next one. Otherwise the kernel could
        // write the new segment back before the old one's unsynced tail (a leader's early-acknowledged
        // entries), and a power cut would leave a hole in the middle of the log.
        {
            let _timer = self.metrics.get().map(|m| m.fsync_seconds.start_timer());
            self.active.file.sync_data().map_err(write_error)?;
        }
        let sequence = self.active.sequence + 1;
        let segment = Arc::new(
            Segment::create(&self.dir, sequence, self.segment_bytes, framed + 512).map_err(write_error)?,
        );
        self.unsynced.push(std::mem::replace(&mut self.active, segment.clone()));
        self.segments.insert(sequence, SegmentInfo { segment, max_index: None });
        self.write_offset = HEADER_BYTES;
        Ok(())
    }

    /// Writes entries and records where they are.
    fn write_entries(&mut self, entries: &[Entry]) -> Result<()> {
        let mut records = Vec::with_capacity(entries.len());
        let mut kept = Vec::with_capacity(entries.len());
        for entry in entries {
            let bytes = try_encode(entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, AnyError::new(&e)))?;
            kept.push((bytes.len() <= RECENT_ENTRY_BYTES).then(|| Bytes::copy_from_slice(&bytes)));
            records.push((RecordKind::Entry, bytes));
        }
        let sizes: Vec<usize> = records.iter().map(|(_, bytes)| bytes.len()).collect();
        let places = self.write(records)?;
        let mut index = self.index.write().map_err(|_| lock_error())?;
        for (((entry, (segment, offset)), len), recent) in entries.iter().zip(places).zip(sizes).zip(kept) {
            let at = entry.log_id.index;
            index.split_off(&at);
            if let Some(info) = self.segments.get_mut(&segment.sequence) {
                info.max_index = Some(info.max_index.map_or(at, |max| max.max(at)));
            }
            if recent.is_some() {
                self.recent.push_back((at, len));
                self.recent_bytes += len;
            }
            index.insert(at, Location { segment, offset, len, log_id: entry.log_id, recent });
        }
        while self.recent.len() > RECENT_ENTRIES || self.recent_bytes > RECENT_BYTES {
            let Some((old, len)) = self.recent.pop_front() else { break };
            self.recent_bytes -= len;
            // An index cut or purged meanwhile is simply gone (or rewritten, and then dropped a little early).
            if let Some(location) = index.get_mut(&old) {
                location.recent = None;
            }
        }
        if let Some(last) = entries.last() {
            self.durable.written_to(Some(last.log_id));
        }
        Ok(())
    }

    /// The segments a sync must cover now.
    fn take_unsynced(&mut self) -> Vec<Arc<Segment>> {
        let mut segments = std::mem::take(&mut self.unsynced);
        segments.push(self.active.clone());
        segments
    }

    /// Syncs everything written so far on the calling thread (offline use).
    fn sync_now(&mut self) -> Result<()> {
        flusher::sync_segments(&self.take_unsynced(), &self.metrics).map_err(write_error)
    }

    /// Syncs everything written so far on the flusher thread; returns once it is durable.
    async fn synced(&mut self) -> std::result::Result<(), io::Error> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let segments = self.take_unsynced();
        let durable = self.durable.clone();
        let last = self.last_log_id().map_err(io::Error::other)?;
        self.flusher.submit(
            segments,
            Box::new(move |result| {
                durable.synced(&result, last);
                let _ = done.send(result);
            }),
        )?;
        wait.await.map_err(|_| io::Error::other("the log flusher thread stopped"))?
    }

    fn write_synced(&mut self, records: Vec<(RecordKind, Vec<u8>)>) -> Result<()> {
        self.write(records)?;
        self.sync_now()
    }

    /// Deletes the oldest segments that hold no entry past `index` (never the active one).
    fn delete_segments_up_to(&mut self, index: u64) -> Result<()> {
        let mut deleted = false;
        while let Some((&sequence, info)) = self.segments.first_key_value() {
            if sequence == self.active.sequence || info.max_index.is_some_and(|max| max > index) {
                break;
            }
            std::fs::remove_file(&info.segment.path).map_err(write_error)?;
            self.segments.remove(&sequence);
            deleted = true;
        }
        if deleted {
            segment::sync_dir(&self.dir).map_err(write_error)?;
        }
        Ok(())
    }
}

/// Cuts a torn tail off the newest segment: everything from `offset` on becomes zeros again, durably.
fn cut_torn_tail(segment: &Segment, offset: u64, why: &str) -> io::Result<()> {
    tracing::warn!(
        segment = %segment.path.display(),
        offset,
        reason = why,
        "the Raft log ends in a torn write (a crash during a write): cutting it off; it was never acknowledged"
    );
    segment.file.set_len(offset)?;
    segment::preallocate(&segment.file, segment.capacity)?;
    segment.file.sync_all()
}

impl LogReader {
    /// Reads the entries with `start <= index < end` (`end` unbounded when `None`). With a `byte_limit`,
    /// stops before the first entry that begins once that many bytes were collected (so at least one is
    /// returned).
    fn read(&self, start: u64, end: Option<u64>, byte_limit: Option<usize>) -> Result<Vec<Entry>> {
        let locations: Vec<Location> = {
            let index = self.index.read().map_err(|_| lock_error())?;
            let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
            if end.is_some_and(|end| end <= start) {
                return Ok(Vec::new());
            }
            index.range((Bound::Included(start), upper)).map(|(_, location)| location.clone()).collect()
        };
        let mut entries = Vec::with_capacity(locations.len());
        let mut collected = 0usize;
        for location in locations {
            if byte_limit.is_some_and(|limit| collected >= limit) {
                break;
            }
            let bytes = match location.recent {
                Some(bytes) => bytes,
                None => Bytes::from(
                    location
                        .segment
                        .read_payload(location.offset, location.len)
                        .map_err(|e| corrupt(e.to_string()))?,
                ),
            };
            let entry: Entry = decode_exact(&bytes).map_err(|e| {
                corrupt(format!(
                    "entry {} in {} at offset {} does not decode: {e}",
                    location.log_id.index,
                    location.segment.path.display(),
                    location.offset
                ))
            })?;
            if entry.log_id != location.log_id {
                return Err(corrupt(format!(
                    "the entry stored for {} reads back as {}",
                    location.log_id, entry.log_id
                )));
            }
            collected += location.len;
            entries.push(entry);
        }
        Ok(entries)
    }

    fn last_log_id(&self) -> Result<Option<LogId>> {
        let index = self.index.read().map_err(|_| lock_error())?;
        Ok(index.last_key_value().map(|(_, location)| location.log_id))
    }
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

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>> {
        let (start, end) = bounds(&range);
        self.read(start, end, None)
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>> {
        self.read(start, Some(end), Some(READ_LIMIT_BYTES))
    }
}

impl Drop for LogStore {
    /// A clean stop writes the last committed id (not synced): a restart applies every committed entry at
    /// once, without waiting for a leader to announce the commit again.
    fn drop(&mut self) {
        if self.committed_unwritten
            && let Err(error) = self.write(Vec::new())
        {
            tracing::warn!(%error, "could not write the last committed log id at shutdown");
        }
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
        let last_log_id = self.reader().last_log_id()?.or(self.last_purged);
        Ok(LogState { last_purged_log_id: self.last_purged, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<()> {
        let bytes = try_encode(vote).map_err(|e| StorageIOError::write_vote(AnyError::new(&e)))?;
        self.write(vec![(RecordKind::Vote, bytes)])?;
        self.vote = Some(*vote);
        self.synced().await.map_err(|e| StorageIOError::write_vote(AnyError::new(&e)))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>> {
        Ok(self.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<()> {
        if committed != self.committed {
            self.committed = committed;
            self.committed_unwritten = true;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>> {
        // A committed id past the log (its entries were cut as a torn tail) would make openraft apply
        // entries that are not there: never report more than the log holds.
        let last = self.reader().last_log_id()?.or(self.last_purged);
        Ok(self.committed.min(last))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.write_entries(&entries)?;
        let last = entries.last().map(|entry| entry.log_id);
        let segments = self.take_unsynced();
        let durable = self.durable.clone();
        if self.may_ack_early(&entries) {
            // The leader's own entries: openraft may replicate them while they are synced (see `durable`).
            callback.log_io_completed(Ok(()));
            let submitted = self
                .flusher
                .submit_early_acknowledged(segments, Box::new(move |result| durable.synced(&result, last)));
            return submitted.map_err(write_error);
        }
        // Synced here when the flusher is idle (always so on a follower), else by the flusher; openraft waits
        // for the callback, not for this method.
        let synced = self.flusher.sync_or_submit(
            segments,
            Box::new(move |result| {
                durable.synced(&result, last);
                callback.log_io_completed(result)
            }),
        );
        synced.map_err(write_error)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<()> {
        self.write(vec![(RecordKind::Truncate, log_id.index.to_le_bytes().to_vec())])?;
        self.index.write().map_err(|_| lock_error())?.split_off(&log_id.index);
        self.durable.written_to(self.last_log_id()?);
        self.synced().await.map_err(write_error)?;
        self.durable.cut_back(self.last_log_id()?);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<()> {
        if self.last_purged.is_some_and(|purged| purged >= log_id) {
            return Ok(());
        }
        if let Some(gate) = &mut self.purge_gate {
            if gate.durable() < Some(log_id) {
                tracing::info!(upto = %log_id, "the log waits to purge until the snapshot being installed is durable");
            }
            gate.wait_covers(log_id).await.map_err(write_error)?;
        }
        // The state the snapshot behind this purge was built from must be on disk before the entries go. But
        // first the log itself, so that the durable state machine is never ahead of the durable log (which
        // openraft accepts after a crash only when a snapshot covers it). The state machine applies only
        // synced entries now (`durable`), so this sync is a safeguard that costs one flush per purge.
        self.synced().await.map_err(write_error)?;
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || state.durable())
            .await
            .map_err(|e| write_error(io::Error::other(e.to_string())))?
            .map_err(write_error)?;
        self.write(vec![(RecordKind::Purged, try_encode(&log_id).map_err(write_error)?)])?;
        self.last_purged = Some(log_id);
        self.synced().await.map_err(write_error)?;
        {
            let mut index = self.index.write().map_err(|_| lock_error())?;
            *index = index.split_off(&(log_id.index + 1));
        }
        // Purged entries are covered by a durable snapshot: the position never names one older (a log cut
        // short by a snapshot install may have held entries the snapshot replaced).
        self.durable.advance(log_id);
        self.delete_segments_up_to(log_id.index)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::{CommittedLeaderId, EntryPayload, Membership};

    use super::*;
    use crate::types::NodeInfo;

    fn entry(term: u64, index: u64, payload: EntryPayload<TypeConfig>) -> Entry {
        Entry { log_id: LogId::new(CommittedLeaderId::new(term, 0), index), payload }
    }

    #[test]
    fn a_node_that_led_comes_back_as_a_candidate_of_its_term() {
        let dir = tempfile::tempdir().unwrap();
        let database = SledDatabase::open(&dir.path().join("db")).unwrap();
        let mut log = LogStore::open(&dir.path().join("raft-log"), database.clone()).unwrap();
        log.write_synced(vec![(RecordKind::Vote, try_encode(&Vote::<NodeId>::new_committed(4, 1)).unwrap())])
            .unwrap();
        drop(log);
        let log = LogStore::open(&dir.path().join("raft-log"), database.clone()).unwrap();
        assert_eq!(log.vote, Some(Vote::new_committed(4, 1)), "without early acknowledgement: as saved");
        let log = log.with_leader_early_ack(2);
        assert_eq!(log.vote, Some(Vote::new_committed(4, 1)), "node 2 followed node 1");
        assert!(!log.led_when_stopped());
        drop(log);
        let log = LogStore::open(&dir.path().join("raft-log"), database).unwrap().with_leader_early_ack(1);
        assert_eq!(
            log.vote,
            Some(Vote::new(4, 1)),
            "node 1 led term 4: it must win a new term before it appends"
        );
        assert!(log.led_when_stopped());
    }

    #[tokio::test]
    async fn the_committed_id_rides_with_the_next_record_or_the_clean_stop() {
        let dir = tempfile::tempdir().unwrap();
        let database = SledDatabase::open(&dir.path().join("db")).unwrap();
        let path = dir.path().join("raft-log");
        let blank = |index| entry(1, index, EntryPayload::Blank);
        let mut log = LogStore::open(&path, database.clone()).unwrap();
        log.append_offline(&[blank(1), blank(2)]).unwrap();
        log.save_committed(Some(blank(1).log_id)).await.unwrap();
        let written = log.write_offset;
        log.save_committed(Some(blank(2).log_id)).await.unwrap();
        assert_eq!(log.write_offset, written, "nothing written for the commit itself");
        assert_eq!(log.read_committed().await.unwrap(), Some(blank(2).log_id));
        log.append_offline(&[blank(3)]).unwrap();
        assert!(!log.committed_unwritten, "written in front of entry 3");
        // A crash now (no clean stop) keeps what was written: the id in front of entry 3.
        std::mem::forget(log);
        let mut log = LogStore::open(&path, database.clone()).unwrap();
        assert_eq!(log.read_committed().await.unwrap(), Some(blank(2).log_id));
        log.save_committed(Some(blank(3).log_id)).await.unwrap();
        drop(log);
        let mut log = LogStore::open(&path, database).unwrap();
        assert_eq!(log.read_committed().await.unwrap(), Some(blank(3).log_id), "written at the clean stop");
    }

    #[test]
    fn a_gap_between_entries_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let database = SledDatabase::open(&dir.path().join("db")).unwrap();
        let mut log = LogStore::open(&dir.path().join("raft-log"), database.clone()).unwrap();
        let blank = |index| entry(1, index, EntryPayload::Blank);
        log.append_offline(&[blank(1), blank(2), blank(3)]).unwrap();
        // What a power cut could leave if a later segment reached the disk before an earlier one's tail.
        log.append_offline(&[blank(5)]).unwrap();
        drop(log);
        let error = LogStore::open(&dir.path().join("raft-log"), database).unwrap_err().to_string();
        assert!(error.contains("entry 5 follows entry 3"), "{error}");
    }

    #[test]
    fn only_a_leaders_own_entries_are_acknowledged_before_they_are_synced() {
        let dir = tempfile::tempdir().unwrap();
        let database = SledDatabase::open(&dir.path().join("db")).unwrap();
        let mut log = LogStore::open(&dir.path().join("raft-log"), database).unwrap();
        let blank = |term, index| entry(term, index, EntryPayload::Blank);
        let own = [blank(3, 7), blank(3, 8)];

        log.vote = Some(Vote::new_committed(3, 1));
        assert!(!log.may_ack_early(&own), "not enabled: every append waits for its sync");

        let mut log = log.with_leader_early_ack(1);
        // Elected again (openraft saves the committed vote): its own entries may go early.
        log.vote = Some(Vote::new_committed(3, 1));
        assert!(log.may_ack_early(&own));
        let membership = Membership::new(vec![BTreeSet::from([1, 2])], BTreeMap::<NodeId, NodeInfo>::new());
        assert!(
            !log.may_ack_early(&[blank(3, 7), entry(3, 8, EntryPayload::Membership(membership))]),
            "a membership change waits for its sync"
        );
        assert!(!log.may_ack_early(&[blank(2, 7)]), "an entry of an earlier term (from another leader)");

        log.vote = Some(Vote::new(3, 1));
        assert!(!log.may_ack_early(&own), "a vote not yet committed: not the leader");
        log.vote = Some(Vote::new_committed(3, 2));
        assert!(!log.may_ack_early(&own), "node 2 leads: node 1 is a follower and acknowledges once synced");
        log.vote = None;
        assert!(!log.may_ack_early(&own));
    }

    #[test]
    fn range_bounds_convert() {
        assert_eq!(bounds(&(3..7)), (3, Some(7)));
        assert_eq!(bounds(&(3..=7)), (3, Some(8)));
        assert_eq!(bounds(&(..)), (0, None));
        assert_eq!(bounds(&(5..)), (5, None));
        assert_eq!(bounds(&(..=u64::MAX)), (0, None));
    }
}

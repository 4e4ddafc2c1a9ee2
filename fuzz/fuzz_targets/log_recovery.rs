//! Raft log recovery: [`LogStore::open`] over a segment file with a valid header and fuzzed records (record
//! framing, CRCs, kinds, the replay of entries, votes, committed and purged ids, truncations, cutting a torn
//! tail), then reading back every entry the index points at, the vote and the committed id, and opening the
//! log a second time (what recovery left behind must open the same way).
//!
//! Input: one flag byte, then the records that follow the segment header. Flag bit 0: the fuzzed segment is
//! followed by a newer, empty segment, so that a bad record in it is damage rather than a torn tail.
//!
//! New segments are created with 4 KiB instead of 64 MiB (`LogStore::open_with_segment_bytes`), and the
//! files live in /dev/shm when it exists: cutting a torn tail preallocates and fsyncs, which on a disk costs
//! milliseconds per input.
//!
//! With `TANDEM_FUZZ_SEEDS=DIR` set, the target first writes seed inputs built with a real log store into DIR.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use futures_executor::block_on;
use libfuzzer_sys::fuzz_target;
use openraft::storage::RaftLogStorage;
use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftLogReader, Vote};
use serde_json::json;
use tandem_cluster::log_store::Entry;
use tandem_cluster::types::LogId;
use tandem_cluster::{LogStore, NodeInfo, Request};
use tandem_storage::{ChangeMeta, ChangeSet, Command, SledDatabase};

const SEGMENT_BYTES: u64 = 4096;

fn scratch() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).expect("a temp dir"))
}

/// The state machine's database the log store is opened with (it only syncs it before a purge).
fn database() -> SledDatabase {
    static DATABASE: OnceLock<SledDatabase> = OnceLock::new();
    DATABASE.get_or_init(|| SledDatabase::open(&scratch().path().join("db")).expect("a database")).clone()
}

/// A segment header (see `cluster/src/log_store/segment.rs`).
fn header(sequence: u64) -> Vec<u8> {
    let mut head = vec![0u8; 32];
    head[..8].copy_from_slice(b"TNDMRLOG");
    head[8..12].copy_from_slice(&1u32.to_le_bytes());
    head[16..24].copy_from_slice(&sequence.to_le_bytes());
    let crc = crc32c::crc32c(&head[..24]);
    head[24..28].copy_from_slice(&crc.to_le_bytes());
    head
}

fn segment_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{sequence:020}.seg"))
}

/// What an opened log holds, to compare two openings.
fn contents(log: &mut LogStore) -> (Option<LogId>, Option<Vote<u64>>, Option<LogId>, usize) {
    let state = block_on(log.get_log_state());
    let vote = block_on(log.read_vote());
    let committed = block_on(log.read_committed());
    let entries = block_on(log.try_get_log_entries(..));
    (
        state.ok().and_then(|s| s.last_log_id),
        vote.ok().flatten(),
        committed.ok().flatten(),
        entries.map_or(usize::MAX, |e| e.len()),
    )
}

fn write_seeds(out: &Path) {
    std::fs::create_dir_all(out).expect("the seed directory");
    let dir = tempfile::tempdir().expect("a temp dir");
    let log_dir = dir.path().join("log");
    let database = SledDatabase::open(&dir.path().join("db")).expect("a database");
    let mut log = LogStore::open_with_segment_bytes(&log_dir, database, 1 << 20).expect("a log");
    let leader = CommittedLeaderId::new(1, 1);
    block_on(log.save_vote(&Vote::new(1, 1))).expect("a vote");
    let nodes = BTreeMap::from([(1, NodeInfo { name: "a".into(), ..NodeInfo::default() })]);
    let change = ChangeSet::new(ChangeMeta { actor: "seed".into(), ..ChangeMeta::default() }).put(
        "terminal_servers",
        "ts1",
        json!({"address": "10.0.0.5"}),
    );
    let entries = vec![
        Entry { log_id: LogId::new(leader, 1), payload: EntryPayload::Blank },
        Entry {
            log_id: LogId::new(leader, 2),
            payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1])], nodes)),
        },
        Entry {
            log_id: LogId::new(leader, 3),
            payload: EntryPayload::Normal(Request::one(Command::Change(change))),
        },
        Entry {
            log_id: LogId::new(leader, 4),
            payload: EntryPayload::Normal(Request::one(Command::BlobChunk {
                upload: 7,
                chunk: 0,
                data: vec![1; 40],
            })),
        },
    ];
    log.append_offline(&entries).expect("entries");
    block_on(log.save_committed(Some(LogId::new(leader, 3)))).expect("committed");
    block_on(log.truncate(LogId::new(leader, 4))).expect("a truncation");
    // A purge makes the state machine durable on tokio's blocking pool.
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    runtime.block_on(log.purge(LogId::new(leader, 1))).expect("a purge");
    drop(log);
    let bytes = std::fs::read(segment_path(&log_dir, 1)).expect("the segment");
    let end = bytes.iter().rposition(|&b| b != 0).map_or(32, |i| i + 1).max(32);
    let records = &bytes[32..end];
    std::fs::write(out.join("entries-vote-committed-truncate-purge"), [&[0u8][..], records].concat())
        .unwrap();
    std::fs::write(out.join("older-segment"), [&[1u8][..], records].concat()).unwrap();
}

fuzz_target!(
    init: {
        if let Some(dir) = std::env::var_os("TANDEM_FUZZ_SEEDS") {
            write_seeds(&PathBuf::from(dir));
        }
    },
    |data: &[u8]| {
    let Some((&flags, records)) = data.split_first() else { return };
    let dir = tempfile::tempdir_in(scratch().path()).expect("a log directory");
    std::fs::write(segment_path(dir.path(), 1), [header(1).as_slice(), records].concat()).expect("the segment");
    if flags & 1 == 1 {
        std::fs::write(segment_path(dir.path(), 2), header(2)).expect("the newer segment");
    }
    let Ok(mut log) = LogStore::open_with_segment_bytes(dir.path(), database(), SEGMENT_BYTES) else { return };
    let first = contents(&mut log);
    drop(log);
    let mut log = LogStore::open_with_segment_bytes(dir.path(), database(), SEGMENT_BYTES)
        .expect("a log that opened once opens again");
    assert_eq!(first, contents(&mut log), "the second opening differs");
});

//! What openraft's suite does not check: normal entries through the state machine (outcomes, revisions, one
//! batch), the applied position and the log surviving a reopen, truncate and purge surviving a reopen, a
//! snapshot carrying real data to another node, snapshots living in files (one kept, streamed from file to
//! file, leftovers deleted at start), and the size limit of replication reads.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader, RaftSnapshotBuilder, Vote,
};
use serde_json::json;
use tandem_cluster::{LogStore, NodeId, Request, StateMachine, TypeConfig};
use tandem_storage::snapshot::verify_snapshot;
use tandem_storage::{
    ChangeMeta, ChangeSet, Command, Digest, DocKey, Outcome, Revision, SledDatabase, Store, StoreOptions,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn blank(index: u64) -> Entry<TypeConfig> {
    Entry { log_id: log_id(1, index), payload: EntryPayload::Blank }
}

fn command(index: u64, command: Command) -> Entry<TypeConfig> {
    Entry { log_id: log_id(1, index), payload: EntryPayload::Normal(Request::one(command)) }
}

fn put(index: u64, id: &str, request_id: &str) -> Entry<TypeConfig> {
    let meta = ChangeMeta {
        actor: "test".into(),
        reason: String::new(),
        timestamp_ms: 1_700_000_000_000,
        request_id: Some(request_id.into()),
        ..ChangeMeta::default()
    };
    let change =
        ChangeSet::new(meta).put("terminal_servers", id, json!({"address": "10.0.0.5", "port": 3389}));
    command(index, Command::Change(change))
}

fn membership(index: u64, voters: &[NodeId]) -> Entry<TypeConfig> {
    let voters: BTreeSet<NodeId> = voters.iter().copied().collect();
    Entry { log_id: log_id(1, index), payload: EntryPayload::Membership(Membership::new(vec![voters], ())) }
}

/// A node's storage: the log store and the state machine over one sled database in `dir/db`, with the
/// snapshot files in `dir/snapshots` (as `tandem serve` lays out a data directory).
fn open(dir: &Path) -> (LogStore, StateMachine, tokio::sync::watch::Receiver<Revision>) {
    let database = SledDatabase::open(&dir.join("db")).unwrap();
    let store = Store::open_database(Arc::new(database.clone()), &dir.join("blobs"), StoreOptions::default())
        .unwrap();
    let log = LogStore::open(&dir.join("raft-log"), database).unwrap();
    let (state_machine, applied) =
        StateMachine::new(Arc::new(RwLock::new(store)), dir.join("snapshots")).unwrap();
    (log, state_machine, applied)
}

/// The names of the files in `dir` that end with `suffix`, sorted.
fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(suffix))
        .collect();
    names.sort();
    names
}

/// Everything in a snapshot file handed out by the state machine, from its start.
async fn read_snapshot(file: &mut tokio::fs::File) -> Vec<u8> {
    file.seek(std::io::SeekFrom::Start(0)).await.unwrap();
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).await.unwrap();
    bytes
}

/// The commands of one client write each, packed into one entry by the leader's proposer.
fn packed(index: u64, entries: Vec<Entry<TypeConfig>>) -> Entry<TypeConfig> {
    let commands = entries
        .into_iter()
        .flat_map(|entry| match entry.payload {
            EntryPayload::Normal(request) => request.commands,
            _ => vec![],
        })
        .collect();
    Entry { log_id: log_id(1, index), payload: EntryPayload::Normal(Request { commands }) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_of_several_writes_answers_each_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, applied) = open(dir.path());
    let responses = sm
        .apply(vec![
            membership(1, &[1]),
            packed(2, vec![put(0, "ts1", "r1"), put(0, "ts2", "r2"), put(0, "ts1-again", "r1")]),
            packed(3, vec![command(0, Command::BlobAbort { upload: 5 }), put(0, "ts3", "r3")]),
        ])
        .await
        .unwrap();
    let summary: Vec<_> = responses.iter().map(|r| (r.outcomes.clone(), r.revision.0)).collect();
    assert_eq!(summary[0], (vec![], 0));
    assert_eq!(
        summary[1],
        (
            vec![
                Outcome::Accepted { revision: Revision(1) },
                Outcome::Accepted { revision: Revision(2) },
                Outcome::Duplicate { revision: Revision(1) },
            ],
            2
        )
    );
    assert!(matches!(
        summary[2].0.as_slice(),
        [Outcome::Rejected(_), Outcome::Accepted { revision: Revision(3) }]
    ));
    assert_eq!(summary[2].1, 3);
    assert_eq!(*applied.borrow(), Revision(3));
}

/// A read of the store that must wait for its lock (a snapshot install or a large apply holds it on a blocking
/// thread) leaves the runtime running: on a node's one control thread, Raft's heartbeats go on meanwhile.
/// Shown on a one-worker runtime: a ticking task keeps ticking while another task waits for the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_wait_for_the_store_lock_leaves_the_runtime_running() {
    use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let database = SledDatabase::open(&dir.path().join("db")).unwrap();
    let store =
        Store::open_database(Arc::new(database), &dir.path().join("blobs"), StoreOptions::default()).unwrap();
    let shared: tandem_cluster::SharedStore = Arc::new(RwLock::new(store));
    let (held, is_held) = std::sync::mpsc::channel();
    let writer = std::thread::spawn({
        let shared = shared.clone();
        move || {
            let _guard = shared.write().unwrap();
            held.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    is_held.recv().unwrap();
    let ticks = Arc::new(AtomicU32::new(0));
    let ticker = tokio::spawn({
        let ticks = ticks.clone();
        async move {
            for _ in 0..200 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                ticks.fetch_add(1, SeqCst);
            }
        }
    });
    // The waiting read runs on the runtime's one worker, like the API's handlers on a node.
    let (revision, ticked) = tokio::spawn({
        let (shared, ticks) = (shared.clone(), ticks.clone());
        async move {
            let before = ticks.load(SeqCst);
            let revision = tandem_cluster::state_machine::read_without_stalling(&shared).unwrap().revision();
            (revision, ticks.load(SeqCst) - before)
        }
    })
    .await
    .unwrap();
    assert_eq!(revision, Revision(0));
    assert!(
        ticked >= 3,
        "the ticking task ran while the read waited for the lock (it ticked {ticked} times)"
    );
    writer.join().unwrap();
    ticker.abort();
}

/// On a follower the answer to an AppendEntries request is queued just before the apply of what it committed;
/// the state machine lets it go first by yielding once before applying entries another node proposed, and
/// applies its own (a leader's, which its client waits for) at once. Shown on a one-thread runtime, like a
/// node's control plane: a task woken before the apply runs during it only if the apply yields.
#[tokio::test(flavor = "current_thread")]
async fn a_follower_lets_a_waiting_task_run_before_it_applies_a_leader_s_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, sm, _applied) = open(dir.path());
    let mut sm = sm.with_node_id(2);
    // Proposed by node 1 (`log_id` names leader 1): node 2 is a follower here.
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let task = tokio::spawn({
        let ran = ran.clone();
        async move { ran.store(true, std::sync::atomic::Ordering::SeqCst) }
    });
    sm.apply(vec![membership(1, &[1, 2]), put(2, "ts1", "r1")]).await.unwrap();
    assert!(ran.load(std::sync::atomic::Ordering::SeqCst), "the waiting task ran before the apply finished");
    task.await.unwrap();

    // Its own entries (node 2 leading, term 2): applied without letting anything go first.
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let task = tokio::spawn({
        let ran = ran.clone();
        async move { ran.store(true, std::sync::atomic::Ordering::SeqCst) }
    });
    let own =
        Entry { log_id: LogId::new(CommittedLeaderId::new(2, 2), 3), payload: put(0, "ts2", "r2").payload };
    sm.apply(vec![own]).await.unwrap();
    assert!(!ran.load(std::sync::atomic::Ordering::SeqCst), "a leader applies its own entries at once");
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_entries_is_applied_at_once_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, mut sm, mut applied) = open(dir.path());
        let entries = vec![
            blank(1),
            membership(2, &[1, 2, 3]),
            put(3, "ts1", "r1"),
            put(4, "ts2", "r2"),
            put(5, "ts1-again", "r1"),
            command(6, Command::BlobAbort { upload: 77 }),
            blank(7),
        ];
        log.blocking_append(entries.clone()).await.unwrap();
        log.save_vote(&Vote::new(1, 1)).await.unwrap();
        log.save_committed(Some(log_id(1, 7))).await.unwrap();

        let responses = sm.apply(entries).await.unwrap();
        let summary: Vec<_> = responses.iter().map(|r| (r.outcomes.clone(), r.revision.0)).collect();
        assert_eq!(summary[0], (vec![], 0));
        assert_eq!(summary[1], (vec![], 0));
        assert_eq!(summary[2], (vec![Outcome::Accepted { revision: Revision(1) }], 1));
        assert_eq!(summary[3], (vec![Outcome::Accepted { revision: Revision(2) }], 2));
        assert_eq!(summary[4], (vec![Outcome::Duplicate { revision: Revision(1) }], 2));
        assert!(matches!(summary[5].0.as_slice(), [Outcome::Rejected(_)]), "{:?}", summary[5]);
        assert_eq!(summary[5].1, 2);
        assert_eq!(summary[6], (vec![], 2));
        assert_eq!(*applied.borrow_and_update(), Revision(2));

        let (last_applied, stored) = sm.applied_state().await.unwrap();
        assert_eq!(last_applied, Some(log_id(1, 7)));
        assert_eq!(stored.log_id(), &Some(log_id(1, 2)));
    }

    let (mut log, mut sm, applied) = open(dir.path());
    assert_eq!(*applied.borrow(), Revision(2));
    let (last_applied, stored) = sm.applied_state().await.unwrap();
    assert_eq!(last_applied, Some(log_id(1, 7)));
    assert_eq!(stored.membership().voter_ids().collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(1, 1)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 7)));
    assert_eq!(log.get_log_state().await.unwrap().last_log_id, Some(log_id(1, 7)));
    assert_eq!(log.try_get_log_entries(..).await.unwrap().len(), 7);
    let store = sm.store().read().unwrap();
    assert!(store.get(&DocKey::new("terminal_servers", "ts2")).is_some());
    assert_eq!(store.revision(), Revision(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_and_purge_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm, _applied) = open(dir.path());
        // Entry 5 is large (many parts) so that both operations remove multi-part entries.
        let big = command(5, Command::BlobChunk { upload: 1, chunk: 0, data: vec![7; 300 * 1024] });
        let entries: Vec<_> = (1..=10).map(|i| if i == 5 { big.clone() } else { blank(i) }).collect();
        log.blocking_append(entries).await.unwrap();
        log.truncate(log_id(1, 8)).await.unwrap();
        log.purge(log_id(1, 5)).await.unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 5)));
        assert_eq!(state.last_log_id, Some(log_id(1, 7)));
    }
    {
        let (mut log, _sm, _applied) = open(dir.path());
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 5)));
        assert_eq!(state.last_log_id, Some(log_id(1, 7)));
        let indexes: Vec<u64> =
            log.try_get_log_entries(..).await.unwrap().iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, vec![6, 7]);

        // Overwriting an entry with a smaller one leaves no stale parts behind.
        log.blocking_append([command(8, Command::BlobChunk { upload: 2, chunk: 0, data: vec![1; 200_000] })])
            .await
            .unwrap();
        log.truncate(log_id(1, 8)).await.unwrap();
        log.blocking_append([blank(8)]).await.unwrap();
        let entries = log.try_get_log_entries(8..).await.unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].payload, EntryPayload::Blank);

        // Purging past the last entry leaves an empty log whose last log id is the purged one.
        log.purge(log_id(1, 12)).await.unwrap();
    }
    let (mut log, _sm, _applied) = open(dir.path());
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 12)));
    assert_eq!(state.last_log_id, Some(log_id(1, 12)));
    assert!(log.try_get_log_entries(..).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_reads_stop_near_the_byte_limit_but_return_at_least_one_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _sm, _applied) = open(dir.path());
    let chunk =
        |i: u64| command(i, Command::BlobChunk { upload: 1, chunk: i as u32, data: vec![i as u8; 1 << 20] });
    log.blocking_append((1..=20).map(chunk)).await.unwrap();
    let mut reader = log.get_log_reader().await;
    let limited = reader.limited_get_log_entries(1, 21).await.unwrap();
    let limit = tandem_cluster::log_store::READ_LIMIT_BYTES;
    assert!(!limited.is_empty() && limited.len() < 20, "{} entries", limited.len());
    assert!(limited.len() as u64 * (1 << 20) >= limit as u64);
    assert_eq!(limited[0].log_id.index, 1);
    assert_eq!(reader.limited_get_log_entries(20, 21).await.unwrap().len(), 1);
    assert!(reader.limited_get_log_entries(5, 5).await.unwrap().is_empty());
    assert_eq!(reader.try_get_log_entries(3..=4).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_brings_another_node_to_the_same_state() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let (_leader_log, mut leader, _) = open(leader_dir.path());
    let (_follower_log, mut follower, mut follower_applied) = open(follower_dir.path());

    // Nothing applied: no snapshot, none built on demand.
    assert!(leader.get_current_snapshot().await.unwrap().is_none());

    leader.apply(vec![membership(1, &[1, 2]), put(2, "ts1", "a"), put(3, "ts2", "b")]).await.unwrap();
    // Something applied but never snapshotted: one is built on demand.
    let on_demand = leader.get_current_snapshot().await.unwrap().expect("a snapshot built on demand");
    assert_eq!(on_demand.meta.last_log_id, Some(log_id(1, 3)));

    leader.apply(vec![put(4, "ts3", "c")]).await.unwrap();
    let built = leader.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(built.meta.last_log_id, Some(log_id(1, 4)));
    assert_ne!(built.meta.snapshot_id, on_demand.meta.snapshot_id, "snapshot ids are unique");
    let again = leader.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_ne!(again.meta.snapshot_id, built.meta.snapshot_id, "even at the same log id");

    // The follower had state of its own, which the snapshot replaces entirely.
    follower.apply(vec![put(1, "stale", "z")]).await.unwrap();
    let current = leader.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, again.meta);
    let mut receiving = follower.begin_receiving_snapshot().await.unwrap();
    *receiving = *current.snapshot;
    follower.install_snapshot(&current.meta, receiving).await.unwrap();

    assert_eq!(*follower_applied.borrow_and_update(), Revision(3));
    let (last_applied, stored) = follower.applied_state().await.unwrap();
    assert_eq!(last_applied, Some(log_id(1, 4)));
    assert_eq!(stored.log_id(), &Some(log_id(1, 1)));
    assert_eq!(follower.get_current_snapshot().await.unwrap().unwrap().meta, current.meta);
    // The leader's own file was handed over (as openraft's suite does): copied in, not moved.
    let follower_snapshots = follower_dir.path().join("snapshots");
    assert_eq!(
        files_ending(&follower_snapshots, ".snap"),
        vec![format!("{}.snap", current.meta.snapshot_id)]
    );
    assert_eq!(files_ending(&leader_dir.path().join("snapshots"), ".snap").len(), 1);
    {
        let follower_store = follower.store().read().unwrap();
        let leader_store = leader.store().read().unwrap();
        assert_eq!(follower_store.projection(), leader_store.projection());
        assert!(follower_store.get(&DocKey::new("terminal_servers", "stale")).is_none());
    }

    // The follower keeps applying after the install: request ids came with the snapshot.
    let responses = follower.apply(vec![put(5, "ts1", "a"), put(6, "ts4", "d")]).await.unwrap();
    assert_eq!(responses[0].outcomes, [Outcome::Duplicate { revision: Revision(1) }]);
    assert_eq!(responses[1].outcomes, [Outcome::Accepted { revision: Revision(4) }]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_live_in_files_and_only_the_current_one_is_kept() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let leader_snapshots = leader_dir.path().join("snapshots");
    let follower_snapshots = follower_dir.path().join("snapshots");
    let (leader_log, mut leader, _) = open(leader_dir.path());
    assert_eq!(leader.snapshot_dir(), leader_snapshots);

    // A 2.5 MiB blob (uploaded in 1 MiB chunks) and a document: the snapshot carries both.
    let blob: Vec<u8> = (0..5 * 512 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let digest = Digest::of(&blob);
    let mut entries = vec![membership(1, &[1, 2])];
    for (i, data) in blob.chunks(1024 * 1024).enumerate() {
        entries.push(command(
            2 + i as u64,
            Command::BlobChunk { upload: 7, chunk: i as u32, data: data.to_vec() },
        ));
    }
    entries.push(command(5, Command::BlobCommit { upload: 7, digest, size: blob.len() as u64 }));
    entries.push(put(6, "ts1", "a"));
    leader.apply(entries).await.unwrap();

    // Several builds: each leaves exactly one `.snap`, named after its id, and no temporary file; every
    // file handed out stays readable and complete after a later build deleted its name.
    let mut built = Vec::new();
    for round in 0..3u64 {
        leader.apply(vec![put(7 + round, &format!("ts-r{round}"), &format!("r{round}"))]).await.unwrap();
        let snapshot = leader.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 7 + round)));
        assert_eq!(
            files_ending(&leader_snapshots, ".snap"),
            vec![format!("{}.snap", snapshot.meta.snapshot_id)]
        );
        assert!(files_ending(&leader_snapshots, ".tmp").is_empty());
        built.push(snapshot);
    }
    let mut contents = Vec::new();
    for (round, snapshot) in built.iter_mut().enumerate() {
        let bytes = read_snapshot(&mut snapshot.snapshot).await;
        let summary = verify_snapshot(bytes.as_slice()).unwrap();
        assert_eq!(summary.header.revision, Revision(2 + round as u64));
        assert_eq!(summary.header.blob_bytes, blob.len() as u64);
        assert_eq!(summary.bytes, bytes.len() as u64);
        contents.push(bytes);
    }
    let mut current = leader.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, built[2].meta);
    assert_eq!(read_snapshot(&mut current.snapshot).await, contents[2], "a fresh handle on the same file");

    // The follower receives it through the state machine API, from file to file in 1 MiB chunks as
    // openraft's chunked transfer does. A transfer abandoned before it loses its file when the next begins.
    let (_follower_log, mut follower, mut follower_applied) = open(follower_dir.path());
    let mut abandoned = follower.begin_receiving_snapshot().await.unwrap();
    abandoned.write_all(b"the first megabyte of a snapshot").await.unwrap();
    drop(abandoned);
    assert_eq!(files_ending(&follower_snapshots, ".tmp").len(), 1);
    let mut receiving = follower.begin_receiving_snapshot().await.unwrap();
    assert_eq!(files_ending(&follower_snapshots, ".tmp").len(), 1, "the abandoned file is gone");
    let mut sending = leader.get_current_snapshot().await.unwrap().unwrap();
    let mut chunk = vec![0u8; 1024 * 1024];
    let mut chunks = 0;
    loop {
        let n = sending.snapshot.read(&mut chunk).await.unwrap();
        if n == 0 {
            break;
        }
        receiving.write_all(&chunk[..n]).await.unwrap();
        chunks += 1;
        assert!(chunks < 100, "the snapshot is a few MiB");
    }
    receiving.shutdown().await.unwrap();
    follower.install_snapshot(&sending.meta, receiving).await.unwrap();

    assert_eq!(*follower_applied.borrow_and_update(), Revision(4));
    assert_eq!(follower.applied_state().await.unwrap().0, Some(log_id(1, 9)));
    assert_eq!(
        files_ending(&follower_snapshots, ".snap"),
        vec![format!("{}.snap", sending.meta.snapshot_id)],
        "the received file became the current snapshot"
    );
    assert!(files_ending(&follower_snapshots, ".tmp").is_empty());
    let mut installed = follower.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(installed.meta, sending.meta);
    assert_eq!(read_snapshot(&mut installed.snapshot).await, contents[2]);
    {
        let follower_store = follower.store().read().unwrap();
        assert_eq!(follower_store.projection(), leader.store().read().unwrap().projection());
        let mut reader = follower_store.open_blob(&digest).expect("the blob came with the snapshot");
        let mut copy = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut copy).unwrap();
        assert!(copy == blob, "the blob's bytes survived the transfer");
    }

    // A build on the follower replaces the installed snapshot: still one file.
    let rebuilt = follower.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(
        files_ending(&follower_snapshots, ".snap"),
        vec![format!("{}.snap", rebuilt.meta.snapshot_id)]
    );

    // A restart keeps the current snapshot (the node rebuilds from it if its database is lost) and deletes
    // what a crash left (here a build under way); other files are left alone.
    let kept = files_ending(&leader_snapshots, ".snap");
    assert_eq!(kept.len(), 1);
    drop((leader, leader_log, built, current, sending));
    std::fs::write(leader_snapshots.join("building-0123456789abcdef.tmp"), b"half").unwrap();
    std::fs::write(leader_snapshots.join("orphan.meta"), b"no snapshot").unwrap();
    std::fs::write(leader_snapshots.join("notes.txt"), b"not a snapshot").unwrap();
    let (_leader_log, mut leader, _) = open(leader_dir.path());
    assert_eq!(files_ending(&leader_snapshots, ".snap"), kept);
    assert_eq!(files_ending(&leader_snapshots, ".meta").len(), 1, "only the kept snapshot's meta");
    assert!(files_ending(&leader_snapshots, ".tmp").is_empty());
    assert_eq!(files_ending(&leader_snapshots, ".txt"), vec!["notes.txt".to_owned()]);
    let again = leader.get_current_snapshot().await.unwrap().expect("the kept snapshot after a restart");
    assert_eq!(again.meta.last_log_id, Some(log_id(1, 9)));
    assert_eq!(format!("{}.snap", again.meta.snapshot_id), kept[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_is_rebuilt_from_the_kept_snapshot_and_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let (mut log, mut sm, _) = open(dir.path());
        let entries = vec![membership(1, &[1]), put(2, "a", "r1"), put(3, "b", "r2")];
        log.blocking_append(entries.clone()).await.unwrap();
        sm.apply(entries).await.unwrap();
        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 3)));
        log.purge(log_id(1, 3)).await.unwrap();
        let later = vec![put(4, "c", "r3")];
        log.blocking_append(later.clone()).await.unwrap();
        sm.apply(later).await.unwrap();
        sm.store().read().unwrap().projection().clone()
    };
    // The database is gone (moved aside after a crash); the snapshot and the log are not.
    std::fs::rename(dir.path().join("db"), dir.path().join("db.broken")).unwrap();
    let (mut log, mut sm, _) = open(dir.path());
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 3)), "restored from the snapshot");
    let rest = log.try_get_log_entries(4..5).await.unwrap();
    sm.apply(rest).await.unwrap();
    assert_eq!(*sm.store().read().unwrap().projection(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_log_entry_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("raft-log");
    let database = SledDatabase::open(&dir.path().join("db")).unwrap();
    let mut log = LogStore::open(&log_dir, database).unwrap();
    log.blocking_append([blank(1), blank(2)]).await.unwrap();
    damage_last_record(&only_segment(&log_dir));
    // The last entries written are read from memory: the damage on disk is not seen yet...
    assert_eq!(log.try_get_log_entries(1..3).await.unwrap().len(), 2, "recent entries come from memory");
    // ... until 600 more entries push entry 2 out of memory: then it is read from its segment, and reported.
    log.blocking_append((3..=602).map(blank)).await.unwrap();
    assert!(log.try_get_log_entries(1..3).await.is_err(), "a damaged record is reported when read");
    assert_eq!(log.try_get_log_entries(1..2).await.unwrap().len(), 1, "the intact entry still reads");
    let recent = log.try_get_log_entries(100..603).await.unwrap();
    assert_eq!(recent.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), (100..603).collect::<Vec<_>>());
}

/// Overwrites the middle of the last record of a segment that holds two entries (after the committed record
/// and entry 1: entry 2).
fn damage_last_record(segment: &Path) {
    let bytes = std::fs::read(segment).unwrap();
    let records_end = 32 + bytes[32..].windows(9).position(|w| w == [0u8; 9]).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(segment).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"garbage", (records_end - 5) as u64).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_off_at_open_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("raft-log");
    let database = SledDatabase::open(&dir.path().join("db")).unwrap();
    {
        let mut log = LogStore::open(&log_dir, database.clone()).unwrap();
        log.blocking_append([blank(1), blank(2), blank(3)]).await.unwrap();
    }
    // A crash mid-write: the last record's bytes are half there.
    let segment = only_segment(&log_dir);
    let bytes = std::fs::read(&segment).unwrap();
    let records_end = 32 + bytes[32..].windows(9).position(|w| w == [0u8; 9]).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&segment).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0xAB; 3], (records_end - 3) as u64).unwrap();
    let mut log = LogStore::open(&log_dir, database.clone()).unwrap();
    assert_eq!(log.get_log_state().await.unwrap().last_log_id, Some(log_id(1, 2)), "entry 3 was torn");
    log.blocking_append([blank(3), blank(4)]).await.unwrap();
    drop(log);
    let mut log = LogStore::open(&log_dir, database).unwrap();
    let entries = log.try_get_log_entries(..).await.unwrap();
    assert_eq!(entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
}

/// The one segment file in a log directory.
fn only_segment(dir: &Path) -> std::path::PathBuf {
    let segments: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|item| item.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "seg"))
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    segments.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_rotate_and_a_purge_deletes_the_old_ones_keeping_the_vote() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("raft-log");
    let database = SledDatabase::open(&dir.path().join("db")).unwrap();
    let vote = openraft::Vote::new_committed(3, 1);
    {
        let mut log = LogStore::open_with_segment_bytes(&log_dir, database.clone(), 1024).unwrap();
        log.save_vote(&vote).await.unwrap();
        for index in 1..=200 {
            log.blocking_append([put(index, &format!("doc{index}"), &format!("r{index}"))]).await.unwrap();
        }
        let before = log.segment_paths().len();
        assert!(before > 20, "{before} segments");
        log.purge(log_id(1, 150)).await.unwrap();
        let left = log.segment_paths().len();
        assert!(left <= before / 3 + 2, "purging deleted the old segments ({left} of {before} left)");
    }
    let mut log = LogStore::open(&log_dir, database).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(vote), "the vote outlives the segment it was written in");
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 150)));
    assert_eq!(state.last_log_id, Some(log_id(1, 200)));
    let entries = log.try_get_log_entries(151..).await.unwrap();
    assert_eq!(entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), (151..=200).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_log_in_sled_moves_into_segments_at_first_open() {
    let dir = tempfile::tempdir().unwrap();
    let database = SledDatabase::open(&dir.path().join("db")).unwrap();
    let entries = vec![membership(1, &[1]), put(2, "a", "r1"), put(3, "b", "r2")];
    let vote = openraft::Vote::new_committed(1, 1);
    {
        // Format 1: `raft-log` holds index BE ‖ part BE -> format 1 ‖ parts BE ‖ bincode; `raft-meta` the rest.
        let log = database.sled().open_tree("raft-log").unwrap();
        for entry in &entries {
            let mut key = entry.log_id.index.to_be_bytes().to_vec();
            key.extend_from_slice(&0u32.to_be_bytes());
            let mut value = vec![1u8, 0, 0, 0, 1];
            value.extend(tandem_cluster::types::encode(entry));
            log.insert(key, value).unwrap();
        }
        let meta = database.sled().open_tree("raft-meta").unwrap();
        meta.insert("vote", tandem_cluster::types::encode(&vote)).unwrap();
        meta.insert("committed", tandem_cluster::types::encode(&log_id(1, 3))).unwrap();
    }
    let mut log = LogStore::open(&dir.path().join("raft-log"), database.clone()).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 3)));
    let moved = log.try_get_log_entries(..).await.unwrap();
    assert_eq!(moved.len(), 3);
    for (moved, original) in moved.iter().zip(&entries) {
        assert_eq!(moved.log_id, original.log_id);
    }
    let trees: Vec<_> =
        database.sled().tree_names().iter().map(|t| String::from_utf8_lossy(t).into_owned()).collect();
    assert!(!trees.iter().any(|t| t.starts_with("raft-")), "the old trees are dropped: {trees:?}");
    drop(log);
    let mut log = LogStore::open(&dir.path().join("raft-log"), database).unwrap();
    assert_eq!(
        log.try_get_log_entries(..).await.unwrap().len(),
        3,
        "and the segments are the log from now on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_machine_ahead_of_its_log_is_covered_by_a_snapshot_before_raft_starts() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, mut sm, _) = open(dir.path());
    let entries = vec![membership(1, &[1]), put(2, "a", "r1"), put(3, "b", "r2"), put(4, "c", "r3")];
    // The log lost its unsynced tail (entries 3 and 4) in a power cut; the state machine had applied them.
    log.blocking_append(entries[..2].to_vec()).await.unwrap();
    sm.apply(entries).await.unwrap();
    assert!(sm.cover_applied_past(log.last_log_id().unwrap()).await.unwrap(), "a snapshot was built");
    let snapshot = sm.get_current_snapshot().await.unwrap().expect("a snapshot covers the applied state");
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 4)));
    assert!(!sm.cover_applied_past(log.last_log_id().unwrap()).await.unwrap(), "covered now: nothing to do");
    log.blocking_append([put(3, "b", "r2"), put(4, "c", "r3")]).await.unwrap();
    assert!(
        !sm.cover_applied_past(log.last_log_id().unwrap()).await.unwrap(),
        "a log as long: nothing to do"
    );
}

//! openraft's storage conformance suite against [`LogStore`] and [`StateMachine`], plus the encoding checks the
//! suite does not make: a log entry survives bincode, and a large one survives a reopen.
//!
//! Every store the suite builds lives in a fresh sled database in a fresh temporary directory, shared by the
//! log store and the [`Store`] exactly as on a node (sled cannot open one directory twice in a process); the
//! state machine's snapshot files go to a `snapshots` directory inside it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    AnyError, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader, StorageError,
    StorageIOError,
};
use tandem_cluster::types::{decode, encode};
use tandem_cluster::{LogStore, NodeId, NodeInfo, Request, Role, StateMachine, TypeConfig};
use tandem_storage::{Command, SledDatabase, Store, StoreOptions};
use tempfile::TempDir;

/// Builds the stores as a node does; with `early_ack_as`, its log acknowledges that node's own entries as
/// leader once written rather than synced (`LogStore::with_leader_early_ack`).
struct Builder {
    early_ack_as: Option<NodeId>,
}

fn setup_error(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write(AnyError::new(&e)).into()
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().map_err(setup_error)?;
        let database = SledDatabase::open(&dir.path().join("db")).map_err(setup_error)?;
        let store = Store::open_database(
            Arc::new(database.clone()),
            &dir.path().join("blobs"),
            StoreOptions::default(),
        )
        .map_err(setup_error)?;
        let mut log_store = LogStore::open(&dir.path().join("raft-log"), database)?;
        let (state_machine, _applied) =
            StateMachine::new(Arc::new(RwLock::new(store)), dir.path().join("snapshots"))?;
        if let Some(node_id) = self.early_ack_as {
            // The state machine is left without the durable log gate: the suite applies entries that were
            // never appended to this log, which would wait for a sync forever.
            log_store = log_store.with_leader_early_ack(node_id);
        }
        Ok((dir, log_store, state_machine))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder { early_ack_as: None }).expect("openraft's storage suite passes");
}

/// The suite's votes and entries are mostly node 0's and node 1's, with committed votes: as either, the log
/// takes the early path for their entries, and must still read, truncate and purge as openraft expects.
#[test]
fn openraft_storage_suite_with_leader_early_ack() {
    for node_id in [0, 1] {
        Suite::test_all(Builder { early_ack_as: Some(node_id) }).expect("openraft's storage suite passes");
    }
}

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn node(name: &str, role: Role) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        role,
        peer_addr: format!("{name}:7000"),
        api_addr: format!("{name}:7001"),
        boot_addr: format!("{name}:80"),
    }
}

fn assert_same(a: &Entry<TypeConfig>, b: &Entry<TypeConfig>) {
    assert_eq!(a.log_id, b.log_id);
    assert_eq!(a.payload, b.payload);
}

#[test]
fn entries_round_trip_through_bincode() {
    let normal = Entry::<TypeConfig> {
        log_id: log_id(3, 17),
        payload: EntryPayload::Normal(Request {
            commands: vec![
                Command::BlobChunk { upload: 9, chunk: 2, data: vec![1, 2, 3] },
                Command::BlobAbort { upload: 8 },
            ],
        }),
    };
    let nodes = BTreeMap::from([
        (1, node("alpha", Role::Data)),
        (2, node("beta", Role::Witness)),
        (3, node("gamma", Role::Mirror)),
    ]);
    let membership = Membership::new(vec![BTreeSet::from([1, 2])], nodes);
    let membership =
        Entry::<TypeConfig> { log_id: log_id(4, 18), payload: EntryPayload::Membership(membership) };
    let blank = Entry::<TypeConfig> { log_id: log_id(5, 19), payload: EntryPayload::Blank };
    for entry in [normal, membership, blank] {
        let back: Entry<TypeConfig> = decode(&encode(&entry)).expect("the entry decodes");
        assert_same(&entry, &back);
    }
}

#[test]
fn an_entry_larger_than_128_kib_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    // 1 MiB of varied bytes: one record of its own in the segment.
    let data: Vec<u8> = (0..1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let big = Entry::<TypeConfig> {
        log_id: log_id(1, 2),
        payload: EntryPayload::Normal(Request::one(Command::BlobChunk { upload: 1, chunk: 0, data })),
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut log =
            LogStore::open(&dir.path().join("raft-log"), SledDatabase::open(&dir.path().join("db")).unwrap())
                .unwrap();
        let first = Entry::<TypeConfig> { log_id: log_id(1, 1), payload: EntryPayload::Blank };
        let last = Entry::<TypeConfig> { log_id: log_id(1, 3), payload: EntryPayload::Blank };
        log.blocking_append([first, big.clone(), last]).await.unwrap();
    });
    runtime.block_on(async {
        let mut log =
            LogStore::open(&dir.path().join("raft-log"), SledDatabase::open(&dir.path().join("db")).unwrap())
                .unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(1, 3)));
        let entries = log.try_get_log_entries(1..4).await.unwrap();
        assert_eq!(entries.len(), 3);
        assert_same(&entries[1], &big);
        let only_big = log.try_get_log_entries(2..=2).await.unwrap();
        assert_eq!(only_big.len(), 1);
        assert_same(&only_big[0], &big);
    });
}

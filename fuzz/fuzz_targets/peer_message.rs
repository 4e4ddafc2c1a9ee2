//! Peer messages: the bincode bodies a node decodes from its peers ([`tandem_cluster::types::decode`], the
//! network server's requests and the client's answers): AppendEntries, Vote and InstallSnapshot requests and
//! responses, forwarded writes (storage `Command`s with change sets, blob chunks and commits) and read-index
//! answers.
//!
//! Input: one byte that picks the message type, then the body. A body that decodes must encode again, and that
//! encoding must decode: a node forwards what it decoded (writes to the leader, log entries to followers).
//!
//! With `TANDEM_FUZZ_SEEDS=DIR` set, the target first writes seed inputs (real messages) into DIR.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use openraft::error::{CheckIsLeaderError, ClientWriteError, InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{CommittedLeaderId, Entry, EntryPayload, Membership, SnapshotMeta, StoredMembership, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tandem_cluster::types::{LogId, NodeId, NodeInfo, TypeConfig, Written, decode, try_encode};
use tandem_storage::{ChangeMeta, ChangeSet, Command, Digest, Outcome, Revision};

fn check<T: Serialize + DeserializeOwned>(body: &[u8]) {
    let Ok(value) = decode::<T>(body) else { return };
    let bytes = try_encode(&value).expect("a decoded message encodes");
    let again = decode::<T>(&bytes).expect("a re-encoded message decodes");
    let _ = try_encode(&again).expect("it encodes again");
}

fn write_seeds(dir: &Path) {
    std::fs::create_dir_all(dir).expect("the seed directory");
    let write = |name: &str, kind: u8, body: Vec<u8>| {
        std::fs::write(dir.join(name), [&[kind][..], &body].concat()).expect("a seed");
    };
    let leader = CommittedLeaderId::new(3, 1);
    let nodes = BTreeMap::from([(1, NodeInfo { name: "a".into(), ..NodeInfo::default() })]);
    let membership = Membership::new(vec![BTreeSet::from([1])], nodes);
    let change =
        ChangeSet::new(ChangeMeta { actor: "a".into(), reason: "r".into(), ..ChangeMeta::default() })
            .put("terminal_servers", "ts1", serde_json::json!({"address": "10.0.0.5", "port": 3389}))
            .patch("terminals", "t1", serde_json::json!({"firmware": null}));
    let entries: Vec<Entry<TypeConfig>> = vec![
        Entry { log_id: LogId::new(leader, 5), payload: EntryPayload::Blank },
        Entry { log_id: LogId::new(leader, 6), payload: EntryPayload::Membership(membership.clone()) },
        Entry {
            log_id: LogId::new(leader, 7),
            payload: EntryPayload::Normal(tandem_cluster::Request {
                commands: vec![Command::Change(change.clone())],
            }),
        },
    ];
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 1),
        prev_log_id: Some(LogId::new(leader, 4)),
        entries: entries.clone(),
        leader_commit: Some(LogId::new(leader, 4)),
    };
    write("append-entries", 0, try_encode(&append).unwrap());
    write(
        "vote",
        1,
        try_encode(&VoteRequest::<NodeId>::new(Vote::new(4, 2), Some(LogId::new(leader, 7)))).unwrap(),
    );
    let snapshot = InstallSnapshotRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 1),
        meta: SnapshotMeta {
            last_log_id: Some(LogId::new(leader, 7)),
            last_membership: StoredMembership::new(Some(LogId::new(leader, 6)), membership),
            snapshot_id: "3-1-7-1".into(),
        },
        offset: 0,
        data: b"TANDSNAP\0\0\0\x01".to_vec(),
        done: false,
    };
    write("install-snapshot", 2, try_encode(&snapshot).unwrap());
    write("command-change", 3, try_encode(&Command::Change(change)).unwrap());
    write(
        "command-chunk",
        3,
        try_encode(&Command::BlobChunk { upload: 9, chunk: 0, data: vec![7; 16] }).unwrap(),
    );
    let digest = Digest::of(b"x");
    write("command-commit", 3, try_encode(&Command::BlobCommit { upload: 9, digest, size: 1 }).unwrap());
    write("read-index", 4, Vec::new());
    let appended: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
        Ok(AppendEntriesResponse::Success);
    write("append-response", 5, try_encode(&appended).unwrap());
    let written: Result<Written, RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>> =
        Ok(Written { outcome: Outcome::Accepted { revision: Revision(3) }, revision: Revision(3) });
    if let Ok(bytes) = try_encode(&written) {
        write("write-response", 8, bytes);
    }
    for (i, entry) in entries.iter().enumerate() {
        write(&format!("entry-{i}"), 10, try_encode(entry).unwrap());
    }
}

fuzz_target!(
    init: {
        if let Some(dir) = std::env::var_os("TANDEM_FUZZ_SEEDS") {
            write_seeds(Path::new(&dir));
        }
    },
    |data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else { return };
    match kind % 11 {
        0 => check::<AppendEntriesRequest<TypeConfig>>(body),
        1 => check::<VoteRequest<NodeId>>(body),
        2 => check::<InstallSnapshotRequest<TypeConfig>>(body),
        3 => check::<Command>(body),
        4 => check::<()>(body),
        5 => check::<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>>(body),
        6 => check::<Result<VoteResponse<NodeId>, RaftError<NodeId>>>(body),
        7 => check::<Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>>(body),
        8 => check::<Result<Written, RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>>>(body),
        9 => check::<Result<(Option<LogId>, Option<LogId>), RaftError<NodeId, CheckIsLeaderError<NodeId, NodeInfo>>>>(
            body,
        ),
        _ => check::<openraft::Entry<TypeConfig>>(body),
    }
});

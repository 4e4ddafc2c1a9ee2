//! The peer network end to end: a real openraft `Raft` (over in-memory test stores) behind `serve_peer`,
//! reached through `PeerNetwork` / `PeerClient` and through raw HTTP on loopback.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::net::SocketAddr;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    CommittedLeaderId, Config, Entry, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder,
    ServerState, SnapshotMeta, StorageError, StorageIOError, Vote,
};
use tandem_cluster::network::{
    CLUSTER_ID_HEADER, ForwardError, LocalIdentity, MAX_BODY_BYTES, PROTOCOL_HEADER, PROTOCOL_VERSION,
    PeerClient, PeerNetwork, REFUSAL_HEADER, RefusalKind, SECRET_HEADER, TARGET_ID_HEADER, VOTE_PATH,
    serve_peer,
};
use tandem_cluster::proposer::Proposer;
use tandem_cluster::types::{LogId, StoredMembership, encode};
use tandem_cluster::{NodeId, NodeInfo, Raft, Request, Response, TypeConfig};
use tandem_storage::{ChangeMeta, ChangeSet, Command, Outcome, Revision};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "test-cluster-secret";
const TTL: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------------------
// In-memory test doubles of the Raft stores (the real ones live in log_store.rs / state_machine.rs).

#[derive(Debug, Default)]
struct LogInner {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
}

#[derive(Clone, Debug, Default)]
struct MemLog(Arc<Mutex<LogInner>>);

impl MemLog {
    fn inner(&self) -> std::sync::MutexGuard<'_, LogInner> {
        self.0.lock().expect("log lock")
    }
}

impl RaftLogReader<TypeConfig> for MemLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        Ok(self.inner().entries.range(range).map(|(_, entry)| entry.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for MemLog {
    type LogReader = MemLog;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let inner = self.inner();
        let last = inner.entries.values().next_back().map(|entry| entry.log_id).or(inner.last_purged);
        Ok(LogState { last_purged_log_id: inner.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> MemLog {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.inner().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError<NodeId>> {
        self.inner().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<NodeId>> {
        Ok(self.inner().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        {
            let mut inner = self.inner();
            for entry in entries {
                inner.entries.insert(entry.log_id.index, entry);
            }
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        self.inner().entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner();
        inner.last_purged = Some(log_id);
        inner.entries = inner.entries.split_off(&(log_id.index + 1));
        Ok(())
    }
}

#[derive(Debug, Default)]
struct MachineInner {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    applied: Vec<Request>,
    snapshots_built: u64,
    snapshot: Option<(SnapshotMeta<NodeId, NodeInfo>, Vec<u8>)>,
}

#[derive(Clone, Debug, Default)]
struct MemMachine(Arc<Mutex<MachineInner>>);

impl MemMachine {
    fn inner(&self) -> std::sync::MutexGuard<'_, MachineInner> {
        self.0.lock().expect("state machine lock")
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MemMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let mut inner = self.inner();
        inner.snapshots_built += 1;
        let meta = SnapshotMeta {
            last_log_id: inner.last_applied,
            last_membership: inner.membership.clone(),
            snapshot_id: format!("test-{}", inner.snapshots_built),
        };
        let data = encode(&inner.applied);
        inner.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot { meta, snapshot: snapshot_file(&data).map_err(snapshot_error)? })
    }
}

/// An anonymous temporary file holding `data`: openraft's snapshot data is a file.
fn snapshot_file(data: &[u8]) -> std::io::Result<Box<tokio::fs::File>> {
    let mut file = tempfile::tempfile()?;
    std::io::Write::write_all(&mut file, data)?;
    std::io::Seek::rewind(&mut file)?;
    Ok(Box::new(tokio::fs::File::from_std(file)))
}

fn snapshot_error(e: std::io::Error) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(None, &e).into()
}

impl RaftStateMachine<TypeConfig> for MemMachine {
    type SnapshotBuilder = MemMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError<NodeId>> {
        let inner = self.inner();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.inner();
        let mut responses = Vec::new();
        for entry in entries {
            inner.last_applied = Some(entry.log_id);
            let revision = Revision(entry.log_id.index);
            let outcomes = match entry.payload {
                EntryPayload::Blank => vec![],
                EntryPayload::Membership(membership) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), membership);
                    vec![]
                }
                EntryPayload::Normal(request) => {
                    let outcomes = request
                        .commands
                        .iter()
                        .map(|command| match command {
                            Command::BlobAbort { upload } => Outcome::UploadAborted { upload: *upload },
                            _ => Outcome::Accepted { revision },
                        })
                        .collect();
                    inner.applied.push(request);
                    outcomes
                }
            };
            responses.push(Response { outcomes, revision });
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> MemMachine {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError<NodeId>> {
        snapshot_file(&[]).map_err(snapshot_error)
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        mut snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut data = Vec::new();
        snapshot.rewind().await.map_err(snapshot_error)?;
        snapshot.read_to_end(&mut data).await.map_err(snapshot_error)?;
        let mut inner = self.inner();
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let current = self.inner().snapshot.clone();
        match current {
            None => Ok(None),
            Some((meta, data)) => {
                Ok(Some(Snapshot { meta, snapshot: snapshot_file(&data).map_err(snapshot_error)? }))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Harness.

/// One node: Raft over the test stores, served by `serve_peer` on a loopback port.
struct TestNode {
    raft: Raft,
    info: NodeInfo,
    addr: SocketAddr,
    log: MemLog,
    machine: MemMachine,
    proposer: Arc<Proposer>,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
    identity: LocalIdentity,
}

impl TestNode {
    /// A node without a cluster id (like a `--join` node): it accepts any request addressed to `id`.
    async fn start(id: NodeId) -> TestNode {
        Self::start_as(LocalIdentity::in_memory(id, None)).await
    }

    /// A node with this identity (its id, and its cluster id if any).
    async fn start_as(identity: LocalIdentity) -> TestNode {
        let id = identity.node_id();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let info = node_info(&format!("n{id}"), &addr.to_string());
        let config = Config {
            cluster_name: "network-test".into(),
            heartbeat_interval: 100,
            election_timeout_min: 400,
            election_timeout_max: 800,
            ..Default::default()
        };
        let config = Arc::new(config.validate().expect("raft config"));
        let (log, machine) = (MemLog::default(), MemMachine::default());
        let network = PeerNetwork::new(SECRET).expect("secret").with_identity(identity.clone());
        let raft = Raft::new(id, config, network, log.clone(), machine.clone()).await.expect("raft");
        let shutdown = CancellationToken::new();
        let proposer = Arc::new(Proposer::start(raft.clone()));
        let server = tokio::spawn(serve_peer(
            listener,
            raft.clone(),
            proposer.clone(),
            SECRET.to_owned(),
            identity.clone(),
            shutdown.clone(),
        ));
        TestNode { raft, info, addr, log, machine, proposer, shutdown, server, identity }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("server stops")
            .expect("join");
        self.raft.shutdown().await.expect("raft shutdown");
    }
}

fn node_info(name: &str, peer_addr: &str) -> NodeInfo {
    NodeInfo { name: name.to_owned(), peer_addr: peer_addr.to_owned(), ..Default::default() }
}

fn log_id(term: u64, leader: NodeId, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, leader), index)
}

async fn client_to(network: &PeerNetwork, target: NodeId, info: &NodeInfo) -> PeerClient {
    network.clone().new_client(target, info).await
}

fn option(ttl: Duration) -> RPCOption {
    RPCOption::new(ttl)
}

/// The membership a fake leader 2 sends to node 1: voter 2, learner 1 (so node 1 never campaigns).
fn fake_membership(follower: &TestNode, leader: &NodeInfo) -> Membership<NodeId, NodeInfo> {
    let nodes = BTreeMap::from([(1, follower.info.clone()), (2, leader.clone())]);
    Membership::new(vec![BTreeSet::from([2])], nodes)
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`): the status and the body as text.
async fn raw_request(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(body).await.expect("write body");
    read_response(&mut stream).await
}

async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read response");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

/// The head of a POST to node 1 (the id of the raw tests' node).
fn post_head(path: &str, secret: Option<&str>, content_length: usize) -> String {
    post_head_to(path, secret, content_length, 1)
}

fn post_head_to(path: &str, secret: Option<&str>, content_length: usize, target: NodeId) -> String {
    let secret = secret.map(|s| format!("{SECRET_HEADER}: {s}\r\n")).unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nHost: peer\r\nConnection: close\r\n{secret}{PROTOCOL_HEADER}: {PROTOCOL_VERSION}\r\n\
         {TARGET_ID_HEADER}: {target}\r\nContent-Length: {content_length}\r\n\r\n"
    )
}

// ---------------------------------------------------------------------------------------------------------
// Tests.

/// Group commit: writes proposed together share entries, each gets its own command's outcome, none is lost
/// or applied twice, and forwarded writes join the same queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_entries_and_each_gets_its_own_outcome() {
    const WRITES: u64 = 60;
    let node = TestNode::start(1).await;
    node.raft.initialize(BTreeMap::from([(1, node.info.clone())])).await.expect("initialize");
    node.raft
        .wait(Some(Duration::from_secs(10)))
        .state(ServerState::Leader, "single node leads")
        .await
        .expect("leader");
    let network = PeerNetwork::new(SECRET).unwrap();

    let local = (0..WRITES).map(|upload| node.proposer.propose(Command::BlobAbort { upload }));
    let forwarded = (WRITES..WRITES + 5)
        .map(|upload| network.forward_write(1, &node.info, Command::BlobAbort { upload }, TTL));
    let (local, forwarded) = tokio::time::timeout(
        Duration::from_secs(20),
        futures_util::future::join(
            futures_util::future::join_all(local),
            futures_util::future::join_all(forwarded),
        ),
    )
    .await
    .expect("every write is answered");
    for (upload, written) in (0..).zip(local) {
        assert_eq!(written.expect("a local write").outcome, Outcome::UploadAborted { upload });
    }
    for (upload, written) in (WRITES..).zip(forwarded) {
        assert_eq!(written.expect("a forwarded write").outcome, Outcome::UploadAborted { upload });
    }

    let applied = node.machine.inner().applied.clone();
    let mut uploads: Vec<u64> = applied
        .iter()
        .flat_map(|request| &request.commands)
        .map(|command| match command {
            Command::BlobAbort { upload } => *upload,
            other => panic!("unexpected command {other:?}"),
        })
        .collect();
    let local_order: Vec<u64> = uploads.iter().copied().filter(|upload| *upload < WRITES).collect();
    assert_eq!(local_order, (0..WRITES).collect::<Vec<_>>(), "local writes keep their order");
    uploads.sort_unstable();
    assert_eq!(uploads, (0..WRITES + 5).collect::<Vec<_>>(), "every write applied exactly once");
    assert!(
        applied.len() <= WRITES as usize / 2,
        "{} entries for {} writes: the writes were not packed",
        applied.len(),
        WRITES + 5
    );
    node.stop().await;
}

#[tokio::test]
async fn single_node_cluster_answers_vote_append_and_forwarded_writes() {
    let node = TestNode::start(1).await;
    node.raft.initialize(BTreeMap::from([(1, node.info.clone())])).await.expect("initialize");
    let metrics = node
        .raft
        .wait(Some(Duration::from_secs(10)))
        .state(ServerState::Leader, "single node leads")
        .await
        .expect("leader");
    let leader_vote = metrics.vote;

    let network = PeerNetwork::new(SECRET).unwrap();

    // A write forwarded over HTTP goes through the proposer and comes back with the state machine's answer.
    let command = Command::BlobAbort { upload: 7 };
    let written = network.forward_write(1, &node.info, command.clone(), TTL).await.expect("forwarded write");
    assert_eq!(written.outcome, Outcome::UploadAborted { upload: 7 });
    assert_eq!(node.machine.inner().applied, vec![Request::one(command)]);

    // Vote and AppendEntries round trips: a stale candidate and a stale leader are told about the real vote.
    let mut client = client_to(&network, 1, &node.info).await;
    let vote = client
        .vote(VoteRequest::new(Vote::new(leader_vote.leader_id.term, 2), None), option(TTL))
        .await
        .expect("vote round trip");
    assert!(!vote.vote_granted);
    assert_eq!(vote.vote, leader_vote);

    let append = AppendEntriesRequest {
        vote: Vote::new_committed(0, 2),
        prev_log_id: None,
        leader_commit: None,
        entries: vec![],
    };
    let answer = client.append_entries(append, option(TTL)).await.expect("append round trip");
    assert_eq!(answer, AppendEntriesResponse::HigherVote(leader_vote));
    assert_eq!(node.raft.metrics().borrow().state, ServerState::Leader);

    node.stop().await;
}

#[tokio::test]
async fn follower_takes_vote_append_and_snapshot_over_http() {
    let node = TestNode::start(1).await;
    let network = PeerNetwork::new(SECRET).unwrap();
    let mut client = client_to(&network, 1, &node.info).await;
    // A fake leader, node 2, that is never contacted (node 1 stays a learner).
    let leader = node_info("n2", "127.0.0.1:9");

    let vote = client.vote(VoteRequest::new(Vote::new(1, 2), None), option(TTL)).await.expect("vote");
    assert!(vote.vote_granted, "{vote:?}");

    let membership = fake_membership(&node, &leader);
    let append = AppendEntriesRequest {
        vote: Vote::new_committed(1, 2),
        prev_log_id: None,
        leader_commit: Some(log_id(1, 2, 0)),
        entries: vec![Entry {
            log_id: log_id(1, 2, 0),
            payload: EntryPayload::Membership(membership.clone()),
        }],
    };
    let answer = client.append_entries(append, option(TTL)).await.expect("append");
    assert_eq!(answer, AppendEntriesResponse::Success);
    let metrics = node
        .raft
        .wait(Some(Duration::from_secs(5)))
        .metrics(|m| m.last_applied.map(|l| l.index) == Some(0), "membership applied")
        .await
        .expect("applied");
    assert_eq!(metrics.vote, Vote::new_committed(1, 2));
    assert_eq!(metrics.current_leader, Some(2));
    assert_eq!(node.log.inner().entries.len(), 1);

    // A write sent to a follower is not executed there: the caller learns who leads.
    let write = Command::BlobAbort { upload: 1 };
    match network.forward_write(1, &node.info, write, TTL).await {
        Err(ForwardError::NotLeader { leader_id, leader_node }) => {
            assert_eq!(leader_id, Some(2));
            assert_eq!(leader_node, Some(leader.clone()));
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }

    // A snapshot in two chunks.
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(1, 2, 5)),
        last_membership: StoredMembership::new(Some(log_id(1, 2, 0)), membership),
        snapshot_id: "fake-snapshot-1".to_owned(),
    };
    for (offset, data, done) in [(0, &b"snap"[..], false), (4, &b"shot"[..], true)] {
        let chunk = InstallSnapshotRequest {
            vote: Vote::new_committed(1, 2),
            meta: meta.clone(),
            offset,
            data: data.to_vec(),
            done,
        };
        let answer = client.install_snapshot(chunk, option(TTL)).await.expect("snapshot chunk");
        assert_eq!(answer.vote, Vote::new_committed(1, 2));
    }
    node.raft
        .wait(Some(Duration::from_secs(5)))
        .metrics(|m| m.snapshot.map(|l| l.index) == Some(5), "snapshot installed")
        .await
        .expect("snapshot");
    let (installed_meta, data) = node.machine.inner().snapshot.clone().expect("snapshot installed");
    assert_eq!(installed_meta.snapshot_id, "fake-snapshot-1");
    assert_eq!(data, b"snapshot");

    node.stop().await;
}

#[tokio::test]
async fn requests_without_the_right_secret_get_401_and_change_nothing() {
    let node = TestNode::start(1).await;
    let leader = node_info("n2", "127.0.0.1:9");

    // Through the client: the peer refuses, which openraft sees as Unreachable (back off, do not spin).
    let wrong = PeerNetwork::new("not-the-secret").unwrap();
    let mut client = client_to(&wrong, 1, &node.info).await;
    let vote = client.vote(VoteRequest::new(Vote::new(5, 2), None), option(TTL)).await;
    assert!(matches!(vote, Err(RPCError::Unreachable(_))), "{vote:?}");
    let append = AppendEntriesRequest {
        vote: Vote::new_committed(5, 2),
        prev_log_id: None,
        leader_commit: None,
        entries: vec![Entry {
            log_id: log_id(5, 2, 0),
            payload: EntryPayload::Membership(fake_membership(&node, &leader)),
        }],
    };
    let append = client.append_entries(append, option(TTL)).await;
    assert!(matches!(append, Err(RPCError::Unreachable(_))), "{append:?}");
    let write = wrong.forward_write(1, &node.info, Command::BlobAbort { upload: 1 }, TTL).await;
    assert!(matches!(write, Err(ForwardError::Refused(_))), "{write:?}");

    // Raw: no header, a wrong one, and the right one with a different length.
    let body = encode(&VoteRequest::<NodeId>::new(Vote::new(6, 2), None));
    for secret in [None, Some("wrong"), Some("test-cluster-secret-2"), Some("")] {
        let (status, message) =
            raw_request(node.addr, &post_head(VOTE_PATH, secret, body.len()), &body).await;
        assert_eq!(status, 401, "secret {secret:?}");
        assert!(message.contains("secret"), "{message}");
    }
    // Unknown routes are refused too without the secret (nothing is revealed).
    let (status, _) = raw_request(node.addr, &post_head("/nope", None, 0), b"").await;
    assert_eq!(status, 401);

    // Nothing changed.
    let metrics = node.raft.metrics().borrow().clone();
    assert_eq!(metrics.vote, Vote::default());
    assert_eq!(metrics.current_term, 0);
    assert_eq!(metrics.last_log_index, None);
    assert_eq!(node.log.inner().vote, None);
    assert!(node.log.inner().entries.is_empty());

    // The right secret on the same request is accepted (the refusals were about the secret only).
    let (status, _) = raw_request(node.addr, &post_head(VOTE_PATH, Some(SECRET), body.len()), &body).await;
    assert_eq!(status, 200);
    assert_eq!(node.raft.metrics().borrow().vote, Vote::new(6, 2));

    node.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_400_404_405() {
    let node = TestNode::start(1).await;

    for (path, body) in [
        (VOTE_PATH, &b"definitely not bincode"[..]),
        (VOTE_PATH, &b""[..]),
        ("/raft/append", &[0xff; 64][..]),
        ("/raft/snapshot", &[1, 2, 3][..]),
        ("/cluster/write", &[9; 10][..]),
    ] {
        let (status, message) =
            raw_request(node.addr, &post_head(path, Some(SECRET), body.len()), body).await;
        assert_eq!(status, 400, "{path} {body:?}: {message}");
        assert!(message.contains("not a bincode"), "{message}");
    }

    let (status, message) = raw_request(node.addr, &post_head("/raft/nope", Some(SECRET), 0), b"").await;
    assert_eq!(status, 404, "{message}");
    let get = format!(
        "GET {VOTE_PATH} HTTP/1.1\r\nHost: peer\r\nConnection: close\r\n{SECRET_HEADER}: {SECRET}\r\n{PROTOCOL_HEADER}: {PROTOCOL_VERSION}\r\n\
         {TARGET_ID_HEADER}: 1\r\n\r\n"
    );
    let (status, _) = raw_request(node.addr, &get, b"").await;
    assert_eq!(status, 405);

    // The node is unharmed and still answers.
    let network = PeerNetwork::new(SECRET).unwrap();
    let mut client = client_to(&network, 1, &node.info).await;
    let vote = client.vote(VoteRequest::new(Vote::new(1, 2), None), option(TTL)).await.expect("vote");
    assert!(vote.vote_granted);

    node.stop().await;
}

#[tokio::test]
async fn another_protocol_version_or_another_target_node_is_refused_and_changes_nothing() {
    let node = TestNode::start(1).await;
    let body = tandem_cluster::types::encode(&VoteRequest::<NodeId>::new(Vote::new(6, 2), None));
    for version in [None, Some("1"), Some("2"), Some("3"), Some("4"), Some("6"), Some("x")] {
        let header = version.map(|v| format!("{PROTOCOL_HEADER}: {v}\r\n")).unwrap_or_default();
        let head = format!(
            "POST {VOTE_PATH} HTTP/1.1\r\nHost: peer\r\nConnection: close\r\n{SECRET_HEADER}: {SECRET}\r\n{header}\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        let (status, message) = raw_request(node.addr, &head, &body).await;
        assert_eq!(status, 400, "version {version:?}: {message}");
        assert!(message.contains(&format!("version {PROTOCOL_VERSION}")), "{message}");
    }
    // A request meant for another node id (the node once at this address) is refused.
    let head = post_head_to(VOTE_PATH, Some(SECRET), body.len(), 99);
    let (status, message) = raw_request(node.addr, &head, &body).await;
    assert_eq!(status, 403, "{message}");
    assert!(message.contains("servers remove"), "{message}");
    assert_eq!(node.raft.metrics().borrow().vote, Vote::default(), "nothing was voted");
    // The same vote for this node's id is taken.
    let head = post_head_to(VOTE_PATH, Some(SECRET), body.len(), 1);
    let (status, message) = raw_request(node.addr, &head, &body).await;
    assert_eq!(status, 200, "{message}");
    node.stop().await;
}

/// A request of another cluster is refused (403 with the refusal kind), typed on the sender's side, noted on
/// the receiver's, and changes nothing; a node without a cluster id learns it from the first request meant for
/// it, and refuses other clusters from then on.
#[tokio::test]
async fn another_cluster_is_refused_and_a_joining_node_learns_its_cluster() {
    let identity = |id: NodeId, cluster: &str| LocalIdentity::in_memory(id, Some(cluster.to_owned()));
    let node = TestNode::start_as(identity(1, "cluster-a")).await;
    let stranger = PeerNetwork::new(SECRET).unwrap().with_identity(identity(2, "cluster-b"));
    let mut client = client_to(&stranger, 1, &node.info).await;
    let vote = client.vote(VoteRequest::new(Vote::new(5, 2), None), option(TTL)).await;
    assert!(matches!(vote, Err(RPCError::Unreachable(_))), "{vote:?}");
    let refusal = stranger.contact(&node.info.peer_addr).refusing().cloned().expect("a typed refusal");
    assert_eq!(refusal.kind, RefusalKind::OtherCluster);
    assert!(refusal.message.contains("cluster-a") && refusal.message.contains("cluster-b"), "{refusal}");
    match stranger.forward_write(1, &node.info, Command::BlobAbort { upload: 1 }, TTL).await {
        Err(ForwardError::IdentityRefused(refusal)) => assert_eq!(refusal.kind, RefusalKind::OtherCluster),
        other => panic!("expected an identity refusal, got {other:?}"),
    }
    // Raw, with no cluster id at all: refused the same way, the kind in its header.
    let body = encode(&VoteRequest::<NodeId>::new(Vote::new(6, 2), None));
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    stream.write_all(post_head(VOTE_PATH, Some(SECRET), body.len()).as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains(&format!("{REFUSAL_HEADER}: other-cluster")), "{answer}");
    assert!(answer.contains("no cluster yet"), "{answer}");
    assert_eq!(node.raft.metrics().borrow().vote, Vote::default(), "nothing was voted");
    let noted = node.identity.refused_senders();
    let from_stranger = noted.iter().find(|r| r.sender == Some(2)).expect("the stranger is noted");
    assert_eq!(from_stranger.kind, RefusalKind::OtherCluster);
    assert_eq!(from_stranger.count, 2);
    assert_eq!(from_stranger.sender_cluster.as_deref(), Some("cluster-b"));
    // A member of the same cluster is heard.
    let member = PeerNetwork::new(SECRET).unwrap().with_identity(identity(2, "cluster-a"));
    let mut client = client_to(&member, 1, &node.info).await;
    client.vote(VoteRequest::new(Vote::new(5, 2), None), option(TTL)).await.expect("vote");
    node.stop().await;

    let joining = TestNode::start(3).await;
    assert_eq!(joining.identity.cluster_id(), None);
    let mut client = client_to(&member, 3, &joining.info).await;
    client.vote(VoteRequest::new(Vote::new(5, 2), None), option(TTL)).await.expect("vote");
    assert_eq!(joining.identity.cluster_id().as_deref(), Some("cluster-a"), "learned from the request");
    let mut client = client_to(&stranger, 3, &joining.info).await;
    let vote = client.vote(VoteRequest::new(Vote::new(9, 2), None), option(TTL)).await;
    assert!(matches!(vote, Err(RPCError::Unreachable(_))), "{vote:?}");
    assert_eq!(joining.raft.metrics().borrow().vote.leader_id().term, 5, "the stranger changed nothing");
    joining.stop().await;
    let _ = CLUSTER_ID_HEADER;
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let node = TestNode::start(1).await;

    // Announced by Content-Length: refused before a byte of the body is read.
    let head = post_head(VOTE_PATH, Some(SECRET), MAX_BODY_BYTES + 1);
    let (status, message) = raw_request(node.addr, &head, b"").await;
    assert_eq!(status, 413, "{message}");

    // Streamed (chunked, no length): refused once the limit is crossed.
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    let head = format!(
        "POST /raft/append HTTP/1.1\r\nHost: peer\r\nConnection: close\r\n{SECRET_HEADER}: {SECRET}\r\n\
         {PROTOCOL_HEADER}: {PROTOCOL_VERSION}\r\n{TARGET_ID_HEADER}: 1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        MAX_BODY_BYTES + 1
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![0u8; MAX_BODY_BYTES + 1]).await.unwrap();
    let (status, message) = read_response(&mut stream).await;
    assert_eq!(status, 413, "{message}");

    // Exactly at the limit is read (and then fails to decode as a vote).
    let body = vec![0xffu8; MAX_BODY_BYTES];
    let (status, _) = raw_request(node.addr, &post_head(VOTE_PATH, Some(SECRET), body.len()), &body).await;
    assert_eq!(status, 400);

    node.stop().await;
}

#[tokio::test]
async fn appends_too_large_to_send_ask_openraft_for_fewer_entries() {
    let node = TestNode::start(1).await;
    let network = PeerNetwork::new(SECRET).unwrap();
    let mut client = client_to(&network, 1, &node.info).await;
    // A change whose reason is `size` bytes of text (strings encode fast even in unoptimized test builds).
    let entry = |index: u64, size: usize| {
        let meta = ChangeMeta { reason: "r".repeat(size), ..Default::default() };
        Entry {
            log_id: log_id(1, 2, index),
            payload: EntryPayload::Normal(Request::one(Command::Change(ChangeSet::new(meta)))),
        }
    };
    let append = |entries: Vec<Entry<TypeConfig>>| AppendEntriesRequest {
        vote: Vote::new_committed(1, 2),
        prev_log_id: None,
        leader_commit: None,
        entries,
    };

    // Several entries: openraft is told to send half as many (and retries at once).
    let result = client
        .append_entries(append(vec![entry(0, MAX_BODY_BYTES / 2), entry(1, MAX_BODY_BYTES / 2)]), option(TTL))
        .await;
    match result {
        Err(RPCError::PayloadTooLarge(too_large)) => assert_eq!(too_large.entries_hint(), 1),
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    // One entry cannot be split: back off instead of spinning.
    let result = client.append_entries(append(vec![entry(0, MAX_BODY_BYTES)]), option(TTL)).await;
    assert!(matches!(result, Err(RPCError::Unreachable(_))), "{result:?}");

    // Nothing reached the node.
    assert_eq!(node.raft.metrics().borrow().vote, Vote::default());
    assert!(node.log.inner().entries.is_empty());
    node.stop().await;
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish() {
    let node = TestNode::start(1).await;
    let body = encode(&VoteRequest::<NodeId>::new(Vote::new(3, 2), None));
    let (first, rest) = body.split_at(body.len() / 2);

    // A request whose head and half its body are in when shutdown starts...
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    stream.write_all(post_head(VOTE_PATH, Some(SECRET), body.len()).as_bytes()).await.unwrap();
    stream.write_all(first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    node.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ... is still served, while new connections are refused.
    assert!(TcpStream::connect(node.addr).await.is_err(), "the listener should be closed");
    stream.write_all(rest).await.unwrap();
    let (status, _) = read_response(&mut stream).await;
    assert_eq!(status, 200);
    assert_eq!(node.raft.metrics().borrow().vote, Vote::new(3, 2));

    tokio::time::timeout(Duration::from_secs(2), node.server).await.expect("server stops").expect("join");
    node.raft.shutdown().await.expect("raft shutdown");
}

#[tokio::test]
async fn unreachable_peers_map_to_unreachable_within_the_ttl() {
    let network = PeerNetwork::new(SECRET).unwrap();

    // A closed port: refused at once.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let info = node_info("gone", &closed.to_string());
    let mut client = client_to(&network, 9, &info).await;
    let started = Instant::now();
    let result = client.vote(VoteRequest::new(Vote::new(1, 1), None), option(Duration::from_secs(3))).await;
    assert!(matches!(result, Err(RPCError::Unreachable(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    let write = network.forward_write(9, &info, Command::BlobAbort { upload: 1 }, TTL).await;
    assert!(matches!(write, Err(ForwardError::Unreachable(_))), "{write:?}");

    // A peer that accepts connections but never answers: bounded by the ttl.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let mut client = client_to(&network, 8, &node_info("silent", &silent_addr.to_string())).await;
    let ttl = Duration::from_millis(300);
    let started = Instant::now();
    let append = AppendEntriesRequest {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        leader_commit: None,
        entries: vec![],
    };
    let result: Result<_, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> =
        client.append_entries(append, option(ttl)).await;
    let elapsed = started.elapsed();
    assert!(matches!(result, Err(RPCError::Unreachable(_))), "{result:?}");
    assert!(elapsed >= ttl && elapsed < ttl + Duration::from_millis(500), "took {elapsed:?}");

    // An address that is not host:port at all.
    let mut client = client_to(&network, 7, &node_info("bad", "not an address")).await;
    let result = client.vote(VoteRequest::new(Vote::new(1, 1), None), option(TTL)).await;
    assert!(matches!(result, Err(RPCError::Unreachable(_))), "{result:?}");

    hold.abort();
}

#[tokio::test]
async fn connections_are_kept_alive_and_reused() {
    let node = TestNode::start(1).await;

    // A TCP relay in front of the node that counts the connections made through it.
    let relay = CountingRelay::start(node.addr).await;

    let network = PeerNetwork::new(SECRET).unwrap();
    let info = node_info("n1-via-proxy", &relay.addr.to_string());
    // Two clients from the same network share its pool.
    let mut first = client_to(&network, 1, &info).await;
    let mut second = client_to(&network, 1, &info).await;
    for term in 1..=20 {
        let client = if term % 2 == 0 { &mut first } else { &mut second };
        let vote = client.vote(VoteRequest::new(Vote::new(term, 2), None), option(TTL)).await.expect("vote");
        assert!(vote.vote_granted);
    }
    assert_eq!(relay.connections(), 1, "20 sequential RPCs should share one connection");

    drop(relay);
    node.stop().await;
}

#[tokio::test]
async fn shutdown_closes_the_endpoint() {
    let node = TestNode::start(1).await;
    let network = PeerNetwork::new(SECRET).unwrap();
    let mut client = client_to(&network, 1, &node.info).await;
    // Leaves an idle keep-alive connection in the pool: shutdown must not wait for it.
    client.vote(VoteRequest::new(Vote::new(1, 2), None), option(TTL)).await.expect("vote");

    node.shutdown.cancel();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(2), node.server).await.expect("prompt shutdown").expect("join");
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());

    let result = client.vote(VoteRequest::new(Vote::new(2, 2), None), option(TTL)).await;
    assert!(matches!(result, Err(RPCError::Unreachable(_) | RPCError::Network(_))), "{result:?}");
    let result = client.vote(VoteRequest::new(Vote::new(2, 2), None), option(TTL)).await;
    assert!(matches!(result, Err(RPCError::Unreachable(_))), "{result:?}");
    node.raft.shutdown().await.expect("raft shutdown");
}

/// A TCP relay in front of `target` that counts the connections made through it and can cut them all.
struct CountingRelay {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    relays: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl CountingRelay {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let relays: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (counter, tasks) = (connections.clone(), relays.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tasks.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        CountingRelay { addr, connections, relays, accept }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Closes every connection made so far (both ends see it closed), as a restarting peer would.
    async fn cut_all(&self) {
        for relay in self.relays.lock().unwrap().drain(..) {
            relay.abort();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for CountingRelay {
    fn drop(&mut self) {
        self.accept.abort();
        for relay in self.relays.lock().unwrap().drain(..) {
            relay.abort();
        }
    }
}

#[tokio::test]
async fn appends_keep_a_connection_of_their_own_and_reconnect_when_the_peer_closes_it() {
    let node = TestNode::start(1).await;
    let relay = CountingRelay::start(node.addr).await;
    let network = PeerNetwork::new(SECRET).unwrap();
    let info = node_info("n1-via-relay", &relay.addr.to_string());
    let mut client = client_to(&network, 1, &info).await;
    let heartbeat = |commit: u64| AppendEntriesRequest {
        vote: Vote::new_committed(1, 2),
        prev_log_id: None,
        leader_commit: None,
        entries: (commit == 0)
            .then(|| Entry {
                log_id: log_id(1, 2, 0),
                payload: EntryPayload::Membership(fake_membership(&node, &node_info("n2", "127.0.0.1:9"))),
            })
            .into_iter()
            .collect(),
    };

    // A client's first AppendEntries goes through the pool (openraft's leadership checks are new clients
    // sending one each): many such checks share the pool's one connection.
    for _ in 0..5 {
        let mut check = client_to(&network, 1, &info).await;
        let answer = check.append_entries(heartbeat(1), option(TTL)).await.expect("leadership check");
        assert_eq!(answer, AppendEntriesResponse::Success);
    }
    assert_eq!(relay.connections(), 1, "five one-request clients should share the pool's connection");

    // A replication stream's requests after its first share a connection of their own...
    for n in 0..20 {
        let answer = client.append_entries(heartbeat(n), option(TTL)).await.expect("append");
        assert_eq!(answer, AppendEntriesResponse::Success);
    }
    assert_eq!(relay.connections(), 2, "the first append through the pool, the other 19 on one connection");
    // ... and a vote from the same client goes through the pool.
    client.vote(VoteRequest::new(Vote::new(1, 2), None), option(TTL)).await.expect("vote");
    assert_eq!(relay.connections(), 2);

    // The peer closes every connection (it restarted): the next append still gets through, on a new one.
    relay.cut_all().await;
    let answer = client.append_entries(heartbeat(20), option(TTL)).await.expect("append after the cut");
    assert_eq!(answer, AppendEntriesResponse::Success);
    assert_eq!(relay.connections(), 3);
    let answer = client.append_entries(heartbeat(21), option(TTL)).await.expect("append");
    assert_eq!(answer, AppendEntriesResponse::Success);
    assert_eq!(relay.connections(), 3, "the new connection is kept");

    // An append abandoned mid-exchange (its caller dropped it after one poll) leaves no half-used connection
    // in the slot: the next append connects anew instead of falling back to the pool (which holds the vote's
    // connection) for good.
    client.vote(VoteRequest::new(Vote::new(1, 2), None), option(TTL)).await.expect("vote");
    assert_eq!(relay.connections(), 4);
    {
        let mut abandoned = std::pin::pin!(client.append_entries(heartbeat(22), option(TTL)));
        let first_poll = std::future::poll_fn(|cx| std::task::Poll::Ready(abandoned.as_mut().poll(cx))).await;
        assert!(first_poll.is_pending(), "an exchange over TCP cannot be done after one poll");
    }
    for n in 23..26 {
        let answer =
            client.append_entries(heartbeat(n), option(TTL)).await.expect("append after an abandoned one");
        assert_eq!(answer, AppendEntriesResponse::Success);
    }
    assert_eq!(relay.connections(), 5, "one new connection after the abandoned exchange, then kept");

    node.stop().await;
}

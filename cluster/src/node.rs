//! A running cluster node: Raft, its stores, its network, and the rules of its role.
//!
//! [`ClusterNode`] is what the API and the boot server talk to. It offers the narrow interface they need —
//! write a command, read at a consistency level, change membership, report status — and hides openraft.
//!
//! ## Writes
//! A data node that leads proposes through its [`Proposer`], which packs concurrent writes into shared log
//! entries (group commit). A data node that follows forwards the request to the
//! leader over the peer network (`POST /cluster/write`). A mirror refuses, naming the primary; a witness
//! refuses, since it serves no configuration. Before proposing, the leader checks that a quorum acknowledged it
//! recently (`millis_since_quorum_ack`): if not — a pair whose partner died — the write fails at once with a
//! [`WriteError::NoQuorum`] that says which peer is unreachable since when and how to continue alone, instead of
//! hanging until a timeout.
//!
//! ## The witness hands leadership back
//! The witness is an ordinary voter with a longer election timeout, so it can always break a tie (the note in
//! `shared/notes/openraft-sled.md` records how a witness that never campaigns deadlocks when the surviving data
//! node is behind it). When it finds itself leader and a data node has replicated its whole log, it hands
//! leadership to it with the planned hand-over ([`handover`]: writes held, the data node asked to campaign, the
//! witness grants its vote and steps down, one vote round trip). If that fails, it turns its own heartbeats
//! off: the data node's election timer fires, it campaigns with a complete log, the witness votes for it and
//! steps down. Heartbeats come back on as soon as someone else leads, or after
//! [`Timing::witness_quiet_limit`] if no data node took over. (Going quiet alone never ended while writes kept
//! coming through the data node: each append resets its election timer.)
//!
//! ## Planned hand-over
//! `tandem servers lead NAME` moves leadership to a caught-up data node in one vote round trip, writes
//! waiting in the proposer meanwhile: [`handover`].
//!
//! ## Membership
//! Changes are serialized by a lock. Adding a server adds it as a learner, waits until it has replicated the
//! leader's whole log, then (data and witness) promotes it to voter. At most two data nodes and one witness;
//! mirrors are learners forever.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};
use tandem_storage::{Command, Revision};
use tokio::sync::watch;

use crate::blob_compaction::{self, BlobCompaction, CompactionInputs, CompactionStep};
use crate::network::{ForwardError, PeerNetwork, Refusal, RefusedSender};
use crate::proposer::Proposer;
use crate::state_machine::{SharedStore, read_without_stalling};
use crate::types::{Metrics, NodeId, NodeInfo, Raft, Role, Written, metrics_now};
use crate::upload_reaper::{self, UploadReaper};

mod role_switch;
pub use role_switch::RoleChange;

pub mod handover;
pub use handover::{Handover, HandoverError};

/// Raft timing of a node.
///
/// ## How openraft 0.9 uses these, and why the defaults
/// - The leader sends a heartbeat on its tick, every `heartbeat_ms × 1.5` (openraft ticks at that period);
///   `heartbeat_ms` is also the timeout of every AppendEntries request, so it must cover an HTTP round trip
///   plus a follower's fsync on a loaded machine.
/// - A follower that has seen a leader campaigns only once `election_max_ms` (the *leader lease*) **plus**
///   its election timeout (drawn once at start in `[election_min_ms, election_max_ms)`) have passed since the
///   last message from the leader: 600–800 ms with the defaults, i.e. four to five missed heartbeats, then up
///   to one tick until the timer is checked. A failover (leader killed → new leader) therefore takes
///   0.6–0.95 s plus one vote round trip.
/// - A node also *refuses to vote* while its own lease (its `election_max_ms` since the last heartbeat) runs.
///
/// The witness gets its own election timeouts ([`Timing::witness_election_ms`]): its lease ends before the
/// earliest moment a data node campaigns (so the data node's first vote request is granted instead of
/// refused, which used to cost a second election round: ~2.8 s failovers), and its own first campaign comes
/// after the latest moment a data node campaigns plus a tick (so a data node, not the witness, normally takes
/// over and no hand-back is needed). It still campaigns, so a survivor that is behind the witness is never
/// stuck.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing { heartbeat_ms: 100, election_min_ms: 200, election_max_ms: 400 }
    }
}

impl Timing {
    /// The witness's election timeout range: `[max + min/2, max + 3·min/4)`. Its lease (the upper bound) ends
    /// before a data node's earliest campaign (`max + min`), and its earliest campaign (lease + lower bound,
    /// `2·max + 5·min/4`) comes after a data node's latest (`2·max`) plus one tick (`1.5 × heartbeat`) as long as
    /// `5·min/4 > 1.5 × heartbeat` — true for the defaults (250 ms > 150 ms).
    pub fn witness_election_ms(&self) -> (u64, u64) {
        let max = self.election_max_ms;
        let min = self.election_min_ms;
        (max + min / 2, max + min * 3 / 4)
    }

    /// How long a witness that leads keeps its heartbeats off for a caught-up data node to take over before
    /// it turns them on again: the data node campaigns once its lease (`election_max_ms`) and its election
    /// timeout (up to `election_max_ms` more) have passed since the last heartbeat, plus a tick; twice that,
    /// and never less than 5 s. (A fixed 5 s was shorter than a data node's wait with the slow-link timing of
    /// docs/cluster.md, 300 / 1500: the witness kept the lead for good under delay and loss.)
    pub fn witness_quiet_limit(&self) -> Duration {
        let data_node_waits = 2 * self.election_max_ms + 2 * self.heartbeat_ms;
        Duration::from_secs(5).max(Duration::from_millis(2 * data_node_waits))
    }

    /// The longest a healthy cluster can be without a leader after losing one: the witness's lease plus its
    /// longest election timeout plus a tick, twice (one split vote). A write that has seen no leader for
    /// longer gives up: the cluster has lost its quorum.
    pub fn failover_bound(&self) -> Duration {
        let (_, witness_max) = self.witness_election_ms();
        Duration::from_millis(2 * (2 * witness_max + self.heartbeat_ms * 3 / 2))
    }

    /// The openraft configuration for a node of `role`.
    pub fn raft_config(&self, role: Role) -> openraft::Config {
        let (election_min, election_max) = match role {
            Role::Witness => self.witness_election_ms(),
            Role::Data | Role::Mirror => (self.election_min_ms, self.election_max_ms),
        };
        openraft::Config {
            cluster_name: "tandem".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: election_min,
            election_timeout_max: election_max,
            install_snapshot_timeout: 10_000,
            max_payload_entries: 512,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(5_000),
            snapshot_max_chunk_size: 1024 * 1024,
            max_in_snapshot_log_to_keep: 1_000,
            purge_batch_size: 1_000,
            ..Default::default()
        }
    }
}

/// Why a write was not done. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("this node is a read-only mirror; send changes to the primary {primary}")]
    ReadOnlyMirror { primary: String },
    #[error("this node is a witness: it serves no configuration; send changes to a data node")]
    Witness,
    #[error(
        "quorum lost: {detail}. Writes are refused so that both copies stay identical; boots and local reads keep \
         working. To continue on this node alone, stop it and run `tandem recover --data-dir DIR --force-standalone`"
    )]
    NoQuorum { detail: String },
    #[error("the write could not be completed: {0}")]
    Failed(String),
}

/// Why a linearizable read could not be served. Each message names what is missing.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("this node is a witness: it serves no configuration; read from a data node or a mirror")]
    Witness,
    /// The leader could not be asked (none known, unreachable, refusing), or it could not confirm with a
    /// quorum that it still leads: the read cannot be linearized.
    #[error(
        "a linearizable read needs the leader and a quorum: {detail}. Local reads (`--consistency local`) still \
         work"
    )]
    NoLeader { detail: String },
    /// The leader answered, but this node did not apply up to the read index in time.
    #[error(
        "this node did not catch up with the leader's commit point {index} within {seconds} s (applied {applied}); \
         retry, or read from the leader"
    )]
    Behind { index: u64, applied: u64, seconds: u64 },
}

/// The store's lock is poisoned: a thread panicked while it held the lock (the one message for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the store lock is poisoned")]
pub struct StoreLockPoisoned;

/// Why a membership change was not done.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("{0}")]
    Refused(String),
    #[error("membership change failed: {0}")]
    Failed(String),
}

/// What a peer looks like from this node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerStatus {
    pub id: NodeId,
    pub name: String,
    pub role: Role,
    pub peer_addr: String,
    pub api_addr: String,
    pub boot_addr: String,
    /// Whether this node reached the peer within two election timeouts. Known on the leader (every peer), on a
    /// follower for its leader, and on a node without a leader for every voter (it asks them for votes).
    pub reachable: Option<bool>,
    /// Entries the peer is behind the leader's log (leader only).
    pub lag_entries: Option<u64>,
    /// Seconds since the peer last had the leader's whole log (leader only; 0 when in sync).
    pub lag_seconds: Option<f64>,
    /// `in_sync`, `catching_up`, `disconnected`, `refused` (see `refusal`), or `unknown` (on a follower).
    pub sync: String,
    /// Set when the node at the peer's address refused this node's last requests: another cluster, another
    /// node (its data directory was replaced), or this node is no member of its cluster. Never `in_sync` then.
    #[serde(default)]
    pub refusal: Option<Refusal>,
    /// When this node last had an answer from the peer (Unix milliseconds); `None` if not since it started.
    /// With `reachable: false` it says since when the peer is unreachable.
    #[serde(default)]
    pub last_contact_ms: Option<u64>,
}

/// The node's view of itself and the cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub name: String,
    pub id: NodeId,
    pub role: Role,
    pub raft_state: String,
    pub leader: Option<NodeId>,
    pub leader_name: Option<String>,
    pub term: u64,
    pub revision: Revision,
    pub applied_index: Option<u64>,
    pub last_log_index: Option<u64>,
    /// The last log index included in this node's latest snapshot.
    pub snapshot_index: Option<u64>,
    /// The last log index purged from this node's log (the log starts after it).
    pub purged_index: Option<u64>,
    /// `single`, `full`, `full+witness`, `mirrored`, or `joining` (not a member yet).
    pub mode: String,
    /// Serving from its last state without a quorum.
    pub degraded: bool,
    pub degraded_reason: Option<String>,
    pub peers: Vec<PeerStatus>,
    /// Set when this run found its database unloadable after a crash, moved it aside and rebuilt it from
    /// the last snapshot and the Raft log: where the old one went, and why.
    #[serde(default)]
    pub store_rebuilt: Option<String>,
    /// The cluster this node belongs to; `None` while it waits to be added (`--join`).
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// Nodes whose requests this node refused in the last few minutes, and why (another cluster, another
    /// node id, not a member): see `network::identity_check`.
    #[serde(default)]
    pub refusing: Vec<RefusedSender>,
    /// Blob uploads begun and neither committed nor aborted (the leader aborts those that stop progressing:
    /// [`crate::upload_reaper`]).
    #[serde(default)]
    pub uploads_in_progress: usize,
}

/// A running node. Raft, the store, the network and the timing are private: callers ask questions
/// ([`ClusterNode::is_leader`], [`ClusterNode::leader`], [`ClusterNode::read_store`], …).
pub struct ClusterNode {
    pub id: NodeId,
    pub info: NodeInfo,
    raft: Raft,
    store: SharedStore,
    network: PeerNetwork,
    timing: Timing,
    applied: watch::Receiver<Revision>,
    /// Packs this node's writes into shared log entries while it leads.
    proposer: Arc<Proposer>,
    membership_lock: tokio::sync::Mutex<()>,
    /// When each peer last had the leader's whole log (leader only): its lag in seconds is the time since.
    last_in_sync: std::sync::Mutex<BTreeMap<NodeId, Instant>>,
    /// See [`Status::store_rebuilt`].
    store_rebuilt: std::sync::Mutex<Option<String>>,
    /// New blob bytes after which the log is compacted ([`crate::blob_compaction`]).
    blob_compaction_bytes: std::sync::atomic::AtomicU64,
    /// The term this node leads and since when it knows (see [`handover`]).
    leading_since: std::sync::Mutex<Option<(u64, Instant)>>,
    /// How long an upload may go without progress before the leader aborts it, in milliseconds.
    abandoned_upload_after_ms: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode").field("id", &self.id).field("info", &self.info).finish()
    }
}

/// How long a write waits for its commit before it is reported as failed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a linearizable read waits, at most, for the leader's read index and for this node to apply up
/// to it.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
// The proposer drops the replies of an entry that got no answer after its limit: nobody may still wait then.
const _: () = assert!(WRITE_TIMEOUT.as_secs() < crate::proposer::ANSWER_LIMIT.as_secs());

impl ClusterNode {
    pub fn new(
        id: NodeId,
        info: NodeInfo,
        raft: Raft,
        store: SharedStore,
        network: PeerNetwork,
        timing: Timing,
        applied: watch::Receiver<Revision>,
    ) -> Arc<Self> {
        Arc::new(ClusterNode {
            id,
            info,
            proposer: Arc::new(Proposer::start(raft.clone())),
            raft,
            store,
            network,
            timing,
            applied,
            membership_lock: tokio::sync::Mutex::new(()),
            last_in_sync: std::sync::Mutex::new(BTreeMap::new()),
            store_rebuilt: std::sync::Mutex::new(None),
            blob_compaction_bytes: std::sync::atomic::AtomicU64::new(blob_compaction::DEFAULT_THRESHOLD),
            leading_since: std::sync::Mutex::new(None),
            abandoned_upload_after_ms: std::sync::atomic::AtomicU64::new(
                upload_reaper::DEFAULT_ABANDON_AFTER.as_millis() as u64,
            ),
        })
    }

    /// Sets how many new blob bytes make the node compact its Raft log ([`crate::blob_compaction`]); read
    /// when [`ClusterNode::run_duties`] starts.
    pub fn set_blob_compaction_bytes(&self, bytes: u64) {
        self.blob_compaction_bytes.store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sets how long a blob upload may go without progress before the leader aborts it
    /// ([`crate::upload_reaper`]); read when [`ClusterNode::run_duties`] starts.
    pub fn set_abandoned_upload_after(&self, limit: Duration) {
        self.abandoned_upload_after_ms.store(limit.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records that this run rebuilt the store (shown in [`Status::store_rebuilt`] until the node restarts).
    pub fn note_store_rebuilt(&self, what: String) {
        *self.store_rebuilt.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(what);
    }

    /// The proposer of this node's writes, for the peer endpoint to propose forwarded writes through.
    pub fn proposer(&self) -> Arc<Proposer> {
        self.proposer.clone()
    }

    /// The node's role: as the cluster's membership records it (a mirror promoted by a forced recovery is a
    /// data node from then on), or as configured while it is not a member.
    pub fn role(&self) -> Role {
        let metrics = metrics_now(&self.raft);
        metrics.membership_config.membership().get_node(&self.id).map_or(self.info.role, |node| node.role)
    }

    /// Whether this node leads the cluster now.
    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.id)
    }

    /// The leader this node knows of, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// The store, for reading. A wait for the lock (held by a snapshot install or a large apply on a blocking
    /// thread) does not stall the runtime ([`crate::state_machine::read_without_stalling`]).
    pub fn read_store(
        &self,
    ) -> Result<std::sync::RwLockReadGuard<'_, tandem_storage::Store>, StoreLockPoisoned> {
        read_without_stalling(&self.store).map_err(|_| StoreLockPoisoned)
    }

    /// The shared store itself, for a reader that outlives a borrow of the node (the boot server's content).
    pub fn shared_store(&self) -> SharedStore {
        self.store.clone()
    }

    /// Stops Raft (at the end of `tandem serve`).
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }

    /// The store's current revision.
    pub fn revision(&self) -> Revision {
        self.read_store().map(|store| store.revision()).unwrap_or_default()
    }

    /// Whether this node has never been part of a cluster (a fresh `--join` node, or a new single node).
    pub async fn is_pristine(&self) -> bool {
        !self.raft.is_initialized().await.unwrap_or(true)
    }

    /// Makes this node a single-node cluster (first start without `--join`).
    pub async fn initialize_single(&self) -> Result<(), String> {
        let members = BTreeMap::from([(self.id, self.info.clone())]);
        self.raft.initialize(members).await.map_err(|e| e.to_string())
    }

    /// Waits until the store has applied at least `revision`.
    pub async fn wait_applied(&self, revision: Revision, timeout: Duration) -> bool {
        let mut applied = self.applied.clone();
        tokio::time::timeout(timeout, applied.wait_for(|r| *r >= revision)).await.is_ok_and(|r| r.is_ok())
    }

    fn node_name(&self, id: NodeId) -> String {
        let metrics = metrics_now(&self.raft);
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|node| format!("{} ({})", node.name, node.api_addr))
            .unwrap_or_else(|| format!("node {id}"))
    }

    /// Proposes a command through the leader, wherever it is.
    pub async fn write(&self, command: Command) -> Result<Written, WriteError> {
        match self.role() {
            Role::Mirror => {
                let leader = self.raft.metrics().borrow().current_leader;
                let primary =
                    leader.map(|id| self.node_name(id)).unwrap_or_else(|| "(unknown: no leader seen)".into());
                return Err(WriteError::ReadOnlyMirror { primary });
            }
            Role::Witness => return Err(WriteError::Witness),
            Role::Data => {}
        }
        let deadline = Instant::now() + WRITE_TIMEOUT;
        // Since when no leader could take the write: past the longest failover (`Timing::failover_bound`), the
        // cluster has no quorum (a pair whose partner died elects no one) and the write fails at once instead of
        // at the deadline.
        let mut leaderless_since: Option<Instant> = None;
        let give_up_after = self.timing.failover_bound();
        loop {
            let metrics = metrics_now(&self.raft);
            match metrics.current_leader {
                // Elected a moment ago: no follower has answered yet, so the quorum is unknown, not lost (a
                // hand-over or failover lands writes here). Wait like a leaderless write.
                Some(leader) if leader == self.id && Self::awaiting_first_ack(&metrics) => {
                    leaderless_since.get_or_insert_with(Instant::now);
                }
                Some(leader) if leader == self.id => {
                    self.check_quorum(&metrics)?;
                    leaderless_since = None;
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    let write = tokio::time::timeout(remaining, self.proposer.propose(command.clone()));
                    tokio::pin!(write);
                    // While the write waits for its commit, watch the quorum: a partner that died just before
                    // the write would otherwise keep it waiting until the deadline.
                    // (`interval_at`: a plain interval ticks at once, costing every write a metrics copy.)
                    let period = Duration::from_millis(100);
                    let mut watch = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                    let result = loop {
                        tokio::select! {
                            result = &mut write => break result,
                            _ = watch.tick() => {
                                let now = metrics_now(&self.raft);
                                if now.current_leader == Some(self.id) && self.check_quorum(&now).is_err() {
                                    return Err(self.no_quorum_error(&now));
                                }
                            }
                        }
                    };
                    match result {
                        Ok(Ok(written)) => return Ok(written),
                        Ok(Err(error)) => {
                            if error.forward_to_leader::<NodeInfo>().is_none() {
                                return Err(WriteError::Failed(error.to_string()));
                            }
                        }
                        Err(_) => return Err(self.no_quorum_error(&metrics)),
                    }
                }
                Some(leader) => {
                    let node = metrics.membership_config.membership().get_node(&leader).cloned();
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    match node {
                        Some(node) => {
                            match self.network.forward_write(leader, &node, command.clone(), remaining).await
                            {
                                Ok(response) => return Ok(response),
                                Err(ForwardError::NotLeader { .. }) => {
                                    // The leader moved (or the witness is handing over): follow the new one.
                                    leaderless_since = None;
                                }
                                Err(error) => {
                                    tracing::debug!(%error, leader, "forwarding a write failed; retrying");
                                    leaderless_since.get_or_insert_with(Instant::now);
                                }
                            }
                        }
                        None => {
                            leaderless_since.get_or_insert_with(Instant::now);
                        }
                    }
                }
                None => {
                    leaderless_since.get_or_insert_with(Instant::now);
                }
            }
            let now = Instant::now();
            if now >= deadline || leaderless_since.is_some_and(|since| now - since > give_up_after) {
                return Err(self.no_quorum_error(&metrics_now(&self.raft)));
            }
            // Wait for a new leader (an election is running, or the leader is handing over).
            self.wait_metrics_change(Duration::from_millis(50)).await;
        }
    }

    /// Waits until openraft's metrics change, at most `limit`. Once Raft has stopped (its metrics channel is
    /// closed and `changed` fails at once) it sleeps the whole `limit`, so a caller's retry loop does not spin.
    async fn wait_metrics_change(&self, limit: Duration) {
        let mut metrics_rx = self.raft.metrics();
        if let Ok(Err(_closed)) = tokio::time::timeout(limit, metrics_rx.changed()).await {
            tokio::time::sleep(limit).await;
        }
    }

    /// A leader of several voters that no follower has acknowledged yet (`millis_since_quorum_ack` is
    /// `None` until the first AppendEntries answer of its term).
    fn awaiting_first_ack(metrics: &Metrics) -> bool {
        metrics.millis_since_quorum_ack.is_none()
            && metrics.membership_config.membership().voter_ids().count() > 1
    }

    fn check_quorum(&self, metrics: &Metrics) -> Result<(), WriteError> {
        let voters = metrics.membership_config.membership().voter_ids().count();
        if voters <= 1 {
            return Ok(());
        }
        let stale_after = self.timing.election_max_ms * 2;
        match metrics.millis_since_quorum_ack {
            Some(ms) if ms <= stale_after => Ok(()),
            _ => Err(self.no_quorum_error(metrics)),
        }
    }

    fn no_quorum_error(&self, metrics: &Metrics) -> WriteError {
        let membership = metrics.membership_config.membership();
        let unreachable: Vec<String> = membership
            .voter_ids()
            .filter(|id| *id != self.id)
            .map(|id| self.voter_contact(id, membership.get_node(&id)))
            .collect();
        let detail = if unreachable.is_empty() {
            "no leader can be elected".to_string()
        } else {
            unreachable.join("; ")
        };
        WriteError::NoQuorum { detail }
    }

    /// "NAME (API) unreachable since TIME (N s ago)", "… refuses this node: …" or "… not reached since this
    /// node started": what this node last heard from voter `id`, for error messages.
    fn voter_contact(&self, id: NodeId, node: Option<&NodeInfo>) -> String {
        let contact = node.map(|n| self.network.contact(&n.peer_addr)).unwrap_or_default();
        let since = match (contact.refusing(), contact.last_ok) {
            (Some(refusal), _) => format!("refuses this node: {refusal}"),
            (None, Some(time)) => {
                let ago = SystemTime::now().duration_since(time).unwrap_or_default();
                format!("unreachable since {} ({:.0} s ago)", rfc3339(time), ago.as_secs_f64())
            }
            (None, None) => "not reached since this node started".to_string(),
        };
        // Named from `node` (the caller's copy of the membership), not by reading the metrics again.
        let name =
            node.map_or_else(|| format!("node {id}"), |node| format!("{} ({})", node.name, node.api_addr));
        format!("{name} {since}")
    }

    /// Whether the peer at `addr` answered within two election timeouts (and has not refused this node since).
    fn recently_reached(&self, addr: &str) -> bool {
        let contact = self.network.contact(addr);
        contact.refusing().is_none()
            && contact.last_ok.is_some_and(|t| {
                t.elapsed().unwrap_or_default() < Duration::from_millis(self.timing.election_max_ms * 2)
            })
    }

    /// Adds a server: learner first, promoted to voter once it has caught up (data and witness).
    pub async fn add_server(&self, id: NodeId, info: NodeInfo) -> Result<(), MembershipError> {
        let _guard = self.membership_lock.lock().await;
        let metrics = metrics_now(&self.raft);
        if metrics.current_leader != Some(self.id) {
            return Err(MembershipError::Refused("membership changes are made on the leader".into()));
        }
        let membership = metrics.membership_config.membership().clone();
        if let Some(existing) = membership.get_node(&id)
            && existing == &info
            && (info.role == Role::Mirror || membership.voter_ids().any(|v| v == id))
        {
            return Ok(());
        }
        for (other_id, other) in membership.nodes() {
            if other.name == info.name && *other_id != id {
                return Err(MembershipError::Refused(format!(
                    "a server named '{}' is already a member",
                    info.name
                )));
            }
        }
        let count = |role: Role| membership.nodes().filter(|(nid, n)| n.role == role && **nid != id).count();
        match info.role {
            Role::Data if count(Role::Data) >= 2 => {
                return Err(MembershipError::Refused("a cluster has at most two data nodes".into()));
            }
            Role::Witness if count(Role::Witness) >= 1 => {
                return Err(MembershipError::Refused("a cluster has at most one witness".into()));
            }
            _ => {}
        }
        self.raft
            .add_learner(id, info.clone(), true)
            .await
            .map_err(|e| MembershipError::Failed(e.to_string()))?;
        // add_learner(blocking) waits only until the lag is small: wait for the whole log.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let metrics = metrics_now(&self.raft);
            let last = metrics.last_log_index;
            let matched =
                metrics.replication.as_ref().and_then(|r| r.get(&id).cloned()).flatten().map(|l| l.index);
            if matched >= last {
                break;
            }
            if Instant::now() > deadline {
                return Err(MembershipError::Failed(format!("{} did not catch up within 120 s", info.name)));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if info.role.is_voter() {
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(|e| MembershipError::Failed(e.to_string()))?;
        }
        Ok(())
    }

    /// Removes a server by name.
    pub async fn remove_server(&self, name: &str) -> Result<NodeId, MembershipError> {
        let _guard = self.membership_lock.lock().await;
        let metrics = metrics_now(&self.raft);
        if metrics.current_leader != Some(self.id) {
            return Err(MembershipError::Refused("membership changes are made on the leader".into()));
        }
        let membership = metrics.membership_config.membership().clone();
        let Some((&id, _)) = membership.nodes().find(|(_, n)| n.name == name) else {
            return Err(MembershipError::Refused(format!("no server named '{name}' in the cluster")));
        };
        if id == self.id {
            return Err(MembershipError::Refused(
                "a node cannot remove itself; remove it from another node".into(),
            ));
        }
        if membership.voter_ids().any(|v| v == id) {
            self.raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map_err(|e| MembershipError::Failed(e.to_string()))?;
        }
        self.raft
            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
            .await
            .map_err(|e| MembershipError::Failed(e.to_string()))?;
        Ok(id)
    }

    /// The members of the cluster, as the membership records them.
    pub fn members(&self) -> Vec<(NodeId, NodeInfo, bool)> {
        let metrics = metrics_now(&self.raft);
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        membership.nodes().map(|(id, node)| (*id, node.clone(), voters.contains(id))).collect()
    }

    /// Linearizable read barrier: returns once this node's store reflects every write committed before the
    /// call, on any data node or mirror (the read index protocol).
    ///
    /// The leader confirms with a quorum that it still leads and names its commit point
    /// (`Raft::get_read_log_id`; asked over the peer network, `POST /cluster/read-index`, when this node is
    /// not the leader); this node then waits until it has applied up to that point and reads its own store.
    /// A write acknowledged before the call was committed before it, so the read sees it, wherever it is
    /// served. Bounded by [`READ_TIMEOUT`]; a leader change during the call is followed.
    pub async fn linearizable_barrier(&self) -> Result<Revision, ReadError> {
        if self.role() == Role::Witness {
            return Err(ReadError::Witness);
        }
        let deadline = Instant::now() + READ_TIMEOUT;
        let index = self.read_index(deadline).await?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let waited =
            self.raft.wait(Some(remaining)).applied_index_at_least(Some(index), "linearizable read").await;
        if waited.is_err() {
            let applied = self.raft.metrics().borrow().last_applied.map_or(0, |id| id.index);
            return Err(ReadError::Behind { index, applied, seconds: READ_TIMEOUT.as_secs() });
        }
        Ok(self.revision())
    }

    /// The leader's read index: from the local `Raft` when this node leads, else asked of the leader; follows
    /// a leader change until `deadline`.
    async fn read_index(&self, deadline: Instant) -> Result<u64, ReadError> {
        let mut last_problem = String::from("no leader is known");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ReadError::NoLeader { detail: last_problem });
            }
            let metrics = metrics_now(&self.raft);
            match metrics.current_leader {
                Some(leader) if leader == self.id => {
                    match tokio::time::timeout(remaining, self.raft.get_read_log_id()).await {
                        Ok(Ok((read_log_id, _))) => return Ok(read_log_id.map_or(0, |id| id.index)),
                        Ok(Err(error)) if error.forward_to_leader::<NodeInfo>().is_some() => {
                            last_problem = "this node stopped leading".into();
                        }
                        Ok(Err(error)) => {
                            return Err(ReadError::NoLeader {
                                detail: format!("this node leads but {error}: {}", self.unreachable_voters()),
                            });
                        }
                        Err(_) => {
                            return Err(ReadError::NoLeader {
                                detail: format!(
                                    "this node leads but no quorum confirmed it: {}",
                                    self.unreachable_voters()
                                ),
                            });
                        }
                    }
                }
                Some(leader) => {
                    let name = self.node_name(leader);
                    match metrics.membership_config.membership().get_node(&leader).cloned() {
                        Some(node) => match self.network.read_index(leader, &node, remaining).await {
                            Ok(index) => return Ok(index),
                            Err(ForwardError::NotLeader { .. }) => {
                                last_problem = format!("the leader {name} stopped leading");
                            }
                            Err(ForwardError::Unreachable(detail)) => {
                                // It may have died: an election may follow. Retry until the deadline.
                                last_problem =
                                    format!("the leader {name} is unreachable from this node: {detail}");
                            }
                            Err(error) => {
                                return Err(ReadError::NoLeader {
                                    detail: format!(
                                        "the leader {name} did not answer the read index: {error}"
                                    ),
                                });
                            }
                        },
                        None => {
                            last_problem = format!("the leader {leader} is not in this node's membership")
                        }
                    }
                }
                None => last_problem = format!("no leader is known; {}", self.unreachable_voters()),
            }
            // Wait for a leader to appear or change (bounded by the deadline checked above).
            self.wait_metrics_change(Duration::from_millis(50)).await;
        }
    }

    /// The voters this node has not reached lately, for error messages ("a (127.0.0.1:7070) unreachable since
    /// ...").
    fn unreachable_voters(&self) -> String {
        let metrics = metrics_now(&self.raft);
        let membership = metrics.membership_config.membership();
        let unreachable: Vec<String> = membership
            .voter_ids()
            .filter(|id| *id != self.id)
            .filter_map(|id| {
                let node = membership.get_node(&id)?;
                (!self.recently_reached(&node.peer_addr)).then(|| self.voter_contact(id, Some(node)))
            })
            .collect();
        if unreachable.is_empty() {
            "every voter answers this node, but none leads yet".to_string()
        } else {
            unreachable.join("; ")
        }
    }

    /// What peer `id` looks like from this node: replication lag and reachability (known on the leader), and
    /// whether it refuses this node (a refusing peer is never counted in sync).
    fn peer_status(&self, metrics: &Metrics, id: NodeId, node: &NodeInfo) -> PeerStatus {
        let is_leader = metrics.current_leader == Some(self.id);
        let last_log = metrics.last_log_index.unwrap_or(0);
        let matched =
            metrics.replication.as_ref().and_then(|r| r.get(&id).cloned()).flatten().map(|l| l.index);
        let lag_seconds = if !is_leader {
            None
        } else if matched >= metrics.last_log_index {
            Some(0.0)
        } else {
            let since = self.last_in_sync.lock().ok().and_then(|m| m.get(&id).copied());
            since.map(|t| t.elapsed().as_secs_f64())
        };
        let contact = self.network.contact(&node.peer_addr);
        let refusal = contact.refusing().cloned();
        let last_contact_ms = contact
            .last_ok
            .and_then(|time| time.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|since| since.as_millis() as u64);
        let (reachable, lag, sync) = if is_leader {
            let lag = last_log.saturating_sub(matched.unwrap_or(0));
            let recently = self.recently_reached(&node.peer_addr);
            let sync = if refusal.is_some() {
                "refused"
            } else if !recently {
                "disconnected"
            } else if lag == 0 {
                "in_sync"
            } else {
                "catching_up"
            };
            (Some(recently), Some(lag), sync)
        } else {
            let sync = if refusal.is_some() {
                "refused"
            } else if metrics.current_leader == Some(id) {
                "leader"
            } else {
                "unknown"
            };
            // A follower hears from its leader (openraft drops the leader after an election timeout without
            // it); without a leader this node asks every voter for votes, so its last contact is current.
            let voter = metrics.membership_config.membership().voter_ids().any(|voter| voter == id);
            let reachable = match metrics.current_leader {
                Some(leader) if leader == id => Some(refusal.is_none()),
                None if voter => Some(self.recently_reached(&node.peer_addr)),
                _ => None,
            };
            (reachable, None, sync)
        };
        PeerStatus {
            id,
            name: node.name.clone(),
            role: node.role,
            peer_addr: node.peer_addr.clone(),
            api_addr: node.api_addr.clone(),
            boot_addr: node.boot_addr.clone(),
            reachable,
            lag_entries: lag,
            lag_seconds,
            sync: sync.to_string(),
            refusal,
            last_contact_ms,
        }
    }

    /// The node's status.
    pub fn status(&self) -> Status {
        let metrics = metrics_now(&self.raft);
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let is_leader = metrics.current_leader == Some(self.id);
        let peers: Vec<PeerStatus> = membership
            .nodes()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, node)| self.peer_status(&metrics, *id, node))
            .collect();
        let data = membership.nodes().filter(|(id, n)| n.role == Role::Data && voters.contains(id)).count();
        let witness = membership.nodes().any(|(id, n)| n.role == Role::Witness && voters.contains(id));
        let mirrors = membership.nodes().any(|(_, n)| n.role == Role::Mirror);
        let mode = if membership.nodes().any(|(id, _)| *id == self.id) {
            role_switch::mode_of(data, witness, mirrors)
        } else {
            "joining"
        };
        let (degraded, degraded_reason) = if metrics.current_leader.is_none() && voters.len() > 1 {
            (true, Some("no leader: this node cannot reach a quorum; serving its last state".to_string()))
        } else if is_leader && voters.len() > 1 && self.check_quorum(&metrics).is_err() {
            (
                true,
                Some("the leader has lost its quorum; serving its last state, refusing writes".to_string()),
            )
        } else {
            (false, None)
        };
        Status {
            name: self.info.name.clone(),
            id: self.id,
            role: self.role(),
            raft_state: format!("{:?}", metrics.state),
            leader: metrics.current_leader,
            leader_name: metrics
                .current_leader
                .and_then(|id| membership.get_node(&id).map(|n| n.name.clone())),
            term: metrics.current_term,
            revision: self.revision(),
            applied_index: metrics.last_applied.map(|l| l.index),
            last_log_index: metrics.last_log_index,
            snapshot_index: metrics.snapshot.map(|l| l.index),
            purged_index: metrics.purged.map(|l| l.index),
            mode: mode.to_string(),
            degraded,
            degraded_reason,
            peers,
            store_rebuilt: self.store_rebuilt.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone(),
            uploads_in_progress: self
                .read_store()
                .map(|store| store.uploads_in_progress().len())
                .unwrap_or(0),
            cluster_id: self.network.identity().and_then(|identity| identity.cluster_id()),
            refusing: self.network.identity().map(|identity| identity.refused_senders()).unwrap_or_default(),
        }
    }

    /// On the leader, aborts the uploads that stopped progressing ([`crate::upload_reaper`]); each abort is
    /// an ordinary write, proposed in the background.
    fn abort_abandoned_uploads(&self, reaper: &mut UploadReaper, is_leader: bool) {
        if !is_leader {
            reaper.forget();
            return;
        }
        let now = Instant::now();
        if !reaper.check_due(now) {
            return;
        }
        let Ok(uploads) = self.read_store().map(|store| store.uploads_in_progress()) else { return };
        for upload in reaper.abandoned(&uploads, now) {
            tracing::warn!(upload, "aborting a blob upload that made no progress within the limit");
            let proposer = self.proposer.clone();
            tokio::spawn(async move {
                if let Err(error) = proposer.propose(Command::BlobAbort { upload }).await {
                    tracing::warn!(upload, %error, "aborting an abandoned upload failed; retrying later");
                }
            });
        }
    }

    /// Background duties: compact the log after new blobs ([`crate::blob_compaction`]); (witness) hand
    /// leadership back to a caught-up data node.
    pub async fn run_duties(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut heartbeats_off_since: Option<Instant> = None;
        let threshold = self.blob_compaction_bytes.load(std::sync::atomic::Ordering::Relaxed);
        let mut compaction = BlobCompaction::new(threshold);
        let abandon_after = self.abandoned_upload_after_ms.load(std::sync::atomic::Ordering::Relaxed);
        let mut reaper = UploadReaper::new(Duration::from_millis(abandon_after));
        let mut interval = tokio::time::interval(Duration::from_millis(self.timing.heartbeat_ms.max(50)));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            let metrics = metrics_now(&self.raft);
            let is_leader = metrics.current_leader == Some(self.id);
            self.note_leadership(&metrics);
            if let (true, Some(replication), Ok(mut in_sync)) =
                (is_leader, &metrics.replication, self.last_in_sync.lock())
            {
                for (id, matched) in replication {
                    if matched.map(|l| l.index) >= metrics.last_log_index || !in_sync.contains_key(id) {
                        in_sync.insert(*id, Instant::now());
                    }
                }
            }
            self.compact_log_after_blobs(&mut compaction, &metrics).await;
            self.abort_abandoned_uploads(&mut reaper, is_leader);
            if self.role() != Role::Witness {
                continue;
            }
            // A data node that refuses this node (its disk was replaced) is not the member it replaced: its
            // old replication progress must not make the witness step down for it.
            let caught_up_data_node = metrics.replication.as_ref().and_then(|replication| {
                replication.iter().find_map(|(id, matched)| {
                    let node = metrics.membership_config.membership().get_node(id)?;
                    let eligible = node.role == Role::Data
                        && self.network.contact(&node.peer_addr).refusing().is_none()
                        && matched.map(|l| l.index) >= metrics.last_log_index;
                    eligible.then(|| node.name.clone())
                })
            });
            match (heartbeats_off_since, caught_up_data_node) {
                (None, Some(name)) if is_leader => {
                    // First the planned hand-over (one vote round trip, writes held meanwhile); going quiet
                    // only if it fails. Quiet alone never ended while writes kept coming (each append resets
                    // the data node's election timer): measured under delay and loss, docs/cluster.md.
                    match self.hand_over(&name).await {
                        Ok(handover) => {
                            tracing::info!(
                                to = name,
                                took_ms = handover.took_ms,
                                "witness handed leadership back"
                            );
                            continue;
                        }
                        Err(error) => tracing::info!(
                            to = name,
                            %error,
                            "witness: the hand-over failed; turning heartbeats off so that the data node campaigns"
                        ),
                    }
                    self.raft.runtime_config().heartbeat(false);
                    heartbeats_off_since = Some(Instant::now());
                }
                (Some(since), _) if !is_leader || since.elapsed() > self.timing.witness_quiet_limit() => {
                    self.raft.runtime_config().heartbeat(true);
                    heartbeats_off_since = None;
                }
                _ => {}
            }
        }
    }
}

impl ClusterNode {
    /// One step of [`crate::blob_compaction`]: a snapshot or a purge when one is due.
    async fn compact_log_after_blobs(&self, compaction: &mut BlobCompaction, metrics: &Metrics) {
        // Skipped while the store is busy (a snapshot install holds its lock): this runs every heartbeat.
        let Ok(blob_bytes) = self.store.try_read().map(|store| store.blobs().map(|(_, size)| size).sum())
        else {
            return;
        };
        let step = compaction.next_step(CompactionInputs {
            blob_bytes,
            last_applied: metrics.last_applied.map(|l| l.index),
            snapshot: metrics.snapshot.map(|l| l.index),
            purged: metrics.purged.map(|l| l.index),
        });
        let result = match step {
            CompactionStep::Nothing => return,
            CompactionStep::Snapshot => self.raft.trigger().snapshot().await,
            CompactionStep::Purge(upto) => {
                tracing::info!(upto, "purging the Raft log of blob chunks the store now holds in files");
                self.raft.trigger().purge_log(upto).await
            }
        };
        if let Err(error) = result {
            tracing::warn!(%error, ?step, "compacting the Raft log after new blobs failed");
        }
    }
}

/// Formats a time as RFC 3339 UTC, to the second.
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

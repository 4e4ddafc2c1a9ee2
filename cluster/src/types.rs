//! The types openraft is instantiated with, and what travels through the replicated log.
//!
//! - [`Request`]: one log entry's payload — storage [`Command`]s (change sets, pieces of a blob upload), one
//!   per client write packed into the entry.
//! - [`Response`]: what applying it gave — each command's storage [`Outcome`] and the revision the store
//!   reached; [`Written`] is one client write's share of it.
//! - [`NodeInfo`]: what the cluster knows of each member: its name, role and addresses. It travels in
//!   membership log entries, so every node (mirrors included) can list every boot server.

use std::fmt;

use serde::{Deserialize, Serialize};
use tandem_storage::{Command, Outcome, Revision};

/// A node's id: random at first start, persisted, never reused.
pub type NodeId = u64;

/// What a node does in the cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A full replica: serves the API and boots, accepts changes (forwarding them to the leader).
    #[default]
    Data,
    /// A voter that stores the log and votes but serves no configuration and hands leadership back.
    Witness,
    /// A read-only follower (Raft learner) that serves boots and reads.
    Mirror,
}

impl Role {
    /// Whether the node votes (data nodes and witnesses) or only follows (mirrors).
    pub fn is_voter(self) -> bool {
        !matches!(self, Role::Mirror)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Data => "data",
            Role::Witness => "witness",
            Role::Mirror => "mirror",
        })
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "data" => Ok(Role::Data),
            "witness" => Ok(Role::Witness),
            "mirror" => Ok(Role::Mirror),
            other => Err(format!("unknown role '{other}' (use data, witness or mirror)")),
        }
    }
}

/// A cluster member as the membership records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub role: Role,
    /// Where peers reach its Raft endpoint (`host:port`).
    pub peer_addr: String,
    /// Where clients reach its admin API (`host:port`).
    pub api_addr: String,
    /// Where terminals reach its HTTP boot server (the advertised address).
    pub boot_addr: String,
}

/// The payload of one log entry: the commands of one or more client writes, applied in this order.
///
/// The leader packs the writes that arrive while earlier ones are being replicated into one entry (see
/// [`crate::proposer`]): one log append, one fsync and one replication round trip for all of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub commands: Vec<Command>,
}

impl Request {
    /// An entry that carries one command.
    pub fn one(command: Command) -> Self {
        Request { commands: vec![command] }
    }
}

/// The result of applying one log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The outcome of each of the entry's commands, in order; empty for entries that carry no command (blank,
    /// membership).
    pub outcomes: Vec<Outcome>,
    /// The store's revision right after this entry was applied.
    pub revision: Revision,
}

/// The result of one client write: its command's outcome, and a revision at which it is visible.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    pub outcome: Outcome,
    /// The store's revision right after the entry that carried the command was applied (at least the
    /// command's own revision, if it made one).
    pub revision: Revision,
}

openraft::declare_raft_types!(
    /// Tandem's openraft configuration.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft instance of a Tandem node.
pub type Raft = openraft::Raft<TypeConfig>;

/// What openraft reports about this node: term, leader, log positions, membership, replication.
pub type Metrics = openraft::RaftMetrics<NodeId, NodeInfo>;

/// A copy of `raft`'s metrics as they are now.
///
/// Always take metrics through this (or read one field in a statement that calls nothing else): never call a
/// function while a `raft.metrics().borrow()` is alive. The borrow is a read lock on a `tokio::sync::watch`
/// channel, and RaftCore takes its write lock for every metrics update, many times a second. A second read on
/// the same thread while that writer waits blocks forever (the lock lets no new reader in while a writer
/// waits), and the writer waits for the first read: the thread, and with it a tokio worker, is stuck, and with
/// every worker stuck the node answers nothing at all. That happened: `return
/// Err(self.no_quorum_error(&self.raft.metrics().borrow().clone()))` kept the borrow (a temporary) alive
/// through `no_quorum_error`, which borrowed again to name the voters; under constant elections (a lossy link
/// with LAN timing, `tests/partition.rs` (f)) a data node went silent on its admin API and its peer port.
pub fn metrics_now(raft: &Raft) -> Metrics {
    raft.metrics().borrow().clone()
}

/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// The membership as stored with the applied position.
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;

/// The applied position the state machine stores with every batch (see `tandem_storage::Store::apply`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedPosition {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

/// bincode with the standard configuration, as everywhere in Tandem.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .expect("bincode encoding of a cluster type")
}

/// The length of `value`'s bincode encoding, counted without building it.
pub fn encoded_size<T: Serialize>(value: &T) -> usize {
    let mut counter = bincode::enc::write::SizeWriter::default();
    match bincode::serde::encode_into_writer(value, &mut counter, bincode::config::standard()) {
        Ok(()) => counter.bytes_written,
        // Cannot happen for Tandem's types; counted as too large to share an entry.
        Err(_) => usize::MAX / 2,
    }
}

/// Decodes bincode with a size limit (network and disk input).
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::error::DecodeError> {
    let config = bincode::config::standard().with_limit::<{ 64 * 1024 * 1024 }>();
    bincode::serde::decode_from_slice(bytes, config).map(|(value, _)| value)
}

/// Like [`encode`], but returns the error instead of panicking: for storage code, where every failure must
/// become a [`openraft::StorageError`] rather than a panic.
pub fn try_encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
}

/// Like [`decode`], but also refuses trailing bytes: for values read back from disk, where leftovers mean
/// damage.
pub fn decode_exact<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::error::DecodeError> {
    let config = bincode::config::standard().with_limit::<{ 64 * 1024 * 1024 }>();
    let (value, used) = bincode::serde::decode_from_slice(bytes, config)?;
    if used != bytes.len() {
        return Err(bincode::error::DecodeError::OtherString(format!(
            "{} trailing bytes after the value",
            bytes.len() - used
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every `.metrics().borrow()` in this crate's sources, with its file and line.
    fn metrics_borrows(dir: &Path, found: &mut Vec<(String, usize, String)>) {
        for entry in std::fs::read_dir(dir).expect("read the source directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                metrics_borrows(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read a source file");
                // Test modules (at the end of a file) do not run in a node, and this one names the pattern.
                for (n, line) in text.lines().enumerate().take_while(|(_, l)| *l != "#[cfg(test)]") {
                    if line.contains(".metrics().borrow()") && !line.trim_start().starts_with("//") {
                        found.push((path.display().to_string(), n + 1, line.trim().to_string()));
                    }
                }
            }
        }
    }

    /// The rule of [`super::metrics_now`], checked on the sources: a metrics borrow is either the copy in
    /// `metrics_now` or the read of one plain field, never alive across a call (that deadlocked a node).
    #[test]
    fn metrics_are_borrowed_only_to_copy_them_or_read_one_field() {
        let mut found = Vec::new();
        metrics_borrows(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut found);
        // A field read is safe only where nothing is called while the borrow lives: as a `let` or a tail
        // expression of its own (`f(raft.metrics().borrow().current_leader)` would call `f` borrowed).
        let allowed = |line: &str| {
            line == "raft.metrics().borrow().clone()"
                || ((line.starts_with("let ") || line.starts_with("self.raft.metrics()"))
                    && line.matches("self.").count() <= 1
                    && ["current_leader", "last_applied", "current_term"]
                        .iter()
                        .any(|field| line.contains(&format!(".metrics().borrow().{field}"))))
        };
        let offending: Vec<String> = found
            .iter()
            .filter(|(_, _, line)| !allowed(line))
            .map(|(file, n, line)| format!("{file}:{n}: {line}"))
            .collect();
        assert!(
            found.len() > 1,
            "the scan found no metrics borrows at all: is it looking in the right place?"
        );
        assert!(
            offending.is_empty(),
            "take metrics with types::metrics_now instead:\n{}",
            offending.join("\n")
        );
    }
}

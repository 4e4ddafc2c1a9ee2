//! Forced recovery: make a stopped survivor the sole voter of its cluster.
//!
//! openraft 0.9 has no API to change membership without a quorum: in a pair that lost a node, the survivor
//! can neither elect itself nor remove the dead node. [`force_standalone`] works on the stopped node's data
//! directory: it appends one log entry after the last one — a membership whose only voter is this node (same
//! leader id, next index) — so that at its next start the node elects itself and takes writes. A mirror
//! recovered this way becomes a data node (promotion).
//!
//! This is unsafe by nature if the lost node is still alive and writing: that is why it is an explicit
//! operator action, done offline. The node's identity records a new *epoch* and who did it and why; the
//! node writes that as an event into the history once it leads again. The node left behind is not in the new
//! membership, so every peer refuses it (see the peer server) until it is wiped and added again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::RaftLogStorage;
use openraft::{EntryPayload, Membership, RaftLogReader};
use tandem_storage::{SledDatabase, Store, StoreOptions};

use crate::identity::Identity;
use crate::log_store::{Entry, LogStore};
use crate::types::{AppliedPosition, LogId, NodeId, NodeInfo, Role, decode};

/// What a forced recovery did.
#[derive(Debug, Clone)]
pub struct RecoveryReport {
    pub node: String,
    pub id: NodeId,
    pub epoch: u64,
    /// The voters before, by name.
    pub previous_voters: Vec<String>,
    /// The log id of the appended membership entry.
    pub membership_log_id: LogId,
    pub promoted_from_mirror: bool,
}

/// Why recovery was not done.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("{0}")]
    Refused(String),
    #[error("recovery failed: {0}")]
    Failed(String),
}

fn failed(e: impl std::fmt::Display) -> RecoverError {
    RecoverError::Failed(e.to_string())
}

/// Makes the node in `data_dir` (stopped) the sole voter of its cluster.
pub async fn force_standalone(
    data_dir: &Path,
    actor: &str,
    reason: &str,
) -> Result<RecoveryReport, RecoverError> {
    let Some(mut identity) = Identity::load(data_dir).map_err(failed)? else {
        return Err(RecoverError::Refused(format!(
            "{} holds no Tandem node (no node.json)",
            data_dir.display()
        )));
    };
    let database = SledDatabase::open(&data_dir.join("db")).map_err(|e| {
        RecoverError::Refused(format!("cannot open the node's database ({e}); stop the node first"))
    })?;
    let mut log = LogStore::open(&data_dir.join("raft-log"), database.clone()).map_err(failed)?;
    let state = log.get_log_state().await.map_err(failed)?;
    let Some(last) = state.last_log_id else {
        return Err(RecoverError::Refused("this node has no Raft log: it never joined a cluster".into()));
    };
    let (membership, _) =
        latest_membership(&mut log, &database, &tandem_storage::blob_dir(data_dir), last).await?;
    let Some(me) = membership.get_node(&identity.id).cloned() else {
        return Err(RecoverError::Refused(
            "this node is not in its cluster's membership (it was removed): nothing to recover".into(),
        ));
    };
    let previous_voters = membership
        .voter_ids()
        .map(|id| membership.get_node(&id).map(|n| n.name.clone()).unwrap_or_else(|| id.to_string()))
        .collect();
    let promoted_from_mirror = me.role == Role::Mirror;
    let me = NodeInfo { role: if promoted_from_mirror { Role::Data } else { me.role }, ..me };
    let log_id = LogId::new(last.leader_id, last.index + 1);
    let entry = Entry {
        log_id,
        payload: EntryPayload::Membership(Membership::new(
            vec![BTreeSet::from([identity.id])],
            BTreeMap::from([(identity.id, me.clone())]),
        )),
    };
    log.append_offline(&[entry]).map_err(failed)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    identity.epoch += 1;
    identity.pending_recovery = Some((actor.to_string(), reason.to_string(), now));
    identity.save(data_dir).map_err(failed)?;
    Ok(RecoveryReport {
        node: me.name,
        id: identity.id,
        epoch: identity.epoch,
        previous_voters,
        membership_log_id: log_id,
        promoted_from_mirror,
    })
}

/// The newest membership: the last membership entry still in the log, else the one the state machine applied.
async fn latest_membership(
    log: &mut LogStore,
    database: &SledDatabase,
    blobs: &Path,
    last: LogId,
) -> Result<(Membership<NodeId, NodeInfo>, Option<LogId>), RecoverError> {
    let first = log.get_log_state().await.map_err(failed)?.last_purged_log_id.map_or(0, |l| l.index + 1);
    let entries = log.try_get_log_entries(first..=last.index).await.map_err(failed)?;
    for entry in entries.iter().rev() {
        if let EntryPayload::Membership(membership) = &entry.payload {
            return Ok((membership.clone(), Some(entry.log_id)));
        }
    }
    let store = Store::open_database(std::sync::Arc::new(database.clone()), blobs, StoreOptions::default())
        .map_err(failed)?;
    let position: AppliedPosition = match store.position() {
        Some(bytes) => decode(bytes).map_err(failed)?,
        None => return Err(RecoverError::Refused("the node has no membership to recover from".into())),
    };
    Ok((position.membership.membership().clone(), position.membership.log_id().as_ref().copied()))
}

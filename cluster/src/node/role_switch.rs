//! # Switching a member between data node and mirror on a running cluster (Full ↔ Mirrored)
//!
//! A data node is a voter with a full replica; a mirror is a Raft learner with the same replica. Both apply
//! the same log, so switching one into the other moves no data: it is two membership changes, made by the
//! leader, while the node keeps running, serving boots and reads.
//!
//! - **data → mirror** (Full → Mirrored): the node leaves the voters and stays a learner
//!   (`ChangeMembers::RemoveVoters` with `retain`), then its recorded role becomes `mirror`
//!   (`ChangeMembers::SetNodes`, the same addresses). From the second commit on it refuses writes, naming the
//!   primary; it never stopped replicating.
//! - **mirror → data** (Mirrored → Full): the node must have the whole log first (the leader waits, bounded,
//!   until its replication has matched the last entry); then its recorded role becomes `data` and it joins the
//!   voters (`ChangeMembers::AddVoterIds`). From then on it accepts writes (forwarding them to the leader).
//!
//! A node's role is what the membership records ([`super::ClusterNode::role`]), so the node itself needs no
//! restart and no new flag: after a restart with its old `--role`, the membership still wins.
//!
//! ## What is refused
//!
//! - the leader demoting itself: hand leadership to the other data node first (a leader that leaves the
//!   voters would step down mid-change);
//! - a change that would leave the voters without a reachable majority: every voter of the new
//!   configuration that the leader has not heard from within two election timeouts counts as lost (so
//!   demoting one data node of a pair whose witness is down is refused: the remaining leader alone would not
//!   be a majority of {leader, witness});
//! - more than two data nodes, a witness as either side (a witness holds no replica to serve), unknown names.
//!
//! The same call with `apply = false` is the preview: the resulting mode and what failures it survives.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use openraft::ChangeMembers;
use serde::Serialize;

use super::{ClusterNode, MembershipError};
use crate::types::{NodeId, NodeInfo, Role, metrics_now};

/// How long a promoted mirror may take to have the whole log before the promotion is abandoned.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(120);

/// A role change, as previewed or as made.
#[derive(Clone, Debug, Serialize)]
pub struct RoleChange {
    pub name: String,
    pub id: NodeId,
    pub from: Role,
    pub to: Role,
    /// The cluster's mode before and after (`single`, `full`, `full+witness`, `mirrored`).
    pub mode_before: &'static str,
    pub mode_after: &'static str,
    /// What the resulting cluster survives, and what it does not, in words.
    pub survives: Vec<String>,
    pub does_not_survive: Vec<String>,
    /// Whether there is anything to change (false: the member already has that role and voting).
    pub changes: bool,
    /// Whether the change was made (false for a preview, or when there was nothing to change).
    pub applied: bool,
}

/// The cluster's mode from who votes and who mirrors (as `tandem status` shows it).
pub(super) fn mode_of(data_voters: usize, witness_voter: bool, mirrors: bool) -> &'static str {
    match (data_voters, witness_voter, mirrors) {
        (_, _, true) => "mirrored",
        (2, true, _) => "full+witness",
        (2, false, _) => "full",
        _ => "single",
    }
}

/// What a cluster of these members survives and does not, in the words of docs/cluster.md's failure table.
fn failure_tolerance(data_voters: usize, witness_voter: bool, mirrors: usize) -> (Vec<String>, Vec<String>) {
    let mut survives = Vec::new();
    let mut not = Vec::new();
    match (data_voters, witness_voter) {
        (2, true) => {
            survives
                .push("the loss of any one of the two data nodes and the witness: automatic failover".into());
            not.push("the loss of two of the three voters: writes stop until one returns".into());
        }
        (2, false) => {
            survives.push("nothing for writes: both data nodes must be up to write".into());
            not.push(
                "the loss of either data node: writes stop (`quorum lost`); reads and boots go on".into(),
            );
        }
        (1, true) => {
            not.push(
                "the loss of the data node or of the witness: writes stop; mirrors keep booting (with one data \
                 node the witness only adds a second voter that must be up: `tandem servers remove` it to make the \
                 primary a quorum alone)"
                    .into(),
            );
        }
        _ => {
            not.push("the loss of the primary: writes stop until it returns or a mirror is promoted".into());
        }
    }
    if mirrors > 0 {
        survives.push(format!(
            "the loss of the primary for boots and reads: {mirrors} mirror(s) keep serving them (read-only)"
        ));
    }
    (survives, not)
}

impl ClusterNode {
    /// Previews (`apply = false`) or makes a switch of member `name` to `to` (data or mirror); see the module
    /// documentation. Made on the leader only.
    pub async fn change_role(
        &self,
        name: &str,
        to: Role,
        apply: bool,
    ) -> Result<RoleChange, MembershipError> {
        let _guard = self.membership_lock.lock().await;
        let metrics = metrics_now(&self.raft);
        if metrics.current_leader != Some(self.id) {
            return Err(MembershipError::Refused("membership changes are made on the leader".into()));
        }
        let membership = metrics.membership_config.membership().clone();
        let Some((&id, info)) = membership.nodes().find(|(_, n)| n.name == name) else {
            return Err(MembershipError::Refused(format!("no server named '{name}' in the cluster")));
        };
        let info = info.clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let from = info.role;
        if to == Role::Witness || from == Role::Witness {
            return Err(MembershipError::Refused(
                "only data nodes and mirrors switch roles: a witness holds no replica to serve".into(),
            ));
        }

        // The members after the change, for the mode, the tolerance and the quorum check.
        let role_of = |node: NodeId, role: Role| if node == id { to } else { role };
        let data_after = membership
            .nodes()
            .filter(|(n, node)| role_of(**n, node.role) == Role::Data && (voters.contains(*n) || **n == id))
            .count();
        let witness = membership.nodes().any(|(n, node)| node.role == Role::Witness && voters.contains(n));
        let mirrors_after =
            membership.nodes().filter(|(n, node)| role_of(**n, node.role) == Role::Mirror).count();
        let data_before =
            membership.nodes().filter(|(n, node)| node.role == Role::Data && voters.contains(n)).count();
        let mirrors_before = membership.nodes().any(|(_, node)| node.role == Role::Mirror);
        let (survives, does_not_survive) = failure_tolerance(data_after, witness, mirrors_after);
        let mut change = RoleChange {
            name: name.to_owned(),
            id,
            from,
            to,
            mode_before: mode_of(data_before, witness, mirrors_before),
            mode_after: mode_of(data_after, witness, mirrors_after > 0),
            survives,
            does_not_survive,
            changes: true,
            applied: false,
        };
        // Done when both the recorded role and the voting agree with `to`: a switch that failed between its
        // two membership changes (a data node that is not a voter yet, a mirror still voting) is finished by
        // running it again.
        let is_voter = voters.contains(&id);
        if from == to && is_voter == to.is_voter() {
            change.changes = false;
            return Ok(change);
        }
        if to == Role::Data && data_after > 2 {
            return Err(MembershipError::Refused(
                "a cluster has at most two data nodes: switch the other one to mirror first".into(),
            ));
        }
        if to == Role::Mirror && id == self.id {
            return Err(MembershipError::Refused(format!(
                "{name} leads the cluster and cannot demote itself: hand leadership to the other data node \
                 first (tandem servers lead OTHER), then run this there"
            )));
        }
        let mut voters_after = voters.clone();
        if to == Role::Mirror {
            voters_after.remove(&id);
        } else {
            voters_after.insert(id);
        }
        self.check_reachable_majority(&membership, &voters_after)?;
        if !apply {
            return Ok(change);
        }

        match to {
            Role::Mirror => {
                if is_voter {
                    self.raft
                        .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), true)
                        .await
                        .map_err(|e| MembershipError::Failed(e.to_string()))?;
                }
                if from != to {
                    self.set_recorded_role(id, &info, to).await?;
                }
            }
            Role::Data => {
                self.wait_caught_up(id, name).await?;
                if from != to {
                    self.set_recorded_role(id, &info, to).await?;
                }
                if !is_voter {
                    self.raft
                        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                        .await
                        .map_err(|e| MembershipError::Failed(e.to_string()))?;
                }
            }
            Role::Witness => unreachable!("refused above"),
        }
        tracing::info!(server = name, %from, %to, mode = change.mode_after, "switched a member's role");
        change.applied = true;
        Ok(change)
    }

    /// Refuses a voter set of which the leader does not reach a majority (itself included).
    fn check_reachable_majority(
        &self,
        membership: &openraft::Membership<NodeId, NodeInfo>,
        voters: &BTreeSet<NodeId>,
    ) -> Result<(), MembershipError> {
        let lost: Vec<String> = voters
            .iter()
            .filter(|v| **v != self.id)
            .filter_map(|v| membership.get_node(v).filter(|n| !self.recently_reached(&n.peer_addr)))
            .map(|n| n.name.clone())
            .collect();
        let reachable = voters.len() - lost.len();
        if reachable * 2 > voters.len() {
            return Ok(());
        }
        Err(MembershipError::Refused(format!(
            "the change would leave {reachable} of {} voters reachable ({} not answering): no quorum; bring them \
             back first",
            voters.len(),
            lost.join(", ")
        )))
    }

    /// Rewrites member `id`'s recorded role (same addresses).
    async fn set_recorded_role(
        &self,
        id: NodeId,
        info: &NodeInfo,
        role: Role,
    ) -> Result<(), MembershipError> {
        let updated = NodeInfo { role, ..info.clone() };
        self.raft
            .change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, updated)])), true)
            .await
            .map_err(|e| MembershipError::Failed(e.to_string()))?;
        Ok(())
    }

    /// Waits (bounded) until the leader's replication to `id` has matched its last log entry.
    async fn wait_caught_up(&self, id: NodeId, name: &str) -> Result<(), MembershipError> {
        let deadline = Instant::now() + CATCH_UP_LIMIT;
        loop {
            let metrics = metrics_now(&self.raft);
            let matched =
                metrics.replication.as_ref().and_then(|r| r.get(&id).cloned()).flatten().map(|l| l.index);
            if matched >= metrics.last_log_index {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(MembershipError::Failed(format!(
                    "{name} did not catch up within {} s (it has {:?} of {:?}); nothing was changed",
                    CATCH_UP_LIMIT.as_secs(),
                    matched,
                    metrics.last_log_index
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_follow_the_voters_and_mirrors() {
        assert_eq!(mode_of(2, true, false), "full+witness");
        assert_eq!(mode_of(2, false, false), "full");
        assert_eq!(mode_of(1, true, true), "mirrored");
        assert_eq!(mode_of(1, false, false), "single");
    }

    #[test]
    fn tolerance_names_what_each_mode_survives() {
        let (survives, not) = failure_tolerance(2, true, 0);
        assert!(survives[0].contains("automatic failover"));
        assert!(not[0].contains("two of the three"));
        let (survives, not) = failure_tolerance(1, true, 1);
        assert!(survives.iter().any(|s| s.contains("mirror")));
        assert!(not[0].contains("writes stop"));
    }
}

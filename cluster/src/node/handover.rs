//! Planned leadership hand-over: `tandem servers lead NAME` (`POST /v1/cluster/leader`).
//!
//! openraft 0.9 has no leadership transfer. The hand-over is built from two things it does have, and one
//! fact read in its source (`engine/engine_impl.rs`, `handle_vote_req`):
//!
//! - `Raft::trigger().elect()` makes a follower campaign at once, whatever its election timer says.
//! - A voter **refuses** a vote request while its *leader lease* runs: while its vote is committed and less
//!   than `leader_lease` (= its `election_timeout_max`) has passed since that vote was last updated or
//!   touched. A follower touches it on every AppendEntries, so the followers of a healthy leader — the
//!   witness included — refuse any candidate. But nothing touches the **leader's own** vote after it was
//!   elected: once it has led for longer than its lease, the leader itself grants a higher-term vote request
//!   from a candidate whose log is at least as long as its own, and steps down. Leader + target are a
//!   majority of a pair with or without a witness, so the target wins the election with the old leader's
//!   vote alone — at once, without waiting for any lease to run out, and with the old leader's heartbeats on
//!   all along (its followers keep their leases; nobody else can start an election meanwhile).
//!
//! A witness that finds itself leading hands leadership back to a caught-up data node the same way (see
//! `node.rs`); only if that fails does it go quiet (heartbeats off until the data node's election timer
//! fires), which takes a lease plus an election timeout (~0.6-0.8 s with the default timing) and leaves the
//! cluster without a quorum-acknowledged leader meanwhile — and never ends while writes keep coming through
//! the data node. The hand-over here takes one vote round trip.
//!
//! ## The steps, on the leader ([`ClusterNode::hand_over`])
//! 1. Check: this node leads; `NAME` is a member, a voting data node (not the witness, not a mirror or a
//!    learner still joining), answering this node (within `REACH_LIMIT`, 2 s), at most [`MAX_LAG_ENTRIES`] behind; a
//!    quorum acknowledged this leader recently. Any membership change in progress makes it refuse (they share
//!    a lock).
//! 2. Wait until this node has led for longer than its lease (a leader elected a moment ago would refuse the
//!    vote; at most `election_timeout_max` after an election).
//! 3. Pause the proposer ([`crate::proposer::Proposer::pause`]): no new entry is proposed, and the entries
//!    in flight are applied. Writes keep arriving and wait in the proposer's queue, local and forwarded
//!    ones alike. The log stops growing, so "caught up" can become true and stay true.
//! 4. Wait until the target's replication progress reaches this node's last log index ([`CATCH_UP_LIMIT`]).
//! 5. Ask the target to campaign (`POST /cluster/campaign` on the peer network, with this node's term and
//!    last log index; the target re-checks both: [`crate::network::campaign`]).
//! 6. Wait until this node sees the target lead ([`ClusterNode::new_leader_limit`]).
//! 7. Resume the proposer, whatever happened. If the target leads, the queued writes are refused with
//!    "forward to leader" without being proposed, and their writers follow the new leader
//!    ([`ClusterNode::write`] on this node; a follower's forwarded write gets "not the leader" and does the
//!    same), so a write issued during the hand-over waits and then succeeds.
//!
//! Every wait is bounded, nothing is turned off (heartbeats and elections run throughout), and a failure at
//! any step leaves this node leading with the proposer resumed. The figures and the failure behaviour are in
//! `docs/cluster.md` (hand-over) and `docs/operations.md`.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::ClusterNode;
use crate::network::campaign::{CampaignError, CampaignRequest};
use crate::types::{Metrics, NodeId, NodeInfo, Role, metrics_now};

/// A target further behind than this is refused at once (it is catching up, perhaps through a snapshot).
pub const MAX_LAG_ENTRIES: u64 = 1_000;
/// How long the paused leader waits for the entries in flight and for the target to catch up, at most.
pub const CATCH_UP_LIMIT: Duration = Duration::from_secs(2);
/// A target that has not answered this node for longer is unreachable: the hand-over is refused before
/// writes are paused. (Longer than the two election timeouts of `tandem status`'s "disconnected": on a
/// loaded machine one slow fsync on the target holds its answers that long, and the bounded catch-up wait
/// covers a target that is slow rather than gone.)
const REACH_LIMIT: Duration = Duration::from_secs(2);
/// The campaign request's timeout.
const CAMPAIGN_TIMEOUT: Duration = Duration::from_secs(1);

/// A hand-over that was done.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Handover {
    /// The leader before (this node's name).
    pub from: String,
    /// The leader now.
    pub to: String,
    /// False when `to` already led (nothing was done).
    pub changed: bool,
    /// From the request to this node seeing the new leader, in milliseconds.
    pub took_ms: u64,
}

/// Why leadership was not handed over. The cluster keeps its leader in every case.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("this node does not lead the cluster: ask the leader")]
    NotLeader,
    #[error("no server named '{0}' in the cluster")]
    UnknownServer(String),
    #[error("{name} cannot lead: {why}")]
    NotEligible { name: String, why: String },
    #[error("{name} is {behind} entries behind the leader: wait until it has caught up (tandem status)")]
    NotCaughtUp { name: String, behind: u64 },
    #[error("{name} is unreachable from the leader: {detail}")]
    Unreachable { name: String, detail: String },
    #[error("{0}")]
    NoQuorum(String),
    #[error("a membership change or another hand-over is in progress: try again when it is done")]
    Busy,
    #[error("the hand-over to {name} failed, {leader} leads: {detail}")]
    Failed { name: String, leader: String, detail: String },
}

impl ClusterNode {
    /// Records when this node started leading in the current term (conservatively late: at the first look).
    pub(super) fn note_leadership(&self, metrics: &Metrics) {
        let mut since = self.leading_since.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if metrics.current_leader != Some(self.id) {
            *since = None;
        } else if since.is_none_or(|(term, _)| term != metrics.current_term) {
            *since = Some((metrics.current_term, Instant::now()));
        }
    }

    /// How long this node waits for the target to be seen leading after asking it to campaign: a vote round
    /// trip normally; this bound covers a slow disk (the vote is fsynced on both sides).
    pub fn new_leader_limit(&self) -> Duration {
        Duration::from_millis(self.timing.election_max_ms * 3)
    }

    /// Hands leadership over to the data node `name`; see the module documentation.
    pub async fn hand_over(&self, name: &str) -> Result<Handover, HandoverError> {
        let started = Instant::now();
        let Ok(_serialized) = self.membership_lock.try_lock() else { return Err(HandoverError::Busy) };
        let metrics = metrics_now(&self.raft);
        if metrics.current_leader != Some(self.id) {
            return Err(HandoverError::NotLeader);
        }
        self.note_leadership(&metrics);
        let membership = metrics.membership_config.membership();
        let Some((&target, node)) = membership.nodes().find(|(_, node)| node.name == name) else {
            return Err(HandoverError::UnknownServer(name.to_string()));
        };
        let node = node.clone();
        let done = |changed: bool| Handover {
            from: self.info.name.clone(),
            to: node.name.clone(),
            changed,
            took_ms: started.elapsed().as_millis() as u64,
        };
        if target == self.id {
            return Ok(done(false));
        }
        let not_eligible = |why: &str| HandoverError::NotEligible { name: name.to_string(), why: why.into() };
        match node.role {
            Role::Witness => return Err(not_eligible("it is the witness, which serves no configuration")),
            Role::Mirror => return Err(not_eligible("it is a mirror (a read-only learner), not a voter")),
            Role::Data if !membership.voter_ids().any(|voter| voter == target) => {
                return Err(not_eligible("it is still joining (a learner, not a voter yet)"));
            }
            Role::Data => {}
        }
        let contact = self.network.contact(&node.peer_addr);
        let answered_ago = contact.last_ok.map(|time| time.elapsed().unwrap_or_default());
        if contact.refusing().is_some() || answered_ago.is_none_or(|ago| ago > REACH_LIMIT) {
            let detail = match (contact.refusing(), contact.last_ok, answered_ago) {
                (Some(refusal), ..) => format!("it refuses this node: {refusal}"),
                (None, Some(time), Some(ago)) => {
                    format!("it last answered at {} ({} ms ago)", super::rfc3339(time), ago.as_millis())
                }
                _ => "not reached since this node started".into(),
            };
            return Err(HandoverError::Unreachable { name: name.to_string(), detail });
        }
        self.check_quorum(&metrics).map_err(|error| HandoverError::NoQuorum(error.to_string()))?;
        let behind = self.behind(&metrics, target);
        if behind > MAX_LAG_ENTRIES {
            return Err(HandoverError::NotCaughtUp { name: name.to_string(), behind });
        }

        // 2. Our own lease must have run out, or we would refuse the target's vote request.
        let lease = Duration::from_millis(self.raft.config().election_timeout_max + 20);
        let led_for = self.leading_since.lock().ok().and_then(|s| s.map(|(_, at)| at.elapsed()));
        if let Some(remaining) = led_for.and_then(|led| lease.checked_sub(led)) {
            tokio::time::sleep(remaining).await;
        }
        let lease_waited = started.elapsed();

        // 3.-4. Stop the log growing; wait until the target has all of it.
        tracing::info!(target = name, "handing leadership over: pausing new entries");
        let pausing_at = std::time::SystemTime::now();
        let deadline = Instant::now() + CATCH_UP_LIMIT;
        let paused = tokio::time::timeout(CATCH_UP_LIMIT, self.proposer.pause()).await;
        let Ok(_paused) = paused else {
            let behind = self.behind(&metrics_now(&self.raft), target);
            return Err(self.failed(&node, format!("the entries in flight were not applied within {CATCH_UP_LIMIT:?} ({behind} entries behind)")));
        };
        let drained = started.elapsed();
        let mut metrics_rx = self.raft.metrics();
        let (term, last_log_index) = loop {
            let metrics = metrics_rx.borrow_and_update().clone();
            if metrics.current_leader != Some(self.id) {
                return Err(self.failed(&node, "this node stopped leading during the hand-over".into()));
            }
            if self.behind(&metrics, target) == 0 {
                break (metrics.current_term, metrics.last_log_index);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                let behind = self.behind(&metrics, target);
                // A target that died just before the hand-over passed the reachability check; if it has not
                // answered since, it is gone rather than slow.
                let last_ok = self.network.contact(&node.peer_addr).last_ok;
                if last_ok.is_none_or(|time| time < pausing_at) {
                    let detail =
                        format!("it has not answered since the hand-over began ({behind} entries behind)");
                    return Err(HandoverError::Unreachable { name: name.to_string(), detail });
                }
                return Err(HandoverError::NotCaughtUp { name: name.to_string(), behind });
            }
            let _ =
                tokio::time::timeout(remaining.min(Duration::from_millis(20)), metrics_rx.changed()).await;
        };

        let caught_up = started.elapsed();
        // 5. Ask the target to campaign: its log is as long as ours, so we grant its vote.
        let request = CampaignRequest { leader: self.id, term, last_log_index };
        self.network.ask_to_campaign(target, &node, &request, CAMPAIGN_TIMEOUT).await.map_err(|error| {
            match error {
                CampaignError::Unreachable(detail) => {
                    HandoverError::Unreachable { name: name.to_string(), detail }
                }
                CampaignError::Refused(detail) => {
                    self.failed(&node, format!("it refused to campaign: {detail}"))
                }
            }
        })?;

        // 6. Wait for the new leader; the proposer resumes when `_paused` drops, whatever happens.
        let limit = self.new_leader_limit();
        let seen =
            tokio::time::timeout(limit, metrics_rx.wait_for(|m| m.current_leader == Some(target))).await;
        if !matches!(seen, Ok(Ok(_))) {
            return Err(self.failed(&node, format!("it did not lead within {limit:?} of its campaign")));
        }
        let handover = done(true);
        tracing::info!(
            from = handover.from,
            to = handover.to,
            took_ms = handover.took_ms,
            ?lease_waited,
            ?drained,
            ?caught_up,
            "leadership handed over (times since the request: own lease over, entries in flight applied, target \
             caught up)"
        );
        Ok(handover)
    }

    /// Entries the member `id` lacks of this leader's log.
    fn behind(&self, metrics: &Metrics, id: NodeId) -> u64 {
        let matched =
            metrics.replication.as_ref().and_then(|r| r.get(&id).cloned()).flatten().map(|l| l.index);
        match (metrics.last_log_index, matched) {
            (Some(last), Some(matched)) => last.saturating_sub(matched),
            (Some(last), None) => last + 1,
            (None, _) => 0,
        }
    }

    /// A failure after the checks: names whoever leads now.
    fn failed(&self, node: &NodeInfo, detail: String) -> HandoverError {
        let leader = self.leader().map_or_else(|| "no node".to_string(), |id| self.node_name(id));
        HandoverError::Failed { name: node.name.clone(), leader, detail }
    }
}

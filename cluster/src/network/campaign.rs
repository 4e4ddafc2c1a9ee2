//! `POST /cluster/campaign`: the leader asks a caught-up data node to campaign now (planned hand-over).
//!
//! openraft 0.9 has no leadership transfer. The leader's half of the hand-over is in
//! `crate::node::handover`; this is the target's half: it checks that the request still makes sense — it
//! comes from the leader of the target's current term, the target is a voting data node, and its log holds
//! everything the leader had when it asked — and then calls [`openraft::Raft::trigger`]`().elect()`, which
//! starts an election at once (a follower's election timer and `runtime_config().elect(false)` do not apply
//! to a triggered election). The answer says only that the campaign started; the leader watches its own
//! metrics for the result.
//!
//! An older node answers this route 404 ("no route"), which the leader reports as "this node cannot take
//! over leadership: upgrade it".

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::CAMPAIGN_PATH;
use super::client::{Late, PeerNetwork, TransportError};
use crate::types::{NodeId, NodeInfo, Raft, Role, metrics_now};

/// How long the target waits for its own metrics to show the leader's last log index.
const LOG_WAIT: Duration = Duration::from_millis(500);

/// What the leader sends with its request: who it is, its term, and its last log index once it stopped
/// proposing (the target must have at least that much).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CampaignRequest {
    pub leader: NodeId,
    pub term: u64,
    pub last_log_index: Option<u64>,
}

/// Why the target did not campaign.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CampaignError {
    /// The request did not reach the target's Raft (connection failed, timeout, refused).
    #[error("{0}")]
    Unreachable(String),
    /// The target refused: it does not follow that leader in that term, is not a voting data node, or lacks
    /// part of the log.
    #[error("{0}")]
    Refused(String),
}

/// The target's side: checks the request against its own Raft state, then starts an election.
pub(super) async fn campaign(raft: &Raft, request: CampaignRequest) -> Result<(), String> {
    let metrics = metrics_now(raft);
    let membership = metrics.membership_config.membership();
    let me = metrics.id;
    if !membership.voter_ids().any(|voter| voter == me)
        || membership.get_node(&me).is_none_or(|node| node.role != Role::Data)
    {
        return Err("this node is not a voting data node: it cannot take over leadership".into());
    }
    if metrics.current_term != request.term || metrics.current_leader != Some(request.leader) {
        return Err(format!(
            "this node is in term {} following {:?}, not in term {} following node {}: the request is stale",
            metrics.current_term, metrics.current_leader, request.term, request.leader
        ));
    }
    // The leader counts an entry replicated once this node stored it, which may be a moment before this
    // node's own metrics say so: wait a little for them.
    let mut log = raft.metrics();
    let caught_up = log.wait_for(|m| m.last_log_index >= request.last_log_index);
    let metrics = match tokio::time::timeout(LOG_WAIT, caught_up).await {
        Ok(Ok(now)) => now.clone(),
        _ => metrics_now(raft),
    };
    if metrics.last_log_index < request.last_log_index {
        return Err(format!(
            "this node's log ends at {:?}, before the leader's {:?}: it is not caught up",
            metrics.last_log_index, request.last_log_index
        ));
    }
    tracing::info!(term = request.term, "the leader hands leadership over: campaigning now");
    raft.trigger().elect().await.map_err(|fatal| format!("Raft stopped: {fatal}"))
}

impl PeerNetwork {
    /// Asks node `target` (at `node.peer_addr`) to campaign now; see the module documentation.
    pub async fn ask_to_campaign(
        &self,
        target: NodeId,
        node: &NodeInfo,
        request: &CampaignRequest,
        timeout: Duration,
    ) -> Result<(), CampaignError> {
        let result: Result<(), String> = self
            .call(&node.peer_addr, CAMPAIGN_PATH, request, timeout, target, Late::Abandon, None)
            .await
            .map_err(|error| match error {
                TransportError::Status { status: hyper::StatusCode::NOT_FOUND, .. } => {
                    CampaignError::Refused(format!(
                        "{} runs an older Tandem that cannot take over leadership: upgrade it",
                        node.name
                    ))
                }
                other => CampaignError::Unreachable(other.to_string()),
            })?;
        result.map_err(CampaignError::Refused)
    }
}

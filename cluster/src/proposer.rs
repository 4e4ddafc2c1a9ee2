//! Group commit: the leader packs concurrent client writes into shared log entries.
//!
//! In openraft 0.9 every `client_write` becomes its own log entry, and the leader appends and fsyncs each one
//! before it replicates it; measured on the 2-core machine, 64 concurrent writers reached only ~1,800
//! changes/s, one log append, one fsync and one replication round trip per change.
//!
//! The [`Proposer`] puts a queue in front of `client_write` and keeps at most [`MAX_IN_FLIGHT`] entries in
//! flight. A write that arrives while the pipeline is full waits in the queue; when an entry completes, the
//! next entry takes everything waiting (up to [`MAX_COMMANDS`] commands and [`MAX_BYTES`] bytes of commands).
//! A lone writer sees no difference, since its entry leaves at once; many writers share appends, fsyncs and
//! round trips, and the batch grows by itself with the load. Entries are submitted to Raft in the order their
//! writes were queued, and the state machine applies an entry's commands in order ([`crate::state_machine`]),
//! each with its own outcome, exactly as if they had been separate entries.
//!
//! Each write gets back its own command's outcome. When the entry cannot be written (this node stopped
//! leading, Raft stopped), every write in it gets the same error and its caller decides whether to follow the
//! new leader. A write whose caller stopped waiting (it timed out) before its entry was formed is dropped
//! rather than proposed: its caller already reported it as failed.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use openraft::error::{ClientWriteError, Fatal, RaftError};
use openraft::raft::ClientWriteResult;
use tandem_storage::Command;

use crate::metrics::ClusterMetrics;
use crate::types::{NodeId, NodeInfo, Raft, Request, TypeConfig, Written, encoded_size};

/// Entries proposed and not yet applied, at most. One keeps the batches largest; the second lets the next
/// batch be formed and appended while the previous one is being replicated.
pub const MAX_IN_FLIGHT: usize = 2;
/// Commands in one entry, at most.
pub const MAX_COMMANDS: usize = 256;
/// Encoded commands in one entry, at most, in bytes (a single larger command gets an entry of its own; the
/// API's body limits keep that under the peer network's limit).
pub const MAX_BYTES: usize = 1024 * 1024;
/// How long a proposed entry's writes wait for their answer, at most (longer than any caller waits).
pub const ANSWER_LIMIT: Duration = Duration::from_secs(15);
/// Writes waiting for an entry, at most; further writers wait to enter the queue.
const QUEUE: usize = 4 * MAX_COMMANDS;

/// Why a proposed write was not applied: openraft's own client-write error, so callers can still tell "not
/// the leader" (with the leader's address) from a fatal error.
pub type ProposeError = RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>;

/// A write waiting for its entry.
struct Pending {
    command: Command,
    size: usize,
    reply: oneshot::Sender<Result<Written, ProposeError>>,
}

/// The queue in front of `Raft::client_write` (see the module documentation). Cheap to share by reference;
/// its task ends when the proposer is dropped.
#[derive(Debug)]
pub struct Proposer {
    queue: mpsc::Sender<Pending>,
    metrics: Metrics,
    /// The pipeline's [`MAX_IN_FLIGHT`] slots: an entry holds one from its proposal until its answer.
    slots: Arc<Semaphore>,
}

/// New entries wait while this is held ([`Proposer::pause`]); dropping it lets them go.
#[derive(Debug)]
pub struct Paused {
    _slots: OwnedSemaphorePermit,
}

/// Set once, after the proposer started (the task reads it for every entry).
type Metrics = Arc<OnceLock<ClusterMetrics>>;

impl Proposer {
    /// Starts the proposer's task on the current tokio runtime.
    pub fn start(raft: Raft) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE);
        let metrics = Metrics::default();
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        tokio::spawn(form_entries(raft, waiting, metrics.clone(), slots.clone()));
        Proposer { queue, metrics, slots }
    }

    /// Stops proposing new entries and waits until every entry in flight has been answered (applied here, or
    /// dropped because this node stopped leading). Writes keep queueing meanwhile; they are proposed when the
    /// returned guard is dropped. Used by the leadership hand-over (`crate::node::handover`): the target must
    /// have the leader's whole log when it campaigns, so the log must stop growing. The caller bounds the
    /// wait.
    pub async fn pause(&self) -> Paused {
        // The semaphore is fair: the proposer's task, queued behind this, gets no slot until the guard drops.
        match self.slots.clone().acquire_many_owned(MAX_IN_FLIGHT as u32).await {
            Ok(slots) => Paused { _slots: slots },
            Err(_) => unreachable!("the proposer's semaphore is never closed"),
        }
    }

    /// Observes the number of writes per entry in `metrics` from now on (the first call wins).
    pub fn set_metrics(&self, metrics: ClusterMetrics) {
        let _ = self.metrics.set(metrics);
    }

    /// Proposes `command` in the next entry and waits until that entry is applied.
    pub async fn propose(&self, command: Command) -> Result<Written, ProposeError> {
        let size = encoded_size(&command);
        let (reply, answer) = oneshot::channel();
        if self.queue.send(Pending { command, size, reply }).await.is_err() {
            return Err(RaftError::Fatal(Fatal::Stopped));
        }
        answer.await.unwrap_or(Err(RaftError::Fatal(Fatal::Stopped)))
    }
}

/// The proposer's task: waits for a first write, then for a free slot in the pipeline, then takes whatever
/// else is waiting (within the limits), and proposes it all as one entry. (The first write before the slot:
/// an idle task holds no slot, so [`Proposer::pause`] can take them all.)
async fn form_entries(
    raft: Raft,
    mut waiting: mpsc::Receiver<Pending>,
    metrics: Metrics,
    slots: Arc<Semaphore>,
) {
    // A write that did not fit the previous entry: it opens the next one.
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(pending) => pending,
            None => match waiting.recv().await {
                Some(pending) => pending,
                None => return,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let mut bytes = first.size;
        let mut batch = vec![first];
        while batch.len() < MAX_COMMANDS && bytes < MAX_BYTES {
            match waiting.try_recv() {
                Ok(pending) if bytes + pending.size > MAX_BYTES => {
                    carried = Some(pending);
                    break;
                }
                Ok(pending) => {
                    bytes += pending.size;
                    batch.push(pending);
                }
                Err(_) => break,
            }
        }
        batch.retain(|pending| !pending.reply.is_closed());
        if !batch.is_empty() {
            if let Some(metrics) = metrics.get() {
                metrics.entry_writes.observe(batch.len() as f64);
            }
            // Submitted here, in queue order (so entries keep the order writes arrived in); answered by a
            // task of its own, so the next entry can be formed meanwhile.
            let (commands, replies): (Vec<Command>, Vec<_>) =
                batch.into_iter().map(|pending| (pending.command, pending.reply)).unzip();
            match raft.client_write_ff(Request { commands }).await {
                Ok(receiver) => {
                    tokio::spawn(answer_entry(raft.clone(), receiver, replies, slot));
                }
                Err(fatal) => answer_all(replies, &RaftError::Fatal(fatal)),
            }
        }
    }
}

/// Waits until the entry is applied and hands each write its outcome.
///
/// The entry's pipeline slot is freed when the answer comes, or earlier when this node's term or leader
/// changes: openraft 0.9 does not answer every pending write of a deposed leader (entries that a snapshot
/// from the new leader replaces are purged without an answer), and a slot held forever would stop all later
/// writes. The writes themselves wait for their answer at most [`ANSWER_LIMIT`]; by then their callers have
/// given up ([`crate::node`]'s write timeout is shorter), and dropping the replies tells anyone still waiting
/// that the outcome is unknown.
async fn answer_entry(
    raft: Raft,
    mut receiver: oneshot::Receiver<ClientWriteResult<TypeConfig>>,
    replies: Vec<oneshot::Sender<Result<Written, ProposeError>>>,
    slot: OwnedSemaphorePermit,
) {
    let mut slot = Some(slot);
    let mut metrics = raft.metrics();
    let (term, leader) = {
        let now = metrics.borrow_and_update();
        (now.current_term, now.current_leader)
    };
    let limit = tokio::time::sleep(ANSWER_LIMIT);
    tokio::pin!(limit);
    let result = loop {
        tokio::select! {
            result = &mut receiver => break Some(result),
            changed = metrics.changed(), if slot.is_some() => {
                let now = metrics.borrow_and_update();
                if changed.is_err() || now.current_term != term || now.current_leader != leader {
                    slot = None;
                }
            }
            () = &mut limit => break None,
        }
    };
    drop(slot);
    let Some(result) = result else {
        tracing::warn!(
            writes = replies.len(),
            "no answer for a proposed entry in time: its outcome is unknown"
        );
        return;
    };
    match result {
        Ok(Ok(written)) if written.data.outcomes.len() == replies.len() => {
            let revision = written.data.revision;
            for (reply, outcome) in replies.into_iter().zip(written.data.outcomes) {
                let _ = reply.send(Ok(Written { outcome, revision }));
            }
        }
        Ok(Ok(written)) => {
            tracing::error!(
                commands = replies.len(),
                outcomes = written.data.outcomes.len(),
                "an entry's outcomes do not match its commands"
            );
            answer_all(replies, &RaftError::Fatal(Fatal::Panicked));
        }
        Ok(Err(refused)) => answer_all(replies, &RaftError::APIError(refused)),
        // Raft dropped the request: it stopped.
        Err(_) => answer_all(replies, &RaftError::Fatal(Fatal::Stopped)),
    }
}

/// Hands every write of an entry the same error.
fn answer_all(replies: Vec<oneshot::Sender<Result<Written, ProposeError>>>, error: &ProposeError) {
    for reply in replies {
        let _ = reply.send(Err(error.clone()));
    }
}

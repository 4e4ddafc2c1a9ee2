//! How far this node's Raft log is on disk: the last entry an `fdatasync` has covered.
//!
//! ## Why a leader needs it: its own flush overlaps replication
//! openraft 0.9 waits for the leader's log flush (the `LogFlushed` callback) before it sends the new entries
//! to the followers (`RaftCore::append_to_log` awaits it), and nothing else runs in the Raft core meanwhile:
//! a write pays the leader's `fdatasync` and then the followers' in series, and the core is idle during each
//! leader flush. The Raft thesis (§10.2.1) points out that the leader may write to its disk in parallel with
//! replicating, provided nothing counts an entry as committed before a majority really holds it durably.
//!
//! So the log store of a leader ([`super::LogStore::with_leader_early_ack`]) calls openraft back as soon as
//! its *own* entries are written (not synced), and this position tells everything that makes a commit
//! visible to wait for the real flush:
//!
//! - the state machine applies an entry only once it is durable here
//!   ([`crate::state_machine::StateMachine::with_durable_log`]): every client answer, every read (reads wait
//!   for the applied position), every snapshot (built from applied state) comes after it;
//! - the commit index the leader sends to the followers (`leader_commit` in AppendEntries and heartbeats) is
//!   lowered to it ([`crate::network::PeerNetwork::with_durable_log`]), so no follower applies an entry the
//!   leader may still lose.
//!
//! openraft's commit index on the leader may then run ahead of the truth by one flush: it counts the leader
//! once the entry is written and a follower once the follower has synced it (followers still call back only
//! after their flush). What is applied anywhere is durable on the leader and on a follower: a majority of
//! two out of three, or both of a pair. If the leader loses power before its flush, the entry was never
//! applied nor acknowledged, and the survivors may keep or drop it like any uncommitted entry.
//!
//! Only entries of the leader's own term, with the leader's committed vote, are acknowledged early, and
//! never a membership change (joint consensus relies on a configuration being committed before the next
//! is proposed): everything else a node appends — as a follower, after a restart — is acknowledged only
//! once synced, as openraft expects.
//!
//! ## What it is
//! A watch channel of the last durable entry's log id, advanced by the flusher thread after each sync,
//! lowered when the log is truncated (a truncation is synced before it returns, so what remains is durable),
//! and marked failed if a sync fails: waiters then get an error instead of waiting forever (the node stops
//! Raft: a log that cannot be synced cannot acknowledge anything). Beside it, per follower, a commit index
//! held back from it that no later request carried: once durable, [`spawn_commit_announcer`] triggers a
//! heartbeat so that the follower learns it at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::types::{LogId, NodeId};

/// The durable end of the log, or why it will not advance again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct State {
    last: Option<LogId>,
    failed: Option<String>,
    /// Per follower, the highest commit index [`DurablePosition::clamp`] held back from it and that no later
    /// request has carried yet ([`DurablePosition::held_back_now_durable`]).
    held_back: BTreeMap<NodeId, u64>,
}

impl State {
    /// Whether a commit index held back from some follower is durable now.
    fn owes_an_announcement(&self) -> bool {
        let durable = self.last.map(|last| last.index);
        self.held_back.values().any(|&held| Some(held) <= durable)
    }
}

/// A sync of the log failed: nothing written after the last durable entry may be acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the Raft log cannot be made durable: {0}")]
pub struct SyncFailed(pub String);

/// The last entry of this node's Raft log that is on disk (see the module documentation). Cheap to clone:
/// every clone sees the same position.
#[derive(Clone, Debug)]
pub struct DurablePosition {
    state: Arc<watch::Sender<State>>,
    /// The index of the last entry written (synced or not; 0: none), for
    /// [`crate::network::redundant_heartbeat`].
    written: Arc<AtomicU64>,
    /// Woken whenever `written` moves.
    written_moved: Arc<Notify>,
}

impl DurablePosition {
    /// A position at `last`: what the log holds when it is opened, once synced.
    pub fn new(last: Option<LogId>) -> Self {
        DurablePosition {
            state: Arc::new(watch::channel(State { last, ..State::default() }).0),
            written: Arc::new(AtomicU64::new(last.map_or(0, |id| id.index))),
            written_moved: Arc::default(),
        }
    }

    /// The log now ends at `last` (entries were written after it, or it was cut back to it).
    pub(crate) fn written_to(&self, last: Option<LogId>) {
        self.written.store(last.map_or(0, |id| id.index), Ordering::Release);
        self.written_moved.notify_waiters();
    }

    /// Waits until an entry past `index` is written, for at most `limit`; whether one is.
    pub async fn written_past(&self, index: u64, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let moved = self.written_moved.notified();
            let mut moved = std::pin::pin!(moved);
            // Registered before the check, so that a write between the check and the wait still wakes it.
            moved.as_mut().enable();
            if self.written_end() > index {
                return true;
            }
            if tokio::time::timeout_at(deadline, moved).await.is_err() {
                return self.written_end() > index;
            }
        }
    }

    /// The index of the last entry written, synced or not (0 when the log is empty).
    pub fn written_end(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// The last durable entry now.
    #[cfg(test)]
    fn last(&self) -> Option<LogId> {
        self.state.borrow().last
    }

    /// Entries up to `to` are durable (a sync covering them returned). Never moves the position back.
    pub(super) fn advance(&self, to: LogId) {
        self.state.send_if_modified(|state| {
            let further = state.last.is_none_or(|last| last.index < to.index);
            if further {
                state.last = Some(to);
            }
            further
        });
    }

    /// A sync that covered everything up to `last` (the log's end when it was asked for) returned `result`.
    pub(super) fn synced(&self, result: &std::io::Result<()>, last: Option<LogId>) {
        match (result, last) {
            (Ok(()), Some(last)) => self.advance(last),
            (Ok(()), None) => {}
            (Err(e), _) => self.fail(e.to_string()),
        }
    }

    /// The log was cut after `last` (and the cut synced): the position follows it back if it was past it.
    pub(super) fn cut_back(&self, last: Option<LogId>) {
        self.state.send_if_modified(|state| {
            let past = state.last.map(|id| id.index) > last.map(|id| id.index);
            if past {
                state.last = last;
            }
            past
        });
    }

    /// A sync failed: wake every waiter with the error; the position never advances again.
    pub(super) fn fail(&self, why: String) {
        self.state.send_modify(|state| {
            state.failed.get_or_insert(why);
        });
    }

    /// Waits until the entry at `index` is durable.
    pub async fn wait_for(&self, index: u64) -> Result<(), SyncFailed> {
        let mut receiver = self.state.subscribe();
        let state = receiver
            .wait_for(|state| state.failed.is_some() || state.last.is_some_and(|last| last.index >= index))
            .await
            // The sender lives in `self`: it cannot be dropped while this waits.
            .map_err(|_| SyncFailed("the log store is gone".to_owned()))?;
        match &state.failed {
            Some(why) => Err(SyncFailed(why.clone())),
            None => Ok(()),
        }
    }

    /// `commit` lowered to the durable end, for the commit index sent to follower `target`: `commit` itself
    /// when it is durable, else the last durable entry (an entry of this node's log before `commit`).
    /// Remembers what it held back from `target` until a later request to it carries it, for
    /// [`Self::held_back_now_durable`].
    pub fn clamp(&self, target: NodeId, commit: Option<LogId>) -> Option<LogId> {
        let wanted = commit.map(|id| id.index)?;
        let mut clamped = commit;
        self.state.send_if_modified(|state| {
            if state.last.is_some_and(|last| last.index >= wanted) {
                // This request carries everything held back from `target` so far.
                if state.held_back.get(&target).is_some_and(|&held| held <= wanted) {
                    state.held_back.remove(&target);
                }
                return false;
            }
            clamped = state.last;
            let held = state.held_back.entry(target).or_insert(wanted);
            *held = (*held).max(wanted);
            // Not durable yet: nobody is woken now; the sync that makes it durable wakes the announcer.
            false
        });
        clamped
    }

    /// Waits until a commit index that [`Self::clamp`] held back from a follower is durable and no later
    /// request carried it, and forgets it. openraft announces a new commit index with the next
    /// AppendEntries; when it was held back and no write follows, that is the next heartbeat: the caller
    /// triggers one at once instead ([`spawn_commit_announcer`]), so that the followers apply (and answer
    /// reads and forwarded writes) without waiting for it.
    pub async fn held_back_now_durable(&self) -> Result<(), SyncFailed> {
        let mut receiver = self.state.subscribe();
        let failed = receiver
            .wait_for(|state| state.failed.is_some() || state.owes_an_announcement())
            .await
            .map_err(|_| SyncFailed("the log store is gone".to_owned()))?
            .failed
            .clone();
        if let Some(why) = failed {
            return Err(SyncFailed(why));
        }
        // Forgotten without waking anyone: nobody waits for an announcement to be owed no more.
        self.state.send_if_modified(|now| {
            let durable = now.last.map(|last| last.index);
            now.held_back.retain(|_, held| Some(*held) > durable);
            false
        });
        Ok(())
    }
}

/// Triggers a heartbeat each time a commit index [`DurablePosition::clamp`] held back from the followers is
/// durable, so that they learn it at once rather than with the next heartbeat (up to a heartbeat interval
/// later, when no write follows). Runs until Raft refuses the trigger (it stopped) or a sync fails.
pub fn spawn_commit_announcer(raft: crate::Raft, durable: DurablePosition) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while durable.held_back_now_durable().await.is_ok() {
            if raft.trigger().heartbeat().await.is_err() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 0), index)
    }

    #[test]
    fn advances_only_forward_and_cuts_back() {
        let position = DurablePosition::new(Some(id(1, 3)));
        position.advance(id(1, 2));
        assert_eq!(position.last(), Some(id(1, 3)));
        position.advance(id(2, 7));
        assert_eq!(position.last(), Some(id(2, 7)));
        position.cut_back(Some(id(1, 5)));
        assert_eq!(position.last(), Some(id(1, 5)));
        position.cut_back(Some(id(1, 9)));
        assert_eq!(position.last(), Some(id(1, 5)), "a cut past the position does not move it");
        position.cut_back(None);
        assert_eq!(position.last(), None);
    }

    #[test]
    fn clamps_a_commit_to_the_durable_end() {
        let position = DurablePosition::new(Some(id(2, 10)));
        assert_eq!(position.clamp(2, Some(id(2, 8))), Some(id(2, 8)));
        assert_eq!(position.clamp(2, Some(id(2, 10))), Some(id(2, 10)));
        assert_eq!(position.clamp(2, Some(id(2, 12))), Some(id(2, 10)));
        assert_eq!(position.clamp(2, None), None);
        assert_eq!(DurablePosition::new(None).clamp(2, Some(id(1, 1))), None);
    }

    /// Whether `held_back_now_durable` returns within a few scheduler turns.
    async fn announces(position: &DurablePosition) -> bool {
        let waiter = tokio::spawn({
            let position = position.clone();
            async move { position.held_back_now_durable().await }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let done = waiter.is_finished();
        waiter.abort();
        done
    }

    #[tokio::test]
    async fn a_held_back_commit_is_announced_once_durable_unless_a_later_request_carried_it() {
        let position = DurablePosition::new(Some(id(2, 10)));
        assert_eq!(position.clamp(2, Some(id(2, 10))), Some(id(2, 10)));
        assert!(!announces(&position).await, "nothing was held back");

        assert_eq!(position.clamp(2, Some(id(2, 13))), Some(id(2, 10)));
        assert_eq!(position.clamp(3, Some(id(2, 12))), Some(id(2, 10)));
        position.advance(id(2, 11));
        assert!(!announces(&position).await, "announced before 12 or 13 was durable");
        position.advance(id(2, 12));
        assert!(announces(&position).await, "12, held back from node 3, is durable");
        assert!(!announces(&position).await, "announced twice");
        position.advance(id(2, 13));
        assert!(announces(&position).await, "13, held back from node 2, is durable");

        assert_eq!(position.clamp(2, Some(id(2, 15))), Some(id(2, 13)));
        position.advance(id(2, 16));
        assert_eq!(position.clamp(2, Some(id(2, 16))), Some(id(2, 16)));
        assert!(!announces(&position).await, "the request that carried 16 carried the 15 held back");
    }

    #[tokio::test]
    async fn waiters_wake_on_the_sync_that_covers_them_or_on_failure() {
        let position = DurablePosition::new(Some(id(1, 1)));
        position.wait_for(1).await.unwrap();
        let waiter = tokio::spawn({
            let position = position.clone();
            async move { position.wait_for(5).await }
        });
        tokio::task::yield_now().await;
        position.advance(id(1, 4));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "woken before entry 5 was durable");
        position.advance(id(1, 5));
        assert_eq!(waiter.await.unwrap(), Ok(()));

        let waiter = tokio::spawn({
            let position = position.clone();
            async move { position.wait_for(9).await }
        });
        position.fail("fdatasync: EIO".to_owned());
        assert_eq!(waiter.await.unwrap(), Err(SyncFailed("fdatasync: EIO".to_owned())));
        assert!(position.wait_for(2).await.is_err(), "after a failed sync nothing is acknowledged");
    }
}

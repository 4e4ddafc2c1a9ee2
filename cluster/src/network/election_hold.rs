//! Holding this node's elections while a snapshot streams in from the leader.
//!
//! openraft 0.9 receives a chunked snapshot outside its core task: [`openraft::Raft::install_snapshot`]
//! writes each chunk to the snapshot file and only hands the finished snapshot to the core. The core — where
//! the election timer runs and where a message from the leader renews the leader's lease — sees nothing from
//! the leader for as long as the transfer and the install take, and the leader sends no heartbeats to a
//! follower its replication stream is busy sending a snapshot to. A snapshot that takes longer than the
//! election timeout (600–800 ms with the defaults: a few MiB on a slow disk, or any large firmware) makes the
//! follower campaign in the middle of its own catch-up. Its log is behind, so it never wins, but its higher
//! term deposes the leader, the transfer is dropped, and the next leader starts it again: the LazyFS
//! snapshot-install test showed this going on for 30 s with the follower never catching up.
//!
//! So the peer endpoint holds this node's elections ([`openraft::RuntimeConfigHandle::elect`]) from the first
//! snapshot chunk until the core hears from the leader again, which is the first AppendEntries after the
//! install (the leader sends one at once). Elections come back on their own when no chunk has been in flight
//! for [`ElectionHold::limit`] (the leader died mid-transfer: then the usual election timeout runs from the
//! last time the core heard from it, so this node campaigns at once). Votes are unaffected: the node still
//! votes for others while held.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::types::Raft;

/// A snapshot request still unanswered this long no longer holds elections (an install stuck on a broken
/// disk must not keep the node from ever campaigning).
const IN_FLIGHT_LIMIT: Duration = Duration::from_secs(60);

/// A snapshot request in flight; see [`ElectionHold::snapshot_request`].
pub struct SnapshotRequest(Arc<ElectionHold>);

impl std::fmt::Debug for SnapshotRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotRequest")
    }
}

impl std::fmt::Debug for ElectionHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElectionHold").field("limit", &self.limit).field("state", &*self.lock()).finish()
    }
}

impl Drop for SnapshotRequest {
    fn drop(&mut self) {
        self.0.snapshot_ended();
    }
}

/// The elections of one node, held while snapshots arrive (see the module documentation).
pub struct ElectionHold {
    raft: Raft,
    limit: Duration,
    state: Mutex<HoldState>,
}

#[derive(Debug)]
struct HoldState {
    held: bool,
    /// Snapshot requests being handled now.
    in_flight: usize,
    /// When the last snapshot request started or ended.
    last_activity: Instant,
}

impl ElectionHold {
    /// A hold for `raft`'s elections that ends by itself `limit` after the last snapshot request.
    pub fn new(raft: Raft, limit: Duration) -> Arc<ElectionHold> {
        let state = HoldState { held: false, in_flight: 0, last_activity: Instant::now() };
        Arc::new(ElectionHold { raft, limit, state: Mutex::new(state) })
    }

    fn lock(&self) -> MutexGuard<'_, HoldState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A snapshot request arrived: hold elections (starting the watchdog that ends the hold) until
    /// [`ElectionHold::leader_heard`] or the limit. The request counts as in flight until the guard is
    /// dropped (answered, or its connection dropped).
    pub fn snapshot_request(self: &Arc<Self>) -> SnapshotRequest {
        self.snapshot_started();
        SnapshotRequest(self.clone())
    }

    fn snapshot_started(self: &Arc<Self>) {
        let mut state = self.lock();
        state.in_flight += 1;
        state.last_activity = Instant::now();
        if !state.held {
            state.held = true;
            self.raft.runtime_config().elect(false);
            tracing::info!("a snapshot is arriving: elections held until the leader is heard again");
            tokio::spawn(self.clone().watch());
        }
    }

    fn snapshot_ended(&self) {
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        state.last_activity = Instant::now();
    }

    /// The core handled a request from the leader that renews its lease (AppendEntries): elections may run.
    pub fn leader_heard(&self) {
        let mut state = self.lock();
        if state.held && state.in_flight == 0 {
            self.release(&mut state, "the leader was heard after the snapshot");
        }
    }

    fn release(&self, state: &mut HoldState, why: &str) {
        state.held = false;
        self.raft.runtime_config().elect(true);
        tracing::info!("elections resume: {why}");
    }

    /// Ends the hold once no snapshot request has been in flight for the limit.
    async fn watch(self: Arc<Self>) {
        let tick = (self.limit / 4).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(tick).await;
            let mut state = self.lock();
            if !state.held {
                return;
            }
            let quiet = state.last_activity.elapsed();
            if quiet >= self.limit && (state.in_flight == 0 || quiet >= IN_FLIGHT_LIMIT) {
                self.release(&mut state, "no snapshot request from the leader within the limit");
                return;
            }
        }
    }
}

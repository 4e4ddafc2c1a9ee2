//! The purge gate: the Raft log may forget entries only once a snapshot on disk covers them.
//!
//! openraft 0.9 installs a snapshot received from the leader in two steps that run concurrently: it hands
//! the snapshot to the state machine's worker task (which writes it into the store and keeps its file) and,
//! right after, asks the log store to purge every entry up to the snapshot's last log id. Nothing makes the
//! purge wait for the install. After a power cut between the two, the log says "purged up to 179" while the
//! newest snapshot on disk ends at 159: entries 160–179 are gone from this node, and openraft refuses to start
//! (`purge_upto > snapshot_last_log_id`). The LazyFS power-loss test hit this about one run in four.
//!
//! The gate closes that window on our side. [`SnapshotFiles`](crate::snapshot_files::SnapshotFiles) publishes
//! the last log id of the newest snapshot that is durable (fsynced, renamed, directory fsynced) on a
//! [`Coverage`] channel; the log store, given a [`PurgeGate`], waits in `purge` until that reaches the
//! purge point before it writes its purge record. A purge after a snapshot built here is covered already
//! and does not wait; one after an install waits for the install to finish. A failed install ends the wait
//! with an error (openraft then stops this node, as it would for the failed install itself) rather than
//! holding the log store forever, and so does a wait longer than [`WAIT_LIMIT`].

use std::time::Duration;

use tokio::sync::watch;

use crate::types::LogId;

/// The longest a purge waits for a snapshot to cover it. A snapshot install writes the whole store; this
/// is far above what the largest one takes, and only bounds a wait that something else went wrong in.
pub const WAIT_LIMIT: Duration = Duration::from_secs(30 * 60);

/// What the snapshot files publish: how far the durable snapshot reaches, and how many installs failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    /// The last log id of the newest snapshot that is durable on disk.
    pub durable: Option<LogId>,
    /// How many snapshot installs failed since the node started.
    pub failed_installs: u64,
}

/// The sending side: owned by the snapshot files.
#[derive(Debug)]
pub struct CoverageSender(watch::Sender<Coverage>);

/// The receiving side: given to the log store.
#[derive(Clone, Debug)]
pub struct PurgeGate(watch::Receiver<Coverage>);

/// A purge that could not wait for its snapshot.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(
        "a snapshot install failed while the log waited to purge up to {upto}: the entries are kept until a snapshot covers them"
    )]
    InstallFailed { upto: LogId },
    #[error("no snapshot covered {upto} within {} s; the entries are kept", WAIT_LIMIT.as_secs())]
    TimedOut { upto: LogId },
    #[error("the snapshot files were dropped while the log waited to purge up to {upto}")]
    Closed { upto: LogId },
}

/// A new gate and its sender, starting at `durable`.
pub fn channel(durable: Option<LogId>) -> (CoverageSender, PurgeGate) {
    let (sender, receiver) = watch::channel(Coverage { durable, failed_installs: 0 });
    (CoverageSender(sender), PurgeGate(receiver))
}

impl CoverageSender {
    /// The current snapshot, durable on disk, ends at `last` now.
    pub fn covered(&self, last: Option<LogId>) {
        self.0.send_if_modified(|coverage| {
            let changed = last != coverage.durable;
            coverage.durable = last;
            changed
        });
    }

    /// A snapshot install failed.
    pub fn install_failed(&self) {
        self.0.send_modify(|coverage| coverage.failed_installs += 1);
    }

    /// Another gate on the same coverage.
    pub fn gate(&self) -> PurgeGate {
        PurgeGate(self.0.subscribe())
    }
}

impl PurgeGate {
    /// Waits until a durable snapshot covers `upto`: at once when one does, otherwise until one does, an
    /// install fails, or [`WAIT_LIMIT`] passes.
    pub async fn wait_covers(&mut self, upto: LogId) -> Result<(), GateError> {
        self.wait_covers_within(upto, WAIT_LIMIT).await
    }

    /// [`PurgeGate::wait_covers`] with another limit (tests).
    pub async fn wait_covers_within(&mut self, upto: LogId, limit: Duration) -> Result<(), GateError> {
        let failures_before = self.0.borrow_and_update().failed_installs;
        let waited = tokio::time::timeout(
            limit,
            self.0.wait_for(|c| c.durable >= Some(upto) || c.failed_installs != failures_before),
        )
        .await;
        match waited {
            Err(_) => Err(GateError::TimedOut { upto }),
            Ok(Err(_)) => Err(GateError::Closed { upto }),
            Ok(Ok(coverage)) if coverage.durable >= Some(upto) => Ok(()),
            Ok(Ok(_)) => Err(GateError::InstallFailed { upto }),
        }
    }

    /// How far the durable snapshot reaches now.
    pub fn durable(&self) -> Option<LogId> {
        self.0.borrow().durable
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    #[tokio::test]
    async fn a_covered_purge_passes_at_once() {
        let (_sender, mut gate) = channel(Some(log_id(10)));
        gate.wait_covers_within(log_id(10), Duration::from_millis(1)).await.unwrap();
        gate.wait_covers_within(log_id(3), Duration::from_millis(1)).await.unwrap();
    }

    #[tokio::test]
    async fn a_purge_waits_for_the_install_that_covers_it() {
        let (sender, mut gate) = channel(Some(log_id(159)));
        let waiter =
            tokio::spawn(async move { gate.wait_covers_within(log_id(179), Duration::from_secs(10)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "the purge must wait while the snapshot covers only 159");
        sender.covered(Some(log_id(170)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "170 does not cover 179");
        sender.covered(Some(log_id(179)));
        waiter.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_failed_install_ends_the_wait_with_an_error() {
        let (sender, mut gate) = channel(None);
        let waiter =
            tokio::spawn(async move { gate.wait_covers_within(log_id(5), Duration::from_secs(10)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        sender.install_failed();
        assert!(matches!(waiter.await.unwrap(), Err(GateError::InstallFailed { .. })));
    }

    #[tokio::test]
    async fn a_wait_is_bounded() {
        let (sender, mut gate) = channel(Some(log_id(20)));
        sender.covered(Some(log_id(8)));
        assert_eq!(gate.durable(), Some(log_id(8)));
        let result = gate.wait_covers_within(log_id(9), Duration::from_millis(30)).await;
        assert!(matches!(result, Err(GateError::TimedOut { .. })));
    }
}

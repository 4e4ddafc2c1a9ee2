//! Freeing the Raft log of blob bytes once the store has them: the log keeps no second copy of a firmware
//! image longer than replication needs it.
//!
//! A blob arrives as chunk entries in the Raft log (1 MiB each). Once its commit is applied, its bytes are in
//! a blob file (`tandem_storage::blob_files`) and will be in every snapshot; the log's copy is needed only by
//! followers that have not received those entries yet. openraft's snapshot policy counts entries (a snapshot
//! every 5,000), not bytes, and keeps 1,000 entries behind each snapshot: a 1 GiB image is 1,025 entries, so
//! on its own the log would keep the image until 5,000 more entries came — on a quiet installation, for
//! ever, and on disk beside the blob file and the snapshot.
//!
//! [`BlobCompaction`] decides, on each tick of the node's duties, from the committed blob bytes in the store
//! and openraft's metrics:
//!
//! 1. when the store's blob bytes have grown by at least the threshold (64 MiB by default,
//!    `TANDEM_BLOB_COMPACTION_BYTES` for tests) since the last compaction, ask for a snapshot that covers
//!    what is applied now (asked again on later ticks until one exists: openraft ignores the request while
//!    another build runs);
//! 2. once a snapshot covers that point, purge the log up to it. openraft holds a purge back while a
//!    follower has those entries in flight and carries it out when the follower answers, so replication
//!    under way keeps what it needs; a follower that is further behind (disconnected) is sent the snapshot,
//!    which holds the blob anyway.
//!
//! Rejected: purging a leader's log no further than every follower has matched. On an idle cluster
//! openraft's metrics can report a follower one entry behind for as long as nothing new is written (an
//! `UpdateReplicationMatched` dropped across a membership change), and the purge then never reached the
//! blob's last chunk (seen in the end-to-end test, 2 runs in 8).
//!
//! Every node does this for its own log. What it does not do: look at blobs that were already in the store
//! when the node started (the baseline is the store at start), or at a duplicate upload of a blob the store
//! has (the store's bytes do not grow); openraft's own policy covers those, later.

/// What the duty loop should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactionStep {
    Nothing,
    /// Ask openraft for a snapshot.
    Snapshot,
    /// Purge the log up to and including this index.
    Purge(u64),
}

/// What [`BlobCompaction::next_step`] reads from the node.
#[derive(Clone, Copy, Debug, Default)]
pub struct CompactionInputs {
    /// The bytes of all committed blobs in the store.
    pub blob_bytes: u64,
    pub last_applied: Option<u64>,
    pub snapshot: Option<u64>,
    pub purged: Option<u64>,
}

/// The state of one node's log compaction (see the module docs).
#[derive(Debug)]
pub struct BlobCompaction {
    threshold: u64,
    /// The blob bytes at the last compaction (at start: the store's bytes then).
    baseline: Option<u64>,
    /// A compaction under way: the applied index it must cover, and the blob bytes when it started.
    pending: Option<(u64, u64)>,
}

/// The default threshold: 64 MiB of new blob bytes.
pub const DEFAULT_THRESHOLD: u64 = 64 * 1024 * 1024;

impl BlobCompaction {
    pub fn new(threshold: u64) -> Self {
        BlobCompaction { threshold: threshold.max(1), baseline: None, pending: None }
    }

    /// The next step, given the node's state now.
    pub fn next_step(&mut self, now: CompactionInputs) -> CompactionStep {
        let baseline = *self.baseline.get_or_insert(now.blob_bytes);
        let Some((cover, bytes)) = self.pending else {
            match now.last_applied {
                Some(applied) if now.blob_bytes >= baseline.saturating_add(self.threshold) => {
                    self.pending = Some((applied, now.blob_bytes));
                    return CompactionStep::Snapshot;
                }
                _ => return CompactionStep::Nothing,
            }
        };
        let Some(snapshot) = now.snapshot.filter(|&snapshot| snapshot >= cover) else {
            return CompactionStep::Snapshot;
        };
        self.pending = None;
        self.baseline = Some(bytes);
        if now.purged.is_some_and(|purged| purged >= cover.min(snapshot)) {
            return CompactionStep::Nothing;
        }
        CompactionStep::Purge(cover.min(snapshot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn inputs(blob_bytes: u64, applied: u64) -> CompactionInputs {
        CompactionInputs { blob_bytes, last_applied: Some(applied), ..CompactionInputs::default() }
    }

    #[test]
    fn blobs_below_the_threshold_or_present_at_start_are_left_alone() {
        let mut compaction = BlobCompaction::new(64 * MIB);
        assert_eq!(compaction.next_step(inputs(900 * MIB, 10)), CompactionStep::Nothing, "baseline at start");
        assert_eq!(compaction.next_step(inputs(950 * MIB, 60)), CompactionStep::Nothing);
    }

    #[test]
    fn a_follower_snapshots_then_purges_up_to_the_point_it_covered() {
        let mut compaction = BlobCompaction::new(64 * MIB);
        compaction.next_step(inputs(0, 1));
        assert_eq!(compaction.next_step(inputs(100 * MIB, 110)), CompactionStep::Snapshot);
        // The snapshot is still being built (or an older one exists): ask again.
        let building = CompactionInputs { snapshot: Some(50), ..inputs(100 * MIB, 112) };
        assert_eq!(compaction.next_step(building), CompactionStep::Snapshot);
        let built = CompactionInputs { snapshot: Some(112), ..inputs(100 * MIB, 112) };
        assert_eq!(compaction.next_step(built), CompactionStep::Purge(110));
        let purged = CompactionInputs { purged: Some(110), ..built };
        assert_eq!(compaction.next_step(purged), CompactionStep::Nothing, "done, new baseline");
        assert_eq!(compaction.next_step(inputs(150 * MIB, 130)), CompactionStep::Nothing);
        assert_eq!(compaction.next_step(inputs(170 * MIB, 140)), CompactionStep::Snapshot);
    }

    #[test]
    fn a_purge_already_done_is_not_asked_again() {
        let mut compaction = BlobCompaction::new(MIB);
        compaction.next_step(inputs(0, 1));
        assert_eq!(compaction.next_step(inputs(2 * MIB, 40)), CompactionStep::Snapshot);
        let purged_by_openraft =
            CompactionInputs { snapshot: Some(45), purged: Some(42), ..inputs(2 * MIB, 45) };
        assert_eq!(compaction.next_step(purged_by_openraft), CompactionStep::Nothing);
        assert_eq!(compaction.next_step(inputs(2 * MIB, 50)), CompactionStep::Nothing, "new baseline");
    }
}

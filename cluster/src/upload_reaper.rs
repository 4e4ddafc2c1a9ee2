//! Uploads nobody finishes are aborted by the leader.
//!
//! A blob upload is a series of `BlobChunk` commands then a `BlobCommit` ([`tandem_storage::Command`]); until the
//! commit, every member keeps the received bytes in a part file. The API handler aborts its upload
//! (`BlobAbort`) when its client goes away, but an upload can still be orphaned: the node that streamed it
//! crashed or restarted mid-upload, or lost leadership and its client gave up. Its part file would stay on every
//! member forever.
//!
//! The [`UploadReaper`] runs on the leader, in the node's duties: it remembers, for each upload in progress, the
//! chunk it expects next and since when it has expected it (on this node's clock: the decision is the leader's,
//! and what it decides goes through the log as an ordinary `BlobAbort`, so every member drops the upload at the
//! same point). An upload that has not progressed for the limit (`[limits.api] abandoned_upload_after`, 1 h by
//! default) is aborted; its part files are deleted on every member at their next durable point. A leader that just
//! took over starts counting from its own first sight of each upload, so a change of leader never shortens the
//! time an upload is given.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// By default, an upload that has not progressed for an hour is abandoned.
pub const DEFAULT_ABANDON_AFTER: Duration = Duration::from_secs(3600);

/// How often the leader looks at the uploads in progress.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What the leader has seen of each upload in progress (see the module documentation).
#[derive(Debug)]
pub struct UploadReaper {
    limit: Duration,
    /// Upload id → (the chunk it expected when last seen to progress, since when).
    seen: BTreeMap<u64, (u32, Instant)>,
    last_check: Option<Instant>,
}

impl UploadReaper {
    pub fn new(limit: Duration) -> Self {
        UploadReaper { limit, seen: BTreeMap::new(), last_check: None }
    }

    /// Whether a check is due at `now` ([`CHECK_EVERY`]).
    pub fn check_due(&mut self, now: Instant) -> bool {
        if self.last_check.is_some_and(|last| now.duration_since(last) < CHECK_EVERY) {
            return false;
        }
        self.last_check = Some(now);
        true
    }

    /// Given the uploads in progress now (id, next chunk), returns those that have not progressed for the limit.
    pub fn abandoned(&mut self, uploads: &[(u64, u32)], now: Instant) -> Vec<u64> {
        self.seen.retain(|id, _| uploads.iter().any(|(upload, _)| upload == id));
        let mut due = Vec::new();
        for &(id, next_chunk) in uploads {
            let entry = self.seen.entry(id).or_insert((next_chunk, now));
            if entry.0 != next_chunk {
                *entry = (next_chunk, now);
            } else if now.duration_since(entry.1) >= self.limit {
                due.push(id);
            }
        }
        due
    }

    /// Forgets everything seen (this node stopped leading: the next leader counts from its own first sight).
    pub fn forget(&mut self) {
        self.seen.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_that_stops_progressing_is_due_after_the_limit_and_one_that_moves_is_not() {
        let mut reaper = UploadReaper::new(Duration::from_secs(10));
        let start = Instant::now();
        assert!(reaper.abandoned(&[(1, 3), (2, 0)], start).is_empty());
        // Upload 2 progresses at 6 s; upload 1 does not.
        assert!(reaper.abandoned(&[(1, 3), (2, 1)], start + Duration::from_secs(6)).is_empty());
        assert_eq!(reaper.abandoned(&[(1, 3), (2, 1)], start + Duration::from_secs(10)), vec![1]);
        // Upload 2's clock restarted when it moved.
        assert!(reaper.abandoned(&[(2, 1)], start + Duration::from_secs(15)).is_empty());
        assert_eq!(reaper.abandoned(&[(2, 1)], start + Duration::from_secs(16)), vec![2]);
    }

    #[test]
    fn finished_uploads_are_forgotten_and_a_new_leader_counts_from_its_own_first_sight() {
        let mut reaper = UploadReaper::new(Duration::from_secs(10));
        let start = Instant::now();
        reaper.abandoned(&[(1, 0)], start);
        assert!(reaper.abandoned(&[], start + Duration::from_secs(5)).is_empty());
        // Upload 1 back (same id) is seen anew.
        assert!(reaper.abandoned(&[(1, 0)], start + Duration::from_secs(12)).is_empty());
        reaper.forget();
        assert!(reaper.abandoned(&[(1, 0)], start + Duration::from_secs(30)).is_empty());
        assert_eq!(reaper.abandoned(&[(1, 0)], start + Duration::from_secs(40)), vec![1]);
    }

    #[test]
    fn checks_are_spaced() {
        let mut reaper = UploadReaper::new(DEFAULT_ABANDON_AFTER);
        let start = Instant::now();
        assert!(reaper.check_due(start));
        assert!(!reaper.check_due(start + Duration::from_millis(500)));
        assert!(reaper.check_due(start + CHECK_EVERY));
    }
}

//! Commit-only heartbeats that the next request makes redundant, answered without a round trip.
//!
//! ## The round trip it saves
//! openraft 0.9 replicates to each follower one AppendEntries at a time (`ReplicationCore`). When an entry is
//! committed, the Raft core tells every replication task the new commit index, and a task with nothing else to
//! send at that moment sends it alone: an AppendEntries without entries. The task that just got its
//! follower's answer is always in that position — the core sends it the follower's next entries only after it
//! has processed that answer, and the commit message is already waiting — so with writes in flight about one
//! request in three was such a heartbeat (measured at 16 clients: 3,400 of 10,000), and the next entries
//! waited behind its round trip.
//!
//! Such a heartbeat tells the follower nothing that the request right after it will not: that request
//! carries the entries and a commit index at least as high. So [`PeerClient`](super::client::PeerClient)
//! answers it `Success` itself, without sending it, when all of these hold:
//!
//! - it carries no entries;
//! - the previous AppendEntries *of the same client* was answered `Success` less than [`WINDOW`] ago, for
//!   the same vote, and the follower then matched exactly the heartbeat's `prev_log_id` (so the answer
//!   claims nothing the follower has not just said);
//! - this node's log holds entries past that `prev_log_id` (written, [`DurablePosition::written_end`]), so
//!   the core is about to send them to this follower; or, when it holds none yet, one is written within
//!   [`PENDING_WAIT`] ([`DurablePosition::written_past`]), else the heartbeat is sent after that wait.
//!
//! The wait is for one client writing alone: each of its commits is followed, a fraction of a millisecond
//! later, by its next write, and without the wait every write cost each follower a second exchange (the
//! commit heartbeat) besides its entry. With it the nodes spend 8–10 % less CPU at one client
//! (`tandem bench cluster --clients 1`, CPU of the three nodes from `/proc`: 1174–1198 ms per second against
//! 1294–1300 at the same rate); at 16 clients it changes nothing measurable (the entries are already
//! pending).
//!
//! What the leader does with a heartbeat's answer is only to note when the follower last acknowledged it
//! (openraft's "leader clock", shown as `millis_since_quorum_ack`, which the node's quorum check reads): a
//! skipped one dates the follower's last acknowledgement later than it was, by at most [`WINDOW`] plus
//! [`PENDING_WAIT`] plus the previous request's round trip. Each replication task uses one client for its
//! whole life; openraft's leadership checks for linearizable reads (`ensure_linearizable`) make a new client
//! per request, which has no previous answer, so they always reach the follower. Periodic heartbeats while
//! idle come long after the previous answer and go at once; the commit of the last write of a burst goes
//! [`PENDING_WAIT`] late.

use std::time::{Duration, Instant};

use openraft::Vote;
use openraft::raft::AppendEntriesRequest;

use crate::log_store::DurablePosition;
use crate::types::{LogId, NodeId, TypeConfig};

/// How recent the previous answer must be. The heartbeat in question follows it by microseconds; a few
/// milliseconds leave room for a busy machine and stay far below any heartbeat interval.
pub const WINDOW: Duration = Duration::from_millis(5);

/// The last AppendEntries a client had answered `Success`.
#[derive(Clone, Debug)]
pub struct Answered {
    at: Instant,
    vote: Vote<NodeId>,
    /// What the follower matched after it: the request's last entry, else its `prev_log_id`.
    matched: Option<LogId>,
}

impl Answered {
    /// `request` was answered `Success` just now.
    pub fn now(request: &AppendEntriesRequest<TypeConfig>) -> Self {
        let matched = request.entries.last().map(|entry| entry.log_id).or(request.prev_log_id);
        Answered { at: Instant::now(), vote: request.vote, matched }
    }
}

/// What to do with an AppendEntries request (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it.
    Send,
    /// Answer it `Success` without sending: entries past its `prev_log_id` are written, so the next request
    /// carries them with a commit index at least as high.
    Redundant,
    /// Redundant as soon as an entry past this index is written: wait for one, at most [`PENDING_WAIT`],
    /// and send it if none comes.
    RedundantOnceWrittenPast(u64),
}

/// How long a commit-only heartbeat waits for the next entry before it is sent after all. At one client, the
/// next write's entry follows its commit by the time the answer takes to reach the client and the next
/// request to come back (0.2–0.4 ms here).
pub const PENDING_WAIT: Duration = Duration::from_millis(2);

/// What to do with `request`, given the client's previous `Success` and this node's log.
pub fn verdict(
    request: &AppendEntriesRequest<TypeConfig>,
    previous: Option<&Answered>,
    log: &DurablePosition,
) -> Verdict {
    let Some(previous) = previous else { return Verdict::Send };
    let candidate = request.entries.is_empty()
        && previous.at.elapsed() < WINDOW
        && previous.vote == request.vote
        && previous.matched == request.prev_log_id;
    let matched = request.prev_log_id.map_or(0, |id| id.index);
    match (candidate, log.written_end() > matched) {
        (false, _) => Verdict::Send,
        (true, true) => Verdict::Redundant,
        (true, false) => Verdict::RedundantOnceWrittenPast(matched),
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    type Entry = openraft::Entry<TypeConfig>;

    fn id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(3, 1), index)
    }

    fn request(prev: u64, entries: &[u64], commit: u64) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(id(prev)),
            leader_commit: Some(id(commit)),
            entries: entries.iter().map(|&i| Entry { log_id: id(i), payload: EntryPayload::Blank }).collect(),
        }
    }

    #[test]
    fn only_a_commit_heartbeat_right_after_an_answer_is_redundant_and_only_with_entries_written() {
        let log = DurablePosition::new(None);
        log.written_to(Some(id(8)));
        let answered = Answered::now(&request(5, &[6, 7], 5));
        let heartbeat = request(7, &[], 7);
        assert_eq!(verdict(&heartbeat, Some(&answered), &log), Verdict::Redundant, "entry 8 is about to go");

        let send = Verdict::Send;
        assert_eq!(verdict(&heartbeat, None, &log), send, "a new client (a leadership check) always sends");
        assert_eq!(verdict(&request(7, &[8], 7), Some(&answered), &log), send, "entries always go");
        assert_eq!(
            verdict(&request(6, &[], 7), Some(&answered), &log),
            send,
            "the follower matched 7, not 6"
        );
        let mut other_leader = heartbeat.clone();
        other_leader.vote = Vote::new_committed(4, 2);
        assert_eq!(verdict(&other_leader, Some(&answered), &log), send, "another vote");
        log.written_to(Some(id(7)));
        assert_eq!(
            verdict(&heartbeat, Some(&answered), &log),
            Verdict::RedundantOnceWrittenPast(7),
            "nothing pending yet: redundant once entry 8 is written"
        );
        log.written_to(Some(id(8)));
        let old = Answered { at: Instant::now() - WINDOW, ..answered };
        assert_eq!(verdict(&heartbeat, Some(&old), &log), send, "an answer older than the window");
    }
}

#[cfg(test)]
mod waiting {
    use openraft::CommittedLeaderId;

    use super::*;

    #[tokio::test]
    async fn a_wait_for_the_next_entry_ends_when_it_is_written_or_at_its_limit() {
        let log = DurablePosition::new(None);
        log.written_to(Some(LogId::new(CommittedLeaderId::new(3, 1), 7)));
        let started = Instant::now();
        assert!(!log.written_past(7, Duration::from_millis(30)).await, "nothing past 7 was written");
        assert!(started.elapsed() >= Duration::from_millis(30));

        let writer = log.clone();
        let write = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            writer.written_to(Some(LogId::new(CommittedLeaderId::new(3, 1), 8)));
        });
        let started = Instant::now();
        assert!(log.written_past(7, Duration::from_secs(10)).await, "entry 8 was written");
        assert!(started.elapsed() < Duration::from_secs(5), "woken by the write, not the limit");
        write.await.unwrap();
        assert!(log.written_past(7, Duration::ZERO).await, "already past: no wait");
    }
}

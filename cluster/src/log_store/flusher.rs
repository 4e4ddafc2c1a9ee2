//! The log's flusher thread: `fdatasync` off the async runtime, one per batch of waiting appends.
//!
//! An `fdatasync` takes from ~0.2 ms to several milliseconds when three nodes share a disk. A leader's
//! appends are acknowledged before they are synced (`super::durable`), and the sync runs here, so that it
//! overlaps replication and blocks no thread of the async runtime.
//! The thread takes every request queued while it was busy and serves them all with one sync per file
//! (group commit at the disk).
//!
//! A follower's append is different: openraft's Raft core waits for its callback before it does anything
//! else (`RaftCore::append_to_log` awaits it), so a follower never has two appends to share a sync, and
//! handing the sync to this thread only adds two thread wake-ups to every entry's round trip: the thread's,
//! then the core task's when the thread calls back. So an append made while the thread is idle (a
//! follower's always are) is synced on the calling task ([`Flusher::sync_or_submit`]). On a node, that task
//! runs on the one control thread (`tandem serve`), which the sync then blocks: the API and the peer server
//! wait with it, for ~0.2 ms as a rule, longer on a slow or failing disk, which a follower could not
//! acknowledge from anyway. (Measured when the runtime still had two workers, one serving HTTP during the
//! sync:) Interleaved runs of
//! `tandem bench cluster --clients 1,16 --seconds 5 --runs 0`, three pairs: 1 client 1223–1341 changes/s
//! against 1116–1280 through the thread; 16 clients 6000–7177 against 5458–6155 (docs/cluster.md).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use super::Metrics;
use super::segment::Segment;

/// The environment variable that makes every sync of a leader's early-acknowledged entries wait this many
/// milliseconds first: for the power-loss test of a leader whose followers synced entries it had not
/// (`tests/power_loss.rs`). Never set in production: it only makes writes slower.
pub const TEST_SYNC_DELAY_ENV: &str = "TANDEM_TEST_LOG_SYNC_DELAY_MS";

/// The delay [`TEST_SYNC_DELAY_ENV`] asks for, if any.
fn test_sync_delay() -> Option<std::time::Duration> {
    let millis: u64 = std::env::var(TEST_SYNC_DELAY_ENV).ok()?.parse().ok()?;
    (millis > 0).then(|| std::time::Duration::from_millis(millis))
}

/// `fdatasync`s each of `segments` in turn, timed in the metrics as one sync.
pub(super) fn sync_segments<'a>(
    segments: impl IntoIterator<Item = &'a Arc<Segment>>,
    metrics: &Metrics,
) -> io::Result<()> {
    let _timer = metrics.get().map(|m| m.fsync_seconds.start_timer());
    segments.into_iter().try_for_each(|segment| segment.file.sync_data())
}

/// What to do once a flush is done (or failed).
pub type FlushDone = Box<dyn FnOnce(Result<(), io::Error>) + Send>;

/// A request: the segments written since the last request, and what to call once they are durable.
struct Request {
    segments: Vec<Arc<Segment>>,
    done: FlushDone,
    /// Entries a leader acknowledged to openraft before this sync ([`Flusher::submit_early_acknowledged`]).
    early: bool,
}

/// The flusher thread's queue. The thread stops when this is dropped.
pub struct Flusher {
    queue: mpsc::Sender<Request>,
    /// Requests queued or being served by the thread.
    outstanding: Arc<AtomicUsize>,
    metrics: Metrics,
}

impl std::fmt::Debug for Flusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flusher").finish_non_exhaustive()
    }
}

impl Flusher {
    pub fn start(metrics: Metrics) -> io::Result<Flusher> {
        let (queue, requests) = mpsc::channel::<Request>();
        let delay = test_sync_delay();
        let outstanding = Arc::new(AtomicUsize::new(0));
        let served = outstanding.clone();
        let thread_metrics = metrics.clone();
        std::thread::Builder::new().name("tandem-log-flush".into()).spawn(move || {
            while let Ok(first) = requests.recv() {
                if let Some(delay) = delay.filter(|_| first.early) {
                    std::thread::sleep(delay);
                }
                // Everything queued meanwhile was written before this sync starts: one sync covers it all.
                let waiting: Vec<Request> = std::iter::once(first).chain(requests.try_iter()).collect();
                let mut segments: Vec<&Arc<Segment>> = waiting.iter().flat_map(|r| &r.segments).collect();
                segments.sort_by_key(|segment| segment.sequence);
                segments.dedup_by_key(|segment| segment.sequence);
                let result = sync_segments(segments, &thread_metrics).map_err(|e| e.to_string());
                let count = waiting.len();
                for request in waiting {
                    (request.done)(result.clone().map_err(io::Error::other));
                }
                served.fetch_sub(count, Ordering::AcqRel);
            }
        })?;
        Ok(Flusher { queue, outstanding, metrics })
    }

    /// Queues a sync of `segments`; `done` runs on the flusher thread once they are durable.
    pub fn submit(&self, segments: Vec<Arc<Segment>>, done: FlushDone) -> io::Result<()> {
        self.send(Request { segments, done, early: false })
    }

    /// [`Flusher::submit`] for entries the leader already acknowledged to openraft (`super::durable`): only
    /// these wait for [`TEST_SYNC_DELAY_ENV`], so that a test can hold the leader's own sync back while its
    /// followers' go ahead.
    pub fn submit_early_acknowledged(&self, segments: Vec<Arc<Segment>>, done: FlushDone) -> io::Result<()> {
        self.send(Request { segments, done, early: true })
    }

    /// Syncs `segments` on the calling thread and runs `done` when nothing is queued for the flusher thread,
    /// else queues them like [`Flusher::submit`] (see the module documentation: on a follower, the thread
    /// is always idle here).
    pub fn sync_or_submit(&self, segments: Vec<Arc<Segment>>, done: FlushDone) -> io::Result<()> {
        if self.outstanding.load(Ordering::Acquire) > 0 {
            return self.submit(segments, done);
        }
        done(sync_segments(&segments, &self.metrics));
        Ok(())
    }

    fn send(&self, request: Request) -> io::Result<()> {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        self.queue.send(request).map_err(|_| io::Error::other("the log flusher thread stopped"))
    }
}

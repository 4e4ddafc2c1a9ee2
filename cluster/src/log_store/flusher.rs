//! The log's flusher thread: `fdatasync` off the async runtime, one per batch of waiting appends.
//!
//! An `fdatasync` takes from ~0.2 ms to several milliseconds when three nodes share a disk. Done inside
//! `append`, it would block one of the runtime's worker threads (there are two on a 2-core machine) for
//! that long, stalling the HTTP servers and the replication tasks; on this thread it blocks nothing but the
//! Raft core task's callbacks, which wait for it anyway. The thread takes every request queued while it was
//! busy and serves them all with one sync per file (group commit at the disk).

use std::io;
use std::sync::Arc;
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
                let result = {
                    let _timer = metrics.get().map(|m| m.fsync_seconds.start_timer());
                    segments
                        .iter()
                        .try_for_each(|segment| segment.file.sync_data())
                        .map_err(|e| e.to_string())
                };
                for request in waiting {
                    (request.done)(result.clone().map_err(io::Error::other));
                }
            }
        })?;
        Ok(Flusher { queue })
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

    fn send(&self, request: Request) -> io::Result<()> {
        self.queue.send(request).map_err(|_| io::Error::other("the log flusher thread stopped"))
    }
}

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

/// What to do once a flush is done (or failed).
pub type FlushDone = Box<dyn FnOnce(Result<(), io::Error>) + Send>;

/// A request: the segments written since the last request, and what to call once they are durable.
struct Request {
    segments: Vec<Arc<Segment>>,
    done: FlushDone,
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
        std::thread::Builder::new().name("tandem-log-flush".into()).spawn(move || {
            while let Ok(first) = requests.recv() {
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
        self.queue
            .send(Request { segments, done })
            .map_err(|_| io::Error::other("the log flusher thread stopped"))
    }
}

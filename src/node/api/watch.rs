//! `GET /v1/watch`: a gap-free, resumable stream of events.
//!
//! A watch is a position in the history: "everything from revision N on". The node answers with every event
//! whose revision is ≥ N, in revision order and without gaps, then keeps the connection open and sends each
//! new event as its own store applies it. Because it reads the node's own store (like `GET /v1/history`), a
//! watch works on the leader, on a follower and on a mirror alike; a follower is at most a little behind.
//!
//! ## One watch, start to finish
//! 1. [`watch`] parses the request ([`WatchRequest::parse`]): `from` (default: the revision after the
//!    current one, i.e. only new events), `format` (`ndjson`, or `sse` — also chosen by
//!    `Accept: text/event-stream`), `collection`, and the SSE `Last-Event-ID` header (which wins over `from`:
//!    a reconnecting browser sends the original URL plus the last id it saw). Anything else is a 400.
//! 2. It spawns a `Producer` and answers at once with an `EventStream` body: the two are joined by a
//!    bounded channel of encoded frames, so a slow reader can never make the node buffer without limit. The
//!    channel is bounded twice: in frames (the buffer) and in bytes ([`MAX_QUEUED_BYTES`]: every queued
//!    frame holds permits of a per-watcher semaphore until the body hands it to hyper), because one event
//!    can be megabytes and 256 of them would be gigabytes.
//! 3. The producer first sends a heartbeat naming the revision it starts after, then reads the backlog in
//!    batches (`read_batch`: at most 256 events or ~4 MiB, on a blocking thread, taking the store's read
//!    lock only for one batch), then waits for [`ClusterNode::wait_applied`] to report new revisions. While
//!    idle it sends a heartbeat every 15 s, so that clients and proxies can tell a quiet stream from a dead
//!    one.
//!
//! ## The guarantees, and how a stream ends
//! - Every revision is either sent or, with `collection`, skipped because it did not touch the collection;
//!   nothing is skipped silently. A heartbeat's `revision` is the last revision the stream has covered, so a
//!   filtered watch can resume after it too.
//! - A watcher that leaves the channel full (in frames or in bytes) for longer than the slow bound (5 s) is
//!   cut off: the stream ends with a `too_slow` error naming `resume_from`, the first revision *not*
//!   delivered. Frames already queued are delivered before that error (one slot of the channel is reserved
//!   for it), so resuming from it gives exactly the rest.
//! - A broken history (a missing or corrupt event) ends the stream with an error naming where to resume; it
//!   is never papered over.
//! - When the node shuts down, the API server ends open connections within its 2 s grace period; the
//!   producer notices the closed channel and stops. A client resumes from the last revision it saw + 1, on
//!   this node or another one: revisions are the same on every node of a cluster.
//!
//! `from` beyond the current revision + 1 is allowed: the stream waits for it. That is what a client needs
//! when it fails over to a node that is a little behind the one it was reading from.
//!
//! ## Test knobs
//! Read once per process from the environment: `TANDEM_WATCH_BUFFER` (frames queued per watcher, default
//! 256), `TANDEM_WATCH_SLOW_MS` (the slow bound, default 5000), `TANDEM_WATCH_HEARTBEAT_MS` (default
//! 15000), `TANDEM_WATCH_MAX` (watchers open at once on this node, default 256: one more is answered 503
//! `too_many_watchers`, so open streams cannot exhaust the node).

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{HeaderMap, Response, StatusCode};
use serde_json::json;
use tandem_cluster::node::ClusterNode;
use tandem_storage::{Event, Revision};
use tokio::sync::mpsc::error::{SendTimeoutError, TrySendError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::event_json;
use super::routes::Call;
use crate::http::{ApiError, Body, query_pairs};

/// At most this many events are read under one hold of the store's lock.
const BATCH_EVENTS: usize = 256;
/// ... and at most about this many bytes of documents.
const BATCH_BYTES: usize = 4 * 1024 * 1024;
/// At most this many bytes of frames wait between one watcher's producer and its connection.
pub const MAX_QUEUED_BYTES: usize = 16 * 1024 * 1024;
/// How often an idle producer looks at the store's revision even without a wake-up.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// The bounds of every watch on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchLimits {
    /// Frames queued between the producer and the connection.
    pub buffer: usize,
    /// How long the queue may stay full before the watcher is cut off.
    pub slow: Duration,
    /// How long a stream may stay silent before a heartbeat is sent.
    pub heartbeat: Duration,
    /// Watch streams open at once on this node.
    pub watchers: usize,
}

impl Default for WatchLimits {
    fn default() -> Self {
        WatchLimits {
            buffer: 256,
            slow: Duration::from_secs(5),
            heartbeat: Duration::from_secs(15),
            watchers: 256,
        }
    }
}

impl WatchLimits {
    /// The defaults, overridden by the `TANDEM_WATCH_*` test knobs.
    pub fn from_env() -> Self {
        let defaults = WatchLimits::default();
        let knob = |name: &str| -> Option<u64> {
            let text = std::env::var(name).ok()?;
            match text.trim().parse::<u64>() {
                Ok(value) if value > 0 => Some(value),
                _ => {
                    tracing::warn!(knob = name, value = %text, "ignoring a watch knob: not a number > 0");
                    None
                }
            }
        };
        WatchLimits {
            buffer: knob("TANDEM_WATCH_BUFFER").map_or(defaults.buffer, |v| v.min(1 << 20) as usize),
            slow: knob("TANDEM_WATCH_SLOW_MS").map_or(defaults.slow, Duration::from_millis),
            heartbeat: knob("TANDEM_WATCH_HEARTBEAT_MS").map_or(defaults.heartbeat, Duration::from_millis),
            watchers: knob("TANDEM_WATCH_MAX").map_or(defaults.watchers, |v| v.min(1 << 16) as usize),
        }
    }

    fn get() -> &'static WatchLimits {
        static LIMITS: OnceLock<WatchLimits> = OnceLock::new();
        LIMITS.get_or_init(WatchLimits::from_env)
    }
}

/// How frames are written on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON value per line (`application/x-ndjson`).
    Ndjson,
    /// Server-sent events (`text/event-stream`): `id: REV`, `event: change`, `data: JSON`.
    Sse,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Ndjson => "application/x-ndjson",
            Format::Sse => "text/event-stream",
        }
    }

    fn event(self, event: &Event) -> Bytes {
        let json = serde_json::to_string(&event_json(event)).unwrap_or_else(|_| "{}".into());
        match self {
            Format::Ndjson => Bytes::from(json + "\n"),
            Format::Sse => Bytes::from(format!("id: {}\nevent: change\ndata: {json}\n\n", event.revision)),
        }
    }

    /// "Still here; every revision up to `covered` has been dealt with."
    fn heartbeat(self, covered: Revision) -> Bytes {
        match self {
            Format::Ndjson => Bytes::from(format!("{{\"heartbeat\":true,\"revision\":{covered}}}\n")),
            Format::Sse => Bytes::from(format!(": heartbeat {covered}\n\n")),
        }
    }

    /// The last frame of a stream the node ends: an [`ApiError`] and where to resume.
    fn error(self, error: &ApiError, resume_from: Revision) -> Bytes {
        let json = json!({"error": error, "resume_from": resume_from}).to_string();
        match self {
            Format::Ndjson => Bytes::from(json + "\n"),
            Format::Sse => Bytes::from(format!("event: error\ndata: {json}\n\n")),
        }
    }
}

/// A watch request's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchRequest {
    /// The first revision to send; `None`: the one after the current revision.
    pub from: Option<Revision>,
    pub format: Format,
    /// Only events that touched this collection.
    pub collection: Option<String>,
}

impl WatchRequest {
    /// Parses the query and the `Accept` and `Last-Event-ID` headers.
    pub fn parse(query: &[(String, String)], headers: &HeaderMap) -> Result<WatchRequest, ApiError> {
        let mut request = WatchRequest { from: None, format: Format::Ndjson, collection: None };
        let mut format = None;
        for (index, (key, value)) in query.iter().enumerate() {
            if query[..index].iter().any(|(earlier, _)| earlier == key) {
                return Err(ApiError::bad_request(format!("query parameter '{key}' is given twice")));
            }
            match key.as_str() {
                "from" => request.from = Some(parse_revision("from", value)?),
                "format" => {
                    format = Some(match value.as_str() {
                        "ndjson" => Format::Ndjson,
                        "sse" => Format::Sse,
                        other => {
                            return Err(ApiError::bad_request(format!(
                                "format must be 'ndjson' or 'sse', not '{other}'"
                            )));
                        }
                    })
                }
                "collection" if value.is_empty() => {
                    return Err(ApiError::bad_request("collection must not be empty")
                        .with_hint("leave it out to watch every collection"));
                }
                "collection" => request.collection = Some(value.clone()),
                other => {
                    return Err(ApiError::bad_request(format!("unknown query parameter '{other}'"))
                        .with_hint("GET /v1/watch accepts from, format and collection"));
                }
            }
        }
        let wants_sse = headers
            .get_all(hyper::header::ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|value| value.contains("text/event-stream"));
        request.format = format.unwrap_or(if wants_sse { Format::Sse } else { Format::Ndjson });
        if let Some(value) = headers.get("last-event-id") {
            let text = value.to_str().unwrap_or("").trim();
            let seen: u64 = text.parse().map_err(|_| {
                ApiError::bad_request(format!("the Last-Event-ID header must be a revision, not '{text}'"))
            })?;
            let next = seen
                .checked_add(1)
                .ok_or_else(|| ApiError::bad_request("the Last-Event-ID header is out of range"))?;
            request.from = Some(Revision(next));
        }
        Ok(request)
    }
}

fn parse_revision(key: &str, text: &str) -> Result<Revision, ApiError> {
    match text.parse::<u64>() {
        Ok(0) => Err(ApiError::bad_request(format!("{key} must be 1 or more: revisions start at 1"))),
        Ok(revision) => Ok(Revision(revision)),
        Err(_) => Err(ApiError::bad_request(format!("{key} must be a revision number, not '{text}'"))
            .with_hint("e.g. from=1 for the whole history; leave it out for new events only")),
    }
}

/// `GET /v1/watch?from=REV&format=ndjson|sse&collection=C`.
pub async fn watch(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let Call { state, request, .. } = call;
    let query = query_pairs(request.uri().query());
    let watch = WatchRequest::parse(&query, request.headers())?;
    let limits = *WatchLimits::get();
    let Ok(slot) = watcher_slots(limits.watchers).try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_watchers",
            format!("this node already serves {} watch streams", limits.watchers),
        )
        .with_hint("retry in a few seconds, or watch another node of the cluster"));
    };
    let from = watch.from.unwrap_or_else(|| state.node.revision().next());
    // A stream never skips an event: one that would start in forgotten history is refused (410).
    let base = state.node.read_store()?.base();
    if from <= base {
        return Err(super::storage_error(tandem_storage::Error::Forgotten { revision: from, base })
            .with_hint(format!("watch from revision {} on (`--from {}`)", base.next(), base.next())));
    }
    // One slot more than the buffer: it is reserved for the frame that ends the stream.
    let (frames, receiver) = mpsc::channel(limits.buffer + 1);
    let producer = Producer {
        node: state.node.clone(),
        format: watch.format,
        collection: watch.collection,
        limits,
        frames,
        queued_bytes: Arc::new(Semaphore::new(MAX_QUEUED_BYTES)),
        last_sent: Instant::now(),
    };
    tokio::spawn(producer.run(from));

    let mut response = Response::new(EventStream { frames: receiver, _slot: slot }.boxed());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(watch.format.content_type()));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx-style proxies not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// One frame in the channel, holding its share of the watcher's byte budget until it is handed to hyper
/// (heartbeats and the last frame are small and hold none).
#[derive(Debug)]
struct Queued {
    bytes: Bytes,
    _budget: Option<OwnedSemaphorePermit>,
}

impl From<Bytes> for Queued {
    fn from(bytes: Bytes) -> Self {
        Queued { bytes, _budget: None }
    }
}

/// The response body: the frames the producer queues, until it drops its end of the channel.
#[derive(Debug)]
struct EventStream {
    frames: mpsc::Receiver<Queued>,
    /// This stream's place among the node's watchers, given back when the client goes.
    _slot: OwnedSemaphorePermit,
}

/// The node's watcher slots (one set per process).
fn watcher_slots(count: usize) -> Arc<Semaphore> {
    static SLOTS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    SLOTS.get_or_init(|| Arc::new(Semaphore::new(count))).clone()
}

impl hyper::body::Body for EventStream {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.frames.poll_recv(cx).map(|frame| frame.map(|queued| Ok(Frame::data(queued.bytes))))
    }
}

/// Why a stream stopped.
#[derive(Debug)]
enum Ending {
    /// The connection is gone (the client left, or the server is shutting down): nothing more to say.
    ClientGone,
    /// The node ends the stream with this last frame.
    Error(Bytes),
}

/// Reads events from the store and queues them for one watcher.
#[derive(Debug)]
struct Producer {
    node: Arc<ClusterNode>,
    format: Format,
    collection: Option<String>,
    limits: WatchLimits,
    frames: mpsc::Sender<Queued>,
    /// [`MAX_QUEUED_BYTES`] permits: a queued frame holds as many as it has bytes.
    queued_bytes: Arc<Semaphore>,
    last_sent: Instant,
}

impl Producer {
    async fn run(mut self, from: Revision) {
        let Ok(last_frame) = self.frames.clone().reserve_owned().await else { return };
        match self.stream(from).await {
            Ending::ClientGone => {}
            Ending::Error(frame) => {
                last_frame.send(frame.into());
            }
        }
    }

    /// Sends everything from `next` on, forever; returns only when the stream ends.
    async fn stream(&mut self, mut next: Revision) -> Ending {
        let covered = Revision(next.0.saturating_sub(1));
        if let Err(ending) = self.send(self.format.heartbeat(covered), next).await {
            return ending;
        }
        loop {
            if self.frames.is_closed() {
                return Ending::ClientGone;
            }
            let current = self.node.revision();
            if next <= current {
                let node = self.node.clone();
                let (format, collection) = (self.format, self.collection.clone());
                let batch = tokio::task::spawn_blocking(move || {
                    read_batch(&node, next, current, format, collection.as_deref())
                })
                .await
                .unwrap_or_else(|e| Err(format!("reading the history failed: {e}")));
                let batch = match batch {
                    Ok(batch) => batch,
                    Err(message) => {
                        tracing::warn!(resume_from = %next, %message, "a watch ends: unreadable history");
                        let error =
                            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "history_unavailable", message)
                                .with_hint(format!("resume with from={next}, on this node or another one"));
                        return Ending::Error(self.format.error(&error, next));
                    }
                };
                for (revision, frame) in batch {
                    if let Some(frame) = frame
                        && let Err(ending) = self.send(frame, revision).await
                    {
                        return ending;
                    }
                    next = revision.next();
                }
                if let Err(ending) = self.maybe_heartbeat(next) {
                    return ending;
                }
                continue;
            }
            let until_heartbeat = self.limits.heartbeat.saturating_sub(self.last_sent.elapsed());
            tokio::select! {
                _ = self.frames.closed() => return Ending::ClientGone,
                _ = self.node.wait_applied(next, until_heartbeat.min(IDLE_POLL)) => {}
            }
            if let Err(ending) = self.maybe_heartbeat(next) {
                return ending;
            }
        }
    }

    /// Queues the frame of `revision`, waiting at most the slow bound for room (in bytes, then in frames).
    async fn send(&mut self, frame: Bytes, revision: Revision) -> Result<(), Ending> {
        let deadline = tokio::time::Instant::now() + self.limits.slow;
        // A frame larger than the whole budget takes all of it: it then waits for an empty queue.
        let cost = frame.len().clamp(1, MAX_QUEUED_BYTES) as u32;
        let budget = tokio::select! {
            _ = self.frames.closed() => return Err(Ending::ClientGone),
            budget = tokio::time::timeout_at(deadline, self.queued_bytes.clone().acquire_many_owned(cost)) => {
                match budget {
                    Ok(Ok(permit)) => permit,
                    // The semaphore is never closed; a closed one could only mean the watch is over.
                    Ok(Err(_)) => return Err(Ending::ClientGone),
                    Err(_) => return Err(self.too_slow(revision)),
                }
            }
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match self.frames.send_timeout(Queued { bytes: frame, _budget: Some(budget) }, left).await {
            Ok(()) => {
                self.last_sent = Instant::now();
                Ok(())
            }
            Err(SendTimeoutError::Closed(_)) => Err(Ending::ClientGone),
            Err(SendTimeoutError::Timeout(_)) => Err(self.too_slow(revision)),
        }
    }

    /// The end of a watcher that did not keep up: the first revision not delivered is `revision`.
    fn too_slow(&self, revision: Revision) -> Ending {
        tracing::info!(resume_from = %revision, "a watch is cut off: the watcher is too slow");
        let error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_slow",
            format!(
                "the watcher did not keep up: its queue of events stayed full for {} ms",
                self.limits.slow.as_millis()
            ),
        )
        .with_hint(format!("resume with from={revision}"));
        Ending::Error(self.format.error(&error, revision))
    }

    /// Sends a heartbeat if the stream has been silent for the heartbeat interval; a full queue needs none.
    fn maybe_heartbeat(&mut self, next: Revision) -> Result<(), Ending> {
        if self.last_sent.elapsed() < self.limits.heartbeat {
            return Ok(());
        }
        self.last_sent = Instant::now();
        match self.frames.try_send(self.format.heartbeat(Revision(next.0.saturating_sub(1))).into()) {
            Ok(()) | Err(TrySendError::Full(_)) => Ok(()),
            Err(TrySendError::Closed(_)) => Err(Ending::ClientGone),
        }
    }
}

/// Reads events `from..=to` (at most one batch) and encodes those the watcher wants: one entry per revision,
/// `None` for an event the collection filter skips. Checks that revisions follow each other without a gap.
fn read_batch(
    node: &ClusterNode,
    from: Revision,
    to: Revision,
    format: Format,
    collection: Option<&str>,
) -> Result<Vec<(Revision, Option<Bytes>)>, String> {
    let last = Revision(to.0.min(from.0.saturating_add(BATCH_EVENTS as u64 - 1)));
    let mut batch = Vec::new();
    let mut bytes = 0usize;
    let mut expected = from;
    {
        let store = node.read_store().map_err(|e| e.to_string())?;
        if from <= store.base() {
            // The history was forgotten past this watcher's position while it streamed.
            return Err(tandem_storage::Error::Forgotten { revision: from, base: store.base() }.to_string());
        }
        for event in store.events(from, last) {
            let event = event.map_err(|e| format!("event {expected} could not be read: {e}"))?;
            if event.revision != expected {
                return Err(format!("event {expected} is missing from the history"));
            }
            expected = expected.next();
            bytes += event
                .changes
                .iter()
                .map(|change| change.key.id.len() + change.after.as_deref().map_or(0, str::len))
                .sum::<usize>();
            batch.push(event);
            if bytes >= BATCH_BYTES {
                break;
            }
        }
    }
    if batch.is_empty() {
        return Err(format!("event {from} is missing from the history"));
    }
    Ok(batch
        .into_iter()
        .map(|event| {
            let wanted = collection
                .is_none_or(|collection| event.changes.iter().any(|c| c.key.collection == collection));
            (event.revision, wanted.then(|| format.event(&event)))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str, headers: &[(&str, &str)]) -> Result<WatchRequest, ApiError> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        WatchRequest::parse(&query_pairs(Some(query)), &map)
    }

    #[test]
    fn requests_parse_and_bad_ones_are_refused() {
        let request = parse("from=5&collection=terminals", &[]).unwrap();
        assert_eq!(request.from, Some(Revision(5)));
        assert_eq!(request.format, Format::Ndjson);
        assert_eq!(request.collection.as_deref(), Some("terminals"));
        assert_eq!(parse("", &[("accept", "text/event-stream")]).unwrap().format, Format::Sse);
        assert_eq!(
            parse("format=ndjson", &[("accept", "text/event-stream")]).unwrap().format,
            Format::Ndjson
        );
        // Last-Event-ID wins over from: it is what a reconnecting EventSource sends.
        assert_eq!(parse("from=1&format=sse", &[("last-event-id", "41")]).unwrap().from, Some(Revision(42)));
        for bad in ["from=0", "from=x", "from=-1", "format=xml", "collection=", "form=1", "from=1&from=2"] {
            let error = parse(bad, &[]).unwrap_err();
            assert_eq!((error.status, error.code.as_str()), (400, "bad_request"), "{bad}");
        }
        assert_eq!(parse("", &[("last-event-id", "seven")]).unwrap_err().status, 400);
        assert_eq!(parse("", &[("last-event-id", &u64::MAX.to_string())]).unwrap_err().status, 400);
    }

    #[test]
    fn frames_have_the_documented_shapes() {
        assert_eq!(&Format::Ndjson.heartbeat(Revision(7))[..], b"{\"heartbeat\":true,\"revision\":7}\n");
        assert_eq!(&Format::Sse.heartbeat(Revision(7))[..], b": heartbeat 7\n\n");
        let error =
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_slow", "slow").with_hint("resume with from=9");
        let line = Format::Ndjson.error(&error, Revision(9));
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["error"]["code"], "too_slow");
        assert_eq!(value["error"]["hint"], "resume with from=9");
        assert_eq!(value["resume_from"], 9);
        assert!(Format::Sse.error(&error, Revision(9)).starts_with(b"event: error\ndata: {"));
    }
}

//! A replication stream's own connection to its follower, driven by the task that sends on it.
//!
//! ## Why
//! A pooled hyper client connection ([`hyper_util::client::legacy::Client`]) is a task of its own: the
//! caller hands its request to that task over a channel, and the task hands the answer back. Each of those
//! hand-overs wakes a thread, and on a busy 2-core machine a wake-up waits tens of microseconds before its
//! thread runs (`perf sched latency`: 38–95 µs per hand-over for a node's workers, docs/cluster.md). A put
//! crosses the leader→follower AppendEntries exchange on its critical path, so two hand-overs per exchange is
//! a measurable share of the 0.7 ms a lone client waits.
//!
//! openraft 0.9 runs one replication task per follower, and that task sends one AppendEntries at a time, so
//! it can own a connection outright: [`StreamConnection`] is a hyper HTTP/1.1 connection
//! ([`hyper::client::conn::http1`]) whose I/O is polled by the replication task itself, together with the
//! exchange, in [`StreamConnection::exchange`]. Nothing else reads or writes it, and between exchanges it is
//! not polled at all (nothing arrives on it unasked: HTTP/1.1 answers only requests). A client's first
//! AppendEntries still goes through the pool: openraft's leadership checks for linearizable reads make a new
//! client for a single AppendEntries each, and a connection of its own would cost every read a TCP (and TLS)
//! handshake and a socket in TIME_WAIT.
//!
//! ## Its life
//! [`StreamSlot`] holds a stream's connection between exchanges. An exchange takes it out; one that ends
//! with an answer (any status) puts it back; one that fails or is cancelled drops it, and the next exchange
//! connects anew.
//! A connection idle for longer than [`super::POOL_IDLE_TIMEOUT`] is dropped before it is used, like the
//! pool's, so that it is not one the server is closing ([`super::IDLE_TIMEOUT`]); and an exchange that fails
//! on a reused connection before any answer came (the server closed it meanwhile: it restarted, or shut
//! down idle connections) is tried once more on a new one. AppendEntries may arrive twice: Raft recognises a
//! repeated request by its term and log position.
//!
//! An exchange still running when its ttl passes finishes in the background (`client::Late::Finish`, for the
//! same reason as there: a new connection costs handshakes that a slow link may not fit in the next ttl)
//! and puts its connection back if it ends well; meanwhile the slot is empty, and exchanges that find it
//! so go through the shared pool.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::header::HeaderValue;
use hyper::http::uri::Uri;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

use super::{MAX_BODY_BYTES, POOL_IDLE_TIMEOUT, REFUSAL_HEADER};

/// What an exchange brought back: the status, the refusal header if any, and the body.
pub(super) type Answer = (hyper::StatusCode, Option<HeaderValue>, Bytes);

/// An error while connecting (TCP, TLS), boxed as the connector gives it.
pub(super) type ConnectError = Box<dyn std::error::Error + Send + Sync>;

/// Why an exchange on a [`StreamConnection`] failed.
#[derive(Debug)]
pub(super) enum StreamError {
    /// No connection could be made: TCP refused or timed out, TLS failed.
    Connect(ConnectError),
    /// The connection broke, or the answer was not HTTP.
    Exchange(hyper::Error),
    /// The connection ended before the answer did.
    Closed,
    /// The answer's body could not be read (too large, cut).
    Body(String),
}

/// Reads `response` whole (at most [`MAX_BODY_BYTES`]): its status, refusal header and body; else why the
/// body could not be read. Shared by the stream's connection and the pool.
pub(super) async fn read_answer(response: hyper::Response<Incoming>) -> Result<Answer, String> {
    let (parts, body) = response.into_parts();
    let bytes = Limited::new(body, MAX_BODY_BYTES).collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((parts.status, parts.headers.get(REFUSAL_HEADER).cloned(), bytes))
}

/// One HTTP/1.1 connection to a follower, owned by its replication stream (see the module documentation).
pub(super) struct StreamConnection {
    sender: http1::SendRequest<Full<Bytes>>,
    /// The connection's I/O: polled only inside [`StreamConnection::exchange`].
    io: http1::Connection<MaybeHttpsStream<TokioIo<TcpStream>>, Full<Bytes>>,
    last_used: Instant,
}

impl StreamConnection {
    /// Connects to `uri`'s authority with `connector` (TCP, and TLS for `https`).
    pub(super) async fn open(
        connector: &HttpsConnector<HttpConnector>,
        uri: &Uri,
    ) -> Result<Box<Self>, StreamError> {
        let mut connector = connector.clone();
        poll_fn(|cx| connector.poll_ready(cx)).await.map_err(StreamError::Connect)?;
        let stream = connector.call(uri.clone()).await.map_err(StreamError::Connect)?;
        let (sender, io) = http1::handshake(stream).await.map_err(StreamError::Exchange)?;
        Ok(Box::new(StreamConnection { sender, io, last_used: Instant::now() }))
    }

    /// Sends `request` and reads the whole answer, driving the connection's I/O on the calling task.
    pub(super) async fn exchange(
        &mut self,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<Answer, StreamError> {
        let StreamConnection { sender, io, last_used } = self;
        let answer = async {
            let response = sender.send_request(request).await.map_err(StreamError::Exchange)?;
            read_answer(response).await.map_err(StreamError::Body)
        };
        let mut answer = std::pin::pin!(answer);
        let result = poll_fn(|cx| {
            if let Poll::Ready(result) = answer.as_mut().poll(cx) {
                return Poll::Ready(result);
            }
            match Pin::new(&mut *io).poll(cx) {
                Poll::Pending => Poll::Pending,
                // The connection ended (`Connection: close`, a server shutting down): the answer may have been
                // handed over in that same poll.
                Poll::Ready(Ok(())) => match answer.as_mut().poll(cx) {
                    Poll::Ready(result) => Poll::Ready(result),
                    Poll::Pending => Poll::Ready(Err(StreamError::Closed)),
                },
                Poll::Ready(Err(e)) => Poll::Ready(Err(StreamError::Exchange(e))),
            }
        })
        .await;
        *last_used = Instant::now();
        result
    }

    /// Whether it has been idle so long that the server may be closing it.
    fn stale(&self) -> bool {
        self.last_used.elapsed() >= POOL_IDLE_TIMEOUT || self.sender.is_closed()
    }
}

/// Where a replication stream keeps its [`StreamConnection`] between exchanges. Cheap to clone: clones share
/// the connection.
#[derive(Clone, Default)]
pub(super) struct StreamSlot {
    state: Arc<Mutex<SlotState>>,
}

impl std::fmt::Debug for StreamSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSlot").finish_non_exhaustive()
    }
}

#[derive(Default)]
enum SlotState {
    /// No connection yet, or the last one failed: the next exchange connects.
    #[default]
    Empty,
    /// Kept between exchanges.
    Idle(Box<StreamConnection>),
    /// Taken by an exchange (one at a time per stream, or one finishing late in the background).
    Busy,
}

/// What [`StreamSlot::take`] found.
pub(super) enum Taken {
    /// A connection used before: an exchange that fails on it before any answer may be retried on a new one.
    Reused(Box<StreamConnection>, Lease),
    /// None: connect a new one, and give it back through the lease.
    Connect(Lease),
    /// Another exchange holds it (one finishing late): use the pool.
    Busy,
}

impl StreamSlot {
    /// Takes the connection for one exchange.
    pub(super) fn take(&self) -> Taken {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let lease = || Lease { slot: Some(self.clone()) };
        match std::mem::replace(&mut *state, SlotState::Busy) {
            SlotState::Idle(connection) if !connection.stale() => Taken::Reused(connection, lease()),
            SlotState::Idle(_) | SlotState::Empty => Taken::Connect(lease()),
            SlotState::Busy => Taken::Busy,
        }
    }

    fn set(&self, new: SlotState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = new;
    }
}

/// An exchange's hold on its stream's slot: [`Lease::give_back`] ends it; dropped without that (the exchange
/// was cancelled), it empties the slot, since the connection may be mid-exchange.
pub(super) struct Lease {
    slot: Option<StreamSlot>,
}

impl Lease {
    /// Ends the exchange: `Some` keeps the connection for the next one, `None` (it failed) empties the slot.
    pub(super) fn give_back(mut self, connection: Option<Box<StreamConnection>>) {
        if let Some(slot) = self.slot.take() {
            slot.set(connection.map_or(SlotState::Empty, SlotState::Idle));
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.set(SlotState::Empty);
        }
    }
}

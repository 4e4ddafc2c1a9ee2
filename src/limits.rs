//! Limits on the node's HTTP listeners (admin API, HTTP boot): who may hold a connection, and for how long
//! a connection may stall. `docs/security.md` says who can reach which port and which limit holds them.
//!
//! One [`HttpLimits`] per listener (`[limits.api]` and `[limits.boot]` in the config file) sets:
//!
//! | limit | what it stops | enforced by |
//! |---|---|---|
//! | `max_connections`, `max_connections_per_source` | one host (or many) holding every descriptor | [`admit`]: a [`ConnectionGate`] asked before anything is read; over the cap the socket gets a `503` and is closed |
//! | `header_read_timeout` | a client that sends half a request line (or connects and sends nothing, or never finishes a TLS handshake) | the connection watchdog of [`serve_connection`]: a head must be complete this long after the connection was accepted or the next request's first byte arrived; a TLS handshake must be complete this long after the accept (and the head's own time starts then) |
//! | `idle_timeout` | a kept-alive connection parked with no request | the same watchdog: no request in progress and no byte of a new one for this long closes the connection |
//! | `body_read_timeout` | a client that announces a body and sends it slowly or never | [`crate::http::read_body`] (the whole body of a bounded request, `408` after it) and streamed uploads (no gap between two pieces longer than it) |
//! | `send_stall_timeout` | a client that stops reading a response (a backup, a firmware image, a watch) | [`ConnectionIo`]: a write that cannot make progress for that long fails the connection |
//!
//! Together the header and body timeouts bound how long a whole request may take to arrive: a request with a
//! bounded body is read within `header_read_timeout + body_read_timeout`, or its connection is closed. The
//! peer listener has the same shape with fixed timeouts (`tandem_cluster::network`) and its own gate.
//!
//! ## The connection watchdog
//!
//! hyper has one header timer, which starts when it begins waiting for a head: after a response, that is
//! idle time and head time together, so the two limits could not differ. [`serve_connection`] keeps its own
//! account instead ([`Activity`]): the connection is *waiting* (kept alive, no request), *receiving a head*
//! (since accept, or since a byte arrived while waiting: [`ConnectionIo`] reports reads), or *answering*
//! (from the handler's call until its response body is dropped: [`TrackedBody`]). A task beside the
//! connection, woken by every change of phase, closes it when the phase has lasted longer than its limit; answering has none (a watch stream
//! lasts hours), the send-stall timeout covers it. hyper's own header timer stays on as a backstop at
//! `header_read_timeout + idle_timeout`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tandem_cluster::connection_gate::{ConnectionGate, ConnectionPermit};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

/// The limits of one HTTP listener (see the module docs for what each stops).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// The most connections served at once.
    pub max_connections: usize,
    /// The most connections served at once from one IP address.
    pub max_connections_per_source: usize,
    /// How long a request head may take to arrive: from a new connection's accept, or from the first byte of
    /// the next request on a kept-alive connection, to the head's end.
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may wait, with no request in progress, for the next request to begin.
    pub idle_timeout: Duration,
    /// How long a request body may take to arrive (bounded bodies: the whole body; streamed uploads: the
    /// longest gap between two pieces).
    pub body_read_timeout: Duration,
    /// How long a response may wait for the client to take any byte before the connection is closed.
    pub send_stall_timeout: Duration,
}

impl HttpLimits {
    /// The admin API's defaults: operators and scripts, a few connections each.
    pub const API_DEFAULTS: HttpLimits = HttpLimits {
        max_connections: 256,
        max_connections_per_source: 32,
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        body_read_timeout: Duration::from_secs(30),
        send_stall_timeout: Duration::from_secs(60),
    };

    /// The HTTP boot server's defaults: many terminals, one or two connections each; 64 per address leaves room
    /// for a few dozen terminals behind one NAT address while one host still cannot take the listener.
    pub const BOOT_DEFAULTS: HttpLimits = HttpLimits {
        max_connections: 1024,
        max_connections_per_source: 64,
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
        body_read_timeout: Duration::from_secs(10),
        send_stall_timeout: Duration::from_secs(60),
    };

    /// A gate enforcing this listener's connection caps.
    pub fn gate(&self) -> ConnectionGate {
        ConnectionGate::new(self.max_connections, self.max_connections_per_source)
    }

    /// Checks that every limit is usable, naming the config table (`what`, e.g. `[limits.api]`).
    pub fn validate(&self, what: &str) -> Result<(), String> {
        if self.max_connections == 0 || self.max_connections_per_source == 0 {
            return Err(format!("{what} max_connections and max_connections_per_source must be at least 1"));
        }
        if self.max_connections_per_source > self.max_connections {
            return Err(format!("{what} max_connections_per_source must not exceed max_connections"));
        }
        for (name, value) in [
            ("header_read_timeout", self.header_read_timeout),
            ("idle_timeout", self.idle_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("send_stall_timeout", self.send_stall_timeout),
        ] {
            if value < Duration::from_secs(1) {
                return Err(format!("{what} {name} must be at least 1 second"));
            }
        }
        Ok(())
    }
}

/// Every limit of a node's listeners: the `[limits]` table of the config file, with these defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeLimits {
    /// `[limits.api]`.
    pub api: HttpLimits,
    /// `[limits.api] max_concurrent_backups`: `GET /v1/backup` requests served at once (more get `503`).
    pub max_concurrent_backups: usize,
    /// `[limits.api] abandoned_upload_after`: a blob upload that makes no progress for this long is aborted by
    /// the leader (`tandem_cluster::upload_reaper`).
    pub abandoned_upload_after: std::time::Duration,
    /// `[limits.boot]`.
    pub boot: HttpLimits,
    /// `[limits.peer] max_connections`.
    pub peer_max_connections: usize,
    /// `[limits.peer] max_connections_per_source`.
    pub peer_max_connections_per_source: usize,
    /// `[limits.tftp]`.
    pub tftp: TftpLimits,
}

impl Default for NodeLimits {
    fn default() -> Self {
        NodeLimits {
            api: HttpLimits::API_DEFAULTS,
            max_concurrent_backups: 2,
            abandoned_upload_after: tandem_cluster::upload_reaper::DEFAULT_ABANDON_AFTER,
            boot: HttpLimits::BOOT_DEFAULTS,
            peer_max_connections: tandem_cluster::network::DEFAULT_MAX_PEER_CONNECTIONS,
            peer_max_connections_per_source: tandem_cluster::network::DEFAULT_MAX_PEER_CONNECTIONS_PER_SOURCE,
            tftp: TftpLimits::default(),
        }
    }
}

impl NodeLimits {
    /// Checks every limit, naming its table.
    pub fn validate(&self) -> Result<(), String> {
        self.api.validate("[limits.api]")?;
        self.boot.validate("[limits.boot]")?;
        if self.max_concurrent_backups == 0 {
            return Err("[limits.api] max_concurrent_backups must be at least 1".into());
        }
        if self.peer_max_connections == 0 || self.peer_max_connections_per_source == 0 {
            return Err(
                "[limits.peer] max_connections and max_connections_per_source must be at least 1".into()
            );
        }
        self.tftp.validate()
    }

    /// The peer listener's connection gate.
    pub fn peer_gate(&self) -> ConnectionGate {
        ConnectionGate::new(self.peer_max_connections, self.peer_max_connections_per_source)
    }
}

/// The TFTP server's limits (`[limits.tftp]`); UDP has no connections, so these bound transfers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TftpLimits {
    /// Transfers served at once (further requests get ERROR 0 "server busy").
    pub max_transfers: usize,
    /// Transfers served at once for one IP address.
    pub max_transfers_per_source: usize,
    /// The largest retransmission interval a client's `timeout` option may ask for (RFC 2349 lets the server
    /// lower it: the OACK then carries this value).
    pub max_timeout: Duration,
    /// The longest a transfer may run, whatever its size or its client's pace.
    pub max_transfer_time: Duration,
}

impl Default for TftpLimits {
    fn default() -> Self {
        TftpLimits {
            max_transfers: 256,
            max_transfers_per_source: 4,
            max_timeout: Duration::from_secs(5),
            max_transfer_time: Duration::from_secs(600),
        }
    }
}

impl TftpLimits {
    fn validate(&self) -> Result<(), String> {
        if self.max_transfers == 0 || self.max_transfers_per_source == 0 {
            return Err("[limits.tftp] max_transfers and max_transfers_per_source must be at least 1".into());
        }
        if self.max_timeout < Duration::from_secs(1) || self.max_timeout > Duration::from_secs(255) {
            return Err("[limits.tftp] max_timeout must be 1 to 255 seconds (RFC 2349)".into());
        }
        if self.max_transfer_time < Duration::from_secs(1) {
            return Err("[limits.tftp] max_transfer_time must be at least 1 second".into());
        }
        Ok(())
    }
}

/// Refused connections being closed gracefully at once, at most (each for at most [`LINGER`]); beyond it a
/// refused connection is closed at once, which may reset it before the client reads the `503`.
const MAX_LINGERING: usize = 64;
/// How long a refused connection may linger: the time for its client to read the `503`.
const LINGER: Duration = Duration::from_secs(1);
static LINGERING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_LINGERING);

/// Admits an accepted connection through `gate`, or refuses it: a short `503` is written if the socket takes
/// it at once (never waiting on the client), then the socket is closed. `what` names the listener in logs.
///
/// Closing a socket whose client has sent a request we have not read makes the kernel answer with a reset,
/// which a client may see before the `503`. So a refused connection lingers briefly in a task of its own: the
/// write side is shut down, what the client sends is read and dropped until it closes or [`LINGER`] passes.
/// At most [`MAX_LINGERING`] linger at once, so a flood costs no more than that many descriptors for a second.
pub fn admit(
    gate: &ConnectionGate,
    stream: TcpStream,
    remote: SocketAddr,
    what: &str,
) -> Option<(TcpStream, ConnectionPermit)> {
    match gate.admit(remote.ip()) {
        Ok(permit) => Some((stream, permit)),
        Err(refusal) => {
            tracing::debug!(%remote, "{what}: connection refused: {refusal}");
            let message = refusal.to_string();
            let answer = format!(
                "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: text/plain\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{message}",
                message.len()
            );
            let _ = stream.try_write(answer.as_bytes());
            if let Ok(place) = LINGERING.try_acquire() {
                place.forget();
                tokio::spawn(linger(stream));
            }
            None
        }
    }
}

/// Shuts down the write side and drains what the client still sends, for at most [`LINGER`].
async fn linger(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.shutdown().await;
    let drain = async {
        let mut sink = [0u8; 4096];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
    LINGERING.add_permits(1);
}

/// hyper's read and write buffer bound per connection ([`http1::Builder::max_buf_size`]). Its default
/// (~400 KiB) let hyper queue three or four 128 KiB chunks of a download ahead of the socket, on top of the
/// one [`crate::node::chunked_read::ChunkedRead`] reads ahead: ~0.45 MiB per concurrent download, 274 MiB at
/// the node's peak in the 500-terminal boot storm (docs/boot.md). With 64 KiB, hyper takes the next chunk only
/// once the socket has taken all but 64 KiB of the queued ones. It also bounds a request head (431 beyond).
pub const MAX_BUF_SIZE: usize = 64 * 1024;

/// An HTTP/1.1 connection builder with keep-alive on and hyper's header timer as a backstop to the watchdog of
/// [`serve_connection`] (hyper ignores a header timeout without a timer), buffers bounded by [`MAX_BUF_SIZE`].
fn http1_builder(limits: &HttpLimits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    let backstop = limits.header_read_timeout + limits.idle_timeout;
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(backstop)
        .keep_alive(true)
        .max_buf_size(MAX_BUF_SIZE);
    builder
}

/// Serves one admitted HTTP/1.1 connection with `handler` within `limits` (header, idle and send-stall
/// timeouts: see the module docs) until the client closes it, a limit closes it, or `shutdown`; then requests
/// in flight get `grace` to finish. `what` names the listener in logs.
///
/// With `tls`, the connection first completes a TLS handshake, within `header_read_timeout` (a handshake is
/// part of getting the first request head), still holding its place in the listener's connection caps; a
/// failed or slow handshake closes it before any HTTP is read.
pub async fn serve_connection<F, Fut, B>(
    stream: TcpStream,
    remote: SocketAddr,
    limits: HttpLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: F,
    stop: (CancellationToken, Duration),
    what: &'static str,
) where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = tls else {
        return serve_io(stream, remote, limits, handler, stop, what).await;
    };
    let handshake = tandem_cluster::tls::accept(&acceptor, stream, limits.header_read_timeout);
    let stream = tokio::select! {
        stream = handshake => stream,
        () = stop.0.cancelled() => return,
    };
    match stream {
        Ok(stream) => serve_io(stream, remote, limits, handler, stop, what).await,
        Err(error) => tracing::debug!(%remote, "{what}: closing the connection: {error}"),
    }
}

/// [`serve_connection`] once the connection is plain HTTP (TCP, or the inside of TLS).
async fn serve_io<S, F, Fut, B>(
    stream: S,
    remote: SocketAddr,
    limits: HttpLimits,
    handler: F,
    (shutdown, grace): (CancellationToken, Duration),
    what: &'static str,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Arc::new(Activity::new());
    let io = ConnectionIo::new(stream, limits.send_stall_timeout, activity.clone());
    let tracked = activity.clone();
    let service = service_fn(move |request| {
        tracked.request_started();
        let response = handler(request);
        let end = ResponseEnd(tracked.clone());
        async move { Ok::<_, Infallible>(response.await.map(|body| TrackedBody { inner: body, _end: end })) }
    });
    let connection = http1_builder(&limits).serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    let result = loop {
        // Answering has no deadline: wait for the phase to change.
        let wake = activity.deadline(&limits).unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            result = connection.as_mut() => break result,
            () = activity.changed.notified() => {}
            () = shutdown.cancelled() => {
                connection.as_mut().graceful_shutdown();
                break tokio::time::timeout(grace, connection.as_mut()).await.unwrap_or(Ok(()));
            }
            () = tokio::time::sleep_until(wake.into()) => {
                if let Some(expired) = activity.expired(&limits) {
                    tracing::debug!(%remote, "{what}: closing the connection: {expired}");
                    break Ok(());
                }
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(%remote, %error, "{what}: connection ended with an error");
    }
}

/// Where a connection is in its request cycle (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Kept alive with no request, since then.
    Waiting(Instant),
    /// A request head is arriving (or a new connection has not sent one yet), since then.
    ReceivingHead(Instant),
    /// This many requests are being answered (their handler runs or their body is being sent).
    Answering(usize),
}

/// The phase of one connection, shared by its IO, its service and its watchdog.
#[derive(Debug)]
pub struct Activity {
    phase: Mutex<Phase>,
    /// Wakes the watchdog when the phase changes (a stored permit if it is not waiting yet).
    changed: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            phase: Mutex::new(Phase::ReceivingHead(Instant::now())),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Phase> {
        // One small value, replaced whole: a panic elsewhere cannot leave it torn.
        self.phase.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn bytes_received(&self) {
        let mut phase = self.lock();
        if let Phase::Waiting(_) = *phase {
            *phase = Phase::ReceivingHead(Instant::now());
            self.changed.notify_one();
        }
    }

    fn request_started(&self) {
        let mut phase = self.lock();
        *phase = match *phase {
            Phase::Answering(count) => Phase::Answering(count + 1),
            _ => Phase::Answering(1),
        };
        self.changed.notify_one();
    }

    fn response_ended(&self) {
        let mut phase = self.lock();
        if let Phase::Answering(count) = *phase {
            *phase = if count > 1 { Phase::Answering(count - 1) } else { Phase::Waiting(Instant::now()) };
            self.changed.notify_one();
        }
    }

    /// When the current phase runs out, if it has a limit.
    fn deadline(&self, limits: &HttpLimits) -> Option<Instant> {
        match *self.lock() {
            Phase::Waiting(since) => Some(since + limits.idle_timeout),
            Phase::ReceivingHead(since) => Some(since + limits.header_read_timeout),
            Phase::Answering(_) => None,
        }
    }

    /// Which limit the connection has run past, if any.
    fn expired(&self, limits: &HttpLimits) -> Option<&'static str> {
        let deadline = self.deadline(limits)?;
        if Instant::now() < deadline {
            return None;
        }
        match *self.lock() {
            Phase::Waiting(_) => Some("idle longer than idle_timeout"),
            _ => Some("no complete request head within header_read_timeout"),
        }
    }
}

/// Marks the end of a response when dropped (hyper drops a body once it is sent, or when it gives up).
#[derive(Debug)]
struct ResponseEnd(Arc<Activity>);

impl Drop for ResponseEnd {
    fn drop(&mut self) {
        self.0.response_ended();
    }
}

/// A response body that tells the connection's [`Activity`] when it is done.
#[derive(Debug)]
pub struct TrackedBody<B> {
    inner: B,
    _end: ResponseEnd,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A connection whose writes fail with `TimedOut` once one has made no progress for a while: a client that
/// stops reading a response is disconnected instead of holding the response (and whatever feeds it) forever.
/// Reads have no timeout here (a watch client legitimately sends nothing for hours); they are reported to the
/// connection's [`Activity`], so that a byte arriving on an idle connection starts the header timeout.
#[derive(Debug)]
pub struct ConnectionIo<T> {
    inner: T,
    timeout: Duration,
    stalled_since: Option<Pin<Box<Sleep>>>,
    activity: Arc<Activity>,
}

impl<T> ConnectionIo<T> {
    pub fn new(inner: T, timeout: Duration, activity: Arc<Activity>) -> Self {
        ConnectionIo { inner, timeout, stalled_since: None, activity }
    }

    /// Turns a pending write into an error once the stall has lasted the timeout; clears it on progress.
    fn watch<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.stalled_since = None;
            return poll;
        }
        let timeout = self.timeout;
        let stall = self.stalled_since.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took no data for {timeout:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ConnectionIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.bytes_received();
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ConnectionIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A peer that never reads: writes fill the socket buffers, then fail with `TimedOut`.
    #[tokio::test]
    async fn a_write_to_a_client_that_never_reads_fails_after_the_stall_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut io = ConnectionIo::new(server, Duration::from_millis(300), Arc::new(Activity::new()));
        let piece = vec![7u8; 64 * 1024];
        let mut result = Ok(());
        // Bounded: loopback buffers hold a few MiB at most, far below 4096 pieces of 64 KiB.
        for _ in 0..4096 {
            result = tokio::time::timeout(Duration::from_secs(10), io.write_all(&piece))
                .await
                .expect("the stall timeout fires long before 10 s");
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
        drop(client);
    }
}

//! The HTTP boot server: `GET`/`HEAD /boot/v1/…` for terminals, from this node's own store.
//!
//! | request | answer |
//! |---|---|
//! | `GET/HEAD /boot/v1/config/{mac}` | the terminal's boot document, `application/json` |
//! | `GET/HEAD /boot/v1/firmware/{name}` | the firmware image, streamed, `application/octet-stream` (`application/efi` for `*.efi`) |
//! | `GET/HEAD /boot/v1/blobs/{sha256}` | any blob by digest, streamed, `application/octet-stream` |
//! | `GET/HEAD /boot/v1/ipxe/{mac}` | the terminal's iPXE script, `text/plain` |
//! | `GET/HEAD /boot/v1/ipxe` | the generic iPXE entry script (a DHCP filename for every terminal), `text/plain` |
//! | `POST /boot/v1/status/{mac}` | a terminal heartbeat, `{"state": "green" \| "red", "detail": "…"}` → `204` |
//!
//! What the files *are* is [`super::BootContent`]'s business ([`super::content`] explains the boot document and
//! the scripts); this module only moves bytes, following what real boot clients need
//! (`shared/notes/boot-protocols.md`):
//!
//! - **HEAD** answers the same headers as GET, `Content-Length` included, and no body (UEFI HTTP Boot sends
//!   HEAD first to learn the size).
//! - **One `Range`** (`bytes=a-b`, `bytes=a-`, `bytes=-n`) gives `206` with `Content-Range`; a range past the end
//!   gives `416` with `Content-Range: bytes */size`. Several ranges, other units or a malformed header are
//!   ignored (the whole file, `200`), as RFC 9110 allows; so is any range on an empty file. `If-Range` with
//!   another ETag also means the whole file.
//! - **ETag** is the content hash (`"sha256-…"`), so both servers of a pair give the same value for the same
//!   bytes, and **`If-None-Match`** (a list, `*`, weak forms) gives `304` with no body.
//!   `Cache-Control: no-cache` makes clients revalidate every time — cheap with ETags, and a terminal never
//!   boots stale configuration.
//! - **`X-Tandem-Revision`** names the store revision the answer comes from.
//! - **Errors** are one short `text/plain` line (an iPXE console shows it as is): `400` for a malformed path,
//!   MAC, digest or name (never a `500`, whatever the path holds: traversal like `firmware/../x` is a `400`),
//!   `404` for an unknown terminal, firmware or blob and for paths outside `/boot/v1/`, `405` with `Allow` for
//!   other methods, `503` with `Retry-After` while the node has never been in sync (iPXE retries by itself).
//! - Any `Host` is accepted (terminals use whatever address DHCP gave them, UEFI omits the port), the path may
//!   be percent-encoded (`%3A` for `:`), the query is ignored, and connections are kept alive.
//!
//! ## Streaming blobs
//!
//! A firmware image can be hundreds of MiB and twenty terminals may fetch it at once, so a blob body is never
//! read whole: [`BootResponseBody`] reads [`STREAM_CHUNK`] bytes at a time from the store's `BlobReader` (which
//! holds one 32 KiB part and reads sled with blocking calls) through a [`ChunkedRead`] (shared with the admin
//! API's blob downloads) on the blocking thread pool, and reads the next
//! chunk only when hyper has taken the previous one, which happens as the client's TCP window opens. Per
//! download that bounds memory to about two chunks plus hyper's write buffer (well under 1 MiB), and no thread
//! waits on a slow client: a blocking thread is busy only while it reads one chunk from disk.
//!
//! ## Heartbeats
//!
//! `POST /boot/v1/status/{mac}` records the report in the node-local [`Heartbeats`] registry. Whether the MAC
//! belongs to a terminal is checked, through the content, **before** the body is read: `404` at once
//! otherwise, so made-up MACs neither count as online nor cost a body read (a stalled body would hold the
//! connection until the body timeout). See [`super::heartbeat`].
//!
//! ## Limits
//!
//! Connections are admitted through a per-listener and per-address cap, request heads and bodies have
//! timeouts, and a client that stops reading is disconnected ([`BootHttpOptions::limits`], see
//! [`crate::limits`] and `docs/security.md`).
//!
//! ## Stats
//!
//! [`BootHttpStats`] counts requests by [`PathKind`] and [`RequestOutcome`], body bytes sent, open connections
//! and blob downloads in progress, for the metrics endpoint.

use std::io::Read;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{
    ACCEPT_RANGES, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, HeaderMap,
    HeaderName, HeaderValue, IF_NONE_MATCH, IF_RANGE, RANGE, RETRY_AFTER,
};
use hyper::{Method, Request, Response, StatusCode};
use tandem_storage::Mac;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::heartbeat::{HeartbeatReport, Heartbeats, MAX_REPORT_BYTES};
use super::{BootBody, BootContent, BootError, BootFile, BootPath};
use crate::limits::HttpLimits;
use crate::node::chunked_read::ChunkedRead;

/// How many bytes of a blob are read from the store per step of a download.
pub const STREAM_CHUNK: usize = 64 * 1024;

/// The store revision an answer comes from.
pub const REVISION_HEADER: &str = "x-tandem-revision";

/// How long requests in flight may finish after shutdown before their connections are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Tunables and shared registries of the HTTP boot server. Keep clones of `heartbeats` and `stats` to read
/// them while the server runs.
#[derive(Clone, Debug)]
pub struct BootHttpOptions {
    /// Where `POST /boot/v1/status/{mac}` heartbeats go.
    pub heartbeats: Arc<Heartbeats>,
    /// Request counters, for metrics.
    pub stats: Arc<BootHttpStats>,
    /// The `Retry-After` of a `503` (whole seconds, at least 1).
    pub retry_after: Duration,
    /// Connection caps and timeouts (see [`crate::limits`]).
    pub limits: HttpLimits,
}

impl Default for BootHttpOptions {
    fn default() -> Self {
        BootHttpOptions {
            heartbeats: Arc::new(Heartbeats::new()),
            stats: Arc::new(BootHttpStats::default()),
            retry_after: Duration::from_secs(5),
            limits: HttpLimits::BOOT_DEFAULTS,
        }
    }
}

/// What a request asked for, for the request counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathKind {
    Config,
    Firmware,
    Blob,
    Ipxe,
    IpxeEntry,
    Status,
    /// Anything else (bad prefixes, unknown kinds).
    Other,
}

impl PathKind {
    pub const ALL: [PathKind; 7] = [
        PathKind::Config,
        PathKind::Firmware,
        PathKind::Blob,
        PathKind::Ipxe,
        PathKind::IpxeEntry,
        PathKind::Status,
        PathKind::Other,
    ];

    /// A label value: `config`, `firmware`, `blob`, `ipxe`, `ipxe_entry`, `status`, `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Config => "config",
            PathKind::Firmware => "firmware",
            PathKind::Blob => "blob",
            PathKind::Ipxe => "ipxe",
            PathKind::IpxeEntry => "ipxe_entry",
            PathKind::Status => "status",
            PathKind::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How a request ended, for the request counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    /// 200 or 204.
    Ok,
    /// 206.
    Partial,
    /// 304.
    NotModified,
    /// 400 or 413.
    BadRequest,
    /// 404.
    NotFound,
    /// 405.
    MethodNotAllowed,
    /// 416.
    RangeNotSatisfiable,
    /// 503.
    NotReady,
    /// 500 and anything else.
    Error,
}

impl RequestOutcome {
    pub const ALL: [RequestOutcome; 9] = [
        RequestOutcome::Ok,
        RequestOutcome::Partial,
        RequestOutcome::NotModified,
        RequestOutcome::BadRequest,
        RequestOutcome::NotFound,
        RequestOutcome::MethodNotAllowed,
        RequestOutcome::RangeNotSatisfiable,
        RequestOutcome::NotReady,
        RequestOutcome::Error,
    ];

    /// A label value: `ok`, `partial`, `not_modified`, `bad_request`, `not_found`, `method_not_allowed`,
    /// `range_not_satisfiable`, `not_ready`, `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Ok => "ok",
            RequestOutcome::Partial => "partial",
            RequestOutcome::NotModified => "not_modified",
            RequestOutcome::BadRequest => "bad_request",
            RequestOutcome::NotFound => "not_found",
            RequestOutcome::MethodNotAllowed => "method_not_allowed",
            RequestOutcome::RangeNotSatisfiable => "range_not_satisfiable",
            RequestOutcome::NotReady => "not_ready",
            RequestOutcome::Error => "error",
        }
    }

    /// The outcome a response status stands for.
    pub fn of_status(status: StatusCode) -> RequestOutcome {
        match status.as_u16() {
            200 | 204 => RequestOutcome::Ok,
            206 => RequestOutcome::Partial,
            304 => RequestOutcome::NotModified,
            400 | 413 => RequestOutcome::BadRequest,
            404 => RequestOutcome::NotFound,
            405 => RequestOutcome::MethodNotAllowed,
            416 => RequestOutcome::RangeNotSatisfiable,
            503 => RequestOutcome::NotReady,
            _ => RequestOutcome::Error,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

const KINDS: usize = PathKind::ALL.len();
const OUTCOMES: usize = RequestOutcome::ALL.len();

/// Counters of the HTTP boot server (all monotonic except the two gauges).
#[derive(Debug, Default)]
pub struct BootHttpStats {
    requests: [[AtomicU64; OUTCOMES]; KINDS],
    bytes_served: AtomicU64,
    connections_open: AtomicU64,
    downloads_active: AtomicU64,
    heartbeats: AtomicU64,
}

impl BootHttpStats {
    /// Requests of one kind that ended one way.
    pub fn requests(&self, kind: PathKind, outcome: RequestOutcome) -> u64 {
        self.requests[kind.index()][outcome.index()].load(Ordering::Relaxed)
    }

    /// Every non-zero request counter.
    pub fn request_counts(&self) -> Vec<(PathKind, RequestOutcome, u64)> {
        let mut counts = Vec::new();
        for kind in PathKind::ALL {
            for outcome in RequestOutcome::ALL {
                let count = self.requests(kind, outcome);
                if count > 0 {
                    counts.push((kind, outcome, count));
                }
            }
        }
        counts
    }

    /// Body bytes handed to connections (file contents; not headers or error texts).
    pub fn bytes_served(&self) -> u64 {
        self.bytes_served.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn connections_open(&self) -> u64 {
        self.connections_open.load(Ordering::Relaxed)
    }

    /// Blob downloads in progress now.
    pub fn downloads_active(&self) -> u64 {
        self.downloads_active.load(Ordering::Relaxed)
    }

    /// Heartbeats accepted.
    pub fn heartbeats(&self) -> u64 {
        self.heartbeats.load(Ordering::Relaxed)
    }

    fn count(&self, kind: PathKind, status: StatusCode) {
        let outcome = RequestOutcome::of_status(status);
        self.requests[kind.index()][outcome.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// Decrements a gauge when dropped.
struct GaugeGuard(Arc<BootHttpStats>, fn(&BootHttpStats) -> &AtomicU64);

impl GaugeGuard {
    fn new(stats: Arc<BootHttpStats>, gauge: fn(&BootHttpStats) -> &AtomicU64) -> Self {
        gauge(&stats).fetch_add(1, Ordering::Relaxed);
        GaugeGuard(stats, gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves boot files from `content` on `listener` until `shutdown` is cancelled, with default options (fresh
/// heartbeat registry and stats; use [`serve_boot_http_with`] to keep them).
pub async fn serve_boot_http(
    listener: TcpListener,
    content: Arc<dyn BootContent>,
    shutdown: CancellationToken,
) {
    serve_boot_http_with(listener, content, BootHttpOptions::default(), shutdown).await
}

/// Serves boot files from `content` on `listener` until `shutdown` is cancelled. On shutdown it stops
/// accepting, lets requests in flight finish for a few seconds, then drops what is left, and returns.
pub async fn serve_boot_http_with(
    listener: TcpListener,
    content: Arc<dyn BootContent>,
    options: BootHttpOptions,
    shutdown: CancellationToken,
) {
    let gate = options.limits.gate();
    let server = Arc::new(Server { content, options });
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, remote) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Resets before accept and descriptor exhaustion both land here; pause so the latter does
                    // not become a busy loop.
                    tracing::warn!(%error, "boot HTTP: accept failed");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    }
                }
            },
        };
        let Some((stream, permit)) = crate::limits::admit(&gate, stream, remote, "boot HTTP") else {
            continue;
        };
        let server = server.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            serve_connection(stream, remote, server, shutdown).await;
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(SHUTDOWN_GRACE * 2, connections.wait()).await.is_err() {
        tracing::warn!(left = connections.len(), "boot HTTP: connections still busy after shutdown");
    }
    tracing::debug!("boot HTTP server stopped");
}

struct Server {
    content: Arc<dyn BootContent>,
    options: BootHttpOptions,
}

async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    server: Arc<Server>,
    shutdown: CancellationToken,
) {
    let _open = GaugeGuard::new(server.options.stats.clone(), |s| &s.connections_open);
    let limits = server.options.limits;
    let handler = move |request| {
        let server = server.clone();
        async move { server.handle(request).await }
    };
    let stop = (shutdown, SHUTDOWN_GRACE);
    crate::limits::serve_connection(stream, remote, limits, None, handler, stop, "boot HTTP").await;
}

/// A request's target, once the path is understood.
enum Target {
    File(BootPath),
    Entry,
    Status(Mac),
}

impl Server {
    async fn handle(&self, request: Request<Incoming>) -> Response<BootResponseBody> {
        let (kind, target) = route(request.uri().path());
        let response = match target {
            Err(response) => response,
            Ok(Target::Status(mac)) => self.heartbeat(request, mac).await,
            Ok(target) => {
                let method = request.method().clone();
                if method != Method::GET && method != Method::HEAD {
                    method_not_allowed("GET, HEAD")
                } else {
                    let opened = match &target {
                        Target::File(path) => self.content.open(path),
                        _ => self.content.open_ipxe_entry(),
                    };
                    match opened {
                        Ok(file) => self.respond(file, &method, request.headers()),
                        Err(error) => self.error(error),
                    }
                }
            }
        };
        self.options.stats.count(kind, response.status());
        response
    }

    /// Answers a resolved file: conditional request, range, headers, body.
    fn respond(&self, file: BootFile, method: &Method, headers: &HeaderMap) -> Response<BootResponseBody> {
        let mut response = Response::new(BootResponseBody::empty());
        let out = response.headers_mut();
        set(out, ETAG, &file.etag);
        out.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        set(out, HeaderName::from_static(REVISION_HEADER), &file.revision.to_string());
        if if_none_match(headers.get(IF_NONE_MATCH), &file.etag) {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            return response;
        }
        out.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        let range = match headers.get(IF_RANGE) {
            Some(tag) if tag.as_bytes() != file.etag.as_bytes() => ByteRange::Whole,
            _ => ByteRange::parse(headers.get(RANGE), file.size),
        };
        let (start, length) = match range {
            ByteRange::Whole => (0, file.size),
            ByteRange::Unsatisfiable => {
                set(out, CONTENT_RANGE, &format!("bytes */{}", file.size));
                let mut refused = text(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    format!("range not satisfiable: the file has {} bytes", file.size),
                );
                refused.headers_mut().extend(response.headers().clone());
                return refused;
            }
            ByteRange::Part { first, last } => {
                set(out, CONTENT_RANGE, &format!("bytes {first}-{last}/{}", file.size));
                (first, last - first + 1)
            }
        };
        out.insert(CONTENT_TYPE, HeaderValue::from_static(file.content_type));
        set(out, CONTENT_LENGTH, &length.to_string());
        if matches!(range, ByteRange::Part { .. }) {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        }
        if method != Method::HEAD && length > 0 {
            *response.body_mut() = match file.body {
                BootBody::Bytes(bytes) => {
                    let start = usize::try_from(start).unwrap_or(usize::MAX).min(bytes.len());
                    let end =
                        start.saturating_add(usize::try_from(length).unwrap_or(usize::MAX)).min(bytes.len());
                    BootResponseBody::bytes(Bytes::from(bytes).slice(start..end), self.options.stats.clone())
                }
                body @ BootBody::Blob(_) => {
                    BootResponseBody::stream(body.into_reader(start), length, self.options.stats.clone())
                }
            };
        }
        response
    }

    fn error(&self, error: BootError) -> Response<BootResponseBody> {
        match &error {
            BootError::BadPath(_) => text(StatusCode::BAD_REQUEST, error.to_string()),
            BootError::NotFound(_) => text(StatusCode::NOT_FOUND, error.to_string()),
            BootError::NotReady(_) => {
                let mut response = text(StatusCode::SERVICE_UNAVAILABLE, error.to_string());
                let seconds = self.options.retry_after.as_secs().max(1);
                set(response.headers_mut(), RETRY_AFTER, &seconds.to_string());
                response
            }
            BootError::Internal(_) => {
                tracing::warn!(%error, "boot HTTP: cannot serve a file");
                text(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
            }
        }
    }

    /// `POST /boot/v1/status/{mac}`: a terminal's heartbeat.
    async fn heartbeat(&self, request: Request<Incoming>, mac: Mac) -> Response<BootResponseBody> {
        if request.method() != Method::POST {
            return method_not_allowed("POST");
        }
        // Only terminals of the configuration count: the boot port is open to anyone. Checked before the body
        // is read, so a made-up MAC costs no body read (and no time waiting for a slow one).
        if let Err(error) = self.content.open(&BootPath::Config(mac)) {
            return self.error(error);
        }
        let timeout = self.options.limits.body_read_timeout;
        let body = match crate::http::read_body(request.into_body(), MAX_REPORT_BYTES, timeout).await {
            Ok(body) => body,
            Err(error) => {
                let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
                return text(status, error.message);
            }
        };
        let report = match HeartbeatReport::parse(&body) {
            Ok(report) => report,
            Err(message) => return text(StatusCode::BAD_REQUEST, message),
        };
        self.options.heartbeats.record(mac, report);
        self.options.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
        let mut response = Response::new(BootResponseBody::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        response
    }
}

/// Maps a request path to its kind and target, or to the error response for it.
fn route(path: &str) -> (PathKind, Result<Target, Response<BootResponseBody>>) {
    let Some(rest) = path.strip_prefix(super::content::HTTP_PREFIX) else {
        let reason = if path == "/boot/v1" {
            "not found: no file here"
        } else {
            "not found: boot paths start with /boot/v1/"
        };
        return (PathKind::Other, Err(text(StatusCode::NOT_FOUND, reason.into())));
    };
    let kind = match rest.split('/').next().unwrap_or("") {
        "config" => PathKind::Config,
        "firmware" => PathKind::Firmware,
        "blobs" => PathKind::Blob,
        "ipxe" if rest == "ipxe" || rest == "ipxe/" => PathKind::IpxeEntry,
        "ipxe" => PathKind::Ipxe,
        "status" => PathKind::Status,
        _ => PathKind::Other,
    };
    let Some(decoded) = percent_decode_path(rest) else {
        return (kind, Err(text(StatusCode::BAD_REQUEST, "bad path: malformed percent-encoding".into())));
    };
    let target = match kind {
        PathKind::IpxeEntry => Ok(Target::Entry),
        PathKind::Status => match decoded.strip_prefix("status/").map(Mac::parse) {
            Some(Ok(mac)) => Ok(Target::Status(mac)),
            Some(Err(error)) => Err(text(StatusCode::BAD_REQUEST, format!("bad path: {error}"))),
            None => Err(text(StatusCode::BAD_REQUEST, "bad path: expected /boot/v1/status/{mac}".into())),
        },
        _ => match BootPath::parse(&decoded) {
            Ok(path) => Ok(Target::File(path)),
            Err(error) => Err(text(StatusCode::BAD_REQUEST, error.to_string())),
        },
    };
    (kind, target)
}

/// Decodes `%xx` escapes (and nothing else: `+` stays `+` in a path). `None` for a malformed escape or a result
/// that is not UTF-8. What it decodes is checked again by [`BootPath::parse`], so an encoded `/` or `..` is
/// refused there.
fn percent_decode_path(path: &str) -> Option<String> {
    if !path.contains('%') {
        return Some(path.to_string());
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// A one-line `text/plain` answer.
fn text(status: StatusCode, message: String) -> Response<BootResponseBody> {
    let mut line = message;
    line.truncate(line.char_indices().nth(300).map_or(line.len(), |(i, _)| i));
    line.push('\n');
    let mut response = Response::new(BootResponseBody::full(Bytes::from(line)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn method_not_allowed(allow: &'static str) -> Response<BootResponseBody> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, format!("method not allowed: use {allow}"));
    response.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// Whether an `If-None-Match` header matches `etag` (weak comparison, as RFC 9110 asks for this header).
fn if_none_match(header: Option<&HeaderValue>, etag: &str) -> bool {
    let Some(text) = header.and_then(|value| value.to_str().ok()) else {
        return false;
    };
    text.split(',').map(str::trim).any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}

/// The part of a file a `Range` header asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ByteRange {
    /// No usable range: the whole file, `200`.
    Whole,
    /// Bytes `first..=last`, both within the file: `206`.
    Part { first: u64, last: u64 },
    /// A well-formed range entirely past the end: `416`.
    Unsatisfiable,
}

impl ByteRange {
    fn parse(header: Option<&HeaderValue>, size: u64) -> ByteRange {
        let Some(spec) =
            header.and_then(|value| value.to_str().ok()).and_then(|t| t.trim().strip_prefix("bytes="))
        else {
            return ByteRange::Whole;
        };
        let Some((first, last)) = spec.trim().split_once('-') else {
            return ByteRange::Whole;
        };
        let number = |text: &str| -> Option<u64> {
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // A number too large for u64 is still a number: past the end of any file.
            Some(text.parse::<u64>().unwrap_or(u64::MAX))
        };
        let (first, last) = (first.trim(), last.trim());
        if size == 0 || spec.contains(',') {
            return ByteRange::Whole;
        }
        if first.is_empty() {
            return match number(last) {
                None => ByteRange::Whole,
                Some(0) => ByteRange::Unsatisfiable,
                Some(suffix) => ByteRange::Part { first: size.saturating_sub(suffix), last: size - 1 },
            };
        }
        let Some(first) = number(first) else {
            return ByteRange::Whole;
        };
        let last = if last.is_empty() {
            u64::MAX
        } else {
            match number(last) {
                Some(last) if last >= first => last,
                _ => return ByteRange::Whole,
            }
        };
        if first >= size {
            ByteRange::Unsatisfiable
        } else {
            ByteRange::Part { first, last: last.min(size - 1) }
        }
    }
}

/// The body of every boot response: nothing, a few bytes in memory, or a blob streamed from the store chunk by
/// chunk (see the module documentation).
pub struct BootResponseBody {
    kind: BodyKind,
}

enum BodyKind {
    Empty,
    /// In-memory bytes, counted as served when `stats` is set (error texts are not).
    Full(Option<Bytes>, Option<Arc<BootHttpStats>>),
    Stream(BlobStream),
}

/// A blob being streamed, counted in the boot statistics.
struct BlobStream {
    chunks: ChunkedRead,
    stats: Arc<BootHttpStats>,
    _active: GaugeGuard,
}

impl std::fmt::Debug for BootResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            BodyKind::Empty => "empty",
            BodyKind::Full(..) => "full",
            BodyKind::Stream(_) => "stream",
        };
        f.debug_struct("BootResponseBody").field("kind", &kind).finish()
    }
}

impl BootResponseBody {
    fn empty() -> Self {
        BootResponseBody { kind: BodyKind::Empty }
    }

    fn full(bytes: Bytes) -> Self {
        BootResponseBody { kind: BodyKind::Full(Some(bytes), None) }
    }

    fn bytes(bytes: Bytes, stats: Arc<BootHttpStats>) -> Self {
        BootResponseBody { kind: BodyKind::Full(Some(bytes), Some(stats)) }
    }

    fn stream(reader: Box<dyn Read + Send>, length: u64, stats: Arc<BootHttpStats>) -> Self {
        let active = GaugeGuard::new(stats.clone(), |s| &s.downloads_active);
        BootResponseBody {
            kind: BodyKind::Stream(BlobStream {
                chunks: ChunkedRead::new(reader, length, STREAM_CHUNK),
                stats,
                _active: active,
            }),
        }
    }
}

impl BlobStream {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<std::io::Result<Bytes>>> {
        let chunk = std::task::ready!(self.chunks.poll_chunk(cx));
        if let Some(Ok(bytes)) = &chunk {
            self.stats.bytes_served.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        Poll::Ready(chunk)
    }
}

impl hyper::body::Body for BootResponseBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        match &mut this.kind {
            BodyKind::Empty => Poll::Ready(None),
            BodyKind::Full(bytes, stats) => {
                let Some(bytes) = bytes.take() else {
                    return Poll::Ready(None);
                };
                if let Some(stats) = stats {
                    stats.bytes_served.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            BodyKind::Stream(stream) => {
                stream.poll_chunk(cx).map(|chunk| chunk.map(|result| result.map(Frame::data)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Empty => true,
            BodyKind::Full(bytes, _) => bytes.is_none(),
            BodyKind::Stream(stream) => stream.chunks.unsent() == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Empty => SizeHint::with_exact(0),
            BodyKind::Full(bytes, _) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            BodyKind::Stream(stream) => SizeHint::with_exact(stream.chunks.unsent()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(text: &str, size: u64) -> ByteRange {
        ByteRange::parse(Some(&HeaderValue::from_str(text).unwrap()), size)
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(range("bytes=0-99", 1000), ByteRange::Part { first: 0, last: 99 });
        assert_eq!(range("bytes=500-", 1000), ByteRange::Part { first: 500, last: 999 });
        assert_eq!(range("bytes=900-5000", 1000), ByteRange::Part { first: 900, last: 999 });
        assert_eq!(range("bytes=-100", 1000), ByteRange::Part { first: 900, last: 999 });
        assert_eq!(range("bytes=-5000", 1000), ByteRange::Part { first: 0, last: 999 });
        assert_eq!(range("bytes=1000-", 1000), ByteRange::Unsatisfiable);
        assert_eq!(range("bytes=99999999999999999999999-", 1000), ByteRange::Unsatisfiable);
        assert_eq!(range("bytes=-0", 1000), ByteRange::Unsatisfiable);
        for ignored in
            ["bytes=5-1", "bytes=0-1,5-6", "items=0-1", "bytes=x-", "bytes=+1-2", "bytes=", "bytes=-"]
        {
            assert_eq!(range(ignored, 1000), ByteRange::Whole, "{ignored}");
        }
        assert_eq!(range("bytes=0-", 0), ByteRange::Whole);
        assert_eq!(ByteRange::parse(None, 10), ByteRange::Whole);
    }

    #[test]
    fn if_none_match_accepts_lists_stars_and_weak_tags() {
        let etag = "\"sha256-ab\"";
        let matches = |text: &str| if_none_match(Some(&HeaderValue::from_str(text).unwrap()), etag);
        assert!(matches("\"sha256-ab\""));
        assert!(matches("\"x\", W/\"sha256-ab\""));
        assert!(matches("*"));
        assert!(!matches("\"sha256-abc\""));
        assert!(!if_none_match(None, etag));
    }

    #[test]
    fn paths_are_routed_and_decoded() {
        let kind = |path: &str| route(path).0;
        assert_eq!(kind("/boot/v1/ipxe"), PathKind::IpxeEntry);
        assert_eq!(kind("/boot/v1/ipxe/525400123456"), PathKind::Ipxe);
        assert_eq!(kind("/boot/v1/status/525400123456"), PathKind::Status);
        assert_eq!(kind("/etc/passwd"), PathKind::Other);
        assert!(matches!(
            route("/boot/v1/config/52%3A54%3A00%3A12%3A34%3A56").1,
            Ok(Target::File(BootPath::Config(_)))
        ));
        for bad in [
            "/boot/v1/config/52%3",
            "/boot/v1/firmware/%2e%2e%2fx",
            "/boot/v1/firmware/a%2Fb",
            "/boot/v1/x/y",
        ] {
            let (_, target) = route(bad);
            assert_eq!(target.err().map(|r| r.status()), Some(StatusCode::BAD_REQUEST), "{bad}");
        }
        assert_eq!(percent_decode_path("a%20b+c"), Some("a b+c".into()));
        assert_eq!(percent_decode_path("%ff"), None);
    }
}

/// The request parsing of the boot HTTP server, for the `boot_path_mac` fuzz target (feature `fuzzing`).
#[cfg(feature = "fuzzing")]
pub mod fuzz {
    use super::*;

    /// Routes `path` as a request path, and parses `range` and `if_none_match` as the headers of a request for
    /// a file of `size` bytes. Panics if a routed path could escape its directory or a range leaves the file.
    pub fn request(path: &str, range: &[u8], if_none_match: &[u8], size: u64) {
        if let (_, Ok(Target::File(BootPath::Firmware(name)))) = route(path) {
            assert!(!name.contains('/') && !name.contains("..") && !name.is_empty(), "{name:?}");
        }
        if let Ok(value) = HeaderValue::from_bytes(range) {
            match ByteRange::parse(Some(&value), size) {
                ByteRange::Part { first, last } => {
                    assert!(first <= last && last < size, "{first}-{last}/{size}")
                }
                ByteRange::Unsatisfiable => assert!(size > 0),
                ByteRange::Whole => {}
            }
        }
        if let Ok(value) = HeaderValue::from_bytes(if_none_match) {
            let _ = super::if_none_match(Some(&value), "\"sha256-00\"");
        }
    }
}

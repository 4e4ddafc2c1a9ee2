//! The server half: [`serve_peer`], the peer endpoint every node runs.
//!
//! With TLS ([`PeerServerOptions::tls`]), a connection is admitted through the gate first, then must complete
//! a mutual TLS handshake within [`crate::tls::PEER_HANDSHAKE_TIMEOUT`]: the client presents a certificate
//! signed by the cluster CA or the connection is dropped before any HTTP is read (logged at most once per
//! [`super::identity_check::LOG_EVERY`] per source address at `warn`, the rest at `debug`).
//!
//! Handling one request is: check the secret (401) and the protocol version (400), check who the request is
//! from and for (403, see [`super::identity_check`]), find the [`Route`] (404/405), read the body within the
//! limits (413/408/400), decode it (400), call Raft, answer `200` with the bincode of the call's `Result`.
//!
//! To add a route: add a [`Route`] variant and its path in [`Route::parse`], then one arm in
//! [`PeerService::dispatch`] that calls the Raft method through [`rpc`], which decodes the request,
//! encodes the `Result` and maps decoding failures to 400.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::election_hold::ElectionHold;
use super::identity_check::{LocalIdentity, Refusal, RefusalKind, RequestIds, Verdict};
use super::{
    APPEND_PATH, BODY_READ_TIMEOUT, CAMPAIGN_PATH, IDLE_TIMEOUT, MAX_BODY_BYTES, READ_INDEX_PATH,
    REFUSAL_HEADER, SECRET_HEADER, SHUTDOWN_GRACE, SNAPSHOT_PATH, VOTE_PATH, WRITE_PATH,
};
use crate::connection_gate::ConnectionGate;
use crate::proposer::Proposer;
use crate::types::{Raft, decode, metrics_now, try_encode};

type HttpResponse = hyper::Response<Full<Bytes>>;

/// Serves the peer routes on `listener` until `shutdown` is cancelled, checking every request against
/// `identity` (the same one the node's [`super::PeerNetwork`] sends).
///
/// Connections are kept alive between requests. On shutdown the listener is closed at once, idle connections
/// are closed, and requests in flight get [`SHUTDOWN_GRACE`] to finish before their connections are dropped;
/// this function returns when that is done. Errors on single connections are logged, never returned.
pub async fn serve_peer(
    listener: TcpListener,
    raft: Raft,
    proposer: Arc<Proposer>,
    secret: String,
    identity: LocalIdentity,
    shutdown: CancellationToken,
) {
    serve_peer_with(listener, raft, proposer, (secret, identity), PeerServerOptions::default(), shutdown)
        .await
}

/// The most peer connections served at once, by default (see [`serve_peer_with_gate`]).
pub const DEFAULT_MAX_PEER_CONNECTIONS: usize = 512;
/// The most peer connections from one IP address, by default: generous, because a follower forwarding many
/// writes at once opens one HTTP/1.1 connection per write in flight.
pub const DEFAULT_MAX_PEER_CONNECTIONS_PER_SOURCE: usize = 256;

/// How the peer endpoint admits connections: its connection caps, and TLS.
#[derive(Debug)]
pub struct PeerServerOptions {
    /// Caps on the connections served at once, in total and per source address: a connection over a cap is
    /// closed at once, before anything is read from it.
    pub gate: ConnectionGate,
    /// Mutual TLS (a configuration that requires a client certificate, [`crate::tls::NodeTls`]); `None`:
    /// plain HTTP (loopback only, which `tandem serve` enforces).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for PeerServerOptions {
    fn default() -> Self {
        PeerServerOptions {
            gate: ConnectionGate::new(DEFAULT_MAX_PEER_CONNECTIONS, DEFAULT_MAX_PEER_CONNECTIONS_PER_SOURCE),
            tls: None,
        }
    }
}

/// [`serve_peer`] with connection caps and, optionally, mutual TLS ([`PeerServerOptions`]).
pub async fn serve_peer_with(
    listener: TcpListener,
    raft: Raft,
    proposer: Arc<Proposer>,
    (secret, identity): (String, LocalIdentity),
    options: PeerServerOptions,
    shutdown: CancellationToken,
) {
    if secret.is_empty() {
        tracing::error!("the peer endpoint has an empty cluster secret: every request will be refused");
    }
    let hold_limit = Duration::from_millis(2 * raft.config().election_timeout_max);
    let elections = ElectionHold::new(raft.clone(), hold_limit);
    let service = Arc::new(PeerService {
        raft,
        proposer,
        secret: secret.into_bytes(),
        elections,
        identity,
        handshake_failures: HandshakeLog::default(),
    });
    let acceptor = options.tls.map(tokio_rustls::TlsAcceptor::from);
    let gate = options.gate;
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => match gate.admit(remote.ip()) {
                    Ok(permit) => {
                        let (service, shutdown) = (service.clone(), shutdown.clone());
                        let acceptor = acceptor.clone();
                        connections.spawn(async move {
                            admit_connection(stream, remote, acceptor, service, shutdown).await;
                            drop(permit)
                        });
                    }
                    Err(refusal) => tracing::debug!(%remote, "peer endpoint: connection refused: {refusal}"),
                },
                Err(error) => {
                    // Per-connection failures (reset before accept) and resource exhaustion (out of file
                    // descriptors) both land here; pause briefly so the latter does not become a busy loop.
                    tracing::warn!(%error, "peer endpoint: accept failed");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
                    }
                }
            },
        }
    }
    drop(listener);
    // Every connection task watches the token and bounds its own drain by SHUTDOWN_GRACE; the outer bound
    // is a safety net.
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE * 2, drain).await.is_err() {
        tracing::warn!(
            left = connections.len(),
            "peer endpoint: dropping connections still busy after shutdown"
        );
        connections.abort_all();
    }
    tracing::debug!("peer endpoint stopped");
}

/// Serves an admitted connection: plain, or once its mutual TLS handshake has succeeded (a client without a
/// certificate of the cluster CA is dropped here, before any HTTP is read).
async fn admit_connection(
    stream: TcpStream,
    remote: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    service: Arc<PeerService>,
    shutdown: CancellationToken,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%remote, %error, "peer endpoint: cannot set TCP_NODELAY");
    }
    let Some(acceptor) = acceptor else {
        return serve_connection(stream, remote, service, shutdown).await;
    };
    let handshake = crate::tls::accept(&acceptor, stream, crate::tls::PEER_HANDSHAKE_TIMEOUT);
    let stream = tokio::select! {
        handshake = handshake => handshake,
        () = shutdown.cancelled() => return,
    };
    match stream {
        Ok(stream) => serve_connection(stream, remote, service, shutdown).await,
        Err(error) => service.handshake_failures.note(remote, &error),
    }
}

/// Serves one keep-alive connection until the peer closes it, it idles out, or shutdown.
async fn serve_connection<S>(
    stream: S,
    remote: SocketAddr,
    service: Arc<PeerService>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handler = service_fn(move |request| {
        let service = service.clone();
        async move { Ok::<_, Infallible>(service.handle(request, remote).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(IDLE_TIMEOUT)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), handler);
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            // Finish the request in progress (if any), then close; an idle connection closes at once.
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, connection.as_mut()).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::debug!(%remote, "peer endpoint: request still running after the grace period");
                    Ok(())
                }
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(%remote, %error, "peer endpoint: connection ended with an error");
    }
}

/// Failed TLS handshakes, logged at `warn` at most once per [`super::identity_check::LOG_EVERY`] for each
/// source address (a misconfigured member retries several times a second), at `debug` otherwise.
#[derive(Debug, Default)]
struct HandshakeLog(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, std::time::Instant>>);

impl HandshakeLog {
    /// The most source addresses remembered; past it the map is cleared (a flood then logs a bit more).
    const MAX_SOURCES: usize = 1024;

    fn note(&self, remote: SocketAddr, error: &str) {
        let now = std::time::Instant::now();
        let warn = {
            let mut logged = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if logged.len() >= Self::MAX_SOURCES {
                logged.clear();
            }
            let recent = logged
                .get(&remote.ip())
                .is_some_and(|at| now.duration_since(*at) < super::identity_check::LOG_EVERY);
            if !recent {
                logged.insert(remote.ip(), now);
            }
            !recent
        };
        if warn {
            tracing::warn!(
                %remote,
                "peer endpoint: refused a connection: {error} (a peer must present a certificate signed by the \
                 cluster CA: [tls] ca, see `tandem cert node`)"
            );
        } else {
            tracing::debug!(%remote, "peer endpoint: refused a connection: {error}");
        }
    }
}

/// What a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Append,
    Vote,
    Snapshot,
    Write,
    Campaign,
    ReadIndex,
}

impl Route {
    /// The route for a method and path, or the status to answer (404 unknown path, 405 not a POST).
    fn parse(method: &Method, path: &str) -> Result<Route, StatusCode> {
        let route = match path {
            APPEND_PATH => Route::Append,
            VOTE_PATH => Route::Vote,
            SNAPSHOT_PATH => Route::Snapshot,
            WRITE_PATH => Route::Write,
            CAMPAIGN_PATH => Route::Campaign,
            READ_INDEX_PATH => Route::ReadIndex,
            _ => return Err(StatusCode::NOT_FOUND),
        };
        if method != Method::POST {
            return Err(StatusCode::METHOD_NOT_ALLOWED);
        }
        Ok(route)
    }
}

/// The state shared by all connections.
struct PeerService {
    raft: Raft,
    /// Forwarded writes join the leader's own in shared log entries.
    proposer: Arc<Proposer>,
    secret: Vec<u8>,
    /// Held while a snapshot streams in (see [`ElectionHold`]).
    elections: Arc<ElectionHold>,
    identity: LocalIdentity,
    handshake_failures: HandshakeLog,
}

impl PeerService {
    async fn handle(&self, request: hyper::Request<Incoming>, remote: SocketAddr) -> HttpResponse {
        let given = request.headers().get(SECRET_HEADER).map(HeaderValue::as_bytes).unwrap_or_default();
        if !super::secret_matches(&self.secret, given) {
            tracing::warn!(%remote, path = request.uri().path(), "peer endpoint: missing or wrong cluster secret");
            return text(StatusCode::UNAUTHORIZED, "missing or wrong cluster secret".to_owned());
        }
        if let Some(refusal) = refuse_other_protocol(request.headers()) {
            tracing::warn!(%remote, "peer endpoint: {refusal}");
            return text(StatusCode::BAD_REQUEST, refusal);
        }
        if let Some(refusal) = self.check_identity(request.headers(), remote) {
            return refusal;
        }
        let route = match Route::parse(request.method(), request.uri().path()) {
            Ok(route) => route,
            Err(StatusCode::METHOD_NOT_ALLOWED) => {
                let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "use POST".to_owned());
                response.headers_mut().insert(hyper::header::ALLOW, HeaderValue::from_static("POST"));
                return response;
            }
            Err(status) => return text(status, format!("no route {}", request.uri().path())),
        };
        let body = match read_body(request.into_body()).await {
            Ok(body) => body,
            Err(response) => return response,
        };
        self.dispatch(route, &body).await
    }

    /// Checks who the request is from and for ([`super::identity_check`]), learning the cluster id if this
    /// node has none yet; on a refusal, notes it (status, rate-limited log) and returns the 403 to answer (or
    /// the 400 for an unreadable header).
    fn check_identity(&self, headers: &hyper::HeaderMap, remote: SocketAddr) -> Option<HttpResponse> {
        let request = match RequestIds::from_headers(headers) {
            Ok(request) => request,
            Err(message) => {
                tracing::debug!(%remote, "peer endpoint: {message}");
                return Some(text(StatusCode::BAD_REQUEST, message));
            }
        };
        let refusal = match self.identity.admit(&request) {
            Ok(Verdict::Accept | Verdict::Learn(_)) => self.refuse_non_member(request.sender),
            Ok(Verdict::Refuse(refusal)) => Some(refusal),
            Err(error) => {
                tracing::error!(%error, "peer endpoint: cannot record the cluster id this node joined");
                return Some(text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot record the cluster id: {error}"),
                ));
            }
        };
        let refusal = refusal?;
        self.identity.note_refused(&request, &remote.to_string(), &refusal);
        let mut response = text(StatusCode::FORBIDDEN, refusal.message);
        response.headers_mut().insert(REFUSAL_HEADER, HeaderValue::from_static(refusal.kind.as_str()));
        Some(response)
    }

    /// A node that names itself (see [`super::NODE_ID_HEADER`]) but is not in this node's membership is
    /// refused: it was removed, or the cluster was recovered without it, and its stale log must not disturb
    /// the cluster (its vote requests would raise the term and depose the leader). A pristine node (no
    /// membership yet, waiting to be added) accepts anyone who passed the other checks.
    fn refuse_non_member(&self, sender: Option<crate::types::NodeId>) -> Option<Refusal> {
        let sender = sender?;
        let metrics = metrics_now(&self.raft);
        let membership = metrics.membership_config.membership();
        if membership.nodes().next().is_none() || membership.get_node(&sender).is_some() {
            return None;
        }
        Some(Refusal {
            kind: RefusalKind::NotAMember,
            message: format!(
                "node {sender} is not a member of this cluster: it was removed, or the cluster was recovered \
                 without it (tandem recover --force-standalone). Its data is stale: stop it, wipe its data \
                 directory, start it with --join and add it again with `tandem servers add NAME --api ADDR`"
            ),
        })
    }

    /// Hands a decoded request to Raft.
    async fn dispatch(&self, route: Route, body: &[u8]) -> HttpResponse {
        let raft = &self.raft;
        match route {
            Route::Append => {
                let response = rpc("AppendEntries", body, |rpc| raft.append_entries(rpc)).await;
                self.elections.leader_heard();
                response
            }
            Route::Vote => rpc("Vote", body, |rpc| raft.vote(rpc)).await,
            Route::Snapshot => {
                let _in_flight = self.elections.snapshot_request();
                rpc("InstallSnapshot", body, |rpc| raft.install_snapshot(rpc)).await
            }
            Route::Write => rpc("write Command", body, |command| self.proposer.propose(command)).await,
            Route::Campaign => {
                rpc("CampaignRequest", body, |request| super::campaign::campaign(raft, request)).await
            }
            Route::ReadIndex => rpc("read-index request", body, |()| raft.get_read_log_id()).await,
        }
    }
}

/// A request of another peer protocol version than [`super::PROTOCOL_VERSION`] is refused, naming both.
fn refuse_other_protocol(headers: &hyper::HeaderMap) -> Option<String> {
    let given = headers.get(super::PROTOCOL_HEADER).and_then(|v| v.to_str().ok()?.parse::<u32>().ok());
    if given == Some(super::PROTOCOL_VERSION) {
        return None;
    }
    let given = given.map_or_else(|| "1 (no protocol header)".to_owned(), |v| v.to_string());
    Some(format!(
        "peer protocol version {given} is not this node's version {}: run the same Tandem version on every node",
        super::PROTOCOL_VERSION
    ))
}

/// Decodes the body as `Req`, runs `call`, and answers 200 with the bincode of its `Result`.
async fn rpc<Req, Resp, E, F, Fut>(what: &str, body: &[u8], call: F) -> HttpResponse
where
    Req: DeserializeOwned,
    Resp: Serialize,
    E: Serialize + std::fmt::Display,
    F: FnOnce(Req) -> Fut,
    Fut: Future<Output = Result<Resp, E>>,
{
    let request: Req = match decode(body) {
        Ok(request) => request,
        Err(error) => {
            return text(StatusCode::BAD_REQUEST, format!("the body is not a bincode {what}: {error}"));
        }
    };
    let result = call(request).await;
    if let Err(error) = &result {
        tracing::debug!(%error, "peer endpoint: {what} returned an error");
    }
    match try_encode(&result) {
        Ok(bytes) => {
            let mut response = hyper::Response::new(Full::new(Bytes::from(bytes)));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            response
        }
        Err(error) => {
            tracing::error!(%error, "peer endpoint: cannot encode the {what} result");
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the result: {error}"))
        }
    }
}

/// Reads a request body of at most [`MAX_BODY_BYTES`] within [`BODY_READ_TIMEOUT`], or the error response.
async fn read_body(body: Incoming) -> Result<Bytes, HttpResponse> {
    let too_large =
        || text(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is over {MAX_BODY_BYTES} bytes"));
    // A Content-Length over the limit is refused before reading anything.
    if body.size_hint().lower() > MAX_BODY_BYTES as u64 {
        return Err(too_large());
    }
    match tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, MAX_BODY_BYTES).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(error)) => Err(text(StatusCode::BAD_REQUEST, format!("cannot read the body: {error}"))),
        Err(_) => Err(text(StatusCode::REQUEST_TIMEOUT, format!("the body took over {BODY_READ_TIMEOUT:?}"))),
    }
}

/// A `text/plain` response.
fn text(status: StatusCode, message: String) -> HttpResponse {
    let mut response = hyper::Response::new(Full::new(Bytes::from(message)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

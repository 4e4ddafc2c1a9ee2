//! The client half: [`PeerNetwork`] (openraft's network factory, plus write forwarding) and [`PeerClient`].

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use hyper::StatusCode;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::http::uri::{Authority, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use openraft::error::{
    CheckIsLeaderError, ClientWriteError, InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError,
    RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tandem_storage::Command;

use super::identity_check::{LocalIdentity, Refusal, RefusalKind};
use super::redundant_heartbeat::{self, Answered, Verdict};
use super::stream_connection::{
    Answer, ConnectError, Lease, StreamConnection, StreamError, StreamSlot, Taken, read_answer,
};
use super::{
    APPEND_PATH, MAX_BODY_BYTES, POOL_IDLE_TIMEOUT, READ_INDEX_PATH, SECRET_HEADER, SNAPSHOT_PATH, VOTE_PATH,
    WRITE_PATH,
};
use crate::log_store::DurablePosition;
use crate::proposer::ProposeError;
use crate::types::{NodeId, NodeInfo, TypeConfig, Written, decode, try_encode};

/// An upper bound on TCP connect; each RPC's own ttl is usually shorter and wins.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this much of an error body is kept in error messages (an identity refusal's advice fits).
const MAX_ERROR_MESSAGE: usize = 1024;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The cluster secret is not usable as a header value (empty, or with control characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the cluster secret must be non-empty visible text without control characters")]
pub struct InvalidSecret;

/// Why a forwarded write ([`PeerNetwork::forward_write`]) failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ForwardError {
    /// No answer: the connection failed or the timeout passed. If the request had been sent, the write may
    /// still be applied: retry with the same request id.
    #[error("the leader is unreachable: {0}")]
    Unreachable(String),
    /// The node asked is not the leader either; openraft's hint at who is.
    #[error("that node is not the leader either (leader hint: {leader_id:?})")]
    NotLeader { leader_id: Option<NodeId>, leader_node: Option<NodeInfo> },
    /// The node refused the request before handing it to Raft (wrong secret, too large, ...) or answered
    /// something that does not decode.
    #[error("the leader refused the forwarded write: {0}")]
    Refused(String),
    /// The node refused who sent the write or whom it was for ([`super::identity_check`]).
    #[error("the leader refused this node: {0}")]
    IdentityRefused(Refusal),
    /// Raft on that node returned another error (shutting down, membership change in progress, ...).
    #[error("the leader failed the write: {0}")]
    Raft(String),
}

/// What a failed request to the leader means for the node that forwarded it.
fn forward_error(error: TransportError) -> ForwardError {
    match error {
        TransportError::Refused { refusal, .. } => ForwardError::IdentityRefused(refusal),
        TransportError::Connect { .. }
        | TransportError::Timeout { .. }
        | TransportError::BadAddress { .. } => ForwardError::Unreachable(error.to_string()),
        TransportError::Status { .. }
        | TransportError::TooLarge { .. }
        | TransportError::Exchange { .. }
        | TransportError::Encode(_) => ForwardError::Refused(error.to_string()),
    }
}

/// Talks to the other nodes' peer endpoints: openraft's [`RaftNetworkFactory`], and write forwarding.
///
/// Cheap to clone: every clone (and every [`PeerClient`] it makes) shares one pool of keep-alive connections.
#[derive(Clone)]
pub struct PeerNetwork {
    client: HttpClient,
    /// How the pool connects, for the replication streams' own connections ([`super::stream_connection`]).
    connector: HttpsConnector<HttpConnector>,
    /// `https` with mutual TLS ([`PeerNetwork::with_tls`]), else `http`.
    scheme: &'static str,
    secret: HeaderValue,
    /// This node's id and cluster id, sent as [`super::NODE_ID_HEADER`] and [`super::CLUSTER_ID_HEADER`] so
    /// that a peer can refuse non-members and other clusters.
    identity: Option<LocalIdentity>,
    /// What happened on the last exchange with each peer address: for status ("unreachable since").
    contacts: Arc<Mutex<HashMap<String, Contact>>>,
    /// The durable end of this node's log: the commit index sent to followers never passes it
    /// ([`PeerNetwork::with_durable_log`]).
    durable_log: Option<DurablePosition>,
}

/// The last exchanges with one peer address.
#[derive(Clone, Debug, Default)]
pub struct Contact {
    /// The last time the peer answered 200.
    pub last_ok: Option<SystemTime>,
    /// The last identity refusal (403) the peer sent, and when.
    pub last_refusal: Option<(SystemTime, Refusal)>,
    /// When that refusal was last logged (at most once per [`super::identity_check::LOG_EVERY`]).
    logged_refusal_at: Option<SystemTime>,
    /// When a failed TLS handshake with the peer was last logged (as often).
    logged_tls_at: Option<SystemTime>,
}

impl Contact {
    /// The peer's refusal, if it refused this node more recently than it last answered.
    pub fn refusing(&self) -> Option<&Refusal> {
        let (at, refusal) = self.last_refusal.as_ref()?;
        (self.last_ok.is_none_or(|ok| ok < *at)).then_some(refusal)
    }
}

impl fmt::Debug for PeerNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerNetwork").field("secret", &"<redacted>").finish_non_exhaustive()
    }
}

impl PeerNetwork {
    /// A network whose requests carry `secret`. Needs a Tokio runtime when used, not when built.
    pub fn new(secret: &str) -> Result<Self, InvalidSecret> {
        if secret.is_empty() {
            return Err(InvalidSecret);
        }
        let mut secret = HeaderValue::from_str(secret).map_err(|_| InvalidSecret)?;
        secret.set_sensitive(true);
        let (client, connector) = http_client(None);
        Ok(PeerNetwork {
            client,
            connector,
            scheme: "http",
            secret,
            identity: None,
            contacts: Arc::default(),
            durable_log: None,
        })
    }

    /// Speaks mutual TLS to every peer with `config` (the node's [`crate::tls::NodeTls::client_config`]: its
    /// certificate, the cluster CA), instead of plain HTTP. Call before the first request: the connection pool
    /// is replaced.
    pub fn with_tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        (self.client, self.connector) = http_client(Some(config));
        self.scheme = "https";
        self
    }

    /// Marks every request with this node's id and cluster id (once it has one), so that a cluster this node
    /// is not a member of refuses it.
    pub fn with_identity(mut self, identity: LocalIdentity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Lowers the commit index in every AppendEntries request (heartbeats too) to the durable end of this
    /// node's log: with `LogStore::with_leader_early_ack` openraft may count an entry committed before the
    /// leader's own copy is synced, and a follower must not apply it before then
    /// ([`crate::log_store::DurablePosition`]).
    pub fn with_durable_log(mut self, durable: DurablePosition) -> Self {
        self.durable_log = Some(durable);
        self
    }

    /// The identity the requests carry, if any.
    pub fn identity(&self) -> Option<&LocalIdentity> {
        self.identity.as_ref()
    }

    /// The last exchanges with the peer at `addr`.
    pub fn contact(&self, addr: &str) -> Contact {
        self.contacts.lock().ok().and_then(|contacts| contacts.get(addr).cloned()).unwrap_or_default()
    }

    fn record(&self, addr: &str, outcome: Result<(), &Refusal>) {
        let Ok(mut contacts) = self.contacts.lock() else { return };
        let contact = contacts.entry(addr.to_owned()).or_default();
        let now = SystemTime::now();
        match outcome {
            Ok(()) => contact.last_ok = Some(now),
            Err(refusal) => {
                let logged_recently = contact.refusing() == Some(refusal)
                    && contact.logged_refusal_at.is_some_and(|at| {
                        now.duration_since(at).unwrap_or_default() < super::identity_check::LOG_EVERY
                    });
                if !logged_recently {
                    tracing::warn!(
                        peer = addr,
                        kind = refusal.kind.as_str(),
                        "peer refused this node: {refusal}"
                    );
                    contact.logged_refusal_at = Some(now);
                }
                contact.last_refusal = Some((now, refusal.clone()));
            }
        }
    }

    /// Logs a failed TLS exchange with `addr` at `warn` (at most once per [`super::identity_check::LOG_EVERY`]
    /// per address; every failure is still returned to openraft, which logs at `debug`): a certificate refused
    /// either way is a configuration error an operator must see.
    fn maybe_warn_tls(&self, addr: &str, error: &(dyn std::error::Error + 'static), reason: &str) {
        if !is_tls_error(error) {
            return;
        }
        let Ok(mut contacts) = self.contacts.lock() else { return };
        let contact = contacts.entry(addr.to_owned()).or_default();
        let now = SystemTime::now();
        let recent = contact
            .logged_tls_at
            .is_some_and(|at| now.duration_since(at).unwrap_or_default() < super::identity_check::LOG_EVERY);
        if !recent {
            contact.logged_tls_at = Some(now);
            tracing::warn!(
                peer = addr,
                "TLS with the peer failed: {reason} (every node needs a certificate signed by the cluster CA, for \
                 the address the others dial: see `tandem cert node`)"
            );
        }
    }

    /// Sends a client write to `leader` (node `leader_id`, `POST /cluster/write`) and returns what applying it
    /// gave.
    ///
    /// The receiving node proposes it through its own [`crate::proposer::Proposer`] (so it shares an entry
    /// with the leader's other writes) and does not forward further: if it is not the leader either, this
    /// returns [`ForwardError::NotLeader`] with its hint and the caller decides.
    pub async fn forward_write(
        &self,
        leader_id: NodeId,
        leader: &NodeInfo,
        command: Command,
        timeout: Duration,
    ) -> Result<Written, ForwardError> {
        let result: Result<Written, ProposeError> = self
            .call(&leader.peer_addr, WRITE_PATH, &command, timeout, leader_id, Late::Abandon, None)
            .await
            .map_err(forward_error)?;
        match result {
            Ok(written) => Ok(written),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(hint))) => {
                Err(ForwardError::NotLeader { leader_id: hint.leader_id, leader_node: hint.leader_node })
            }
            Err(other) => Err(ForwardError::Raft(other.to_string())),
        }
    }

    /// Asks `leader` (node `leader_id`, `POST /cluster/read-index`) for the index a linearizable read must wait
    /// for: the leader confirms with a quorum that it still leads and answers its commit point
    /// (`Raft::get_read_log_id`). Errors as [`Self::forward_write`]'s, "write" read as "read".
    pub async fn read_index(
        &self,
        leader_id: NodeId,
        leader: &NodeInfo,
        timeout: Duration,
    ) -> Result<u64, ForwardError> {
        type ReadIndex = (Option<openraft::LogId<NodeId>>, Option<openraft::LogId<NodeId>>);
        let result: Result<ReadIndex, RaftError<NodeId, CheckIsLeaderError<NodeId, NodeInfo>>> = self
            .call(&leader.peer_addr, READ_INDEX_PATH, &(), timeout, leader_id, Late::Abandon, None)
            .await
            .map_err(forward_error)?;
        match result {
            Ok((read_log_id, _)) => Ok(read_log_id.map_or(0, |id| id.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(hint))) => {
                Err(ForwardError::NotLeader { leader_id: hint.leader_id, leader_node: hint.leader_node })
            }
            Err(other) => Err(ForwardError::Raft(other.to_string())),
        }
    }

    /// POSTs `body` (bincode) to `http://{addr}{path}` and decodes the bincode answer, all within `ttl`: on
    /// `stream`'s own connection when given and free ([`super::stream_connection`]), else through the pool.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &'static str,
        body: &Req,
        ttl: Duration,
        target: NodeId,
        late: Late,
        stream: Option<&StreamSlot>,
    ) -> Result<Resp, TransportError> {
        let body = try_encode(body).map_err(|e| TransportError::Encode(e.to_string()))?;
        if body.len() > MAX_BODY_BYTES {
            // The peer would answer 413; not sending spares the bandwidth and a connection reset (a server
            // refusing a body mid-upload often resets the connection before the client reads the answer).
            return Err(TransportError::TooLarge { addr: addr.to_owned(), size: body.len() });
        }
        let uri = peer_uri(self.scheme, addr, path)?;
        let mut request = hyper::Request::post(uri)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(SECRET_HEADER, self.secret.clone())
            .header(super::PROTOCOL_HEADER, super::PROTOCOL_VERSION)
            .header(super::TARGET_ID_HEADER, target);
        if let Some(identity) = &self.identity {
            request = request.header(super::NODE_ID_HEADER, identity.node_id());
            if let Some(cluster_id) = identity.cluster_id() {
                request = request.header(super::CLUSTER_ID_HEADER, cluster_id);
            }
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| TransportError::BadAddress { addr: addr.to_owned(), reason: e.to_string() })?;

        let taken = stream.map_or(Taken::Busy, StreamSlot::take);
        let mut send: Pin<Box<dyn Future<Output = Result<Answer, Failed>> + Send>> = match taken {
            Taken::Reused(connection, lease) => {
                Box::pin(on_stream(Some(connection), lease, request, self.connector.clone()))
            }
            Taken::Connect(lease) => Box::pin(on_stream(None, lease, request, self.connector.clone())),
            Taken::Busy => {
                let client = self.client.clone();
                Box::pin(async move {
                    let response = client.request(request).await.map_err(Failed::Request)?;
                    read_answer(response).await.map_err(Failed::Body)
                })
            }
        };
        // `None`: the ttl passed first.
        let answer = match tokio::time::timeout(ttl, &mut send).await {
            Ok(answer) => Some(answer),
            Err(_) => {
                if late == Late::Finish {
                    // Only now does the exchange move to a task of its own (none on the usual path): it
                    // finishes, or gives up at LATE_LIMIT, alone.
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(LATE_LIMIT, send).await;
                    });
                }
                None
            }
        };
        let Some(answer) = answer else {
            return Err(TransportError::Timeout { addr: addr.to_owned(), ttl });
        };
        let (status, refusal_header, bytes) = answer.map_err(|failed| match failed {
            Failed::Request(e) => {
                let reason = error_chain(&e);
                self.maybe_warn_tls(addr, &e, &reason);
                if e.is_connect() {
                    TransportError::Connect { addr: addr.to_owned(), reason }
                } else {
                    TransportError::Exchange { addr: addr.to_owned(), reason }
                }
            }
            Failed::Connect(e) => {
                let reason = error_chain(&*e);
                self.maybe_warn_tls(addr, &*e, &reason);
                TransportError::Connect { addr: addr.to_owned(), reason }
            }
            Failed::Exchange(e) => {
                TransportError::Exchange { addr: addr.to_owned(), reason: error_chain(&e) }
            }
            Failed::Closed => TransportError::Exchange {
                addr: addr.to_owned(),
                reason: "the connection closed before the answer came".to_owned(),
            },
            Failed::Body(reason) => TransportError::Exchange {
                addr: addr.to_owned(),
                reason: format!("reading the response body: {reason}"),
            },
        })?;
        let refusal_kind = refusal_header.as_ref().and_then(|v| v.to_str().ok()).and_then(RefusalKind::parse);
        if status != StatusCode::OK {
            let shown = &bytes[..bytes.len().min(MAX_ERROR_MESSAGE)];
            let message = String::from_utf8_lossy(shown).trim().to_owned();
            if let (StatusCode::FORBIDDEN, Some(kind)) = (status, refusal_kind) {
                let refusal = Refusal { kind, message };
                self.record(addr, Err(&refusal));
                return Err(TransportError::Refused { addr: addr.to_owned(), refusal });
            }
            return Err(TransportError::Status { addr: addr.to_owned(), status, message });
        }
        self.record(addr, Ok(()));
        decode::<Resp>(&bytes).map_err(|e| TransportError::Exchange {
            addr: addr.to_owned(),
            reason: format!("undecodable response: {e}"),
        })
    }
}

/// What happens to an exchange with a peer that is still running when its ttl passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Late {
    /// Dropped, with the connection it holds: forwarded writes, read-index and campaign requests, whose
    /// caller has moved on (a write that arrives late could be applied after its client was told it failed).
    Abandon,
    /// Finished in the background (for at most [`LATE_LIMIT`]), its answer discarded: Raft's own RPCs. On
    /// HTTP/1.1 a request can only be abandoned by closing its connection, and on a slow or lossy link the
    /// new connection's TCP and TLS handshakes (two to three round trips, more after a lost packet) can take
    /// longer than the next RPC's ttl, which then abandons that connection too: measured with 50 ms ± 20 ms
    /// and 5 % loss (`tests/partition.rs`, (f)), no heartbeat got through and elections never ended.
    /// Finishing late puts the connection back in the pool for the next RPC. Raft tolerates the late
    /// delivery: a stale append or vote is recognised by its term and log position.
    Finish,
}

/// The longest a [`Late::Finish`] exchange goes on after its ttl (TCP connect is bounded by
/// [`CONNECT_TIMEOUT`] anyway).
const LATE_LIMIT: Duration = Duration::from_secs(3);

/// Why an exchange failed, before it is told apart into a [`TransportError`] (on the caller's side, where
/// the peer's contact record is).
enum Failed {
    Request(hyper_util::client::legacy::Error),
    /// A stream's own connection could not be made.
    Connect(ConnectError),
    /// A stream's own connection broke mid-exchange.
    Exchange(hyper::Error),
    /// A stream's own connection ended before the answer.
    Closed,
    Body(String),
}

impl From<StreamError> for Failed {
    fn from(error: StreamError) -> Self {
        match error {
            StreamError::Connect(e) => Failed::Connect(e),
            StreamError::Exchange(e) => Failed::Exchange(e),
            StreamError::Closed => Failed::Closed,
            StreamError::Body(reason) => Failed::Body(reason),
        }
    }
}

/// One exchange on a replication stream's own connection: `reused` if it had one, else a new one; a reused
/// one that fails before answering (the peer closed it meanwhile) is replaced once (see
/// [`super::stream_connection`]). The connection goes back through `lease` if the exchange ended well.
async fn on_stream(
    reused: Option<Box<StreamConnection>>,
    lease: Lease,
    request: hyper::Request<Full<Bytes>>,
    connector: HttpsConnector<HttpConnector>,
) -> Result<Answer, Failed> {
    let uri = request.uri().clone();
    let request = match reused {
        Some(mut connection) => {
            let again = copy_request(&request);
            match connection.exchange(request).await {
                Ok(answer) => {
                    lease.give_back(Some(connection));
                    return Ok(answer);
                }
                Err(StreamError::Closed | StreamError::Exchange(_)) => again,
                Err(other) => return Err(other.into()),
            }
        }
        None => request,
    };
    let mut connection = StreamConnection::open(&connector, &uri).await?;
    let answer = connection.exchange(request).await?;
    lease.give_back(Some(connection));
    Ok(answer)
}

/// A copy of `request` (its body is shared bytes), to send again on a new connection.
fn copy_request(request: &hyper::Request<Full<Bytes>>) -> hyper::Request<Full<Bytes>> {
    let mut copy = hyper::Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.headers_mut() = request.headers().clone();
    copy
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        PeerClient {
            network: self.clone(),
            target,
            node: node.clone(),
            answered: None,
            stream: StreamSlot::default(),
            appended: false,
        }
    }
}

/// The connection to one peer that openraft uses for replication and elections.
#[derive(Clone, Debug)]
pub struct PeerClient {
    network: PeerNetwork,
    target: NodeId,
    node: NodeInfo,
    /// This client's last AppendEntries answered `Success` ([`super::redundant_heartbeat`]).
    answered: Option<Answered>,
    /// The AppendEntries requests' own connection ([`super::stream_connection`]), used from the second
    /// AppendEntries on: openraft's leadership checks (for linearizable reads) make a new client for a single
    /// AppendEntries, which the pool's kept-alive connections serve better than a connection of its own.
    stream: StreamSlot,
    /// Whether this client sent an AppendEntries before.
    appended: bool,
}

impl PeerClient {
    /// One RPC to the target, with failures classified for openraft (see the table in the module docs).
    ///
    /// `entries` is the number of entries of an AppendEntries request: one with several entries that is over
    /// [`MAX_BODY_BYTES`] (found before sending, or answered 413) becomes `PayloadTooLarge`, so that openraft
    /// retries at once with half as many. A single entry cannot be split, so that case (and too large on other
    /// routes) is `Unreachable`, to back off rather than spin.
    async fn rpc<Req, Resp, E>(
        &self,
        path: &'static str,
        rpc: &Req,
        ttl: Duration,
        entries: Option<u64>,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let stream = (entries.is_some() && self.appended).then_some(&self.stream);
        let result: Result<Resp, RaftError<NodeId, E>> = match self
            .network
            .call(&self.node.peer_addr, path, rpc, ttl, self.target, Late::Finish, stream)
            .await
        {
            Ok(result) => result,
            Err(error) => {
                tracing::debug!(target_node = self.target, %error, "peer RPC failed");
                return Err(match error {
                    TransportError::TooLarge { .. }
                    | TransportError::Status { status: StatusCode::PAYLOAD_TOO_LARGE, .. }
                        if entries.is_some_and(|n| n > 1) =>
                    {
                        let entries = entries.unwrap_or(2);
                        RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries / 2))
                    }
                    TransportError::BadAddress { .. }
                    | TransportError::Connect { .. }
                    | TransportError::Timeout { .. }
                    | TransportError::Status { .. }
                    | TransportError::Refused { .. }
                    | TransportError::TooLarge { .. } => RPCError::Unreachable(Unreachable::new(&error)),
                    TransportError::Exchange { .. } | TransportError::Encode(_) => {
                        RPCError::Network(NetworkError::new(&error))
                    }
                });
            }
        };
        result
            .map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        if let Some(durable) = &self.network.durable_log {
            match redundant_heartbeat::verdict(&rpc, self.answered.as_ref(), durable) {
                Verdict::Send => {}
                Verdict::Redundant => return Ok(AppendEntriesResponse::Success),
                Verdict::RedundantOnceWrittenPast(index) => {
                    if durable.written_past(index, redundant_heartbeat::PENDING_WAIT).await {
                        return Ok(AppendEntriesResponse::Success);
                    }
                }
            }
            rpc.leader_commit = durable.clamp(self.target, rpc.leader_commit);
        }
        let entries = rpc.entries.len() as u64;
        let result = self.rpc(APPEND_PATH, &rpc, option.hard_ttl(), Some(entries)).await;
        self.appended = true;
        self.answered = matches!(result, Ok(AppendEntriesResponse::Success)).then(|| Answered::now(&rpc));
        result
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc(SNAPSHOT_PATH, &rpc, option.hard_ttl(), None).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.rpc(VOTE_PATH, &rpc, option.hard_ttl(), None).await
    }
}

/// What went wrong below Raft while talking to a peer.
#[derive(Debug, thiserror::Error)]
pub(super) enum TransportError {
    #[error("invalid peer address {addr:?}: {reason}")]
    BadAddress { addr: String, reason: String },
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("no answer from {addr} within {ttl:?}")]
    Timeout { addr: String, ttl: Duration },
    #[error("{addr} answered {status}: {message}")]
    Status { addr: String, status: StatusCode, message: String },
    /// The peer refused who sent the request or whom it was for (403 with a [`REFUSAL_HEADER`]).
    #[error("{addr} refused this node ({}): {refusal}", refusal.kind.as_str())]
    Refused { addr: String, refusal: Refusal },
    #[error("the request for {addr} is {size} bytes, over the {MAX_BODY_BYTES}-byte limit")]
    TooLarge { addr: String, size: usize },
    #[error("exchange with {addr} failed: {reason}")]
    Exchange { addr: String, reason: String },
    #[error("cannot encode the request: {0}")]
    Encode(String),
}

/// `{scheme}://{addr}{path}`, where `addr` must be a plain `host:port` (no user info, path or query).
fn peer_uri(scheme: &str, addr: &str, path: &'static str) -> Result<Uri, TransportError> {
    let bad = |reason: String| TransportError::BadAddress { addr: addr.to_owned(), reason };
    let authority: Authority = addr.parse().map_err(|e: hyper::http::uri::InvalidUri| bad(e.to_string()))?;
    if addr.contains('@') || authority.port_u16().is_none() {
        return Err(bad("expected host:port".to_owned()));
    }
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|e| bad(e.to_string()))
}

/// The one pool of keep-alive connections of a [`PeerNetwork`]: plain HTTP, or HTTPS with `tls`; and its
/// connector.
fn http_client(tls: Option<Arc<rustls::ClientConfig>>) -> (HttpClient, HttpsConnector<HttpConnector>) {
    let mut connector = HttpConnector::new();
    connector.enforce_http(false);
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.set_keepalive(Some(Duration::from_secs(30)));
    let tls = match tls {
        Some(config) => (*config).clone(),
        // Never used for an `http` URI; a configuration is needed all the same.
        None => crate::tls::client_config_with_roots(rustls::RootCertStore::empty()),
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    let client = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(16)
        .build(connector.clone());
    (client, connector)
}

/// Whether a TLS error ([`rustls::Error`]: a certificate refused by either side, a failed handshake) is among
/// `error` and its sources (hyper-rustls passes them up inside `std::io::Error`s).
fn is_tls_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && io.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
        {
            return true;
        }
        current = error.source();
    }
    false
}

/// An error and its sources, `outer: inner: innermost` (hyper's own messages are terse).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_uris() {
        assert_eq!(
            peer_uri("http", "127.0.0.1:7001", VOTE_PATH).unwrap().to_string(),
            "http://127.0.0.1:7001/raft/vote"
        );
        assert_eq!(
            peer_uri("https", "[::1]:7001", WRITE_PATH).unwrap().to_string(),
            "https://[::1]:7001/cluster/write"
        );
        assert_eq!(
            peer_uri("http", "node-a:7001", APPEND_PATH).unwrap().to_string(),
            "http://node-a:7001/raft/append"
        );
        for bad in ["", "127.0.0.1", "user@127.0.0.1:7001", "127.0.0.1:7001/x", "a b:1"] {
            assert!(peer_uri("http", bad, VOTE_PATH).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn secrets() {
        assert_eq!(PeerNetwork::new("").unwrap_err(), InvalidSecret);
        assert_eq!(PeerNetwork::new("a\nb").unwrap_err(), InvalidSecret);
        let network = PeerNetwork::new("s3cret").unwrap();
        assert!(!format!("{network:?}").contains("s3cret"));
    }
}

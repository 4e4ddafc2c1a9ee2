//! The admin HTTP API: JSON over HTTP/1.1 on the node's API address.
//!
//! [`ROUTES`] is the one table of the API: every endpoint with the access it needs, whether a witness answers
//! it, and the handler that answers it. A request is looked up there once ([`routes::lookup`]); the caller's
//! bearer token is checked against the route's access ([`crate::auth`]), and the route's handler runs — so
//! authorization and dispatch cannot disagree. `GET /v1/openapi.json` describes the same table (a test keeps
//! them equal). Handlers are grouped by resource, one file each: [`system`] (liveness, readiness, metrics,
//! node, status), [`documents`], [`changes`], [`history`] (events, export, diff, revert, undo, import),
//! [`audit`] (the hash chain), [`forget`] (forgetting history before a revision),
//! [`watch`], [`backup`], [`blobs`], [`cluster`] (membership), [`terminals`] and [`boot`] (what the boot
//! server sees), [`openapi`]. `GET /` and `/console/{name}` serve the browser console
//! ([`console`], with the files in [`crate::node::console`]).
//!
//! Every response carries `X-Tandem-Revision`: the revision of the store that answered. Errors have one shape
//! ([`ApiError`]): `{code, message, hint}`. Writes go through [`ClusterNode::write`], which forwards to the
//! leader; membership changes made on a follower are proxied to the leader's API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tandem_cluster::Role;
use tandem_cluster::node::{ClusterNode, ReadError, WriteError};
use tandem_storage::{ChangeMeta, ChangeSet, Command, Event, Outcome, Rejection};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::{Access, Caller, Tokens};
use crate::http::{ApiError, Body, json_response, query_pairs};
use crate::limits::HttpLimits;
use crate::node::metrics::Metrics;

pub mod audit;
pub mod backup;
pub mod blobs;
pub mod boot;
pub mod changes;
pub mod cluster;
pub mod console;
pub mod documents;
pub mod forget;
pub mod history;
pub mod openapi;
pub mod routes;
pub mod system;
pub mod terminals;
pub mod watch;

use routes::{Call, Lookup, Route, handler, route, serves_configuration};

/// Every endpoint of the admin API, its access, its summary and its handler. Routes made with
/// [`serves_configuration`] are refused by a witness, which holds no configuration.
#[rustfmt::skip]
pub const ROUTES: &[Route] = &[
    route("GET", "/", Access::Public, "The operator console (a witness: a line saying what it is)", handler!(console::page)),
    route("GET", "/console/{name}", Access::Public, "The console's style sheet and script", handler!(console::asset)),
    route("GET", "/livez", Access::Public, "Liveness: the process answers", handler!(system::livez)),
    route("GET", "/readyz", Access::Public, "Readiness: the node is a member of a cluster", handler!(system::readyz)),
    route("GET", "/metrics", Access::Read, "Prometheus metrics (text format)", handler!(system::metrics)),
    route("GET", "/v1/openapi.json", Access::Read, "This API's OpenAPI 3 document", handler!(openapi::document)),
    route("GET", "/v1/node", Access::Read, "Who this node is (name, id, role, addresses)", handler!(system::node)),
    route("GET", "/v1/status", Access::Read, "Node, Raft, cluster, terminal and backup status", handler!(system::status)),
    route("GET", "/v1/whoami", Access::Read, "The calling token's name and role", handler!(system::whoami)),
    serves_configuration(route("GET", "/v1/terminals", Access::Read, "Every configured terminal and what this node hears from it", handler!(terminals::list))),
    serves_configuration(route("GET", "/v1/boot", Access::Read, "This node's boot server counters and the firmware it serves", handler!(boot::stats))),
    serves_configuration(route("GET", "/v1/docs/{collection}", Access::Read, "List the documents of a collection", handler!(documents::list))),
    serves_configuration(route("GET", "/v1/docs/{collection}/{id}", Access::Read, "One document, now or at a revision", handler!(documents::get))),
    serves_configuration(route("PUT", "/v1/docs/{collection}/{id}", Access::Operate, "Create or replace a document", handler!(documents::put))),
    serves_configuration(route("DELETE", "/v1/docs/{collection}/{id}", Access::Operate, "Delete a document", handler!(documents::delete))),
    serves_configuration(route("POST", "/v1/changes", Access::Operate, "Apply a change set atomically", handler!(changes::post))),
    serves_configuration(route("GET", "/v1/history", Access::Read, "Events: who changed what, filtered", handler!(history::list))),
    serves_configuration(route("GET", "/v1/history/verify", Access::Read, "Recompute this node's history hash chain", handler!(audit::verify))),
    serves_configuration(route("GET", "/v1/history/chain", Access::Read, "The stored chain hashes of a range of revisions", handler!(audit::hashes))),
    serves_configuration(route("POST", "/v1/history/forget", Access::Admin, "Forget the history before a revision (dry_run: preview)", handler!(forget::forget))),
    serves_configuration(route("GET", "/v1/export", Access::Read, "The whole configuration (now or at a revision) as JSON", handler!(history::export))),
    serves_configuration(route("GET", "/v1/diff", Access::Read, "Differences between two revisions", handler!(history::diff))),
    serves_configuration(route("POST", "/v1/revert", Access::Operate, "Make the configuration equal to a past revision", handler!(history::revert))),
    serves_configuration(route("POST", "/v1/undo", Access::Operate, "Apply the inverse of one change set", handler!(history::undo))),
    serves_configuration(route("POST", "/v1/import", Access::Operate, "Make the configuration equal to an export", handler!(history::import))),
    serves_configuration(route("GET", "/v1/watch", Access::Read, "Stream events from a revision on (NDJSON or SSE)", handler!(watch::watch))),
    serves_configuration(route("GET", "/v1/backup", Access::Operate, "Stream a backup of the store", handler!(backup::backup))),
    serves_configuration(route("POST", "/v1/blobs", Access::Operate, "Upload a blob (streamed)", handler!(blobs::upload))),
    serves_configuration(route("GET", "/v1/blobs", Access::Read, "Every blob and what references it", handler!(blobs::list))),
    serves_configuration(route("DELETE", "/v1/blobs/{sha256}", Access::Admin, "Remove a blob nothing references", handler!(blobs::remove))),
    serves_configuration(route("GET", "/v1/blobs/{sha256}", Access::Read, "A blob's size, if the store has it", handler!(blobs::size))),
    serves_configuration(route("GET", "/v1/blobs/{sha256}/data", Access::Read, "A blob's bytes", handler!(blobs::blob_data))),
    route("GET", "/v1/cluster/servers", Access::Read, "The cluster's members", handler!(cluster::list)),
    route("POST", "/v1/cluster/servers", Access::Admin, "Add a member", handler!(cluster::add)),
    route("DELETE", "/v1/cluster/servers/{name}", Access::Admin, "Remove a member", handler!(cluster::remove)),
    route("POST", "/v1/cluster/leader", Access::Admin, "Hand leadership over to a data node", handler!(cluster::lead)),
    route(
        "PUT",
        "/v1/cluster/servers/{name}/role",
        Access::Admin,
        "Switch a member between data node and mirror (dry_run: preview)",
        handler!(cluster::set_role),
    ),
];

/// What the API handlers share.
#[derive(Debug)]
pub struct ApiState {
    pub node: Arc<ClusterNode>,
    pub metrics: Arc<Metrics>,
    pub boot: crate::node::boot::BootState,
    /// The node's API tokens (empty: open, loopback only).
    pub tokens: Tokens,
    /// What the backup scheduler last did (`"backup"` in `GET /v1/status`).
    pub backup: crate::node::backup::BackupState,
    /// Connection caps, timeouts, concurrent backups.
    pub limits: ApiLimits,
    /// `[audit]`: e.g. whether every change needs a reason.
    pub audit: crate::config::AuditSettings,
    /// `[tls]`: the API is served over HTTPS, and the leader's API is reached over HTTPS. None: plain HTTP.
    pub tls: Option<tandem_cluster::tls::NodeTls>,
}

impl ApiState {
    /// The scheme of every node's admin API in this cluster (all are configured alike).
    pub fn api_scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// The admin API's limits: its listener's (see [`crate::limits`]) and the cap on concurrent backups.
#[derive(Debug)]
pub struct ApiLimits {
    pub http: HttpLimits,
    /// One permit per backup streamed at once; `GET /v1/backup` answers `503` when none is left.
    pub backups: Arc<tokio::sync::Semaphore>,
    /// Where a backup is written before it is sent (the data directory: never a RAM-backed `/tmp`).
    pub spool_dir: std::path::PathBuf,
}

impl ApiLimits {
    pub fn new(http: HttpLimits, max_concurrent_backups: usize, spool_dir: std::path::PathBuf) -> Self {
        let backups = Arc::new(tokio::sync::Semaphore::new(max_concurrent_backups.max(1)));
        ApiLimits { http, backups, spool_dir }
    }
}

/// Serves the admin API on `listener` until `shutdown` is cancelled, within `state.limits`: a connection over
/// the caps is refused before anything is read, a request head (and, with `state.tls`, the TLS handshake
/// before it) must arrive within the header timeout, and a client that stops taking a response is
/// disconnected after the stall timeout.
pub async fn serve_api(listener: TcpListener, state: Arc<ApiState>, shutdown: CancellationToken) {
    let connections = tokio_util::task::TaskTracker::new();
    let gate = state.limits.http.gate();
    let tls = state.tls.as_ref().map(|tls| tokio_rustls::TlsAcceptor::from(tls.api_server_config()));
    loop {
        let (stream, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting an API connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some((stream, permit)) = crate::limits::admit(&gate, stream, remote, "admin API") else {
            continue;
        };
        let limits = state.limits.http;
        let state = state.clone();
        let handler = move |request| handle(state.clone(), remote, request);
        let stop = (shutdown.clone(), Duration::from_secs(2));
        let tls = tls.clone();
        connections.spawn(async move {
            crate::limits::serve_connection(stream, remote, limits, tls, handler, stop, "admin API").await;
            drop(permit);
        });
    }
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(3), connections.wait()).await;
}

async fn handle(state: Arc<ApiState>, remote: SocketAddr, request: Request<Incoming>) -> Response<Body> {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let lookup = routes::lookup(&method, &path);
    let mut response = match answer(&state, &lookup, remote, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    // RFC 9110: a 405 names the methods the path does allow.
    if let Lookup::WrongMethod(allowed) = &lookup
        && let Ok(value) = HeaderValue::from_str(&allowed.join(", "))
    {
        response.headers_mut().insert(hyper::header::ALLOW, value);
    }
    // A handler that answered from a known revision (a backup's snapshot) has set the header already.
    if !response.headers().contains_key("x-tandem-revision") {
        let revision = state.node.revision();
        if let Ok(value) = HeaderValue::from_str(&revision.to_string()) {
            response.headers_mut().insert("x-tandem-revision", value);
        }
    }
    state.metrics.observe_api(method.as_str(), response.status().as_u16(), started.elapsed());
    response
}

/// Checks the caller's token against the request's route, then runs the route's handler.
async fn answer(
    state: &ApiState,
    lookup: &Lookup,
    remote: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let method = request.method();
    let path = request.uri().path();
    let route = match lookup {
        Lookup::Found(route) => route,
        Lookup::WrongMethod(allowed) => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed on {path}"),
            )
            .with_hint(format!("allowed: {}", allowed.join(", "))));
        }
        Lookup::NotFound => {
            return Err(ApiError::not_found(format!("no such endpoint: {method} {path}"))
                .with_hint("GET /v1/openapi.json lists every endpoint"));
        }
    };
    let mut caller = state.tokens.authorize(request.headers(), route.access)?;
    caller.source = Some(remote);
    caller.actor = named_actor(request.headers())?;
    if route.serves_configuration && state.node.role() == Role::Witness {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "witness",
            "this node is a witness: it serves no configuration",
        )
        .with_hint("ask a data node or a mirror"));
    }
    let params = route.params(path);
    let query = query_pairs(request.uri().query());
    (route.handler)(Call { state, caller, request, params, query }).await
}

/// The header in which a client names who is acting (`tandem --actor`, `TANDEM_ACTOR`); the token's name
/// when absent.
pub const ACTOR_HEADER: &str = "x-tandem-actor";

fn named_actor(headers: &hyper::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(ACTOR_HEADER) else { return Ok(None) };
    let actor = value.to_str().map_err(|_| {
        ApiError::bad_request(format!("the {ACTOR_HEADER} header must be printable ASCII text"))
    })?;
    let actor = actor.trim();
    if actor.len() > tandem_storage::limits::MAX_SHORT_TEXT {
        return Err(ApiError::bad_request(format!(
            "the {ACTOR_HEADER} header may hold at most {} bytes",
            tandem_storage::limits::MAX_SHORT_TEXT
        )));
    }
    Ok((!actor.is_empty()).then(|| actor.to_string()))
}

/// Proposes `command` through this node and counts the proposal's fate in the metrics (failed, rejected or
/// committed); a failure to propose becomes its API error.
pub(crate) async fn propose(state: &ApiState, command: Command) -> Result<tandem_cluster::Written, ApiError> {
    let response = match state.node.write(command).await {
        Ok(response) => response,
        Err(error) => {
            state.metrics.observe_proposal("failed");
            return Err(write_error(error));
        }
    };
    let rejected = matches!(response.outcome, Outcome::Rejected(_));
    state.metrics.observe_proposal(if rejected { "rejected" } else { "committed" });
    Ok(response)
}

pub(crate) async fn write(state: &ApiState, change: ChangeSet) -> Result<Response<Body>, ApiError> {
    require_reason(state, &change.meta.reason)?;
    let response = propose(state, Command::Change(change)).await?;
    match response.outcome {
        Outcome::Accepted { revision } => {
            Ok(json_response(StatusCode::OK, &json!({"outcome": "accepted", "revision": revision})))
        }
        Outcome::Duplicate { revision } => {
            Ok(json_response(StatusCode::OK, &json!({"outcome": "duplicate", "revision": revision})))
        }
        Outcome::Rejected(rejection) => Err(rejection_error(&rejection)),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("unexpected outcome {other:?}"),
        )),
    }
}

/// With `[audit] require_reason = true`, a change without a reason is refused before it is proposed.
pub(crate) fn require_reason(state: &ApiState, reason: &str) -> Result<(), ApiError> {
    if state.audit.require_reason && reason.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "reason_required",
            "this installation requires a reason for every change ([audit] require_reason = true); nothing was written",
        )
        .with_hint("say why: tandem put|delete … --reason TEXT, or \"reason\" in the change set (?reason= for PUT/DELETE /v1/docs)"));
    }
    Ok(())
}

/// Maps a rejection to its HTTP status: preconditions 412, sizes 413, everything else 422.
pub fn rejection_error(rejection: &Rejection) -> ApiError {
    let (status, code) = match rejection {
        Rejection::PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, "precondition_failed"),
        Rejection::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        Rejection::NoSuchDocument { .. } => (StatusCode::NOT_FOUND, "no_such_document"),
        _ => (StatusCode::UNPROCESSABLE_ENTITY, "rejected"),
    };
    ApiError::new(status, code, rejection.to_string())
}

pub(crate) fn write_error(error: WriteError) -> ApiError {
    match &error {
        WriteError::ReadOnlyMirror { primary } => {
            ApiError::new(StatusCode::FORBIDDEN, "read_only_mirror", error.to_string())
                .with_hint(format!("primary: {primary}"))
        }
        WriteError::Witness => ApiError::new(StatusCode::FORBIDDEN, "witness", error.to_string()),
        WriteError::NoQuorum { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_quorum", error.to_string())
                .with_hint("tandem recover --data-dir DIR --force-standalone (on the stopped survivor)")
        }
        WriteError::Failed(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", error.to_string())
        }
    }
}

pub(crate) fn read_error(error: ReadError) -> ApiError {
    match &error {
        ReadError::Witness => ApiError::new(StatusCode::FORBIDDEN, "witness", error.to_string()),
        ReadError::NoLeader { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_leader", error.to_string())
                .with_hint("`tandem status` on this node shows which members it reaches")
        }
        ReadError::Behind { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "behind", error.to_string())
        }
    }
}

/// Maps a storage error of a read: a request that cannot be answered (400), a forgotten revision (410
/// `forgotten`, naming where the history starts), anything else 500.
pub(crate) fn storage_error(error: tandem_storage::Error) -> ApiError {
    match error {
        tandem_storage::Error::InvalidRequest(message) => ApiError::bad_request(message),
        error @ tandem_storage::Error::Forgotten { .. } => {
            ApiError::new(StatusCode::GONE, "forgotten", error.to_string())
                .with_hint("`tandem history` shows where the history starts now")
        }
        other => internal(&other.to_string()),
    }
}

pub(crate) fn internal(message: &str) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
}

pub(crate) fn query_value<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

pub(crate) fn query_number(query: &[(String, String)], key: &str) -> Result<Option<u64>, ApiError> {
    match query_value(query, key) {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!("query parameter '{key}' must be a whole number, not '{text}'"))
        }),
    }
}

pub(crate) fn meta_from(query: &[(String, String)], caller: &Caller) -> ChangeMeta {
    caller.change_meta(
        query_value(query, "reason").unwrap_or_default().to_string(),
        // An empty request id is no request id: it would make every later request with one a "duplicate".
        query_value(query, "request_id").filter(|id| !id.is_empty()).map(str::to_string),
    )
}

/// A stored document body as JSON. Bodies are canonical JSON written by the store, so one that does not parse
/// is damage: it is shown as its text rather than as `null`, which would read as a deletion.
fn stored_body(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|_| serde_json::Value::String(body.to_string()))
}

/// An event as the API shows it.
pub fn event_json(event: &Event) -> serde_json::Value {
    let changes: Vec<serde_json::Value> = event
        .changes
        .iter()
        .map(|change| {
            json!({"collection": change.key.collection, "id": change.key.id,
                   "document": change.after.as_deref().map(stored_body)})
        })
        .collect();
    json!({"revision": event.revision, "actor": event.meta.actor, "reason": event.meta.reason,
           "timestamp_ms": event.meta.timestamp_ms, "request_id": event.meta.request_id,
           "token": event.meta.token, "source": event.meta.source, "changes": changes})
}

/// The JSON bodies of the admin API, for the `api_json` fuzz target (feature `fuzzing`).
#[cfg(feature = "fuzzing")]
pub mod fuzz {
    use tandem_storage::{ChangeSet, Export};

    use crate::http::parse_json;

    /// What a body parsed as, for the target to take further.
    #[derive(Debug, Default)]
    pub struct Parsed {
        /// A valid `POST /v1/changes` body, as the change set it proposes.
        pub change_set: Option<ChangeSet>,
        /// The export of a valid `POST /v1/import` body.
        pub export: Option<Export>,
    }

    /// Parses `body` as every JSON body the admin API accepts, with the API's own input types and
    /// [`parse_json`].
    pub fn bodies(body: &[u8]) -> Parsed {
        let _ = parse_json::<serde_json::Value>(body);
        let _ = parse_json::<super::cluster::AddServerInput>(body);
        let _ = parse_json::<super::cluster::RoleInput>(body);
        let _ = parse_json::<super::history::RevertInput>(body);
        let _ = parse_json::<super::history::UndoInput>(body);
        let _ = parse_json::<super::forget::ForgetInput>(body);
        Parsed {
            change_set: parse_json::<super::changes::ChangeSetInput>(body).ok().map(|input| {
                input.into_change_set(|reason, request_id| tandem_storage::ChangeMeta {
                    actor: "fuzz".into(),
                    reason,
                    request_id,
                    ..tandem_storage::ChangeMeta::default()
                })
            }),
            export: parse_json::<super::history::ImportInput>(body).ok().map(|input| input.export),
        }
    }
}

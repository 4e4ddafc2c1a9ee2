//! The admin HTTP API: JSON over HTTP/1.1 on the node's API address.
//!
//! [`routes::ROUTES`] lists every endpoint with the access it needs, and `GET /v1/openapi.json` describes them
//! all; [`auth`] checks the caller's bearer token against the route before a handler runs. Handlers of one
//! concern live in their own file: `history` (export, diff, revert, undo, import), `watch`, `backup`,
//! `blobs`, `openapi`; documents, changes, history listing and membership are here.
//!
//! Every response carries `X-Tandem-Revision`: the revision of the store that answered. Errors have one shape
//! ([`ApiError`]): `{code, message, hint}`. Writes go through [`ClusterNode::write`], which forwards to the leader;
//! membership changes made on a follower are proxied to the leader's API.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tandem_cluster::node::{ClusterNode, MembershipError, WriteError};
use tandem_cluster::{NodeId, NodeInfo, Role};
use tandem_storage::limits::{MAX_BLOB_CHUNK, MAX_CHANGE_SET_BYTES};
use tandem_storage::{
    ChangeMeta, ChangeSet, Command, DocKey, Event, HistoryFilter, Operation, Outcome, Precondition,
    Rejection, Revision, StoredDocument,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http::{ApiError, Body, json_response, parse_json, query_pairs, read_body, text_response};
use crate::node::metrics::Metrics;

mod backup;
mod blobs;
mod history;
mod openapi;
pub mod routes;
mod watch;

use crate::auth::{Caller, Tokens};
use routes::Lookup;

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
}

/// Serves the admin API on `listener` until `shutdown` is cancelled.
pub async fn serve_api(listener: TcpListener, state: Arc<ApiState>, shutdown: CancellationToken) {
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, _) = tokio::select! {
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
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(state, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), connection).await;
                }
            }
        });
    }
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(3), connections.wait()).await;
}

async fn handle(state: Arc<ApiState>, request: Request<Incoming>) -> Response<Body> {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let mut response = match authorize(&state, &request) {
        Ok(caller) => match route(&state, &caller, request).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        },
        Err(error) => {
            let mut response = error.into_response();
            // RFC 9110: a 405 names the methods the path does allow.
            if let Lookup::WrongMethod(allowed) = routes::lookup(&method, &path)
                && let Ok(value) = HeaderValue::from_str(&allowed.join(", "))
            {
                response.headers_mut().insert(hyper::header::ALLOW, value);
            }
            response
        }
    };
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

/// Finds the request's route in [`routes::ROUTES`] and checks the caller's token against it.
fn authorize(state: &ApiState, request: &Request<Incoming>) -> Result<Caller, ApiError> {
    let method = request.method();
    let path = request.uri().path();
    match routes::lookup(method, path) {
        Lookup::Found(route) => state.tokens.authorize(request.headers(), route.access),
        Lookup::WrongMethod(allowed) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        )
        .with_hint(format!("allowed: {}", allowed.join(", ")))),
        Lookup::NotFound => Err(ApiError::not_found(format!("no such endpoint: {method} {path}"))
            .with_hint("GET /v1/openapi.json lists every endpoint")),
    }
}

async fn route(
    state: &ApiState,
    caller: &Caller,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let query = query_pairs(request.uri().query());
    let method = request.method().clone();
    let headers = request.headers().clone();
    let node = &state.node;
    match (&method, segments.as_slice()) {
        (&Method::GET, ["livez"]) => Ok(text_response(StatusCode::OK, "text/plain", "ok\n")),
        (&Method::GET, ["readyz"]) => {
            let status = node.status();
            if status.mode == "joining" {
                Ok(text_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "joining: not a member yet\n",
                ))
            } else {
                Ok(text_response(StatusCode::OK, "text/plain", "ready\n"))
            }
        }
        (&Method::GET, ["metrics"]) => {
            state.metrics.refresh(node);
            Ok(text_response(StatusCode::OK, "text/plain; version=0.0.4", state.metrics.render()))
        }
        (&Method::GET, ["v1", "node"]) => Ok(json_response(
            StatusCode::OK,
            &json!({"id": node.id, "name": node.info.name, "role": node.role(), "peer_addr": node.info.peer_addr,
                    "api_addr": node.info.api_addr, "boot_addr": node.info.boot_addr,
                    "initialized": !node.is_pristine().await}),
        )),
        (&Method::GET, ["v1", "status"]) => {
            let mut status = serde_json::to_value(node.status()).unwrap_or_default();
            let (green, red) = state.boot.heartbeats.online_by_state(crate::node::boot::ONLINE_WINDOW);
            let (known, cluster_id) = state
                .node
                .store
                .read()
                .map(|s| (s.projection().collection("terminals").count(), s.cluster_id().to_string()))
                .unwrap_or_default();
            status["cluster_id"] = json!(cluster_id);
            status["recent_changes"] = recent_changes(node, 5);
            status["terminals"] = json!({"online": green + red, "green": green, "red": red,
                                         "offline": known.saturating_sub(green + red)});
            status["backup"] = state.backup.status_json();
            Ok(json_response(StatusCode::OK, &status))
        }
        (
            _,
            ["v1", "docs" | "changes" | "history" | "export" | "diff" | "revert" | "undo" | "import", ..],
        )
        | (_, ["v1", "watch" | "backup" | "blobs", ..])
            if node.role() == Role::Witness =>
        {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "witness",
                "this node is a witness: it serves no configuration",
            )
            .with_hint("ask a data node or a mirror"))
        }
        (&Method::GET, ["v1", "docs", collection]) => list_documents(node, collection),
        (&Method::GET, ["v1", "docs", collection, id]) => get_document(node, collection, id, &query).await,
        (&Method::PUT, ["v1", "docs", collection, id]) => {
            let body = read_body(request.into_body(), MAX_CHANGE_SET_BYTES + 4096).await?;
            let document: serde_json::Value = parse_json(&body)?;
            let mut change = ChangeSet::new(meta_from(&query, &caller.name));
            change.operations.push(Operation::Put {
                collection: collection.to_string(),
                id: id.to_string(),
                document: document.into(),
            });
            add_document_preconditions(&mut change, collection, id, &query)?;
            write(state, change).await
        }
        (&Method::DELETE, ["v1", "docs", collection, id]) => {
            let mut change = ChangeSet::new(meta_from(&query, &caller.name));
            change
                .operations
                .push(Operation::Delete { collection: collection.to_string(), id: id.to_string() });
            add_document_preconditions(&mut change, collection, id, &query)?;
            write(state, change).await
        }
        (&Method::POST, ["v1", "changes"]) => {
            let body = read_body(request.into_body(), MAX_CHANGE_SET_BYTES + 4096).await?;
            let input: ChangeSetInput = parse_json(&body)?;
            let change = ChangeSet {
                meta: ChangeMeta {
                    actor: caller.name.clone(),
                    reason: input.reason,
                    timestamp_ms: now_ms(),
                    request_id: input.request_id.filter(|id| !id.is_empty()),
                },
                preconditions: input.preconditions,
                operations: input.operations,
            };
            write(state, change).await
        }
        (&Method::GET, ["v1", "history"]) => history(node, &query),
        (&Method::GET, ["v1", "openapi.json"]) => openapi::document(),
        (&Method::GET, ["v1", "export"]) => history::export(state, caller, request).await,
        (&Method::GET, ["v1", "diff"]) => history::diff(state, caller, request).await,
        (&Method::POST, ["v1", "revert"]) => history::revert(state, caller, request).await,
        (&Method::POST, ["v1", "undo"]) => history::undo(state, caller, request).await,
        (&Method::POST, ["v1", "import"]) => history::import(state, caller, request).await,
        (&Method::GET, ["v1", "watch"]) => watch::watch(state, caller, request).await,
        (&Method::GET, ["v1", "backup"]) => backup::backup(state, caller, request).await,
        (&Method::GET, ["v1", "blobs", digest, "data"]) => blobs::blob_data(state, digest, request).await,
        (&Method::POST, ["v1", "blobs"]) => upload_blob(node, request.into_body()).await,
        (&Method::GET, ["v1", "blobs", digest]) => {
            let digest =
                tandem_storage::Digest::parse(digest).map_err(|e| ApiError::bad_request(e.to_string()))?;
            let store = node.store.read().map_err(|_| internal("the store lock is poisoned"))?;
            match store.blob_size(&digest) {
                Some(size) => {
                    Ok(json_response(StatusCode::OK, &json!({"digest": digest.to_string(), "size": size})))
                }
                None => Err(ApiError::not_found(format!("no blob {digest}"))),
            }
        }
        (&Method::GET, ["v1", "cluster", "servers"]) => {
            let members: Vec<_> = node
                .members()
                .into_iter()
                .map(|(id, info, voter)| {
                    json!({"id": id, "name": info.name, "role": info.role, "voter": voter,
                    "peer_addr": info.peer_addr, "api_addr": info.api_addr, "boot_addr": info.boot_addr})
                })
                .collect();
            Ok(json_response(StatusCode::OK, &json!({"servers": members})))
        }
        (&Method::POST, ["v1", "cluster", "servers"]) => {
            let body = read_body(request.into_body(), 64 * 1024).await?;
            let input: AddServerInput = parse_json(&body)?;
            if let Some(response) =
                proxy_to_leader(node, &headers, Method::POST, "/v1/cluster/servers", Some(body.to_vec()))
                    .await?
            {
                return Ok(response);
            }
            let info = NodeInfo {
                name: input.name.clone(),
                role: input.role,
                peer_addr: input.peer_addr,
                api_addr: input.api_addr,
                boot_addr: input.boot_addr,
            };
            node.add_server(input.id, info).await.map_err(membership_error)?;
            Ok(json_response(StatusCode::OK, &json!({"added": input.name, "id": input.id})))
        }
        (&Method::DELETE, ["v1", "cluster", "servers", name]) => {
            if let Some(response) = proxy_to_leader(node, &headers, Method::DELETE, &path, None).await? {
                return Ok(response);
            }
            let id = node.remove_server(name).await.map_err(membership_error)?;
            Ok(json_response(StatusCode::OK, &json!({"removed": name, "id": id})))
        }
        // The route table listed it, but no handler took it: a bug, which the route test catches.
        _ => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unrouted",
            format!("{method} {path} is listed but has no handler"),
        )),
    }
}

/// A change set as the API accepts it (the actor and timestamp are set by the node).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeSetInput {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    preconditions: Vec<Precondition>,
    operations: Vec<Operation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddServerInput {
    id: NodeId,
    name: String,
    #[serde(default)]
    role: Role,
    peer_addr: String,
    api_addr: String,
    #[serde(default)]
    boot_addr: String,
}

/// One document as the API shows it.
#[derive(Debug, Serialize)]
struct DocumentView {
    collection: String,
    id: String,
    create_revision: Revision,
    mod_revision: Revision,
    version: u64,
    document: serde_json::Value,
}

impl DocumentView {
    fn new(key: &DocKey, document: &StoredDocument) -> Self {
        DocumentView {
            collection: key.collection.clone(),
            id: key.id.clone(),
            create_revision: document.create_revision,
            mod_revision: document.mod_revision,
            version: document.version,
            document: document.value(),
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
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

pub(crate) fn meta_from(query: &[(String, String)], actor: &str) -> ChangeMeta {
    ChangeMeta {
        actor: actor.into(),
        reason: query_value(query, "reason").unwrap_or_default().to_string(),
        timestamp_ms: now_ms(),
        // An empty request id is no request id: it would make every later request with one a "duplicate".
        request_id: query_value(query, "request_id").filter(|id| !id.is_empty()).map(str::to_string),
    }
}

fn add_document_preconditions(
    change: &mut ChangeSet,
    collection: &str,
    id: &str,
    query: &[(String, String)],
) -> Result<(), ApiError> {
    if let Some(mod_revision) = query_number(query, "if_mod_revision")? {
        change.preconditions.push(Precondition::DocumentRevision {
            collection: collection.into(),
            id: id.into(),
            mod_revision: Revision(mod_revision),
        });
    }
    if query_value(query, "if_absent").is_some() {
        change
            .preconditions
            .push(Precondition::MustNotExist { collection: collection.into(), id: id.into() });
    }
    if let Some(revision) = query_number(query, "if_revision")? {
        change.preconditions.push(Precondition::StoreRevision { revision: Revision(revision) });
    }
    Ok(())
}

pub(crate) async fn write(state: &ApiState, change: ChangeSet) -> Result<Response<Body>, ApiError> {
    let response = match state.node.write(Command::Change(change)).await {
        Ok(response) => response,
        Err(error) => {
            state.metrics.observe_proposal("failed");
            return Err(write_error(error));
        }
    };
    let result = match &response.outcome {
        Outcome::Rejected(_) => "rejected",
        _ => "committed",
    };
    state.metrics.observe_proposal(result);
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

fn membership_error(error: MembershipError) -> ApiError {
    match error {
        MembershipError::Refused(message) => ApiError::new(StatusCode::CONFLICT, "refused", message),
        MembershipError::Failed(message) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }
}

/// Refuses a collection name (and document id) that no document could have, before reading anything.
fn check_names(collection: &str, id: Option<&str>) -> Result<(), ApiError> {
    tandem_storage::collections::check_collection_name(collection)
        .and_then(|()| id.map_or(Ok(()), tandem_storage::collections::check_document_id))
        .map_err(|rejection| ApiError::bad_request(rejection.to_string()))
}

fn list_documents(node: &ClusterNode, collection: &str) -> Result<Response<Body>, ApiError> {
    check_names(collection, None)?;
    let store = node.store.read().map_err(|_| internal("the store lock is poisoned"))?;
    let documents: Vec<DocumentView> = store
        .projection()
        .collection(collection)
        .map(|(key, document)| DocumentView::new(key, document))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"revision": store.revision(), "documents": documents})))
}

async fn get_document(
    node: &ClusterNode,
    collection: &str,
    id: &str,
    query: &[(String, String)],
) -> Result<Response<Body>, ApiError> {
    check_names(collection, Some(id))?;
    match query_value(query, "consistency").unwrap_or("local") {
        "local" => {}
        "linearizable" => {
            node.linearizable_barrier().await.map_err(write_error)?;
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "consistency must be 'local' or 'linearizable', not '{other}'"
            )));
        }
    }
    let key = DocKey::new(collection, id);
    let store = node.store.read().map_err(|_| internal("the store lock is poisoned"))?;
    if let Some(at) = query_number(query, "at")? {
        let document = store.get_at(&key, Revision(at)).map_err(|e| ApiError::bad_request(e.to_string()))?;
        return match document {
            Some(document) => Ok(json_response(
                StatusCode::OK,
                &json!({"revision": at, "document": DocumentView::new(&key, &document)}),
            )),
            None => Err(ApiError::not_found(format!("{key} did not exist at revision {at}"))),
        };
    }
    match store.get(&key) {
        Some(document) => Ok(json_response(
            StatusCode::OK,
            &json!({"revision": store.revision(), "document": DocumentView::new(&key, document)}),
        )),
        None => Err(ApiError::not_found(format!("{key} does not exist (at revision {})", store.revision()))),
    }
}

fn history(node: &ClusterNode, query: &[(String, String)]) -> Result<Response<Body>, ApiError> {
    let filter = HistoryFilter {
        collection: query_value(query, "collection").map(str::to_string),
        id: query_value(query, "id").map(str::to_string),
        actor: query_value(query, "actor").map(str::to_string),
        from: query_number(query, "from")?.map(Revision),
        to: query_number(query, "to")?.map(Revision),
        limit: Some(query_number(query, "limit")?.unwrap_or(1000).min(100_000) as usize),
        newest_first: query_value(query, "newest_first").is_some(),
    };
    let store = node.store.read().map_err(|_| internal("the store lock is poisoned"))?;
    let events = store.history(&filter).map_err(|e| internal(&e.to_string()))?;
    let events: Vec<serde_json::Value> = events.iter().map(event_json).collect();
    Ok(json_response(StatusCode::OK, &json!({"revision": store.revision(), "events": events})))
}

/// The newest `count` events, briefly (revision, time, actor, reason, documents), for the status page.
fn recent_changes(node: &ClusterNode, count: usize) -> serde_json::Value {
    let filter = HistoryFilter { limit: Some(count), newest_first: true, ..HistoryFilter::default() };
    let events = match node.store.read() {
        Ok(store) => store.history(&filter).unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let brief: Vec<serde_json::Value> = events
        .iter()
        .map(|event| {
            let documents: Vec<String> =
                event.changes.iter().map(|c| format!("{}/{}", c.key.collection, c.key.id)).collect();
            json!({"revision": event.revision, "timestamp_ms": event.meta.timestamp_ms, "actor": event.meta.actor,
                   "reason": event.meta.reason, "documents": documents})
        })
        .collect();
    json!(brief)
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
           "timestamp_ms": event.meta.timestamp_ms, "request_id": event.meta.request_id, "changes": changes})
}

/// Streams the request body into the store as a blob: 1 MiB chunk commands through the log, then a commit
/// with the digest computed on the way. Never holds more than one chunk in memory.
async fn upload_blob(node: &ClusterNode, mut body: Incoming) -> Result<Response<Body>, ApiError> {
    use http_body_util::BodyExt;
    use sha2::Digest as _;
    let upload: u64 = rand::random();
    let mut hasher = sha2::Sha256::new();
    let mut size = 0u64;
    let mut chunk = 0u32;
    let mut buffer: Vec<u8> = Vec::with_capacity(MAX_BLOB_CHUNK);
    let send = |chunk: u32, data: Vec<u8>| Command::BlobChunk { upload, chunk, data };
    loop {
        let frame = body.frame().await;
        let finished = frame.is_none();
        if let Some(frame) = frame {
            let frame =
                frame.map_err(|e| ApiError::bad_request(format!("reading the upload failed: {e}")))?;
            if let Ok(data) = frame.into_data() {
                hasher.update(&data);
                size += data.len() as u64;
                buffer.extend_from_slice(&data);
            }
        }
        while buffer.len() >= MAX_BLOB_CHUNK || (finished && (!buffer.is_empty() || chunk == 0)) {
            let take = buffer.len().min(MAX_BLOB_CHUNK);
            let data: Vec<u8> = buffer.drain(..take).collect();
            let response = node.write(send(chunk, data)).await.map_err(write_error)?;
            if let Outcome::Rejected(rejection) = response.outcome {
                return Err(rejection_error(&rejection));
            }
            chunk += 1;
            if finished && buffer.is_empty() {
                break;
            }
        }
        if finished {
            break;
        }
    }
    let digest = tandem_storage::Digest::from(hasher);
    let response = node.write(Command::BlobCommit { upload, digest, size }).await.map_err(write_error)?;
    match response.outcome {
        Outcome::BlobCommitted { digest, size } => {
            Ok(json_response(StatusCode::OK, &json!({"digest": digest.to_string(), "size": size})))
        }
        Outcome::Rejected(rejection) => Err(rejection_error(&rejection)),
        other => Err(internal(&format!("unexpected outcome {other:?}"))),
    }
}

pub(crate) fn internal(message: &str) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
}

/// On a follower, sends the request to the leader's API and returns its answer; on the leader, `None`.
async fn proxy_to_leader(
    node: &ClusterNode,
    headers: &hyper::HeaderMap,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Option<Response<Body>>, ApiError> {
    let status = node.status();
    match status.leader {
        Some(leader) if leader == node.id => Ok(None),
        Some(leader) => {
            let Some((_, info, _)) = node.members().into_iter().find(|(id, _, _)| *id == leader) else {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_leader",
                    "the leader is not in the membership",
                ));
            };
            // The caller's own token goes along: every node of a cluster is given the same tokens.
            let token = headers
                .get(hyper::header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "))
                .map(str::to_string);
            let client = crate::client::api::ApiClient::new(&format!("http://{}", info.api_addr), token);
            let (status, value) = client
                .send(method, path, body.map(|b| serde_json::from_slice(&b).unwrap_or_default()))
                .await
                .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "leader_unreachable", e.to_string()))?;
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            Ok(Some(json_response(status, &value)))
        }
        None => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
            "the cluster has no leader right now",
        )
        .with_hint("retry in a few seconds; if it persists, check `tandem status`")),
    }
}

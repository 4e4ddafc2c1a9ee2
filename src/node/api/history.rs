//! Time travel over the API: export the configuration at a revision, diff two revisions, revert, undo, import.
//!
//! Reading: `GET /v1/export?at=REV` answers an [`Export`] (the current configuration without `at`);
//! `GET /v1/diff?from=A&to=B` lists every document that differs, with both bodies.
//!
//! Writing: `POST /v1/revert`, `POST /v1/undo` and `POST /v1/import` share one path, `plan_and_apply`:
//! 1. with the store read-locked, the handler computes a [`Plan`] (the puts and deletes, and the preview of
//!    each change) at the store's current revision, its *base*;
//! 2. the plan's change set is decided against the same state without writing anything, so a dry run
//!    reports every problem the real write would meet (schemas, references, sizes);
//! 3. a dry run answers the preview; an empty plan answers `unchanged` and writes nothing;
//! 4. otherwise the change set goes through [`ClusterNode::write`](tandem_cluster::node::ClusterNode::write)
//!    with the precondition "the store is still at the base revision", so exactly what was previewed is
//!    applied, as one new event recorded with the caller's token name and the reason.
//!
//! A client that confirmed a preview passes `if_revision` = the preview's revision: if anything changed in
//! between, the answer is 412 and nothing is written. Without `if_revision`, a change that slips in between
//! planning and applying makes the handler plan again (at most three times).
//!
//! Every answer of the three writes has one shape: `{dry_run, revision, outcome, changes, missing_blobs}`,
//! where `revision` is the base of a preview or the new revision of an applied change, `outcome` is
//! `preview`, `accepted` or `unchanged`, and `changes` lists `{collection, id, kind, bytes}`.

use std::collections::BTreeMap;
use std::time::Duration;

use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tandem_storage::limits::MAX_CHANGE_SET_BYTES;
use tandem_storage::{
    ChangeKind, Command, Digest, Export, HistoryFilter, MissingBlob, Outcome, Plan, Rejection, Revision,
    Store, UndoError, decide,
};

use super::routes::Call;
use super::{ApiState, event_json, internal, query_number, query_value, rejection_error, storage_error};
use crate::auth::Caller;
use crate::http::{ApiError, Body, json_response, parse_json, query_pairs, read_body};

/// Largest body of a revert or undo request.
const MAX_REQUEST_BODY: usize = 64 * 1024;
/// Largest body of an import request: an export holds the whole configuration, usually far more than the
/// change set it turns into (only what differs is written, and that must fit one change set).
pub const MAX_IMPORT_BODY: usize = 4 * MAX_CHANGE_SET_BYTES;
/// How often a write without `if_revision` is planned again when a concurrent change overtook it.
const PLAN_ATTEMPTS: usize = 3;
/// How long a follower waits to apply a revision a client names (it may have been acknowledged by the leader
/// a moment ago) before answering that it does not exist.
const CATCH_UP: Duration = Duration::from_secs(3);

pub async fn export(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let Call { state, request, .. } = call;
    let query = query_pairs(request.uri().query());
    only_parameters(&query, &["at"])?;
    let at = query_number(&query, "at")?;
    catch_up(state, at).await;
    // Time travel replays from a checkpoint (a few hundred ms on a large history): off the async workers.
    let export = tokio::task::block_in_place(|| {
        let store = read_store(state)?;
        let revision = at.map(|at| existing_revision(&store, at)).transpose()?;
        store.export(revision).map_err(storage_error)
    })?;
    Ok(json_response(StatusCode::OK, &export))
}

pub async fn diff(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let Call { state, request, .. } = call;
    let query = query_pairs(request.uri().query());
    only_parameters(&query, &["from", "to"])?;
    let required = |name: &str| {
        query_number(&query, name)?.ok_or_else(|| {
            ApiError::bad_request(format!("query parameter '{name}' is required"))
                .with_hint("GET /v1/diff?from=REV&to=REV")
        })
    };
    let (from, to) = (required("from")?, required("to")?);
    catch_up(state, Some(from.max(to))).await;
    let entries = tokio::task::block_in_place(|| {
        let store = read_store(state)?;
        let (from, to) = (existing_revision(&store, from)?, existing_revision(&store, to)?);
        store.diff(from, to).map_err(storage_error)
    })?;
    let changes: Vec<serde_json::Value> = entries
        .iter()
        .map(|entry| {
            json!({"collection": entry.key.collection, "id": entry.key.id,
                   "kind": ChangeKind::from(entry.kind()).as_str(),
                   "before": entry.before.as_ref().map(|d| d.value()),
                   "after": entry.after.as_ref().map(|d| d.value())})
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"from": from, "to": to, "changes": changes})))
}

/// `POST /v1/revert`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RevertInput {
    /// The revision whose configuration to go back to.
    to: u64,
    reason: String,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    if_revision: Option<u64>,
}

pub async fn revert(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let Call { state, caller, request, .. } = call;
    let body = read_body(request.into_body(), MAX_REQUEST_BODY, state.limits.http.body_read_timeout).await?;
    let input: RevertInput = parse_json(&body)?;
    let options = WriteOptions::new(input.reason, input.dry_run, input.if_revision)?;
    if input.to == 0 {
        return Err(ApiError::bad_request(
            "revision 0 is the empty configuration before the first change: reverting to it would delete \
             every document",
        )
        .with_hint(
            "name a revision from `tandem history`; to really empty the store, import an empty export",
        ));
    }
    catch_up(state, Some(input.to)).await;
    plan_and_apply(state, &caller, options, |store| {
        let to = existing_revision(store, input.to)?;
        Ok(Prepared::plan(store.revert_plan(to).map_err(storage_error)?))
    })
    .await
}

/// `POST /v1/undo`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UndoInput {
    /// The revision of the change set to undo.
    revision: u64,
    reason: String,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    if_revision: Option<u64>,
}

pub async fn undo(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let Call { state, caller, request, .. } = call;
    let body = read_body(request.into_body(), MAX_REQUEST_BODY, state.limits.http.body_read_timeout).await?;
    let input: UndoInput = parse_json(&body)?;
    let options = WriteOptions::new(input.reason, input.dry_run, input.if_revision)?;
    catch_up(state, Some(input.revision)).await;
    plan_and_apply(state, &caller, options, |store| {
        store.undo_plan(Revision(input.revision)).map(Prepared::plan).map_err(undo_error)
    })
    .await
}

/// `POST /v1/import`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ImportInput {
    pub(super) export: Export,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    if_revision: Option<u64>,
    /// Where the export came from (a file, an installation): the reason when none is given.
    #[serde(default)]
    source: Option<String>,
}

pub async fn import(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let Call { state, caller, request, .. } = call;
    let body = read_body(request.into_body(), MAX_IMPORT_BODY, state.limits.http.body_read_timeout).await?;
    let input: ImportInput = parse_json(&body)?;
    drop(body);
    let reason = match (input.reason.trim().is_empty(), &input.source) {
        (true, Some(source)) if !source.trim().is_empty() => format!("import from {source}"),
        _ => input.reason,
    };
    let options = WriteOptions::new(reason, input.dry_run, input.if_revision)?;
    let export = input.export;
    plan_and_apply(state, &caller, options, |store| {
        let missing_blobs = export
            .missing_blobs(&|digest| store.blob_size(digest))
            .map_err(|e| ApiError::bad_request(format!("the export's blob list is not valid: {e}")))?;
        Ok(Prepared { plan: export.plan(store.projection()), missing_blobs })
    })
    .await
}

/// What every write request says besides its target.
#[derive(Debug)]
struct WriteOptions {
    reason: String,
    dry_run: bool,
    if_revision: Option<Revision>,
}

impl WriteOptions {
    fn new(reason: String, dry_run: bool, if_revision: Option<u64>) -> Result<Self, ApiError> {
        if reason.trim().is_empty() {
            return Err(ApiError::bad_request(
                "a reason is required: say why, it is recorded in the history",
            )
            .with_hint("\"reason\": \"…\" in the request body (tandem: --reason TEXT)"));
        }
        Ok(WriteOptions { reason, dry_run, if_revision: if_revision.map(Revision) })
    }
}

/// A plan and the blobs its documents need that the store does not have (imports only).
#[derive(Debug)]
struct Prepared {
    plan: Plan,
    missing_blobs: Vec<MissingBlob>,
}

impl Prepared {
    fn plan(plan: Plan) -> Self {
        Prepared { plan, missing_blobs: Vec::new() }
    }
}

/// Plans with `prepare` (under the store's read lock), checks, and applies unless it is a dry run (see the
/// module documentation).
async fn plan_and_apply(
    state: &ApiState,
    caller: &Caller,
    options: WriteOptions,
    prepare: impl Fn(&Store) -> Result<Prepared, ApiError>,
) -> Result<Response<Body>, ApiError> {
    let node = &state.node;
    // A follower that has not applied the revision its client saw yet gets a moment.
    catch_up(state, options.if_revision.map(|r| r.0)).await;
    let meta = caller.change_meta(options.reason.clone(), None);
    for attempt in 1..=PLAN_ATTEMPTS {
        // Planning may replay history (revert) or scan it (undo): off the async workers.
        let (prepared, change_set) = tokio::task::block_in_place(|| {
            let store = read_store(state)?;
            if let Some(expected) = options.if_revision
                && store.revision() != expected
            {
                return Err(moved_on(expected, store.revision()));
            }
            let prepared = prepare(&store)?;
            let change_set = prepared.plan.change_set(meta.clone());
            if !prepared.plan.is_empty() {
                // Missing blobs are assumed present with the sizes the export gives, so that a preview reports
                // the other problems too; the real write is refused below until they are uploaded.
                let assumed: BTreeMap<String, u64> =
                    prepared.missing_blobs.iter().map(|b| (b.digest.clone(), b.size)).collect();
                let blob_size = |digest: &Digest| {
                    store.blob_size(digest).or_else(|| assumed.get(&digest.to_string()).copied())
                };
                decide(store.projection(), &blob_size, &change_set).map_err(|r| rejection_error(&r))?;
            }
            Ok::<_, ApiError>((prepared, change_set))
        })?;
        let Prepared { plan, missing_blobs } = prepared;
        if plan.is_empty() {
            return Ok(answer(options.dry_run, plan.base, "unchanged", &plan, &missing_blobs));
        }
        if options.dry_run {
            return Ok(answer(true, plan.base, "preview", &plan, &missing_blobs));
        }
        if !missing_blobs.is_empty() {
            return Err(missing_blobs_error(&missing_blobs));
        }
        let response = super::propose(state, Command::Change(change_set)).await?;
        match response.outcome {
            Outcome::Accepted { revision } => {
                // Read your writes: on a follower, answer once this node serves the new revision too.
                node.wait_applied(revision, CATCH_UP).await;
                return Ok(answer(false, revision, "accepted", &plan, &[]));
            }
            Outcome::Rejected(Rejection::PreconditionFailed(_))
                if options.if_revision.is_none() && attempt < PLAN_ATTEMPTS =>
            {
                // Overtaken by a concurrent change (or this follower lags): plan again on the newer state.
                node.wait_applied(plan.base.next(), Duration::from_secs(2)).await;
            }
            Outcome::Rejected(Rejection::PreconditionFailed(_)) => {
                return Err(moved_on(plan.base, node.revision()));
            }
            Outcome::Rejected(rejection) => return Err(rejection_error(&rejection)),
            other => return Err(internal(&format!("unexpected outcome {other:?}"))),
        }
    }
    Err(internal("planning did not settle"))
}

fn answer(
    dry_run: bool,
    revision: Revision,
    outcome: &str,
    plan: &Plan,
    missing_blobs: &[MissingBlob],
) -> Response<Body> {
    json_response(
        StatusCode::OK,
        &json!({"dry_run": dry_run, "revision": revision, "outcome": outcome, "changes": plan.changes,
                "missing_blobs": missing_blobs}),
    )
}

fn moved_on(expected: Revision, now: Revision) -> ApiError {
    ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
        format!(
            "the configuration changed since the preview: expected revision {expected}, the store is at \
             revision {now}; nothing was written"
        ),
    )
    .with_hint("run the command again to see what it would change now")
}

fn missing_blobs_error(missing: &[MissingBlob]) -> ApiError {
    const SHOWN: usize = 50;
    let mut listed: Vec<String> =
        missing.iter().take(SHOWN).map(|b| format!("{} ({} bytes)", b.digest, b.size)).collect();
    if missing.len() > SHOWN {
        listed.push(format!("and {} more (a dry run lists them all)", missing.len() - SHOWN));
    }
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "missing_blobs",
        format!(
            "{} blob(s) referenced by the export are missing on this node: {}; nothing was written",
            missing.len(),
            listed.join(", ")
        ),
    )
    .with_hint(
        "upload them first (POST /v1/blobs with the bytes from GET /v1/blobs/{sha256}/data on the source; \
         `tandem sync` does this), then import again",
    )
}

/// On a node that is not the leader, waits (bounded) until it has applied `revision`: a client may name a
/// revision the leader acknowledged a moment ago. The leader applies before it acknowledges, so it never waits.
async fn catch_up(state: &ApiState, revision: Option<u64>) {
    let node = &state.node;
    let Some(revision) = revision.map(Revision) else { return };
    if revision > node.revision() && !node.is_leader() {
        node.wait_applied(revision, CATCH_UP).await;
    }
}

fn read_store(state: &ApiState) -> Result<std::sync::RwLockReadGuard<'_, Store>, ApiError> {
    Ok(state.node.read_store()?)
}

/// A revision that exists in `store` (0, the empty configuration, included) and was not forgotten (410).
fn existing_revision(store: &Store, revision: u64) -> Result<Revision, ApiError> {
    let current = store.revision();
    if revision < store.base().0 {
        return Err(storage_error(tandem_storage::Error::Forgotten {
            revision: Revision(revision),
            base: store.base(),
        }));
    }
    if revision > current.0 {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_such_revision",
            format!("revision {revision} does not exist yet: the store is at revision {current}"),
        )
        .with_hint("`tandem history` lists the revisions"));
    }
    Ok(Revision(revision))
}

/// Refuses query parameters the endpoint does not know (a typo would otherwise be silently ignored).
fn only_parameters(query: &[(String, String)], known: &[&str]) -> Result<(), ApiError> {
    match query.iter().find(|(key, _)| !known.contains(&key.as_str())) {
        Some((key, _)) => Err(ApiError::bad_request(format!("unknown query parameter '{key}'"))
            .with_hint(format!("known: {}", known.join(", ")))),
        None => Ok(()),
    }
}

fn undo_error(error: UndoError) -> ApiError {
    match error {
        UndoError::NoSuchRevision { revision, .. } if revision.0 == 0 => {
            ApiError::bad_request(format!("{error}")).with_hint("revisions start at 1: see `tandem history`")
        }
        UndoError::NoSuchRevision { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "no_such_revision", error.to_string())
                .with_hint("`tandem history` lists the revisions")
        }
        UndoError::ChangedLater { .. } => {
            ApiError::new(StatusCode::CONFLICT, "changed_later", error.to_string())
        }
        UndoError::NotConfiguration(_) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "not_configuration", error.to_string())
        }
        UndoError::Storage(error) => storage_error(error),
    }
}
/// `GET /v1/history`: events, filtered by collection, id, actor and revisions.
pub async fn list(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let query = &call.query;
    let filter = HistoryFilter {
        collection: query_value(query, "collection").map(str::to_string),
        id: query_value(query, "id").map(str::to_string),
        actor: query_value(query, "actor").map(str::to_string),
        since_ms: query_number(query, "since")?,
        until_ms: query_number(query, "until")?,
        from: query_number(query, "from")?.map(Revision),
        to: query_number(query, "to")?.map(Revision),
        limit: Some(query_number(query, "limit")?.unwrap_or(1000).min(100_000) as usize),
        newest_first: query_value(query, "newest_first").is_some(),
    };
    let store = read_store(call.state)?;
    let events = store.history(&filter).map_err(|e| internal(&e.to_string()))?;
    let events: Vec<serde_json::Value> = events.iter().map(event_json).collect();
    // `first_revision`: where the history starts (after `tandem history forget`, later than 1).
    Ok(json_response(
        StatusCode::OK,
        &json!({"revision": store.revision(), "first_revision": store.base().next(), "events": events}),
    ))
}

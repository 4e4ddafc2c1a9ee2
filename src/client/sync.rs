//! One-way sync (`tandem sync --from URL --to URL`): make one installation's configuration equal to another's.
//!
//! A plant keeps a known-good configuration (firmware, TermCap, modules, terminals, terminal servers, any
//! other collection) on one installation and copies it to others. Sync is a client of both admin APIs and
//! never writes to the source. It runs in six steps, each a function below:
//!
//! 1. `fetch_export`: `GET /v1/export` on the source: every document and the blobs they reference, at one
//!    revision.
//! 2. `preview`: the destination computes what importing the source's export would change
//!    (`POST /v1/import` with `dry_run: true`), at which of its revisions, and which of the export's blobs
//!    it lacks — one request, computed where the data is.
//! 3. the caller's `decide` step (the command: show the preview, then a person says yes on a terminal, or
//!    `--yes` was passed; with neither, nothing happens, exit 1).
//! 4. `copy_blobs`: each missing blob streams from the source (`GET /v1/blobs/{sha256}/data`) straight
//!    into the destination (`POST /v1/blobs`) — never whole in memory — and the destination must answer the
//!    same digest and size. Blobs are content-addressed, so copying one that ends up unused changes no
//!    configuration.
//! 5. `apply`: `POST /v1/import` with `if_revision` = the destination revision the preview was computed
//!    at: everything the operator confirmed is applied as one change set (one event, undoable with
//!    `tandem undo`), or — if anyone wrote to the destination since the preview — nothing is (412), and sync
//!    says to run it again.
//! 6. The [`Report`]: revisions, counts per collection, blobs copied, time taken (the command prints it, or
//!    with `--json` one JSON document).
//!
//! Steps 2 and 5 are the preview and apply of [`super::flow`].
//!
//! What is never copied: node-local data (terminal heartbeats live in memory, not in the store) and the
//! `cluster_events` collection (each cluster's own records, such as forced recoveries); the export leaves
//! it out, the import leaves it alone, and sync drops it from the export it sends in case a source does not.
//!
//! Test hook (hidden, for the end-to-end test of the "destination moved" path, which a test cannot race):
//! when `TANDEM_SYNC_TEST_HOLD_FILE` names a file, sync creates it just before step 5 and waits (at most 60 s)
//! until it is deleted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Method;
use hyper::header::CONTENT_LENGTH;
use serde::Serialize;
use serde_json::{Value, json};
use tandem_storage::{CLUSTER_EVENTS, Digest, MissingBlob};

use super::Progress;
use super::api::{ApiClient, BoxError, ClientError, hint_line, small_answer, whole_body};
use super::flow::{self, FlowError};

/// How long a JSON request (export, preview, import) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a blob copy may take: this much, plus one second per MiB (a copy slower than 1 MiB/s is stuck).
const BLOB_BASE_TIMEOUT: Duration = Duration::from_secs(60);
/// The environment variable of the test hook (see the module documentation).
const TEST_HOLD_FILE: &str = "TANDEM_SYNC_TEST_HOLD_FILE";

/// The two installations of a sync.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// The installation to copy from (any data node or mirror of it), e.g. http://10.1.0.5:7070.
    pub from: String,
    /// The installation to overwrite (any data node of it).
    pub to: String,
    /// The source's API token.
    pub from_token: Option<String>,
    /// The destination's API token, an operator token.
    pub to_token: Option<String>,
}

/// Why a sync stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A node did not answer (exit 3).
    #[error("cannot reach {server}: {message}")]
    Unreachable { server: String, message: String },
    /// A URL that is not an address (exit 2).
    #[error("invalid server address '{0}' (use http://HOST:PORT)")]
    BadAddress(String),
    /// A node answered with an error: its message and hint.
    #[error("{server} refused {what} (HTTP {status}): {message}{}", hint_line(.hint.as_deref()))]
    Refused { server: String, what: String, status: u16, message: String, hint: Option<String> },
    /// A node answered something that is not what the API promises.
    #[error("{server} gave an unexpected answer to {what}: {message}")]
    BadAnswer { server: String, what: String, message: String },
    /// Somebody wrote to the destination between the preview and the apply.
    #[error(
        "the destination changed since the preview (revision {preview} → {now}); nothing was written; run sync again"
    )]
    DestinationMoved { preview: u64, now: String },
    /// Nobody could confirm.
    #[error(
        "not applied: stdin is not a terminal, so nobody can confirm; pass --yes to apply without asking"
    )]
    NotConfirmed,
    /// The operator said no.
    #[error("not applied: you did not confirm")]
    Declined,
    /// A blob copy broke off or the destination stored something else.
    #[error("copying blob {digest} failed: {message}")]
    BlobCopy { digest: String, message: String },
}

impl SyncError {
    fn from_client(error: ClientError) -> Self {
        match error {
            ClientError::Unreachable { server, message } => SyncError::Unreachable { server, message },
            ClientError::BadAddress(address) => SyncError::BadAddress(address),
            ClientError::BadAnswer(message) => {
                SyncError::BadAnswer { server: "a node".into(), what: "a request".into(), message }
            }
            ClientError::Broken { server, message } => SyncError::Unreachable { server, message },
            ClientError::Refused(refusal) => SyncError::Refused {
                server: "a node".into(),
                what: "a request".into(),
                status: refusal.status,
                message: refusal.message,
                hint: refusal.hint,
            },
        }
    }
}

/// One side of the sync: its URL as the operator gave it, and a client of its API.
#[derive(Debug)]
struct Side {
    url: String,
    api: ApiClient,
}

impl Side {
    fn new(url: &str, token: Option<String>) -> Self {
        Side { url: url.to_string(), api: ApiClient::new(url, token).with_timeout(REQUEST_TIMEOUT) }
    }

    /// A client error of a request for `what`, told with this side's URL.
    fn error(&self, what: &str, error: ClientError) -> SyncError {
        match error {
            ClientError::Refused(refusal) => SyncError::Refused {
                server: self.url.clone(),
                what: what.into(),
                status: refusal.status,
                message: refusal.message,
                hint: refusal.hint,
            },
            ClientError::BadAnswer(message) => self.bad_answer(what, message),
            other => SyncError::from_client(other),
        }
    }

    /// A flow error (the preview or the apply) as a sync error.
    fn flow_error(&self, what: &str, error: FlowError) -> SyncError {
        match error {
            FlowError::Preview(error) | FlowError::Apply(error) => self.error(what, error),
            FlowError::NoRevision(_) => self.bad_answer(what, "it has no \"revision\" number"),
            FlowError::Moved { preview, now, .. } => SyncError::DestinationMoved {
                preview,
                now: now.map(|revision| revision.to_string()).unwrap_or_else(|| "a newer one".into()),
            },
        }
    }

    /// Sends a JSON request; returns the status, the answering store's revision and the JSON answer.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Option<u64>, Value), SyncError> {
        let (status, revision, bytes) =
            self.api.send_raw(method, path, body).await.map_err(SyncError::from_client)?;
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).chars().take(500).collect()));
        Ok((status, revision, value))
    }

    fn refused(&self, what: &str, status: u16, answer: &Value) -> SyncError {
        SyncError::Refused {
            server: self.url.clone(),
            what: what.into(),
            status,
            message: answer["message"].as_str().map(str::to_string).unwrap_or_else(|| answer.to_string()),
            hint: answer["hint"].as_str().map(str::to_string),
        }
    }

    fn bad_answer(&self, what: &str, message: impl Into<String>) -> SyncError {
        SyncError::BadAnswer { server: self.url.clone(), what: what.into(), message: message.into() }
    }
}

/// A whole configuration as `GET /v1/export` answers it.
#[derive(Debug, Clone)]
struct Export {
    revision: u64,
    /// The export as received (sent back unchanged to the destination, minus `cluster_events`).
    value: Value,
}

/// What the import will do to the documents of one collection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CollectionChanges {
    pub created: Vec<String>,
    pub changed: Vec<String>,
    pub deleted: Vec<String>,
}

/// What applying would change, and at which destination revision that was computed.
#[derive(Debug, Clone)]
struct Preview {
    destination_revision: u64,
    collections: BTreeMap<String, CollectionChanges>,
    missing_blobs: Vec<MissingBlob>,
}

impl Preview {
    fn is_empty(&self) -> bool {
        self.collections.is_empty()
    }
}

/// What sync did (or would do): printed as a table, or as JSON with `--json`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `unchanged` (nothing to do), `preview` (not applied) or `applied`.
    pub outcome: &'static str,
    pub source: SideReport,
    pub destination: SideReport,
    /// The destination's revision after the apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_revision: Option<u64>,
    pub collections: BTreeMap<String, CollectionChanges>,
    pub totals: Totals,
    pub missing_blobs: Vec<MissingBlob>,
    pub blobs_copied: BlobsCopied,
    pub elapsed_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct SideReport {
    pub url: String,
    pub revision: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Totals {
    pub created: usize,
    pub changed: usize,
    pub deleted: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct BlobsCopied {
    pub count: usize,
    pub bytes: u64,
}

/// Runs a sync: the export of the source, the preview on the destination, then `decide` (given the report of
/// what would change; `Ok(false)` stops with nothing applied), the blob copies and the apply. Returns the
/// report: `unchanged`, `preview` (stopped) or `applied`.
pub async fn run(
    options: &SyncOptions,
    progress: Arc<dyn Progress>,
    decide: impl AsyncFnOnce(&Report) -> Result<bool, SyncError>,
) -> Result<Report, SyncError> {
    let started = Instant::now();
    let source = Side::new(&options.from, options.from_token.clone());
    let destination = Side::new(&options.to, options.to_token.clone());

    let source_export = fetch_export(&source).await?;
    let reason = format!("sync from {} at revision {}", source.url, source_export.revision);
    let body = import_body(&source_export, &reason);
    let preview = preview(&destination, body.clone()).await?;
    let mut report = Report {
        outcome: if preview.is_empty() { "unchanged" } else { "preview" },
        source: SideReport { url: source.url.clone(), revision: source_export.revision },
        destination: SideReport { url: destination.url.clone(), revision: preview.destination_revision },
        new_revision: None,
        totals: totals(&preview.collections),
        collections: preview.collections.clone(),
        missing_blobs: preview.missing_blobs.clone(),
        blobs_copied: BlobsCopied::default(),
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    if !decide(&report).await? {
        return Ok(report);
    }
    report.blobs_copied = copy_blobs(&source, &destination, &preview.missing_blobs, progress).await?;
    maybe_hold_for_test().await;
    let applied = apply(&destination, body, preview.destination_revision).await?;
    report.outcome = "applied";
    report.new_revision = Some(applied);
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Step 1: the whole configuration of the source.
async fn fetch_export(side: &Side) -> Result<Export, SyncError> {
    let what = "the export (GET /v1/export)";
    let (status, _, answer) = side.send(Method::GET, "/v1/export", None).await?;
    if status != 200 {
        return Err(side.refused(what, status, &answer));
    }
    let revision =
        answer["revision"].as_u64().ok_or_else(|| side.bad_answer(what, "it has no \"revision\" number"))?;
    if !answer["collections"].is_object() {
        return Err(side.bad_answer(what, "it has no \"collections\" object"));
    }
    if !answer["blobs"].is_object() && !answer["blobs"].is_null() {
        return Err(side.bad_answer(what, "its \"blobs\" is not an object"));
    }
    // Digests become URL paths below: only well-formed ones.
    for digest in answer["blobs"].as_object().into_iter().flatten().map(|(digest, _)| digest) {
        Digest::parse(digest).map_err(|e| side.bad_answer(what, format!("blob {digest:?}: {e}")))?;
    }
    Ok(Export { revision, value: answer })
}

/// The export to send to the destination: the source's, without `cluster_events`.
fn export_to_send(source: &Export) -> Value {
    let mut value = source.value.clone();
    if let Some(collections) = value["collections"].as_object_mut() {
        collections.remove(CLUSTER_EVENTS);
    }
    value
}

/// The body of `POST /v1/import` for the source's export (the flow adds `dry_run` and `if_revision`).
fn import_body(source: &Export, reason: &str) -> Value {
    json!({"export": export_to_send(source), "reason": reason, "source": source_label(source)})
}

/// Step 2: what importing the source's export would change on the destination, and the blobs it lacks.
async fn preview(destination: &Side, body: Value) -> Result<Preview, SyncError> {
    let what = "the preview (POST /v1/import, dry run)";
    let preview = flow::preview(&destination.api, "/v1/import", body)
        .await
        .map_err(|e| destination.flow_error(what, e))?;
    let answer = preview.answer;
    let mut missing_blobs = blobs_from_answer(&answer);
    // Digests become URL paths when the blobs are copied: only well-formed ones.
    for blob in &missing_blobs {
        Digest::parse(&blob.digest)
            .map_err(|e| destination.bad_answer(what, format!("blob {:?}: {e}", blob.digest)))?;
    }
    missing_blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
    Ok(Preview {
        destination_revision: preview.revision,
        collections: changes_from_answer(&answer).map_err(|e| destination.bad_answer(what, e))?,
        missing_blobs,
    })
}

/// How the import records where the export came from.
fn source_label(source: &Export) -> String {
    format!("cluster {} at revision {}", source.value["cluster_id"].as_str().unwrap_or("?"), source.revision)
}

/// The preview's change list, grouped by collection (ids in the order the destination gave them: sorted).
fn changes_from_answer(answer: &Value) -> Result<BTreeMap<String, CollectionChanges>, String> {
    let mut collections: BTreeMap<String, CollectionChanges> = BTreeMap::new();
    for change in answer["changes"].as_array().into_iter().flatten() {
        let (Some(collection), Some(id)) = (change["collection"].as_str(), change["id"].as_str()) else {
            return Err(format!("a change without collection or id: {change}"));
        };
        let entry = collections.entry(collection.to_string()).or_default();
        match change["kind"].as_str() {
            Some("created") => entry.created.push(id.to_string()),
            Some("changed") => entry.changed.push(id.to_string()),
            Some("deleted") => entry.deleted.push(id.to_string()),
            other => return Err(format!("unknown change kind {other:?} for {collection}/{id}")),
        }
    }
    Ok(collections)
}

fn blobs_from_answer(answer: &Value) -> Vec<MissingBlob> {
    answer["missing_blobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|blob| {
            Some(MissingBlob { digest: blob["digest"].as_str()?.to_string(), size: blob["size"].as_u64()? })
        })
        .collect()
}

fn totals(collections: &BTreeMap<String, CollectionChanges>) -> Totals {
    let mut totals = Totals::default();
    for changes in collections.values() {
        totals.created += changes.created.len();
        totals.changed += changes.changed.len();
        totals.deleted += changes.deleted.len();
    }
    totals
}

/// Step 4: streams every missing blob from the source into the destination, reporting the bytes to
/// `progress`.
async fn copy_blobs(
    source: &Side,
    destination: &Side,
    missing: &[MissingBlob],
    progress: Arc<dyn Progress>,
) -> Result<BlobsCopied, SyncError> {
    let mut copied = BlobsCopied::default();
    if missing.is_empty() {
        return Ok(copied);
    }
    progress.start("copying blobs", total_size(missing));
    for blob in missing {
        let timeout = BLOB_BASE_TIMEOUT + Duration::from_secs(blob.size / (1024 * 1024));
        tokio::time::timeout(timeout, copy_blob(source, destination, blob, progress.clone()))
            .await
            .map_err(|_| SyncError::BlobCopy {
                digest: blob.digest.clone(),
                message: format!("it did not finish within {} s", timeout.as_secs()),
            })??;
        copied.count += 1;
        copied.bytes = copied.bytes.saturating_add(blob.size);
    }
    progress.finish();
    Ok(copied)
}

/// Copies one blob: the source's response body is the destination's request body, chunk by chunk.
async fn copy_blob(
    source: &Side,
    destination: &Side,
    blob: &MissingBlob,
    progress: Arc<dyn Progress>,
) -> Result<(), SyncError> {
    let copy_failed = |message: String| SyncError::BlobCopy { digest: blob.digest.clone(), message };
    let download = format!("the download of blob {}", blob.digest);
    let path = format!("/v1/blobs/{}/data", blob.digest);
    let response = source
        .api
        .open(Method::GET, &path, &[], whole_body(Bytes::new()))
        .await
        .map_err(|e| source.error(&download, e))?;
    let status = response.status().as_u16();
    if status != 200 {
        let answer = small_answer(response.into_body()).await;
        return Err(source.refused(&download, status, &answer));
    }
    let length = response.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if length != Some(blob.size) {
        return Err(copy_failed(format!(
            "the source announces {length:?} bytes, its export said {} bytes",
            blob.size
        )));
    }
    let body = response
        .into_body()
        .map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                progress.advance(data.len() as u64);
            }
            frame
        })
        .map_err(|e| Box::new(e) as BoxError)
        .boxed_unsync();
    let upload = format!("the upload of blob {}", blob.digest);
    let (digest, size) = match destination.api.upload_blob(body, blob.size).await {
        Ok(stored) => stored,
        Err(ClientError::Broken { message, .. }) => return Err(copy_failed(message)),
        Err(error) => return Err(destination.error(&upload, error)),
    };
    if digest != blob.digest || size != blob.size {
        return Err(copy_failed(format!(
            "the destination stored {digest} ({size:?} bytes), not {} ({} bytes)",
            blob.digest, blob.size
        )));
    }
    Ok(())
}

/// The hidden test hook: creates the hold file and waits (bounded) until the test deletes it.
async fn maybe_hold_for_test() {
    let Some(path) = std::env::var_os(TEST_HOLD_FILE) else { return };
    if std::fs::write(&path, b"holding before the apply\n").is_err() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::path::Path::new(&path).exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Step 5: applies the source's export as one change set, only if the destination is still at `if_revision`;
/// returns the destination's new revision.
async fn apply(destination: &Side, body: Value, if_revision: u64) -> Result<u64, SyncError> {
    let what = "the import (POST /v1/import)";
    let answer = flow::apply(&destination.api, "/v1/import", body, if_revision)
        .await
        .map_err(|e| destination.flow_error(what, e))?;
    answer["revision"].as_u64().ok_or_else(|| destination.bad_answer(what, "it has no \"revision\""))
}

/// The sizes of `blobs` added up (saturating: they are what a server said).
pub fn total_size(blobs: &[MissingBlob]) -> u64 {
    blobs.iter().fold(0u64, |total, blob| total.saturating_add(blob.size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_answers_are_grouped_and_unknown_kinds_refused() {
        let answer = json!({"changes": [
            {"collection": "terminals", "id": "t1", "kind": "changed", "bytes": 10},
            {"collection": "firmware", "id": "fw", "kind": "created", "bytes": 10},
            {"collection": "terminals", "id": "t9", "kind": "deleted", "bytes": 0},
        ], "missing_blobs": [{"digest": "ab", "size": 3}]});
        let grouped = changes_from_answer(&answer).unwrap();
        assert_eq!(grouped["terminals"].changed, ["t1"]);
        assert_eq!(grouped["terminals"].deleted, ["t9"]);
        assert_eq!(grouped["firmware"].created, ["fw"]);
        assert_eq!(blobs_from_answer(&answer), [MissingBlob { digest: "ab".into(), size: 3 }]);
        let odd = json!({"changes": [{"collection": "terminals", "id": "t1", "kind": "moved"}]});
        assert!(changes_from_answer(&odd).is_err());
    }

    #[test]
    fn the_export_sent_has_no_cluster_events() {
        let export = Export {
            revision: 3,
            value: json!({"revision": 3, "collections": {"cluster_events": {"e": {}}, "termcap": {"x": {}}}}),
        };
        let sent = export_to_send(&export);
        assert!(sent["collections"].get(CLUSTER_EVENTS).is_none());
        assert!(sent["collections"]["termcap"]["x"].is_object());
    }

    /// The exit codes of these errors are checked in `crate::cmd::error`.
    #[test]
    fn errors_say_what_happened() {
        let moved = SyncError::DestinationMoved { preview: 4, now: "5".into() };
        assert!(
            moved.to_string().contains("revision 4 → 5") && moved.to_string().contains("nothing was written")
        );
        let refused = SyncError::Refused {
            server: "http://b".into(),
            what: "the import".into(),
            status: 403,
            message: "operator token needed".into(),
            hint: Some("pass --to-token".into()),
        };
        assert!(refused.to_string().ends_with("operator token needed\nhint: pass --to-token"));
    }
}

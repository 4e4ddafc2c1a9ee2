//! `tandem sync --from URL --to URL`: make one installation's configuration equal to another's, one way.
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
//! 3. `confirm`: a person says yes on a terminal, or the caller passed `--yes`; with neither, nothing
//!    happens (exit 1).
//! 4. `copy_blobs`: each missing blob streams from the source (`GET /v1/blobs/{sha256}/data`) straight
//!    into the destination (`POST /v1/blobs`) — never whole in memory — and the destination must answer the
//!    same digest and size. Blobs are content-addressed, so copying one that ends up unused changes no
//!    configuration.
//! 5. `apply`: `POST /v1/import` with `if_revision` = the destination revision the preview was computed
//!    at: everything the operator confirmed is applied as one change set (one event, undoable with
//!    `tandem undo`), or — if anyone wrote to the destination since the preview — nothing is (412), and sync
//!    says to run it again.
//! 6. The report: revisions, counts per collection, blobs copied, time taken (`--json`: one JSON document).
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

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Method;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use indicatif::ProgressBar;
use serde::Serialize;
use serde_json::{Value, json};
use tandem_cluster::network::error_chain;
use tandem_storage::{CLUSTER_EVENTS, Digest, MissingBlob};

use crate::client::{ApiClient, ClientError};

/// How long a JSON request (export, preview, import) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a blob copy may take: this much, plus one second per MiB (a copy slower than 1 MiB/s is stuck).
const BLOB_BASE_TIMEOUT: Duration = Duration::from_secs(60);
/// The environment variable of the test hook (see the module documentation).
const TEST_HOLD_FILE: &str = "TANDEM_SYNC_TEST_HOLD_FILE";

/// Options of `tandem sync`.
#[derive(clap::Args, Debug, Clone)]
pub struct SyncArgs {
    /// The installation to copy from (any data node or mirror of it), e.g. http://10.1.0.5:7070.
    #[arg(long)]
    pub from: String,
    /// The installation to overwrite (any data node of it).
    #[arg(long)]
    pub to: String,
    /// Apply without asking (needed when stdin is not a terminal).
    #[arg(long)]
    pub yes: bool,
    /// The source's API token (default: --token / TANDEM_TOKEN).
    #[arg(long, env = "TANDEM_FROM_TOKEN", hide_env_values = true)]
    pub from_token: Option<String>,
    /// The destination's API token, an operator token (default: --token / TANDEM_TOKEN).
    #[arg(long, env = "TANDEM_TO_TOKEN", hide_env_values = true)]
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
    #[error("{server} refused {what} (HTTP {status}): {message}{}", hint_line(.hint))]
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
    /// The CLI's exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            SyncError::Unreachable { .. } => crate::cli::EXIT_UNREACHABLE,
            SyncError::BadAddress(_) => crate::cli::EXIT_USAGE,
            _ => crate::cli::EXIT_FAILED,
        }
    }

    fn from_client(error: ClientError) -> Self {
        match error {
            ClientError::Unreachable { server, message } => SyncError::Unreachable { server, message },
            ClientError::BadAddress(address) => SyncError::BadAddress(address),
            ClientError::BadAnswer(message) => {
                SyncError::BadAnswer { server: "a node".into(), what: "a request".into(), message }
            }
        }
    }
}

fn hint_line(hint: &Option<String>) -> String {
    hint.as_ref().map(|hint| format!("\nhint: {hint}")).unwrap_or_default()
}

/// One side of the sync: its URL as the operator gave it, and a client of its API.
#[derive(Debug)]
struct Side {
    url: String,
    api: ApiClient,
    token: Option<String>,
}

impl Side {
    fn new(url: &str, token: Option<String>) -> Self {
        Side {
            url: url.to_string(),
            api: ApiClient::new(url, token.clone()).with_timeout(REQUEST_TIMEOUT),
            token,
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

/// Runs `tandem sync`: previews, confirms, copies blobs, applies and prints the report.
pub async fn run(args: &SyncArgs, default_token: Option<&str>, json_output: bool) -> Result<(), SyncError> {
    let started = Instant::now();
    let token = |own: &Option<String>| own.clone().or_else(|| default_token.map(str::to_string));
    let source = Side::new(&args.from, token(&args.from_token));
    let destination = Side::new(&args.to, token(&args.to_token));

    let source_export = fetch_export(&source).await?;
    let reason = format!("sync from {} at revision {}", source.url, source_export.revision);
    let preview = preview(&destination, &source_export, &reason).await?;
    let mut report = Report {
        outcome: if preview.is_empty() { "unchanged" } else { "preview" },
        source: SideReport { url: source.url.clone(), revision: source_export.revision },
        destination: SideReport { url: destination.url.clone(), revision: preview.destination_revision },
        new_revision: None,
        totals: totals(&preview.collections),
        collections: preview.collections.clone(),
        missing_blobs: preview.missing_blobs.clone(),
        blobs_copied: BlobsCopied::default(),
        elapsed_ms: 0,
    };
    let interactive = crate::terminal::can_ask();
    if preview.is_empty() || (!args.yes && !interactive) {
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        print_preview(&report, json_output, false);
        return if preview.is_empty() { Ok(()) } else { Err(SyncError::NotConfirmed) };
    }
    print_preview(&report, json_output, true);
    if !args.yes {
        confirm(&destination.url).await?;
    }

    report.blobs_copied = copy_blobs(&source, &destination, &preview.missing_blobs).await?;
    maybe_hold_for_test().await;
    let applied = apply(&destination, &source_export, &reason, preview.destination_revision).await?;
    report.outcome = "applied";
    report.new_revision = Some(applied);
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    if json_output {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print_report(&report);
    }
    Ok(())
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

/// Step 2: what importing the source's export would change on the destination, and the blobs it lacks.
async fn preview(destination: &Side, source: &Export, reason: &str) -> Result<Preview, SyncError> {
    let what = "the preview (POST /v1/import, dry run)";
    let body = json!({"export": export_to_send(source), "dry_run": true, "reason": reason, "source": source_label(source)});
    let (status, _, answer) = destination.send(Method::POST, "/v1/import", Some(body)).await?;
    if status != 200 {
        return Err(destination.refused(what, status, &answer));
    }
    let revision = answer["revision"]
        .as_u64()
        .ok_or_else(|| destination.bad_answer(what, "it has no \"revision\" number"))?;
    let mut missing_blobs = blobs_from_answer(&answer);
    // Digests become URL paths when the blobs are copied: only well-formed ones.
    for blob in &missing_blobs {
        Digest::parse(&blob.digest)
            .map_err(|e| destination.bad_answer(what, format!("blob {:?}: {e}", blob.digest)))?;
    }
    missing_blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
    Ok(Preview {
        destination_revision: revision,
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

/// Step 3: asks on the terminal; anything but "y"/"yes" is a no.
async fn confirm(destination: &str) -> Result<(), SyncError> {
    match crate::terminal::confirm(&format!("Apply these changes to {destination}?")).await {
        true => Ok(()),
        false => Err(SyncError::Declined),
    }
}

type CopyBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Step 4: streams every missing blob from the source into the destination, with one progress bar (bytes)
/// on a terminal.
async fn copy_blobs(
    source: &Side,
    destination: &Side,
    missing: &[MissingBlob],
) -> Result<BlobsCopied, SyncError> {
    let mut copied = BlobsCopied::default();
    if missing.is_empty() {
        return Ok(copied);
    }
    let total = total_size(missing);
    let bar = crate::terminal::byte_progress(total, "copying blobs");
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(10)));
    let http: Client<HttpConnector, CopyBody> = Client::builder(TokioExecutor::new()).build(connector);
    for (index, blob) in missing.iter().enumerate() {
        bar.set_message(format!("blob {}/{} {}", index + 1, missing.len(), short(&blob.digest)));
        let timeout = BLOB_BASE_TIMEOUT + Duration::from_secs(blob.size / (1024 * 1024));
        tokio::time::timeout(timeout, copy_blob(&http, source, destination, blob, &bar)).await.map_err(
            |_| SyncError::BlobCopy {
                digest: blob.digest.clone(),
                message: format!("it did not finish within {} s", timeout.as_secs()),
            },
        )??;
        copied.count += 1;
        copied.bytes = copied.bytes.saturating_add(blob.size);
    }
    bar.finish_and_clear();
    Ok(copied)
}

/// Copies one blob: the source's response body is the destination's request body, chunk by chunk.
async fn copy_blob(
    http: &Client<HttpConnector, CopyBody>,
    source: &Side,
    destination: &Side,
    blob: &MissingBlob,
    bar: &ProgressBar,
) -> Result<(), SyncError> {
    let copy_failed = |message: String| SyncError::BlobCopy { digest: blob.digest.clone(), message };
    let empty: CopyBody = Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync();
    let download = request_to(source, Method::GET, &format!("/v1/blobs/{}/data", blob.digest))?
        .body(empty)
        .map_err(|_| SyncError::BadAddress(source.url.clone()))?;
    let response = http.request(download).await.map_err(|e| transport_error(source, &blob.digest, &e))?;
    let status = response.status().as_u16();
    if status != 200 {
        let answer = error_answer(response.into_body()).await;
        return Err(source.refused(&format!("the download of blob {}", blob.digest), status, &answer));
    }
    let length = response.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if length != Some(blob.size) {
        return Err(copy_failed(format!(
            "the source announces {length:?} bytes, its export said {} bytes",
            blob.size
        )));
    }
    let progress = bar.clone();
    let body: CopyBody = response
        .into_body()
        .map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                progress.inc(data.len() as u64);
            }
            frame
        })
        .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        .boxed_unsync();
    let upload = request_to(destination, Method::POST, "/v1/blobs")?
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(CONTENT_LENGTH, blob.size)
        .body(body)
        .map_err(|_| SyncError::BadAddress(destination.url.clone()))?;
    let response = http.request(upload).await.map_err(|e| transport_error(destination, &blob.digest, &e))?;
    let status = response.status().as_u16();
    let answer = error_answer(response.into_body()).await;
    if status != 200 {
        return Err(destination.refused(&format!("the upload of blob {}", blob.digest), status, &answer));
    }
    let (digest, size) = (answer["digest"].as_str().unwrap_or(""), answer["size"].as_u64());
    if digest != blob.digest || size != Some(blob.size) {
        return Err(copy_failed(format!(
            "the destination stored {digest} ({size:?} bytes), not {} ({} bytes)",
            blob.digest, blob.size
        )));
    }
    Ok(())
}

/// A request to `side` with its token.
fn request_to(side: &Side, method: Method, path: &str) -> Result<hyper::http::request::Builder, SyncError> {
    let uri: hyper::Uri =
        format!("{}{path}", side.api.base()).parse().map_err(|_| SyncError::BadAddress(side.url.clone()))?;
    let mut builder = hyper::Request::builder().method(method).uri(uri);
    if let Some(token) = &side.token {
        builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    Ok(builder)
}

/// A failed blob request: unreachable if the connection could not be made, a broken copy otherwise.
fn transport_error(side: &Side, digest: &str, error: &hyper_util::client::legacy::Error) -> SyncError {
    if error.is_connect() {
        SyncError::Unreachable { server: side.url.clone(), message: error_chain(error) }
    } else {
        SyncError::BlobCopy { digest: digest.to_string(), message: error_chain(error) }
    }
}

/// A small JSON answer (an error or an upload's receipt); anything unreadable becomes `null`.
async fn error_answer(body: hyper::body::Incoming) -> Value {
    match Limited::new(body, 64 * 1024).collect().await {
        Ok(collected) => serde_json::from_slice(&collected.to_bytes()).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
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
async fn apply(
    destination: &Side,
    source: &Export,
    reason: &str,
    if_revision: u64,
) -> Result<u64, SyncError> {
    let what = "the import (POST /v1/import)";
    let body = json!({"export": export_to_send(source), "dry_run": false, "reason": reason,
                      "if_revision": if_revision, "source": source_label(source)});
    let (status, now, answer) = destination.send(Method::POST, "/v1/import", Some(body)).await?;
    match status {
        200 => {
            answer["revision"].as_u64().ok_or_else(|| destination.bad_answer(what, "it has no \"revision\""))
        }
        412 => Err(SyncError::DestinationMoved {
            preview: if_revision,
            now: now.map(|revision| revision.to_string()).unwrap_or_else(|| "a newer one".into()),
        }),
        _ => Err(destination.refused(what, status, &answer)),
    }
}

/// The sizes of `blobs` added up (saturating: they are what a server said).
fn total_size(blobs: &[MissingBlob]) -> u64 {
    blobs.iter().fold(0u64, |total, blob| total.saturating_add(blob.size))
}

/// The first 12 hex digits of a digest.
fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// Prints the preview: as JSON on stdout when it is the last word (`--json` and nothing will be applied), as
/// a table otherwise (on stderr with `--json`, so a person confirming sees it and stdout stays JSON).
fn print_preview(report: &Report, json_output: bool, will_continue: bool) {
    if json_output && !will_continue {
        println!("{}", serde_json::to_string_pretty(report).unwrap_or_default());
        return;
    }
    let text = preview_text(report);
    if json_output { eprint!("{text}") } else { print!("{text}") }
}

fn preview_text(report: &Report) -> String {
    let mut out = format!(
        "Sync from {} (revision {}) to {} (revision {})\n",
        report.source.url, report.source.revision, report.destination.url, report.destination.revision
    );
    if report.collections.is_empty() {
        out.push_str("No difference: the destination already has the source's configuration.\n");
        return out;
    }
    out.push('\n');
    for (collection, changes) in &report.collections {
        out.push_str(&format!("{collection:<20} {}\n", counts(changes)));
        for (sign, ids) in [("+", &changes.created), ("~", &changes.changed), ("-", &changes.deleted)] {
            for id in ids {
                out.push_str(&format!("  {sign} {id}\n"));
            }
        }
    }
    if report.missing_blobs.is_empty() {
        out.push_str("\nBlobs to copy: none\n");
    } else {
        let bytes = total_size(&report.missing_blobs);
        out.push_str(&format!("\nBlobs to copy: {} ({})\n", report.missing_blobs.len(), human_bytes(bytes)));
        for blob in &report.missing_blobs {
            out.push_str(&format!("  {}  {}\n", blob.digest, human_bytes(blob.size)));
        }
    }
    out
}

fn counts(changes: &CollectionChanges) -> String {
    format!(
        "{} created, {} changed, {} deleted",
        changes.created.len(),
        changes.changed.len(),
        changes.deleted.len()
    )
}

fn print_report(report: &Report) {
    println!(
        "\nSynced from {} at revision {}: {} is now at revision {}",
        report.source.url,
        report.source.revision,
        report.destination.url,
        report.new_revision.unwrap_or(report.destination.revision)
    );
    for (collection, changes) in &report.collections {
        println!("  {collection:<20} {}", counts(changes));
    }
    println!("  blobs copied: {} ({})", report.blobs_copied.count, human_bytes(report.blobs_copied.bytes));
    println!("  took {:.1} s", report.elapsed_ms as f64 / 1000.0);
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

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn errors_map_to_the_cli_exit_codes() {
        let unreachable = SyncError::Unreachable { server: "http://x".into(), message: "refused".into() };
        assert_eq!(unreachable.exit_code(), 3);
        assert_eq!(SyncError::BadAddress("::".into()).exit_code(), 2);
        assert_eq!(SyncError::NotConfirmed.exit_code(), 1);
        let moved = SyncError::DestinationMoved { preview: 4, now: "5".into() };
        assert_eq!(moved.exit_code(), 1);
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

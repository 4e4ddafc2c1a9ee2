//! Backups over the admin API: downloading one safely (`tandem backup create`) and restoring one live into a
//! running cluster (`tandem backup restore --live`). The commands in `crate::cmd::backup` print and ask;
//! offline verify and restore need no API and live there too.
//!
//! **Download.** The body of `GET /v1/backup` is streamed into `FILE.partial` next to the target (never held
//! in memory), fsynced, then checked completely with `verify_backup` — a download cut short or damaged on the
//! way is refused and deleted — and only then renamed to `FILE` and the directory fsynced. So a file under a
//! backup's name is always a complete, verified backup. Without an explicit name, the name is the one the
//! server suggests in `Content-Disposition` (`tandem-{cluster}-r{revision}-{time}.backup`), in the current
//! directory. An existing file is never overwritten.
//!
//! **Live restore.** Nothing of the running cluster's history is rewritten: the restore is an import
//! (`POST /v1/import`, the same contract `tandem sync` uses) computed against the current configuration,
//! applied as one event with the operator's reason, and undoable like any other change:
//!
//! 1. [`open_backup`]: the backup is restored (fully verified) into a temporary directory, and its export is
//!    built there ([`tandem_storage::Store::export`], exactly what `GET /v1/export` would have answered): every
//!    collection except `cluster_events`, which records the *source* cluster's own life, and the blobs the
//!    documents reference.
//! 2. [`restore_live`] runs the [`super::flow`]: the preview says what would be created, changed and
//!    deleted, at which revision, and which of the backup's blobs the node lacks; the caller's `decide` shows
//!    it and confirms; the missing blobs are uploaded (`POST /v1/blobs`, streamed from the temporary store);
//!    then the import is applied with `if_revision` = the preview's revision: if someone changed the
//!    configuration since the preview, nothing is applied and the operator sees a fresh preview on the next
//!    run.
//!
//! The temporary store needs about as much disk space as the backup; it is removed when [`BackupContents`] is
//! dropped.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::Method;
use hyper::body::Frame;
use hyper::header::CONTENT_DISPOSITION;
use serde_json::{Value, json};
use tandem_storage::backup::restore_backup;
use tandem_storage::snapshot::SnapshotSummary;
use tandem_storage::{Digest, Store, StoreOptions};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::Progress;
use super::api::{ApiClient, BoxError, ClientError, Refusal, revision_header, small_answer, whole_body};
use super::flow::{self, Flow, FlowError, Preview};

/// How long the download may stall before it is given up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a backup download or a live restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The node could not be reached (or gave an unusable answer).
    #[error("{0}")]
    Client(#[from] ClientError),
    /// Anything else: the message says what.
    #[error("{0}")]
    Failed(String),
}

fn failed(message: impl Into<String>) -> BackupError {
    BackupError::Failed(message.into())
}

/// "1 blob", "2 blobs".
pub fn count(n: u64, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// A backup downloaded, verified and renamed into place.
#[derive(Debug)]
pub struct Downloaded {
    pub path: PathBuf,
    pub summary: SnapshotSummary,
}

/// Downloads a backup to `out` (or the name the server suggests): streamed to `NAME.partial`, fsynced,
/// verified, renamed, the directory fsynced.
pub async fn download(
    client: &ApiClient,
    out: Option<&Path>,
    progress: Arc<dyn Progress>,
) -> Result<Downloaded, BackupError> {
    if let Some(out) = out {
        refuse_existing(out)?;
    }
    let client = client.clone().with_timeout(IDLE_TIMEOUT);
    let response = client.open(Method::GET, "/v1/backup", &[], whole_body(Bytes::new())).await?;
    let status = response.status().as_u16();
    if status != 200 {
        let refusal = Refusal::from_answer(status, small_answer(response.into_body()).await);
        return Err(failed(format!("the server refused the backup (HTTP {status}): {refusal}")));
    }
    let revision = revision_header(&response);
    let path = match out {
        Some(out) => out.to_path_buf(),
        None => {
            let suggested = response
                .headers()
                .get(CONTENT_DISPOSITION)
                .and_then(|v| v.to_str().ok())
                .and_then(suggested_file_name)
                .ok_or_else(|| failed("the server suggested no file name for the backup: pass --out FILE"))?;
            let path = PathBuf::from(suggested);
            refuse_existing(&path)?;
            path
        }
    };
    let temp = partial_path(&path);
    let result = match write_partial(response.into_body(), &temp, progress).await {
        Ok(bytes) => check_and_rename(&temp, &path, bytes).await,
        Err(error) => Err(error),
    };
    let summary = result.inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })?;
    if let Some(revision) = revision
        && revision != summary.header.revision.0
    {
        tracing::warn!(
            revision,
            backup = summary.header.revision.0,
            "the header and the backup disagree on the revision"
        );
    }
    Ok(Downloaded { path, summary })
}

fn refuse_existing(path: &Path) -> Result<(), BackupError> {
    if path.exists() {
        return Err(failed(format!(
            "{} already exists: choose another --out, or move the old file away first",
            path.display()
        )));
    }
    Ok(())
}

/// The file name in `attachment; filename="NAME"`, if it is a plain file name (no directories).
fn suggested_file_name(disposition: &str) -> Option<String> {
    let name = disposition.split(';').map(str::trim).find_map(|part| part.strip_prefix("filename="))?;
    let name = name.trim_matches('"');
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    plain.then(|| name.to_string())
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}

/// Streams the body into `temp` and fsyncs it; returns the bytes written.
async fn write_partial(
    mut body: hyper::body::Incoming,
    temp: &Path,
    progress: Arc<dyn Progress>,
) -> Result<u64, BackupError> {
    let file = tokio::fs::File::create(temp)
        .await
        .map_err(|e| failed(format!("cannot create {}: {e}", temp.display())))?;
    let mut file = tokio::io::BufWriter::with_capacity(256 * 1024, file);
    progress.start("downloading backup", 0);
    let write_error = |e: std::io::Error| failed(format!("writing {} failed: {e}", temp.display()));
    let mut written = 0u64;
    loop {
        let frame = tokio::time::timeout(IDLE_TIMEOUT, body.frame())
            .await
            .map_err(|_| failed(format!("the download stalled for {} s", IDLE_TIMEOUT.as_secs())))?;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| failed(format!("the download was cut off: {e}")))?;
        if let Ok(data) = frame.into_data() {
            file.write_all(&data).await.map_err(write_error)?;
            written += data.len() as u64;
            progress.advance(data.len() as u64);
        }
    }
    file.flush().await.map_err(write_error)?;
    file.get_ref().sync_all().await.map_err(write_error)?;
    progress.finish();
    Ok(written)
}

/// Verifies the downloaded file, then renames it into place and fsyncs the directory.
async fn check_and_rename(
    temp: &Path,
    path: &Path,
    downloaded: u64,
) -> Result<tandem_storage::snapshot::SnapshotSummary, BackupError> {
    let checked = temp.to_path_buf();
    let summary = tokio::task::spawn_blocking(move || tandem_storage::backup::verify_backup(&checked))
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(format!("the downloaded backup ({downloaded} bytes) does not verify: {e}")))?;
    refuse_existing(path)?;
    std::fs::rename(temp, path)
        .map_err(|e| failed(format!("cannot rename {} to {}: {e}", temp.display(), path.display())))?;
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| failed(format!("fsyncing {} failed: {e}", parent.display())))?;
    Ok(summary)
}

/// A backup opened for a live restore: its store in a temporary directory, and the export built from it.
#[derive(Debug)]
pub struct BackupContents {
    /// Declared before `_dir`: the store is closed before its directory is removed.
    store: Arc<Store>,
    _dir: tempfile::TempDir,
    export: Value,
    /// Blobs the exported documents reference, with their sizes.
    blobs: BTreeMap<Digest, u64>,
    pub revision: u64,
    pub cluster_id: String,
}

/// Restores the backup into a temporary directory and builds the export (see the module documentation).
pub async fn open_backup(file: &Path) -> Result<BackupContents, BackupError> {
    let file = file.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let problem =
            |e: tandem_storage::Error| failed(format!("{} is not a usable backup: {e}", file.display()));
        let dir = tempfile::Builder::new()
            .prefix("tandem-restore-")
            .tempdir()
            .map_err(|e| failed(format!("cannot create a temporary directory: {e}")))?;
        let (store, summary) = restore_backup(&file, dir.path(), StoreOptions::default()).map_err(problem)?;
        let (export, blobs) = export_of(&store)?;
        Ok(BackupContents {
            store: Arc::new(store),
            _dir: dir,
            export,
            blobs,
            revision: summary.header.revision.0,
            cluster_id: summary.header.cluster_id,
        })
    })
    .await
    .map_err(|e| failed(e.to_string()))?
}

/// The export (`GET /v1/export`'s format, `cluster_events` left out) of a store's current configuration, and
/// the blobs it references.
fn export_of(store: &Store) -> Result<(Value, BTreeMap<Digest, u64>), BackupError> {
    let export =
        store.export(None).map_err(|e| failed(format!("reading the backup's configuration: {e}")))?;
    let mut blobs = BTreeMap::new();
    for (text, size) in &export.blobs {
        let digest = Digest::parse(text).map_err(|e| failed(format!("the backup names a bad blob: {e}")))?;
        blobs.insert(digest, *size);
    }
    let export = serde_json::to_value(&export).map_err(|e| failed(e.to_string()))?;
    Ok((export, blobs))
}

/// The blobs the dry run says the node lacks, checked against the backup's own list (the backup holds every
/// blob it references, so any other digest is a confused answer).
fn missing_blobs(preview: &Value, blobs: &BTreeMap<Digest, u64>) -> Result<Vec<(Digest, u64)>, BackupError> {
    let mut missing = Vec::new();
    for blob in preview["missing_blobs"].as_array().into_iter().flatten() {
        let digest = blob["digest"].as_str().and_then(|d| Digest::parse(d).ok());
        match digest.and_then(|digest| blobs.get(&digest).map(|size| (digest, *size))) {
            Some(known) => missing.push(known),
            None => {
                return Err(failed(format!(
                    "the node asked for a blob the backup does not reference: {blob}"
                )));
            }
        }
    }
    Ok(missing)
}

/// What a live restore would do: the dry run, and the blobs to upload first.
#[derive(Debug)]
pub struct RestorePreview<'a> {
    pub preview: &'a Preview,
    pub missing: &'a [(Digest, u64)],
}

/// Restores `contents` into the running cluster behind `client` as one change with `reason`; `source`
/// describes the backup in the history. `decide` sees the preview and the blobs to upload, and says whether
/// to go on (`Ok(false)`: stop, nothing changed).
pub async fn restore_live(
    client: &ApiClient,
    contents: &BackupContents,
    reason: &str,
    source: &str,
    progress: Arc<dyn Progress>,
    decide: impl AsyncFnOnce(RestorePreview<'_>) -> Result<bool, BackupError>,
) -> Result<Flow, BackupError> {
    let body = json!({"export": contents.export, "reason": reason, "source": source});
    let preview = flow::preview(client, "/v1/import", body.clone()).await.map_err(restore_error)?;
    let missing = missing_blobs(&preview.answer, &contents.blobs)?;
    if !decide(RestorePreview { preview: &preview, missing: &missing }).await? {
        return Ok(Flow::Stopped(preview));
    }
    upload_blobs(client, &contents.store, &missing, progress).await?;
    let answer = flow::apply(client, "/v1/import", body, preview.revision).await.map_err(restore_error)?;
    Ok(Flow::Applied { preview, answer })
}

/// A failed preview or apply of a live restore, as the operator reads it.
fn restore_error(error: FlowError) -> BackupError {
    match error {
        FlowError::Preview(ClientError::Refused(refusal)) => {
            failed(format!("the node could not preview the restore (HTTP {}): {refusal}", refusal.status))
        }
        FlowError::Apply(ClientError::Refused(refusal)) => {
            failed(format!("the node refused the restore (HTTP {}): {refusal}", refusal.status))
        }
        FlowError::Preview(error) | FlowError::Apply(error) => BackupError::Client(error),
        FlowError::Moved { message, .. } => failed(format!(
            "not restored: the configuration changed since the preview ({}); run the restore again to see a new preview",
            message.lines().next().unwrap_or_default()
        )),
        other => failed(other.to_string()),
    }
}

/// Uploads the blobs from the backup's store, one streamed request each.
async fn upload_blobs(
    client: &ApiClient,
    store: &Arc<Store>,
    missing: &[(Digest, u64)],
    progress: Arc<dyn Progress>,
) -> Result<(), BackupError> {
    if missing.is_empty() {
        return Ok(());
    }
    progress.start("uploading blobs", missing.iter().map(|(_, size)| size).sum());
    for (digest, size) in missing {
        upload_blob(client, store, *digest, *size, progress.clone()).await?;
    }
    progress.finish();
    Ok(())
}

async fn upload_blob(
    client: &ApiClient,
    store: &Arc<Store>,
    digest: Digest,
    size: u64,
    progress: Arc<dyn Progress>,
) -> Result<(), BackupError> {
    let Some(reader) = store.open_blob(&digest) else {
        return Err(failed(format!("the backup lacks blob {digest}, which its documents reference")));
    };
    let body =
        StreamBody::new(blob_stream(reader, progress)).map_err(|e| Box::new(e) as BoxError).boxed_unsync();
    let (stored, _) = match client.upload_blob(body, size).await {
        Ok(stored) => stored,
        Err(ClientError::Refused(refusal)) => {
            return Err(failed(format!(
                "uploading blob {digest} failed (HTTP {}): {refusal}",
                refusal.status
            )));
        }
        Err(error) => return Err(error.into()),
    };
    if stored != digest.to_string() {
        return Err(failed(format!("uploading blob {digest}: the node stored {stored} instead")));
    }
    Ok(())
}

/// A blob read on a blocking thread, 256 KiB at a time, as a stream of body frames.
fn blob_stream(
    mut reader: impl Read + Send + 'static,
    progress: Arc<dyn Progress>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> {
    let (sender, mut receiver) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let mut filled = 0;
            while filled < buffer.len() {
                match reader.read(&mut buffer[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(error) => {
                        let _ = sender.blocking_send(Err(error));
                        return;
                    }
                }
            }
            if filled == 0 {
                return;
            }
            progress.advance(filled as u64);
            if sender.blocking_send(Ok(Frame::data(Bytes::copy_from_slice(&buffer[..filled])))).is_err() {
                return;
            }
        }
    });
    futures_util::stream::poll_fn(move |context| receiver.poll_recv(context))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_suggested_names_are_used() {
        let name = "tandem-ab12-r7-20240101T000000Z.backup";
        assert_eq!(suggested_file_name(&format!("attachment; filename=\"{name}\"")), Some(name.into()));
        assert_eq!(suggested_file_name("attachment; filename=\"../etc/passwd\""), None);
        assert_eq!(suggested_file_name("attachment; filename=\"/tmp/x\""), None);
        assert_eq!(suggested_file_name("attachment"), None);
    }

    use tandem_storage::{ChangeMeta, ChangeSet};

    const CLUSTER_EVENTS: &str = "cluster_events";

    #[test]
    fn the_export_leaves_cluster_events_out_and_lists_referenced_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("db")).unwrap();
        let (digest, size) = store.put_blob(1, &[5u8; 100][..]).unwrap().unwrap();
        store.put_blob(2, &[6u8; 10][..]).unwrap().unwrap();
        let change = ChangeSet::new(ChangeMeta::default())
            .put("firmware", "fw", json!({"version": "1", "blob": digest.to_string()}))
            .put("notes", "n", json!({"a": 1}))
            .put(CLUSTER_EVENTS, "epoch-1", json!({"event": "forced_recovery"}));
        store.apply_change_set(change).unwrap();
        let (export, blobs) = export_of(&store).unwrap();
        assert_eq!(export["revision"], 1);
        assert_eq!(export["collections"]["notes"]["n"], json!({"a": 1}));
        assert!(export["collections"].get(CLUSTER_EVENTS).is_none());
        assert_eq!(blobs, BTreeMap::from([(digest, size)]));
        assert_eq!(export["blobs"], json!({digest.to_string(): 100}));
    }
}

//! `tandem backup restore FILE --live --reason TEXT [--yes]`: make a running cluster's configuration equal to
//! a backup's again, as one new change.
//!
//! Nothing of the running cluster's history is rewritten: the restore is an import (`POST /v1/import`, the
//! same contract `tandem sync` uses) computed against the current configuration, applied as one event with
//! the operator's reason, and undoable like any other change. Step by step:
//!
//! 1. Refuse at once when nobody can confirm (stdin is not a terminal) and `--yes` was not given.
//! 2. Read the backup: it is restored (fully verified) into a temporary directory, and its export is built
//!    there ([`tandem_storage::Store::export`], exactly what `GET /v1/export` would have answered): every
//!    collection except `cluster_events`, which records the *source* cluster's own life, and the blobs the
//!    documents reference.
//! 3. Preview: a dry-run import says what would be created, changed and deleted, at which revision, and
//!    which of the backup's blobs the node lacks.
//! 4. Stop here with `--dry-run`. Otherwise confirm (unless `--yes`), upload the missing blobs
//!    (`POST /v1/blobs`, streamed from the temporary store, with a progress bar on a terminal), then import
//!    for real with `if_revision` = the preview's revision: if someone changed the configuration since the
//!    preview, nothing is applied and the operator sees a fresh preview on the next run.
//!
//! The temporary store needs about as much disk space as the backup; it is removed on exit.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::Method;
use hyper::body::Frame;
use indicatif::ProgressBar;
use serde_json::{Value, json};
use tandem_storage::backup::restore_backup;
use tandem_storage::{Digest, Store, StoreOptions};
use tokio::sync::mpsc;

use super::{api_error_message, base_url, count, failed, streaming_client, unreachable_server};
use crate::cli::{Cli, CliError};
use crate::client::ApiClient;

/// How long an import (preview or apply) may take.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(300);
/// Changes listed one by one in the preview; the rest are counted.
const PREVIEW_LINES: usize = 100;

/// A backup opened for a live restore: its store in a temporary directory, and the export built from it.
struct BackupContents {
    /// Declared before `_dir`: the store is closed before its directory is removed.
    store: Arc<Store>,
    _dir: tempfile::TempDir,
    export: Value,
    /// Blobs the exported documents reference, with their sizes.
    blobs: BTreeMap<Digest, u64>,
    revision: u64,
    cluster_id: String,
}

/// Runs `tandem backup restore FILE --live`.
pub async fn restore(cli: &Cli, file: &Path, reason: &str, yes: bool, dry_run: bool) -> Result<(), CliError> {
    if !yes && !dry_run && !crate::terminal::can_ask() {
        return Err(failed(
            "not restored: stdin is not a terminal, so nobody can confirm; pass --yes to restore without asking",
        ));
    }
    let contents = open_backup(file).await?;
    let client = ApiClient::new(&cli.server, cli.token.clone()).with_timeout(IMPORT_TIMEOUT);
    let source = format!(
        "backup {} (cluster {}, revision {})",
        file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        contents.cluster_id,
        contents.revision
    );
    // The dry run says what would change and which of the backup's blobs the node lacks.
    let preview = import(&client, &contents.export, reason, &source, true, None).await?;
    let missing = missing_blobs(&preview, &contents.blobs)?;
    print_preview(cli, file, &contents, &preview, &missing);
    if preview["outcome"] == "unchanged" && missing.is_empty() {
        report(cli, "the configuration already equals the backup's: nothing to restore", &preview);
        return Ok(());
    }
    if dry_run {
        report(cli, "dry run: nothing was changed", &preview);
        return Ok(());
    }
    if !yes {
        confirm(reason).await?;
    }
    upload_blobs(cli, &contents.store, &missing).await?;
    let at = preview["revision"].as_u64();
    let answer = import(&client, &contents.export, reason, &source, false, at).await?;
    let changes = answer["changes"].as_array().map_or(0, Vec::len);
    let message = match answer["outcome"].as_str() {
        Some("unchanged") => "the configuration already equals the backup's: nothing was changed".to_string(),
        _ => format!(
            "restored: the configuration equals the backup's (revision {} of cluster {}) again, as revision {} ({})",
            contents.revision,
            contents.cluster_id,
            answer["revision"],
            count(changes as u64, "change")
        ),
    };
    report(cli, &message, &answer);
    Ok(())
}

fn report(cli: &Cli, message: &str, answer: &Value) {
    if cli.json {
        println!("{}", serde_json::to_string_pretty(answer).unwrap_or_default());
    } else {
        println!("{message}");
    }
}

/// Restores the backup into a temporary directory and builds the export (see the module documentation).
async fn open_backup(file: &Path) -> Result<BackupContents, CliError> {
    let file = file.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let problem =
            |e: tandem_storage::Error| failed(format!("{} is not a usable backup: {e}", file.display()));
        let dir = tempfile::Builder::new()
            .prefix("tandem-restore-")
            .tempdir()
            .map_err(|e| failed(format!("cannot create a temporary directory: {e}")))?;
        let (store, summary) =
            restore_backup(&file, &dir.path().join("db"), StoreOptions::default()).map_err(problem)?;
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
fn export_of(store: &Store) -> Result<(Value, BTreeMap<Digest, u64>), CliError> {
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
fn missing_blobs(preview: &Value, blobs: &BTreeMap<Digest, u64>) -> Result<Vec<(Digest, u64)>, CliError> {
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

/// `POST /v1/import`, as a dry run or for real.
async fn import(
    client: &ApiClient,
    export: &Value,
    reason: &str,
    source: &str,
    dry_run: bool,
    if_revision: Option<u64>,
) -> Result<Value, CliError> {
    let mut body = json!({"export": export, "reason": reason, "dry_run": dry_run, "source": source});
    if let Some(revision) = if_revision {
        body["if_revision"] = json!(revision);
    }
    let (status, answer) = client.send(Method::POST, "/v1/import", Some(body)).await?;
    let message = || {
        let hint = answer["hint"].as_str().map(|h| format!("\nhint: {h}")).unwrap_or_default();
        format!("{} (HTTP {status}){hint}", answer["message"].as_str().unwrap_or("no message"))
    };
    match status {
        200 => Ok(answer),
        412 => Err(failed(format!(
            "not restored: the configuration changed since the preview ({}); run the restore again to see a new preview",
            message()
        ))),
        _ if dry_run => Err(failed(format!("the node could not preview the restore: {}", message()))),
        _ => Err(failed(format!("the node refused the restore: {}", message()))),
    }
}

fn print_preview(
    cli: &Cli,
    file: &Path,
    contents: &BackupContents,
    preview: &Value,
    missing: &[(Digest, u64)],
) {
    let mut text = format!(
        "restore {} (cluster {}, revision {}) into {} (now at revision {}):\n",
        file.display(),
        contents.cluster_id,
        contents.revision,
        cli.server,
        preview["revision"]
    );
    let changes = preview["changes"].as_array().cloned().unwrap_or_default();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (i, change) in changes.iter().enumerate() {
        let kind = change["kind"].as_str().unwrap_or("?");
        *counts.entry(kind.to_string()).or_default() += 1;
        if i < PREVIEW_LINES {
            text.push_str(&format!(
                "  {kind:<8} {}/{}\n",
                change["collection"].as_str().unwrap_or("?"),
                change["id"].as_str().unwrap_or("?")
            ));
        }
    }
    if changes.len() > PREVIEW_LINES {
        text.push_str(&format!("  … and {} more\n", changes.len() - PREVIEW_LINES));
    }
    let counted: Vec<String> = counts.iter().map(|(kind, n)| format!("{n} {kind}")).collect();
    text.push_str(&format!(
        "{}{}",
        count(changes.len() as u64, "change"),
        if counted.is_empty() { String::new() } else { format!(" ({})", counted.join(", ")) }
    ));
    if !missing.is_empty() {
        let bytes: u64 = missing.iter().map(|(_, size)| size).sum();
        text.push_str(&format!("; {} to upload ({bytes} bytes)", count(missing.len() as u64, "blob")));
    }
    // With --json, stdout carries only the final answer.
    if cli.json {
        eprintln!("{text}");
    } else {
        println!("{text}");
    }
}

/// Asks on the terminal; anything but yes refuses.
async fn confirm(reason: &str) -> Result<(), CliError> {
    match crate::terminal::confirm(&format!("apply this restore as one new change (reason: \"{reason}\")?"))
        .await
    {
        true => Ok(()),
        false => Err(failed("not restored: you did not confirm; nothing was changed")),
    }
}

/// Uploads the blobs from the backup's store, one streamed request each.
async fn upload_blobs(cli: &Cli, store: &Arc<Store>, missing: &[(Digest, u64)]) -> Result<(), CliError> {
    if missing.is_empty() {
        return Ok(());
    }
    let total: u64 = missing.iter().map(|(_, size)| size).sum();
    let bar = crate::terminal::byte_progress(total, "uploading blobs");
    for (digest, size) in missing {
        upload_blob(cli, store, *digest, *size, &bar).await?;
    }
    bar.finish_and_clear();
    Ok(())
}

async fn upload_blob(
    cli: &Cli,
    store: &Arc<Store>,
    digest: Digest,
    size: u64,
    bar: &ProgressBar,
) -> Result<(), CliError> {
    let Some(mut reader) = store.open_blob(&digest) else {
        return Err(failed(format!("the backup lacks blob {digest}, which its documents reference")));
    };
    let (sender, mut receiver) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    let progress = bar.clone();
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
            progress.inc(filled as u64);
            if sender.blocking_send(Ok(Frame::data(Bytes::copy_from_slice(&buffer[..filled])))).is_err() {
                return;
            }
        }
    });
    let body = BodyExt::boxed(StreamBody::new(futures_util::stream::poll_fn(move |context| {
        receiver.poll_recv(context)
    })));
    let base = base_url(&cli.server);
    let mut request = hyper::Request::post(format!("{base}/v1/blobs"))
        .header("content-type", "application/octet-stream")
        .header("content-length", size);
    if let Some(token) = &cli.token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(body).map_err(|e| failed(e.to_string()))?;
    let response = streaming_client()
        .request(request)
        .await
        .map_err(|e| unreachable_server(&base, tandem_cluster::network::error_chain(&e)))?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if status != 200 {
        return Err(failed(format!("uploading blob {digest} failed: {}", api_error_message(status, &bytes))));
    }
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if answer["digest"].as_str() != Some(digest.to_string().as_str()) {
        return Err(failed(format!("uploading blob {digest}: the node stored {} instead", answer["digest"])));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
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

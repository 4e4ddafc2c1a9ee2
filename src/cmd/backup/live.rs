//! `tandem backup restore FILE --live --reason TEXT [--yes] [--dry-run]`: make a running cluster's
//! configuration equal to a backup's again, as one new change ([`crate::client::backup::restore_live`]).
//!
//! It refuses at once when nobody can confirm (stdin is not a terminal) and `--yes` was not given; shows the
//! preview (what would be created, changed and deleted, and the blobs to upload); stops there with
//! `--dry-run`; otherwise asks (unless `--yes`) and restores.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use tandem_storage::Digest;

use super::super::Context;
use super::super::error::CmdError;
use super::super::output::{byte_progress, can_ask, confirm, print_json};
use crate::client::backup::{BackupContents, BackupError, RestorePreview, count, open_backup, restore_live};
use crate::client::flow::Flow;

/// How long an import (preview or apply) may take.
const IMPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
/// Changes listed one by one in the preview; the rest are counted.
const PREVIEW_LINES: usize = 100;

/// Runs `tandem backup restore FILE --live`.
pub async fn restore(
    ctx: &Context,
    file: &Path,
    reason: &str,
    yes: bool,
    dry_run: bool,
) -> Result<(), CmdError> {
    if !yes && !dry_run && !can_ask() {
        return Err(CmdError::failed(
            "not restored: stdin is not a terminal, so nobody can confirm; pass --yes to restore without asking",
        ));
    }
    let contents = open_backup(file).await?;
    let client = ctx.client().with_timeout(IMPORT_TIMEOUT);
    let source = format!(
        "backup {} (cluster {}, revision {})",
        file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        contents.cluster_id,
        contents.revision
    );
    let decide = async |restore: RestorePreview<'_>| -> Result<bool, BackupError> {
        let (preview, missing) = (&restore.preview.answer, restore.missing);
        print_preview(ctx, file, &contents, preview, missing);
        if preview["outcome"] == "unchanged" && missing.is_empty() {
            report(ctx, "the configuration already equals the backup's: nothing to restore", preview);
            return Ok(false);
        }
        if dry_run {
            report(ctx, "dry run: nothing was changed", preview);
            return Ok(false);
        }
        let question = format!("apply this restore as one new change (reason: \"{reason}\")?");
        if !yes && !confirm(&question).await {
            return Err(BackupError::Failed("not restored: you did not confirm; nothing was changed".into()));
        }
        Ok(true)
    };
    let progress = Arc::new(byte_progress(0, "uploading blobs"));
    let Flow::Applied { answer, .. } =
        restore_live(&client, &contents, reason, &source, progress, decide).await?
    else {
        return Ok(());
    };
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
    report(ctx, &message, &answer);
    Ok(())
}

fn report(ctx: &Context, message: &str, answer: &Value) {
    if ctx.json {
        print_json(answer);
    } else {
        println!("{message}");
    }
}

fn print_preview(
    ctx: &Context,
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
        ctx.server,
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
    if ctx.json {
        eprintln!("{text}");
    } else {
        println!("{text}");
    }
}

//! `tandem backup create | verify | restore`: backups, taken on demand and restored into a new cluster or into
//! a running one.
//!
//! A backup file is a storage snapshot (history, documents, blobs; see `tandem_storage::snapshot`) followed
//! by a trailer with its length and SHA-256 (`tandem_storage::backup`). Because it carries the *history*, a
//! restored installation can still show who changed what and go back to any revision before the backup.
//!
//! | what | where |
//! |---|---|
//! | `GET /v1/backup`: stream a backup from a detached snapshot | `node/api/backup.rs` |
//! | scheduled backups on the leader, retention, status and metrics; file names | [`crate::node::backup`] |
//! | `tandem backup create`: download, fsync, verify, rename | [`crate::client::backup::download`], here |
//! | `tandem backup verify`, `tandem backup restore --data-dir` (offline) | [`offline`] |
//! | `tandem backup restore --live`: the backup's configuration as one new change | [`live`], [`crate::client::backup::restore_live`] |
//!
//! Two ways back, for two different accidents:
//! - **Offline restore** rebuilds an installation that is gone: a *new* cluster (new cluster id, so it can
//!   never be mistaken for, or join, the one the backup came from) with the backup's history and revisions,
//!   started as a single node; partners are added as usual.
//! - **Live restore** undoes damage in a running cluster: the configuration becomes the backup's again
//!   through `POST /v1/import`, as one new event with a reason — history is kept, and the restore itself
//!   can be undone like any change.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Subcommand;
use serde_json::json;

use super::Context;
use super::error::CmdError;
use super::output::{byte_progress, print_json};
use crate::client::backup::count;

pub mod live;
pub mod offline;

#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// Download a backup of the node's store: streamed to a temporary file, verified, renamed into place.
    Create {
        /// Where to write it (default: the name the server suggests, in the current directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a backup file completely (offline): trailer, checksum, history, documents, blobs.
    Verify { file: PathBuf },
    /// Restore a backup: offline into a new data directory (a new cluster with the backup's history), or
    /// with --live into the running cluster at --server as one new change (its history is kept).
    Restore {
        file: PathBuf,
        /// Offline: the new node's data directory (must not exist, or be empty); then `tandem serve --data-dir`.
        #[arg(long, conflicts_with = "live", required_unless_present = "live")]
        data_dir: Option<PathBuf>,
        /// Restore into the running cluster at --server (needs --reason).
        #[arg(long)]
        live: bool,
        /// Why (recorded in the history; required with --live).
        #[arg(long)]
        reason: Option<String>,
        /// Apply without asking (required when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
        /// Only show what a live restore would change.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Runs a `tandem backup …` command.
pub async fn run(ctx: &Context, command: &BackupCommand) -> Result<(), CmdError> {
    match command {
        BackupCommand::Create { out } => create(ctx, out.as_deref()).await,
        BackupCommand::Verify { file } => offline::verify(file, ctx.json).await,
        BackupCommand::Restore { live: false, reason, yes, dry_run, .. }
            if reason.is_some() || *yes || *dry_run =>
        {
            Err(CmdError::usage("--reason, --yes and --dry-run belong to a live restore (--live)"))
        }
        BackupCommand::Restore { file, data_dir: Some(data_dir), live: false, .. } => {
            offline::restore(file, data_dir, ctx.json).await
        }
        BackupCommand::Restore { file, live: true, reason, yes, dry_run, .. } => {
            let reason = reason.as_deref().unwrap_or("").trim();
            if reason.is_empty() {
                return Err(CmdError::usage(
                    "a live restore needs --reason TEXT (it is recorded in the history)",
                ));
            }
            live::restore(ctx, file, reason, *yes, *dry_run).await
        }
        BackupCommand::Restore { .. } => Err(CmdError::usage(
            "say where to restore: --data-dir DIR (a new cluster) or --live (the running one)",
        )),
    }
}

/// Runs `tandem backup create`.
async fn create(ctx: &Context, out: Option<&Path>) -> Result<(), CmdError> {
    let progress = Arc::new(byte_progress(0, "downloading backup"));
    let downloaded = crate::client::backup::download(&ctx.client(), out, progress).await?;
    let (path, summary) = (&downloaded.path, &downloaded.summary);
    let header = &summary.header;
    if ctx.json {
        print_json(&json!({"file": path, "revision": header.revision.0, "bytes": summary.bytes,
                           "cluster_id": header.cluster_id, "documents": header.documents,
                           "blobs": header.blobs}));
    } else {
        println!(
            "backup written: {} (revision {}, {} bytes, {}, {}; verified)",
            path.display(),
            header.revision,
            summary.bytes,
            count(header.documents, "document"),
            count(header.blobs, "blob")
        );
    }
    Ok(())
}

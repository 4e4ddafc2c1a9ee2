//! Backups: the whole store at one revision in one self-checking file, taken on demand or on a schedule, and
//! restored into a new cluster or into a running one.
//!
//! A backup file is a storage snapshot (history, documents, blobs; see `tandem_storage::snapshot`) followed
//! by a trailer with its length and SHA-256 (`tandem_storage::backup`). Because it carries the *history*, a
//! restored installation can still show who changed what and go back to any revision before the backup.
//!
//! | what | where |
//! |---|---|
//! | `GET /v1/backup`: stream a backup from a detached snapshot | [`crate::api`] (`api/backup.rs`) |
//! | `tandem backup create`: download, fsync, verify, rename | [`create`] |
//! | `tandem backup verify`, `tandem backup restore --data-dir` (offline) | [`offline`] |
//! | `tandem backup restore --live`: the backup's configuration as one new change | [`live`] |
//! | scheduled backups on the leader, retention, status and metrics | [`schedule`] |
//! | file names `tandem-{cluster}-r{revision}-{time}.backup` | [`name`] |
//!
//! Two ways back, for two different accidents:
//! - **Offline restore** rebuilds an installation that is gone: a *new* cluster (new cluster id, so it can
//!   never be mistaken for, or join, the one the backup came from) with the backup's history and revisions,
//!   started as a single node; partners are added as usual.
//! - **Live restore** undoes damage in a running cluster: the configuration becomes the backup's again
//!   through `POST /v1/import`, as one new event with a reason — history is kept, and the restore itself
//!   can be undone like any change.

use bytes::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::cli::{BackupCommand, Cli, CliError, EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE};
use crate::http::Body;

pub mod create;
pub mod live;
pub mod name;
pub mod offline;
pub mod schedule;

pub use schedule::BackupState;

/// Runs a `tandem backup …` command.
pub async fn run(cli: &Cli, command: &BackupCommand) -> Result<(), CliError> {
    match command {
        BackupCommand::Create { out } => create::create(cli, out.as_deref()).await,
        BackupCommand::Verify { file } => offline::verify(file, cli.json).await,
        BackupCommand::Restore { live: false, reason, yes, dry_run, .. }
            if reason.is_some() || *yes || *dry_run =>
        {
            Err(usage("--reason, --yes and --dry-run belong to a live restore (--live)"))
        }
        BackupCommand::Restore { file, data_dir: Some(data_dir), live: false, .. } => {
            offline::restore(file, data_dir, cli.json).await
        }
        BackupCommand::Restore { file, live: true, reason, yes, dry_run, .. } => {
            let reason = reason.as_deref().unwrap_or("").trim();
            if reason.is_empty() {
                return Err(usage("a live restore needs --reason TEXT (it is recorded in the history)"));
            }
            live::restore(cli, file, reason, *yes, *dry_run).await
        }
        BackupCommand::Restore { .. } => {
            Err(usage("say where to restore: --data-dir DIR (a new cluster) or --live (the running one)"))
        }
    }
}

/// "1 blob", "2 blobs".
fn count(n: u64, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

fn failed(message: impl Into<String>) -> CliError {
    CliError { code: EXIT_FAILED, message: message.into() }
}

fn usage(message: impl Into<String>) -> CliError {
    CliError { code: EXIT_USAGE, message: message.into() }
}

fn unreachable_server(server: &str, error: impl std::fmt::Display) -> CliError {
    CliError { code: EXIT_UNREACHABLE, message: format!("cannot reach {server}: {error}") }
}

/// An HTTP client whose requests can stream their bodies (backups down, blobs up).
fn streaming_client() -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// The base URL of `--server`.
fn base_url(server: &str) -> String {
    let base = if server.contains("://") { server.to_string() } else { format!("http://{server}") };
    base.trim_end_matches('/').to_string()
}

/// An API error body as one message (`message` and `hint`), or the raw text.
fn api_error_message(status: u16, bytes: &Bytes) -> String {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(value) if value["message"].is_string() => {
            let hint = value["hint"].as_str().map(|h| format!("\nhint: {h}")).unwrap_or_default();
            format!("{} (HTTP {status}){hint}", value["message"].as_str().unwrap_or(""))
        }
        _ => {
            format!("HTTP {status}: {}", String::from_utf8_lossy(bytes).chars().take(500).collect::<String>())
        }
    }
}

//! `tandem backup create [--out FILE]`: download a backup from a node, safely.
//!
//! The body of `GET /v1/backup` is streamed into `FILE.partial` next to the target (never held in memory),
//! fsynced, then checked completely with `verify_backup` — a download cut short or damaged on the way is
//! refused and deleted — and only then renamed to `FILE` and the directory fsynced. So a file under a backup's
//! name is always a complete, verified backup. Without `--out`, the name is the one the server suggests in
//! `Content-Disposition` (`tandem-{cluster}-r{revision}-{time}.backup`), in the current directory. An existing
//! file is never overwritten. A progress line (bytes, rate) is drawn only when stderr is a terminal.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::header::CONTENT_DISPOSITION;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::{api_error_message, base_url, count, failed, streaming_client, unreachable_server};
use crate::cli::{Cli, CliError};
use crate::http::full_body;

/// How long the download may stall before it is given up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `tandem backup create`.
pub async fn create(cli: &Cli, out: Option<&Path>) -> Result<(), CliError> {
    if let Some(out) = out {
        refuse_existing(out)?;
    }
    let base = base_url(&cli.server);
    let mut request = hyper::Request::get(format!("{base}/v1/backup"));
    if let Some(token) = &cli.token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(full_body(bytes::Bytes::new())).map_err(|e| failed(e.to_string()))?;
    let response = tokio::time::timeout(IDLE_TIMEOUT, streaming_client().request(request))
        .await
        .map_err(|_| unreachable_server(&base, "no answer"))?
        .map_err(|e| unreachable_server(&base, tandem_cluster::network::error_chain(&e)))?;
    let status = response.status().as_u16();
    if status != 200 {
        let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        return Err(failed(format!("the server refused the backup: {}", api_error_message(status, &bytes))));
    }
    let revision: Option<u64> = response
        .headers()
        .get("x-tandem-revision")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
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
    let result = download(response.into_body(), &temp).await;
    let result = match result {
        Ok(bytes) => check_and_rename(&temp, &path, bytes).await,
        Err(error) => Err(error),
    };
    let summary = match result {
        Ok(summary) => summary,
        Err(error) => {
            let _ = std::fs::remove_file(&temp);
            return Err(error);
        }
    };
    let header = &summary.header;
    if let Some(revision) = revision
        && revision != header.revision.0
    {
        tracing::warn!(
            revision,
            backup = header.revision.0,
            "the header and the backup disagree on the revision"
        );
    }
    if cli.json {
        let answer = json!({"file": path, "revision": header.revision.0, "bytes": summary.bytes,
                            "cluster_id": header.cluster_id, "documents": header.documents,
                            "blobs": header.blobs});
        println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
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

fn refuse_existing(path: &Path) -> Result<(), CliError> {
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
async fn download(mut body: hyper::body::Incoming, temp: &Path) -> Result<u64, CliError> {
    let file = tokio::fs::File::create(temp)
        .await
        .map_err(|e| failed(format!("cannot create {}: {e}", temp.display())))?;
    let mut file = tokio::io::BufWriter::with_capacity(256 * 1024, file);
    let bar = progress_bar();
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
            bar.set_position(written);
        }
    }
    file.flush().await.map_err(write_error)?;
    file.get_ref().sync_all().await.map_err(write_error)?;
    bar.finish_and_clear();
    Ok(written)
}

/// Verifies the downloaded file, then renames it into place and fsyncs the directory.
async fn check_and_rename(
    temp: &Path,
    path: &Path,
    downloaded: u64,
) -> Result<tandem_storage::snapshot::SnapshotSummary, CliError> {
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

fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} downloading backup: {bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
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
}

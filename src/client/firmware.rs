//! Firmware uploads: the image (and an optional kernel and initrd) streamed from disk as blobs — never whole
//! in memory — then the `firmware` document that names them, created or updated in one change set.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::Method;
use hyper::body::Frame;
use serde_json::{Value, json};

use super::Progress;
use super::api::{ApiClient, BoxError, ClientError, RequestBody};

/// A firmware image to upload and the document to write for it.
#[derive(Debug, Clone)]
pub struct Firmware {
    /// The firmware document's id (what terminals name in their `firmware` field).
    pub name: String,
    pub file: PathBuf,
    /// The image's version, shown in boot documents.
    pub version: String,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    /// The kernel command line for iPXE boots.
    pub cmdline: Option<String>,
    /// Why (recorded in the history; empty: "firmware NAME version V").
    pub reason: String,
}

/// Why a firmware upload failed.
#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    #[error("cannot read {path}: {error}")]
    File { path: String, error: std::io::Error },
    #[error("uploading {path} failed: {error}")]
    Upload { path: String, error: ClientError },
    /// The firmware document was refused (or the node could not be reached).
    #[error("{0}")]
    Document(ClientError),
}

impl FirmwareError {
    /// The API error behind this one, if any (the command's exit code depends on it).
    pub fn client_error(&self) -> Option<&ClientError> {
        match self {
            FirmwareError::File { .. } => None,
            FirmwareError::Upload { error, .. } | FirmwareError::Document(error) => Some(error),
        }
    }
}

/// A file as a streamed request body; returns it with its size.
pub async fn file_body(path: &Path, progress: Arc<dyn Progress>) -> std::io::Result<(RequestBody, u64)> {
    let file = tokio::fs::File::open(path).await?;
    let size = file.metadata().await?.len();
    let label = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    progress.start(&label, size);
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).map(move |chunk| {
        chunk.map(|bytes| {
            progress.advance(bytes.len() as u64);
            Frame::data(bytes)
        })
    });
    Ok((StreamBody::new(stream).map_err(|e| Box::new(e) as BoxError).boxed_unsync(), size))
}

/// Streams `path` to `POST /v1/blobs`; returns (digest, size).
async fn upload(
    client: &ApiClient,
    path: &Path,
    progress: &Arc<dyn Progress>,
) -> Result<(String, u64), FirmwareError> {
    let shown = path.display().to_string();
    let (body, size) = file_body(path, progress.clone())
        .await
        .map_err(|error| FirmwareError::File { path: shown.clone(), error })?;
    let uploaded = client.upload_blob(body, size).await;
    progress.finish();
    uploaded.map_err(|error| FirmwareError::Upload { path: shown, error })
}

/// Uploads the files and writes the firmware document; returns what was written (outcome, revision,
/// firmware, digest, size).
pub async fn add(
    client: &ApiClient,
    firmware: &Firmware,
    progress: Arc<dyn Progress>,
) -> Result<Value, FirmwareError> {
    let (digest, size) = upload(client, &firmware.file, &progress).await?;
    let mut document = json!({"version": firmware.version, "blob": digest, "size": size});
    for (field, path) in [("kernel", &firmware.kernel), ("initrd", &firmware.initrd)] {
        if let Some(path) = path {
            let (digest, _) = upload(client, path, &progress).await?;
            document[field] = json!(digest);
        }
    }
    if let Some(cmdline) = &firmware.cmdline {
        document["cmdline"] = json!(cmdline);
    }
    let reason = if firmware.reason.is_empty() {
        format!("firmware {} version {}", firmware.name, firmware.version)
    } else {
        firmware.reason.clone()
    };
    let change = json!({
        "reason": reason,
        "operations": [{"put": {"collection": "firmware", "id": firmware.name, "document": document}}],
    });
    let answer =
        client.call(Method::POST, "/v1/changes", Some(change)).await.map_err(FirmwareError::Document)?;
    Ok(json!({"outcome": answer["outcome"], "revision": answer["revision"], "firmware": firmware.name,
              "digest": digest, "size": size}))
}

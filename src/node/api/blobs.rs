//! Blobs: `POST /v1/blobs` (an upload, streamed into the log in chunks), `GET /v1/blobs/{sha256}` (its size)
//! and `GET /v1/blobs/{sha256}/data` (its bytes, streamed).
//!
//! Reading a blob's data is how one installation copies firmware and modules to another (`tandem sync`) and how an operator
//! fetches an image back. A blob can be tens of megabytes, so it is never read whole: the response body
//! is a [`ChunkedRead`] of the store's `BlobReader`, [`READ_CHUNK`] bytes at a time, read on
//! the blocking pool only when hyper asks for more — the same streaming the boot server uses; its module
//! explains why no thread waits on a slow client. The answer carries `Content-Length`; a blob shorter than
//! its size (a damaged store) cuts the connection rather than handing out a truncated file.

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::json;
use tandem_cluster::node::ClusterNode;
use tandem_storage::limits::MAX_BLOB_CHUNK;
use tandem_storage::{Command, Digest, Outcome};

use super::routes::Call;
use super::{internal, rejection_error, write_error};
use crate::http::{ApiError, Body, json_response};
use crate::node::chunked_read::ChunkedRead;

/// How many bytes one read hands over at a time.
pub const READ_CHUNK: usize = 256 * 1024;

/// Answers the blob's bytes: 400 for a malformed digest, 404 for a blob the store does not have.
pub async fn blob_data(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let state = call.state;
    let digest = Digest::parse(&call.param(0)).map_err(|e| {
        ApiError::bad_request(e.to_string())
            .with_hint("a blob is named by the sha256 of its bytes: 64 hex digits")
    })?;
    let reader = {
        let store = state.node.read_store()?;
        store.open_blob(&digest)
    };
    let Some(reader) = reader else {
        return Err(ApiError::not_found(format!("no blob {digest}"))
            .with_hint("POST /v1/blobs uploads one; GET /v1/blobs/{sha256} tells whether the store has it"));
    };
    let size = reader.size();
    let body = ChunkedRead::new(Box::new(reader), size, READ_CHUNK);
    let mut response = Response::new(BodyExt::boxed(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(size));
    Ok(response)
}
/// `GET /v1/blobs/{sha256}`: the blob's size, if the store has it.
pub async fn size(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let digest = Digest::parse(&call.param(0)).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let store = call.state.node.read_store()?;
    match store.blob_size(&digest) {
        Some(size) => Ok(json_response(StatusCode::OK, &json!({"digest": digest.to_string(), "size": size}))),
        None => Err(ApiError::not_found(format!("no blob {digest}"))),
    }
}

/// `POST /v1/blobs`: a blob, streamed in. An upload that does not reach its commit — the client went away
/// (hyper drops this handler with its connection), sent nothing for too long, or sent a chunk that was
/// refused — is aborted (`BlobAbort`), so no member keeps its part file.
pub async fn upload(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let upload: u64 = rand::random();
    let mut guard = AbortUnlessFinished { node: call.state.node.clone(), upload, finished: false };
    let result = upload_blob(
        &call.state.node,
        upload,
        call.request.into_body(),
        call.state.limits.http.body_read_timeout,
    )
    .await;
    // Committed: nothing to abort. (After a refused commit the upload is already gone; the abort is refused
    // harmlessly.)
    guard.finished = result.is_ok();
    result
}

/// Aborts its upload when dropped before the upload finished: on an error return, and when the handler's
/// future is dropped mid-upload (the client disconnected). The abort is a write like any other, proposed in
/// the background; an upload that never wrote a chunk is refused harmlessly ("no such upload").
struct AbortUnlessFinished {
    node: std::sync::Arc<ClusterNode>,
    upload: u64,
    finished: bool,
}

impl Drop for AbortUnlessFinished {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let (node, upload) = (self.node.clone(), self.upload);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                match node.write(Command::BlobAbort { upload }).await {
                    Ok(_) => tracing::info!(upload, "aborted an interrupted blob upload"),
                    Err(error) => {
                        tracing::warn!(upload, %error, "could not abort an interrupted blob upload")
                    }
                }
            });
        }
    }
}

/// Streams the request body into the store as a blob: 1 MiB chunk commands through the log, then a commit
/// with the digest computed on the way. Never holds more than one chunk in memory. An upload may be long, but
/// no gap between two of its pieces may be longer than `gap` (`408`).
async fn upload_blob(
    node: &ClusterNode,
    upload: u64,
    mut body: Incoming,
    gap: std::time::Duration,
) -> Result<Response<Body>, ApiError> {
    use http_body_util::BodyExt;
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    let mut size = 0u64;
    let mut chunk = 0u32;
    let mut buffer: Vec<u8> = Vec::with_capacity(MAX_BLOB_CHUNK);
    let send = |chunk: u32, data: Vec<u8>| Command::BlobChunk { upload, chunk, data };
    loop {
        let frame = tokio::time::timeout(gap, body.frame()).await.map_err(|_| {
            ApiError::new(
                hyper::StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!("the upload sent nothing for {gap:?}"),
            )
        })?;
        let finished = frame.is_none();
        if let Some(frame) = frame {
            let frame =
                frame.map_err(|e| ApiError::bad_request(format!("reading the upload failed: {e}")))?;
            if let Ok(data) = frame.into_data() {
                hasher.update(&data);
                size += data.len() as u64;
                buffer.extend_from_slice(&data);
            }
        }
        while buffer.len() >= MAX_BLOB_CHUNK || (finished && (!buffer.is_empty() || chunk == 0)) {
            let take = buffer.len().min(MAX_BLOB_CHUNK);
            let data: Vec<u8> = buffer.drain(..take).collect();
            let response = node.write(send(chunk, data)).await.map_err(write_error)?;
            if let Outcome::Rejected(rejection) = response.outcome {
                return Err(rejection_error(&rejection));
            }
            chunk += 1;
            if finished && buffer.is_empty() {
                break;
            }
        }
        if finished {
            break;
        }
    }
    let digest = tandem_storage::Digest::from(hasher);
    let response = node.write(Command::BlobCommit { upload, digest, size }).await.map_err(write_error)?;
    match response.outcome {
        Outcome::BlobCommitted { digest, size } => {
            Ok(json_response(StatusCode::OK, &json!({"digest": digest.to_string(), "size": size})))
        }
        Outcome::Rejected(rejection) => Err(rejection_error(&rejection)),
        other => Err(internal(&format!("unexpected outcome {other:?}"))),
    }
}

/// `GET /v1/blobs`: every blob with what references it — documents of the configuration now, events of the
/// history — and whether `DELETE /v1/blobs/{sha256}` may remove it. Reads the whole history.
pub async fn list(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let store = call.state.node.read_store()?;
    let usage = store.blob_usage().map_err(|e| internal(&e.to_string()))?;
    let blobs: Vec<serde_json::Value> = usage
        .iter()
        .map(|blob| {
            json!({"digest": blob.digest.to_string(), "size": blob.size, "in_use_by": blob.in_use_by,
                   "history_references": blob.history_references,
                   "history_revisions": blob.history_revisions.iter().map(|r| r.0).collect::<Vec<_>>(),
                   "removable": blob.removable()})
        })
        .collect();
    let removable: Vec<&tandem_storage::BlobUsage> = usage.iter().filter(|b| b.removable()).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"revision": store.revision(), "blobs": blobs,
                "removable": removable.len(), "removable_bytes": removable.iter().map(|b| b.size).sum::<u64>()}),
    ))
}

/// `DELETE /v1/blobs/{sha256}`: removes a blob nothing references (a replicated command: every member
/// deletes it). 409 `blob_in_use` naming the documents or revisions that still reference it, 404 for a blob
/// the store does not have.
pub async fn remove(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let digest = Digest::parse(&call.param(0)).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let node = &call.state.node;
    if node.read_store()?.blob_size(&digest).is_none() {
        return Err(ApiError::not_found(format!("no blob {digest}"))
            .with_hint("`tandem blobs list` lists the blobs and what references them"));
    }
    let response = node.write(Command::BlobRemove { digest }).await.map_err(write_error)?;
    match response.outcome {
        Outcome::BlobRemoved { digest, size } => Ok(json_response(
            StatusCode::OK,
            &json!({"digest": digest.to_string(), "size": size, "removed": true}),
        )),
        Outcome::Rejected(rejection @ tandem_storage::Rejection::BlobNotRemovable { .. }) => {
            Err(ApiError::new(StatusCode::CONFLICT, "blob_in_use", rejection.to_string())
                .with_hint("`tandem blobs list` shows what references each blob"))
        }
        Outcome::Rejected(rejection) => Err(rejection_error(&rejection)),
        other => Err(internal(&format!("unexpected outcome {other:?}"))),
    }
}

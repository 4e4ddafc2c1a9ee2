//! `GET /v1/backup`: stream a backup of the store — the exact bytes of a backup file.
//!
//! The handler takes a detached snapshot ([`tandem_storage::Store::snapshot`]) under the read lock and lets
//! the lock go at once: writes continue while the backup is made, and the backup holds exactly the revision it
//! was taken at (`X-Tandem-Revision`, and the suggested file name in `Content-Disposition`).
//!
//! A blocking thread writes the snapshot and its trailer ([`tandem_storage::backup::write_backup_to`]) into an
//! anonymous spool file in the data directory, at disk speed; the response then streams that file with a
//! [`ChunkedRead`] (one chunk read ahead, on the blocking pool only while it reads). So a slow or stalled
//! client holds no thread — only an open file, a place among the concurrent backups, and its connection,
//! which the listener's send-stall timeout closes ([`crate::limits`]). The answer carries `Content-Length`.
//! The spool file has no name: it disappears when the response ends, however it ends.
//!
//! At most `max_concurrent_backups` (`[limits.api]`) backups are made or sent at once; another request gets
//! `503` with `Retry-After`. An error while writing the spool (a disk read failing) is a `500` before any byte
//! is sent.

use std::io::{self, Seek, Write};
use std::time::SystemTime;

use http_body_util::BodyExt;
use hyper::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};

use super::routes::Call;
use crate::http::{ApiError, Body};
use crate::node::chunked_read::ChunkedRead;

/// The size of the pieces the body is sent in.
const PIECE_BYTES: usize = 256 * 1024;

/// `GET /v1/backup`.
pub async fn backup(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let Call { state, caller, .. } = call;
    let Ok(permit) = state.limits.backups.clone().try_acquire_owned() else {
        let mut response = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the node is already streaming its maximum number of backups",
        )
        .with_hint("try again in a minute, or raise [limits.api] max_concurrent_backups")
        .into_response();
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("30"));
        return Ok(response);
    };
    let (source, cluster_id) = {
        let store = state.node.read_store()?;
        (store.snapshot(), store.cluster_id().to_string())
    };
    let revision = source.revision();
    let file_name = crate::node::backup::name::file_name(&cluster_id, revision.0, SystemTime::now());
    let spool_dir = state.limits.spool_dir.clone();
    let spooled = tokio::task::spawn_blocking(move || -> Result<(std::fs::File, u64), String> {
        let mut file = tempfile::tempfile_in(&spool_dir)
            .map_err(|e| format!("cannot create a spool file in {}: {e}", spool_dir.display()))?;
        let mut out = io::BufWriter::with_capacity(PIECE_BYTES, &mut file);
        tandem_storage::backup::write_backup_to(&source, &mut out).map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
        drop(out);
        let length = file.stream_position().map_err(|e| e.to_string())?;
        file.rewind().map_err(|e| e.to_string())?;
        Ok((file, length))
    })
    .await;
    let (file, length) = match spooled {
        Ok(Ok(spooled)) => spooled,
        Ok(Err(error)) => {
            tracing::error!(%revision, %error, "making a backup failed");
            return Err(super::internal(&format!("making the backup failed: {error}")));
        }
        Err(error) => return Err(super::internal(&format!("the backup writer stopped: {error}"))),
    };
    tracing::info!(%revision, bytes = length, actor = %caller.name, "streaming a backup");
    // The permit lives as long as the body: the backup counts until its last byte is sent or it is dropped.
    let body = ChunkedRead::new(Box::new(file), length, PIECE_BYTES).map_frame(move |frame| {
        let _held = &permit;
        frame
    });
    let mut response = Response::new(BodyExt::boxed(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    let disposition = format!("attachment; filename=\"{file_name}\"");
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(CONTENT_DISPOSITION, value);
    }
    headers.insert("x-tandem-revision", HeaderValue::from(revision.0));
    Ok(response)
}

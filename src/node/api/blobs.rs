//! `GET /v1/blobs/{sha256}/data`: a blob's bytes, streamed.
//!
//! This is how one installation copies firmware and modules to another (`tandem sync`) and how an operator
//! fetches an image back. A blob can be tens of megabytes, so it is never read whole: the response body
//! is a [`ChunkedRead`] of the store's `BlobReader`, [`READ_CHUNK`] bytes at a time, read on
//! the blocking pool only when hyper asks for more — the same streaming the boot server uses; its module
//! explains why no thread waits on a slow client. The answer carries `Content-Length`; a blob shorter than
//! its size (a damaged store) cuts the connection rather than handing out a truncated file.

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tandem_storage::Digest;

use super::{ApiState, internal};
use crate::http::{ApiError, Body};
use crate::node::chunked_read::ChunkedRead;

/// How many bytes one read hands over at a time.
pub const READ_CHUNK: usize = 256 * 1024;

/// Answers the blob's bytes: 400 for a malformed digest, 404 for a blob the store does not have.
pub async fn blob_data(
    state: &ApiState,
    digest: &str,
    _request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let digest = Digest::parse(digest).map_err(|e| {
        ApiError::bad_request(e.to_string())
            .with_hint("a blob is named by the sha256 of its bytes: 64 hex digits")
    })?;
    let reader = {
        let store = state.node.store.read().map_err(|_| internal("the store lock is poisoned"))?;
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

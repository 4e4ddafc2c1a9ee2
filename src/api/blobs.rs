//! `GET /v1/blobs/{sha256}/data`: a blob's bytes, streamed.
//!
//! This is how one installation copies firmware and modules to another (`tandem sync`) and how an operator
//! fetches an image back. A blob can be tens of megabytes, so it is never read whole: the response body
//! ([`BlobBody`]) reads the next [`READ_CHUNK`] bytes from the store's [`BlobReader`] only when hyper asks
//! for more, plus one chunk ahead while hyper writes the current one. Reading blocks on sled, so each read
//! runs on a blocking thread ([`tokio::task::spawn_blocking`]), but only for the read itself: a slow or
//! stalled client holds no thread, only the one chunk read ahead. (Parking a blocking thread per download
//! until the client catches up would let a few hundred stalled downloads exhaust the blocking pool, which
//! the state machine also applies on.) Memory per download is therefore bounded whatever the blob's size.
//!
//! The size is known before the first byte, so the answer carries `Content-Length`; a blob that turns out
//! shorter than its size (a damaged store) ends the body with an error, which cuts the connection short
//! rather than handing out a truncated file that looks complete.

use std::io::{ErrorKind, Read};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tandem_storage::{BlobReader, Digest};
use tokio::task::JoinHandle;

use super::{ApiState, internal};
use crate::http::{ApiError, Body};

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
    let mut response = Response::new(BodyExt::boxed(BlobBody::start(reader)));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(size));
    Ok(response)
}

/// What one read on the blocking pool gives back: the reader, and the chunk or why there is none.
type ChunkRead = (BlobReader, std::io::Result<Bytes>);

/// A response body that reads its blob one chunk at a time, each read on the blocking pool.
#[derive(Debug)]
struct BlobBody {
    /// The reader, when no read is in flight.
    reader: Option<BlobReader>,
    /// Bytes not yet asked of the reader.
    unread: u64,
    /// Bytes not yet handed to hyper (including the read in flight).
    remaining: u64,
    /// The read in flight: the reader comes back with the chunk.
    pending: Option<JoinHandle<ChunkRead>>,
}

impl BlobBody {
    /// A body for the whole of `reader`, its first read already started.
    fn start(reader: BlobReader) -> Self {
        let size = reader.size();
        let mut body = BlobBody { reader: Some(reader), unread: size, remaining: size, pending: None };
        body.start_read();
        body
    }

    /// Starts reading the next chunk, unless one is in flight or everything has been asked for.
    fn start_read(&mut self) {
        if self.pending.is_some() || self.unread == 0 {
            return;
        }
        let Some(mut reader) = self.reader.take() else { return };
        let want = self.unread.min(READ_CHUNK as u64) as usize;
        self.unread -= want as u64;
        self.pending = Some(tokio::task::spawn_blocking(move || {
            let chunk = read_chunk(&mut reader, want);
            (reader, chunk)
        }));
    }

    /// Ends the body with `error`: nothing more is read or sent.
    fn fail(&mut self, error: std::io::Error) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.remaining = 0;
        self.unread = 0;
        Poll::Ready(Some(Err(error)))
    }
}

/// Reads exactly `want` bytes; a blob that ends before is an error, never a short chunk.
fn read_chunk(reader: &mut BlobReader, want: usize) -> std::io::Result<Bytes> {
    let mut chunk = vec![0u8; want];
    let mut filled = 0;
    while filled < want {
        match reader.read(&mut chunk[filled..]) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "the blob is shorter than its size",
                ));
            }
            Ok(n) => filled += n,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(Bytes::from(chunk))
}

impl hyper::body::Body for BlobBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        self.start_read();
        let Some(pending) = self.pending.as_mut() else {
            return self.fail(std::io::Error::other("the blob reader stopped early"));
        };
        let joined = std::task::ready!(Pin::new(pending).poll(cx));
        self.pending = None;
        match joined {
            Ok((reader, Ok(chunk))) => {
                self.reader = Some(reader);
                self.remaining = self.remaining.saturating_sub(chunk.len() as u64);
                // Read ahead one chunk while hyper writes this one.
                self.start_read();
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Ok((_, Err(error))) => {
                tracing::warn!(%error, "reading a blob failed; the download is cut short");
                self.fail(error)
            }
            Err(error) => self.fail(std::io::Error::other(format!("the blob read failed: {error}"))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

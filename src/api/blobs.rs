//! `GET /v1/blobs/{sha256}/data`: a blob's bytes, streamed.
//!
//! This is how one installation copies firmware and modules to another (`tandem sync`) and how an operator
//! fetches an image back. A blob can be tens of megabytes, so it is never read whole: the store's
//! [`BlobReader`] reads one stored part at a time, and reading blocks on sled, so it runs on a blocking
//! thread ([`tokio::task::spawn_blocking`]) that hands [`READ_CHUNK`]-sized pieces to the response through a
//! channel holding at most [`CHANNEL_DEPTH`] of them. The thread waits while the client is slow and ends as
//! soon as the response is dropped (the client went away), so memory per download is bounded whatever the
//! blob's size.
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
use tokio::sync::mpsc;

use super::{ApiState, internal};
use crate::http::{ApiError, Body};

/// How many bytes the reader thread hands over at a time.
pub const READ_CHUNK: usize = 256 * 1024;
/// How many chunks may wait between the reader thread and the connection.
const CHANNEL_DEPTH: usize = 2;

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
    let mut response = Response::new(BodyExt::boxed(ChannelBody::start(reader)));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(size));
    Ok(response)
}

/// A response body fed by a blocking reader thread through a bounded channel.
#[derive(Debug)]
struct ChannelBody {
    receiver: mpsc::Receiver<std::io::Result<Bytes>>,
    /// Bytes not yet handed to hyper.
    remaining: u64,
}

impl ChannelBody {
    /// Starts the reader thread for `reader`.
    fn start(reader: BlobReader) -> Self {
        let size = reader.size();
        let (sender, receiver) = mpsc::channel(CHANNEL_DEPTH);
        tokio::task::spawn_blocking(move || read_into(reader, &sender));
        ChannelBody { receiver, remaining: size }
    }
}

/// Reads the whole blob into `sender`, chunk by chunk; stops at the first error or when the body is dropped.
fn read_into(mut reader: BlobReader, sender: &mpsc::Sender<std::io::Result<Bytes>>) {
    let mut unread = reader.size();
    while unread > 0 {
        let want = unread.min(READ_CHUNK as u64) as usize;
        let mut chunk = vec![0u8; want];
        let mut filled = 0;
        while filled < want {
            match reader.read(&mut chunk[filled..]) {
                Ok(0) => {
                    let short =
                        std::io::Error::new(ErrorKind::UnexpectedEof, "the blob is shorter than its size");
                    let _ = sender.blocking_send(Err(short));
                    return;
                }
                Ok(n) => filled += n,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => {
                    tracing::warn!(%error, "reading a blob failed; the download is cut short");
                    let _ = sender.blocking_send(Err(error));
                    return;
                }
            }
        }
        unread -= want as u64;
        if sender.blocking_send(Ok(Bytes::from(chunk))).is_err() {
            return; // The client went away.
        }
    }
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        match std::task::ready!(self.receiver.poll_recv(cx)) {
            Some(Ok(chunk)) => {
                self.remaining = self.remaining.saturating_sub(chunk.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Some(Err(error)) => {
                self.remaining = 0;
                Poll::Ready(Some(Err(error)))
            }
            None => {
                self.remaining = 0;
                Poll::Ready(Some(Err(std::io::Error::other("the blob reader stopped early"))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

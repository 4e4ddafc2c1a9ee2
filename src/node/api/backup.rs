//! `GET /v1/backup`: stream a backup of the store — the exact bytes of a backup file.
//!
//! The handler takes a detached snapshot ([`tandem_storage::Store::snapshot`]) under the read lock and lets
//! the lock go at once: writes continue while the backup streams, and the backup holds exactly the revision it
//! was taken at (`X-Tandem-Revision`, and the suggested file name in `Content-Disposition`). A blocking thread
//! writes the snapshot and its trailer ([`tandem_storage::backup::write_backup_to`]) into a bounded channel
//! of 64 KiB pieces that feeds the response body, so a backup is never held in memory whole and a slow client
//! slows the writer down instead of filling memory. A client that goes away stops the writer at its next
//! piece. An error half-way (a disk read failing) aborts the response: the client sees a cut-off body, which
//! `tandem backup create` refuses because the trailer and checksum are missing.

use std::io::{self, Write};
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{CONTENT_DISPOSITION, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::sync::mpsc;

use super::routes::Call;
use crate::http::{ApiError, Body};

/// The size of the pieces the body is sent in.
const PIECE_BYTES: usize = 64 * 1024;
/// Pieces written but not yet sent (bounds the memory a backup in flight takes).
const PIECES_IN_FLIGHT: usize = 4;

type Piece = Result<Frame<Bytes>, io::Error>;

/// `GET /v1/backup`.
pub async fn backup(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let Call { state, caller, .. } = call;
    let (source, cluster_id) = {
        let store = state.node.read_store()?;
        (store.snapshot(), store.cluster_id().to_string())
    };
    let revision = source.revision();
    let file_name = crate::node::backup::name::file_name(&cluster_id, revision.0, SystemTime::now());
    let (sender, mut receiver) = mpsc::channel::<Piece>(PIECES_IN_FLIGHT);
    let actor = caller.name.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter { sender: sender.clone(), buffer: Vec::with_capacity(PIECE_BYTES) };
        match tandem_storage::backup::write_backup_to(&source, &mut out) {
            Ok(summary) => {
                tracing::info!(%revision, bytes = summary.bytes, %actor, "streamed a backup");
            }
            Err(error) if sender.is_closed() => {
                tracing::info!(%revision, %error, "a backup download was abandoned by the client");
            }
            Err(error) => {
                tracing::error!(%revision, %error, "streaming a backup failed");
                let _ = sender.blocking_send(Err(io::Error::other(error.to_string())));
            }
        }
    });
    let stream = futures_util::stream::poll_fn(move |context| receiver.poll_recv(context));
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    let disposition = format!("attachment; filename=\"{file_name}\"");
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(CONTENT_DISPOSITION, value);
    }
    headers.insert("x-tandem-revision", HeaderValue::from(revision.0));
    Ok(response)
}

/// A `Write` that sends what it is given, in pieces, into the response body's channel.
struct ChannelWriter {
    sender: mpsc::Sender<Piece>,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::replace(&mut self.buffer, Vec::with_capacity(PIECE_BYTES)));
        self.sender
            .blocking_send(Ok(Frame::data(piece)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client stopped reading the backup"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.buffer.len() >= PIECE_BYTES {
            self.send_buffer()?;
        }
        let taken = bytes.len().min(PIECE_BYTES - self.buffer.len());
        self.buffer.extend_from_slice(&bytes[..taken]);
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}

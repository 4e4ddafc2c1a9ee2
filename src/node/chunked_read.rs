//! Streaming a blob into an HTTP response without holding it in memory or a thread.
//!
//! Both the boot server (`/boot/v1/firmware/…`, `/boot/v1/blobs/…`) and the admin API
//! (`/v1/blobs/{sha256}/data`) send blobs of tens or hundreds of MiB to many clients at once. A
//! [`ChunkedRead`] hands such a blob over one chunk at a time, only when the response body is polled, with
//! one chunk read ahead while hyper writes the current one. Reading blocks on the store (sled), so each read
//! runs on tokio's blocking pool, but only for the read itself: a slow or stalled client holds no thread,
//! only the chunk read ahead. (Parking a blocking thread per download until its client catches up would let
//! a few hundred stalled downloads exhaust the pool the state machine also applies on.)
//!
//! The chunk's buffer is allocated on the async worker and only *filled* on the blocking thread: glibc gives
//! every thread that allocates its own heap arena and rarely returns freed memory, so buffers allocated on
//! many blocking threads grew a node by tens of MiB under 20 concurrent 64 MiB downloads (`tandem bench
//! boot`: 201 MiB peak before, 182 MiB after).
//!
//! The length is known before the first byte (responses carry `Content-Length`); a reader that ends early
//! (a damaged store) is an error, never a short chunk, so the connection is cut rather than a truncated file
//! handed out as complete.

use std::io::{ErrorKind, Read};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::task::JoinHandle;

/// What one read on the blocking pool gives back: the reader, and the filled chunk or why there is none.
type ChunkRead = (Box<dyn Read + Send>, std::io::Result<Vec<u8>>);

/// A reader of a known length, handed over in chunks read on the blocking pool.
pub struct ChunkedRead {
    /// The reader, when no read is in flight (in a mutex only so that the body is `Sync`, as hyper's boxed
    /// bodies must be; it is only ever reached through `&mut self`, never locked by two parties).
    reader: std::sync::Mutex<Option<Box<dyn Read + Send>>>,
    /// Bytes not yet asked of the reader.
    unread: u64,
    /// Bytes not yet handed over (including the read in flight).
    unsent: u64,
    /// The largest chunk one read hands over.
    chunk: usize,
    /// The read in flight: the reader comes back with the chunk.
    pending: Option<JoinHandle<ChunkRead>>,
}

impl std::fmt::Debug for ChunkedRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkedRead")
            .field("unread", &self.unread)
            .field("unsent", &self.unsent)
            .field("chunk", &self.chunk)
            .finish_non_exhaustive()
    }
}

impl ChunkedRead {
    /// `length` bytes of `reader`, in chunks of at most `chunk` bytes. Call from within a tokio runtime.
    pub fn new(reader: Box<dyn Read + Send>, length: u64, chunk: usize) -> Self {
        ChunkedRead {
            reader: std::sync::Mutex::new(Some(reader)),
            unread: length,
            unsent: length,
            chunk: chunk.max(1),
            pending: None,
        }
    }

    /// Bytes not yet handed over.
    pub fn unsent(&self) -> u64 {
        self.unsent
    }

    /// Starts reading the next chunk, unless one is in flight or everything has been asked for.
    fn start_read(&mut self) {
        if self.pending.is_some() || self.unread == 0 {
            return;
        }
        let slot = self.reader.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(mut reader) = slot.take() else { return };
        let want = self.unread.min(self.chunk as u64) as usize;
        self.unread -= want as u64;
        let mut chunk = vec![0u8; want];
        self.pending = Some(tokio::task::spawn_blocking(move || {
            let result = fill(&mut reader, &mut chunk).map(|()| chunk);
            (reader, result)
        }));
    }

    /// The next chunk; `None` at the end; an error ends the stream (nothing more is read).
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<std::io::Result<Bytes>>> {
        if self.unsent == 0 {
            return Poll::Ready(None);
        }
        self.start_read();
        let Some(pending) = self.pending.as_mut() else {
            return Poll::Ready(Some(Err(self.stop(std::io::Error::other("the blob reader stopped early")))));
        };
        let joined = std::task::ready!(Pin::new(pending).poll(cx));
        self.pending = None;
        match joined {
            Ok((reader, Ok(chunk))) => {
                *self.reader.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(reader);
                self.unsent = self.unsent.saturating_sub(chunk.len() as u64);
                // Read ahead one chunk while hyper writes this one.
                self.start_read();
                Poll::Ready(Some(Ok(Bytes::from(chunk))))
            }
            Ok((_, Err(error))) => Poll::Ready(Some(Err(self.stop(error)))),
            Err(error) => Poll::Ready(Some(Err(
                self.stop(std::io::Error::other(format!("the blob read failed: {error}")))
            ))),
        }
    }

    fn stop(&mut self, error: std::io::Error) -> std::io::Error {
        tracing::warn!(%error, "reading a blob failed; the download is cut short");
        self.unread = 0;
        self.unsent = 0;
        error
    }
}

/// As a response body on its own (the admin API's blob downloads; the boot server wraps it to count bytes).
impl hyper::body::Body for ChunkedRead {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.get_mut().poll_chunk(cx).map(|chunk| chunk.map(|result| result.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.unsent == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.unsent)
    }
}

/// Fills `buffer` from `reader`; a reader that ends first is an error.
fn fill(reader: &mut dyn Read, buffer: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(mut chunks: ChunkedRead) -> (Vec<Vec<u8>>, Option<std::io::Error>) {
        let mut got = Vec::new();
        loop {
            match std::future::poll_fn(|cx| chunks.poll_chunk(cx)).await {
                Some(Ok(bytes)) => got.push(bytes.to_vec()),
                Some(Err(error)) => return (got, Some(error)),
                None => return (got, None),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn hands_over_every_byte_in_chunks_and_refuses_a_short_reader() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let (chunks, error) =
            collect(ChunkedRead::new(Box::new(std::io::Cursor::new(data.clone())), 10_000, 4096)).await;
        assert!(error.is_none());
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), vec![4096, 4096, 1808]);
        assert_eq!(chunks.concat(), data);

        let (chunks, error) =
            collect(ChunkedRead::new(Box::new(std::io::Cursor::new(vec![1u8; 5000])), 10_000, 4096)).await;
        assert_eq!(chunks.len(), 1);
        assert_eq!(error.map(|e| e.kind()), Some(ErrorKind::UnexpectedEof));

        let (chunks, error) = collect(ChunkedRead::new(Box::new(std::io::empty()), 0, 4096)).await;
        assert!(chunks.is_empty() && error.is_none());
    }
}

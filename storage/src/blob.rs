//! Blobs: firmware images and modules, content-addressed by SHA-256, streamed in and out, kept in files.
//!
//! A blob arrives as an *upload*: a numbered sequence of chunk commands ([`crate::Command::BlobChunk`], at
//! most [`crate::limits::MAX_BLOB_CHUNK`] bytes each, small enough for a Raft log entry) and a final
//! [`crate::Command::BlobCommit`] that names the expected digest and size. The bytes never go into sled: each
//! chunk is written at its byte offset into the upload's *part file*, and the commit, once the running
//! SHA-256 matches, links that file into place under its digest. Where the files are and how each step is
//! made durable is [`crate::blob_files`]; sled keeps only the small metadata ([`BlobMeta`], [`StoredUpload`]).
//!
//! Reading is a stream too: [`BlobReader`] reads the file at the offset asked for, a buffer at a time, so
//! serving a 1 GiB image to 20 terminals never holds it in memory, let alone 20 times. Before its first byte
//! a reader has the file's digest checked (once per process and blob, see
//! [`crate::blob_files::BlobFiles::verify`]): a file whose bytes do not match its name is never served.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::blob_files::BlobFiles;
use crate::digest::Digest;

/// A committed blob, as sled keeps it: its bytes are in `blobs/sha256/{digest}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMeta {
    pub size: u64,
}

/// The replicated state of an upload in progress (also what a snapshot carries for it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadMeta {
    /// The chunk index the upload expects next.
    pub next_chunk: u32,
    /// Bytes received so far.
    pub size: u64,
}

/// What sled keeps of an upload in progress: its [`UploadMeta`] and the SHA-256 of its first `size` bytes.
/// The digest lets `BlobFiles::reconcile_uploads` ([`crate::blob_files`]) tell, after a crash, that the part
/// file holds exactly the bytes sled says were received (a file is written back by the kernel on its own
/// schedule, sled's pages on theirs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredUpload {
    pub meta: UploadMeta,
    pub digest_so_far: Digest,
}

/// An upload in progress, in memory: its durable meta and the running digest.
#[derive(Clone, Debug)]
pub struct Upload {
    pub meta: UploadMeta,
    pub hasher: Sha256,
}

impl Upload {
    pub fn new() -> Self {
        Upload { meta: UploadMeta { next_chunk: 0, size: 0 }, hasher: Sha256::new() }
    }

    /// What sled stores for this upload now.
    pub(crate) fn stored(&self) -> StoredUpload {
        StoredUpload { meta: self.meta.clone(), digest_so_far: Digest::from(self.hasher.clone()) }
    }
}

impl Default for Upload {
    fn default() -> Self {
        Self::new()
    }
}

/// Streams a committed blob from its file.
#[derive(Debug)]
pub struct BlobReader {
    files: BlobFiles,
    digest: Digest,
    path: PathBuf,
    size: u64,
    position: u64,
    /// Opened (after the digest check) on the first read.
    file: Option<File>,
}

impl BlobReader {
    pub(crate) fn new(files: BlobFiles, digest: Digest, size: u64) -> Self {
        let path = files.blob_path(&digest);
        BlobReader { files, digest, path, size, position: 0, file: None }
    }

    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Continues reading from `offset` (for HTTP ranges and TFTP blocks). Offsets past the end read nothing.
    pub fn seek_to(&mut self, offset: u64) {
        self.position = offset.min(self.size);
    }

    fn open(&mut self) -> io::Result<&File> {
        if self.file.is_none() {
            self.files.verify(&self.digest, self.size).map_err(io::Error::other)?;
            let file = File::open(&self.path).map_err(|e| {
                io::Error::new(e.kind(), format!("opening blob file {}: {e}", self.path.display()))
            })?;
            self.file = Some(file);
        }
        Ok(self.file.as_ref().expect("opened above"))
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.position >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let position = self.position;
        let wanted = buf.len().min((self.size - position).min(usize::MAX as u64) as usize);
        let n = self.open()?.read_at(&mut buf[..wanted], position)?;
        if n == 0 {
            return Err(io::Error::other(format!(
                "blob file {} ends at byte {position}, before its size {}",
                self.path.display(),
                self.size
            )));
        }
        self.position += n as u64;
        Ok(n)
    }
}

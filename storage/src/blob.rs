//! Blobs: firmware images and modules, content-addressed by SHA-256, streamed in and out, kept in files.
//!
//! A blob arrives as an *upload*: a numbered sequence of chunk commands ([`crate::Command::BlobChunk`], at
//! most [`crate::limits::MAX_BLOB_CHUNK`] bytes each, small enough for a Raft log entry) and a final
//! [`crate::Command::BlobCommit`] that names the expected digest and size. The bytes never go into sled: each
//! chunk is written at its byte offset into the upload's *part file*, and the commit, once the running
//! SHA-256 matches, links that file into place under its digest. Where the files are and how each step is
//! made durable is [`crate::blob_files`]; sled keeps only the small metadata ([`BlobMeta`], [`StoredUpload`]).
//!
//! Reading is a stream too: [`crate::BlobReader`] (in [`crate::blob_files`]) reads the file at the offset
//! asked for, a buffer at a time, so serving a 1 GiB image to 20 terminals never holds it in memory, let alone
//! 20 times. Before its first byte a reader has the file's digest checked (once per process and blob): a
//! file whose bytes do not match its name is never served.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

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

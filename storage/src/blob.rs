//! Blobs: firmware images and modules, content-addressed by SHA-256, streamed in and out in parts.
//!
//! A blob arrives as an *upload*: a numbered sequence of chunk commands ([`crate::Command::BlobChunk`], at
//! most [`crate::limits::MAX_BLOB_CHUNK`] bytes each, small enough for a Raft log entry) and a final
//! [`crate::Command::BlobCommit`] that names the expected digest and size. Chunk bytes are stored at once as
//! parts of exactly [`STORED_CHUNK_BYTES`] (the last may be shorter), so that no stored value comes near sled's
//! 64 KiB danger zone and a byte offset maps to a part by division. The running SHA-256 is kept in memory
//! (and recomputed from the parts after a restart); the commit compares it, so a blob is verified before it
//! becomes visible. A committed blob is immutable and keeps its upload's parts.
//!
//! Reading is a stream too: [`BlobReader`] holds one part in memory at a time, so serving a 64 MiB image to 20
//! terminals never holds it 20 times.

use std::io::{self, Read};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::engine::Keyspace;
use crate::keys;
use crate::limits::STORED_CHUNK_BYTES;

/// A committed blob: where its parts are and how large it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMeta {
    pub size: u64,
    /// The upload whose parts hold the bytes.
    pub upload: u64,
}

/// The durable state of an upload in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadMeta {
    /// The chunk index the upload expects next.
    pub next_chunk: u32,
    /// Bytes received so far.
    pub size: u64,
}

/// An upload in progress, in memory: its durable meta, the running digest, and its last (partial) part.
#[derive(Clone, Debug)]
pub struct Upload {
    pub meta: UploadMeta,
    pub hasher: Sha256,
    pub tail: Vec<u8>,
}

impl Upload {
    pub fn new() -> Self {
        Upload { meta: UploadMeta { next_chunk: 0, size: 0 }, hasher: Sha256::new(), tail: Vec::new() }
    }

    /// The number of parts written so far (including a partial last one).
    pub fn parts(&self) -> u32 {
        parts_for(self.meta.size)
    }
}

impl Default for Upload {
    fn default() -> Self {
        Self::new()
    }
}

/// How many stored parts hold `size` bytes.
pub fn parts_for(size: u64) -> u32 {
    size.div_ceil(STORED_CHUNK_BYTES as u64) as u32
}

/// Streams a committed blob from the store, one part at a time.
#[derive(Debug)]
pub struct BlobReader {
    space: Arc<dyn Keyspace>,
    upload: u64,
    size: u64,
    position: u64,
    part: Vec<u8>,
    part_offset: usize,
}

impl BlobReader {
    pub(crate) fn new(space: Arc<dyn Keyspace>, meta: &BlobMeta) -> Self {
        BlobReader {
            space,
            upload: meta.upload,
            size: meta.size,
            position: 0,
            part: Vec::new(),
            part_offset: 0,
        }
    }

    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Continues reading from `offset` (for HTTP ranges and TFTP blocks). Offsets past the end read nothing.
    pub fn seek_to(&mut self, offset: u64) {
        self.position = offset.min(self.size);
        self.part.clear();
        self.part_offset = 0;
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.position >= self.size || buf.is_empty() {
            return Ok(0);
        }
        if self.part_offset >= self.part.len() {
            let part = (self.position / STORED_CHUNK_BYTES as u64) as u32;
            let value =
                self.space.get(&keys::blob_part(self.upload, part)).map_err(io::Error::other)?.ok_or_else(
                    || io::Error::other(format!("blob part {part} of upload {} is missing", self.upload)),
                )?;
            self.part_offset = (self.position % STORED_CHUNK_BYTES as u64) as usize;
            if self.part_offset >= value.len() {
                return Err(io::Error::other(format!("blob part {part} of upload {} is short", self.upload)));
            }
            self.part = value;
        }
        let n = buf.len().min(self.part.len() - self.part_offset);
        buf[..n].copy_from_slice(&self.part[self.part_offset..self.part_offset + n]);
        self.part_offset += n;
        self.position += n as u64;
        Ok(n)
    }
}

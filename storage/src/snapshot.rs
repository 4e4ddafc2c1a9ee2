//! Snapshots: the whole store at one revision as a versioned, checksummed byte stream.
//!
//! A snapshot brings a new or lagging node up to date (the Raft log can then be purged) and is the body of a
//! backup file ([`crate::backup`]). It carries everything replicated: the full history, the projection, the
//! blobs, the uploads in progress, and the caller's applied position. Node-local data is not in the store and
//! so never in a snapshot.
//!
//! ## Format (version 3)
//! ```text
//! "TANDSNAP" format:u32
//! frame*          each frame: kind:u8 length:u32 payload[length]   (big-endian, payload ≤ 16 MiB)
//!   1 header      bincode SnapshotHeader (cluster id, revision, creation time, position, counts, chain head,
//!                 base revision and base hash)
//!   8 base        bincode list of (key, document): the configuration at the base, in key order (only when
//!                 the base is not 0)
//!   2 events      events in revision order: (length:u32 bincode Event)*, base+1 … revision, no gaps
//!   3 documents   bincode list of (key, document): the projection at the revision, in key order
//!   4 blob        bincode (digest, size), followed by data frames holding exactly `size` bytes
//!   5 data        raw bytes of the blob or upload announced before
//!   6 upload      bincode (upload id, UploadMeta), followed by data frames holding its bytes so far
//!   7 end         sha256 of every byte before this frame
//! ```
//! Frames come in that order: header, base, events, documents, blobs, uploads, end.
//!
//! **The base** ([`crate::forget`]): a store whose history before some revision was forgotten holds events
//! only after its base. Its snapshot says so in the header (`base`, `base_hash`), carries the configuration
//! at the base, and then only the kept events; the installer starts its replay from that configuration
//! and its chain from the base hash, writes a checkpoint at the base and stores base and base hash, so the
//! installed store has the same base, the same kept events and the same chain hashes as its source. The base
//! configuration is checked twice: the kept events replayed from it must give the documents the snapshot
//! holds, and its digest must be the one the forget recorded in its event (in the chain).
//!
//! Version 2 had no base ([`SnapshotHeaderV2`]: base 0, the whole history). Version 1 had no chain head in
//! its header ([`SnapshotHeaderV1`]) and its events no audit fields ([`crate::legacy::EventV1`]). Both are
//! still read (old backups, a node's kept snapshot from before the upgrade), version-1 events stored in the
//! new encoding; a newer version is refused, naming both. Either way the installer recomputes the hash chain
//! from the events ([`crate::chain`]) and stores it; with a head in the header, a history that does not hash
//! to it is refused, so a node installed from a snapshot continues exactly the chain its source had.
//!
//! ## Building without stopping writes
//! [`Store::snapshot`] clones the in-memory state (documents are shared, so this is cheap) and returns a
//! [`SnapshotSource`] that no longer borrows the store. Writing it reads events ≤ the revision and committed
//! blob files, which are immutable, so the store keeps applying while the stream is written. (Only a forget
//! applied meanwhile deletes events and the checkpoint the view reads: the snapshot is then
//! [`Error::Stale`] and built again.) Blob bytes are
//! streamed from their files a frame at a time and hashed on the way: a file whose bytes do not match its
//! digest fails the snapshot instead of travelling in it.
//!
//! ## Installing atomically
//! [`Store::install_snapshot`] writes into a fresh generation of the database (see [`crate::engine`]), checks
//! everything on the way (frame order, event revisions, the documents against a replay of the events, blob
//! digests, the final checksum), makes it durable, and only then switches generations: a crash leaves the old
//! state or the new one, and the old state is dropped whole, never merged. Blob bytes go to files the same
//! durable way a commit writes them (temporary file, fsync, rename, directory fsync); the uploads in progress
//! go to a fresh uploads directory that the new generation names ([`crate::blob_files`]).
//!
//! The format did not change when blobs moved from sled to files: a snapshot or backup of either build
//! installs in the other.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::blob::{BlobMeta, StoredUpload, UploadMeta};
use crate::blob_files::{BlobFiles, IncomingFile};
use crate::chain::read_events;
use crate::change::{DocKey, Revision};
use crate::checkpoint::{latest_checkpoint, load_checkpoint, write_checkpoint};
use crate::codec::{decode, encode, put_parts};
use crate::digest::Digest;
use crate::engine::{Keyspace, WriteBatch};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::keys::{self, Meta};
use crate::projection::{Projection, StoredDocument};
use crate::store::{State, Store, load_state, upload_dir_name};

const MAGIC: &[u8; 8] = b"TANDSNAP";
/// The snapshot format this build writes (it reads this one and formats 1 and 2).
pub const SNAPSHOT_FORMAT: u32 = 3;
/// The format without a base (the whole history, [`SnapshotHeaderV2`]).
const SNAPSHOT_FORMAT_V2: u32 = 2;
/// The format without the chain head in the header.
const SNAPSHOT_FORMAT_V1: u32 = 1;
const MAX_FRAME: usize = 16 * 1024 * 1024;
/// Frames are cut at about this size when writing.
const FRAME_TARGET: usize = 1024 * 1024;

const HEADER: u8 = 1;
const EVENTS: u8 = 2;
const DOCUMENTS: u8 = 3;
const BLOB: u8 = 4;
const DATA: u8 = 5;
const UPLOAD: u8 = 6;
const END: u8 = 7;
const BASE: u8 = 8;

/// What a snapshot says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub format: u32,
    pub cluster_id: String,
    pub revision: Revision,
    /// When the snapshot was built, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// The applied position of the store it was built from.
    pub position: Option<Vec<u8>>,
    pub documents: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub uploads: u64,
    /// The chain hash of the event at `revision` ([`crate::chain`]); `None` in a format-1 snapshot.
    pub head: Option<Digest>,
    /// The revision the history starts after ([`crate::forget`]); 0 before format 3.
    pub base: Revision,
    /// The chain hash of `base` (the genesis hash at 0).
    pub base_hash: Digest,
}

/// The header of a format-2 snapshot: [`SnapshotHeader`] without a base.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeaderV2 {
    pub format: u32,
    pub cluster_id: String,
    pub revision: Revision,
    pub created_at_ms: u64,
    pub position: Option<Vec<u8>>,
    pub documents: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub uploads: u64,
    pub head: Option<Digest>,
}

impl From<SnapshotHeaderV2> for SnapshotHeader {
    fn from(v2: SnapshotHeaderV2) -> Self {
        SnapshotHeader {
            format: v2.format,
            cluster_id: v2.cluster_id,
            revision: v2.revision,
            created_at_ms: v2.created_at_ms,
            position: v2.position,
            documents: v2.documents,
            blobs: v2.blobs,
            blob_bytes: v2.blob_bytes,
            uploads: v2.uploads,
            head: v2.head,
            base: Revision(0),
            base_hash: crate::chain::GENESIS,
        }
    }
}

/// The header of a format-1 snapshot: [`SnapshotHeader`] without the chain head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeaderV1 {
    pub format: u32,
    pub cluster_id: String,
    pub revision: Revision,
    pub created_at_ms: u64,
    pub position: Option<Vec<u8>>,
    pub documents: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub uploads: u64,
}

impl From<SnapshotHeaderV1> for SnapshotHeader {
    fn from(v1: SnapshotHeaderV1) -> Self {
        SnapshotHeader {
            format: v1.format,
            cluster_id: v1.cluster_id,
            revision: v1.revision,
            created_at_ms: v1.created_at_ms,
            position: v1.position,
            documents: v1.documents,
            blobs: v1.blobs,
            blob_bytes: v1.blob_bytes,
            uploads: v1.uploads,
            head: None,
            base: Revision(0),
            base_hash: crate::chain::GENESIS,
        }
    }
}

/// A consistent view of a store, detached from it, ready to be written as a snapshot.
#[derive(Debug)]
pub struct SnapshotSource {
    space: Arc<dyn Keyspace>,
    files: BlobFiles,
    state: State,
}

/// Counts the bytes a `Write` passes through, and hashes them.
pub(crate) struct HashingWriter<W> {
    pub(crate) inner: W,
    pub(crate) hasher: Sha256,
    pub(crate) written: u64,
}

impl<W> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Sha256::new(), written: 0 }
    }
}

impl<W: Write> HashingWriter<W> {
    fn frame(&mut self, kind: u8, payload: &[u8]) -> io::Result<()> {
        let mut head = [0u8; 5];
        head[0] = kind;
        head[1..].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        self.write_all(&head)?;
        self.write_all(payload)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Store {
    /// A detached view of the store for [`SnapshotSource::write_to`].
    pub fn snapshot(&self) -> SnapshotSource {
        SnapshotSource { space: self.space.clone(), files: self.files.clone(), state: self.state.clone() }
    }
}

impl SnapshotSource {
    /// The revision the snapshot will hold.
    pub fn revision(&self) -> Revision {
        self.state.projection.revision()
    }

    /// The header the snapshot will start with.
    pub fn header(&self) -> SnapshotHeader {
        let created_at_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        SnapshotHeader {
            format: SNAPSHOT_FORMAT,
            cluster_id: self.state.cluster_id.clone(),
            revision: self.revision(),
            created_at_ms,
            position: self.state.position.clone(),
            documents: self.state.projection.len() as u64,
            blobs: self.state.blobs.len() as u64,
            blob_bytes: self.state.blobs.values().map(|b| b.size).sum(),
            uploads: self.state.uploads.len() as u64,
            head: Some(self.state.head),
            base: self.state.base,
            base_hash: self.state.base_hash,
        }
    }

    /// A snapshot that cannot read what its view expects (`what`): stale if a forget moved the base since
    /// the view was taken, otherwise damage.
    fn missing(&self, what: String) -> Error {
        match crate::chain::stored_base(self.space.as_ref()) {
            Ok(base) if base != self.state.base => {
                Error::Stale(format!("the history was forgotten up to revision {base} meanwhile"))
            }
            _ => Error::Corrupt(what),
        }
    }

    /// Writes the snapshot to `out`; returns its header and length in bytes.
    pub fn write_to(&self, out: impl Write) -> Result<(SnapshotHeader, u64)> {
        let io_error = |e| Error::io("writing a snapshot", e);
        let mut out = HashingWriter::new(out);
        out.write_all(MAGIC).map_err(io_error)?;
        out.write_all(&SNAPSHOT_FORMAT.to_be_bytes()).map_err(io_error)?;
        let header = self.header();
        out.frame(HEADER, &encode(&header)).map_err(io_error)?;

        if header.base.0 > 0 {
            let base = load_checkpoint(self.space.as_ref(), header.base)
                .map_err(|e| self.missing(format!("the checkpoint at the base: {e}")))?;
            write_documents(&mut out, BASE, &base).map_err(io_error)?;
        }

        let mut payload = Vec::with_capacity(FRAME_TARGET + 64 * 1024);
        let mut expected = header.base.next();
        if header.revision > header.base {
            for event in read_events(self.space.as_ref(), header.base.next(), header.revision, false) {
                let event = event.map_err(|e| self.missing(e.to_string()))?;
                if event.revision != expected {
                    return Err(self.missing(format!("event {expected} is missing from the history")));
                }
                expected = expected.next();
                let bytes = encode(&event);
                payload.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                payload.extend_from_slice(&bytes);
                if payload.len() >= FRAME_TARGET {
                    out.frame(EVENTS, &payload).map_err(io_error)?;
                    payload.clear();
                }
            }
        }
        if !payload.is_empty() {
            out.frame(EVENTS, &payload).map_err(io_error)?;
        }
        if expected != header.revision.next() {
            return Err(self.missing(format!("event {expected} is missing from the history")));
        }

        write_documents(&mut out, DOCUMENTS, &self.state.projection).map_err(io_error)?;

        for (digest, meta) in &self.state.blobs {
            out.frame(BLOB, &encode(&(digest, meta.size))).map_err(io_error)?;
            let path = self.files.blob_path(digest);
            let actual = write_file(&mut out, &path, meta.size).map_err(|e| {
                // A blob removed while this is written (`tandem blobs remove`): not damage, a view out of date.
                match self.space.get(&keys::blob(digest)) {
                    Ok(None) => Error::Stale(format!("blob {digest} was removed")),
                    _ => Error::io(format!("reading blob file {}", path.display()), e),
                }
            })?;
            if actual != *digest {
                return Err(Error::Corrupt(format!(
                    "blob file {} does not match its digest (its bytes have {actual}); delete it and restart the node to rebuild the store",
                    path.display()
                )));
            }
        }
        for (id, upload) in &self.state.uploads {
            out.frame(UPLOAD, &encode(&(id, &upload.meta))).map_err(io_error)?;
            let path = self.files.part_path(*id);
            let written = write_file(&mut out, &path, upload.meta.size);
            if !matches!(&written, Ok(actual) if *actual == Digest::from(upload.hasher.clone())) {
                // An upload in progress loses its part file when it is committed or aborted while this is
                // written: not damage, a view out of date.
                return Err(match self.space.get(&keys::upload(*id)) {
                    Ok(None) => Error::Stale(format!("upload {id} ended")),
                    _ => match written {
                        Err(e) => Error::io(format!("reading part file {}", path.display()), e),
                        Ok(_) => Error::Corrupt(format!(
                            "part file {} does not hold the bytes received",
                            path.display()
                        )),
                    },
                });
            }
        }
        let digest: [u8; 32] = out.hasher.clone().finalize().into();
        out.frame(END, &digest).map_err(io_error)?;
        out.flush().map_err(io_error)?;
        Ok((header, out.written))
    }
}

/// Writes the documents of `projection` as frames of `kind` (documents, or the base), about
/// [`FRAME_TARGET`] bytes each.
fn write_documents<W: Write>(
    out: &mut HashingWriter<W>,
    kind: u8,
    projection: &Projection,
) -> io::Result<()> {
    let mut documents: Vec<(&DocKey, &StoredDocument)> = Vec::new();
    let mut size = 0;
    for (key, document) in projection.documents() {
        size += key.collection.len() + key.id.len() + document.body.len() + 32;
        documents.push((key, document));
        if size >= FRAME_TARGET {
            out.frame(kind, &encode(&documents))?;
            documents.clear();
            size = 0;
        }
    }
    if !documents.is_empty() {
        out.frame(kind, &encode(&documents))?;
    }
    Ok(())
}

/// Streams the first `size` bytes of the file at `path` as data frames; returns their digest.
fn write_file<W: Write>(out: &mut HashingWriter<W>, path: &Path, size: u64) -> io::Result<Digest> {
    let mut file = File::open(path)?.take(size);
    let mut hasher = Sha256::new();
    let mut payload = vec![0u8; FRAME_TARGET];
    let mut remaining = size;
    while remaining > 0 {
        let filled = read_full(&mut file, &mut payload)?;
        if filled == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file ends {remaining} bytes early"),
            ));
        }
        hasher.update(&payload[..filled]);
        out.frame(DATA, &payload[..filled])?;
        remaining -= filled as u64;
    }
    Ok(Digest::from(hasher))
}

/// Reads until `buffer` is full or the reader ends.
fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads frames, hashing everything before the end frame.
pub(crate) struct FrameReader<R> {
    inner: R,
    hasher: Sha256,
    offset: u64,
    /// The snapshot's format version.
    format: u32,
}

fn invalid(text: impl Into<String>) -> Error {
    Error::InvalidSnapshot(text.into())
}

impl<R: Read> FrameReader<R> {
    /// Reads and checks the magic and format version.
    pub(crate) fn open(inner: R) -> Result<Self> {
        let mut reader = FrameReader { inner, hasher: Sha256::new(), offset: 0, format: 0 };
        let mut start = [0u8; 12];
        reader.read_exact_hashed(&mut start, "the snapshot start")?;
        if &start[..8] != MAGIC {
            return Err(invalid("this is not a Tandem snapshot (bad magic bytes)"));
        }
        let format = u32::from_be_bytes(start[8..].try_into().expect("4 bytes"));
        if !(SNAPSHOT_FORMAT_V1..=SNAPSHOT_FORMAT).contains(&format) {
            return Err(invalid(format!(
                "snapshot format {format} is not supported (this build reads formats {SNAPSHOT_FORMAT_V1} to {SNAPSHOT_FORMAT})"
            )));
        }
        reader.format = format;
        Ok(reader)
    }

    fn read_exact_hashed(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        self.inner.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                invalid(format!("truncated: the stream ends inside {what} at byte {}", self.offset))
            }
            _ => Error::io("reading a snapshot", e),
        })?;
        self.hasher.update(&*buf);
        self.offset += buf.len() as u64;
        Ok(())
    }

    /// The next frame: its kind and payload. After the end frame, checks the checksum and returns `None`.
    pub(crate) fn next(&mut self) -> Result<Option<(u8, Vec<u8>)>> {
        let digest_so_far: [u8; 32] = self.hasher.clone().finalize().into();
        let frame_offset = self.offset;
        let mut head = [0u8; 5];
        self.read_exact_hashed(&mut head, "a frame header")?;
        let kind = head[0];
        let length = u32::from_be_bytes(head[1..].try_into().expect("4 bytes")) as usize;
        if !(HEADER..=BASE).contains(&kind) {
            return Err(invalid(format!("unknown frame kind {kind} at byte {frame_offset}")));
        }
        if length > MAX_FRAME {
            return Err(invalid(format!(
                "a frame at byte {frame_offset} claims {length} bytes, more than allowed"
            )));
        }
        let mut payload = vec![0u8; length];
        self.read_exact_hashed(&mut payload, "a frame")?;
        if kind == END {
            if payload != digest_so_far {
                return Err(invalid("checksum mismatch: the snapshot was altered or damaged"));
            }
            let mut extra = [0u8; 1];
            if self.inner.read(&mut extra).map_err(|e| Error::io("reading a snapshot", e))? != 0 {
                return Err(invalid("unexpected bytes after the end of the snapshot"));
            }
            return Ok(None);
        }
        Ok(Some((kind, payload)))
    }

    /// Bytes read so far.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }
}

/// What an installer or verifier saw in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSummary {
    pub header: SnapshotHeader,
    /// The stream's length in bytes.
    pub bytes: u64,
    /// The chain head recomputed from the snapshot's events (equal to the header's, when it has one).
    pub head: Digest,
}

/// Where the pieces of a verified snapshot go: a new keyspace, or nowhere (verification only).
trait Sink {
    fn write(&mut self, batch: WriteBatch) -> Result<()>;
}

struct Discard;
impl Sink for Discard {
    fn write(&mut self, _batch: WriteBatch) -> Result<()> {
        Ok(())
    }
}

struct KeyspaceSink<'a>(&'a dyn Keyspace);
impl Sink for KeyspaceSink<'_> {
    fn write(&mut self, batch: WriteBatch) -> Result<()> {
        self.0.write(batch)
    }
}

/// Reads and fully checks a snapshot stream without storing anything.
pub fn verify_snapshot(reader: impl Read) -> Result<SnapshotSummary> {
    consume(reader, &mut Discard, None, 1000)
}

const BATCH_BYTES: usize = 8 * 1024 * 1024;

/// A blob or upload whose data frames are being read.
struct IncomingBytes {
    /// The digest to verify at the end (blobs), or none (uploads in progress).
    digest: Option<Digest>,
    /// The upload's id and meta (uploads in progress).
    upload: Option<(u64, UploadMeta)>,
    size: u64,
    received: u64,
    hasher: Sha256,
    /// Where the bytes go (none when only verifying).
    file: Option<IncomingFile>,
}

/// Reads a snapshot, checks everything, and sends its key-value writes to `sink` in batches and its blob
/// bytes to `files` (when given).
fn consume(
    reader: impl Read,
    sink: &mut dyn Sink,
    files: Option<&BlobFiles>,
    checkpoint_interval: u64,
) -> Result<SnapshotSummary> {
    let mut frames = FrameReader::open(reader)?;
    let Some((HEADER, payload)) = frames.next()? else {
        return Err(invalid("the snapshot does not start with a header frame"));
    };
    let header: SnapshotHeader = match frames.format {
        SNAPSHOT_FORMAT_V1 => {
            decode::<SnapshotHeaderV1>(&payload, "snapshot header").map(SnapshotHeader::from)
        }
        SNAPSHOT_FORMAT_V2 => {
            decode::<SnapshotHeaderV2>(&payload, "snapshot header").map(SnapshotHeader::from)
        }
        _ => decode(&payload, "snapshot header"),
    }
    .map_err(|e| invalid(e.to_string()))?;
    if header.format != frames.format {
        return Err(invalid(format!(
            "the snapshot says format {} at its start but {} in its header",
            frames.format, header.format
        )));
    }
    let mut consumer = Consumer::new(sink, files, header, checkpoint_interval);
    while let Some((kind, payload)) = frames.next()? {
        if kind != DATA {
            // Data frames belong to the blob or upload before them; every other frame keeps the order.
            if kind == HEADER || frame_order(kind) < frame_order(consumer.stage) {
                return Err(invalid(format!(
                    "frame of kind {kind} out of order at byte {}",
                    frames.offset()
                )));
            }
            consumer.finish_data()?;
            if kind != BASE {
                consumer.seal_base()?;
            }
            consumer.stage = kind;
        }
        match kind {
            BASE => consumer.base(&payload)?,
            EVENTS => consumer.events(&payload)?,
            DOCUMENTS => consumer.documents(&payload)?,
            BLOB => consumer.blob(&payload)?,
            UPLOAD => consumer.upload(&payload)?,
            DATA => consumer.data(&payload)?,
            _ => return Err(invalid(format!("unexpected frame of kind {kind}"))),
        }
    }
    let (header, head) = consumer.finish()?;
    Ok(SnapshotSummary { header, bytes: frames.offset(), head })
}

/// The order frames of each kind come in (data frames excepted: they follow their blob or upload).
fn frame_order(kind: u8) -> u8 {
    match kind {
        BASE => 0,
        EVENTS => 1,
        DOCUMENTS => 2,
        BLOB => 3,
        UPLOAD => 4,
        _ => 5,
    }
}

/// What [`consume`] keeps while it reads a snapshot: the writes not yet sent, and what the checks at the
/// end compare.
struct Consumer<'a> {
    sink: &'a mut dyn Sink,
    files: Option<&'a BlobFiles>,
    header: SnapshotHeader,
    checkpoint_interval: u64,
    batch: WriteBatch,
    batch_bytes: usize,
    /// The projection the snapshot's events replay to (from the base's documents).
    replayed: Projection,
    /// Whether the base is complete (its checkpoint written): set at the first frame after the base frames.
    base_sealed: bool,
    /// The SHA-256 of the base configuration (of its checkpoint's bytes), once sealed.
    base_digest: Option<Digest>,
    /// The chain hash of the last event read.
    head: Digest,
    last_checkpoint: Revision,
    /// The projection the snapshot's document frames hold (must equal `replayed`).
    snapshot_documents: Projection,
    /// The kind of the last frame that was not data.
    stage: u8,
    blob_in_progress: Option<IncomingBytes>,
    blobs: u64,
    uploads: u64,
}

impl<'a> Consumer<'a> {
    fn new(
        sink: &'a mut dyn Sink,
        files: Option<&'a BlobFiles>,
        header: SnapshotHeader,
        checkpoint_interval: u64,
    ) -> Self {
        let mut batch = WriteBatch::new();
        batch.put(Meta::Format.key(), keys::FORMAT_VERSION.to_be_bytes().to_vec());
        batch.put(Meta::ClusterId.key(), header.cluster_id.clone().into_bytes());
        if let Some(files) = files {
            batch.put(Meta::UploadDir.key(), files.uploads_name().into_bytes());
        }
        if header.base.0 > 0 {
            batch.put(Meta::Base.key(), header.base.0.to_be_bytes().to_vec());
            batch.put(Meta::BaseHash.key(), header.base_hash.0.to_vec());
        }
        let mut replayed = Projection::new();
        replayed.set_revision(header.base);
        let (head, last_checkpoint) = (header.base_hash, header.base);
        Consumer {
            sink,
            files,
            header,
            checkpoint_interval,
            batch,
            batch_bytes: 0,
            replayed,
            base_sealed: false,
            base_digest: None,
            head,
            last_checkpoint,
            snapshot_documents: Projection::new(),
            stage: BASE,
            blob_in_progress: None,
            blobs: 0,
            uploads: 0,
        }
    }

    /// Sends the writes collected so far once they reach [`BATCH_BYTES`] (or now, with `force`).
    fn flush(&mut self, force: bool) -> Result<()> {
        if force || self.batch_bytes >= BATCH_BYTES {
            self.sink.write(std::mem::take(&mut self.batch))?;
            self.batch_bytes = 0;
        }
        Ok(())
    }

    /// A base frame: documents of the configuration at the base, where the replay starts.
    fn base(&mut self, payload: &[u8]) -> Result<()> {
        if self.header.base.0 == 0 {
            return Err(invalid("the snapshot holds documents at a base but its header names none"));
        }
        let documents: Vec<(DocKey, StoredDocument)> =
            decode(payload, "snapshot base documents").map_err(|e| invalid(e.to_string()))?;
        for (key, document) in documents {
            if document.mod_revision > self.header.base {
                return Err(invalid(format!(
                    "document {key} of the base was changed at revision {}, after the base {}",
                    document.mod_revision, self.header.base
                )));
            }
            self.batch_bytes += document.body.len() + 64;
            self.replayed.insert(key, document);
        }
        Ok(())
    }

    /// Ends the base (once): its checkpoint, so that `state_at(base)` works on the installed store.
    fn seal_base(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.base_sealed, true) {
            return Ok(());
        }
        if self.header.base > self.header.revision {
            return Err(invalid(format!(
                "the snapshot's history starts after revision {}, past its revision {}",
                self.header.base, self.header.revision
            )));
        }
        if self.header.base.0 > 0 {
            self.base_digest = Some(crate::forget::base_digest(&self.replayed));
            write_checkpoint(&mut self.batch, &self.replayed);
            self.batch_bytes += self.replayed.len() * 64;
            self.flush(false)?;
        }
        Ok(())
    }

    /// An events frame: each event is replayed, stored, and checkpointed when one is due.
    fn events(&mut self, payload: &[u8]) -> Result<()> {
        let mut rest = payload;
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err(invalid("an events frame ends inside a length"));
            }
            let length = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
            let bytes =
                rest.get(4..4 + length).ok_or_else(|| invalid("an events frame ends inside an event"))?;
            rest = &rest[4 + length..];
            let (event, reencoded) = if self.header.format == SNAPSHOT_FORMAT_V1 {
                let event: Event = decode::<crate::legacy::EventV1>(bytes, "a snapshot event")
                    .map_err(|e| invalid(e.to_string()))?
                    .into();
                let reencoded = encode(&event);
                (event, Some(reencoded))
            } else {
                (decode(bytes, "a snapshot event").map_err(|e| invalid(e.to_string()))?, None)
            };
            let bytes = reencoded.as_deref().unwrap_or(bytes);
            self.replayed.apply(&event).map_err(|e| invalid(e.to_string()))?;
            let mut value = Vec::with_capacity(crate::chain::HASH_LEN + bytes.len());
            value.extend_from_slice(&[0; crate::chain::HASH_LEN]);
            value.extend_from_slice(bytes);
            self.head = crate::chain::seal(&self.head, &mut value);
            put_parts(&mut self.batch, &value, |part| keys::event(event.revision, part));
            self.batch_bytes += bytes.len() + 32;
            if let Some(request_id) = &event.meta.request_id {
                self.batch.put(keys::request(request_id), event.revision.0.to_be_bytes().to_vec());
            }
            let interval = self.checkpoint_interval.max(self.replayed.len() as u64).max(1);
            if event.revision.0 - self.last_checkpoint.0 >= interval && event.revision < self.header.revision
            {
                write_checkpoint(&mut self.batch, &self.replayed);
                self.batch_bytes += self.replayed.len() * 64;
                self.last_checkpoint = event.revision;
            }
            self.flush(false)?;
        }
        Ok(())
    }

    /// A documents frame: kept to compare with the replay (the store rebuilds its documents from checkpoints
    /// and events, [`crate::tip`]).
    fn documents(&mut self, payload: &[u8]) -> Result<()> {
        let documents: Vec<(DocKey, StoredDocument)> =
            decode(payload, "snapshot documents").map_err(|e| invalid(e.to_string()))?;
        for (key, document) in documents {
            self.snapshot_documents.insert(key, document);
        }
        Ok(())
    }

    /// A blob header: its bytes follow in data frames, into a new file.
    fn blob(&mut self, payload: &[u8]) -> Result<()> {
        let (digest, size): (Digest, u64) =
            decode(payload, "a blob header").map_err(|e| invalid(e.to_string()))?;
        self.batch.put(keys::blob(&digest), encode(&BlobMeta { size }));
        let file = self.files.map(|files| files.incoming(&format!("blob-{digest}"))).transpose()?;
        self.blob_in_progress = Some(IncomingBytes {
            digest: Some(digest),
            upload: None,
            size,
            received: 0,
            hasher: Sha256::new(),
            file,
        });
        self.blobs += 1;
        Ok(())
    }

    /// An upload in progress: its bytes so far follow in data frames, into its part file.
    fn upload(&mut self, payload: &[u8]) -> Result<()> {
        let (id, meta): (u64, UploadMeta) =
            decode(payload, "an upload header").map_err(|e| invalid(e.to_string()))?;
        let file = self.files.map(|files| files.incoming(&format!("{id:016x}"))).transpose()?;
        self.blob_in_progress = Some(IncomingBytes {
            digest: None,
            size: meta.size,
            upload: Some((id, meta)),
            received: 0,
            hasher: Sha256::new(),
            file,
        });
        self.uploads += 1;
        Ok(())
    }

    /// Bytes of the blob or upload in progress: hashed, and written to its file.
    fn data(&mut self, payload: &[u8]) -> Result<()> {
        let Some(incoming) = self.blob_in_progress.as_mut() else {
            return Err(invalid("blob data without a blob header"));
        };
        incoming.received += payload.len() as u64;
        if incoming.received > incoming.size {
            return Err(invalid("a blob holds more bytes than its header says"));
        }
        incoming.hasher.update(payload);
        if let Some(file) = incoming.file.as_mut() {
            file.write(payload)?;
        }
        Ok(())
    }

    /// Ends the blob or upload in progress: its size and digest checked, its file put in place.
    fn finish_data(&mut self) -> Result<()> {
        let Some(IncomingBytes { digest, upload, size, received, hasher, file }) =
            self.blob_in_progress.take()
        else {
            return Ok(());
        };
        if received != size {
            return Err(invalid(format!("a blob or upload holds {received} bytes instead of {size}")));
        }
        let actual = Digest::from(hasher);
        if let Some(digest) = digest {
            if actual != digest {
                return Err(invalid(format!("blob {digest} has the wrong content (digest {actual})")));
            }
            if let (Some(file), Some(files)) = (file, self.files) {
                file.into_blob(files, &digest)?;
            }
        } else if let Some((id, meta)) = upload {
            self.batch.put(keys::upload(id), encode(&StoredUpload { meta, digest_so_far: actual }));
            if let (Some(file), Some(files)) = (file, self.files) {
                file.into_part(files, id)?;
            }
        }
        Ok(())
    }

    /// The checks once every frame is read — history, documents and counts agree with the header — and the
    /// last writes; returns the header and the recomputed chain head.
    fn finish(mut self) -> Result<(SnapshotHeader, Digest)> {
        self.finish_data()?;
        self.seal_base()?;
        let header = &self.header;
        if self.replayed.revision() != header.revision {
            return Err(invalid(format!(
                "the snapshot's history ends at revision {} but its header says {}",
                self.replayed.revision(),
                header.revision
            )));
        }
        self.snapshot_documents.set_revision(header.revision);
        if self.snapshot_documents != self.replayed {
            return Err(invalid("the snapshot's documents differ from a replay of its history"));
        }
        if self.blobs != header.blobs
            || self.uploads != header.uploads
            || self.snapshot_documents.len() as u64 != header.documents
        {
            return Err(invalid("the snapshot's contents do not match the counts in its header"));
        }
        // The forget that made the base recorded, in the chain, what the configuration there was.
        if let (Some(digest), Some(recorded)) =
            (self.base_digest, crate::forget::recorded_base_digest(&self.snapshot_documents, header.base))
            && digest != recorded
        {
            return Err(invalid(format!(
                "the snapshot's configuration at its base {} hashes to {digest}, but the forget that made the base recorded {recorded}: a document of the base was altered",
                header.base
            )));
        }
        if let Some(head) = header.head
            && head != self.head
        {
            return Err(invalid(format!(
                "the snapshot's history hashes to {} but its header says {head}: an event was altered",
                self.head
            )));
        }
        let tip =
            crate::tip::Tip { revision: header.revision, head: self.head, position: header.position.clone() };
        tip.put(&mut self.batch);
        self.flush(true)?;
        Ok((self.header, self.head))
    }
}

impl Store {
    /// Replaces the whole store with the snapshot read from `reader`, atomically (see the module docs).
    /// On any error the store is unchanged.
    pub fn install_snapshot(&mut self, reader: impl Read) -> Result<SnapshotSummary> {
        let (generation, space) = self.database.create_generation()?;
        let files = self.files.with_uploads(&BlobFiles::new_uploads_name())?;
        let consumed = consume(
            reader,
            &mut KeyspaceSink(space.as_ref()),
            Some(&files),
            self.options.checkpoint_interval,
        )
        .and_then(|summary| files.sync_uploads_dir().map(|()| summary));
        let summary = match consumed {
            Ok(summary) => summary,
            Err(error) => {
                files.remove_uploads_dir();
                return Err(error);
            }
        };
        self.database.switch_to(generation)?;
        debug_assert_eq!(upload_dir_name(space.as_ref()).ok(), Some(files.uploads_name()));
        self.state = load_state(space.as_ref(), &files)?;
        files.remove_other_upload_dirs()?;
        self.files = files;
        self.last_checkpoint =
            latest_checkpoint(space.as_ref(), self.revision())?.unwrap_or_default().max(self.state.base);
        self.batch_start = self.revision();
        self.space = space;
        Ok(summary)
    }

    /// Changes the cluster id (a backup restored as a new installation gets a new one).
    pub fn set_cluster_id(&mut self, cluster_id: &str) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(Meta::ClusterId.key(), cluster_id.as_bytes().to_vec());
        self.space.write(batch)?;
        self.state.cluster_id = cluster_id.to_string();
        self.durable()
    }
}

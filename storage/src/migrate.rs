//! Older on-disk formats, brought up to date when a store is opened.
//!
//! ## Format 1 → 2: blob bytes out of sled
//! Format 1 kept every blob's bytes in sled as 32 KiB parts (`0x08` upload:u64 part:u32), committed blobs
//! under the upload that brought them. Format 2 keeps them in files ([`crate::blob_files`]).
//! `blobs_to_files` runs on the first open of a format-1 store:
//!
//! 1. every committed blob is copied from its parts into a temporary file, its SHA-256 checked against its
//!    name (a mismatch stops the migration: the store is corrupt), fsynced and renamed to
//!    `blobs/sha256/{hex}`;
//! 2. every upload in progress is copied into a part file of a fresh uploads directory, with the digest of its
//!    bytes so far;
//! 3. **one** sled batch then rewrites the blob and upload metas, deletes every part, names the uploads
//!    directory and sets format 2; the caller makes it durable.
//!
//! A crash before step 3 leaves a format-1 store (and some files nobody names: the next attempt writes its
//! own, and the uploads directory of the failed one is deleted at the next open), so the migration simply
//! runs again; after it, a format-2 store. Memory stays at one part: the bytes are streamed.
//!
//! ## Format 2 → 3: audit fields and the hash chain
//! Format 3 events carry the audit fields (`token`, `source`) and their chain hash in front
//! ([`crate::chain`]). `events_to_format_3` runs on the first open of a format-2 store (after the step
//! above, for a format-1 one), in one pass over the events in revision order, one event in memory at a
//! time, with writes in batches of at most 8 MiB: each event is decoded in the old
//! encoding ([`crate::legacy::EventV1`]), encoded in the new one (no token, no source), linked to the hash
//! before it and written back as `hash ‖ bytes`. Every batch also records the last revision it rewrote
//! ([`Meta::ReencodedUpTo`]), so a crash between batches resumes after it, from the hash stored with that
//! event — an event is never decoded in the wrong encoding. The last batch writes the head, removes the mark
//! and sets format 3 (now 4, below, in the same batch).
//!
//! ## Format 3 → 4: a history may start after a base
//! Format 4 adds `base` and `base-hash` to the meta table ([`crate::forget`]); without them the base is
//! revision 0 and the genesis hash, which is exactly a format-3 store. `mark_format_4` only rewrites the
//! format number, so that a build that knows nothing of bases refuses the directory.
//!
//! ## Format 4 → 5: no documents, one tip
//! Format 5 keeps no copy of the documents beside the events and ends every batch with one tip key
//! ([`crate::tip`]). `documents_to_tip` rebuilds the configuration from the newest checkpoint and the events
//! after it, checks it against the stored documents (a difference stops the open: the store is corrupt),
//! and then in **one** batch writes the tip from `revision`, `head` and `position`, deletes those three and
//! every document, writes a checkpoint at the tip (so the opens that follow replay nothing) and sets
//! format 5. A crash before that batch leaves a format-4 store, converted again at the next open.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::blob::{BlobMeta, StoredUpload, UploadMeta};
use crate::blob_files::{BlobFiles, IncomingFile};
use crate::change::Revision;
use crate::codec::{decode, encode, encode_with_room, put_parts};
use crate::digest::Digest;
use crate::engine::{Keyspace, WriteBatch};
use crate::error::{Error, Result};
use crate::keys::{self, Meta};
use crate::limits::STORED_CHUNK_BYTES;

/// The format that kept blob bytes in sled.
pub const FORMAT_WITH_BLOBS_IN_SLED: u32 = 1;
/// The format with blob bytes in files but no hash chain.
pub const FORMAT_WITHOUT_CHAIN: u32 = 2;
/// The format with the hash chain whose history always starts at revision 1 (no [`Meta::Base`]). It is a
/// format-4 store with base 0: opening one only marks it format 4 ([`mark_format_4`]).
pub const FORMAT_WITHOUT_BASE: u32 = 3;
/// The format that stored every document beside the events, and `revision`, `head` and `position` as three
/// keys ([`documents_to_tip`]).
pub const FORMAT_WITH_DOCUMENTS: u32 = 4;
/// The most bytes of events and hashes one migration batch writes.
const MIGRATION_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// A committed blob's meta in format 1: its size and the upload whose parts hold it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMetaV1 {
    pub size: u64,
    pub upload: u64,
}

/// Moves every blob byte of a format-1 store into files under `blob_dir` (see the module docs). The caller
/// makes the result durable.
pub(crate) fn blobs_to_files(space: &dyn Keyspace, blob_dir: &Path) -> Result<()> {
    let uploads_name = BlobFiles::new_uploads_name();
    let files = BlobFiles::open(blob_dir, &uploads_name)?;
    let mut batch = WriteBatch::new();
    let mut blobs = 0u64;
    for item in space.scan(&[keys::BLOBS], Some(&[keys::BLOBS + 1]), false) {
        let (key, value) = item?;
        let digest = Digest(
            key[1..].try_into().map_err(|_| Error::Corrupt("a blob key is not a sha256 digest".into()))?,
        );
        let legacy: BlobMetaV1 = decode(&value, "format-1 blob meta")?;
        let mut incoming = files.incoming(&format!("blob-{digest}"))?;
        let actual = Digest::from(copy_parts(space, legacy.upload, legacy.size, &mut incoming)?);
        if actual != digest {
            return Err(Error::Corrupt(format!(
                "migrating blob {digest} out of sled: its stored bytes have digest {actual}; restore a backup"
            )));
        }
        incoming.into_blob(&files, &digest)?;
        batch.put(key, encode(&BlobMeta { size: legacy.size }));
        blobs += 1;
    }
    for item in space.scan(&[keys::UPLOADS], Some(&[keys::UPLOADS + 1]), false) {
        let (key, value) = item?;
        let id = u64::from_be_bytes(
            key[1..].try_into().map_err(|_| Error::Corrupt("an upload key is bad".into()))?,
        );
        let meta: UploadMeta = decode(&value, "format-1 upload meta")?;
        let mut incoming = files.incoming(&format!("{id:016x}"))?;
        let digest_so_far = Digest::from(copy_parts(space, id, meta.size, &mut incoming)?);
        incoming.into_part(&files, id)?;
        batch.put(key, encode(&StoredUpload { meta, digest_so_far }));
    }
    files.sync_uploads_dir()?;
    for item in space.scan(&[keys::BLOB_PARTS], Some(&[keys::BLOB_PARTS + 1]), false) {
        batch.delete(item?.0);
    }
    batch.put(Meta::UploadDir.key(), uploads_name.into_bytes());
    batch.put(Meta::Format.key(), FORMAT_WITHOUT_CHAIN.to_be_bytes().to_vec());
    space.write(batch)?;
    tracing::info!(blobs, "moved the store's blobs out of sled into files (format 1 to 2)");
    Ok(())
}

/// Re-encodes a format-2 store's events with the audit fields and their chain hash in front, and sets
/// format 3 (see the module docs). The caller makes the result durable.
pub(crate) fn events_to_format_3(space: &dyn Keyspace) -> Result<()> {
    let revision = crate::chain::last_event_revision(space)?;
    let done = match space.get(&Meta::ReencodedUpTo.key())? {
        Some(bytes) => Revision(u64::from_be_bytes(
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| Error::Corrupt("the migration mark is not 8 bytes".into()))?,
        )),
        None => Revision(0),
    };
    // Resuming: the events up to the mark are in the new layout, the last one holds the head so far.
    let mut head = match done.0 {
        0 => crate::chain::GENESIS,
        _ => {
            let first_part = space.get(&keys::event(done, 0))?.unwrap_or_default();
            crate::chain::split_stored(&first_part, done.0)?.0
        }
    };
    let mut batch = WriteBatch::new();
    let mut pending = 0;
    let mut expected = done.next();
    for item in crate::chain::raw_events(space, done.next(), revision, false) {
        let (event_revision, bytes) = item?;
        if event_revision != expected {
            return Err(Error::Corrupt(format!(
                "migrating the history: event {expected} is missing; restore a backup"
            )));
        }
        let what = format!("event {event_revision}");
        let event: crate::Event = decode::<crate::legacy::EventV1>(&bytes, &what)?.into();
        let mut value = encode_with_room(&event, crate::chain::HASH_LEN);
        head = crate::chain::seal(&head, &mut value);
        // The new value is longer (two more fields and the hash), so it has at least as many parts: all of
        // the old ones are overwritten.
        pending += value.len();
        put_parts(&mut batch, &value, |part| keys::event(event_revision, part));
        expected = event_revision.next();
        if pending >= MIGRATION_BATCH_BYTES {
            batch.put(Meta::ReencodedUpTo.key(), event_revision.0.to_be_bytes().to_vec());
            space.write(std::mem::take(&mut batch))?;
            pending = 0;
        }
    }
    if revision.0 > 0 {
        batch.put(Meta::Head.key(), head.0.to_vec());
    }
    batch.delete(Meta::ReencodedUpTo.key());
    batch.put(Meta::Format.key(), FORMAT_WITH_DOCUMENTS.to_be_bytes().to_vec());
    space.write(batch)?;
    tracing::info!(events = revision.0, head = %head, "added audit fields and the hash chain to the history (format 2 to 3)");
    Ok(())
}

/// Streams the first `size` bytes stored as parts of `upload` into `out`; returns their running digest.
fn copy_parts(space: &dyn Keyspace, upload: u64, size: u64, out: &mut IncomingFile) -> Result<Sha256> {
    let mut hasher = Sha256::new();
    let mut remaining = size;
    let mut part = 0u32;
    while remaining > 0 {
        let mut bytes = space.get(&keys::blob_part(upload, part))?.ok_or_else(|| {
            Error::Corrupt(format!("migrating upload {upload} out of sled: part {part} is missing"))
        })?;
        bytes.truncate(remaining.min(STORED_CHUNK_BYTES as u64) as usize);
        if bytes.is_empty() {
            return Err(Error::Corrupt(format!(
                "migrating upload {upload} out of sled: part {part} is empty"
            )));
        }
        hasher.update(&bytes);
        out.write(&bytes)?;
        remaining -= bytes.len() as u64;
        part += 1;
    }
    Ok(hasher)
}

/// Marks a format-3 store format 4. Nothing else changes (its base is 0, the whole history); from now on an
/// older build refuses the directory instead of reading a forgotten history as a gap.
pub fn mark_format_4(space: &dyn Keyspace) -> Result<()> {
    let mut batch = WriteBatch::new();
    batch.put(Meta::Format.key(), FORMAT_WITH_DOCUMENTS.to_be_bytes().to_vec());
    space.write(batch)
}

/// Converts a format-4 store to format 5: the documents checked against a replay and dropped, the tip
/// written (see the module docs). The caller makes the result durable.
pub(crate) fn documents_to_tip(space: &dyn Keyspace) -> Result<()> {
    let number = |meta: Meta| -> Result<u64> {
        match space.get(&meta.key())? {
            Some(bytes) => <[u8; 8]>::try_from(bytes.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| Error::Corrupt(format!("the format-4 {meta:?} is not 8 bytes"))),
            None => Ok(0),
        }
    };
    let revision = Revision(number(Meta::Revision)?);
    let head = match space.get(&Meta::Head.key())? {
        Some(bytes) => crate::chain::parse_hash(&bytes)?,
        None => crate::chain::GENESIS,
    };
    let position = space.get(&Meta::Position.key())?;
    let replayed = crate::checkpoint::replay_from_disk(space, revision)?;
    let mut batch = WriteBatch::new();
    let mut stored = crate::projection::Projection::new();
    for item in space.scan(&[keys::DOCUMENTS], Some(&[keys::DOCUMENTS + 1]), false) {
        let (key, value) = item?;
        let doc_key = keys::parse_document(&key)
            .ok_or_else(|| Error::Corrupt("a document key does not parse".into()))?;
        stored.insert(doc_key.clone(), decode(&value, &format!("document {doc_key}"))?);
        batch.delete(key);
    }
    stored.set_revision(revision);
    if stored != replayed {
        return Err(Error::Corrupt(format!(
            "converting to format 5: the stored documents differ from a replay of the history up to revision {revision}; restore a backup"
        )));
    }
    for meta in [Meta::Revision, Meta::Head, Meta::Position] {
        batch.delete(meta.key());
    }
    // The opens that follow replay from here, not from an older checkpoint.
    if revision.0 > 0 && crate::checkpoint::latest_checkpoint(space, revision)? != Some(revision) {
        crate::checkpoint::write_checkpoint(&mut batch, &replayed);
    }
    batch.put(Meta::Format.key(), keys::FORMAT_VERSION.to_be_bytes().to_vec());
    crate::tip::Tip { revision, head, position }.put(&mut batch);
    space.write(batch)?;
    tracing::info!(
        revision = revision.0,
        documents = stored.len(),
        "dropped the stored copy of the documents; the configuration is rebuilt from checkpoints and events (format 4 to 5)"
    );
    Ok(())
}

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

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::blob::{BlobMeta, StoredUpload, UploadMeta};
use crate::blob_files::{BlobFiles, IncomingFile};
use crate::codec::{decode, encode};
use crate::digest::Digest;
use crate::engine::{Keyspace, WriteBatch};
use crate::error::{Error, Result};
use crate::keys::{self, Meta};
use crate::limits::STORED_CHUNK_BYTES;

/// The format that kept blob bytes in sled.
pub const FORMAT_WITH_BLOBS_IN_SLED: u32 = 1;

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
    batch.put(Meta::Format.key(), keys::FORMAT_VERSION.to_be_bytes().to_vec());
    space.write(batch)?;
    tracing::info!(blobs, "moved the store's blobs out of sled into files (format 1 to 2)");
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

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::Arc;

    use super::*;
    use crate::command::{Command, Outcome};
    use crate::engine::{Database, SledDatabase};
    use crate::store::{Store, StoreOptions, blob_dir, database_dir};

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect()
    }

    /// Stores `data` as format-1 parts of `upload`.
    fn put_parts_v1(batch: &mut WriteBatch, upload: u64, data: &[u8]) {
        for (part, piece) in data.chunks(STORED_CHUNK_BYTES).enumerate() {
            batch.put(keys::blob_part(upload, part as u32), piece.to_vec());
        }
    }

    /// A store directory as a format-1 build left it: one committed blob, one upload in progress, and the
    /// uploads directory of an earlier migration attempt that was cut short.
    fn format_1_store(dir: &Path, blob: &[u8], partial: &[u8]) {
        let database = SledDatabase::open(&database_dir(dir)).unwrap();
        let space = database.current().unwrap();
        let mut batch = WriteBatch::new();
        batch.put(Meta::Format.key(), FORMAT_WITH_BLOBS_IN_SLED.to_be_bytes().to_vec());
        batch.put(Meta::ClusterId.key(), b"c0ffee".to_vec());
        batch.put(Meta::Revision.key(), 0u64.to_be_bytes().to_vec());
        batch.put(keys::blob(&Digest::of(blob)), encode(&BlobMetaV1 { size: blob.len() as u64, upload: 42 }));
        put_parts_v1(&mut batch, 42, blob);
        batch.put(keys::upload(7), encode(&UploadMeta { next_chunk: 1, size: partial.len() as u64 }));
        put_parts_v1(&mut batch, 7, partial);
        space.write(batch).unwrap();
        database.durable().unwrap();
        std::fs::create_dir_all(blob_dir(dir).join("uploads-00000000deadbeef")).unwrap();
    }

    #[test]
    fn a_format_1_store_moves_its_blobs_into_files_on_first_open() {
        let dir = tempfile::tempdir().unwrap();
        let (blob, partial, rest) = (bytes(100_000, 1), bytes(40_000, 2), bytes(1_000, 3));
        format_1_store(dir.path(), &blob, &partial);

        let mut store = Store::open(dir.path()).unwrap();
        let digest = Digest::of(&blob);
        assert!(blob_dir(dir.path()).join("sha256").join(digest.to_string()).is_file());
        let mut read = Vec::new();
        store.open_blob(&digest).unwrap().read_to_end(&mut read).unwrap();
        assert!(read == blob);
        assert!(
            store.space.scan(&[keys::BLOB_PARTS], Some(&[keys::BLOB_PARTS + 1]), false).next().is_none(),
            "no blob byte is left in sled"
        );
        let format = store.space.get(&Meta::Format.key()).unwrap().unwrap();
        assert_eq!(format, keys::FORMAT_VERSION.to_be_bytes());
        assert!(!blob_dir(dir.path()).join("uploads-00000000deadbeef").exists());
        // The upload in progress carries on where it was.
        let chunk = Command::BlobChunk { upload: 7, chunk: 1, data: rest.clone() };
        store.apply(&[chunk], None).unwrap();
        let whole = [partial, rest].concat();
        let commit = Command::BlobCommit { upload: 7, digest: Digest::of(&whole), size: whole.len() as u64 };
        let outcome = store.apply(&[commit], None).unwrap().remove(0);
        assert!(matches!(outcome, Outcome::BlobCommitted { .. }), "{outcome:?}");
        store.durable().unwrap();
        drop(store);
        let reopened = Store::open_database(
            Arc::new(SledDatabase::open(&database_dir(dir.path())).unwrap()),
            &blob_dir(dir.path()),
            StoreOptions::default(),
        )
        .unwrap();
        assert_eq!(reopened.blobs().count(), 2);
    }

    #[test]
    fn a_format_1_blob_whose_parts_do_not_match_its_digest_stops_the_migration() {
        let dir = tempfile::tempdir().unwrap();
        format_1_store(dir.path(), &bytes(50_000, 4), &[]);
        {
            let database = SledDatabase::open(&database_dir(dir.path())).unwrap();
            let mut batch = WriteBatch::new();
            batch.put(keys::blob_part(42, 1), vec![0u8; STORED_CHUNK_BYTES]);
            database.current().unwrap().write(batch).unwrap();
            database.durable().unwrap();
        }
        let error = Store::open(dir.path()).unwrap_err();
        assert!(matches!(error, Error::Corrupt(_)), "{error}");
        assert!(error.to_string().contains("migrating blob"), "{error}");
    }
}

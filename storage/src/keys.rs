//! The on-disk layout: every key the store writes, in one place.
//!
//! All keys live in one [`crate::engine::Keyspace`] (one generation). The first byte names the table; numbers
//! are big-endian so that byte order is numeric order; names are followed by a 0 byte, which names never
//! contain, so that `terminals/a` never shares a prefix with `terminals/ab`.
//!
//! | table | key | value |
//! |---|---|---|
//! | meta | `0x01` name | see [`Meta`] |
//! | events | `0x02` revision:u64 part:u32 | a piece (≤ 32 KiB) of the event's chain hash (32 bytes, [`crate::chain`]; format 3 on) followed by the bincode [`crate::Event`] |
//! | documents | `0x03` collection `0x00` id | format 4 and older only: bincode [`crate::StoredDocument`]; format 5 rebuilds the projection from checkpoints and events ([`crate::tip`]) |
//! | requests | `0x04` request id | revision:u64 that accepted it |
//! | checkpoints | `0x05` revision:u64 part:u32 | a piece of a bincode list of all documents; part `u32::MAX` marks the checkpoint complete and holds the part count |
//! | blobs | `0x06` digest:32 | bincode [`crate::blob::BlobMeta`] (the bytes are in a file, [`crate::blob_files`]) |
//! | uploads | `0x07` upload:u64 | bincode [`crate::blob::StoredUpload`] (in-progress uploads; bytes in part files) |
//! | blob parts | `0x08` upload:u64 part:u32 | format 1 only: 32 KiB of blob bytes, moved to files by [`crate::migrate`] |
//!
//! Meta `base` and `base-hash` say where the history starts after `tandem history forget`
//! ([`crate::forget`]): events at or below the base are gone, and a checkpoint at the base holds the
//! configuration the kept events replay from.
//!
//! Format 2 keeps no blob bytes in sled: sled holds only what the log and the last snapshot can rebuild,
//! and values stay small.

use crate::change::{DocKey, Revision};
use crate::digest::Digest;

/// The format of this layout, stored under [`Meta::Format`]; bumped on any incompatible change.
/// Format 3 added the hash chain (in front of each event, [`Meta::Head`]) and the audit fields of events
/// ([`crate::ChangeMeta`]'s `token` and `source`); format-2 stores are brought up to it on open
/// ([`crate::migrate`]). Format 4 may start its history after a base ([`Meta::Base`], [`Meta::BaseHash`],
/// a checkpoint at the base: [`crate::forget`]); a format-3 store is a format-4 store with base 0, and is
/// marked format 4 on open so that an older build, which would read a forgotten history as a gap, refuses
/// it. Format 5 keeps no documents and ends every batch with one [`Meta::Tip`] instead of `revision`, `head`
/// and `position` ([`crate::tip`]; a format-4 store is converted on open by [`crate::migrate`]).
pub const FORMAT_VERSION: u32 = 5;

pub const META: u8 = 0x01;
pub const EVENTS: u8 = 0x02;
pub const DOCUMENTS: u8 = 0x03;
pub const REQUESTS: u8 = 0x04;
pub const CHECKPOINTS: u8 = 0x05;
pub const BLOBS: u8 = 0x06;
pub const UPLOADS: u8 = 0x07;
pub const BLOB_PARTS: u8 = 0x08;

/// The part number that marks a checkpoint complete.
pub const COMPLETE: u32 = u32::MAX;

/// Single values in the meta table.
#[derive(Clone, Copy, Debug)]
pub enum Meta {
    /// u32 [`FORMAT_VERSION`].
    Format,
    /// Text: the cluster (installation) id this store belongs to.
    ClusterId,
    /// Format 4 and older: u64, the revision of the last accepted event (now in [`Meta::Tip`]).
    Revision,
    /// Format 4 and older: the caller's applied position (now in [`Meta::Tip`]).
    Position,
    /// Text: the name of the directory under `blobs/` that holds the part files of this generation's
    /// uploads in progress (see [`crate::blob_files`]).
    UploadDir,
    /// Format 4 and older: the chain hash at [`Meta::Revision`] (now in [`Meta::Tip`]).
    Head,
    /// u64, only while a format-2 store is migrated: the last event re-encoded so far ([`crate::migrate`]).
    ReencodedUpTo,
    /// u64: the revision the history starts after ([`crate::forget`]); absent: 0 (the whole history).
    /// Events at or below it were forgotten; a checkpoint at it holds the configuration there.
    Base,
    /// 32 bytes: the chain hash of revision [`Meta::Base`], which the first kept event links to; absent:
    /// the genesis hash.
    BaseHash,
    /// Format 5: where the history ends — revision, chain head, applied position ([`crate::tip::Tip`]),
    /// written last in every batch.
    Tip,
}

impl Meta {
    pub fn key(self) -> Vec<u8> {
        let name: &[u8] = match self {
            Meta::Format => b"format",
            Meta::ClusterId => b"cluster-id",
            Meta::Revision => b"revision",
            Meta::Position => b"position",
            Meta::UploadDir => b"upload-dir",
            Meta::Head => b"head",
            Meta::ReencodedUpTo => b"reencoded-up-to",
            Meta::Base => b"base",
            Meta::BaseHash => b"base-hash",
            Meta::Tip => b"tip",
        };
        [&[META], name].concat()
    }
}

fn numbered(table: u8, number: u64, part: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(13);
    key.push(table);
    key.extend_from_slice(&number.to_be_bytes());
    key.extend_from_slice(&part.to_be_bytes());
    key
}

/// The first key of an event's pieces.
pub fn event(revision: Revision, part: u32) -> Vec<u8> {
    numbered(EVENTS, revision.0, part)
}

pub fn document(key: &DocKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + key.collection.len() + key.id.len());
    out.push(DOCUMENTS);
    out.extend_from_slice(key.collection.as_bytes());
    out.push(0);
    out.extend_from_slice(key.id.as_bytes());
    out
}

/// Decodes a document key written by [`document`].
pub fn parse_document(key: &[u8]) -> Option<DocKey> {
    let rest = key.strip_prefix(&[DOCUMENTS])?;
    let split = rest.iter().position(|&b| b == 0)?;
    let collection = std::str::from_utf8(&rest[..split]).ok()?;
    let id = std::str::from_utf8(&rest[split + 1..]).ok()?;
    Some(DocKey::new(collection, id))
}

pub fn request(id: &str) -> Vec<u8> {
    [&[REQUESTS], id.as_bytes()].concat()
}

pub fn checkpoint(revision: Revision, part: u32) -> Vec<u8> {
    numbered(CHECKPOINTS, revision.0, part)
}

pub fn blob(digest: &Digest) -> Vec<u8> {
    [&[BLOBS][..], &digest.0].concat()
}

pub fn upload(upload: u64) -> Vec<u8> {
    [&[UPLOADS][..], &upload.to_be_bytes()].concat()
}

/// A part of a blob's bytes in format 1 (read only by the migration).
pub fn blob_part(upload: u64, part: u32) -> Vec<u8> {
    numbered(BLOB_PARTS, upload, part)
}

/// Splits a numbered key (`table number:u64 part:u32`) into its number and part.
pub fn parse_numbered(key: &[u8]) -> Option<(u64, u32)> {
    if key.len() != 13 {
        return None;
    }
    let number = u64::from_be_bytes(key[1..9].try_into().ok()?);
    let part = u32::from_be_bytes(key[9..13].try_into().ok()?);
    Some((number, part))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_keys_round_trip_and_do_not_share_prefixes() {
        let a = DocKey::new("terminals", "a");
        assert_eq!(parse_document(&document(&a)), Some(a.clone()));
        let ab = document(&DocKey::new("terminals", "ab"));
        assert!(ab.starts_with(&document(&a)), "ids are compared whole by key equality, prefixes are fine");
        assert!(document(&DocKey::new("t", "x")) < document(&DocKey::new("t2", "a")));
    }

    #[test]
    fn numbered_keys_sort_numerically() {
        assert!(event(Revision(255), 0) < event(Revision(256), 0));
        assert_eq!(parse_numbered(&checkpoint(Revision(7), COMPLETE)), Some((7, COMPLETE)));
    }
}

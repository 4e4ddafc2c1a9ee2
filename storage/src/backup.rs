//! Backup files: a snapshot on disk with a trailing digest.
//!
//! ```text
//! body     = snapshot stream (see crate::snapshot) ‖ head:32
//! trailer  = "TANDBKUP" format:u32 body_length:u64 sha256(body):32      (52 bytes, big-endian)
//! ```
//! `format` is the trailer's version, [`BACKUP_FORMAT`] (3). `head` is the chain hash of the backup's last
//! event ([`crate::chain`]): `backup verify` recomputes the chain from the events and compares, and it can
//! be read without parsing the snapshot ([`backup_head`]). Format 2 had no head (the body is the snapshot
//! alone); format 1 had no version field either (`"TANDBKUP" snapshot_length:u64 sha256:32`, 48 bytes). Both
//! are still read: a reader tries the 52-byte trailer first (its magic 52 bytes from the end, and a length
//! that matches), then format 1. A magic with a format this binary does not know is refused, naming both
//! versions; a build that reads only format 2 says so for a format-3 file, since its length field still
//! covers everything before the trailer. The snapshot inside carries its own format version in its header
//! (see crate::snapshot), and with it the history's base after `tandem history forget` ([`crate::forget`]):
//! a restore keeps base, base hash and chain, so the trailer did not need a new format for it.
//!
//! The trailer makes a damaged file cheap to detect before anything is parsed: [`verify_backup`] checks that
//! the file is exactly as long as the trailer says, that the digest matches, and then reads the whole snapshot
//! with every check of an install (frame structure, event order, documents against replayed history, blob
//! digests, the snapshot's own checksum). Flipping any byte or cutting the file anywhere fails one of these.
//!
//! Files are written under a temporary name, fsynced, renamed into place and the directory fsynced, so a
//! crash never leaves a half-written file under the final name.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::Digest as _;

use crate::engine::WriteBatch;
use crate::error::{Error, Result};
use crate::snapshot::{HashingWriter, SnapshotSource, SnapshotSummary, verify_snapshot};
use crate::store::{Store, StoreOptions};

const TRAILER_MAGIC: &[u8; 8] = b"TANDBKUP";
/// The backup trailer format this binary writes.
pub const BACKUP_FORMAT: u32 = 3;
/// The trailer format without a head after the snapshot.
const BACKUP_FORMAT_V2: u32 = 2;
/// The length of the head between snapshot and trailer (format 3).
const HEAD_LEN: u64 = 32;
/// The length of the trailer this binary writes.
const TRAILER_LEN: u64 = 52;
/// The length of a format-1 trailer (no format field).
const TRAILER_LEN_V1: u64 = 48;

/// Writes the snapshot `source` as a backup file at `path` (atomically: temp file, fsync, rename).
pub fn write_backup(source: &SnapshotSource, path: &Path) -> Result<SnapshotSummary> {
    let temp = temp_path(path);
    let result = (|| {
        let file = File::create(&temp).map_err(|e| Error::io(format!("creating {}", temp.display()), e))?;
        let mut file = BufWriter::new(file);
        let summary = write_backup_to(source, &mut file)?;
        let io_error = |e| Error::io(format!("writing {}", temp.display()), e);
        let file = file.into_inner().map_err(|e| io_error(e.into_error()))?;
        file.sync_all().map_err(io_error)?;
        Ok(summary)
    })();
    let summary = match result {
        Ok(summary) => summary,
        Err(error) => {
            let _ = fs::remove_file(&temp);
            return Err(error);
        }
    };
    fs::rename(&temp, path).map_err(|e| Error::io(format!("renaming {} into place", temp.display()), e))?;
    sync_parent(path)?;
    Ok(summary)
}

/// Writes the snapshot `source` followed by the backup trailer into `out`: the bytes of a backup file, for
/// callers that stream a backup somewhere else than a local file (the admin API's `GET /v1/backup`). Flushes
/// `out` but does not fsync anything; the summary counts the trailer.
pub fn write_backup_to(source: &SnapshotSource, out: impl Write) -> Result<SnapshotSummary> {
    let mut out = HashingWriter::new(out);
    let (header, bytes) = source.write_to(&mut out)?;
    let io_error = |e| Error::io("writing a backup", e);
    let head = header.head.unwrap_or_default();
    out.write_all(&head.0).map_err(io_error)?;
    let body_length = bytes + HEAD_LEN;
    let digest: [u8; 32] = out.hasher.clone().finalize().into();
    let mut out = out.inner;
    out.write_all(TRAILER_MAGIC).map_err(io_error)?;
    out.write_all(&BACKUP_FORMAT.to_be_bytes()).map_err(io_error)?;
    out.write_all(&body_length.to_be_bytes()).map_err(io_error)?;
    out.write_all(&digest).map_err(io_error)?;
    out.flush().map_err(io_error)?;
    Ok(SnapshotSummary { header, bytes: body_length + TRAILER_LEN, head })
}

/// Checks a backup file completely; returns what it holds.
/// The chain head is checked three ways: the head the trailer carries (format 3), the one in the snapshot's
/// header (format 2 snapshots) and the one recomputed from the events must be one.
pub fn verify_backup(path: &Path) -> Result<SnapshotSummary> {
    let trailer = check_trailer(path)?;
    let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let length = file.metadata().map_err(|e| Error::io(format!("reading {}", path.display()), e))?.len();
    let summary = verify_snapshot(BufReader::new(file).take(trailer.snapshot_length))?;
    check_head(path, &trailer, &summary)?;
    Ok(SnapshotSummary { bytes: length, ..summary })
}

/// The chain head a backup's trailer names (format 3), without reading the rest; `None` for older backups.
pub fn backup_head(path: &Path) -> Result<Option<crate::Digest>> {
    Ok(check_trailer(path)?.head)
}

fn check_head(path: &Path, trailer: &Trailer, summary: &SnapshotSummary) -> Result<()> {
    match trailer.head {
        Some(head) if head != summary.head => Err(Error::InvalidSnapshot(format!(
            "{}: the history hashes to {} but the backup's trailer says {head}: an event was altered",
            path.display(),
            summary.head
        ))),
        _ => Ok(()),
    }
}

/// Restores a backup into the store directory `dir` (see [`Store::open`]), which must not hold a store with
/// data yet. Returns the opened store.
pub fn restore_backup(path: &Path, dir: &Path, options: StoreOptions) -> Result<(Store, SnapshotSummary)> {
    let trailer = check_trailer(path)?;
    let mut store = Store::open_with(dir, options)?;
    if store.revision().0 != 0 || !store.projection().is_empty() || store.blobs().next().is_some() {
        return Err(Error::InvalidRequest(format!(
            "{} already holds a store at revision {}: restore into an empty directory",
            dir.display(),
            store.revision()
        )));
    }
    let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let summary = store.install_snapshot(BufReader::new(file).take(trailer.snapshot_length))?;
    check_head(path, &trailer, &summary)?;
    Ok((store, summary))
}

impl Store {
    /// Forgets the caller's applied position (see [`Store::position`]) and makes that durable.
    ///
    /// A backup carries the position of the store it was taken from; for the cluster crate that is a Raft log
    /// id and the *source cluster's* membership. A backup restored as a new installation must not start with
    /// them, or the new node would believe it belongs to the old cluster: without a position it starts as a
    /// store that no log has been applied to yet, whatever revision its history has reached.
    pub fn forget_position(&mut self) -> Result<()> {
        let mut batch = WriteBatch::new();
        crate::tip::Tip { position: None, ..self.tip() }.put(&mut batch);
        self.space.write(batch)?;
        self.state.position = None;
        self.durable()
    }
}

/// A backup trailer as read from the end of a file.
struct Trailer {
    /// The bytes before the trailer (the snapshot, and in format 3 the head after it).
    body_length: u64,
    snapshot_length: u64,
    digest: [u8; 32],
    /// The chain head after the snapshot (format 3).
    head: Option<crate::Digest>,
}

/// Reads the trailer of a file of `length` bytes: format 2, else format 1 (see the module documentation).
fn read_trailer(file: &mut File, length: u64, invalid: impl Fn(String) -> Error) -> Result<Trailer> {
    let mut tail = vec![0u8; TRAILER_LEN.min(length) as usize];
    file.seek(SeekFrom::Start(length - tail.len() as u64))
        .map_err(|e| Error::io("seeking in a backup", e))?;
    file.read_exact(&mut tail).map_err(|e| Error::io("reading a backup trailer", e))?;
    let fits = |snapshot_length: u64, trailer_len: u64| snapshot_length == length - trailer_len;
    if tail.len() as u64 == TRAILER_LEN && &tail[..8] == TRAILER_MAGIC {
        let format = u32::from_be_bytes(tail[8..12].try_into().expect("4 bytes"));
        let body_length = u64::from_be_bytes(tail[12..20].try_into().expect("8 bytes"));
        let digest = tail[20..].try_into().expect("32 bytes");
        if format == BACKUP_FORMAT_V2 && fits(body_length, TRAILER_LEN) {
            return Ok(Trailer { body_length, snapshot_length: body_length, digest, head: None });
        }
        if format == BACKUP_FORMAT && fits(body_length, TRAILER_LEN) && body_length >= HEAD_LEN {
            let mut head = [0u8; 32];
            file.seek(SeekFrom::Start(body_length - HEAD_LEN))
                .and_then(|_| file.read_exact(&mut head))
                .map_err(|e| Error::io("reading a backup's chain head", e))?;
            return Ok(Trailer {
                body_length,
                snapshot_length: body_length - HEAD_LEN,
                digest,
                head: Some(crate::Digest(head)),
            });
        }
        if format > BACKUP_FORMAT && fits(body_length, TRAILER_LEN) {
            return Err(invalid(format!(
                "backup format {format} is newer than this binary reads (formats 1 to {BACKUP_FORMAT}): restore it with a newer Tandem"
            )));
        }
    }
    let v1 = &tail[tail.len().saturating_sub(TRAILER_LEN_V1 as usize)..];
    if v1.len() as u64 == TRAILER_LEN_V1 && &v1[..8] == TRAILER_MAGIC {
        let snapshot_length = u64::from_be_bytes(v1[8..16].try_into().expect("8 bytes"));
        if !fits(snapshot_length, TRAILER_LEN_V1) {
            return Err(invalid(format!(
                "the trailer says the snapshot has {snapshot_length} bytes but the file holds {}: truncated or damaged",
                length - TRAILER_LEN_V1
            )));
        }
        let digest = v1[16..].try_into().expect("32 bytes");
        return Ok(Trailer { body_length: snapshot_length, snapshot_length, digest, head: None });
    }
    Err(invalid(
        "no backup trailer at the end: the file is truncated, damaged, or not a Tandem backup".into(),
    ))
}

/// Checks the trailer and the digest of the body; returns the trailer.
fn check_trailer(path: &Path) -> Result<Trailer> {
    let invalid = |text: String| Error::InvalidSnapshot(format!("{}: {text}", path.display()));
    let mut file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let length = file.metadata().map_err(|e| Error::io(format!("reading {}", path.display()), e))?.len();
    if length < TRAILER_LEN_V1 {
        return Err(invalid(format!("only {length} bytes long: truncated, or not a Tandem backup")));
    }
    let trailer = read_trailer(&mut file, length, invalid)?;
    file.seek(SeekFrom::Start(0)).map_err(|e| Error::io("seeking in a backup", e))?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut BufReader::new(file).take(trailer.body_length), &mut hasher)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let digest: [u8; 32] = hasher.finalize().into();
    if digest != trailer.digest {
        return Err(invalid("checksum mismatch: the file was altered or damaged".into()));
    }
    Ok(trailer)
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}

fn sync_parent(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| Error::io(format!("fsyncing directory {}", parent.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{ChangeMeta, ChangeSet};

    fn store_with_history(dir: &Path) -> Store {
        let mut store = Store::open(dir).unwrap();
        for i in 0..3 {
            let change = ChangeSet::new(ChangeMeta { actor: "t".into(), ..ChangeMeta::default() }).put(
                "notes",
                &format!("n{i}"),
                serde_json::json!({"i": i}),
            );
            store.apply(&[crate::Command::Change(change)], Some(b"raft position")).unwrap();
        }
        store
    }

    #[test]
    fn a_streamed_backup_is_a_valid_backup_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_history(&dir.path().join("db"));
        let mut bytes = Vec::new();
        let summary = write_backup_to(&store.snapshot(), &mut bytes).unwrap();
        assert_eq!(summary.bytes, bytes.len() as u64);
        let path = dir.path().join("streamed.backup");
        fs::write(&path, &bytes).unwrap();
        let verified = verify_backup(&path).unwrap();
        assert_eq!(verified.header.revision.0, 3);
        assert_eq!(verified.bytes, bytes.len() as u64);
    }

    #[test]
    fn a_backup_carries_the_chain_head_and_a_restore_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_history(&dir.path().join("db"));
        let path = dir.path().join("a.backup");
        let written = write_backup(&store.snapshot(), &path).unwrap();
        assert_eq!(written.head, store.head());
        assert_eq!(backup_head(&path).unwrap(), Some(store.head()));
        assert_eq!(verify_backup(&path).unwrap().head, store.head());
        let (restored, _) =
            restore_backup(&path, &dir.path().join("restored"), StoreOptions::default()).unwrap();
        assert_eq!(restored.head(), store.head());
        assert!(restored.chain().verify().unwrap().is_intact());

        // A trailer whose head was changed (and its checksum recomputed) no longer matches the history.
        let mut bytes = fs::read(&path).unwrap();
        let body = bytes.len() - TRAILER_LEN as usize;
        bytes[body - 1] ^= 1;
        let digest: [u8; 32] = sha2::Sha256::digest(&bytes[..body]).into();
        bytes[body + 20..].copy_from_slice(&digest);
        fs::write(&path, &bytes).unwrap();
        let error = verify_backup(&path).unwrap_err().to_string();
        assert!(error.contains("an event was altered"), "{error}");
    }

    #[test]
    fn a_forgotten_position_stays_forgotten_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store_with_history(&dir.path().join("db"));
        assert_eq!(store.position(), Some(&b"raft position"[..]));
        store.forget_position().unwrap();
        assert_eq!(store.position(), None);
        drop(store);
        let store = Store::open(&dir.path().join("db")).unwrap();
        assert_eq!(store.position(), None);
        assert_eq!(store.revision().0, 3);
    }
}

//! sled's own snapshot files, and the half-written one that a crash can leave behind.
//!
//! sled 0.34 keeps, beside its log (`db`), a snapshot of its page table in a file `snap.<LSN>`. It writes a
//! new one under the name `snap.<LSN>.generating`, fsyncs it, renames it to `snap.<LSN>` and only then
//! deletes older snapshots and reuses log segments. In 0.34.7 it writes one while it opens a database
//! (recovery), when the log has grown since the last one.
//!
//! The flaw: when sled opens a database it picks the file with the greatest name among *all* files starting
//! with `snap.`, `.generating` ones included, and refuses to open the database when that file's checksum
//! is wrong. A process killed while writing a snapshot (measured: killed 1–40 ms after start, while sled was
//! recovering, about 1 kill in 300) leaves an empty or truncated `snap.<higher LSN>.generating` beside the
//! complete `snap.<LSN>`, and every later open fails with "Read corrupted data at file offset None", although
//! nothing that was durable is damaged (spacejam/sled#1527 reports the same).
//!
//! [`discard_unfinished`] runs before sled opens a directory and deletes each `.generating` file that sled
//! would reject: shorter than its 12-byte trailer, or whose CRC-32 does not match. Such a file was never
//! renamed, so sled never deleted the previous snapshot or reused a log segment on its account: the previous
//! snapshot and the log are exactly what sled would have recovered from had the crash come a moment earlier.
//! A complete `.generating` file is left alone, because sled reads it correctly. Nothing else is touched.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The prefix of sled's snapshot files.
const SNAPSHOT_PREFIX: &str = "snap.";
/// The suffix of a snapshot file that sled has not finished writing.
const UNFINISHED_SUFFIX: &str = ".generating";
/// sled ends a snapshot file with the decompressed length (8 bytes) and a CRC-32 (4 bytes, little-endian)
/// of everything before the length.
const TRAILER_LEN: usize = 12;

/// Deletes every unfinished sled snapshot file in `dir` that sled would refuse to read, and returns the
/// paths it deleted. A directory that does not exist yet has none.
pub fn discard_unfinished(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
    };
    let mut discarded = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with(SNAPSHOT_PREFIX) && name.ends_with(UNFINISHED_SUFFIX)) {
            continue;
        }
        let path = entry.path();
        // A file gone meanwhile was renamed or deleted by the sled that wrote it (another process, which
        // then holds the database's lock and makes our open fail with a clear message): nothing to do.
        match is_complete(&path) {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("deleting {}", path.display()), e)),
        }
        tracing::warn!(file = %path.display(), "deleted a sled snapshot file left half-written by a crash");
        discarded.push(path);
    }
    if !discarded.is_empty() {
        // Make the deletions durable before sled writes anything new into the directory.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(format!("fsyncing {}", dir.display()), e))?;
    }
    Ok(discarded)
}

/// Whether the snapshot file at `path` passes the checks sled makes when it reads one.
fn is_complete(path: &Path) -> std::io::Result<bool> {
    let mut bytes = Vec::new();
    File::open(path).and_then(|mut file| file.read_to_end(&mut bytes))?;
    if bytes.len() <= TRAILER_LEN {
        return Ok(false);
    }
    let (body, trailer) = bytes.split_at(bytes.len() - TRAILER_LEN);
    let stored: [u8; 4] = trailer[8..].try_into().expect("the trailer's last 4 bytes");
    Ok(crc32fast::hash(body) == u32::from_le_bytes(stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot file laid out the way sled writes one.
    fn sled_snapshot(body: &[u8]) -> Vec<u8> {
        let mut bytes = body.to_vec();
        bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        bytes
    }

    #[test]
    fn only_unfinished_snapshots_that_sled_would_reject_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes).unwrap();
        let complete = sled_snapshot(b"a page table");
        write("snap.0000000000000010", &complete);
        write("snap.0000000000000020.generating", b"");
        write("snap.0000000000000030.generating", &complete[..complete.len() - 1]);
        let mut altered = complete.clone();
        altered[0] ^= 1;
        write("snap.0000000000000040.generating", &altered);
        write("snap.0000000000000050.generating", &complete);
        write("db", b"");
        write("conf", b"");

        let mut discarded = discard_unfinished(dir.path()).unwrap();
        discarded.sort();

        let names = |paths: &[PathBuf]| -> Vec<String> {
            paths.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
        };
        assert_eq!(
            names(&discarded),
            [
                "snap.0000000000000020.generating",
                "snap.0000000000000030.generating",
                "snap.0000000000000040.generating"
            ]
        );
        let mut left: Vec<PathBuf> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
        left.sort();
        assert_eq!(names(&left), ["conf", "db", "snap.0000000000000010", "snap.0000000000000050.generating"]);
    }

    #[test]
    fn a_missing_directory_has_nothing_to_discard() {
        let dir = tempfile::tempdir().unwrap();
        assert!(discard_unfinished(&dir.path().join("not-yet")).unwrap().is_empty());
    }
}

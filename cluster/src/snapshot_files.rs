//! Snapshot files: where a node keeps the Raft snapshot it built or received, so that no snapshot is ever
//! held whole in memory.
//!
//! A snapshot is the whole store — every firmware blob included — so it can be many gigabytes. Each lives in
//! one file in the directory the state machine is given (`<data dir>/snapshots` on a node):
//!
//! | file                  | what                                                                          |
//! |-----------------------|-------------------------------------------------------------------------------|
//! | `{snapshot_id}.snap`  | the current snapshot (at most one: replacing it deletes the previous file)     |
//! | `{snapshot_id}.meta`  | its openraft meta (last log id, membership, id), bincode                      |
//! | `building-*.tmp`      | a snapshot being written by the builder                                       |
//! | `receiving-*.tmp`     | a snapshot arriving from the leader, chunk by chunk                           |
//! | `copying-*.tmp`       | a received snapshot that was not one of ours being copied in (see below)      |
//!
//! Memory only holds the current snapshot's meta and path. Every reader (openraft sending it to a follower,
//! [`SnapshotFiles::open_current`]) gets a freshly opened file with its own offset; a file replaced while a
//! sender still reads it is deleted anyway: on Linux an open file stays readable after it is unlinked, and
//! its space is freed when the last reader closes it.
//!
//! ## Building
//! [`SnapshotFiles::store_built`] writes through a buffered writer into a new `building-*.tmp`, fsyncs it
//! (a full disk or an I/O error shows up here, not later in a follower), renames it to `{snapshot_id}.snap`
//! and makes it the current snapshot, unless a newer one was installed meanwhile (then the new file is
//! deleted at once; the caller's open handle still reads it).
//!
//! ## Receiving
//! [`SnapshotFiles::begin_receiving`] creates a `receiving-*.tmp` that openraft fills chunk by chunk. openraft
//! receives one snapshot at a time, so a new one means the previous stream was abandoned: its file is deleted.
//! Once the snapshot is installed in the store, [`SnapshotFiles::keep_received`] makes the file the current
//! snapshot. It recognises its own receiving file by its identity (device and inode, not its name: openraft
//! hands back an open file, not a path), fsyncs it and renames it to `{snapshot_id}.snap`. Any other file —
//! openraft's storage test suite installs the leader's own file — is copied in, streamed, then renamed the
//! same way.
//!
//! ## Crash story
//! The current snapshot survives a restart: it is what the node rebuilds its state machine from when the
//! sled database had to be moved aside after a crash, because the Raft log no longer holds the entries it
//! covers (they were purged once it existed). So a snapshot becomes current only once it is whole on disk:
//! its meta is written to a temporary file, fsynced and renamed to `{snapshot_id}.meta`, then the snapshot
//! file (already fsynced) is renamed to `{snapshot_id}.snap`, and the directory is fsynced.
//! [`SnapshotFiles::open`] keeps the newest `.snap` whose `.meta` reads back and deletes everything else a
//! crash (or a replacement) left: older snapshots, `*.tmp` files, a `.meta` without its `.snap`. Other
//! files are left alone.

use std::fs;
use std::io::{self, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use openraft::SnapshotMeta;

use crate::purge_gate::{self, CoverageSender, PurgeGate};
use crate::types::{NodeId, NodeInfo, decode_exact, try_encode};

type Meta = SnapshotMeta<NodeId, NodeInfo>;

/// The suffix of a finished snapshot file.
const SNAPSHOT_SUFFIX: &str = ".snap";
/// The suffix of a snapshot's meta file.
const META_SUFFIX: &str = ".meta";
/// The suffix of a snapshot file being written.
const TEMP_SUFFIX: &str = ".tmp";
/// The write buffer of a snapshot file (the store writes frames of about 1 MiB).
const WRITE_BUFFER: usize = 1024 * 1024;
/// At most this many characters of a snapshot id go into a file name.
const MAX_NAME: usize = 128;

/// A file operation on the snapshot directory failed: what was done, to which path, and the OS error.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}: {source}", path.display())]
pub struct FileError {
    action: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

impl FileError {
    fn new(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FileError {
        let path = path.to_path_buf();
        move |source| FileError { action, path, source }
    }
}

/// The current snapshot: its meta and the file that holds it.
#[derive(Clone, Debug)]
struct CurrentFile {
    meta: Meta,
    path: PathBuf,
}

/// The file the snapshot being received is written to, and its identity (see the module documentation).
#[derive(Debug)]
struct ReceivingFile {
    path: PathBuf,
    identity: (u64, u64),
}

/// The snapshot directory of one state machine (see the module documentation). Shared by the state machine
/// and its builders; every method but [`SnapshotFiles::open`] may block on disk I/O.
#[derive(Debug)]
pub struct SnapshotFiles {
    dir: PathBuf,
    current: Mutex<Option<CurrentFile>>,
    receiving: Mutex<Option<ReceivingFile>>,
    /// Where the current snapshot ends, for the log's [`PurgeGate`].
    coverage: CoverageSender,
}

/// Locks `mutex`, taking the value over even if a thread panicked while holding it (every update here is a
/// single assignment, so the value is never half-written).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A device and inode: which file an open handle is, whatever its name.
fn identity(metadata: &fs::Metadata) -> (u64, u64) {
    (metadata.dev(), metadata.ino())
}

/// Deletes `path`; a failure is only logged (a stale file costs space, not correctness, and goes at the next
/// start).
fn delete(path: &Path, what: &str) {
    match fs::remove_file(path) {
        Ok(()) => tracing::debug!(path = %path.display(), "deleted {what}"),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(path = %path.display(), %error, "cannot delete {what}"),
    }
}

/// The file name of the snapshot `id`: the id itself when it is plain (ids built here always are), with
/// anything else replaced by `_`, since an installed snapshot's id comes from the leader.
fn snapshot_file_name(id: &str) -> String {
    let plain: String = id
        .chars()
        .take(MAX_NAME)
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    format!("{plain}{SNAPSHOT_SUFFIX}")
}

impl SnapshotFiles {
    /// Opens `dir` (creating it if needed): keeps the newest complete snapshot a previous run left as the
    /// current one and deletes every other snapshot file (see the module documentation).
    pub fn open(dir: PathBuf) -> Result<SnapshotFiles, FileError> {
        fs::create_dir_all(&dir).map_err(FileError::new("creating the snapshot directory", &dir))?;
        let entries = fs::read_dir(&dir).map_err(FileError::new("listing the snapshot directory", &dir))?;
        let mut snapshots: Vec<CurrentFile> = Vec::new();
        let mut leftovers = Vec::new();
        for entry in entries {
            let entry = entry.map_err(FileError::new("listing the snapshot directory", &dir))?;
            let path = entry.path();
            if !entry.file_type().map_err(FileError::new("inspecting", &path))?.is_file() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(SNAPSHOT_SUFFIX) {
                match read_meta(&meta_path(&path)) {
                    Some(meta) => snapshots.push(CurrentFile { meta, path }),
                    None => leftovers.push(path),
                }
            } else if name.ends_with(TEMP_SUFFIX)
                || (name.ends_with(META_SUFFIX) && !path.with_extension("snap").exists())
            {
                leftovers.push(path);
            }
        }
        snapshots.sort_by_key(|snapshot| snapshot.meta.last_log_id);
        let current = snapshots.pop();
        for old in snapshots {
            leftovers.push(meta_path(&old.path));
            leftovers.push(old.path);
        }
        for path in &leftovers {
            fs::remove_file(path).map_err(FileError::new("deleting the leftover snapshot file", path))?;
        }
        if !leftovers.is_empty() {
            tracing::info!(dir = %dir.display(), removed = leftovers.len(), "deleted snapshot files left by the previous run");
            sync_dir(&dir)?;
        }
        if let Some(current) = &current {
            tracing::info!(snapshot = %current.meta.snapshot_id, "kept the snapshot of the previous run");
        }
        let (coverage, _) = purge_gate::channel(current.as_ref().and_then(|c| c.meta.last_log_id));
        Ok(SnapshotFiles { dir, current: Mutex::new(current), receiving: Mutex::default(), coverage })
    }

    /// The meta of the current snapshot, if there is one.
    pub fn current_meta(&self) -> Option<Meta> {
        lock(&self.current).as_ref().map(|current| current.meta.clone())
    }

    /// A gate that opens a purge once the current snapshot covers it (see [`crate::purge_gate`]).
    pub fn purge_gate(&self) -> PurgeGate {
        self.coverage.gate()
    }

    /// Tells the purge gate that a snapshot install failed, so that a purge waiting for it gives up.
    pub fn install_failed(&self) {
        self.coverage.install_failed();
    }

    /// The directory the snapshot files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The meta of the current snapshot and a freshly opened handle on its file, if there is one.
    pub fn open_current(&self) -> Result<Option<(Meta, fs::File)>, FileError> {
        // Opened under the lock: a replacement deletes the old file only after swapping it out here.
        let current = lock(&self.current);
        let Some(snapshot) = current.as_ref() else { return Ok(None) };
        let file =
            fs::File::open(&snapshot.path).map_err(FileError::new("opening the snapshot", &snapshot.path))?;
        Ok(Some((snapshot.meta.clone(), file)))
    }

    /// Writes a snapshot built here with `write` (which gets a buffered writer and returns the bytes it
    /// wrote), makes it durable and the current one (unless a newer one is current), and returns a handle
    /// on it opened for reading, with its length.
    pub fn store_built(
        &self,
        meta: &Meta,
        write: impl FnOnce(&mut dyn Write) -> io::Result<u64>,
    ) -> Result<(fs::File, u64), FileError> {
        let (temp, file) = self.create_temp("building")?;
        let written = (|| {
            let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
            let bytes = write(&mut out).map_err(FileError::new("writing the snapshot to", &temp))?;
            let file = out
                .into_inner()
                .map_err(|e| FileError::new("writing the snapshot to", &temp)(e.into_error()))?;
            file.sync_all().map_err(FileError::new("syncing", &temp))?;
            Ok(bytes)
        })();
        let bytes = match written {
            Ok(bytes) => bytes,
            Err(error) => {
                delete(&temp, "an unfinished snapshot");
                return Err(error);
            }
        };
        let path = self.finish(&temp, meta)?;
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(error) => {
                delete(&path, "a snapshot that could not be opened");
                return Err(FileError::new("opening the snapshot", &path)(error));
            }
        };
        self.remember(CurrentFile { meta: meta.clone(), path }, false);
        Ok((file, bytes))
    }

    /// A new file for a snapshot about to arrive, open for writing and reading; the file of an earlier
    /// stream is deleted (see the module documentation).
    pub fn begin_receiving(&self) -> Result<fs::File, FileError> {
        let (path, file) = self.create_temp("receiving")?;
        let metadata = match file.metadata() {
            Ok(metadata) => metadata,
            Err(error) => {
                delete(&path, "a new receiving file");
                return Err(FileError::new("inspecting", &path)(error));
            }
        };
        let abandoned = lock(&self.receiving).replace(ReceivingFile { path, identity: identity(&metadata) });
        if let Some(abandoned) = abandoned {
            delete(&abandoned.path, "the file of an abandoned snapshot transfer");
        }
        Ok(file)
    }

    /// Makes `file`, a snapshot installed in the store, the current snapshot: renamed if it is the file
    /// [`SnapshotFiles::begin_receiving`] made, copied in otherwise. The previous snapshot's file is deleted.
    pub fn keep_received(&self, meta: &Meta, file: &mut fs::File) -> Result<(), FileError> {
        let ours = {
            let metadata =
                file.metadata().map_err(FileError::new("inspecting a received snapshot for", &self.dir))?;
            let mut receiving = lock(&self.receiving);
            if receiving.as_ref().is_some_and(|r| r.identity == identity(&metadata)) {
                receiving.take()
            } else {
                None
            }
        };
        let path = match ours {
            Some(received) => {
                file.sync_all().map_err(FileError::new("syncing", &received.path))?;
                self.finish(&received.path, meta)?
            }
            None => self.copy_in(meta, file)?,
        };
        self.remember(CurrentFile { meta: meta.clone(), path }, true);
        Ok(())
    }

    /// Copies `file` from its start into the directory as the snapshot `meta` names.
    fn copy_in(&self, meta: &Meta, file: &mut fs::File) -> Result<PathBuf, FileError> {
        let (temp, copy) = self.create_temp("copying")?;
        let copied = (|| {
            file.seek(SeekFrom::Start(0))
                .map_err(FileError::new("copying a received snapshot into", &temp))?;
            let mut out = BufWriter::with_capacity(WRITE_BUFFER, copy);
            io::copy(&mut BufReader::with_capacity(WRITE_BUFFER, &*file), &mut out)
                .map_err(FileError::new("copying a received snapshot into", &temp))?;
            let copy = out.into_inner().map_err(|e| FileError::new("writing", &temp)(e.into_error()))?;
            copy.sync_all().map_err(FileError::new("syncing", &temp))
        })();
        if let Err(error) = copied {
            delete(&temp, "an unfinished snapshot copy");
            return Err(error);
        }
        self.finish(&temp, meta)
    }

    /// A new, uniquely named temporary file, open for writing and reading.
    fn create_temp(&self, purpose: &str) -> Result<(PathBuf, fs::File), FileError> {
        let random: u64 = rand::random();
        let path = self.dir.join(format!("{purpose}-{random:016x}{TEMP_SUFFIX}"));
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(FileError::new("creating", &path))?;
        Ok((path, file))
    }

    /// Renames the complete (fsynced) file `temp` to the snapshot `meta` names, after writing its meta
    /// file, and fsyncs the directory; returns the new path.
    fn finish(&self, temp: &Path, meta: &Meta) -> Result<PathBuf, FileError> {
        let path = self.dir.join(snapshot_file_name(&meta.snapshot_id));
        if let Err(error) = self.write_meta(&path, meta) {
            delete(temp, "a snapshot whose meta could not be written");
            return Err(error);
        }
        if let Err(error) = fs::rename(temp, &path) {
            delete(temp, "a snapshot that could not be renamed");
            return Err(FileError::new("renaming the snapshot to", &path)(error));
        }
        sync_dir(&self.dir)?;
        Ok(path)
    }

    /// Writes the meta file of the snapshot at `path`, durably, under a temporary name first.
    fn write_meta(&self, path: &Path, meta: &Meta) -> Result<(), FileError> {
        let target = meta_path(path);
        let bytes = try_encode(meta)
            .map_err(|e| FileError::new("encoding the meta of", path)(io::Error::other(e)))?;
        let (temp, mut file) = self.create_temp("meta")?;
        let written = file.write_all(&bytes).and_then(|()| file.sync_all());
        if let Err(error) = written.and_then(|()| fs::rename(&temp, &target)) {
            delete(&temp, "an unfinished snapshot meta file");
            return Err(FileError::new("writing", &target)(error));
        }
        Ok(())
    }

    /// Makes `snapshot` the current one — unless it is older than the current one and `replace` is false (a
    /// build that raced with an install must not bring an older snapshot back) — and deletes the file that
    /// is no longer current.
    fn remember(&self, snapshot: CurrentFile, replace: bool) {
        let obsolete = {
            let mut current = lock(&self.current);
            let newer = current.as_ref().is_none_or(|old| snapshot.meta.last_log_id >= old.meta.last_log_id);
            let obsolete = if replace || newer { current.replace(snapshot) } else { Some(snapshot) };
            self.coverage.covered(current.as_ref().and_then(|c| c.meta.last_log_id));
            // The same id installed twice renamed onto the current file: that path is still current.
            obsolete.filter(|obsolete| current.as_ref().is_none_or(|c| c.path != obsolete.path))
        };
        if let Some(obsolete) = obsolete {
            delete(&obsolete.path, "a snapshot that is no longer current");
            delete(&meta_path(&obsolete.path), "the meta of a snapshot that is no longer current");
        }
    }
}

/// The meta file beside the snapshot file `path`.
fn meta_path(path: &Path) -> PathBuf {
    path.with_extension("meta")
}

/// The meta in `path`, if it reads back whole.
fn read_meta(path: &Path) -> Option<Meta> {
    let bytes = fs::read(path).ok()?;
    decode_exact(&bytes).ok()
}

/// fsyncs the snapshot directory, so that a rename or deletion in it stays done.
fn sync_dir(dir: &Path) -> Result<(), FileError> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(FileError::new("syncing the directory", dir))
}

#[cfg(test)]
mod tests {
    use super::snapshot_file_name;

    #[test]
    fn snapshot_file_names_stay_inside_the_directory() {
        assert_eq!(snapshot_file_name("3-120-00ff00ff00ff00ff"), "3-120-00ff00ff00ff00ff.snap");
        assert_eq!(snapshot_file_name("../../etc/passwd"), "______etc_passwd.snap");
        assert_eq!(snapshot_file_name(""), ".snap");
        assert_eq!(snapshot_file_name(&"x".repeat(500)).len(), 128 + 5);
    }
}

//! Blob bytes on disk: content-addressed files beside sled, and the part files of uploads in progress.
//!
//! ```text
//! <store dir>/blobs/
//!   sha256/{64 hex}            a committed blob, named by the SHA-256 of its bytes; never changed in place
//!   uploads-{16 hex}/          the part files of the uploads in progress; sled's meta names the current one
//!     {upload:016x}.part       the bytes received so far, each chunk written at its byte offset
//! ```
//!
//! ## What is durable when
//! - **A chunk** is written at its offset (`pwrite`), not fsynced: re-applying it after a crash writes the
//!   same bytes at the same place. [`crate::Store::durable`] fsyncs the part files of the uploads in progress
//!   (and their directory) *before* it flushes sled — the database runs that before every flush, whoever
//!   asks for it ([`crate::Database::set_durable_hooks`]) — so sled's durable meta never claims more bytes
//!   than the file durably holds. The file may be ahead of sled; `BlobFiles::reconcile_uploads` cuts it
//!   back to the size sled says and checks the SHA-256 of those bytes against the one sled stored with
//!   them, so a file and a sled that the kernel wrote back at different moments are caught, never trusted
//!   (the store then refuses to load and the node rebuilds it, see [`crate::rebuild`]).
//! - **A commit** fsyncs the part file, hard-links it to a temporary name in `sha256/`, renames that over
//!   `sha256/{hex}` and fsyncs `sha256/`: the blob file is durable before sled records the blob, and so
//!   before any change set that references it can be applied, let alone acknowledged. The same content
//!   committed twice is one file (the rename replaces it with identical, verified bytes).
//! - **A part file is deleted only after sled durably forgot its upload** (committed or aborted):
//!   `BlobFiles::finished_parts` lists the files of uploads no longer in progress, and the store deletes them
//!   after sled's flush. Until then, a crash leaves the part where sled expects it. A part file still linked
//!   to a blob file (a commit that sled had not made durable) is copied before it is cut, so cutting it never
//!   shortens the blob.
//! - **A snapshot install or a migration** writes into a fresh `uploads-*` directory, and the new sled
//!   generation names it: a crash before the switch leaves the old generation and its directory, after it
//!   the new pair. Directories that sled does not name are deleted at open.
//!
//! ## When a blob file is deleted
//! Only by an explicit, replicated removal of a blob that neither the configuration nor any event of the
//! history references (history can reach back to any revision, and a revision that referenced a blob must
//! stay restorable): see [`crate::blob_usage`]; the file goes after sled durably forgot the blob. A file
//! that no sled meta names (a crash between the rename and sled's write, an interrupted install, a removal
//! whose deletion a crash undid) is left in place and reused — replaced — by the next commit of the same
//! content.
//!
//! ## Trust
//! Opening the store checks that every committed blob's file exists with its size (cheap). The digest is
//! checked once per process before a blob's first byte is served ([`BlobFiles::verify`], hashed outside any
//! store lock, on the reader's thread), and by every snapshot that streams it: a file whose bytes do not
//! match its name is never served.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use sha2::{Digest as _, Sha256};

use crate::blob::{StoredUpload, Upload};
use crate::digest::Digest;
use crate::error::{Error, Result};

const SHA256_DIR: &str = "sha256";
const UPLOADS_PREFIX: &str = "uploads-";
const PART_SUFFIX: &str = ".part";
/// The buffer with which files are hashed and copied.
const COPY_BUFFER: usize = 256 * 1024;

/// The outcome of checking one blob file's digest, shared by every reader of that blob in this process.
type Verdict = Arc<OnceLock<std::result::Result<(), String>>>;

/// The blob directory of one store (see the module docs).
#[derive(Clone, Debug)]
pub struct BlobFiles {
    root: PathBuf,
    uploads: PathBuf,
    verified: Arc<Mutex<HashMap<Digest, Verdict>>>,
}

impl BlobFiles {
    /// Opens (creating it if needed) the blob directory `root` with `uploads_name` as the directory of the
    /// uploads in progress.
    pub(crate) fn open(root: &Path, uploads_name: &str) -> Result<BlobFiles> {
        let files = BlobFiles {
            root: root.to_path_buf(),
            uploads: root.join(uploads_name),
            verified: Arc::default(),
        };
        files.create_dirs()?;
        Ok(files)
    }

    /// The same blob directory with another directory for uploads (a snapshot install, a migration).
    pub(crate) fn with_uploads(&self, uploads_name: &str) -> Result<BlobFiles> {
        let files = BlobFiles { uploads: self.root.join(uploads_name), ..self.clone() };
        files.create_dirs()?;
        Ok(files)
    }

    /// A fresh name for an uploads directory.
    pub(crate) fn new_uploads_name() -> String {
        format!("{UPLOADS_PREFIX}{:016x}", rand::random::<u64>())
    }

    /// The name of this store's uploads directory (what sled's meta records).
    pub(crate) fn uploads_name(&self) -> String {
        self.uploads.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }

    fn create_dirs(&self) -> Result<()> {
        let root_existed = self.root.is_dir();
        for dir in [self.root.join(SHA256_DIR), self.uploads.clone()] {
            if !dir.is_dir() {
                fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
                sync_dir(&self.root)?;
            }
        }
        if !root_existed && let Some(parent) = self.root.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }

    /// Where a committed blob's bytes are.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join(SHA256_DIR).join(digest.to_string())
    }

    pub(crate) fn part_path(&self, upload: u64) -> PathBuf {
        self.uploads.join(format!("{upload:016x}{PART_SUFFIX}"))
    }

    /// Writes a chunk at `offset` of the upload's part file; offset 0 starts a new file.
    pub(crate) fn write_chunk(&self, upload: u64, offset: u64, data: &[u8]) -> Result<()> {
        let path = self.part_path(upload);
        let file = if offset == 0 {
            // A file of an earlier upload with this id may still be here, linked to its blob: never write
            // into it.
            remove_if_present(&path)?;
            OpenOptions::new().write(true).create_new(true).open(&path)
        } else {
            OpenOptions::new().write(true).open(&path)
        };
        let file = file.map_err(|e| part_error(&path, e))?;
        file.write_all_at(data, offset).map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }

    /// Makes the upload's part file the blob `digest` (see the module docs: fsync, link, rename, fsync).
    pub(crate) fn commit(&self, upload: u64, digest: &Digest) -> Result<()> {
        let part = self.part_path(upload);
        File::open(&part)
            .and_then(|file| file.sync_all())
            .map_err(|e| Error::io(format!("fsyncing {}", part.display()), e))?;
        let target = self.blob_path(digest);
        let temp = self.root.join(SHA256_DIR).join(format!(".{digest}.{upload:016x}.link"));
        remove_if_present(&temp)?;
        fs::hard_link(&part, &temp)
            .and_then(|()| fs::rename(&temp, &target))
            .map_err(|e| Error::io(format!("linking {} to {}", part.display(), target.display()), e))?;
        sync_dir(&self.root.join(SHA256_DIR))?;
        self.mark_verified(digest);
        Ok(())
    }

    /// The files in the uploads directory that belong to no upload in `active`: to delete once sled is
    /// durable (see the module docs).
    pub(crate) fn finished_parts(&self, active: &dyn Fn(u64) -> bool) -> Result<Vec<PathBuf>> {
        let listing = self.listing()?.into_iter();
        Ok(listing.filter(|(_, upload)| !upload.is_some_and(active)).map(|(path, _)| path).collect())
    }

    /// fsyncs every part file under the blob directory `root`, and their directories. The database runs
    /// this before each of its flushes ([`crate::Database::set_durable_hooks`]), whoever asks for one (the
    /// store, or the Raft log before a purge), so sled is never durable ahead of a part file.
    pub(crate) fn sync_part_files(root: &Path) -> Result<()> {
        let what = |path: &Path| format!("listing {}", path.display());
        let entries = match fs::read_dir(root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(what(root), e)),
        };
        for entry in entries {
            let dir = entry.map_err(|e| Error::io(what(root), e))?.path();
            if !dir.file_name().is_some_and(|name| name.to_string_lossy().starts_with(UPLOADS_PREFIX)) {
                continue;
            }
            for file in fs::read_dir(&dir).map_err(|e| Error::io(what(&dir), e))? {
                let path = file.map_err(|e| Error::io(what(&dir), e))?.path();
                match File::open(&path) {
                    Ok(file) => {
                        file.sync_all().map_err(|e| Error::io(format!("fsyncing {}", path.display()), e))?
                    }
                    // Deleted meanwhile (a finished upload): nothing to make durable.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
                }
            }
            sync_dir(&dir)?;
        }
        Ok(())
    }

    /// The blob directory.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// fsyncs the uploads directory (after part files were renamed into it).
    pub(crate) fn sync_uploads_dir(&self) -> Result<()> {
        sync_dir(&self.uploads)
    }

    /// Deletes the uploads directory (an install that failed half-way).
    pub(crate) fn remove_uploads_dir(&self) {
        let _ = fs::remove_dir_all(&self.uploads);
    }

    /// Deletes files that `BlobFiles::finished_parts` listed.
    pub(crate) fn remove_finished(&self, paths: &[PathBuf]) -> Result<()> {
        for path in paths {
            remove_if_present(path)?;
        }
        Ok(())
    }

    /// The files in the uploads directory, with the upload id of each part file.
    fn listing(&self) -> Result<Vec<(PathBuf, Option<u64>)>> {
        let what = || format!("listing {}", self.uploads.display());
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.uploads).map_err(|e| Error::io(what(), e))? {
            let entry = entry.map_err(|e| Error::io(what(), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let upload = name.strip_suffix(PART_SUFFIX).and_then(|hex| u64::from_str_radix(hex, 16).ok());
            out.push((entry.path(), upload));
        }
        Ok(out)
    }

    /// Brings the part files in line with what sled says after a restart or an install, and rebuilds each
    /// upload's running digest from its file (see the module docs). Deletes every other file there.
    pub(crate) fn reconcile_uploads(
        &self,
        stored: BTreeMap<u64, StoredUpload>,
    ) -> Result<BTreeMap<u64, Upload>> {
        for (path, upload) in self.listing()? {
            if !upload.is_some_and(|upload| stored.contains_key(&upload)) {
                remove_if_present(&path)?;
            }
        }
        let mut uploads = BTreeMap::new();
        for (id, StoredUpload { meta, digest_so_far }) in stored {
            let hasher = self.reconcile_part(id, meta.size, &digest_so_far)?;
            uploads.insert(id, Upload { meta, hasher });
        }
        sync_dir(&self.uploads)?;
        Ok(uploads)
    }

    /// Cuts one part file to `size` bytes and checks them against `expected`; returns their running digest.
    fn reconcile_part(&self, upload: u64, size: u64, expected: &Digest) -> Result<Sha256> {
        let path = self.part_path(upload);
        let corrupt = |text: String| Error::Corrupt(format!("upload {upload} ({}): {text}", path.display()));
        let metadata = match fs::metadata(&path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == io::ErrorKind::NotFound && size == 0 => {
                File::create(&path).map_err(|e| part_error(&path, e))?;
                return Ok(Sha256::new());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(corrupt(format!(
                    "the part file is missing, but sled says {size} bytes were received"
                )));
            }
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        if metadata.len() < size {
            return Err(corrupt(format!("the part file holds {} bytes, sled says {size}", metadata.len())));
        }
        if metadata.nlink() > 1 {
            // Committed before the crash, but sled had not recorded it: the file is also a blob file.
            copy_prefix(&path, size)?;
        }
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(|e| part_error(&path, e))?;
        if metadata.len() > size {
            file.set_len(size)
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io(format!("cutting {}", path.display()), e))?;
        }
        let hasher =
            hash_prefix(&file, size).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let actual = Digest::from(hasher.clone());
        if actual != *expected {
            return Err(corrupt(format!(
                "its first {size} bytes have digest {actual}, sled recorded {expected}: the file and sled disagree after a crash"
            )));
        }
        Ok(hasher)
    }

    /// Deletes every uploads directory but this store's (leftovers of an install or a migration).
    pub(crate) fn remove_other_upload_dirs(&self) -> Result<()> {
        let what = || format!("listing {}", self.root.display());
        let mut removed = false;
        for entry in fs::read_dir(&self.root).map_err(|e| Error::io(what(), e))? {
            let entry = entry.map_err(|e| Error::io(what(), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(UPLOADS_PREFIX) && entry.path() != self.uploads {
                fs::remove_dir_all(entry.path())
                    .map_err(|e| Error::io(format!("removing {}", entry.path().display()), e))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.root)?;
        }
        Ok(())
    }

    /// Checks that a committed blob's file is there with its size (its digest: [`BlobFiles::verify`]).
    pub(crate) fn check_blob(&self, digest: &Digest, size: u64) -> Result<()> {
        let path = self.blob_path(digest);
        let advice = "restart the node to rebuild its store from the last snapshot and the Raft log, or restore a backup";
        match fs::metadata(&path) {
            Ok(metadata) if metadata.len() == size => Ok(()),
            Ok(metadata) => Err(Error::Corrupt(format!(
                "blob file {} holds {} bytes, its blob has {size}; {advice}",
                path.display(),
                metadata.len()
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::Corrupt(format!("blob file {} is missing; {advice}", path.display())))
            }
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Checks, once per process, that the blob file's bytes have its digest; the verdict is kept, so only
    /// the first reader of a blob pays for reading it whole (concurrent first readers wait for that one).
    pub fn verify(&self, digest: &Digest, size: u64) -> std::result::Result<(), String> {
        let verdict = {
            let mut verified = self.verified.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            verified.entry(*digest).or_default().clone()
        };
        verdict.get_or_init(|| self.check_digest(digest, size)).clone()
    }

    fn check_digest(&self, digest: &Digest, size: u64) -> std::result::Result<(), String> {
        let path = self.blob_path(digest);
        let hashed = File::open(&path).and_then(|file| {
            let length = file.metadata()?.len();
            Ok((hash_prefix(&file, length)?, length))
        });
        match hashed {
            Ok((hasher, length)) if length == size && Digest::from(hasher.clone()) == *digest => Ok(()),
            Ok((hasher, length)) => Err(format!(
                "blob file {} does not match its name ({length} bytes with digest {}, expected {size} bytes with digest {digest}); it is not served: delete the file and restart the node (it rebuilds its store from the last snapshot and the Raft log), or upload the blob again",
                path.display(),
                Digest::from(hasher)
            )),
            Err(e) => Err(format!("reading blob file {}: {e}", path.display())),
        }
    }

    /// Records that `digest`'s file was just written from bytes with that digest.
    fn mark_verified(&self, digest: &Digest) {
        let verdict = OnceLock::new();
        let _ = verdict.set(Ok(()));
        let mut verified = self.verified.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        verified.insert(*digest, Arc::new(verdict));
    }

    /// A new temporary file in the uploads directory, to be filled and then made a blob or a part file.
    pub(crate) fn incoming(&self, name: &str) -> Result<IncomingFile> {
        let path = self.uploads.join(format!("{name}.incoming"));
        remove_if_present(&path)?;
        let file = File::create(&path).map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        Ok(IncomingFile { path, file: io::BufWriter::with_capacity(COPY_BUFFER, file) })
    }
}

/// A file being filled from a stream (a snapshot being installed, a migration), not yet in place.
pub(crate) struct IncomingFile {
    path: PathBuf,
    file: io::BufWriter<File>,
}

impl IncomingFile {
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file.write_all(bytes).map_err(|e| Error::io(format!("writing {}", self.path.display()), e))
    }

    fn finish(self) -> Result<PathBuf> {
        let io_error = |e| Error::io(format!("writing {}", self.path.display()), e);
        let file = self.file.into_inner().map_err(|e| io_error(e.into_error()))?;
        file.sync_all().map_err(io_error)?;
        Ok(self.path)
    }

    /// Makes the file the blob `digest` (its bytes must have been checked): fsync, rename, fsync `sha256/`.
    pub(crate) fn into_blob(self, files: &BlobFiles, digest: &Digest) -> Result<()> {
        let path = self.finish()?;
        let target = files.blob_path(digest);
        fs::rename(&path, &target)
            .map_err(|e| Error::io(format!("renaming {} to {}", path.display(), target.display()), e))?;
        sync_dir(&files.root.join(SHA256_DIR))?;
        files.mark_verified(digest);
        Ok(())
    }

    /// Makes the file the part file of `upload` (the directory is fsynced by the caller, once).
    pub(crate) fn into_part(self, files: &BlobFiles, upload: u64) -> Result<()> {
        let path = self.finish()?;
        let target = files.part_path(upload);
        fs::rename(&path, &target)
            .map_err(|e| Error::io(format!("renaming {} to {}", path.display(), target.display()), e))
    }
}

/// The SHA-256 state after the first `size` bytes of `file`.
fn hash_prefix(file: &File, size: u64) -> io::Result<Sha256> {
    let mut hasher = Sha256::new();
    let mut reader = io::BufReader::with_capacity(COPY_BUFFER, file).take(size);
    let copied = io::copy(&mut reader, &mut hasher)?;
    if copied != size {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{copied} bytes, expected {size}")));
    }
    Ok(hasher)
}

/// Replaces `path` with a copy of its first `size` bytes in a file of its own (a new inode).
fn copy_prefix(path: &Path, size: u64) -> Result<()> {
    let copy = path.with_extension("copy");
    let io_error = |e| Error::io(format!("copying {} to {}", path.display(), copy.display()), e);
    let mut source = File::open(path).map_err(io_error)?.take(size);
    let mut target = File::create(&copy).map_err(io_error)?;
    io::copy(&mut source, &mut target).map_err(io_error)?;
    target.sync_all().map_err(io_error)?;
    fs::rename(&copy, path).map_err(io_error)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn part_error(path: &Path, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::Corrupt(format!("the part file {} of an upload in progress is missing", path.display()))
    } else {
        Error::io(format!("opening {}", path.display()), e)
    }
}

pub(crate) fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
    }
}

/// fsyncs a directory, so that the names created, renamed or deleted in it are durable.
pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| Error::io(format!("fsyncing directory {}", path.display()), e))
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

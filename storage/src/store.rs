//! The store: the projection in memory, the events on disk; a batch of them written with the tip last.
//!
//! ## Applying
//! [`Store::apply`] takes a batch of [`Command`]s (one Raft `apply` call's worth, or one local write) and an
//! opaque *position* from the caller (the cluster crate passes its last applied log id and membership). For
//! each command it decides against the in-memory state, which already includes the earlier commands of the
//! batch, and collects every resulting write (event parts, request ids, blob and upload metas, now and then a
//! checkpoint) into **one** [`WriteBatch`] that ends with the [`Tip`]: revision, chain head and position. After
//! a crash the disk holds either the whole batch or none of it as far as any reader can tell (the caller
//! re-applies from its log, which is exactly what Raft does with entries past the durable applied position):
//! a batch of change sets only is written in order with the tip as its commit point, and what a crash left
//! past the tip is discarded at open ([`crate::tip`]); any other batch is written atomically
//! ([`crate::redo`]). The documents themselves are not stored: the projection is rebuilt at open from the
//! newest checkpoint and the events after it ([`crate::checkpoint`]).
//!
//! `apply` does not fsync. [`Store::durable`] does (flush + fsync), so a caller can apply many batches and make
//! them durable with one fsync — group commit. Blob bytes are not in the batch: a chunk goes into its upload's
//! part file, a commit links that file into place durably before the batch records the blob
//! ([`crate::blob_files`] has the crash story of the files). The cluster crate calls it before
//! acknowledging; the crash test checks that every revision reported durable survives SIGKILL.
//!
//! ## When a write fails
//! The in-memory state is updated before the disk write. If the write fails, memory is ahead of the disk, so
//! the store marks itself poisoned and refuses everything after; the node must restart, reload from disk and
//! re-apply from its log.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use crate::blob::{BlobMeta, StoredUpload};
use crate::blob_files::{BlobFiles, BlobReader, RemovedBlobs, StoreHooks};
use crate::change::{ChangeSet, DocKey, Revision};
use crate::checkpoint::{latest_checkpoint, replay_from_disk, write_checkpoint};
use crate::codec::{self, decode, encode, put_parts};
use crate::command::{Command, Outcome};
use crate::decide::decide;
use crate::digest::Digest;
use crate::engine::{Database, Keyspace, SledDatabase, WriteBatch};
use crate::error::{Error, Result};
use crate::keys::{self, Meta};
use crate::limits::{MAX_BLOB_BYTES, MAX_BLOB_CHUNK};
use crate::projection::{Projection, StoredDocument};
use crate::rejection::Rejection;
use crate::tip::{self, Tip};

/// Tunables of a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// The fewest events between two checkpoints (tests lower it to exercise checkpoints).
    pub checkpoint_interval: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { checkpoint_interval: 1000 }
    }
}

/// Everything a snapshot or a decision needs, in memory. Cloning is cheap enough to do per snapshot (bodies
/// are shared).
#[derive(Clone, Debug, Default)]
pub(crate) struct State {
    pub projection: Projection,
    pub blobs: BTreeMap<Digest, BlobMeta>,
    pub uploads: BTreeMap<u64, crate::blob::Upload>,
    pub position: Option<Vec<u8>>,
    pub cluster_id: String,
    /// The chain hash of the last event ([`crate::chain`]).
    pub head: Digest,
    /// The revision the history starts after: events at or below it were forgotten ([`crate::forget`]).
    pub base: Revision,
    /// The chain hash of [`State::base`] (the genesis hash at 0), which the first kept event links to.
    pub base_hash: Digest,
}

/// An event-sourced configuration store on one node.
#[derive(Debug)]
pub struct Store {
    pub(crate) database: Arc<dyn Database>,
    pub(crate) space: Arc<dyn Keyspace>,
    pub(crate) files: BlobFiles,
    pub(crate) state: State,
    pub(crate) options: StoreOptions,
    pub(crate) last_checkpoint: Revision,
    poisoned: bool,
    /// Blobs removed whose files wait for sled to be durable ([`crate::blob_usage`]).
    pub(crate) removed_blobs: Arc<std::sync::Mutex<RemovedBlobs>>,
    /// While [`Store::apply`] runs: the revision on disk when it began, and the events it accepted so far
    /// with their chain hashes. They are not on disk until the batch is written, yet a later command of the
    /// same batch must see them (a forget that ends among them, a blob removal that reads the history), or
    /// two replicas that cut the same log into different batches would decide differently.
    pub(crate) batch_start: Revision,
    pub(crate) batch_events: Vec<(crate::event::Event, Digest)>,
}

/// The sled database of a store directory: `<dir>/db`.
pub fn database_dir(dir: &Path) -> std::path::PathBuf {
    dir.join("db")
}

/// The blob files of a store directory: `<dir>/blobs`, beside the database (see [`crate::blob_files`]).
pub fn blob_dir(dir: &Path) -> std::path::PathBuf {
    dir.join("blobs")
}

impl Store {
    /// Opens the store in `dir` (sled in [`database_dir`], blob files in [`blob_dir`]), creating an empty
    /// one if there is none. A node's `dir` is its data directory.
    pub fn open(dir: &Path) -> Result<Store> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// Opens the store in `dir` with options.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Store> {
        let database = SledDatabase::open(&database_dir(dir))?;
        Self::open_database(Arc::new(database), &blob_dir(dir), options)
    }

    /// Opens the store in an already open database, with its blob files in `blobs`. A database of format 1
    /// (blob bytes inside sled) is migrated first ([`crate::migrate`]).
    pub fn open_database(database: Arc<dyn Database>, blobs: &Path, options: StoreOptions) -> Result<Store> {
        let space = database.current()?;
        let mut format = initialize_if_empty(space.as_ref())?;
        if format == crate::migrate::FORMAT_WITH_BLOBS_IN_SLED {
            crate::migrate::blobs_to_files(space.as_ref(), blobs)?;
            database.durable()?;
            format = crate::migrate::FORMAT_WITHOUT_CHAIN;
        }
        if format == crate::migrate::FORMAT_WITHOUT_CHAIN {
            crate::migrate::events_to_format_3(space.as_ref())?;
            database.durable()?;
        } else if format == crate::migrate::FORMAT_WITHOUT_BASE {
            // Not made durable here: a crash leaves format 3, which the next open marks again.
            crate::migrate::mark_format_4(space.as_ref())?;
        }
        if format < keys::FORMAT_VERSION {
            crate::migrate::documents_to_tip(space.as_ref())?;
            database.durable()?;
        }
        tip::discard_unfinished(space.as_ref(), &tip::read(space.as_ref())?)?;
        let files = BlobFiles::open(blobs, &upload_dir_name(space.as_ref())?)?;
        let removed_blobs = Arc::new(std::sync::Mutex::new(RemovedBlobs::default()));
        database
            .set_durable_hooks(Arc::new(StoreHooks { files: files.clone(), removed: removed_blobs.clone() }));
        let state = load_state(space.as_ref(), &files)?;
        files.remove_other_upload_dirs()?;
        let last_checkpoint =
            latest_checkpoint(space.as_ref(), state.projection.revision())?.unwrap_or_default();
        let last_checkpoint = last_checkpoint.max(state.base);
        let batch_start = state.projection.revision();
        Ok(Store {
            database,
            space,
            files,
            state,
            options,
            last_checkpoint,
            poisoned: false,
            removed_blobs,
            batch_start,
            batch_events: Vec::new(),
        })
    }

    /// The revision of the last accepted change set (0 when empty).
    pub fn revision(&self) -> Revision {
        self.state.projection.revision()
    }

    /// The current configuration.
    pub fn projection(&self) -> &Projection {
        &self.state.projection
    }

    /// The chain hash of the last event ([`crate::chain`]; the genesis hash at revision 0).
    pub fn head(&self) -> Digest {
        self.state.head
    }

    /// The position the caller stored with the last applied batch.
    pub fn position(&self) -> Option<&[u8]> {
        self.state.position.as_deref()
    }

    /// The id of the installation this store belongs to.
    pub fn cluster_id(&self) -> &str {
        &self.state.cluster_id
    }

    /// One current document.
    pub fn get(&self, key: &DocKey) -> Option<&StoredDocument> {
        self.state.projection.get(key)
    }

    /// The size of a committed blob.
    pub fn blob_size(&self, digest: &Digest) -> Option<u64> {
        self.state.blobs.get(digest).map(|meta| meta.size)
    }

    /// The uploads in progress (begun with a chunk, neither committed nor aborted): id and the chunk each
    /// expects next. The leader aborts those that stop progressing (`tandem_cluster::upload_reaper`).
    pub fn uploads_in_progress(&self) -> Vec<(u64, u32)> {
        self.state.uploads.iter().map(|(id, upload)| (*id, upload.meta.next_chunk)).collect()
    }

    /// Every committed blob and its size.
    pub fn blobs(&self) -> impl Iterator<Item = (&Digest, u64)> {
        self.state.blobs.iter().map(|(digest, meta)| (digest, meta.size))
    }

    /// A stream of a committed blob's bytes. Cheap: the file is opened, and its digest checked once per
    /// process, on the first read (so not under whatever lock the caller holds on the store).
    pub fn open_blob(&self, digest: &Digest) -> Option<BlobReader> {
        self.state.blobs.get(digest).map(|meta| BlobReader::new(self.files.clone(), *digest, meta.size))
    }

    /// Makes everything applied so far durable: the part files of uploads in progress, then sled (flush +
    /// fsync); then deletes the part files of uploads that sled now durably knows are finished.
    pub fn durable(&self) -> Result<()> {
        let finished = self.files.finished_parts(&|upload| self.state.uploads.contains_key(&upload))?;
        // The database fsyncs the part files first and deletes removed blobs' files after (the hooks set at
        // open).
        self.database.durable()?;
        self.files.remove_finished(&finished)
    }

    /// Applies a batch of commands in one atomic write (not yet durable: see [`Store::durable`]).
    ///
    /// `position`, when given, is stored with the batch and returned by [`Store::position`].
    pub fn apply(&mut self, commands: &[Command], position: Option<&[u8]>) -> Result<Vec<Outcome>> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        self.batch_start = self.revision();
        self.batch_events.clear();
        let result = self.apply_commands(commands, position);
        self.batch_events.clear();
        self.batch_start = self.revision();
        // Memory (and maybe a part file) is ahead of sled now: refuse everything until a restart reloads.
        self.poisoned = result.is_err();
        result
    }

    fn apply_commands(&mut self, commands: &[Command], position: Option<&[u8]>) -> Result<Vec<Outcome>> {
        let mut batch = WriteBatch::new();
        let mut outcomes = Vec::with_capacity(commands.len());
        let mut new_requests: HashMap<String, Revision> = HashMap::new();
        let start_revision = self.revision();
        for command in commands {
            let outcome = match command {
                Command::Change(change_set) => {
                    self.apply_change(change_set, &mut new_requests, &mut batch)?
                }
                Command::ChangeV1(change_set) => {
                    self.apply_change(&change_set.clone().into(), &mut new_requests, &mut batch)?
                }
                Command::BlobChunk { upload, chunk, data } => {
                    self.apply_chunk(*upload, *chunk, data, &mut batch)?
                }
                Command::BlobCommit { upload, digest, size } => {
                    self.apply_commit(*upload, *digest, *size, &mut batch)?
                }
                Command::BlobAbort { upload } => self.apply_abort(*upload, &mut batch),
                Command::BlobRemove { digest } => self.apply_blob_remove(*digest, &mut batch)?,
                Command::ForgetHistory { before, meta } => {
                    self.apply_forget(*before, meta, &mut new_requests, &mut batch)?
                }
            };
            outcomes.push(outcome);
        }
        if self.revision() != start_revision {
            self.maybe_checkpoint(&mut batch);
        }
        if let Some(position) = position {
            self.state.position = Some(position.to_vec());
        }
        self.tip().put(&mut batch);
        // Change sets alone need no redo record: the tip, written last, is their commit point (crate::tip).
        let only_changes =
            commands.iter().all(|command| matches!(command, Command::Change(_) | Command::ChangeV1(_)));
        if only_changes {
            self.space.write_in_order(batch)?;
        } else {
            self.space.write(batch)?;
        }
        self.schedule_removed_files(&outcomes);
        Ok(outcomes)
    }

    /// Where the history in memory ends, as the next batch's last write records it.
    pub(crate) fn tip(&self) -> Tip {
        Tip { revision: self.revision(), head: self.state.head, position: self.state.position.clone() }
    }

    /// Applies one change set made locally (offline tools, tests): apply, then durable.
    pub fn apply_change_set(&mut self, change_set: ChangeSet) -> Result<Outcome> {
        let mut outcomes = self.apply(&[Command::Change(change_set)], None)?;
        self.durable()?;
        Ok(outcomes.remove(0))
    }

    /// Uploads a blob from a reader, streaming it in [`MAX_BLOB_CHUNK`] pieces, and makes it durable.
    /// Returns its digest and size, or the rejection (e.g. too large).
    pub fn put_blob(
        &mut self,
        upload: u64,
        mut reader: impl Read,
    ) -> Result<std::result::Result<(Digest, u64), Rejection>> {
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buffer = vec![0u8; MAX_BLOB_CHUNK];
        for chunk in 0u32.. {
            let filled = read_full(&mut reader, &mut buffer)
                .map_err(|e| Error::io("reading the blob to upload", e))?;
            if filled == 0 && chunk > 0 {
                break;
            }
            hasher.update(&buffer[..filled]);
            size += filled as u64;
            let command = Command::BlobChunk { upload, chunk, data: buffer[..filled].to_vec() };
            if let Outcome::Rejected(rejection) = self.apply(&[command], None)?.remove(0) {
                return Ok(Err(rejection));
            }
            if filled < buffer.len() {
                break;
            }
        }
        let digest = Digest::from(hasher);
        let outcome = self.apply(&[Command::BlobCommit { upload, digest, size }], None)?.remove(0);
        self.durable()?;
        match outcome {
            Outcome::Rejected(rejection) => Ok(Err(rejection)),
            _ => Ok(Ok((digest, size))),
        }
    }

    pub(crate) fn apply_change(
        &mut self,
        change_set: &ChangeSet,
        new_requests: &mut HashMap<String, Revision>,
        batch: &mut WriteBatch,
    ) -> Result<Outcome> {
        if let Some(request_id) = change_set.meta.request_id.as_deref() {
            if let Some(revision) = new_requests.get(request_id) {
                return Ok(Outcome::Duplicate { revision: *revision });
            }
            if let Some(bytes) = self.space.get(&keys::request(request_id))? {
                let revision = u64::from_be_bytes(
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| Error::Corrupt("a request id entry is not 8 bytes".into()))?,
                );
                return Ok(Outcome::Duplicate { revision: Revision(revision) });
            }
        }
        let blobs = &self.state.blobs;
        let event =
            match decide(&self.state.projection, &|digest| blobs.get(digest).map(|b| b.size), change_set) {
                Ok(event) => event,
                Err(rejection) => return Ok(Outcome::Rejected(rejection)),
            };
        self.state.projection.apply(&event)?;
        let mut value = codec::encode_with_room(&event, crate::chain::HASH_LEN);
        self.state.head = crate::chain::seal(&self.state.head, &mut value);
        put_parts(batch, &value, |part| keys::event(event.revision, part));
        let revision = event.revision;
        self.batch_events.push((event, self.state.head));
        if let Some(request_id) = change_set.meta.request_id.as_deref() {
            batch.put(keys::request(request_id), revision.0.to_be_bytes().to_vec());
            new_requests.insert(request_id.to_string(), revision);
        }
        Ok(Outcome::Accepted { revision })
    }

    /// A chunk: written at its byte offset into the upload's part file, its meta into the batch.
    fn apply_chunk(
        &mut self,
        upload_id: u64,
        chunk: u32,
        data: &[u8],
        batch: &mut WriteBatch,
    ) -> Result<Outcome> {
        let reject = |reason: String| Outcome::Rejected(Rejection::BadUpload { upload: upload_id, reason });
        if data.len() > MAX_BLOB_CHUNK {
            return Ok(reject(format!(
                "a chunk may hold at most {MAX_BLOB_CHUNK} bytes, this one has {}",
                data.len()
            )));
        }
        let upload = self.state.uploads.entry(upload_id).or_default();
        if chunk != upload.meta.next_chunk {
            let expected = upload.meta.next_chunk;
            if expected == 0 {
                self.state.uploads.remove(&upload_id);
            }
            return Ok(reject(format!("expected chunk {expected}, got chunk {chunk} (restart the upload)")));
        }
        if upload.meta.size + data.len() as u64 > MAX_BLOB_BYTES {
            return Ok(reject(format!("a blob may hold at most {MAX_BLOB_BYTES} bytes")));
        }
        self.files.write_chunk(upload_id, upload.meta.size, data)?;
        upload.hasher.update(data);
        upload.meta.size += data.len() as u64;
        upload.meta.next_chunk += 1;
        batch.put(keys::upload(upload_id), encode(&upload.stored()));
        Ok(Outcome::ChunkStored { upload: upload_id, size: upload.meta.size })
    }

    /// A commit: the digest and size checked, the part file made the blob's file (durably), the blob's meta
    /// into the batch. The part file itself goes at the next [`Store::durable`].
    fn apply_commit(
        &mut self,
        upload_id: u64,
        digest: Digest,
        size: u64,
        batch: &mut WriteBatch,
    ) -> Result<Outcome> {
        let Some(upload) = self.state.uploads.remove(&upload_id) else {
            return Ok(Outcome::Rejected(Rejection::BadUpload {
                upload: upload_id,
                reason: "no such upload in progress (send its chunks first)".into(),
            }));
        };
        batch.delete(keys::upload(upload_id));
        let actual = Digest::from(upload.hasher.clone());
        let problem = if upload.meta.size != size {
            Some(format!("expected {size} bytes, received {}", upload.meta.size))
        } else if actual != digest {
            Some(format!("expected digest {digest}, the bytes received have {actual}"))
        } else {
            None
        };
        if let Some(reason) = problem {
            return Ok(Outcome::Rejected(Rejection::BadUpload {
                upload: upload_id,
                reason: format!("{reason}; the upload was discarded"),
            }));
        }
        // Also for a blob already present: the file is replaced by verified bytes, one file either way (and
        // uploading a blob again repairs a damaged file). A removal of the same bytes waiting for sled's
        // flush must not delete the new file: it is cancelled, under the lock its deletion holds.
        let mut removed = self.removed_blobs.lock().unwrap_or_else(|p| p.into_inner());
        removed.cancel(&digest);
        self.files.commit(upload_id, &digest)?;
        drop(removed);
        if let std::collections::btree_map::Entry::Vacant(entry) = self.state.blobs.entry(digest) {
            let meta = BlobMeta { size };
            batch.put(keys::blob(&digest), encode(&meta));
            entry.insert(meta);
        }
        Ok(Outcome::BlobCommitted { digest, size })
    }

    fn apply_abort(&mut self, upload_id: u64, batch: &mut WriteBatch) -> Outcome {
        if self.state.uploads.remove(&upload_id).is_none() {
            return Outcome::Rejected(Rejection::BadUpload {
                upload: upload_id,
                reason: "no such upload in progress".into(),
            });
        }
        batch.delete(keys::upload(upload_id));
        Outcome::UploadAborted { upload: upload_id }
    }

    fn maybe_checkpoint(&mut self, batch: &mut WriteBatch) {
        let revision = self.revision();
        let interval = self.options.checkpoint_interval.max(self.state.projection.len() as u64).max(1);
        if revision.0 - self.last_checkpoint.0 < interval {
            return;
        }
        write_checkpoint(batch, &self.state.projection);
        self.last_checkpoint = revision;
    }
}

/// Checks the stored format version, or writes a new store's first meta; returns the format.
fn initialize_if_empty(space: &dyn Keyspace) -> Result<u32> {
    match space.get(&Meta::Format.key())? {
        Some(bytes) => {
            let version = <[u8; 4]>::try_from(bytes.as_slice())
                .map(u32::from_be_bytes)
                .map_err(|_| Error::Corrupt("the format version is not 4 bytes".into()))?;
            if !(crate::migrate::FORMAT_WITH_BLOBS_IN_SLED..=keys::FORMAT_VERSION).contains(&version) {
                return Err(Error::Corrupt(format!(
                    "the data directory has format {version}, this build reads formats {} to {}",
                    crate::migrate::FORMAT_WITH_BLOBS_IN_SLED,
                    keys::FORMAT_VERSION
                )));
            }
            Ok(version)
        }
        None => {
            if space.scan(&[0], None, false).next().is_some() {
                return Err(Error::Corrupt("the database has data but no format version".into()));
            }
            let mut batch = WriteBatch::new();
            batch.put(Meta::Format.key(), keys::FORMAT_VERSION.to_be_bytes().to_vec());
            batch.put(Meta::ClusterId.key(), new_cluster_id().into_bytes());
            batch.put(Meta::UploadDir.key(), BlobFiles::new_uploads_name().into_bytes());
            Tip::default().put(&mut batch);
            space.write(batch)?;
            Ok(keys::FORMAT_VERSION)
        }
    }
}

/// The directory of this generation's part files, as sled's meta names it.
pub(crate) fn upload_dir_name(space: &dyn Keyspace) -> Result<String> {
    let bytes = space
        .get(&Meta::UploadDir.key())?
        .ok_or_else(|| Error::Corrupt("the store does not name its uploads directory".into()))?;
    String::from_utf8(bytes).map_err(|_| Error::Corrupt("the uploads directory name is not text".into()))
}

/// A random 128-bit id in hex.
pub fn new_cluster_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Loads the in-memory state from sled, checking the blob files against it (see [`crate::blob_files`]): the
/// tip, and the projection rebuilt from the newest checkpoint and the events after it ([`crate::tip`]).
pub(crate) fn load_state(space: &dyn Keyspace, files: &BlobFiles) -> Result<State> {
    let Tip { revision, head, position } = tip::read(space)?;
    let cluster_id = match space.get(&Meta::ClusterId.key())? {
        Some(bytes) => {
            String::from_utf8(bytes).map_err(|_| Error::Corrupt("the cluster id is not text".into()))?
        }
        None => String::new(),
    };
    let base = crate::chain::stored_base(space)?;
    let base_hash = crate::chain::stored_base_hash(space)?;
    if base > revision {
        return Err(Error::Corrupt(format!(
            "the history starts after revision {base}, past the store's {revision}"
        )));
    }
    // With every event up to the revision forgotten (a snapshot can say so), no event is left at all.
    let last_event = crate::chain::last_event_revision(space)?;
    let expected = if revision == base { Revision(0) } else { revision };
    if last_event != expected {
        return Err(Error::Corrupt(format!(
            "the last event is {last_event} but the store is at revision {revision}"
        )));
    }
    tip::check_head(space, revision, head, base, base_hash)?;
    let projection = replay_from_disk(space, revision)?;

    let mut blobs = BTreeMap::new();
    for item in space.scan(&[keys::BLOBS], Some(&[keys::BLOBS + 1]), false) {
        let (key, value) = item?;
        let digest: [u8; 32] =
            key[1..].try_into().map_err(|_| Error::Corrupt("a blob key is not a sha256 digest".into()))?;
        let meta = decode::<BlobMeta>(&value, "blob meta")?;
        files.check_blob(&Digest(digest), meta.size)?;
        blobs.insert(Digest(digest), meta);
    }

    let mut stored_uploads = BTreeMap::new();
    for item in space.scan(&[keys::UPLOADS], Some(&[keys::UPLOADS + 1]), false) {
        let (key, value) = item?;
        let id = u64::from_be_bytes(
            key[1..].try_into().map_err(|_| Error::Corrupt("an upload key is bad".into()))?,
        );
        stored_uploads.insert(id, decode::<StoredUpload>(&value, "upload meta")?);
    }
    let uploads = files.reconcile_uploads(stored_uploads)?;
    Ok(State { projection, blobs, uploads, position, cluster_id, head, base, base_hash })
}

/// Reads until `buffer` is full or the reader ends.
fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

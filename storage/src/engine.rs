//! The storage trait: the little that Tandem needs from an embedded key-value engine, and its sled
//! implementation.
//!
//! Everything above this module speaks [`Keyspace`] (ordered keys, point reads, range scans, atomic write
//! batches) and [`Database`] (durability, and whole keyspaces that can be swapped atomically). sled is behind
//! it because sled is beta and unmaintained (see `shared/notes/openraft-sled.md`): replacing it means writing
//! one more implementation of these two traits.
//!
//! ## Generations
//! A database holds the store in one *generation*: a sled tree named `state.<n>`. Installing a snapshot
//! writes the new state into a fresh generation, makes it durable, then flips the durable pointer
//! (`current-generation` in sled's default tree) in one write and drops the old tree. A crash at any point leaves
//! either the old generation or the new one current, never a mix; leftover trees of an interrupted install are
//! dropped on the next open.
//!
//! ## Durability
//! sled makes a write atomic and visible at once, but durable only after a flush, and on Linux its flush calls
//! `sync_file_range`, which is not an fsync. Worse, it writes every page over 128 KiB (segment size / 4; a
//! leaf holding ~16 values of 8 KiB is enough) to a file of its own under `blobs/` and never fsyncs those,
//! nor its `conf` file; its background thread fsyncs the `db` file every 500 ms, after which the log points
//! into blob files that a power cut empties, and sled panics in recovery (measured with LazyFS). So:
//!
//! - sled's background flusher is off (`flush_every_ms(None)`): nothing of sled's is made durable behind
//!   our back. A thread of ours only hands sled's buffer to the disk every 20 ms (`flush`, which is not an
//!   fsync), so that it does not go 8 MiB at a time (`spawn_writeback` says why);
//! - [`Database::durable`] flushes (sled writes its buffers), then fsyncs every blob file not synced yet and
//!   the `blobs/` directory, and only then the `db` file, so that the durable log never points at a blob
//!   that is not durable; `conf` and the database directory are fsynced once at open. (These `blobs/` are
//!   sled's own page files, not Tandem's blob files: those live beside the database, see
//!   [`crate::blob_files`].) Around all this it runs the hooks the store set
//!   ([`Database::set_durable_hooks`]): before, the store's part files must be durable before sled is;
//!   after, the files of removed blobs may go once sled durably forgot them.
//!
//! The Raft log does not live here (it has segment files of its own, `tandem_cluster::log_store`): what
//! this database holds — the projection, the history index, blob metas — can be rebuilt from the log and the
//! last snapshot, so `durable` runs only where a design step relies on it (a snapshot install, a generation
//! switch, before the Raft log is purged), not on every write. If sled still cannot open after a crash, the
//! caller moves the directory aside and rebuilds (see [`SledDatabase::open`]: a panic in sled's recovery is
//! caught and becomes [`Error::Engine`]).
//!
//! ## Atomic batches
//! A [`WriteBatch`] is crash-atomic through a redo record in sled's default tree, not through sled's own
//! `Batch`, which costs two waiting `sync_file_range` calls per batch on the path of every write (see
//! [`crate::redo`]); [`SledDatabase::open`] replays a batch a crash interrupted before anything reads.
//! [`Keyspace::write_in_order`] skips even the redo record, for a caller that writes its commit point last
//! (the store's batches of change sets, [`crate::tip`]).
//!
//! ## Crashes while sled writes its own snapshot
//! sled refuses to open a directory in which a crash left one of its snapshot files half-written;
//! [`SledDatabase::open`] first deletes such a file (see `sled_snapshots`).

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::{redo, sled_snapshots};

/// A key and its value.
pub type Pair = (Vec<u8>, Vec<u8>);

/// An iterator over key-ordered pairs.
pub type Scan<'a> = Box<dyn Iterator<Item = Result<Pair>> + Send + 'a>;

/// Writes that become visible together or not at all.
#[derive(Debug, Default)]
pub struct WriteBatch {
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.push((key, Some(value)));
    }
    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.push((key, None));
    }
    /// Drops the writes of this batch to keys in `start..end` (a range about to be deleted on disk: a put
    /// there would otherwise bring back what the delete removes).
    pub fn drop_range(&mut self, start: &[u8], end: &[u8]) {
        self.writes.retain(|(key, _)| !(start..end).contains(&key.as_slice()));
    }
    pub fn len(&self) -> usize {
        self.writes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// One ordered key space.
pub trait Keyspace: Send + Sync + fmt::Debug {
    /// The value of `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Pairs with `start <= key < end` (`end` unbounded when `None`), in key order or reversed.
    fn scan(&self, start: &[u8], end: Option<&[u8]>, reverse: bool) -> Scan<'_>;
    /// Applies all writes of the batch atomically.
    fn write(&self, batch: WriteBatch) -> Result<()>;
    /// Applies the writes of the batch one by one, in order, and not atomically: after a crash, any prefix of
    /// them may be what is left. Cheaper than [`Keyspace::write`] (no redo record) for a caller whose last
    /// write is its commit point and who can tell a leftover prefix at open ([`crate::tip`]).
    fn write_in_order(&self, batch: WriteBatch) -> Result<()>;
}

/// A database of keyspace generations, with real durability.
pub trait Database: Send + Sync + fmt::Debug {
    /// The current generation's keyspace (created empty on first use).
    fn current(&self) -> Result<Arc<dyn Keyspace>>;
    /// A new, empty generation that is not current yet.
    fn create_generation(&self) -> Result<(u64, Arc<dyn Keyspace>)>;
    /// Durably makes `generation` current and drops every other generation.
    fn switch_to(&self, generation: u64) -> Result<()>;
    /// Makes every write so far durable: [`DurableHooks::before`], flush and fsync, [`DurableHooks::after`].
    /// Calls do not overlap (one waits for the other), so each `after` follows its own `before`'s flush.
    fn durable(&self) -> Result<()>;
    /// Sets the work every [`Database::durable`] from now on does around its flush, whoever calls it (the
    /// store, or the Raft log before a purge).
    fn set_durable_hooks(&self, hooks: Arc<dyn DurableHooks>);
}

/// Work a store hooks into every [`Database::durable`].
pub trait DurableHooks: Send + Sync {
    /// Before the flush: what must be durable before the database is (the store's part files of uploads
    /// in progress, whose sizes the database records).
    fn before(&self) -> Result<()>;
    /// After the fsync: what may be done only once the database is durable (deleting the files of blobs it
    /// now durably forgot).
    fn after(&self) -> Result<()>;
}

/// The sled implementation of [`Database`].
#[derive(Clone)]
pub struct SledDatabase {
    db: sled::Db,
    db_file: Arc<File>,
    path: PathBuf,
    /// The blob files already fsynced (sled never rewrites one: each is named by the log position that
    /// wrote it).
    synced_blobs: Arc<Mutex<HashSet<std::ffi::OsString>>>,
    /// See [`Database::set_durable_hooks`]; shared by every clone (the store's and the Raft log's).
    hooks: Arc<Mutex<Option<Arc<dyn DurableHooks>>>>,
    /// Held through a whole [`Database::durable`], so that calls do not overlap.
    durable_turn: Arc<Mutex<()>>,
    /// Shared by every clone; the writeback thread ([`spawn_writeback`]) stops once the last one is gone.
    alive: Arc<()>,
}

impl fmt::Debug for SledDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledDatabase").field("path", &self.path).finish()
    }
}

const GENERATION_POINTER: &[u8] = b"current-generation";
const GENERATION_PREFIX: &str = "state.";

impl SledDatabase {
    /// Opens (or creates) the sled database in `path`, dropping generations left by an interrupted install.
    pub fn open(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        sled_snapshots::discard_unfinished(path)?;
        let db = open_sled(path)
            .map_err(|e| Error::engine(format!("opening the database in {}", path.display()), e))?;
        redo::replay(&db)?;
        let db_path = path.join("db");
        let db_file = File::open(&db_path)
            .map_err(|e| Error::io(format!("opening {} for fsync", db_path.display()), e))?;
        for file in ["conf", "db"] {
            sync_path(&path.join(file))?;
        }
        sync_path(path)?;
        let synced_blobs = Arc::default();
        let database = SledDatabase {
            db,
            db_file: Arc::new(db_file),
            path: path.to_path_buf(),
            synced_blobs,
            hooks: Arc::default(),
            durable_turn: Arc::default(),
            alive: Arc::default(),
        };
        database.sync_blobs()?;
        spawn_writeback(&database)?;
        if let Some(current) = database.current_generation()? {
            database.drop_all_but(current)?;
        }
        Ok(database)
    }

    /// fsyncs every blob file sled wrote since the last call, then the `blobs/` directory.
    fn sync_blobs(&self) -> Result<()> {
        let dir = self.path.join("blobs");
        let listing = match std::fs::read_dir(&dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut present = HashSet::new();
        let mut new_files = false;
        for item in listing {
            let item = item.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
            let name = item.file_name();
            if !synced.contains(&name) {
                match File::open(item.path()) {
                    Ok(file) => file.sync_all().map_err(|e| Error::io("fsyncing a sled blob file", e))?,
                    // sled deletes blobs it no longer needs, concurrently.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io(format!("opening {}", item.path().display()), e)),
                }
                new_files = true;
            }
            present.insert(name);
        }
        *synced = present;
        if new_files {
            sync_path(&dir)?;
        }
        Ok(())
    }

    /// The directory of the database.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying sled database, for crates that keep their own trees beside the store (the Raft log).
    pub fn sled(&self) -> &sled::Db {
        &self.db
    }

    fn current_generation(&self) -> Result<Option<u64>> {
        let value =
            self.db.get(GENERATION_POINTER).map_err(|e| Error::engine("reading the generation", e))?;
        match value {
            None => Ok(None),
            Some(bytes) => {
                let bytes: [u8; 8] = bytes.as_ref().try_into().map_err(|_| {
                    Error::Corrupt("the current-generation pointer is not 8 bytes long".into())
                })?;
                Ok(Some(u64::from_be_bytes(bytes)))
            }
        }
    }

    fn tree(&self, generation: u64) -> Result<sled::Tree> {
        self.db
            .open_tree(format!("{GENERATION_PREFIX}{generation}"))
            .map_err(|e| Error::engine(format!("opening generation {generation}"), e))
    }

    fn generations(&self) -> Vec<u64> {
        self.db
            .tree_names()
            .iter()
            .filter_map(|name| std::str::from_utf8(name).ok()?.strip_prefix(GENERATION_PREFIX)?.parse().ok())
            .collect()
    }

    fn drop_all_but(&self, keep: u64) -> Result<()> {
        for generation in self.generations() {
            if generation != keep {
                self.db
                    .drop_tree(format!("{GENERATION_PREFIX}{generation}"))
                    .map_err(|e| Error::engine(format!("dropping generation {generation}"), e))?;
            }
        }
        Ok(())
    }
}

/// The segment size of new databases: 8 MiB, so that sled's blob threshold (a quarter of it, 2 MiB) is
/// above the largest page the store can make (a leaf holds at most 17 values, and no stored value reaches
/// 64 KiB: about 1.1 MiB). sled then never writes a blob file, which is where a power cut hurt it most: it
/// deletes a blob file as soon as the page is rewritten, before the log that no longer needs it is durable,
/// and after the cut its durable log points at a file that is gone (it panics, or silently loses the page).
const SEGMENT_BYTES: usize = 8 * 1024 * 1024;
/// sled's default, which databases created before [`SEGMENT_BYTES`] have (sled refuses to open a database
/// with another segment size than the one it was created with).
const OLD_SEGMENT_BYTES: usize = 512 * 1024;

/// The segment size to open the database in `path` with: what its `conf` file says, else [`SEGMENT_BYTES`].
fn segment_size(path: &Path) -> usize {
    let Ok(conf) = std::fs::read_to_string(path.join("conf")) else { return SEGMENT_BYTES };
    conf.lines()
        .find_map(|line| line.strip_prefix("segment_size:")?.trim().parse().ok())
        .unwrap_or(OLD_SEGMENT_BYTES)
}

/// How often the writeback thread hands sled's buffered writes to the disk ([`spawn_writeback`]).
const WRITEBACK_INTERVAL: Duration = Duration::from_millis(20);

/// Starts the thread that makes sled write its buffer every [`WRITEBACK_INTERVAL`] (`Db::flush`: a write
/// and `sync_file_range`, never an fsync: nothing is made durable by it that the design relies on, and sled
/// writes the same bytes itself once its buffer is full), until the last clone of `database` is dropped.
///
/// sled appends everything to an in-memory buffer as large as a segment (8 MiB here) and, once the buffer is
/// full, writes it and waits for the disk (`sync_file_range(WRITE | WAIT)`). Three nodes on one disk apply the
/// same changes at the same rate, so their buffers fill together: 24 MiB reached the disk at once, about once
/// a second at one client, and every node's log `fdatasync` queued behind it for 10–17 ms (`perf trace -e
/// sync_file_range,fdatasync`), which made the write latency's tail. Written every 20 ms, the same bytes go
/// in pieces of a few hundred KiB, and a log sync waits behind one of those at most.
///
/// It skips a turn while [`Database::durable`] runs: between that call's fsync of sled's blob files and of
/// its `db` file, a flush could make a record durable that points at a blob file written after the blob
/// sync (databases of 8 MiB segments never write blob files; older ones can).
fn spawn_writeback(database: &SledDatabase) -> Result<()> {
    let alive = Arc::downgrade(&database.alive);
    let db = database.db.clone();
    let durable_turn = database.durable_turn.clone();
    std::thread::Builder::new()
        .name("tandem-sled-writeback".into())
        .spawn(move || {
            let mut failing = false;
            while alive.upgrade().is_some() {
                std::thread::sleep(WRITEBACK_INTERVAL);
                let _turn = match durable_turn.try_lock() {
                    Ok(turn) => turn,
                    Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                    Err(std::sync::TryLockError::WouldBlock) => continue,
                };
                match db.flush() {
                    Ok(_) => failing = false,
                    // Said once per run of failures; the next write or `durable` meets the same error.
                    Err(error) if !failing => {
                        failing = true;
                        tracing::warn!(%error, "sled could not write its buffer");
                    }
                    Err(_) => {}
                }
            }
        })
        .map_err(|e| Error::io("starting the database's writeback thread".to_owned(), e))?;
    Ok(())
}

/// How long [`SledDatabase::open`] waits for the file lock of a database that was just closed.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Opens sled, waiting a little while its file lock is still held. Dropping the last handle of a sled
/// database does not release its lock at once: sled's background threads close the file a moment later
/// (spacejam/sled#1234), so reopening right after a close (a test, an offline tool, a node restarted in the
/// same process, or a new process started right after this one closed the store) can find the lock taken. A
/// lock held for longer than [`LOCK_WAIT`] belongs to another live process, and that is still an error.
fn open_sled(path: &Path) -> sled::Result<sled::Db> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        // sled 0.34 panics in recovery on some damage a power cut leaves ("tried to serialize
        // Uninitialized"): caught, it is an error like any other, and the caller can rebuild.
        let config = sled::Config::new().path(path).flush_every_ms(None).segment_size(segment_size(path));
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || config.open()))
            .unwrap_or_else(|panic| {
                let message = panic_message(panic.as_ref());
                Err(sled::Error::ReportableBug(format!("sled panicked while recovering: {message}")))
            });
        match opened {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

impl Database for SledDatabase {
    fn current(&self) -> Result<Arc<dyn Keyspace>> {
        let generation = match self.current_generation()? {
            Some(generation) => generation,
            None => {
                self.db
                    .insert(GENERATION_POINTER, &1u64.to_be_bytes())
                    .map_err(|e| Error::engine("creating the first generation", e))?;
                1
            }
        };
        Ok(Arc::new(SledKeyspace { tree: self.tree(generation)?, meta: (*self.db).clone() }))
    }

    fn create_generation(&self) -> Result<(u64, Arc<dyn Keyspace>)> {
        let generation =
            self.generations().into_iter().max().unwrap_or(0).max(self.current_generation()?.unwrap_or(0))
                + 1;
        let tree = self.tree(generation)?;
        tree.clear().map_err(|e| Error::engine("clearing a new generation", e))?;
        Ok((generation, Arc::new(SledKeyspace { tree, meta: (*self.db).clone() })))
    }

    fn switch_to(&self, generation: u64) -> Result<()> {
        self.durable()?;
        self.db
            .insert(GENERATION_POINTER, &generation.to_be_bytes())
            .map_err(|e| Error::engine("switching generations", e))?;
        self.durable()?;
        self.drop_all_but(generation)?;
        self.durable()
    }

    fn set_durable_hooks(&self, hooks: Arc<dyn DurableHooks>) {
        *self.hooks.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(hooks);
    }

    fn durable(&self) -> Result<()> {
        let _turn = self.durable_turn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let hooks = self.hooks.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        if let Some(hooks) = &hooks {
            hooks.before()?;
        }
        self.db.flush().map_err(|e| Error::engine("flushing", e))?;
        self.sync_blobs()?;
        self.db_file.sync_all().map_err(|e| Error::io("fsyncing the database file", e))?;
        match &hooks {
            Some(hooks) => hooks.after(),
            None => Ok(()),
        }
    }
}

/// The message of a caught panic (sled panics with a `&str` or a `String`).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

/// fsyncs a file or directory by path (a missing one is fine: sled creates `conf` lazily on some paths).
fn sync_path(path: &Path) -> Result<()> {
    match File::open(path) {
        Ok(file) => file.sync_all().map_err(|e| Error::io(format!("fsyncing {}", path.display()), e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("opening {} to fsync it", path.display()), e)),
    }
}

/// One sled tree as a [`Keyspace`].
#[derive(Debug)]
pub struct SledKeyspace {
    tree: sled::Tree,
    /// sled's default tree, where the redo records of this keyspace's batches go (see [`crate::redo`]).
    meta: sled::Tree,
}

impl Keyspace for SledKeyspace {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree.get(key).map_err(|e| Error::engine("reading", e))?.map(|value| value.to_vec()))
    }

    fn scan(&self, start: &[u8], end: Option<&[u8]>, reverse: bool) -> Scan<'_> {
        let range = (
            Bound::Included(start.to_vec()),
            end.map_or(Bound::Unbounded, |end| Bound::Excluded(end.to_vec())),
        );
        let convert = |item: sled::Result<(sled::IVec, sled::IVec)>| {
            item.map(|(key, value)| (key.to_vec(), value.to_vec())).map_err(|e| Error::engine("scanning", e))
        };
        let iter = self.tree.range::<Vec<u8>, _>(range);
        if reverse { Box::new(iter.rev().map(convert)) } else { Box::new(iter.map(convert)) }
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        let Some(writes) = redo::write_atomically(&self.meta, &self.tree, batch.writes)? else {
            return Ok(());
        };
        let mut sled_batch = sled::Batch::default();
        for (key, value) in writes {
            match value {
                Some(value) => sled_batch.insert(key, value),
                None => sled_batch.remove(key),
            }
        }
        self.tree.apply_batch(sled_batch).map_err(|e| Error::engine("writing a batch", e))
    }

    fn write_in_order(&self, batch: WriteBatch) -> Result<()> {
        redo::apply(&self.tree, batch.writes)
    }
}

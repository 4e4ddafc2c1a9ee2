//! The Raft state machine: openraft's [`RaftStateMachine`] over the event-sourced [`Store`].
//!
//! ## Applying committed entries
//! openraft hands over committed entries in batches. [`StateMachine`] collects the [`Command`]s of the
//! batch's normal entries (each entry carries one or more) and calls [`Store::apply`] **once** for the whole
//! batch, passing the batch's [`AppliedPosition`] (the last entry's log id, and the membership of the last
//! membership entry applied so far). The store writes the events, the projection and that position in one
//! atomic write. Each entry gets a [`Response`]: its commands' [`tandem_storage::Outcome`]s (none for blank
//! and membership entries) and the store's revision right after that entry.
//!
//! ## Crash story: why applying does not fsync
//! The applied position is stored *in the same atomic write* as the state it describes, so after a crash
//! the store is exactly at the position it reports: nothing applied twice, nothing skipped. openraft reads
//! that position at start ([`RaftStateMachine::applied_state`]) and re-applies the committed entries after
//! it from the log.
//!
//! That is why an apply is not fsynced: the state machine may come back *behind* what it had applied, and
//! catching up is ordinary re-application. What must hold is that the log still has every committed entry
//! after the durable applied position, and it does:
//!
//! - entries are applied only once committed, and a node applies them from its own log, where they were made
//!   durable before openraft counted them ([`crate::log_store`]);
//! - the store and the log share one sled database, whose log survives a crash as a prefix: any later fsync
//!   (the next log append, a vote) also makes the earlier applies durable, and the log store's `purge`,
//!   which removes only entries covered by a snapshot of state applied *before* it, fsyncs after writing
//!   the purge, so the applied state it relies on is durable by then;
//! - the committed log id the log store keeps (`save_committed`, written before openraft applies) lets a
//!   restarted node re-apply up to it on its own, before it serves.
//!
//! So an acknowledged write is durable exactly as Raft defines it — in the logs of a majority — and readers
//! only ever see committed state. Skipping the fsync here removes one flush + fsync per batch on every node
//! (two with the log's), which on a disk shared by three nodes was most of the write latency.
//!
//! A failed write poisons the store (see `tandem_storage::error`) and becomes a [`StorageError`], which
//! stops the Raft node: memory may be ahead of the disk, so a restart must reload.
//!
//! Small batches (up to `LIGHT_ENTRIES` entries, `LIGHT_OPERATIONS` document operations, no blob data) are
//! applied on the calling task, larger ones on a blocking thread so that they do not hold up a runtime
//! worker. Without the fsync a small apply is mostly CPU (tens to a few hundred microseconds, part of it sled
//! waking its I/O threads), and handing it to a blocking thread and back cost more than it saved (A/B over
//! four rounds of the cluster bench: ~10 % more changes/s at 16 clients with small batches applied in place,
//! no difference beyond the noise at 64).
//!
//! ## A follower answers before it applies
//! On a follower, openraft handles an AppendEntries request by appending its entries, queueing the answer,
//! and then asking the state machine to apply what the request's commit index newly covers (usually the
//! previous write). The answer wakes the peer server's task; the apply request wakes the state machine's
//! task right after, and Tokio runs the task woken last first. On the node's one control thread
//! (`tandem serve`'s runtime) the leader's answer therefore waited for the apply of the previous entry (a
//! store write, tens of microseconds), on every write. [`StateMachine::with_node_id`] tells the state
//! machine who it is: entries another node proposed (their log id names their leader) are applied after one
//! [`tokio::task::yield_now`], which lets the answer go out first. A leader's own entries are applied at once:
//! their apply is what its client waits for. Interleaved A/B runs of the one-client cluster bench, six pairs:
//! 1155–1381 changes/s without, 1372–1511 with (p50 0.66–0.80 against 0.61–0.73 ms); 16 clients 6618 / 7265
//! against 7064 / 7287.
//!
//! ## Snapshots
//! A snapshot is the whole store, firmware blobs included, so it lives in a file, never whole in memory
//! (openraft's `SnapshotData` is a [`tokio::fs::File`]). The files are in the directory given to
//! [`StateMachine::new`] (`<data dir>/snapshots` on a node), managed by [`crate::snapshot_files`]: at most
//! one `{snapshot_id}.snap`, the current snapshot, plus the temporary file of a build or a transfer under way.
//!
//! The snapshot builder takes [`Store::snapshot`] (a detached, cheap view) and the applied position under
//! the read lock — both describe the same point — then, outside the lock and on a blocking thread while the
//! store keeps applying, streams it through a buffered writer into a temporary file, fsyncs it and renames it
//! to `{snapshot_id}.snap`. Snapshot ids are `term-index-random`, unique even when two snapshots end at the
//! same log id (openraft sends snapshots in chunks keyed by id). Only the meta and path of the last snapshot
//! built or installed are kept in memory; [`RaftStateMachine::get_current_snapshot`] opens the file afresh
//! for each caller. If none exists yet but something was applied, one is built on demand (a leader without a
//! snapshot for a lagging follower stops with a fatal error). Replacing the current snapshot deletes the
//! previous file; a sender still reading it keeps reading (an open file outlives its name on Linux).
//!
//! Receiving: [`RaftStateMachine::begin_receiving_snapshot`] creates a temporary file that openraft fills
//! chunk by chunk. [`RaftStateMachine::install_snapshot`] gets it back, reads it from the start into
//! [`Store::install_snapshot`], which replaces the whole store atomically (a fresh generation, then a
//! durable switch), then stores the snapshot meta's log id and membership as the applied position and
//! fsyncs. A crash between the two leaves the position that came inside the snapshot, which the leader built
//! from the same lock as its data, so the store and its position agree either way. Only then is the file
//! renamed to `{snapshot_id}.snap` and made the current snapshot.
//!
//! Snapshot files are not kept across a restart: the state machine itself is the source of the next one, so
//! [`StateMachine::new`] deletes whatever `*.snap` and `*.tmp` files a crash (or a clean stop) left behind.
//!
//! ## Waiting for a revision
//! [`StateMachine::new`] also returns a [`watch::Receiver`] of the store's revision, updated after each
//! applied batch or install, so the API layer can wait until a write it made is visible on this node.

// openraft's traits return `StorageError` (over 200 bytes); the helpers here return the same type so that
// `?` passes it through unchanged, and errors are rare and fatal, so their size does not matter.
#![allow(clippy::result_large_err)]

use std::fmt;
use std::io::{self, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LockResult, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError,
};
use tandem_storage::{Command, Outcome, Revision, Store};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::log_store::DurablePosition;
use crate::snapshot_files::SnapshotFiles;

use crate::types::{
    AppliedPosition, LogId, NodeId, NodeInfo, Response, StoredMembership, TypeConfig, decode_exact,
    try_encode,
};

/// The store shared by the state machine (which writes) and the API layer (which reads).
pub type SharedStore = Arc<RwLock<Store>>;

/// Takes `store`'s read lock without stalling the async runtime it is called on: at once when the lock is
/// free; when a blocking thread holds the write lock (a snapshot install, a large apply), the wait moves off
/// the runtime's worker (`block_in_place`), so that the node's one control thread (see `tandem serve`) keeps
/// running Raft meanwhile. Outside a multi-thread runtime it simply waits.
pub fn read_without_stalling(store: &SharedStore) -> LockResult<RwLockReadGuard<'_, Store>> {
    match store.try_read() {
        Ok(guard) => return Ok(guard),
        Err(TryLockError::Poisoned(poisoned)) => return Err(poisoned),
        Err(TryLockError::WouldBlock) => {}
    }
    let on_multi_thread_runtime = tokio::runtime::Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if on_multi_thread_runtime { tokio::task::block_in_place(|| store.read()) } else { store.read() }
}

type Entry = openraft::Entry<TypeConfig>;
type Meta = SnapshotMeta<NodeId, NodeInfo>;
type Result<T> = std::result::Result<T, StorageError<NodeId>>;

/// Tandem's Raft state machine (see the module documentation).
pub struct StateMachine {
    store: SharedStore,
    files: Arc<SnapshotFiles>,
    applied: watch::Sender<Revision>,
    metrics: Option<crate::metrics::ClusterMetrics>,
    /// Entries are applied only once durable here, when the log acknowledges a leader's entries before
    /// syncing them ([`crate::log_store::DurablePosition`]).
    durable_log: Option<DurablePosition>,
    /// This node's id, when known ([`StateMachine::with_node_id`]): entries another node proposed are applied
    /// after the follower's answer has gone out (see the module documentation).
    node_id: Option<NodeId>,
}

impl fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateMachine")
            .field("applied", &*self.applied.borrow())
            .field("snapshot_dir", &self.files.dir())
            .finish()
    }
}

/// Builds a snapshot of the store; runs beside the state machine.
pub struct SnapshotBuilder {
    store: SharedStore,
    files: Arc<SnapshotFiles>,
}

impl fmt::Debug for SnapshotBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotBuilder").finish_non_exhaustive()
    }
}

impl StateMachine {
    /// A state machine over `store` keeping its snapshot files in `snapshot_dir` (created if needed; the
    /// snapshot files a previous run left there are deleted), and a receiver of the revision it has durably
    /// applied. Fails if the directory cannot be created or cleaned.
    pub fn new(
        store: SharedStore,
        snapshot_dir: PathBuf,
    ) -> Result<(StateMachine, watch::Receiver<Revision>)> {
        let files = SnapshotFiles::open(snapshot_dir)
            .map_err(|e| StorageError::from(StorageIOError::write_snapshot(None, AnyError::new(&e))))?;
        catch_up_from_snapshot(&store, &files)?;
        let revision = store.read().unwrap_or_else(|poisoned| poisoned.into_inner()).revision();
        let (applied, receiver) = watch::channel(revision);
        Ok((
            StateMachine {
                store,
                files: Arc::new(files),
                applied,
                metrics: None,
                durable_log: None,
                node_id: None,
            },
            receiver,
        ))
    }

    /// Makes sure a snapshot covers the applied position when it is past `log_end`, the end of the durable
    /// Raft log, and returns whether it built one. A state machine can be durable ahead of its log after a
    /// power cut (its database was written back by the kernel before the log's last entries were synced;
    /// a follower applies entries the leader and witness committed before its own sync). Its state is still
    /// committed state, but openraft accepts an applied position past the log only when a snapshot covers
    /// it (it then purges the log up to it), and panics otherwise. Call before starting Raft.
    pub async fn cover_applied_past(&mut self, log_end: Option<LogId>) -> Result<bool> {
        let applied = position_of(&*read_store(&self.store)?)?.last_applied;
        let covered = self.files.current_meta().and_then(|meta| meta.last_log_id);
        if applied <= log_end || applied <= covered {
            return Ok(false);
        }
        tracing::warn!(
            ?applied,
            ?log_end,
            "the state machine is ahead of the durable Raft log (a crash cut the log's unsynced tail): building a snapshot of it so that the log can start after it"
        );
        build_snapshot(&self.store, &self.files).await?;
        Ok(true)
    }

    /// Applies an entry only once the log has synced it (`LogStore::durable_position`): required with
    /// `LogStore::with_leader_early_ack`, where openraft may count an entry committed before the leader's own
    /// copy is on disk. Everything a client or a reader sees comes from applied state, so nothing is seen
    /// before a majority holds it durably.
    pub fn with_durable_log(mut self, durable: DurablePosition) -> Self {
        self.durable_log = Some(durable);
        self
    }

    /// Tells the state machine which node it runs on, so that it applies other nodes' entries only after the
    /// answer to the request that committed them has gone (see the module documentation).
    pub fn with_node_id(mut self, node_id: NodeId) -> Self {
        self.node_id = Some(node_id);
        self
    }

    /// Observes every applied batch in `metrics`.
    pub fn with_metrics(mut self, metrics: crate::metrics::ClusterMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The store this state machine applies to.
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// The gate the log store's purges wait at until a durable snapshot covers them (see
    /// [`crate::purge_gate`]); give it to [`crate::LogStore::with_purge_gate`].
    pub fn purge_gate(&self) -> crate::purge_gate::PurgeGate {
        self.files.purge_gate()
    }

    /// The directory the snapshot files are in.
    pub fn snapshot_dir(&self) -> &Path {
        self.files.dir()
    }

    /// Another receiver of the applied revision.
    pub fn subscribe(&self) -> watch::Receiver<Revision> {
        self.applied.subscribe()
    }
}

fn lock_error() -> AnyError {
    AnyError::error("the store lock is poisoned (a thread panicked while holding it)")
}

fn read_store(store: &SharedStore) -> Result<RwLockReadGuard<'_, Store>> {
    store.read().map_err(|_| StorageIOError::read_state_machine(lock_error()).into())
}

fn write_store(store: &SharedStore) -> Result<RwLockWriteGuard<'_, Store>> {
    store.write().map_err(|_| StorageIOError::write_state_machine(lock_error()).into())
}

fn sm_write_error(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

/// The applied position stored in the store (the default when nothing was applied yet).
fn position_of(store: &Store) -> Result<AppliedPosition> {
    match store.position() {
        None => Ok(AppliedPosition::default()),
        Some(bytes) => decode_exact(bytes).map_err(|e| {
            StorageIOError::read_state_machine(AnyError::error(format!(
                "the applied position stored in the store does not decode: {e}"
            )))
            .into()
        }),
    }
}

/// Runs blocking storage work off the async worker threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(sm_write_error)?
}

/// Batches up to this many entries, with at most [`LIGHT_OPERATIONS`] document operations in all and no blob
/// data, are applied on the calling task.
const LIGHT_ENTRIES: usize = 16;
/// See [`LIGHT_ENTRIES`].
const LIGHT_OPERATIONS: usize = 64;

/// Whether applying `entries` is cheap enough to do on the calling task (see the module documentation).
fn is_light(entries: &[Entry]) -> bool {
    if entries.len() > LIGHT_ENTRIES {
        return false;
    }
    let mut operations = 0;
    for entry in entries {
        match &entry.payload {
            EntryPayload::Normal(request) => {
                for command in &request.commands {
                    match command {
                        Command::Change(change) => {
                            operations += change.operations.len() + change.preconditions.len()
                        }
                        Command::BlobChunk { .. } => return false,
                        _ => operations += 1,
                    }
                }
            }
            EntryPayload::Blank | EntryPayload::Membership(_) => {}
        }
    }
    operations <= LIGHT_OPERATIONS
}

/// The cluster id every node of a cluster agrees on: derived from the cluster's founding membership (the
/// entry at log index 0, written by `initialize` on the first node), which every member applies, or receives
/// inside a snapshot together with the id. A node added with `--join` thus takes its cluster's id instead of
/// the random one its empty store was created with; a restore into a new data directory founds a new
/// cluster and gets a new id.
fn founding_cluster_id(membership: &openraft::Membership<NodeId, NodeInfo>) -> String {
    crate::identity::founding_cluster_id(membership.voter_ids())
}

/// Applies `entries` on the calling task when the batch is light ([`is_light`]) and the store's lock is free;
/// otherwise hands them back, for a blocking thread. A lock held by a blocking thread (a history export
/// reading, a snapshot install writing) would otherwise stall the calling task's thread, and on a node that
/// is its one control thread: Raft, heartbeats included.
fn apply_here(store: &SharedStore, entries: Vec<Entry>) -> Result<std::result::Result<Applied, Vec<Entry>>> {
    if !is_light(&entries) {
        return Ok(Err(entries));
    }
    let mut guard = match store.try_write() {
        Ok(guard) => guard,
        Err(TryLockError::WouldBlock) => return Ok(Err(entries)),
        Err(TryLockError::Poisoned(_)) => {
            return Err(StorageIOError::write_state_machine(lock_error()).into());
        }
    };
    apply_batch(&mut guard, entries).map(Ok)
}

/// What an applied batch gives back: each entry's response, and the store's revision after the batch.
type Applied = (Vec<Response>, Revision);

/// Applies a batch of entries with one store write (not fsynced: see the module documentation); returns the
/// responses and the revision.
fn apply_batch(store: &mut Store, entries: Vec<Entry>) -> Result<Applied> {
    let Some(last) = entries.last().map(|entry| entry.log_id) else {
        return Ok((Vec::new(), store.revision()));
    };
    // How many commands each entry carries, so that the outcomes can be handed back entry by entry.
    let mut command_counts = Vec::with_capacity(entries.len());
    let mut commands: Vec<Command> = Vec::new();
    let mut membership: Option<StoredMembership> = None;
    let mut founded: Option<String> = None;
    for entry in entries {
        match entry.payload {
            EntryPayload::Blank => command_counts.push(0),
            EntryPayload::Normal(request) => {
                command_counts.push(request.commands.len());
                commands.extend(request.commands);
            }
            EntryPayload::Membership(config) => {
                if entry.log_id.index == 0 {
                    founded = Some(founding_cluster_id(&config));
                }
                membership = Some(StoredMembership::new(Some(entry.log_id), config));
                command_counts.push(0);
            }
        }
    }

    if let Some(cluster_id) = founded
        && store.cluster_id() != cluster_id
    {
        store
            .set_cluster_id(&cluster_id)
            .map_err(|e| StorageError::from(StorageIOError::apply(last, AnyError::new(&e))))?;
    }
    let membership = match membership {
        Some(membership) => membership,
        None => position_of(store)?.membership,
    };
    let position = try_encode(&AppliedPosition { last_applied: Some(last), membership })
        .map_err(|e| StorageIOError::apply(last, AnyError::new(&e)))?;
    let start = store.revision();
    let outcomes = store
        .apply(&commands, Some(&position))
        .map_err(|e| StorageError::from(StorageIOError::apply(last, AnyError::new(&e))))?;
    // A removed blob's file goes only once the store durably forgot it (`tandem_storage::blob_usage`):
    // do that now, rather than at the next log purge, so the disk space comes back when the operator
    // asked. Removals are rare and explicit; every other apply stays unsynced.
    if outcomes.iter().any(|outcome| matches!(outcome, tandem_storage::Outcome::BlobRemoved { .. })) {
        store.durable().map_err(|e| StorageError::from(StorageIOError::apply(last, AnyError::new(&e))))?;
    }
    let end = store.revision();

    if outcomes.len() != commands.len() {
        return Err(StorageIOError::apply(
            last,
            AnyError::error(format!("{} commands gave {} outcomes", commands.len(), outcomes.len())),
        )
        .into());
    }
    let mut outcomes = outcomes.into_iter();
    let mut revision = start;
    let responses = command_counts
        .into_iter()
        .map(|count| {
            let outcomes: Vec<Outcome> = outcomes.by_ref().take(count).collect();
            for outcome in &outcomes {
                if let Outcome::Accepted { revision: accepted }
                | Outcome::HistoryForgotten { revision: accepted, .. } = outcome
                {
                    revision = revision.max(*accepted);
                }
            }
            Response { outcomes, revision }
        })
        .collect();
    Ok((responses, end))
}

/// A unique snapshot id: `term-index-random`.
/// Installs the snapshot kept from the previous run into the store if the store is behind it: its database
/// was rebuilt empty after a crash, and the Raft log no longer has the entries the snapshot covers.
fn catch_up_from_snapshot(store: &SharedStore, files: &SnapshotFiles) -> Result<()> {
    let read_error = |e: &dyn std::error::Error| {
        StorageError::from(StorageIOError::read_snapshot(None, AnyError::error(e.to_string())))
    };
    let Some((meta, file)) = files.open_current().map_err(|e| read_error(&e))? else { return Ok(()) };
    let mut guard = write_store(store)?;
    let applied = position_of(&guard)?.last_applied;
    if applied >= meta.last_log_id {
        return Ok(());
    }
    let position =
        AppliedPosition { last_applied: meta.last_log_id, membership: meta.last_membership.clone() };
    let position = try_encode(&position).map_err(sm_write_error)?;
    let error = |e: tandem_storage::Error| snapshot_write_error(Some(meta.signature()), e);
    let summary = guard.install_snapshot(BufReader::new(&file)).map_err(error)?;
    guard.apply(&[], Some(&position)).map_err(error)?;
    guard.durable().map_err(error)?;
    tracing::warn!(
        snapshot = %meta.snapshot_id,
        revision = %summary.header.revision,
        applied = ?applied,
        "the store was behind the snapshot kept on disk (its database was rebuilt): restored it from the snapshot; the Raft log replays the rest"
    );
    Ok(())
}

fn snapshot_id(last_applied: Option<LogId>) -> String {
    let random: u64 = rand::random();
    match last_applied {
        Some(log_id) => format!("{}-{}-{random:016x}", log_id.leader_id.term, log_id.index),
        None => format!("0-0-{random:016x}"),
    }
}

/// A failure while writing a snapshot (its signature, when known) as openraft's error.
fn snapshot_write_error(
    signature: Option<openraft::storage::SnapshotSignature<NodeId>>,
    e: impl std::error::Error + 'static,
) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(signature, AnyError::new(&e)).into()
}

/// Builds a snapshot of the store as it is now into a file and makes it the current one (see the module
/// documentation).
async fn build_snapshot(store: &SharedStore, files: &Arc<SnapshotFiles>) -> Result<Snapshot<TypeConfig>> {
    // A snapshot is written from a view taken under the lock while applies go on; an upload in that view may
    // end (aborted, or committed as a duplicate) and lose its parts before they are copied. The view is then
    // stale, not damaged: take a new one. Uploads end far more rarely than a snapshot takes, so a few
    // attempts are plenty.
    const ATTEMPTS: u32 = 5;
    for attempt in 1..ATTEMPTS {
        match build_snapshot_once(store, files).await? {
            Ok(snapshot) => return Ok(snapshot),
            Err(stale) => tracing::info!(%stale, attempt, "building the snapshot again"),
        }
    }
    match build_snapshot_once(store, files).await? {
        Ok(snapshot) => Ok(snapshot),
        Err(stale) => Err(snapshot_write_error(None, stale)),
    }
}

/// One attempt of [`build_snapshot`]: the snapshot, or (inner `Err`) the [`tandem_storage::Error::Stale`]
/// that says the view went out of date while it was written.
async fn build_snapshot_once(
    store: &SharedStore,
    files: &Arc<SnapshotFiles>,
) -> Result<std::result::Result<Snapshot<TypeConfig>, tandem_storage::Error>> {
    let (source, position) = {
        let guard = read_store(store)?;
        (guard.snapshot(), position_of(&guard)?)
    };
    let meta = Meta {
        last_log_id: position.last_applied,
        last_membership: position.membership,
        snapshot_id: snapshot_id(position.last_applied),
    };
    let files = files.clone();
    let built = meta.clone();
    let built_file = blocking(move || {
        let mut stale = None;
        let written = files.store_built(&built, |out| match source.write_to(out) {
            Ok((_, bytes)) => Ok(bytes),
            Err(tandem_storage::Error::Stale(why)) => {
                stale = Some(tandem_storage::Error::Stale(why.clone()));
                Err(io::Error::other(why))
            }
            Err(error) => Err(io::Error::other(error)),
        });
        match (written, stale) {
            (Ok(built_file), _) => Ok(Ok(built_file)),
            (Err(_), Some(stale)) => Ok(Err(stale)),
            (Err(error), None) => Err(snapshot_write_error(Some(built.signature()), error)),
        }
    })
    .await?;
    let (file, bytes) = match built_file {
        Ok(built_file) => built_file,
        Err(stale) => return Ok(Err(stale)),
    };
    tracing::info!(snapshot = %meta.snapshot_id, bytes, "built a snapshot");
    Ok(Ok(Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(file)) }))
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        build_snapshot(&self.store, &self.files).await
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership)> {
        let position = position_of(&*read_store(&self.store)?)?;
        Ok((position.last_applied, position.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|entry| entry.log_id) else {
            return Ok(Vec::new());
        };
        if self.node_id.is_some_and(|me| last.leader_id.node_id != me) {
            tokio::task::yield_now().await;
        }
        if let Some(durable) = &self.durable_log {
            durable
                .wait_for(last.index)
                .await
                .map_err(|e| StorageError::from(StorageIOError::apply(last, AnyError::new(&e))))?;
        }
        let store = self.store.clone();
        let timer = self.metrics.as_ref().map(|m| m.apply_seconds.start_timer());
        let (responses, revision) = match apply_here(&store, entries)? {
            Ok(applied) => applied,
            Err(entries) => blocking(move || apply_batch(&mut *write_store(&store)?, entries)).await?,
        };
        drop(timer);
        self.applied.send_replace(revision);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder { store: self.store.clone(), files: self.files.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>> {
        let files = self.files.clone();
        let file =
            blocking(move || files.begin_receiving().map_err(|e| snapshot_write_error(None, e))).await?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(&mut self, meta: &Meta, snapshot: Box<tokio::fs::File>) -> Result<()> {
        let signature = meta.signature();
        let mut snapshot = *snapshot;
        snapshot.flush().await.map_err(|e| snapshot_write_error(Some(signature.clone()), e))?;
        let mut file = snapshot.into_std().await;
        let position =
            AppliedPosition { last_applied: meta.last_log_id, membership: meta.last_membership.clone() };
        let store = self.store.clone();
        let files = self.files.clone();
        let meta = meta.clone();
        let installed = blocking(move || {
            let error = |e: tandem_storage::Error| snapshot_write_error(Some(signature.clone()), e);
            let position = try_encode(&position).map_err(sm_write_error)?;
            file.seek(SeekFrom::Start(0)).map_err(|e| {
                StorageError::from(StorageIOError::read_snapshot(Some(signature.clone()), AnyError::new(&e)))
            })?;
            let revision = {
                let mut guard = write_store(&store)?;
                let summary = guard.install_snapshot(BufReader::new(&file)).map_err(error)?;
                guard.apply(&[], Some(&position)).map_err(error)?;
                guard.durable().map_err(error)?;
                tracing::info!(
                    revision = %summary.header.revision,
                    bytes = summary.bytes,
                    "installed a snapshot"
                );
                guard.revision()
            };
            files
                .keep_received(&meta, &mut file)
                .map_err(|e| snapshot_write_error(Some(signature.clone()), e))?;
            Ok(revision)
        })
        .await;
        let revision = installed.inspect_err(|_| self.files.install_failed())?;
        self.applied.send_replace(revision);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        let files = self.files.clone();
        let current = blocking(move || {
            files
                .open_current()
                .map_err(|e| StorageError::from(StorageIOError::read_snapshot(None, AnyError::new(&e))))
        })
        .await?;
        if let Some((meta, file)) = current {
            return Ok(Some(Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(file)) }));
        }
        let applied = position_of(&*read_store(&self.store)?)?;
        if applied.last_applied.is_none() {
            return Ok(None);
        }
        build_snapshot(&self.store, &self.files).await.map(Some)
    }
}

//! # tandem-storage: the event-sourced configuration store
//!
//! Tandem keeps configuration as an append-only history of events; the current configuration is a projection
//! of that history. This crate is that store on one node. It knows nothing of Raft or the network: the
//! cluster crate feeds it committed log entries, offline tools (restore, recover) call it directly, and the
//! same apply code serves all of them.
//!
//! ## One change, start to finish
//! 1. A client builds a [`ChangeSet`]: operations ([`Operation`]: put, patch, delete), preconditions
//!    ([`Precondition`]), and metadata ([`ChangeMeta`]: actor, reason, timestamp, request id).
//! 2. The cluster crate replicates it as a [`Command::Change`] and, once committed, calls [`Store::apply`].
//! 3. [`decide()`] checks it against the current [`Projection`] and the committed blobs: sizes, names,
//!    preconditions, schemas of the built-in collections ([`collections`]), references, MAC uniqueness. The
//!    answer is an [`Event`] with the next [`Revision`], or a [`Rejection`] — the same on every replica.
//! 4. The event is applied to the in-memory projection ([`Projection::apply`]); its parts, its request id and
//!    the batch's tip (revision, chain head, the caller's position) are written with the tip last ([`store`]
//!    and [`tip`] explain the crash story); [`Store::durable`] fsyncs, once per batch. The documents are not
//!    stored: the projection is rebuilt at open from a checkpoint and the events after it ([`checkpoint`]).
//! 5. Later, [`Store::history`], [`Store::state_at`], [`Store::diff`] and [`Store::revert_to`] read the history
//!    ([`history`]); [`export`] writes the configuration as JSON and plans an import; [`undo`] plans a
//!    revert or the undo of one change set ([`plan`]); [`snapshot`] streams the whole store to a new node or
//!    a backup file ([`backup`]).
//!
//! ## Layers
//! - [`engine`]: the storage trait ([`Keyspace`], [`Database`]) and its sled implementation, with a real fsync.
//! - [`keys`]: the on-disk layout, every key in one table.
//! - [`change`], [`event`], [`command`], [`rejection`]: the vocabulary.
//! - [`decide`](mod@decide), [`projection`], [`collections`]: the pure logic.
//! - [`store`], [`tip`], [`checkpoint`], [`history`], [`chain`], [`blob`], [`snapshot`], [`backup`]: the store on disk (the history
//!   hash-chained, tamper-evident); [`blob_files`]: blob
//!   bytes in content-addressed files beside sled; [`migrate`]: older on-disk formats.
//! - [`plan`], [`export`], [`undo`]: going back in time and importing, always as new events.
//! - [`forget`]: forgetting the history before a revision (`tandem history forget`), the one operation
//!   that removes events — replicated, recorded as an event, the chain kept through a base hash.

pub mod backup;
pub mod blob;
pub mod blob_files;
pub mod blob_usage;
pub mod chain;
pub mod change;
pub mod checkpoint;
mod codec;
pub mod collections;
pub mod command;
pub mod decide;
pub mod digest;
pub mod engine;
pub mod error;
pub mod event;
pub mod export;
pub mod forget;
pub mod history;
pub mod keys;
pub mod legacy;
pub mod limits;
pub mod mac;
pub mod migrate;
pub mod plan;
pub mod projection;
pub mod rebuild;
mod redo;
pub mod rejection;
mod sled_snapshots;
pub mod snapshot;
pub mod store;
pub mod tip;
pub mod undo;

pub use blob_files::BlobReader;
pub use blob_usage::BlobUsage;
pub use change::{ChangeMeta, ChangeSet, DocKey, Json, Operation, Precondition, Revision};
pub use command::{Command, Outcome};
pub use decide::decide;
pub use digest::Digest;
pub use engine::{Database, Keyspace, SledDatabase};
pub use error::{Error, Result};
pub use event::{DocumentChange, Event};
pub use export::{Export, MissingBlob};
pub use forget::ForgetPreview;
pub use history::{DiffEntry, DiffKind, HistoryFilter};
pub use mac::Mac;
pub use plan::{CLUSTER_EVENTS, ChangeKind, Plan, PlannedChange};
pub use projection::{Projection, StoredDocument};
pub use rejection::Rejection;
pub use store::{Store, StoreOptions, blob_dir, database_dir};
pub use undo::UndoError;

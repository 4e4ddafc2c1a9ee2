//! The storage crate's one error type.
//!
//! Two kinds of failure exist in Tandem's storage, and they must never be confused:
//!
//! - A **rejection** ([`crate::Rejection`]) is a deterministic verdict on a change set: every replica that
//!   decides the same change set against the same state reaches the same rejection. It is an *outcome*, not an
//!   error: the log entry that carried it still counts as applied.
//! - An **error** ([`Error`], this module) means the node could not do its job: the disk failed, a file on disk
//!   does not decode, a snapshot or backup is damaged. Errors from [`crate::Store::apply`] are fatal for the
//!   node: the in-memory state may be ahead of the disk, so the store refuses further writes (see
//!   [`Error::Poisoned`]) and the process must restart and recover from its durable state.

use std::io;

/// A storage failure: I/O, on-disk corruption, or a damaged snapshot or backup.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O error, with what Tandem was doing when it happened.
    #[error("I/O error while {context}: {source} (check the disk, its free space and permissions)")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The embedded key-value engine (sled) failed.
    #[error("storage engine error while {context}: {message}")]
    Engine { context: String, message: String },
    /// Data on disk does not decode or contradicts itself. The data directory needs a restore from a backup
    /// or a re-sync from a peer.
    #[error("data directory is corrupt: {0} (restore it from a backup or re-join the node to its cluster)")]
    Corrupt(String),
    /// A snapshot stream or backup file is damaged, truncated, or of an unknown format.
    #[error("invalid snapshot or backup: {0}")]
    InvalidSnapshot(String),
    /// The caller asked for something that does not exist or cannot be done (e.g. a revision in the future).
    #[error("{0}")]
    InvalidRequest(String),
    /// What a long read (a snapshot being written) started from changed under it: an upload it was copying
    /// was committed as a duplicate or aborted meanwhile, and its parts are gone. Nothing is wrong with the
    /// store: start the read again.
    #[error("the store changed under a snapshot being written ({0}); build it again")]
    Stale(String),
    /// A revision before the history's start was asked for: `tandem history forget` removed it
    /// ([`crate::forget`]). `base` is the earliest revision whose configuration can still be read.
    #[error(
        "revision {revision} was forgotten (tandem history forget): the history now starts at revision {}; \
         the configuration can be read at revision {base} and after", .base.0 + 1
    )]
    Forgotten { revision: crate::Revision, base: crate::Revision },
    /// A previous write failed half-way; the in-memory state can no longer be trusted.
    #[error("the store refused the operation because an earlier write failed; restart the node")]
    Poisoned,
}

/// The storage crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    /// Wraps a sled error with what was being done.
    pub(crate) fn engine(context: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Error::Engine { context: context.into(), message: err.to_string() }
    }
}

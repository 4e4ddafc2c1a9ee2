//! Rejections: the deterministic "no" to a change set or a blob command.
//!
//! A rejection depends only on the command and the state it was decided against, never on the clock, the
//! node, or the disk. That makes it a legitimate *result* of applying a replicated log entry: every replica
//! rejects alike, so replicas never diverge. Each message says what was wrong and, where it helps, what to do.

use serde::{Deserialize, Serialize};

use crate::change::Revision;

/// Why a change set (or blob command) was not accepted. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// A collection name or document id is not acceptable.
    #[error("invalid {what} '{name}': {reason}")]
    InvalidName { what: String, name: String, reason: String },
    /// A document does not match its collection's schema.
    #[error("invalid document {key}: {reason}")]
    InvalidDocument { key: String, reason: String },
    /// Two terminals would share a MAC address.
    #[error("duplicate MAC {mac}: terminal {key} would share it with terminal {existing}")]
    DuplicateMac { mac: String, key: String, existing: String },
    /// A document references a document that does not exist.
    #[error(
        "{key} field '{field}' references {target}, which does not exist (create it first or in the same change set)"
    )]
    MissingReference { key: String, field: String, target: String },
    /// A document references a blob that was never uploaded, or with the wrong size.
    #[error("{key} field '{field}' references blob {digest}: {reason}")]
    BadBlobReference { key: String, field: String, digest: String, reason: String },
    /// A document cannot be deleted while others reference it.
    #[error(
        "cannot delete {key}: still referenced by {referrers} (change or delete those first, or in the same change set)"
    )]
    StillReferenced { key: String, referrers: String },
    /// A patch or delete named a document that does not exist.
    #[error("{key} does not exist")]
    NoSuchDocument { key: String },
    /// A patch or delete named a document that an earlier operation of the same change set deleted.
    #[error("{key} was deleted by an earlier operation of this change set")]
    DeletedInChangeSet { key: String },
    /// A precondition of the change set does not hold.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// An input exceeds a size limit. `unit` names what `size` and `limit` count (bytes, operations, …).
    #[error("{what} is too large: {size} {unit}, the limit is {limit}")]
    TooLarge { what: String, size: u64, limit: u64, unit: String },
    /// The change set has no operations.
    #[error("the change set has no operations")]
    Empty,
    /// A blob upload command does not fit the upload's state.
    #[error("blob upload {upload}: {reason}")]
    BadUpload { upload: u64, reason: String },
    /// A blob cannot be removed: the store has no such blob, or something still references it.
    #[error("cannot remove blob {digest}: {reason}")]
    BlobNotRemovable { digest: String, reason: String },
    /// `tandem history forget --before N` with N at or before the history's start: nothing left to forget.
    #[error(
        "nothing to forget before revision {before}: the history already starts at revision {first_kept}"
    )]
    NothingToForget { before: Revision, first_kept: Revision },
    /// `tandem history forget --before N` with N past the next revision: the future cannot be forgotten.
    #[error(
        "cannot forget history before revision {before}: the store is at revision {current}, so at most \
         everything before revision {} can be forgotten", .current.0 + 1
    )]
    ForgetFuture { before: Revision, current: Revision },
}

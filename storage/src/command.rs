//! Commands and outcomes: the store's state-machine interface.
//!
//! A replicated log carries [`Command`]s; [`crate::Store::apply`] turns each into an [`Outcome`]. The
//! determinism contract, which the cluster crate relies on:
//!
//! - the outcome of a command depends only on the command and the store's state, so every replica applying the
//!   same log computes the same outcomes and the same state;
//! - a [`Outcome::Rejected`] command is still *applied*: it changed nothing, and its rejection is the answer
//!   to return to the client;
//! - an `Err` from `apply` is never an outcome: it is an I/O failure that must stop the node.

use serde::{Deserialize, Serialize};

use crate::change::{ChangeMeta, ChangeSet, Revision};
use crate::digest::Digest;
use crate::legacy::ChangeSetV1;
use crate::rejection::Rejection;

/// One state-machine input.
///
/// The order of the variants is their bincode tag in the Raft log: never reorder them, only append.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// A configuration change as builds before the audit fields wrote it (read from old Raft logs; applied
    /// as a [`Command::Change`] without token and source). Nothing writes it any more.
    ChangeV1(ChangeSetV1),
    /// The next piece of a blob upload. `upload` is an id chosen by the uploader (unique per upload);
    /// `chunk` counts from 0 and must be the next one the upload expects.
    BlobChunk {
        upload: u64,
        chunk: u32,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Ends an upload: the bytes received must have this digest and size, or the upload is discarded.
    BlobCommit { upload: u64, digest: Digest, size: u64 },
    /// Discards an upload in progress.
    BlobAbort { upload: u64 },
    /// A configuration change.
    Change(ChangeSet),
    /// Deletes a committed blob that neither the configuration nor any event of the history references
    /// (`tandem blobs remove`); refused otherwise, alike on every replica ([`crate::blob_usage`]).
    BlobRemove { digest: Digest },
    /// Forgets the events before revision `before` (`tandem history forget`): the history then starts at
    /// `before`, from the configuration at `before - 1` (the base). Recorded as an event of its own, with
    /// `meta`'s actor and reason, in `cluster_events` ([`crate::forget`]).
    ForgetHistory { before: Revision, meta: ChangeMeta },
}

/// What applying one command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The change set became the event with this revision.
    Accepted { revision: Revision },
    /// A change set with the same request id was accepted earlier, as this revision; nothing was appended.
    Duplicate { revision: Revision },
    /// The command was refused; nothing changed.
    Rejected(Rejection),
    /// A blob chunk was stored; the upload now holds this many bytes.
    ChunkStored { upload: u64, size: u64 },
    /// The blob is committed (or was already present) and may be referenced.
    BlobCommitted { digest: Digest, size: u64 },
    /// The upload was discarded.
    UploadAborted { upload: u64 },
    /// The blob was removed (its file goes once that is durable).
    BlobRemoved { digest: Digest, size: u64 },
    /// The events before `before` were forgotten (`events` of them), and the forget recorded as the event
    /// at `revision`.
    HistoryForgotten { before: Revision, events: u64, revision: Revision },
}

impl Outcome {
    /// The revision a change set landed at, if it did.
    pub fn revision(&self) -> Option<Revision> {
        match self {
            Outcome::Accepted { revision }
            | Outcome::Duplicate { revision }
            | Outcome::HistoryForgotten { revision, .. } => Some(*revision),
            _ => None,
        }
    }
}

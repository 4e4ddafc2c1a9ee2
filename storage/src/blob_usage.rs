//! Which blobs the configuration uses, and removing the ones nothing uses.
//!
//! A blob (a firmware image, a kernel, a module) is kept while anything may need its bytes:
//! - **in use**: a document of the current configuration references it (`firmware.blob`, `kernel`,
//!   `initrd`, `modules.blob`): terminals boot from it;
//! - **in the history**: an event of the history references it, or the configuration at the history's base
//!   does (after `tandem history forget`, [`crate::forget`]): `tandem revert` or `undo` to that revision
//!   would need it again, and a revision must stay restorable;
//! - otherwise it is **unreferenced**: uploaded and never referenced by any change (an upload whose change
//!   set was never sent, `tandem firmware add` interrupted between the upload and the document, a `POST
//!   /v1/blobs` by hand). Such a blob costs disk and snapshot and backup bytes for nothing.
//!
//! [`Store::blob_usage`] reports every blob with what references it (a scan of the history: for listings,
//! not for every status call); [`Store::unreferenced_blob_count`] is the cheap count of blobs the current
//! configuration does not use (`tandem status`).
//!
//! **Removal** is a replicated command, [`crate::Command::BlobRemove`], so every replica deletes the same
//! blob at the same log position; it is applied only for a blob that is neither in use nor in the history,
//! checked again at apply time on every replica (the same projection and history give the same answer), and
//! refused otherwise with the documents or revisions that still reference it. A blob only old revisions
//! reference becomes removable once the history before them is forgotten (`tandem history forget`,
//! [`crate::forget`]). Within one apply batch the check also sees the events accepted earlier in the batch
//! (not on disk yet), so that every replica answers alike however its log was cut into batches.
//!
//! **Durability of a removal**: the blob's record leaves sled in the command's batch; its file is deleted
//! only after sled durably forgot it ([`Store::durable`]), and not at all if the same bytes were committed
//! again meanwhile. A crash in between leaves a file no record names, which is harmless: the next commit of
//! the same content reuses it (see [`crate::blob_files`]). A snapshot being written while a blob it lists is
//! removed reports the snapshot as stale ([`crate::Error::Stale`]) instead of failing the node, and the next
//! one does not list it.

use crate::Outcome;
use crate::change::Revision;
use crate::digest::Digest;
use crate::engine::WriteBatch;
use crate::error::Result;
use crate::forget::blobs_used_by;
use crate::keys;
use crate::rejection::Rejection;
use crate::store::Store;

/// At most this many referencing revisions are listed per blob (the count is always exact).
const MAX_LISTED_REVISIONS: usize = 20;

/// One blob and what references it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BlobUsage {
    pub digest: Digest,
    pub size: u64,
    /// Documents of the current configuration that reference it (`collection/id`).
    pub in_use_by: Vec<String>,
    /// How many events of the history reference it (the configuration at the history's base counting as
    /// one, at the base's revision), and the newest few of them.
    pub history_references: usize,
    pub history_revisions: Vec<Revision>,
}

impl BlobUsage {
    /// Neither in use nor in the history: `tandem blobs remove` may delete it.
    pub fn removable(&self) -> bool {
        self.in_use_by.is_empty() && self.history_references == 0
    }
}

impl Store {
    /// Every committed blob with what references it, in digest order. Reads the whole history.
    pub fn blob_usage(&self) -> Result<Vec<BlobUsage>> {
        let mut in_use = blobs_used_by(&self.state.projection);
        let mut history = self.blob_references(self.state.base, None)?;
        Ok(self
            .state
            .blobs
            .iter()
            .map(|(digest, meta)| {
                let revisions = history.remove(digest).unwrap_or_default();
                BlobUsage {
                    digest: *digest,
                    size: meta.size,
                    in_use_by: in_use.remove(digest).unwrap_or_default().into_iter().collect(),
                    history_references: revisions.len(),
                    history_revisions: revisions.iter().rev().take(MAX_LISTED_REVISIONS).copied().collect(),
                }
            })
            .collect())
    }

    /// How many committed blobs, and how many bytes, the current configuration does not reference (some of
    /// them may still be in the history: [`Store::blob_usage`] tells). Cheap: no history is read, no document
    /// parsed.
    pub fn unreferenced_blob_count(&self) -> (usize, u64) {
        let in_use = blobs_used_by(&self.state.projection);
        self.state
            .blobs
            .iter()
            .filter(|(digest, _)| !in_use.contains_key(digest))
            .fold((0, 0), |(count, bytes), (_, meta)| (count + 1, bytes + meta.size))
    }

    /// Applies [`crate::Command::BlobRemove`]: refused (nothing changes) unless the blob exists and nothing
    /// references it; otherwise its record leaves sled in `batch` and its file goes at the next durable.
    pub(crate) fn apply_blob_remove(&mut self, digest: Digest, batch: &mut WriteBatch) -> Result<Outcome> {
        let refuse = |reason: String| {
            Ok(Outcome::Rejected(Rejection::BlobNotRemovable { digest: digest.to_string(), reason }))
        };
        let Some(size) = self.state.blobs.get(&digest).map(|meta| meta.size) else {
            return refuse("the store has no such blob".into());
        };
        if let Some(documents) = blobs_used_by(&self.state.projection).remove(&digest) {
            let documents: Vec<String> = documents.into_iter().collect();
            return refuse(format!("in use by {} (change those documents first)", documents.join(", ")));
        }
        if let Some(revisions) = self.blob_references(self.state.base, Some(&digest))?.remove(&digest) {
            let listed: Vec<String> =
                revisions.iter().rev().take(MAX_LISTED_REVISIONS).map(|r| r.0.to_string()).collect();
            return refuse(format!(
                "the history references it at {} revision(s) (newest: {}); `tandem revert` to those must stay possible \
                 (unless the history before them is forgotten first: `tandem history forget`)",
                revisions.len(),
                listed.join(", ")
            ));
        }
        batch.delete(keys::blob(&digest));
        self.state.blobs.remove(&digest);
        Ok(Outcome::BlobRemoved { digest, size })
    }

    /// After the batch of `outcomes` is written: the files of the blobs it removed (and did not commit
    /// again) go at the next durable. Not before the write: a flush that began in between would not hold
    /// the removal, yet delete the file.
    pub(crate) fn schedule_removed_files(&self, outcomes: &[Outcome]) {
        let mut removed = self.removed_blobs.lock().unwrap_or_else(|p| p.into_inner());
        for outcome in outcomes {
            if let Outcome::BlobRemoved { digest, .. } = outcome
                && !self.state.blobs.contains_key(digest)
            {
                removed.schedule(*digest);
            }
        }
    }
}

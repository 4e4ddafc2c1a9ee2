//! Which blobs the configuration uses, and removing the ones nothing uses.
//!
//! A blob (a firmware image, a kernel, a module) is kept while anything may need its bytes:
//! - **in use**: a document of the current configuration references it (`firmware.blob`, `kernel`,
//!   `initrd`, `modules.blob`): terminals boot from it;
//! - **in the history**: an event of the history references it: `tandem revert` or `undo` to that revision
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
//! refused otherwise with the documents or revisions that still reference it. What is *not* offered:
//! removing a blob the history references by forgetting history before a revision — the hash chain
//! ([`crate::chain`]) would need a new genesis and every backup a way to say where history starts.
//!
//! **Durability of a removal**: the blob's record leaves sled in the command's batch; its file is deleted
//! only after sled durably forgot it ([`Store::durable`]), and not at all if the same bytes were committed
//! again meanwhile. A crash in between leaves a file no record names, which is harmless: the next commit of
//! the same content reuses it (see [`crate::blob_files`]). A snapshot being written while a blob it lists is
//! removed reports the snapshot as stale ([`crate::Error::Stale`]) instead of failing the node, and the next
//! one does not list it.

use std::collections::{BTreeMap, BTreeSet};

use crate::Outcome;
use crate::change::Revision;
use crate::collections::{FIRMWARE, MODULES, links_of_text};
use crate::digest::Digest;
use crate::engine::WriteBatch;
use crate::error::Result;
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
    /// How many events of the history reference it, and the newest few of them.
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
        let mut in_use = self.blobs_in_use();
        let mut history = self.history_blob_references(None)?;
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
        let in_use = self.blobs_in_use();
        self.state
            .blobs
            .iter()
            .filter(|(digest, _)| !in_use.contains_key(digest))
            .fold((0, 0), |(count, bytes), (_, meta)| (count + 1, bytes + meta.size))
    }

    /// The blobs documents of the current configuration reference, with those documents.
    fn blobs_in_use(&self) -> BTreeMap<Digest, BTreeSet<String>> {
        let mut in_use: BTreeMap<Digest, BTreeSet<String>> = BTreeMap::new();
        for collection in [FIRMWARE, MODULES] {
            // The projection keeps each document's links (parsed once, when it was applied).
            for (key, _) in self.state.projection.collection(collection) {
                for (_, digest, _) in
                    self.state.projection.links(key).map(|l| l.blobs.as_slice()).unwrap_or_default()
                {
                    in_use.entry(*digest).or_default().insert(format!("{collection}/{}", key.id));
                }
            }
        }
        in_use
    }

    /// For each blob (or only `only`), the revisions whose events reference it, oldest first.
    fn history_blob_references(&self, only: Option<&Digest>) -> Result<BTreeMap<Digest, Vec<Revision>>> {
        let mut references: BTreeMap<Digest, Vec<Revision>> = BTreeMap::new();
        for event in self.events(Revision(1), self.revision()) {
            let event = event?;
            for change in &event.changes {
                let collection = change.key.collection.as_str();
                let (Some(after), true) = (&change.after, collection == FIRMWARE || collection == MODULES)
                else {
                    continue;
                };
                for (_, digest, _) in links_of_text(collection, after).blobs {
                    if only.is_none_or(|only| *only == digest) {
                        let revisions = references.entry(digest).or_default();
                        if revisions.last() != Some(&event.revision) {
                            revisions.push(event.revision);
                        }
                    }
                }
            }
        }
        Ok(references)
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
        if let Some(documents) = self.blobs_in_use().remove(&digest) {
            let documents: Vec<String> = documents.into_iter().collect();
            return refuse(format!("in use by {} (change those documents first)", documents.join(", ")));
        }
        if let Some(revisions) = self.history_blob_references(Some(&digest))?.remove(&digest) {
            let listed: Vec<String> =
                revisions.iter().rev().take(MAX_LISTED_REVISIONS).map(|r| r.0.to_string()).collect();
            return refuse(format!(
                "the history references it at {} revision(s) (newest: {}); `tandem revert` to those must stay possible",
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

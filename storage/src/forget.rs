//! Forgetting history before a revision: `tandem history forget --before R`, like etcd's compaction.
//!
//! History is kept so that any past configuration can be shown, compared and restored, and every blob a
//! past revision references is kept for it ([`crate::blob_usage`]). Firmware images are large; after
//! a few years the history holds gigabytes nobody will revert to. Forgetting lets an operator say "nothing
//! before R matters any more", after which the history **starts at R**:
//!
//! - the events `base+1 … R-1` are deleted (`base` being where the history started before: 0 at first);
//! - the configuration at `R-1` becomes the new **base**: a checkpoint at `R-1` holds it, so
//!   [`Store::state_at`] works at `R-1` and after, and refuses anything earlier with
//!   [`Error::Forgotten`], which names the first revision still kept;
//! - the chain hash of `R-1` becomes the **base hash** ([`crate::chain`]): the first kept event links to it
//!   as before, so `hash(n)` for every `n ≥ R` is unchanged and still equal on every member;
//! - blobs that only forgotten events referenced — neither the configuration, nor a kept event, nor the
//!   configuration at the base — become removable with `tandem blobs remove`.
//!
//! ## A replicated command that leaves a trace
//! [`crate::Command::ForgetHistory`] goes through the Raft log like a change, and every replica applies it
//! to the same state with the same result: the same events go, the same base and base hash remain. The
//! forget is **recorded as an event** — a document `cluster_events/history-forget-{revision}` saying what
//! was forgotten (the revision the history starts at, the base hash, how many events), with the actor,
//! token, source and reason of the request — appended at the next revision, so it is itself in the hash
//! chain, listed first-class by `tandem history`, and never forgotten by the forget that wrote it (its
//! revision is at least `R`). The record also holds the SHA-256 of the configuration at the base (of its
//! checkpoint's bytes): the base's events are gone, but the record, which is in the chain, commits to the
//! state they led to, and [`crate::chain::ChainView::verify`] and a snapshot install check the stored base
//! against it. Recording it as a document of `cluster_events` rather than as a new kind of
//! event keeps the event format, replay, snapshots and `history verify` unchanged; plans (revert, undo,
//! import) never touch `cluster_events`, so no revert can erase the record.
//!
//! ## Rules
//! - `R ≤ current revision + 1` (forgetting everything so far is allowed; the future is refused with
//!   [`Rejection::ForgetFuture`]).
//! - `R > base + 1`: with `R` at or before the history's start nothing would be forgotten, and the command
//!   is refused with [`Rejection::NothingToForget`] (it writes no record). The API answers that as
//!   `unchanged`, so forgetting "before R" twice is harmless.
//!
//! ## One batch
//! Everything — the record event, the deleted events and checkpoints below the base, the request ids of
//! forgotten events (a snapshot, which holds only kept events, could not bring them back, so a member
//! installed from one would decide a retried request differently), the checkpoint at the base, the new
//! base and base hash — goes into the apply's one atomic [`WriteBatch`] ([`crate::store`]): after a crash
//! the forget happened entirely or not at all, and the log replays it. Rebuilding the store from a
//! snapshot and the log reproduces it: a snapshot carries the base ([`crate::snapshot`]), and a forget
//! later in the log is applied again, to the same state.
//!
//! A forget in the same apply batch as the events it forgets works too: those events are still in the
//! batch, not on disk, and are read from there (`Store::batch_events`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::Outcome;
use crate::chain::read_events;
use crate::change::{ChangeMeta, ChangeSet, DocKey, Revision};
use crate::checkpoint::write_checkpoint;
use crate::collections::{FIRMWARE, MODULES, links_of_text};
use crate::digest::Digest;
use crate::engine::WriteBatch;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::keys::{self, Meta};
use crate::plan::CLUSTER_EVENTS;
use crate::projection::{Projection, StoredDocument};
use crate::rejection::Rejection;
use crate::store::Store;

/// The id prefix of the `cluster_events` documents that record a forget (`history-forget-{revision}`).
pub const RECORD_PREFIX: &str = "history-forget-";

/// What forgetting before a revision would do (the preview `tandem history forget` shows).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForgetPreview {
    /// The first revision the history would keep.
    pub before: Revision,
    /// Where the history starts now (the first kept revision).
    pub first_kept_now: Revision,
    /// How many events would be forgotten.
    pub events: u64,
    /// The blobs that nothing would reference any more (removable with `tandem blobs remove`), with sizes.
    pub removable_blobs: Vec<(Digest, u64)>,
}

/// The SHA-256 of the configuration at a base: of the bytes of its checkpoint ([`write_checkpoint`]), the
/// bincode list of every document in key order.
pub(crate) fn base_digest(projection: &Projection) -> Digest {
    let documents: Vec<(&DocKey, &StoredDocument)> = projection.documents().collect();
    Digest::from(Sha256::new_with_prefix(crate::codec::encode(&documents)))
}

/// The base digest that the forget which made `base` recorded, if its record is in `projection` (a change
/// could have deleted it: `cluster_events` is not protected from explicit deletes).
pub(crate) fn recorded_base_digest(projection: &Projection, base: Revision) -> Option<Digest> {
    projection
        .collection(CLUSTER_EVENTS)
        .filter(|(key, _)| key.id.starts_with(RECORD_PREFIX))
        .map(|(_, document)| document.value())
        .find(|record| record["base_revision"] == base.0)
        .and_then(|record| record["base_documents_sha256"].as_str().and_then(|hex| Digest::parse(hex).ok()))
}

/// The blobs the documents of `projection` reference (firmware and modules), with those documents.
pub(crate) fn blobs_used_by(projection: &Projection) -> BTreeMap<Digest, BTreeSet<String>> {
    let mut in_use: BTreeMap<Digest, BTreeSet<String>> = BTreeMap::new();
    for collection in [FIRMWARE, MODULES] {
        // The projection keeps each document's links (parsed once, when it was inserted).
        for (key, _) in projection.collection(collection) {
            for (_, digest, _) in projection.links(key).map(|l| l.blobs.as_slice()).unwrap_or_default() {
                in_use.entry(*digest).or_default().insert(format!("{collection}/{}", key.id));
            }
        }
    }
    in_use
}

impl Store {
    /// The revision the history starts after: events at or below it were forgotten (0: none were).
    pub fn base(&self) -> Revision {
        self.state.base
    }

    /// The chain hash of [`Store::base`], which the first kept event links to (the genesis hash at 0).
    pub fn base_hash(&self) -> Digest {
        self.state.base_hash
    }

    /// A detached view of the hash chain at the current revision, to verify or read without the store. It
    /// knows the base, its hash, and the digest of the base configuration that the forget recorded.
    pub fn chain(&self) -> crate::chain::ChainView {
        crate::chain::ChainView {
            space: self.space.clone(),
            revision: self.revision(),
            head: self.state.head,
            base: self.state.base,
            base_hash: self.state.base_hash,
            base_digest: recorded_base_digest(&self.state.projection, self.state.base),
        }
    }

    /// What [`crate::Command::ForgetHistory`] with `before` would do now, or why it would be refused.
    /// Reads the history after the new base (for the blobs).
    pub fn forget_preview(&self, before: Revision) -> Result<std::result::Result<ForgetPreview, Rejection>> {
        if let Some(rejection) = self.forget_refusal(before) {
            return Ok(Err(rejection));
        }
        let base = Revision(before.0 - 1);
        let referenced = self.blob_references(base, None)?;
        let in_use = blobs_used_by(&self.state.projection);
        let removable_blobs = self
            .state
            .blobs
            .iter()
            .filter(|(digest, _)| !referenced.contains_key(digest) && !in_use.contains_key(digest))
            .map(|(digest, meta)| (*digest, meta.size))
            .collect();
        Ok(Ok(ForgetPreview {
            before,
            first_kept_now: self.state.base.next(),
            events: base.0 - self.state.base.0,
            removable_blobs,
        }))
    }

    fn forget_refusal(&self, before: Revision) -> Option<Rejection> {
        let first_kept = self.state.base.next();
        if before <= first_kept {
            return Some(Rejection::NothingToForget { before, first_kept });
        }
        if before > self.revision().next() {
            return Some(Rejection::ForgetFuture { before, current: self.revision() });
        }
        None
    }

    /// Applies [`crate::Command::ForgetHistory`] into `batch` (see the module documentation).
    pub(crate) fn apply_forget(
        &mut self,
        before: Revision,
        meta: &ChangeMeta,
        new_requests: &mut std::collections::HashMap<String, Revision>,
        batch: &mut WriteBatch,
    ) -> Result<Outcome> {
        if let Some(rejection) = self.forget_refusal(before) {
            return Ok(Outcome::Rejected(rejection));
        }
        let old_base = self.state.base;
        let base = Revision(before.0 - 1);
        // Read before anything changes: the configuration and the chain hash at the new base.
        let base_hash = self.hash_during_apply(base)?;
        let base_state = self.state_during_apply(base)?;
        let events = base.0 - old_base.0;
        let record_revision = self.revision().next();
        let record = ChangeSet::new(meta.clone()).put(
            CLUSTER_EVENTS,
            &format!("{RECORD_PREFIX}{record_revision}"),
            json!({"event": "history_forgotten", "history_starts_at": before.0, "base_revision": base.0,
                   "base_hash": base_hash.to_string(), "previous_base": old_base.0,
                   "events_forgotten": events, "documents_at_base": base_state.len(),
                   "base_documents_sha256": base_digest(&base_state).to_string()}),
        );
        match self.apply_change(&record, new_requests, batch)? {
            Outcome::Accepted { .. } => {}
            // A retried request (same request id) or a record the limits refuse: nothing is forgotten.
            other => return Ok(other),
        }

        // The forgotten events, the checkpoints below the base, the request ids of forgotten events.
        self.delete_range(batch, &keys::event(old_base.next(), 0), &keys::event(before, 0))?;
        self.delete_range(batch, &[keys::CHECKPOINTS], &keys::checkpoint(base, 0))?;
        for item in self.space.scan(&[keys::REQUESTS], Some(&[keys::REQUESTS + 1]), false) {
            let (key, value) = item?;
            let revision = <[u8; 8]>::try_from(value.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| Error::Corrupt("a request id entry is not 8 bytes".into()))?;
            if revision <= base.0 {
                batch.delete(key);
            }
        }
        new_requests.retain(|request_id, revision| {
            let forgotten = *revision <= base;
            if forgotten {
                batch.delete(keys::request(request_id));
            }
            !forgotten
        });

        write_checkpoint(batch, &base_state);
        batch.put(Meta::Base.key(), base.0.to_be_bytes().to_vec());
        batch.put(Meta::BaseHash.key(), base_hash.0.to_vec());
        self.state.base = base;
        self.state.base_hash = base_hash;
        self.last_checkpoint = self.last_checkpoint.max(base);
        self.batch_events.retain(|(event, _)| event.revision > base);
        Ok(Outcome::HistoryForgotten { before, events, revision: record_revision })
    }

    /// Deletes every key in `start..end`: the batch's own writes there, and what is on disk.
    fn delete_range(&self, batch: &mut WriteBatch, start: &[u8], end: &[u8]) -> Result<()> {
        batch.drop_range(start, end);
        for item in self.space.scan(start, Some(end), false) {
            let (key, _) = item?;
            batch.delete(key);
        }
        Ok(())
    }

    /// The chain hash of `revision` (at the base or after), also while a batch is being applied.
    fn hash_during_apply(&self, revision: Revision) -> Result<Digest> {
        if revision == self.state.base {
            return Ok(self.state.base_hash);
        }
        if revision == self.revision() {
            return Ok(self.state.head);
        }
        if let Some((_, hash)) = self.batch_events.iter().find(|(event, _)| event.revision == revision) {
            return Ok(*hash);
        }
        let first_part = self
            .space
            .get(&keys::event(revision, 0))?
            .ok_or_else(|| Error::Corrupt(format!("event {revision} is missing from the history")))?;
        Ok(crate::chain::split_stored(&first_part, revision.0)?.0)
    }

    /// The configuration at `revision` (at the base or after), also while a batch is being applied: from
    /// disk up to where the batch began, then the batch's own events.
    pub(crate) fn state_during_apply(&self, revision: Revision) -> Result<Projection> {
        if revision == self.revision() {
            return Ok(self.state.projection.clone());
        }
        let mut projection = self.replay_on_disk(revision.min(self.batch_start))?;
        for (event, _) in &self.batch_events {
            if event.revision > projection.revision() && event.revision <= revision {
                projection.apply(event)?;
            }
        }
        Ok(projection)
    }

    /// For each blob (or only `only`), the revisions that reference it, oldest first, counting history
    /// after `base`: the configuration at `base` (listed as revision `base`, when not 0; `revert --to` it
    /// must keep working) and every event after it, also those of a batch being applied.
    pub(crate) fn blob_references(
        &self,
        base: Revision,
        only: Option<&Digest>,
    ) -> Result<BTreeMap<Digest, Vec<Revision>>> {
        let mut references: BTreeMap<Digest, Vec<Revision>> = BTreeMap::new();
        let mut note = |digest: Digest, revision: Revision| {
            if only.is_none_or(|only| *only == digest) {
                let revisions = references.entry(digest).or_default();
                if revisions.last() != Some(&revision) {
                    revisions.push(revision);
                }
            }
        };
        if base.0 > 0 {
            for digest in blobs_used_by(&self.state_during_apply(base)?).into_keys() {
                note(digest, base);
            }
        }
        let on_disk = (base < self.batch_start)
            .then(|| read_events(self.space.as_ref(), base.next(), self.batch_start, false))
            .into_iter()
            .flatten();
        let in_batch = self.batch_events.iter().map(|(event, _)| Ok(event.clone()));
        for event in on_disk.chain(in_batch) {
            let event: Event = event?;
            if event.revision <= base {
                continue;
            }
            for change in &event.changes {
                let collection = change.key.collection.as_str();
                let (Some(after), true) = (&change.after, collection == FIRMWARE || collection == MODULES)
                else {
                    continue;
                };
                for (_, digest, _) in links_of_text(collection, after).blobs {
                    note(digest, event.revision);
                }
            }
        }
        Ok(references)
    }
}

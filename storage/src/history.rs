//! History: every event since the history's start, and the configuration as it was at any revision since.
//!
//! Events are immutable once written, so reading them needs no lock against concurrent writers. The history
//! starts after the store's *base* (revision 0 unless `tandem history forget` moved it, [`crate::forget`]):
//! events at or below the base are gone, and asking for a configuration before the base is refused with
//! [`Error::Forgotten`], which names where the history starts now.
//! [`Store::state_at`] loads the newest checkpoint at or below the revision and replays the events after it;
//! [`Store::diff`] compares two such states; [`Store::revert_to`] produces the change set that turns the
//! current configuration back into an earlier one. Applying that change set is a *new* event: history is never
//! rewritten, revisions only grow.

use std::collections::BTreeSet;

use crate::chain::read_events;
use crate::change::{ChangeMeta, ChangeSet, DocKey, Revision};
use crate::checkpoint::replay_from_disk;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::projection::{Projection, StoredDocument};
use crate::store::Store;

/// Which events to list.
#[derive(Clone, Debug, Default)]
pub struct HistoryFilter {
    /// Only events that touched this collection.
    pub collection: Option<String>,
    /// Only events that touched this document id (in any collection, or in `collection` if given).
    pub id: Option<String>,
    /// Only events by this actor.
    pub actor: Option<String>,
    /// Only events stamped at or after this time (milliseconds since the Unix epoch).
    pub since_ms: Option<u64>,
    /// Only events stamped before this time (milliseconds since the Unix epoch).
    pub until_ms: Option<u64>,
    /// The first revision to consider (inclusive; default 1).
    pub from: Option<Revision>,
    /// The last revision to consider (inclusive; default: the current one).
    pub to: Option<Revision>,
    /// At most this many events.
    pub limit: Option<usize>,
    /// Newest first (with `limit`: the last N events).
    pub newest_first: bool,
}

impl HistoryFilter {
    fn matches(&self, event: &Event) -> bool {
        if let Some(actor) = &self.actor
            && &event.meta.actor != actor
        {
            return false;
        }
        if self.since_ms.is_some_and(|since| event.meta.timestamp_ms < since)
            || self.until_ms.is_some_and(|until| event.meta.timestamp_ms >= until)
        {
            return false;
        }
        if self.collection.is_none() && self.id.is_none() {
            return true;
        }
        event.changes.iter().any(|change| {
            self.collection.as_ref().is_none_or(|c| &change.key.collection == c)
                && self.id.as_ref().is_none_or(|id| &change.key.id == id)
        })
    }
}

/// How one document differs between two revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffEntry {
    pub key: DocKey,
    /// The document at the first revision (None: it did not exist).
    pub before: Option<StoredDocument>,
    /// The document at the second revision (None: it did not exist).
    pub after: Option<StoredDocument>,
}

/// What kind of difference a [`DiffEntry`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiffKind {
    Created,
    Changed,
    Deleted,
}

impl DiffEntry {
    pub fn kind(&self) -> DiffKind {
        match (&self.before, &self.after) {
            (None, _) => DiffKind::Created,
            (_, None) => DiffKind::Deleted,
            _ => DiffKind::Changed,
        }
    }
}

impl Store {
    /// One event (`None` for 0, a revision not reached yet, or a forgotten one: see [`Store::base`]).
    pub fn event(&self, revision: Revision) -> Result<Option<Event>> {
        if revision <= self.state.base || revision > self.revision() {
            return Ok(None);
        }
        read_events(self.space.as_ref(), revision, revision, false).next().transpose()
    }

    /// Events `from..=to` in revision order (the current revision if `to` is past it; the first kept one if
    /// `from` was forgotten).
    pub fn events(&self, from: Revision, to: Revision) -> impl Iterator<Item = Result<Event>> + '_ {
        read_events(self.space.as_ref(), from.max(self.state.base.next()), to.min(self.revision()), false)
    }

    /// The events matching `filter` (from the history's start: forgotten events are not listed).
    pub fn history(&self, filter: &HistoryFilter) -> Result<Vec<Event>> {
        let from = filter.from.unwrap_or(Revision(1)).max(self.state.base.next());
        let to = filter.to.unwrap_or(self.revision()).min(self.revision());
        let limit = filter.limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        if from > to || limit == 0 {
            return Ok(out);
        }
        for event in read_events(self.space.as_ref(), from, to, filter.newest_first) {
            let event = event?;
            if filter.matches(&event) {
                out.push(event);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The whole configuration as it was right after `revision` (0: empty), at the base or after it.
    pub fn state_at(&self, revision: Revision) -> Result<Projection> {
        if revision > self.revision() {
            return Err(Error::InvalidRequest(format!(
                "revision {revision} does not exist yet: the store is at revision {}",
                self.revision()
            )));
        }
        if revision < self.state.base {
            return Err(Error::Forgotten { revision, base: self.state.base });
        }
        if revision == self.revision() {
            return Ok(self.state.projection.clone());
        }
        self.replay_on_disk(revision)
    }

    /// The configuration at `revision` from what is on disk: the newest checkpoint at or below it (a forget
    /// leaves one at the base) and the events after it. [`Store::state_at`] without its checks, for a command
    /// of a batch being applied (the base in memory may be ahead of the disk then).
    pub(crate) fn replay_on_disk(&self, revision: Revision) -> Result<Projection> {
        replay_from_disk(self.space.as_ref(), revision)
    }

    /// One document as it was right after `revision`.
    pub fn get_at(&self, key: &DocKey, revision: Revision) -> Result<Option<StoredDocument>> {
        Ok(self.state_at(revision)?.get(key).cloned())
    }

    /// Every document that differs between revisions `a` and `b`, in key order.
    pub fn diff(&self, a: Revision, b: Revision) -> Result<Vec<DiffEntry>> {
        Ok(diff_projections(&self.state_at(a)?, &self.state_at(b)?))
    }

    /// The change set that makes the current configuration equal to the one at `revision` (leaving
    /// `cluster_events` alone), or `None` when they are already equal: [`Store::revert_plan`] as a change set.
    /// It requires the store to still be at the current revision when applied, so a change that slips in
    /// between is not silently overwritten.
    pub fn revert_to(&self, revision: Revision, meta: ChangeMeta) -> Result<Option<ChangeSet>> {
        let plan = self.revert_plan(revision)?;
        Ok((!plan.is_empty()).then(|| plan.change_set(meta)))
    }
}

/// Compares two projections document by document.
pub fn diff_projections(a: &Projection, b: &Projection) -> Vec<DiffEntry> {
    let keys: BTreeSet<&DocKey> =
        a.documents().map(|(k, _)| k).chain(b.documents().map(|(k, _)| k)).collect();
    keys.into_iter()
        .filter_map(|key| {
            let before = a.get(key);
            let after = b.get(key);
            let same = match (before, after) {
                (Some(x), Some(y)) => x.body == y.body,
                (None, None) => true,
                _ => false,
            };
            (!same).then(|| DiffEntry { key: key.clone(), before: before.cloned(), after: after.cloned() })
        })
        .collect()
}

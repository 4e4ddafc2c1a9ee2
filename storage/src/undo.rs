//! Going back: revert the configuration to a past revision, or undo one change set.
//!
//! Both produce a [`Plan`] that is applied as a *new* event; history is never rewritten and revisions only
//! grow.
//!
//! - **Revert to N** ([`Store::revert_plan`]): every document becomes what it was right after revision N —
//!   changed back, re-created, or deleted if it did not exist then.
//! - **Undo N** ([`Store::undo_plan`]): only the documents event N touched go back to their state right
//!   before N (the old body, or deleted if N created them). Everything else stays. That is only safe if no
//!   later event touched those documents: undoing then would silently throw away the later change too. So
//!   undo refuses, naming each such document and the revision that last changed it, and points to revert,
//!   which says plainly that it takes the *whole* configuration back.
//!
//! Neither touches [`CLUSTER_EVENTS`](crate::plan::CLUSTER_EVENTS), the cluster's own records.

use std::collections::BTreeMap;

use crate::change::{DocKey, Revision};
use crate::error::Error;
use crate::plan::{Plan, is_configuration};
use crate::store::Store;

/// Why a change set cannot be undone. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum UndoError {
    /// The revision is 0 or past the store's revision.
    #[error("there is no change set with revision {revision} to undo: the store is at revision {current}")]
    NoSuchRevision { revision: Revision, current: Revision },
    /// A later event touched documents of the change set.
    #[error(
        "cannot undo revision {revision}: {} changed again later ({}); undoing it would discard those changes too. {}",
        plural(.conflicts.len()), describe(.conflicts), instead(*.revision)
    )]
    ChangedLater { revision: Revision, conflicts: Vec<(DocKey, Revision)> },
    /// The event only records the cluster's own history (a forced recovery), which is not configuration.
    #[error(
        "revision {0} records a cluster event (cluster_events), not a configuration change: it cannot be undone"
    )]
    NotConfiguration(Revision),
    /// Reading the history failed.
    #[error(transparent)]
    Storage(#[from] Error),
}

fn plural(count: usize) -> String {
    if count == 1 { "1 of its documents was".into() } else { format!("{count} of its documents were") }
}

fn instead(revision: Revision) -> String {
    let undo_later = "undo the later change sets first, newest first";
    match revision.0 {
        0 | 1 => format!("Instead, {undo_later}."),
        n => format!(
            "Instead, {undo_later}, or take the whole configuration back to before it with `tandem revert --to {}`.",
            n - 1
        ),
    }
}

fn describe(conflicts: &[(DocKey, Revision)]) -> String {
    let mut parts: Vec<String> =
        conflicts.iter().take(10).map(|(key, revision)| format!("{key} at revision {revision}")).collect();
    if conflicts.len() > 10 {
        parts.push(format!("and {} more", conflicts.len() - 10));
    }
    parts.join(", ")
}

impl Store {
    /// The plan that makes the configuration what it was right after `revision` (0: empty), leaving
    /// `cluster_events` alone.
    pub fn revert_plan(&self, revision: Revision) -> Result<Plan, Error> {
        let target = self.state_at(revision)?;
        Ok(Plan::to_match(
            self.projection(),
            target.documents().map(|(key, document)| (key.clone(), document.value())),
        ))
    }

    /// The plan that undoes the event `revision`: each document it touched goes back to its state right
    /// before it. Refused when a later event touched any of them (see the module documentation).
    pub fn undo_plan(&self, revision: Revision) -> Result<Plan, UndoError> {
        let current = self.revision();
        if revision.0 > 0 && revision <= self.base() {
            return Err(UndoError::Storage(Error::Forgotten { revision, base: self.base() }));
        }
        let event = match revision.0 {
            0 => None,
            _ => self.event(revision)?,
        };
        let event = event.ok_or(UndoError::NoSuchRevision { revision, current })?;
        let keys: Vec<&DocKey> =
            event.changes.iter().map(|c| &c.key).filter(|key| is_configuration(&key.collection)).collect();
        if keys.is_empty() {
            return Err(UndoError::NotConfiguration(revision));
        }

        // The projection answers most cases: a live document's mod revision is the last event that touched
        // it. A document that is absent now may have been re-created and deleted again since; only the
        // history can tell, and it is read only then.
        let mut conflicts: BTreeMap<DocKey, Revision> = BTreeMap::new();
        let mut absent_now: Vec<&DocKey> = Vec::new();
        for key in &keys {
            match self.get(key) {
                Some(document) if document.mod_revision != revision => {
                    conflicts.insert((*key).clone(), document.mod_revision);
                }
                Some(_) => {}
                None => absent_now.push(key),
            }
        }
        if !absent_now.is_empty() && revision < current {
            for later in self.events(revision.next(), current) {
                let later = later?;
                for key in &absent_now {
                    if later.touches(key) {
                        conflicts.insert((*key).clone(), later.revision);
                    }
                }
            }
        }
        if !conflicts.is_empty() {
            return Err(UndoError::ChangedLater { revision, conflicts: conflicts.into_iter().collect() });
        }

        let before = self.state_at(Revision(revision.0 - 1))?;
        Ok(Plan::new(
            self.projection(),
            keys.into_iter().map(|key| (key.clone(), before.get(key).map(|document| document.value()))),
        ))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::change::{ChangeMeta, ChangeSet};
    use crate::command::Outcome;
    use crate::plan::{CLUSTER_EVENTS, ChangeKind};

    fn meta(reason: &str) -> ChangeMeta {
        ChangeMeta { actor: "test".into(), reason: reason.into(), ..ChangeMeta::default() }
    }

    fn apply(store: &mut Store, change: ChangeSet) -> Revision {
        match store.apply_change_set(change).unwrap() {
            Outcome::Accepted { revision } => revision,
            other => panic!("not accepted: {other:?}"),
        }
    }

    fn body(store: &Store, collection: &str, id: &str) -> Option<serde_json::Value> {
        store.get(&DocKey::new(collection, id)).map(|d| d.value())
    }

    #[test]
    fn undo_restores_exactly_the_state_before_as_a_new_event() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        apply(&mut store, ChangeSet::new(meta("")).put("notes", "a", json!(1)).put("notes", "b", json!(1)));
        let target = apply(
            &mut store,
            ChangeSet::new(meta("bad")).put("notes", "a", json!(2)).delete("notes", "b").put(
                "notes",
                "c",
                json!(3),
            ),
        );
        apply(&mut store, ChangeSet::new(meta("")).put("notes", "unrelated", json!(0)));
        let before = store.state_at(Revision(1)).unwrap();

        let plan = store.undo_plan(target).unwrap();
        let kinds: Vec<(&str, ChangeKind)> = plan.changes.iter().map(|c| (c.id.as_str(), c.kind)).collect();
        assert_eq!(
            kinds,
            vec![("a", ChangeKind::Changed), ("b", ChangeKind::Created), ("c", ChangeKind::Deleted)]
        );
        let undone = apply(&mut store, plan.change_set(meta("undo")));
        assert_eq!(undone, Revision(4));
        for id in ["a", "b", "c"] {
            let key = DocKey::new("notes", id);
            assert_eq!(store.get(&key).map(|d| d.value()), before.get(&key).map(|d| d.value()), "{id}");
        }
        assert_eq!(body(&store, "notes", "unrelated"), Some(json!(0)));
        assert_eq!(store.event(target).unwrap().unwrap().meta.reason, "bad", "history is not rewritten");
    }

    #[test]
    fn undo_is_refused_when_a_later_change_touched_the_same_documents() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let first = apply(&mut store, ChangeSet::new(meta("")).put("notes", "a", json!(1)));
        let second = apply(&mut store, ChangeSet::new(meta("")).put("notes", "a", json!(2)));
        let error = store.undo_plan(first).unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, UndoError::ChangedLater { .. }));
        assert!(message.contains("notes/a at revision 2"), "{message}");
        assert!(message.contains("undo the later change sets first"), "{message}");
        assert!(!message.contains("revert --to"), "{message}");

        // A document deleted by the undone event, then re-created and deleted again: only history shows it.
        apply(&mut store, ChangeSet::new(meta("")).delete("notes", "a"));
        let deletion = store.revision();
        apply(&mut store, ChangeSet::new(meta("")).put("notes", "a", json!(9)));
        apply(&mut store, ChangeSet::new(meta("")).delete("notes", "a"));
        let message = store.undo_plan(deletion).unwrap_err().to_string();
        assert!(message.contains(&format!("notes/a at revision {}", store.revision())), "{message}");
        assert!(message.contains(&format!("tandem revert --to {}", deletion.0 - 1)), "{message}");
        assert!(store.undo_plan(store.revision()).is_ok());
        assert!(store.undo_plan(second).is_err());
    }

    #[test]
    fn undo_of_missing_revisions_and_cluster_records_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        apply(&mut store, ChangeSet::new(meta("")).put(CLUSTER_EVENTS, "epoch-1", json!({})));
        assert!(matches!(store.undo_plan(Revision(0)), Err(UndoError::NoSuchRevision { .. })));
        assert!(matches!(store.undo_plan(Revision(2)), Err(UndoError::NoSuchRevision { .. })));
        assert!(matches!(store.undo_plan(Revision(1)), Err(UndoError::NotConfiguration(_))));
    }

    #[test]
    fn revert_plans_the_configuration_at_a_revision_and_keeps_cluster_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        for i in 1..=6 {
            apply(&mut store, ChangeSet::new(meta("")).put("notes", &format!("n{}", i % 3), json!(i)));
        }
        apply(&mut store, ChangeSet::new(meta("")).delete("notes", "n0"));
        apply(&mut store, ChangeSet::new(meta("")).put(CLUSTER_EVENTS, "epoch-1", json!({})));
        let at_two = store.state_at(Revision(2)).unwrap();
        let plan = store.revert_plan(Revision(2)).unwrap();
        apply(&mut store, plan.change_set(meta("revert")));
        let now: Vec<_> = store
            .projection()
            .documents()
            .filter(|(k, _)| k.collection == "notes")
            .map(|(k, d)| (k.clone(), d.value()))
            .collect();
        let then: Vec<_> = at_two.documents().map(|(k, d)| (k.clone(), d.value())).collect();
        assert_eq!(now, then);
        assert!(store.get(&DocKey::new(CLUSTER_EVENTS, "epoch-1")).is_some());
        assert!(store.revert_plan(Revision(2)).unwrap().is_empty(), "reverting twice changes nothing");
        assert!(store.revert_plan(Revision(99)).is_err());
    }
}

//! Plans: the change set that moves documents to chosen target states, with a preview of what it will do.
//!
//! Revert, undo and import all work the same way. Each names, for some documents, the state they should be
//! in (a body, or "absent"): revert the configuration at an earlier revision, undo the state before one
//! event, import the documents of an export. [`Plan::new`] compares those targets with the current
//! [`Projection`] and keeps only what differs: one put per created or changed document, one delete per
//! removed one, and a [`PlannedChange`] per document for the preview an operator confirms.
//!
//! A plan remembers the revision it was computed at ([`Plan::base`]), and its change set
//! ([`Plan::change_set`]) requires the store to still be at that revision. What is applied is therefore
//! exactly what was previewed: a change that slips in between makes it fail with a precondition rejection,
//! and nothing is silently overwritten. Applying it is a *new* event; history is never rewritten.
//!
//! Plans never touch [`CLUSTER_EVENTS`], the cluster's own records (such as forced recoveries): they are not
//! configuration, and reverting or importing must not erase them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::change::{ChangeMeta, ChangeSet, DocKey, Json, Operation, Precondition, Revision};
use crate::history::DiffKind;
use crate::projection::Projection;

/// The collection holding this cluster's own records (forced recoveries): never exported, imported,
/// reverted or undone.
pub const CLUSTER_EVENTS: &str = "cluster_events";

/// Whether a collection is configuration that plans may change (everything but [`CLUSTER_EVENTS`]).
pub fn is_configuration(collection: &str) -> bool {
    collection != CLUSTER_EVENTS
}

/// What a plan does to one document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Created,
    Changed,
    Deleted,
}

impl ChangeKind {
    /// The lower-case name used in the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Changed => "changed",
            ChangeKind::Deleted => "deleted",
        }
    }
}

impl From<DiffKind> for ChangeKind {
    fn from(kind: DiffKind) -> Self {
        match kind {
            DiffKind::Created => ChangeKind::Created,
            DiffKind::Changed => ChangeKind::Changed,
            DiffKind::Deleted => ChangeKind::Deleted,
        }
    }
}

/// One line of a plan's preview.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedChange {
    pub collection: String,
    pub id: String,
    pub kind: ChangeKind,
    /// The size of the new document's compact JSON (0 for a deletion).
    pub bytes: u64,
}

/// The operations that move some documents to their target states, computed at one revision.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The revision of the projection the plan was computed against.
    pub base: Revision,
    /// Puts and deletes, in key order.
    pub operations: Vec<Operation>,
    /// One entry per operation, in the same order.
    pub changes: Vec<PlannedChange>,
}

impl Plan {
    /// Compares each target (`Some(body)`: the document should exist with this body; `None`: it should not
    /// exist) with `current` and keeps what differs. Targets in [`CLUSTER_EVENTS`] are ignored; a document
    /// named twice keeps its last target.
    pub fn new(current: &Projection, targets: impl IntoIterator<Item = (DocKey, Option<Value>)>) -> Plan {
        let targets: BTreeMap<DocKey, Option<Value>> =
            targets.into_iter().filter(|(key, _)| is_configuration(&key.collection)).collect();
        let mut plan = Plan { base: current.revision(), operations: Vec::new(), changes: Vec::new() };
        for (key, target) in targets {
            let existing = current.get(&key);
            let (kind, bytes) = match (&target, existing) {
                (None, None) => continue,
                (None, Some(_)) => (ChangeKind::Deleted, 0),
                (Some(value), Some(document)) if document.value() == *value => continue,
                (Some(value), existing) => {
                    let kind = if existing.is_some() { ChangeKind::Changed } else { ChangeKind::Created };
                    (kind, value.to_string().len() as u64)
                }
            };
            plan.changes.push(PlannedChange {
                collection: key.collection.clone(),
                id: key.id.clone(),
                kind,
                bytes,
            });
            let DocKey { collection, id } = key;
            plan.operations.push(match target {
                Some(value) => Operation::Put { collection, id, document: Json(value) },
                None => Operation::Delete { collection, id },
            });
        }
        plan
    }

    /// The plan that makes the configuration of `current` equal to `target` (every document of `target`
    /// with its body, every other document of `current` deleted), [`CLUSTER_EVENTS`] aside.
    pub fn to_match(current: &Projection, target: impl IntoIterator<Item = (DocKey, Value)>) -> Plan {
        let mut targets: BTreeMap<DocKey, Option<Value>> = current
            .documents()
            .filter(|(key, _)| is_configuration(&key.collection))
            .map(|(key, _)| (key.clone(), None))
            .collect();
        targets.extend(target.into_iter().map(|(key, value)| (key, Some(value))));
        Plan::new(current, targets)
    }

    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// The change set to apply: the plan's operations, on condition that the store is still at
    /// [`Plan::base`].
    pub fn change_set(&self, meta: ChangeMeta) -> ChangeSet {
        let mut change_set =
            ChangeSet::new(meta).require(Precondition::StoreRevision { revision: self.base });
        change_set.operations = self.operations.clone();
        change_set
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::event::{DocumentChange, Event};

    fn projection(documents: &[(&str, &str, Value)]) -> Projection {
        let mut projection = Projection::new();
        let mut changes: Vec<DocumentChange> = documents
            .iter()
            .map(|(collection, id, value)| DocumentChange {
                key: DocKey::new(*collection, *id),
                after: Some(value.to_string().into()),
            })
            .collect();
        changes.sort_by(|a, b| a.key.cmp(&b.key));
        let event = Event { revision: Revision(1), meta: ChangeMeta::default(), changes };
        projection.apply(&event).unwrap();
        projection
    }

    #[test]
    fn only_differences_become_operations() {
        let current = projection(&[
            ("notes", "same", json!({"a": 1, "b": [1, 2]})),
            ("notes", "changed", json!({"a": 1})),
            ("notes", "gone", json!(1)),
            (CLUSTER_EVENTS, "epoch-1", json!({"event": "forced_recovery"})),
        ]);
        let target = vec![
            (DocKey::new("notes", "same"), json!({"b": [1, 2], "a": 1})),
            (DocKey::new("notes", "changed"), json!({"a": 2})),
            (DocKey::new("notes", "new"), json!("text")),
            (DocKey::new(CLUSTER_EVENTS, "epoch-9"), json!({})),
        ];
        let plan = Plan::to_match(&current, target);
        assert_eq!(plan.base, Revision(1));
        let summary: Vec<(&str, ChangeKind, u64)> =
            plan.changes.iter().map(|c| (c.id.as_str(), c.kind, c.bytes)).collect();
        assert_eq!(
            summary,
            vec![
                ("changed", ChangeKind::Changed, 7),
                ("gone", ChangeKind::Deleted, 0),
                ("new", ChangeKind::Created, 6),
            ]
        );
        assert_eq!(plan.operations.len(), 3);
        assert!(matches!(&plan.operations[1], Operation::Delete { id, .. } if id == "gone"));
        let change_set = plan.change_set(ChangeMeta::default());
        assert_eq!(change_set.preconditions, vec![Precondition::StoreRevision { revision: Revision(1) }]);
    }

    #[test]
    fn equal_targets_plan_nothing() {
        let current = projection(&[("notes", "n", json!({"x": null}))]);
        let plan = Plan::new(
            &current,
            [(DocKey::new("notes", "n"), Some(json!({"x": null}))), (DocKey::new("notes", "absent"), None)],
        );
        assert!(plan.is_empty());
        assert!(plan.changes.is_empty());
    }
}

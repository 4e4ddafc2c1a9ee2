//! The encodings of change sets and events from before the audit fields (`token`, `source` in
//! [`ChangeMeta`]), still read: Raft log entries written by earlier builds ([`crate::Command::ChangeV1`]),
//! events of a format-2 store (re-encoded once by [`crate::migrate`]) and events of a format-1 snapshot or
//! backup ([`crate::snapshot`]). bincode is not self-describing, so an old value cannot be read as the new
//! type with defaults: each place that may meet one knows which encoding it holds.

use serde::{Deserialize, Serialize};

use crate::change::{ChangeMeta, ChangeSet, Operation, Precondition, Revision};
use crate::event::{DocumentChange, Event};

/// [`ChangeMeta`] before the audit fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeMetaV1 {
    pub actor: String,
    pub reason: String,
    pub timestamp_ms: u64,
    pub request_id: Option<String>,
}

impl From<ChangeMetaV1> for ChangeMeta {
    fn from(v1: ChangeMetaV1) -> Self {
        ChangeMeta {
            actor: v1.actor,
            reason: v1.reason,
            timestamp_ms: v1.timestamp_ms,
            request_id: v1.request_id,
            token: None,
            source: None,
        }
    }
}

/// [`ChangeSet`] with a [`ChangeMetaV1`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangeSetV1 {
    pub meta: ChangeMetaV1,
    pub preconditions: Vec<Precondition>,
    pub operations: Vec<Operation>,
}

impl From<ChangeSetV1> for ChangeSet {
    fn from(v1: ChangeSetV1) -> Self {
        ChangeSet { meta: v1.meta.into(), preconditions: v1.preconditions, operations: v1.operations }
    }
}

/// [`Event`] with a [`ChangeMetaV1`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventV1 {
    pub revision: Revision,
    pub meta: ChangeMetaV1,
    pub changes: Vec<DocumentChange>,
}

impl From<EventV1> for Event {
    fn from(v1: EventV1) -> Self {
        Event { revision: v1.revision, meta: v1.meta.into(), changes: v1.changes }
    }
}

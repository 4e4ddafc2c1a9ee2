//! Events: what an accepted change set did, kept forever.
//!
//! An event records the *outcome* of a change set, not the command: for every document it touched, the
//! document's complete body afterwards (or that it was deleted). Patches are already resolved and validation
//! already passed, so replaying events needs no validation and gives the same projection whatever version of
//! the validation rules is running: replay is plain data copying, and therefore fast and deterministic.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::change::{ChangeMeta, DocKey, Revision};

/// The effect of one accepted change set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub revision: Revision,
    pub meta: ChangeMeta,
    /// One entry per document touched, sorted by key.
    pub changes: Vec<DocumentChange>,
}

/// What happened to one document in one event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentChange {
    pub key: DocKey,
    /// The canonical JSON body afterwards, or `None` when the event deleted the document.
    pub after: Option<Arc<str>>,
}

impl Event {
    /// Whether this event touched the document.
    pub fn touches(&self, key: &DocKey) -> bool {
        self.changes.binary_search_by(|change| change.key.cmp(key)).is_ok()
    }
}

//! The projection: the current configuration, built only by applying events.
//!
//! A [`Projection`] holds every live document with its create revision, mod revision and version, plus two
//! indexes derived from the documents: terminals by MAC, and who references whom (so a referenced document
//! cannot be deleted). It is a pure in-memory value: [`Projection::apply`] is the only way it changes, which is
//! what makes "replay the history from revision 1" give exactly the configuration the live store has, and
//! "replay up to revision N" give the configuration as it was at N.
//!
//! The [`crate::Store`] keeps one projection in memory as the authority for deciding change sets (decisions need
//! fast lookups and cheap overlays), and persists the documents beside the events in the same atomic write, so
//! that opening a store loads the projection instead of replaying the whole history. The indexes are derived
//! again on load: they cost nothing to persist wrongly that way.
//!
//! The maps are persistent ones (`imbl`: trees that share their unchanged parts between copies), so cloning a
//! projection costs O(1) and a later change copies only the path it touches. A snapshot or backup takes its
//! view of the store by cloning the projection under the store's lock, and every apply waits for that lock:
//! with `std` maps the clone copied every document, ~0.75 ms per 1,000 documents (75 ms at 100,000 on the
//! 2-core machine), and writes stalled that long at every snapshot.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::change::{DocKey, Revision};
use crate::collections::{self, Links};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::mac::Mac;

/// A live document and its bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDocument {
    /// The revision that created the document (since its last deletion).
    pub create_revision: Revision,
    /// The revision that last changed it.
    pub mod_revision: Revision,
    /// How many times it was written since it was created: 1 for a new document.
    pub version: u64,
    /// Canonical (compact, keys sorted) JSON text.
    pub body: Arc<str>,
}

impl StoredDocument {
    /// The body as a JSON value.
    pub fn value(&self) -> serde_json::Value {
        // Bodies are canonical JSON written by this crate; a body that does not parse is impossible short of
        // memory corruption, and null is the least harmful answer to give then.
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Clone, Debug)]
struct Entry {
    document: StoredDocument,
    links: Arc<Links>,
}

/// The configuration at one revision, with its indexes.
#[derive(Clone, Debug, Default)]
pub struct Projection {
    revision: Revision,
    documents: imbl::OrdMap<DocKey, Entry>,
    terminals_by_mac: imbl::HashMap<Mac, String>,
    referrers: imbl::HashMap<DocKey, BTreeSet<DocKey>>,
}

impl PartialEq for Projection {
    /// Two projections are equal when they hold the same documents at the same revision (indexes are derived).
    fn eq(&self, other: &Self) -> bool {
        self.revision == other.revision
            && self.documents.len() == other.documents.len()
            && self
                .documents
                .iter()
                .zip(other.documents.iter())
                .all(|((ka, a), (kb, b))| ka == kb && a.document == b.document)
    }
}

impl Projection {
    /// The empty configuration at revision 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The revision this projection reflects.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// How many documents it holds.
    pub fn len(&self) -> usize {
        self.documents.len()
    }

    /// Whether it holds no documents.
    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }

    /// One document.
    pub fn get(&self, key: &DocKey) -> Option<&StoredDocument> {
        self.documents.get(key).map(|entry| &entry.document)
    }

    /// Every document, in key order.
    pub fn documents(&self) -> impl Iterator<Item = (&DocKey, &StoredDocument)> {
        self.documents.iter().map(|(key, entry)| (key, &entry.document))
    }

    /// The documents of one collection, in id order.
    pub fn collection<'a>(
        &'a self,
        collection: &'a str,
    ) -> impl Iterator<Item = (&'a DocKey, &'a StoredDocument)> {
        let start = DocKey::new(collection, "");
        self.documents
            .range(start..)
            .take_while(move |(key, _)| key.collection == collection)
            .map(|(key, entry)| (key, &entry.document))
    }

    /// The names of the collections that hold at least one document.
    pub fn collection_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for key in self.documents.keys() {
            if names.last() != Some(&key.collection) {
                names.push(key.collection.clone());
            }
        }
        names
    }

    /// The terminal with this MAC address: its id and document.
    pub fn terminal_by_mac(&self, mac: Mac) -> Option<(&str, &StoredDocument)> {
        let id = self.terminals_by_mac.get(&mac)?;
        let document = self.get(&DocKey::new(collections::TERMINALS, id.as_str()))?;
        Some((id.as_str(), document))
    }

    /// The documents that reference `key`.
    pub fn referrers(&self, key: &DocKey) -> impl Iterator<Item = &DocKey> {
        self.referrers.get(key).into_iter().flatten()
    }

    /// The links (MAC, references) of a live document.
    pub fn links(&self, key: &DocKey) -> Option<&Links> {
        self.documents.get(key).map(|entry| entry.links.as_ref())
    }

    /// Applies the next event. Fails if the event is not the next revision: the history has a gap.
    pub fn apply(&mut self, event: &Event) -> Result<()> {
        if event.revision != self.revision.next() {
            return Err(Error::Corrupt(format!(
                "event {} cannot follow revision {}: the history has a gap",
                event.revision, self.revision
            )));
        }
        for change in &event.changes {
            match &change.after {
                Some(body) => {
                    let (create_revision, version) = match self.get(&change.key) {
                        Some(old) => (old.create_revision, old.version + 1),
                        None => (event.revision, 1),
                    };
                    let document = StoredDocument {
                        create_revision,
                        mod_revision: event.revision,
                        version,
                        body: body.clone(),
                    };
                    self.insert(change.key.clone(), document);
                }
                None => self.remove(&change.key),
            }
        }
        self.revision = event.revision;
        Ok(())
    }

    /// Inserts a document as loaded from disk or a checkpoint, replacing any previous one.
    pub fn insert(&mut self, key: DocKey, document: StoredDocument) {
        let links = collections::links_of_text(&key.collection, &document.body);
        if let Some(entry) = self.documents.get_mut(&key) {
            // Most changes (settings, versions) leave the links alone: then the indexes stay as they are.
            if *entry.links == links {
                entry.document = document;
                return;
            }
            self.remove(&key);
        }
        let links = Arc::new(links);
        self.index(&key, &links);
        self.documents.insert(key, Entry { document, links });
    }

    /// Sets the revision of a projection that was loaded document by document.
    pub fn set_revision(&mut self, revision: Revision) {
        self.revision = revision;
    }

    fn remove(&mut self, key: &DocKey) {
        if let Some(old) = self.documents.remove(key) {
            self.unindex(key, &old.links);
        }
    }

    fn index(&mut self, key: &DocKey, links: &Links) {
        if let Some(mac) = links.mac {
            self.terminals_by_mac.insert(mac, key.id.clone());
        }
        for (_, collection, id) in &links.documents {
            self.referrers.entry(DocKey::new(*collection, id.as_str())).or_default().insert(key.clone());
        }
    }

    fn unindex(&mut self, key: &DocKey, links: &Links) {
        if let Some(mac) = links.mac
            && self.terminals_by_mac.get(&mac) == Some(&key.id)
        {
            self.terminals_by_mac.remove(&mac);
        }
        for (_, collection, id) in &links.documents {
            let target = DocKey::new(*collection, id.as_str());
            if let Some(set) = self.referrers.get_mut(&target) {
                set.remove(key);
                if set.is_empty() {
                    self.referrers.remove(&target);
                }
            }
        }
    }
}

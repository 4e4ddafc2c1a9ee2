//! Exports: the whole configuration at one revision as one diffable JSON document, and the way back in.
//!
//! An [`Export`] is what `GET /v1/export` answers, what `tandem export` writes to a file, and what
//! `POST /v1/import` and `tandem sync` take:
//!
//! ```json
//! {"revision": 51, "cluster_id": "…",
//!  "collections": {"terminals": {"t1": {"mac": "…"}}, "notes": {"n1": {"a": 1}}},
//!  "blobs": {"<sha256 hex>": 1048576}}
//! ```
//!
//! Collections and ids are sorted (they are `BTreeMap`s), so two exports compare line by line. `blobs` lists
//! every blob the exported documents reference, with its size: the bytes themselves travel separately
//! (`GET /v1/blobs/{sha256}/data`), and an importer uploads the ones it lacks first. The cluster's own records
//! ([`CLUSTER_EVENTS`](crate::plan::CLUSTER_EVENTS)) are not configuration: they are left out of exports and
//! ignored by imports.
//!
//! Importing is [`Export::plan`]: a [`Plan`] that makes the configuration equal to the export — puts for
//! created and changed documents, deletes for documents the export does not hold — plus
//! [`Export::missing_blobs`], the referenced blobs the store does not have yet.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::change::{DocKey, Revision};
use crate::collections;
use crate::digest::{Digest, DigestParseError};
use crate::error::Result;
use crate::plan::{Plan, is_configuration};
use crate::projection::Projection;
use crate::store::Store;

/// The configuration at one revision: every document, and the blobs they reference.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Export {
    /// The revision the configuration was exported at.
    pub revision: Revision,
    /// The installation it was exported from.
    pub cluster_id: String,
    /// collection → id → document.
    pub collections: BTreeMap<String, BTreeMap<String, Value>>,
    /// Every blob the documents reference: SHA-256 (hex) → size in bytes.
    #[serde(default)]
    pub blobs: BTreeMap<String, u64>,
}

/// A blob an export references that the store does not hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingBlob {
    /// SHA-256, 64 hex digits.
    pub digest: String,
    /// The size the export gives (0 when it gives none).
    pub size: u64,
}

impl Export {
    /// Exports `projection`, leaving out `cluster_events`. `blob_size` answers the size of a stored blob;
    /// a referenced blob it does not know is listed with the size the document claims, or 0.
    pub fn of(
        projection: &Projection,
        cluster_id: &str,
        blob_size: &dyn Fn(&Digest) -> Option<u64>,
    ) -> Export {
        let mut export = Export {
            revision: projection.revision(),
            cluster_id: cluster_id.to_string(),
            ..Export::default()
        };
        for (key, document) in projection.documents() {
            if !is_configuration(&key.collection) {
                continue;
            }
            if let Some(links) = projection.links(key) {
                for (_, digest, claimed) in &links.blobs {
                    let size = blob_size(digest).or(*claimed).unwrap_or(0);
                    export.blobs.insert(digest.to_string(), size);
                }
            }
            export
                .collections
                .entry(key.collection.clone())
                .or_default()
                .insert(key.id.clone(), document.value());
        }
        export
    }

    /// How many documents the export holds, `cluster_events` aside (like [`Export::documents`]).
    pub fn document_count(&self) -> usize {
        self.documents().count()
    }

    /// Every document of the export except `cluster_events`, in key order.
    pub fn documents(&self) -> impl Iterator<Item = (DocKey, &Value)> {
        self.collections.iter().filter(|(collection, _)| is_configuration(collection)).flat_map(
            |(collection, documents)| {
                documents
                    .iter()
                    .map(move |(id, value)| (DocKey::new(collection.as_str(), id.as_str()), value))
            },
        )
    }

    /// The plan that makes `current` equal to this export (configuration only: `cluster_events` is left
    /// alone on both sides).
    pub fn plan(&self, current: &Projection) -> Plan {
        Plan::to_match(current, self.documents().map(|(key, value)| (key, value.clone())))
    }

    /// The blobs this export references — listed in `blobs`, or named by a document — that `blob_size` does
    /// not know, in digest order. A digest that is not 64 hex digits is an error.
    pub fn missing_blobs(
        &self,
        blob_size: &dyn Fn(&Digest) -> Option<u64>,
    ) -> Result<Vec<MissingBlob>, DigestParseError> {
        let mut referenced: BTreeMap<Digest, u64> = BTreeMap::new();
        for (text, size) in &self.blobs {
            referenced.insert(Digest::parse(text)?, *size);
        }
        for (key, value) in self.documents() {
            for (_, digest, claimed) in collections::links_of(&key.collection, value).blobs {
                referenced.entry(digest).or_insert(claimed.unwrap_or(0));
            }
        }
        Ok(referenced
            .into_iter()
            .filter(|(digest, _)| blob_size(digest).is_none())
            .map(|(digest, size)| MissingBlob { digest: digest.to_string(), size })
            .collect())
    }

    /// The names of the collections the export holds, `cluster_events` aside.
    pub fn collection_names(&self) -> BTreeSet<&str> {
        self.collections.keys().map(String::as_str).filter(|c| is_configuration(c)).collect()
    }
}

impl Store {
    /// The configuration as it was right after `revision` (the current one when `None`), as an [`Export`].
    pub fn export(&self, revision: Option<Revision>) -> Result<Export> {
        let blob_size = |digest: &Digest| self.blob_size(digest);
        match revision {
            None => Ok(Export::of(self.projection(), self.cluster_id(), &blob_size)),
            Some(revision) => Ok(Export::of(&self.state_at(revision)?, self.cluster_id(), &blob_size)),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::change::{ChangeMeta, ChangeSet};
    use crate::command::Outcome;
    use crate::plan::CLUSTER_EVENTS;
    use crate::plan::ChangeKind;
    use crate::store::StoreOptions;

    fn meta() -> ChangeMeta {
        ChangeMeta { actor: "test".into(), ..ChangeMeta::default() }
    }

    fn accepted(outcome: Outcome) -> Revision {
        match outcome {
            Outcome::Accepted { revision } => revision,
            other => panic!("not accepted: {other:?}"),
        }
    }

    #[test]
    fn export_lists_documents_and_referenced_blobs_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open_with(dir.path(), StoreOptions::default()).unwrap();
        let (digest, size) = store.put_blob(1, &b"firmware bytes"[..]).unwrap().unwrap();
        let change = ChangeSet::new(meta())
            .put("firmware", "fw1", json!({"version": "1.0", "blob": digest.to_string()}))
            .put("notes", "n1", json!({"a": 1}))
            .put(CLUSTER_EVENTS, "epoch-1", json!({"event": "forced_recovery"}));
        let first = accepted(store.apply_change_set(change).unwrap());
        accepted(store.apply_change_set(ChangeSet::new(meta()).put("notes", "n2", json!([1]))).unwrap());

        let now = store.export(None).unwrap();
        assert_eq!(now.revision, Revision(first.0 + 1));
        assert_eq!(now.cluster_id, store.cluster_id());
        assert_eq!(now.collection_names().into_iter().collect::<Vec<_>>(), vec!["firmware", "notes"]);
        assert!(!now.collections.contains_key(CLUSTER_EVENTS));
        assert_eq!(now.blobs, BTreeMap::from([(digest.to_string(), size)]));
        assert_eq!(now.document_count(), 3);

        let then = store.export(Some(first)).unwrap();
        assert_eq!(then.collections["notes"].len(), 1);

        let text = serde_json::to_string(&now).unwrap();
        let back: Export = serde_json::from_str(&text).unwrap();
        assert_eq!(back, now);
        assert!(back.missing_blobs(&|d| store.blob_size(d)).unwrap().is_empty());
        assert_eq!(
            back.missing_blobs(&|_| None).unwrap(),
            vec![MissingBlob { digest: digest.to_string(), size }]
        );
        assert!(store.export(Some(Revision(99))).is_err());
    }

    #[test]
    fn importing_an_export_makes_the_configuration_equal() {
        let source_dir = tempfile::tempdir().unwrap();
        let mut source = Store::open(source_dir.path()).unwrap();
        for i in 0..5 {
            let change = ChangeSet::new(meta()).put("notes", &format!("n{i}"), json!({"i": i}));
            accepted(source.apply_change_set(change).unwrap());
        }
        let export = source.export(None).unwrap();

        let target_dir = tempfile::tempdir().unwrap();
        let mut target = Store::open(target_dir.path()).unwrap();
        let change = ChangeSet::new(meta())
            .put("notes", "n0", json!({"i": 0}))
            .put("notes", "n1", json!({"i": "other"}))
            .put("local", "only-here", json!(true))
            .put(CLUSTER_EVENTS, "epoch-1", json!({"event": "forced_recovery"}));
        accepted(target.apply_change_set(change).unwrap());

        let plan = export.plan(target.projection());
        let kinds: Vec<(String, ChangeKind)> =
            plan.changes.iter().map(|c| (format!("{}/{}", c.collection, c.id), c.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                ("local/only-here".into(), ChangeKind::Deleted),
                ("notes/n1".into(), ChangeKind::Changed),
                ("notes/n2".into(), ChangeKind::Created),
                ("notes/n3".into(), ChangeKind::Created),
                ("notes/n4".into(), ChangeKind::Created),
            ]
        );
        accepted(target.apply_change_set(plan.change_set(meta())).unwrap());
        let imported = target.export(None).unwrap();
        assert_eq!(imported.collections, export.collections);
        assert!(target.get(&DocKey::new(CLUSTER_EVENTS, "epoch-1")).is_some(), "cluster records stay");
        assert!(export.plan(target.projection()).is_empty(), "a second import changes nothing");
    }

    #[test]
    fn a_stale_plan_is_rejected_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        accepted(store.apply_change_set(ChangeSet::new(meta()).put("notes", "n", json!(1))).unwrap());
        let export =
            Export { collections: BTreeMap::from([("notes".into(), BTreeMap::new())]), ..Export::default() };
        let plan = export.plan(store.projection());
        assert_eq!((plan.base, plan.changes.len()), (Revision(1), 1));
        accepted(store.apply_change_set(ChangeSet::new(meta()).put("notes", "n", json!(2))).unwrap());
        let outcome = store.apply_change_set(plan.change_set(meta())).unwrap();
        assert!(matches!(outcome, Outcome::Rejected(crate::Rejection::PreconditionFailed(_))), "{outcome:?}");
        assert_eq!(store.revision(), Revision(2));
        assert!(store.get(&DocKey::new("notes", "n")).is_some());
    }

    #[test]
    fn bad_digests_are_errors_not_panics() {
        let export = Export { blobs: BTreeMap::from([("not-a-digest".to_string(), 1)]), ..Export::default() };
        assert!(export.missing_blobs(&|_| None).is_err());
        let unknown: std::result::Result<Export, _> =
            serde_json::from_str(r#"{"revision": 1, "cluster_id": "x", "collections": {}, "extra": 1}"#);
        assert!(unknown.is_err());
    }
}

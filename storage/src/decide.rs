//! Deciding a change set: accept it as the next event, or reject it, deterministically.
//!
//! [`decide`] is a pure function of the change set and the state it is decided against (the projection and the
//! set of committed blobs). It never reads the clock, the disk or the node's identity, so every replica that
//! decides the same log entry against the same state reaches the same event or the same [`Rejection`].
//!
//! The steps, in order (the first problem found is the rejection):
//! 1. sizes and names: operation count, metadata lengths, collection names and document ids;
//! 2. preconditions, against the state *before* the change set;
//! 3. the operations, in order, into a pending overlay: a put replaces, a patch merges (RFC 7396) into the
//!    pending or current body, a delete requires the document to exist;
//! 4. validation of the *result*: every document the change set leaves behind must match its collection's
//!    schema, reference only documents and blobs that exist in the result, and keep MACs unique; every document
//!    it deletes must not be referenced by any document left in the result. Checking the result rather than each
//!    step means the order of operations inside a change set does not matter (a terminal and the firmware it
//!    points at can be created together, in any order).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use crate::change::{ChangeSet, DocKey, Operation, Precondition};
use crate::collections::{self, check_collection_name, check_document_id};
use crate::digest::Digest;
use crate::event::{DocumentChange, Event};
use crate::limits::*;
use crate::mac::Mac;
use crate::projection::Projection;
use crate::rejection::Rejection;

/// Decides `change_set` against `projection`; `blob_size` answers the size of a committed blob.
pub fn decide(
    projection: &Projection,
    blob_size: &dyn Fn(&Digest) -> Option<u64>,
    change_set: &ChangeSet,
) -> Result<Event, Rejection> {
    check_sizes(change_set)?;
    for operation in &change_set.operations {
        let DocKey { collection, id } = operation.key();
        check_key(&collection, &id)?;
    }
    for precondition in &change_set.preconditions {
        check_precondition(projection, precondition)?;
    }
    let pending = run_operations(projection, change_set)?;
    let changes = validate_result(projection, blob_size, pending)?;
    Ok(Event { revision: projection.revision().next(), meta: change_set.meta.clone(), changes })
}

fn too_large(what: impl Into<String>, size: usize, limit: usize, unit: &str) -> Rejection {
    Rejection::TooLarge { what: what.into(), size: size as u64, limit: limit as u64, unit: unit.into() }
}

fn check_sizes(change_set: &ChangeSet) -> Result<(), Rejection> {
    let meta = &change_set.meta;
    if change_set.operations.is_empty() {
        return Err(Rejection::Empty);
    }
    if change_set.operations.len() > MAX_OPERATIONS {
        return Err(too_large("the change set", change_set.operations.len(), MAX_OPERATIONS, "operations"));
    }
    if change_set.preconditions.len() > MAX_OPERATIONS {
        return Err(too_large(
            "the change set",
            change_set.preconditions.len(),
            MAX_OPERATIONS,
            "preconditions",
        ));
    }
    if meta.actor.len() > MAX_SHORT_TEXT {
        return Err(too_large("the actor name", meta.actor.len(), MAX_SHORT_TEXT, "bytes"));
    }
    if meta.reason.len() > MAX_REASON {
        return Err(too_large("the reason", meta.reason.len(), MAX_REASON, "bytes"));
    }
    if let Some(request_id) = &meta.request_id
        && request_id.len() > MAX_SHORT_TEXT
    {
        return Err(too_large("the request id", request_id.len(), MAX_SHORT_TEXT, "bytes"));
    }
    Ok(())
}

fn check_key(collection: &str, id: &str) -> Result<DocKey, Rejection> {
    check_collection_name(collection)?;
    check_document_id(id)?;
    Ok(DocKey::new(collection, id))
}

fn check_precondition(projection: &Projection, precondition: &Precondition) -> Result<(), Rejection> {
    let failed = |text: String| Err(Rejection::PreconditionFailed(text));
    match precondition {
        Precondition::StoreRevision { revision } => {
            if projection.revision() != *revision {
                return failed(format!(
                    "expected the store at revision {revision}, but it is at revision {} (re-read and retry)",
                    projection.revision()
                ));
            }
        }
        Precondition::DocumentRevision { collection, id, mod_revision } => {
            let key = check_key(collection, id)?;
            match projection.get(&key) {
                Some(doc) if doc.mod_revision == *mod_revision => {}
                Some(doc) => {
                    return failed(format!(
                        "expected {key} at revision {mod_revision}, but it was last changed at revision {} (re-read and retry)",
                        doc.mod_revision
                    ));
                }
                None => {
                    return failed(format!(
                        "expected {key} at revision {mod_revision}, but it does not exist"
                    ));
                }
            }
        }
        Precondition::MustNotExist { collection, id } => {
            let key = check_key(collection, id)?;
            if let Some(doc) = projection.get(&key) {
                return failed(format!(
                    "{key} must not exist, but it was created at revision {}",
                    doc.create_revision
                ));
            }
        }
        Precondition::MustExist { collection, id } => {
            let key = check_key(collection, id)?;
            if projection.get(&key).is_none() {
                return failed(format!("{key} must exist, but it does not"));
            }
        }
    }
    Ok(())
}

/// The change set's result: for each touched document, its body afterwards (None: deleted).
type Pending = BTreeMap<DocKey, Option<Value>>;

fn run_operations(projection: &Projection, change_set: &ChangeSet) -> Result<Pending, Rejection> {
    let mut pending = Pending::new();
    let mut input_bytes = 0usize;
    for operation in &change_set.operations {
        let key = match operation {
            Operation::Put { collection, id, .. }
            | Operation::Patch { collection, id, .. }
            | Operation::Delete { collection, id } => check_key(collection, id)?,
        };
        let current = |pending: &Pending| -> Result<Value, Rejection> {
            match pending.get(&key) {
                Some(Some(after)) => Ok(after.clone()),
                Some(None) => Err(Rejection::DeletedInChangeSet { key: key.to_string() }),
                None => projection
                    .get(&key)
                    .map(|doc| doc.value())
                    .ok_or_else(|| Rejection::NoSuchDocument { key: key.to_string() }),
            }
        };
        let after = match operation {
            Operation::Put { document, .. } => {
                input_bytes += approximate_size(&document.0);
                Some(document.0.clone())
            }
            Operation::Patch { patch, .. } => {
                input_bytes += approximate_size(&patch.0);
                let mut base = current(&pending)?;
                merge_patch(&mut base, &patch.0);
                Some(base)
            }
            Operation::Delete { .. } => {
                current(&pending)?;
                None
            }
        };
        if input_bytes > MAX_CHANGE_SET_BYTES {
            return Err(too_large("the change set", input_bytes, MAX_CHANGE_SET_BYTES, "bytes"));
        }
        pending.insert(key, after);
    }
    Ok(pending)
}

fn validate_result(
    projection: &Projection,
    blob_size: &dyn Fn(&Digest) -> Option<u64>,
    pending: Pending,
) -> Result<Vec<DocumentChange>, Rejection> {
    let exists_after = |key: &DocKey| match pending.get(key) {
        Some(after) => after.is_some(),
        None => projection.get(key).is_some(),
    };
    let mut macs_in_change_set: HashMap<Mac, &DocKey> = HashMap::new();
    let mut changes = Vec::with_capacity(pending.len());
    for (key, after) in &pending {
        let Some(value) = after else {
            if projection.get(key).is_none() {
                continue; // created and deleted within this change set: nothing happened
            }
            let still_referencing: Vec<&DocKey> =
                projection.referrers(key).filter(|referrer| !pending.contains_key(*referrer)).collect();
            if !still_referencing.is_empty() {
                return Err(Rejection::StillReferenced {
                    key: key.to_string(),
                    referrers: name_some(&still_referencing),
                });
            }
            changes.push(DocumentChange { key: key.clone(), after: None });
            continue;
        };
        let body = value.to_string();
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(too_large(format!("document {key}"), body.len(), MAX_DOCUMENT_BYTES, "bytes"));
        }
        let links = collections::inspect(&key.collection, value)
            .map_err(|reason| Rejection::InvalidDocument { key: key.to_string(), reason })?;
        for (field, collection, id) in &links.documents {
            let target = DocKey::new(*collection, id.as_str());
            if !exists_after(&target) {
                if projection.get(&target).is_some() {
                    // The change set deletes what this document (still) references.
                    return Err(Rejection::StillReferenced {
                        key: target.to_string(),
                        referrers: key.to_string(),
                    });
                }
                return Err(Rejection::MissingReference {
                    key: key.to_string(),
                    field: field.clone(),
                    target: target.to_string(),
                });
            }
        }
        for (field, digest, claimed_size) in &links.blobs {
            let bad = |reason: String| Rejection::BadBlobReference {
                key: key.to_string(),
                field: field.clone(),
                digest: digest.to_string(),
                reason,
            };
            match (blob_size(digest), claimed_size) {
                (None, _) => return Err(bad("no such blob was uploaded (upload it first)".into())),
                (Some(actual), Some(claimed)) if actual != *claimed => {
                    return Err(bad(format!(
                        "the document says size {claimed} but the blob has {actual} bytes"
                    )));
                }
                _ => {}
            }
        }
        if let Some(mac) = links.mac {
            if let Some(other) = macs_in_change_set.insert(mac, key) {
                return Err(Rejection::DuplicateMac {
                    mac: mac.to_string(),
                    key: key.to_string(),
                    existing: other.to_string(),
                });
            }
            if let Some((other_id, _)) = projection.terminal_by_mac(mac) {
                let other = DocKey::new(collections::TERMINALS, other_id);
                if other != *key && !pending.contains_key(&other) {
                    return Err(Rejection::DuplicateMac {
                        mac: mac.to_string(),
                        key: key.to_string(),
                        existing: other.to_string(),
                    });
                }
            }
        }
        changes.push(DocumentChange { key: key.clone(), after: Some(Arc::from(body)) });
    }
    Ok(changes)
}

/// Lists up to five keys for a message: "terminals/t1, terminals/t2 and 3 more".
fn name_some(keys: &[&DocKey]) -> String {
    let shown: Vec<String> = keys.iter().take(5).map(|key| key.to_string()).collect();
    match keys.len() {
        n if n > 5 => format!("{} and {} more", shown.join(", "), n - 5),
        _ => shown.join(", "),
    }
}

/// A cheap upper-bound-ish size of a JSON value, to refuse huge inputs before canonicalising them.
fn approximate_size(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => 2 + items.iter().map(|v| approximate_size(v) + 1).sum::<usize>(),
        Value::Object(map) => 2 + map.iter().map(|(k, v)| k.len() + 4 + approximate_size(v)).sum::<usize>(),
    }
}

/// Applies an RFC 7396 JSON merge patch: objects merge recursively, `null` removes a member, anything else
/// replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_members) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let Value::Object(target_members) = target else { return };
    for (name, value) in patch_members {
        if value.is_null() {
            target_members.remove(name);
        } else {
            merge_patch(target_members.entry(name.clone()).or_insert(Value::Null), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        // Examples from RFC 7396, appendix A.
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "b"}), json!({"b": "c"}), json!({"a": "b", "b": "c"})),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (json!({"a": [{"b": "c"}]}), json!({"a": [1]}), json!({"a": [1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"e": null}), json!({"a": 1}), json!({"e": null, "a": 1})),
            (json!([1, 2]), json!({"a": "b", "c": null}), json!({"a": "b"})),
            (json!({}), json!({"a": {"bb": {"ccc": null}}}), json!({"a": {"bb": {}}})),
        ];
        for (mut target, patch, want) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, want);
        }
    }
}

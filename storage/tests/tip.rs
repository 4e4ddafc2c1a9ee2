//! Format 5's commit point ([`tandem_storage::tip`]): a batch of change sets written in order with the tip
//! last, what a crash leaves of it discarded at open; a format-4 store converted on first open.

mod on_disk;

use std::path::Path;

use on_disk::{edit_disk, encode, stored};
use tandem_storage::engine::WriteBatch;
use tandem_storage::keys::{self, Meta};
use tandem_storage::{ChangeMeta, ChangeSet, Command, Outcome, Revision, Store};

fn change(i: u32, request: &str) -> ChangeSet {
    let meta = ChangeMeta {
        actor: "t".into(),
        reason: format!("reason {i}"),
        request_id: Some(request.into()),
        ..ChangeMeta::default()
    };
    ChangeSet::new(meta).put("notes", &format!("n{}", i % 4), serde_json::json!({"i": i}))
}

/// A store in `dir` with `changes` change sets applied one batch each, all with `position`, made durable.
fn store_with(dir: &Path, changes: u32, position: &[u8]) -> Store {
    let mut store = Store::open(dir).unwrap();
    for i in 0..changes {
        store.apply(&[Command::Change(change(i, &format!("r{i}")))], Some(position)).unwrap();
    }
    store.durable().unwrap();
    store
}

#[test]
fn what_a_crash_left_of_a_batch_past_the_tip_is_discarded_and_the_batch_applies_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let first: Vec<_> = (0..3).map(|i| Command::Change(change(i, &format!("r{i}")))).collect();
    store.apply(&first, Some(b"log 1")).unwrap();
    store.durable().unwrap();
    drop(store);
    let tip_before = stored(dir.path(), &Meta::Tip.key()).unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    // The next batch (revisions 4 and 5, requests r3 and r4), written whole...
    let second: Vec<_> = (3..5).map(|i| Command::Change(change(i, &format!("r{i}")))).collect();
    store.apply(&second, Some(b"log 2")).unwrap();
    let expected = store.projection().clone();
    let expected_head = store.head();
    store.durable().unwrap();
    drop(store);
    // ...then cut back to a prefix without its tip, as sled may bring it back after a crash.
    edit_disk(dir.path(), |_, batch| batch.put(Meta::Tip.key(), tip_before.clone()));

    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(store.revision(), Revision(3), "the store ends where its tip says");
    assert_eq!(store.position(), Some(&b"log 1"[..]));
    assert!(store.event(Revision(4)).unwrap().is_none(), "the event past the tip is gone");
    assert!(store.chain().verify().unwrap().is_intact());
    // Re-applied from the log, the batch is decided again, not answered as a duplicate of its own leftover.
    let outcomes = store.apply(&second, Some(b"log 2")).unwrap();
    assert_eq!(outcomes[0], Outcome::Accepted { revision: Revision(4) });
    assert_eq!(outcomes[1], Outcome::Accepted { revision: Revision(5) });
    assert_eq!(store.projection(), &expected);
    assert_eq!(store.head(), expected_head, "the same events, the same chain");
    store.durable().unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.projection(), &expected, "rebuilt from the events at open");
    assert_eq!(store.position(), Some(&b"log 2"[..]));
}

#[test]
fn a_format_4_store_drops_its_documents_and_keeps_revision_head_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), 6, b"log 6");
    let (projection, head) = (store.projection().clone(), store.head());
    let documents: Vec<_> = projection.documents().map(|(k, d)| (k.clone(), d.clone())).collect();
    drop(store);
    let as_format_4 =
        |documents: &[(tandem_storage::DocKey, tandem_storage::projection::StoredDocument)]| {
            let documents = documents.to_vec();
            move |_: &dyn tandem_storage::Keyspace, batch: &mut WriteBatch| {
                for (key, document) in documents {
                    batch.put(keys::document(&key), encode(&document));
                }
                batch.delete(Meta::Tip.key());
                batch.put(Meta::Revision.key(), 6u64.to_be_bytes().to_vec());
                batch.put(Meta::Head.key(), head.0.to_vec());
                batch.put(Meta::Position.key(), b"log 6".to_vec());
                batch.put(Meta::Format.key(), 4u32.to_be_bytes().to_vec());
            }
        };

    // A document that differs from the history's replay stops the conversion.
    let mut altered = documents.clone();
    altered[0].1.version += 1;
    edit_disk(dir.path(), as_format_4(&altered));
    let error = Store::open(dir.path()).unwrap_err().to_string();
    assert!(error.contains("differ from a replay"), "{error}");
    assert_eq!(stored(dir.path(), &Meta::Format.key()).unwrap(), 4u32.to_be_bytes(), "left as it was");

    edit_disk(dir.path(), as_format_4(&documents));
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.projection(), &projection);
    assert_eq!((store.revision(), store.head()), (Revision(6), head));
    assert_eq!(store.position(), Some(&b"log 6"[..]));
    drop(store);
    assert_eq!(stored(dir.path(), &Meta::Format.key()).unwrap(), keys::FORMAT_VERSION.to_be_bytes());
    for gone in
        [Meta::Revision.key(), Meta::Head.key(), Meta::Position.key(), keys::document(&documents[0].0)]
    {
        assert_eq!(stored(dir.path(), &gone), None);
    }
}

#[test]
fn a_missing_or_doctored_tip_stops_the_open_instead_of_deleting_history() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with(dir.path(), 3, b"log"));
    let tip = stored(dir.path(), &Meta::Tip.key()).unwrap();

    edit_disk(dir.path(), |_, batch| batch.delete(Meta::Tip.key()));
    let error = Store::open(dir.path()).unwrap_err().to_string();
    assert!(error.contains("events up to revision 3 but no tip"), "{error}");

    // Revision 1 with revision 3's head: not a tip any batch wrote.
    let mut doctored = tip.clone();
    doctored[..8].copy_from_slice(&1u64.to_be_bytes());
    edit_disk(dir.path(), |_, batch| batch.put(Meta::Tip.key(), doctored));
    let error = Store::open(dir.path()).unwrap_err().to_string();
    assert!(error.contains("is not the hash stored with event 1"), "{error}");

    edit_disk(dir.path(), |_, batch| batch.put(Meta::Tip.key(), tip));
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.revision(), Revision(3), "nothing was deleted on the damaged tips' word");
    assert!(store.chain().verify().unwrap().is_intact());
}

//! The history's hash chain ([`tandem_storage::chain`]): the same on every replica, an event altered on disk
//! named at its revision, added to an older store once at open, carried by snapshots.

mod on_disk;

use std::path::Path;

use on_disk::{edit_disk, encode};

use tandem_storage::chain::{GENESIS, link};
use tandem_storage::keys::{self, Meta};
use tandem_storage::legacy::{ChangeMetaV1, EventV1};
use tandem_storage::{
    ChangeMeta, ChangeSet, Command, Database, Revision, SledDatabase, Store, StoreOptions, database_dir,
};

fn change(i: u32) -> ChangeSet {
    let meta = ChangeMeta { actor: "t".into(), reason: format!("reason {i}"), ..ChangeMeta::default() };
    ChangeSet::new(meta).put("notes", &format!("n{}", i % 3), serde_json::json!({"i": i}))
}

fn store_with(dir: &Path, events: u32) -> Store {
    let mut store = Store::open(dir).unwrap();
    for i in 0..events {
        store.apply(&[Command::Change(change(i))], None).unwrap();
    }
    store.durable().unwrap();
    store
}

/// Replaces `from` by `to` (same length) in the stored bytes of event `revision`.
fn alter_event(dir: &Path, revision: u64, from: &str, to: &str) {
    edit_disk(dir, |space, batch| {
        let key = keys::event(Revision(revision), 0);
        let mut bytes = space.get(&key).unwrap().unwrap();
        let at = bytes.windows(from.len()).position(|w| w == from.as_bytes()).expect("the text is there");
        bytes[at..at + to.len()].copy_from_slice(to.as_bytes());
        batch.put(key, bytes);
    });
}

#[test]
fn the_chain_links_every_event_to_the_one_before_and_is_the_same_on_every_replica() {
    let dir = tempfile::tempdir().unwrap();
    let a = store_with(&dir.path().join("a"), 5);
    let b = store_with(&dir.path().join("b"), 5);
    assert_eq!(a.head(), b.head(), "the same events give the same chain");
    let mut expected = GENESIS;
    for revision in 1..=5 {
        let bytes = encode(&a.event(Revision(revision)).unwrap().unwrap());
        expected = link(&expected, &bytes);
        let stored = a.chain().hashes(Revision(revision), Revision(revision), 1).unwrap();
        assert_eq!(stored, vec![(Revision(revision), expected)]);
    }
    assert_eq!(a.head(), expected);
    let check = a.chain().verify().unwrap();
    assert!(check.is_intact(), "{check:?}");
    assert_eq!((check.revision, check.head), (Revision(5), expected));
    assert_eq!(Store::open(&dir.path().join("empty")).unwrap().head(), GENESIS);
}

#[test]
fn an_event_altered_on_disk_is_reported_at_its_revision() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with(dir.path(), 6));
    alter_event(dir.path(), 4, "reason 3", "reason 9");
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.event(Revision(4)).unwrap().unwrap().meta.reason, "reason 9", "still decodes");
    let check = store.chain().verify().unwrap();
    let (revision, why) = check.first_mismatch.clone().expect("a mismatch");
    assert_eq!(revision, Revision(4), "{why}");
    assert!(why.contains("altered"), "{why}");
    assert_ne!(check.head, check.stored_head);
    assert!(!check.is_intact());
}

#[test]
fn an_event_that_no_longer_decodes_or_is_missing_is_reported_too() {
    // Covered by a checkpoint (every 3 events here): the store opens, and the check names the event.
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions { checkpoint_interval: 3 };
    let mut store = Store::open_with(dir.path(), options.clone()).unwrap();
    for i in 0..4 {
        store.apply(&[Command::Change(change(i))], None).unwrap();
    }
    store.durable().unwrap();
    drop(store);
    edit_disk(dir.path(), |_, batch| batch.put(keys::event(Revision(2), 0), vec![1, 2, 3]));
    let store = Store::open_with(dir.path(), options.clone()).unwrap();
    let check = store.chain().verify().unwrap();
    assert_eq!(check.first_mismatch.map(|(revision, _)| revision), Some(Revision(2)));
    drop(store);
    edit_disk(dir.path(), |_, batch| batch.delete(keys::event(Revision(2), 0)));
    let store = Store::open_with(dir.path(), options).unwrap();
    let (revision, why) = store.chain().verify().unwrap().first_mismatch.unwrap();
    assert_eq!(revision, Revision(2), "{why}");
    assert!(why.contains("missing"), "{why}");
    drop(store);

    // After the newest checkpoint the configuration is rebuilt from the events at open (format 5 keeps no
    // documents): the open refuses, naming the event.
    let dir = tempfile::tempdir().unwrap();
    drop(store_with(dir.path(), 3));
    edit_disk(dir.path(), |_, batch| batch.put(keys::event(Revision(2), 0), vec![1, 2, 3]));
    let error = Store::open(dir.path()).unwrap_err().to_string();
    assert!(error.contains("event 2"), "{error}");
    edit_disk(dir.path(), |_, batch| batch.delete(keys::event(Revision(2), 0)));
    let error = Store::open(dir.path()).unwrap_err().to_string();
    assert!(error.contains("event 3 cannot follow revision 1"), "{error}");
}

#[test]
fn a_store_without_a_chain_gets_one_on_open_and_continues_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), 25);
    let head = store.head();
    let events: Vec<_> = store.events(Revision(1), Revision(25)).map(Result::unwrap).collect();
    let documents: Vec<_> = store.projection().documents().map(|(k, d)| (k.clone(), d.clone())).collect();
    drop(store);
    // Make it a format-2 store: events in the old encoding without their hash, no head; the documents and
    // the revision under keys of their own, no tip.
    edit_disk(dir.path(), |_, batch| {
        for (key, document) in documents {
            batch.put(keys::document(&key), encode(&document));
        }
        batch.delete(Meta::Tip.key());
        batch.put(Meta::Revision.key(), 25u64.to_be_bytes().to_vec());
        for event in events {
            let revision = event.revision;
            let old = EventV1 {
                revision,
                meta: ChangeMetaV1 {
                    actor: event.meta.actor,
                    reason: event.meta.reason,
                    timestamp_ms: event.meta.timestamp_ms,
                    request_id: event.meta.request_id,
                },
                changes: event.changes,
            };
            batch.put(keys::event(revision, 0), encode(&old));
        }
        batch.delete(Meta::Head.key());
        batch.put(Meta::Format.key(), tandem_storage::migrate::FORMAT_WITHOUT_CHAIN.to_be_bytes().to_vec());
    });

    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(store.head(), head, "the migration computes the same chain apply did");
    assert_eq!(store.event(Revision(25)).unwrap().unwrap().meta.reason, "reason 24");
    assert!(store.chain().verify().unwrap().is_intact());
    store.apply(&[Command::Change(change(99))], None).unwrap();
    assert!(store.chain().verify().unwrap().is_intact());
    store.durable().unwrap();
    drop(store);
    let database = SledDatabase::open(&database_dir(dir.path())).unwrap();
    let format = database.current().unwrap().get(&Meta::Format.key()).unwrap().unwrap();
    assert_eq!(format, keys::FORMAT_VERSION.to_be_bytes());
}

#[test]
fn a_store_installed_from_a_snapshot_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = store_with(&dir.path().join("a"), 7);
    let mut bytes = Vec::new();
    source.snapshot().write_to(&mut bytes).unwrap();
    let mut target = Store::open(&dir.path().join("b")).unwrap();
    let summary = target.install_snapshot(&bytes[..]).unwrap();
    assert_eq!(summary.head, source.head());
    assert_eq!(summary.header.head, Some(source.head()));
    assert_eq!(target.head(), source.head());
    assert!(target.chain().verify().unwrap().is_intact());
    drop(target);
    let mut target = Store::open(&dir.path().join("b")).unwrap();
    assert_eq!(target.head(), source.head(), "the head survives a reopen");
    target.apply(&[Command::Change(change(7))], None).unwrap();
    source.apply(&[Command::Change(change(7))], None).unwrap();
    assert_eq!(target.head(), source.head());
}

#[test]
fn a_snapshot_of_an_altered_history_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with(dir.path(), 4));
    alter_event(dir.path(), 2, "reason 1", "reason 8");
    let source = Store::open(dir.path()).unwrap();
    let mut bytes = Vec::new();
    source.snapshot().write_to(&mut bytes).unwrap();
    let error = tandem_storage::snapshot::verify_snapshot(&bytes[..]).unwrap_err().to_string();
    assert!(error.contains("an event was altered"), "{error}");
    let mut target = Store::open(&dir.path().join("target")).unwrap();
    assert!(target.install_snapshot(&bytes[..]).is_err(), "a node does not install it either");
    assert_eq!(target.revision(), Revision(0));
}

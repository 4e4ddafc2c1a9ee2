//! End-to-end tests of the store on a real sled database in a temporary directory: reopen, history, time
//! travel, blobs, snapshots and backups.

use std::io::Read;

use serde_json::json;
use tandem_storage::backup::{restore_backup, verify_backup, write_backup};
use tandem_storage::{
    ChangeMeta, ChangeSet, Command, DiffKind, DocKey, HistoryFilter, Outcome, Rejection, Revision, Store,
    StoreOptions,
};

fn meta(actor: &str) -> ChangeMeta {
    ChangeMeta {
        actor: actor.into(),
        reason: "test".into(),
        timestamp_ms: 1_700_000_000_000,
        request_id: None,
        ..ChangeMeta::default()
    }
}

fn small_checkpoints() -> StoreOptions {
    StoreOptions { checkpoint_interval: 3 }
}

fn accepted(outcome: Outcome) -> Revision {
    match outcome {
        Outcome::Accepted { revision } => revision,
        other => panic!("expected acceptance, got {other:?}"),
    }
}

/// Fills a store with servers, a firmware blob and terminals, changed over several revisions.
fn populate(store: &mut Store) -> tandem_storage::Digest {
    let (digest, size) = store.put_blob(1, &b"firmware image bytes"[..]).unwrap().unwrap();
    accepted(
        store
            .apply_change_set(
                ChangeSet::new(meta("alice"))
                    .put("terminal_servers", "ts1", json!({"address": "10.0.0.5", "port": 3389}))
                    .put(
                        "firmware",
                        "fw1",
                        json!({"version": "1.0", "blob": digest.to_string(), "size": size}),
                    ),
            )
            .unwrap(),
    );
    for i in 0..10 {
        let mac = format!("52:54:00:00:00:{i:02x}");
        accepted(
            store
                .apply_change_set(ChangeSet::new(meta("bob")).put(
                    "terminals",
                    &format!("t{i}"),
                    json!({"mac": mac, "firmware": "fw1", "terminal_servers": ["ts1"]}),
                ))
                .unwrap(),
        );
    }
    accepted(
        store
            .apply_change_set(ChangeSet::new(meta("carol")).patch(
                "terminals",
                "t3",
                json!({"settings": {"kiosk": true}}),
            ))
            .unwrap(),
    );
    accepted(store.apply_change_set(ChangeSet::new(meta("carol")).delete("terminals", "t4")).unwrap());
    digest
}

#[test]
fn reopening_gives_the_same_projection_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let (projection, cluster_id) = {
        let mut store = Store::open_with(dir.path(), small_checkpoints()).unwrap();
        populate(&mut store);
        assert_eq!(store.revision(), Revision(13));
        (store.projection().clone(), store.cluster_id().to_string())
    };
    let store = Store::open_with(dir.path(), small_checkpoints()).unwrap();
    assert_eq!(store.projection(), &projection);
    assert_eq!(store.cluster_id(), cluster_id);
    assert_eq!(store.history(&HistoryFilter::default()).unwrap().len(), 13);
    let t3 = store.get(&DocKey::new("terminals", "t3")).unwrap();
    assert_eq!((t3.create_revision, t3.mod_revision, t3.version), (Revision(5), Revision(12), 2));
    let mac = tandem_storage::Mac::parse("525400000003").unwrap();
    assert_eq!(store.projection().terminal_by_mac(mac).unwrap().0, "t3");
}

/// What a SIGKILL while sled writes its own snapshot leaves behind (found by the crash test: an empty
/// `snap.<LSN>.generating` with a higher LSN than the complete snapshot). Without the repair in
/// `SledDatabase::open`, sled refuses to open the directory ("Read corrupted data at file offset None").
#[test]
fn a_sled_snapshot_file_half_written_by_a_crash_does_not_stop_the_store_opening() {
    let dir = tempfile::tempdir().unwrap();
    let projection = {
        let mut store = Store::open_with(dir.path(), small_checkpoints()).unwrap();
        populate(&mut store);
        store.projection().clone()
    };
    let leftovers =
        [("snap.FFFFFFFFFFFFFFF0.generating", &b""[..]), ("snap.FFFFFFFFFFFFFFF1.generating", b"partial")];
    for (name, bytes) in leftovers {
        std::fs::write(tandem_storage::database_dir(dir.path()).join(name), bytes).unwrap();
        let store = Store::open_with(dir.path(), small_checkpoints())
            .unwrap_or_else(|e| panic!("the store does not open beside {name}: {e}"));
        assert_eq!(store.projection(), &projection);
        assert_eq!(store.history(&HistoryFilter::default()).unwrap().len(), 13);
        drop(store);
        assert!(!tandem_storage::database_dir(dir.path()).join(name).exists(), "{name} was not removed");
    }
}

#[test]
fn history_filters_and_time_travel() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open_with(dir.path(), small_checkpoints()).unwrap();
    populate(&mut store);
    let by_carol =
        store.history(&HistoryFilter { actor: Some("carol".into()), ..Default::default() }).unwrap();
    assert_eq!(by_carol.iter().map(|e| e.revision.0).collect::<Vec<_>>(), vec![12, 13]);
    let t3 = store
        .history(&HistoryFilter {
            collection: Some("terminals".into()),
            id: Some("t3".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(t3.iter().map(|e| e.revision.0).collect::<Vec<_>>(), vec![5, 12]);
    let last_two =
        store.history(&HistoryFilter { limit: Some(2), newest_first: true, ..Default::default() }).unwrap();
    assert_eq!(last_two.iter().map(|e| e.revision.0).collect::<Vec<_>>(), vec![13, 12]);

    let at_5 = store.state_at(Revision(5)).unwrap();
    assert_eq!(at_5.revision(), Revision(5));
    assert_eq!(at_5.collection("terminals").count(), 4);
    assert!(store.get_at(&DocKey::new("terminals", "t4"), Revision(12)).unwrap().is_some());
    assert!(store.get_at(&DocKey::new("terminals", "t4"), Revision(13)).unwrap().is_none());
    assert!(store.state_at(Revision(14)).is_err());

    let diff = store.diff(Revision(11), Revision(13)).unwrap();
    let kinds: Vec<(String, DiffKind)> = diff.iter().map(|d| (d.key.to_string(), d.kind())).collect();
    assert_eq!(
        kinds,
        vec![("terminals/t3".into(), DiffKind::Changed), ("terminals/t4".into(), DiffKind::Deleted)]
    );
}

#[test]
fn revert_is_a_new_event_that_restores_the_old_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open_with(dir.path(), small_checkpoints()).unwrap();
    populate(&mut store);
    let change_set = store.revert_to(Revision(6), meta("admin")).unwrap().unwrap();
    assert_eq!(accepted(store.apply_change_set(change_set).unwrap()), Revision(14));
    let then = store.state_at(Revision(6)).unwrap();
    let now: Vec<_> = store.projection().documents().map(|(k, d)| (k.clone(), d.body.clone())).collect();
    let want: Vec<_> = then.documents().map(|(k, d)| (k.clone(), d.body.clone())).collect();
    assert_eq!(now, want);
    assert!(store.revert_to(Revision(6), meta("admin")).unwrap().is_none(), "nothing left to revert");
    assert_eq!(store.history(&HistoryFilter::default()).unwrap().len(), 14);
}

#[test]
fn request_ids_apply_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let mut change = ChangeSet::new(meta("alice")).put("notes", "n1", json!("hello"));
    change.meta.request_id = Some("req-1".into());
    let outcomes =
        store.apply(&[Command::Change(change.clone()), Command::Change(change.clone())], None).unwrap();
    assert_eq!(
        outcomes,
        vec![Outcome::Accepted { revision: Revision(1) }, Outcome::Duplicate { revision: Revision(1) }]
    );
    drop(store);
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(store.apply_change_set(change).unwrap(), Outcome::Duplicate { revision: Revision(1) });
    assert_eq!(store.revision(), Revision(1));
}

#[test]
fn blobs_stream_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let data: Vec<u8> = (0..3_000_001u32).map(|i| (i * 7 % 251) as u8).collect();
    let (digest, size) = store.put_blob(9, data.as_slice()).unwrap().unwrap();
    assert_eq!(size, data.len() as u64);
    let mut read = Vec::new();
    store.open_blob(&digest).unwrap().read_to_end(&mut read).unwrap();
    assert_eq!(read, data);
    let mut reader = store.open_blob(&digest).unwrap();
    reader.seek_to(1_000_000);
    let mut tail = Vec::new();
    reader.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, data[1_000_000..]);

    // A commit with the wrong digest is rejected and the upload discarded.
    store.apply(&[Command::BlobChunk { upload: 10, chunk: 0, data: b"abc".to_vec() }], None).unwrap();
    let outcome =
        store.apply(&[Command::BlobCommit { upload: 10, digest, size: 3 }], None).unwrap().remove(0);
    assert!(matches!(outcome, Outcome::Rejected(Rejection::BadUpload { .. })), "{outcome:?}");
    assert_eq!(store.blobs().count(), 1);
}

#[test]
fn snapshot_round_trip_and_backup_restore() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open_with(dir.path(), small_checkpoints()).unwrap();
    let digest = populate(&mut store);
    // An upload left in progress travels too.
    store.apply(&[Command::BlobChunk { upload: 77, chunk: 0, data: vec![5; 40_000] }], None).unwrap();

    let backup = dir.path().join("backup.tandem");
    let summary = write_backup(&store.snapshot(), &backup).unwrap();
    assert_eq!(summary.header.revision, Revision(13));
    assert_eq!(verify_backup(&backup).unwrap().header.revision, Revision(13));

    let target = tempfile::tempdir().unwrap();
    let (mut restored, _) = restore_backup(&backup, target.path(), small_checkpoints()).unwrap();
    assert_eq!(restored.projection(), store.projection());
    assert_eq!(
        restored.history(&HistoryFilter::default()).unwrap(),
        store.history(&HistoryFilter::default()).unwrap()
    );
    assert_eq!(restored.state_at(Revision(7)).unwrap(), store.state_at(Revision(7)).unwrap());
    let mut bytes = Vec::new();
    restored.open_blob(&digest).unwrap().read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, b"firmware image bytes");
    // The restored upload can be finished.
    let outcome = restored
        .apply(&[Command::BlobChunk { upload: 77, chunk: 1, data: vec![6; 10] }], None)
        .unwrap()
        .remove(0);
    assert_eq!(outcome, Outcome::ChunkStored { upload: 77, size: 40_010 });
    drop(restored);
    assert!(
        restore_backup(&backup, target.path(), small_checkpoints()).is_err(),
        "restoring over data is refused"
    );

    // Installing over a store with other data replaces it whole (nothing merged).
    let other = tempfile::tempdir().unwrap();
    let mut other_store = Store::open(other.path()).unwrap();
    other_store.apply_change_set(ChangeSet::new(meta("x")).put("stray", "s1", json!(1))).unwrap();
    let mut stream = Vec::new();
    store.snapshot().write_to(&mut stream).unwrap();
    other_store.install_snapshot(stream.as_slice()).unwrap();
    assert_eq!(other_store.projection(), store.projection());
    drop(other_store);
    let reopened = Store::open(other.path()).unwrap();
    assert_eq!(reopened.projection(), store.projection());
    assert!(reopened.get(&DocKey::new("stray", "s1")).is_none());
}

#[test]
fn an_upload_that_ends_while_a_snapshot_is_written_makes_the_snapshot_stale_not_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let chunk = Command::BlobChunk { upload: 7, chunk: 0, data: vec![3u8; 100_000] };
    store.apply(&[chunk], None).unwrap();
    let source = store.snapshot();
    store.apply(&[Command::BlobAbort { upload: 7 }], None).unwrap();
    // The part file stays until sled durably forgets the upload.
    source.write_to(std::io::sink()).expect("the part file is still there before durable()");
    store.durable().unwrap();
    let error = source.write_to(std::io::sink()).unwrap_err();
    assert!(matches!(error, tandem_storage::Error::Stale(_)), "{error}");
    // A view taken now no longer has the upload, and writes.
    store.snapshot().write_to(std::io::sink()).unwrap();
}

/// A backup written by the storage format that shipped before the Raft log left sled (snapshot format 1 in a
/// `TANDBKUP` trailer), committed as a file: every later build must restore it. Regenerate only if the format
/// is meant to change (and then keep the old file too): `TANDEM_WRITE_FIXTURE=1 cargo test -p tandem-storage
/// --test store a_backup_file_of_the_first_format`.
#[test]
fn a_backup_file_of_the_first_format_still_verifies_and_restores() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format1.backup");
    if std::env::var_os("TANDEM_WRITE_FIXTURE").is_some() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        populate(&mut store);
        write_backup(&store.snapshot(), &fixture).unwrap();
    }
    let summary = verify_backup(&fixture).expect("the committed backup verifies");
    assert_eq!(summary.header.revision, Revision(13));
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = restore_backup(&fixture, dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.revision(), Revision(13));
    let body = |collection: &str, id: &str| -> Option<serde_json::Value> {
        let document = store.get(&tandem_storage::DocKey::new(collection, id))?;
        Some(serde_json::from_str(&document.body).unwrap())
    };
    assert_eq!(body("terminal_servers", "ts1").expect("ts1")["address"], "10.0.0.5");
    assert_eq!(body("terminals", "t3").expect("t3")["settings"]["kiosk"], true);
    assert!(body("terminals", "t4").is_none(), "the deletion came back");
    let digest = *store.blobs().next().expect("the firmware blob").0;
    let mut bytes = Vec::new();
    store.open_blob(&digest).unwrap().read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, b"firmware image bytes");
}

//! Forgetting history before a revision (`tandem_storage::forget`): time travel below the base is refused,
//! at and after it unchanged; the chain keeps its hashes and verifies from the base hash; the forget is an
//! event of its own; snapshots and backups carry the base, and an installed store ends with the same base
//! and chain; the result does not depend on how the log was cut into apply batches, nor on whether the
//! store was rebuilt from a snapshot; blobs only forgotten events referenced become removable; backups of
//! the previous formats still restore.

use std::path::Path;

use serde_json::json;
use tandem_storage::backup::{restore_backup, verify_backup, write_backup};
use tandem_storage::keys;
use tandem_storage::snapshot::verify_snapshot;
use tandem_storage::undo::UndoError;
use tandem_storage::{
    ChangeMeta, ChangeSet, Command, Database, DocKey, Error, Outcome, Rejection, Revision, SledDatabase,
    Store, StoreOptions,
};

fn meta() -> ChangeMeta {
    ChangeMeta { actor: "tester".into(), timestamp_ms: 1_700_000_000_000, ..Default::default() }
}

fn note(i: u64) -> Command {
    Command::Change(ChangeSet::new(meta()).put("notes", &format!("n{}", i % 4), json!({"i": i})))
}

fn forget(before: u64) -> Command {
    Command::ForgetHistory {
        before: Revision(before),
        meta: ChangeMeta { actor: "ada".into(), reason: "retention".into(), ..meta() },
    }
}

fn apply(store: &mut Store, command: Command) -> Outcome {
    let outcome = store.apply(&[command], None).unwrap().remove(0);
    store.durable().unwrap();
    outcome
}

fn options() -> StoreOptions {
    StoreOptions { checkpoint_interval: 3 }
}

/// A store with 20 notes events (revisions 1..=20), checkpoints every few events.
fn store_with_history(dir: &Path) -> Store {
    let mut store = Store::open_with(dir, options()).unwrap();
    for i in 1..=20 {
        assert_eq!(apply(&mut store, note(i)), Outcome::Accepted { revision: Revision(i) });
    }
    store
}

fn values(store: &Store, revision: u64) -> Vec<(DocKey, serde_json::Value)> {
    store.state_at(Revision(revision)).unwrap().documents().map(|(k, d)| (k.clone(), d.value())).collect()
}

fn chain_hashes(store: &Store) -> Vec<(Revision, tandem_storage::Digest)> {
    store.chain().hashes(Revision(1), store.revision(), usize::MAX).unwrap()
}

#[test]
fn time_travel_below_the_base_is_refused_and_at_or_after_it_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_history(dir.path());
    let before: Vec<_> = (0..=20).map(|r| values(&store, r)).collect();
    let hashes_before = chain_hashes(&store);
    let head_before = store.head();

    let outcome = apply(&mut store, forget(12));
    assert_eq!(
        outcome,
        Outcome::HistoryForgotten { before: Revision(12), events: 11, revision: Revision(21) }
    );
    assert_eq!((store.base(), store.revision()), (Revision(11), Revision(21)));
    assert_eq!(store.base_hash(), hashes_before[10].1, "the base hash is the hash of revision 11");

    let error = store.state_at(Revision(10)).unwrap_err();
    assert!(matches!(error, Error::Forgotten { revision: Revision(10), base: Revision(11) }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("revision 10 was forgotten") && message.contains("starts at revision 12"),
        "{message}"
    );
    assert!(store.get_at(&DocKey::new("notes", "n1"), Revision(3)).is_err());
    assert!(matches!(store.diff(Revision(5), Revision(15)), Err(Error::Forgotten { .. })));
    assert!(matches!(store.revert_plan(Revision(2)), Err(Error::Forgotten { .. })));
    assert!(matches!(store.undo_plan(Revision(11)), Err(UndoError::Storage(Error::Forgotten { .. }))));
    assert!(
        matches!(store.undo_plan(Revision(12)), Err(UndoError::ChangedLater { .. })),
        "the first kept event is still there to undo (n0 changed again at 16)"
    );
    for revision in 11..=20 {
        assert_eq!(values(&store, revision), before[revision as usize], "state at {revision}");
    }

    // The history starts at 12 and ends with the forget's own record.
    let events: Vec<_> = store.history(&Default::default()).unwrap();
    assert_eq!(events.first().map(|e| e.revision), Some(Revision(12)));
    let record = events.last().unwrap();
    assert_eq!(
        (record.revision, record.meta.actor.as_str(), record.meta.reason.as_str()),
        (Revision(21), "ada", "retention")
    );
    let body = store.get(&DocKey::new("cluster_events", "history-forget-21")).unwrap().value();
    assert_eq!(body["history_starts_at"], 12);
    assert_eq!(body["events_forgotten"], 11);
    assert_eq!(body["base_hash"], store.base_hash().to_string());
    assert!(store.event(Revision(11)).unwrap().is_none());

    // The chain: kept hashes unchanged, the head links on, and it verifies from the base hash.
    let hashes_after = chain_hashes(&store);
    assert_eq!(hashes_after[0], (Revision(11), store.base_hash()), "the base answers its hash");
    assert_eq!(&hashes_after[..10], &hashes_before[10..], "hash(n) unchanged for n >= base");
    assert_ne!(store.head(), head_before);
    let check = store.chain().verify().unwrap();
    assert!(check.is_intact(), "{check:?}");

    // Checkpoints below the base are gone, the one at the base stays; and it all survives a reopen.
    let database = drop_and_open(store, dir.path());
    let space = database.current().unwrap();
    let checkpoints: Vec<u64> = space
        .scan(&[keys::CHECKPOINTS], Some(&[keys::CHECKPOINTS + 1]), false)
        .filter_map(|item| keys::parse_numbered(&item.unwrap().0))
        .filter(|(_, part)| *part == keys::COMPLETE)
        .map(|(revision, _)| revision)
        .collect();
    assert_eq!(checkpoints.first(), Some(&11), "{checkpoints:?}");
    let store =
        Store::open_database(std::sync::Arc::new(database), &dir.path().join("blobs"), options()).unwrap();
    assert_eq!((store.base(), store.head()), (Revision(11), hashes_after.last().unwrap().1));
    assert_eq!(values(&store, 11), before[11]);
    assert!(store.chain().verify().unwrap().is_intact());
}

fn drop_and_open(store: Store, dir: &Path) -> SledDatabase {
    drop(store);
    SledDatabase::open(&dir.join("db")).unwrap()
}

#[test]
fn forgetting_nothing_or_the_future_is_refused_and_everything_so_far_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_history(dir.path());
    let refused = |outcome: Outcome| match outcome {
        Outcome::Rejected(rejection) => rejection,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(
        refused(apply(&mut store, forget(1))),
        Rejection::NothingToForget { before: Revision(1), first_kept: Revision(1) }
    );
    let future = refused(apply(&mut store, forget(22)));
    assert!(future.to_string().contains("at most everything before revision 21"), "{future}");
    assert_eq!(store.revision(), Revision(20), "a refusal writes nothing");

    assert!(matches!(apply(&mut store, forget(8)), Outcome::HistoryForgotten { events: 7, .. }));
    assert_eq!(
        refused(apply(&mut store, forget(8))),
        Rejection::NothingToForget { before: Revision(8), first_kept: Revision(8) },
        "forgetting again before the same revision"
    );
    assert!(matches!(refused(apply(&mut store, forget(5))), Rejection::NothingToForget { .. }));
    // Everything up to now (22 events with the first record): the history keeps only the new record.
    let current = store.revision().0;
    let outcome = apply(&mut store, forget(current + 1));
    assert_eq!(
        outcome,
        Outcome::HistoryForgotten {
            before: Revision(current + 1),
            events: current - 7,
            revision: Revision(current + 1)
        }
    );
    assert_eq!(store.base(), Revision(current));
    let events = store.history(&Default::default()).unwrap();
    assert_eq!(events.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![Revision(current + 1)]);
    assert!(store.chain().verify().unwrap().is_intact());
    assert_eq!(
        values(&store, current),
        values(&store, current + 1)
            .into_iter()
            .filter(|(k, _)| k.id != format!("history-forget-{}", current + 1))
            .collect::<Vec<_>>()
    );
}

#[test]
fn the_result_does_not_depend_on_batches_snapshots_or_request_ids() {
    // Three stores apply the same log: one command per batch; everything in one batch (the forget with
    // the events it forgets); and one installed from a snapshot taken half-way, then the rest.
    let with_ids = |i: u64| {
        let mut change = ChangeSet::new(meta()).put("notes", &format!("n{}", i % 4), json!({"i": i}));
        change.meta.request_id = Some(format!("req-{i}"));
        Command::Change(change)
    };
    let mut log: Vec<Command> = (1..=15).map(with_ids).collect();
    log.push(forget(10));
    // A retry of a forgotten request id is decided again (its id left with its event); a kept one is a
    // duplicate.
    log.push(with_ids(3));
    log.push(with_ids(12));
    log.push(note(99));

    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut one_by_one = Store::open_with(dirs[0].path(), options()).unwrap();
    let outcomes: Vec<Outcome> = log.iter().map(|c| apply(&mut one_by_one, c.clone())).collect();
    assert_eq!(outcomes[16], Outcome::Accepted { revision: Revision(17) }, "request 3 was forgotten");
    assert_eq!(outcomes[17], Outcome::Duplicate { revision: Revision(12) });

    let mut batched = Store::open_with(dirs[1].path(), options()).unwrap();
    assert_eq!(batched.apply(&log, None).unwrap(), outcomes);
    batched.durable().unwrap();

    let mut installed = Store::open_with(dirs[2].path(), options()).unwrap();
    let mut source = Store::open_with(&dirs[2].path().join("source"), options()).unwrap();
    source.apply(&log[..12], None).unwrap();
    let mut bytes = Vec::new();
    source.snapshot().write_to(&mut bytes).unwrap();
    installed.install_snapshot(&bytes[..]).unwrap();
    for command in &log[12..] {
        apply(&mut installed, command.clone());
    }

    for store in [&batched, &installed] {
        assert_eq!((store.revision(), store.base()), (one_by_one.revision(), one_by_one.base()));
        assert_eq!((store.head(), store.base_hash()), (one_by_one.head(), one_by_one.base_hash()));
        assert_eq!(chain_hashes(store), chain_hashes(&one_by_one));
        assert_eq!(store.projection(), one_by_one.projection());
        assert_eq!(values(store, 9), values(&one_by_one, 9));
        assert!(store.chain().verify().unwrap().is_intact());
    }
}

#[test]
fn a_snapshot_carries_the_base_and_an_install_keeps_base_and_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_history(dir.path());
    apply(&mut store, forget(15));
    apply(&mut store, note(100));
    let mut bytes = Vec::new();
    let (header, _) = store.snapshot().write_to(&mut bytes).unwrap();
    assert_eq!((header.format, header.base, header.base_hash), (3, Revision(14), store.base_hash()));

    let summary = verify_snapshot(&bytes[..]).unwrap();
    assert_eq!((summary.head, summary.header.base), (store.head(), Revision(14)));

    let target = tempfile::tempdir().unwrap();
    let mut installed = Store::open_with(target.path(), options()).unwrap();
    apply(&mut installed, note(1));
    installed.install_snapshot(&bytes[..]).unwrap();
    assert_eq!(
        (installed.base(), installed.base_hash(), installed.head()),
        (store.base(), store.base_hash(), store.head())
    );
    assert_eq!(chain_hashes(&installed), chain_hashes(&store));
    assert_eq!(values(&installed, 14), values(&store, 14), "state_at(base) works on the installed store");
    assert_eq!(values(&installed, 18), values(&store, 18));
    assert!(matches!(installed.state_at(Revision(13)), Err(Error::Forgotten { .. })));
    assert!(installed.chain().verify().unwrap().is_intact());
    // Reopened, and forgetting further on the installed store works alike.
    drop(installed);
    let mut installed = Store::open_with(target.path(), options()).unwrap();
    assert_eq!(installed.base(), Revision(14));
    apply(&mut installed, forget(18));
    apply(&mut store, forget(18));
    assert_eq!((installed.head(), installed.base_hash()), (store.head(), store.base_hash()));

    // A base document altered consistently (in the base and the documents, checksum recomputed) still
    // replays to the snapshot's documents: the digest the forget recorded in the chain catches it.
    let mut bytes = Vec::new();
    store.snapshot().write_to(&mut bytes).unwrap();
    let altered = alter(&bytes, br#"{"i":17}"#, br#"{"i":16}"#);
    let error = verify_snapshot(&altered[..]).unwrap_err().to_string();
    assert!(error.contains("a document of the base was altered"), "{error}");
}

/// `bytes` (a snapshot) with every `from` replaced by `to` (same length) and its end checksum recomputed.
fn alter(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mut found = 0;
    for at in 0..out.len() - from.len() {
        if &out[at..at + from.len()] == from {
            out[at..at + from.len()].copy_from_slice(to);
            found += 1;
        }
    }
    assert!(found >= 2, "in the base and the documents");
    // The end frame: kind 7, length 32, the SHA-256 of everything before it.
    let body = out.len() - 37;
    let digest: [u8; 32] =
        sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&out[..body])).into();
    out[body + 5..].copy_from_slice(&digest);
    out
}

#[test]
fn verify_finds_a_base_configuration_altered_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_history(dir.path());
    apply(&mut store, forget(15));
    assert!(store.chain().verify().unwrap().is_intact());
    let database = drop_and_open(store, dir.path());
    let space = database.current().unwrap();
    let key = keys::checkpoint(Revision(14), 0);
    let part = space.get(&key).unwrap().unwrap();
    let mut batch = tandem_storage::engine::WriteBatch::new();
    batch.put(key, alter_once(&part, br#"{"i":13}"#, br#"{"i":12}"#));
    space.write(batch).unwrap();
    let store =
        Store::open_database(std::sync::Arc::new(database), &dir.path().join("blobs"), options()).unwrap();
    let check = store.chain().verify().unwrap();
    let (revision, message) = check.first_mismatch.expect("the altered base is found");
    assert_eq!(revision, Revision(14));
    assert!(message.contains("a document of the base was altered"), "{message}");
}

fn alter_once(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = bytes.windows(from.len()).position(|w| w == from).expect("the text to alter");
    let mut out = bytes.to_vec();
    out[at..at + from.len()].copy_from_slice(to);
    out
}

#[test]
fn a_newer_snapshot_format_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_history(dir.path());
    let mut bytes = Vec::new();
    store.snapshot().write_to(&mut bytes).unwrap();
    bytes[8..12].copy_from_slice(&4u32.to_be_bytes());
    let error = verify_snapshot(&bytes[..]).unwrap_err().to_string();
    assert!(
        error.contains("snapshot format 4 is not supported (this build reads formats 1 to 3)"),
        "{error}"
    );
}

#[test]
fn a_backup_round_trip_keeps_the_base() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_history(dir.path());
    apply(&mut store, forget(6));
    let path = dir.path().join("forgotten.backup");
    write_backup(&store.snapshot(), &path).unwrap();
    let verified = verify_backup(&path).unwrap();
    assert_eq!((verified.header.base, verified.head), (Revision(5), store.head()));
    let (restored, _) = restore_backup(&path, &dir.path().join("restored"), options()).unwrap();
    assert_eq!(
        (restored.base(), restored.base_hash(), restored.head()),
        (store.base(), store.base_hash(), store.head())
    );
    assert_eq!(values(&restored, 5), values(&store, 5));
    assert_eq!(chain_hashes(&restored), chain_hashes(&store));
}

/// A backup written by the build before bases existed (snapshot format 2 in a format-3 trailer), by
/// `tandem backup create` of that build: revision 5 — ts1, firmware thin-os 1.0 (blob `old`), terminal t1,
/// thin-os 2.0 (blob `new`), a note by grace. It must restore; and then forgetting before 5 frees `old`.
#[test]
fn a_backup_of_the_previous_format_restores_and_its_history_can_be_forgotten() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format2.backup");
    let summary = verify_backup(&fixture).expect("the committed backup verifies");
    assert_eq!(
        (summary.header.format, summary.header.revision, summary.header.base),
        (2, Revision(5), Revision(0))
    );
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = restore_backup(&fixture, dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.head().to_string(), "b21e390d157779ad9ab3e48dafb8ba72e906fdb672c8c511d15db29ad31b12c1");
    assert!(store.chain().verify().unwrap().is_intact());
    let old: tandem_storage::Digest =
        "408c737b144ea6c12547fd2586fc1dcad3e3598bd63f6ba9f79eb4adc8ec0614".parse().unwrap();
    let new: tandem_storage::Digest =
        "8876a881219c683994d9cdf0c2919af746795106eee2f85e9f622b8b2d0c9953".parse().unwrap();
    assert!(matches!(apply(&mut store, Command::BlobRemove { digest: old }), Outcome::Rejected(_)));
    let preview = store.forget_preview(Revision(5)).unwrap().unwrap();
    assert_eq!((preview.events, preview.removable_blobs.clone()), (4, vec![(old, 24)]));
    assert!(matches!(apply(&mut store, forget(5)), Outcome::HistoryForgotten { events: 4, .. }));
    assert_eq!(
        apply(&mut store, Command::BlobRemove { digest: old }),
        Outcome::BlobRemoved { digest: old, size: 24 }
    );
    assert!(matches!(apply(&mut store, Command::BlobRemove { digest: new }), Outcome::Rejected(_)));
    assert_eq!(
        store.get_at(&DocKey::new("terminals", "t1"), Revision(4)).unwrap().unwrap().value()["mac"],
        "02:00:00:00:00:01"
    );
}

#[test]
fn blobs_only_forgotten_events_reference_become_removable() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let blob = |store: &mut Store, id: u64| store.put_blob(id, &[id as u8; 3000][..]).unwrap().unwrap().0;
    let (a, b, c, d) = (blob(&mut store, 1), blob(&mut store, 2), blob(&mut store, 3), blob(&mut store, 4));
    let firmware = |digest: tandem_storage::Digest| json!({"version": "1", "blob": digest.to_string()});
    let change = |store: &mut Store, change: ChangeSet| match store.apply_change_set(change).unwrap() {
        Outcome::Accepted { revision } => revision,
        other => panic!("{other:?}"),
    };
    change(&mut store, ChangeSet::new(meta()).put("firmware", "fw", firmware(a))); // 1: a, forgotten
    change(&mut store, ChangeSet::new(meta()).put("firmware", "fw", firmware(b))); // 2: b, in use now
    change(&mut store, ChangeSet::new(meta()).put("firmware", "gone", firmware(d))); // 3: d, at the base
    change(&mut store, ChangeSet::new(meta()).put("notes", "x", json!(1))); // 4
    change(&mut store, ChangeSet::new(meta()).delete("firmware", "gone")); // 5: kept
    change(&mut store, ChangeSet::new(meta()).put("firmware", "later", firmware(c))); // 6: c, kept
    change(&mut store, ChangeSet::new(meta()).delete("firmware", "later")); // 7
    let removable = |store: &Store| -> Vec<tandem_storage::Digest> {
        store.blob_usage().unwrap().into_iter().filter(|u| u.removable()).map(|u| u.digest).collect()
    };
    assert!(removable(&store).is_empty());
    assert!(matches!(apply(&mut store, forget(5)), Outcome::HistoryForgotten { events: 4, .. }));
    assert_eq!(removable(&store), vec![a]);
    let usage = store.blob_usage().unwrap();
    let of_d = usage.iter().find(|u| u.digest == d).unwrap();
    assert_eq!(of_d.history_revisions, vec![Revision(4)], "the base configuration references d");
    for (digest, why) in
        [(b, "in use by firmware/fw"), (c, "history references it"), (d, "history references it")]
    {
        match apply(&mut store, Command::BlobRemove { digest }) {
            Outcome::Rejected(rejection) => assert!(rejection.to_string().contains(why), "{rejection}"),
            other => panic!("{digest}: {other:?}"),
        }
    }
    assert_eq!(
        apply(&mut store, Command::BlobRemove { digest: a }),
        Outcome::BlobRemoved { digest: a, size: 3000 }
    );
    assert!(!dir.path().join("blobs/sha256").join(a.to_string()).exists(), "its file went after durable");
}

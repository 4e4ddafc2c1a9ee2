//! Which blobs are referenced, and removing those that are not (`tandem_storage::blob_usage`): a blob in use
//! by the configuration or referenced by any event of the history is refused with the reason; an
//! unreferenced one leaves sled at once and its file after the next durable; a removal followed by a commit
//! of the same bytes keeps the file; a snapshot taken after the removal does not carry the blob, and one
//! whose blob was removed while it was written reports itself stale instead of failing.

use std::path::{Path, PathBuf};

use serde_json::json;
use tandem_storage::{ChangeMeta, ChangeSet, Command, Digest, Error, Outcome, Rejection, Store, blob_dir};

fn blob_file(dir: &Path, digest: &Digest) -> PathBuf {
    blob_dir(dir).join("sha256").join(digest.to_string())
}

fn meta() -> ChangeMeta {
    ChangeMeta { actor: "tester".into(), ..Default::default() }
}

fn remove(store: &mut Store, digest: Digest) -> Outcome {
    store.apply(&[Command::BlobRemove { digest }], None).unwrap().remove(0)
}

fn refusal(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Rejected(rejection @ Rejection::BlobNotRemovable { .. }) => rejection.to_string(),
        other => panic!("expected a refusal to remove, got {other:?}"),
    }
}

/// Three blobs: `loose` never referenced, `current` used by firmware `fw` now, `old` used by `fw` before.
fn store_with_three_blobs(dir: &Path) -> (Store, Digest, Digest, Digest) {
    let mut store = Store::open(dir).unwrap();
    let (loose, _) = store.put_blob(1, &[1u8; 5000][..]).unwrap().unwrap();
    let (old, old_size) = store.put_blob(2, &[2u8; 7000][..]).unwrap().unwrap();
    let (current, size) = store.put_blob(3, &[3u8; 9000][..]).unwrap().unwrap();
    let firmware =
        |digest: Digest, size: u64| json!({"version": "1", "blob": digest.to_string(), "size": size});
    store.apply_change_set(ChangeSet::new(meta()).put("firmware", "fw", firmware(old, old_size))).unwrap();
    store.apply_change_set(ChangeSet::new(meta()).put("firmware", "fw", firmware(current, size))).unwrap();
    (store, loose, current, old)
}

#[test]
fn usage_tells_what_references_each_blob() {
    let dir = tempfile::tempdir().unwrap();
    let (store, loose, current, old) = store_with_three_blobs(dir.path());
    let usage = store.blob_usage().unwrap();
    let of = |digest: Digest| usage.iter().find(|u| u.digest == digest).unwrap().clone();
    assert!(of(loose).removable() && of(loose).in_use_by.is_empty() && of(loose).history_references == 0);
    assert_eq!(of(current).in_use_by, vec!["firmware/fw".to_string()]);
    assert_eq!(
        (of(current).history_references, of(current).history_revisions.clone()),
        (1, vec![tandem_storage::Revision(2)])
    );
    assert!(of(old).in_use_by.is_empty() && !of(old).removable());
    assert_eq!(of(old).history_revisions, vec![tandem_storage::Revision(1)]);
    // Not used by the configuration now: `loose` and `old`.
    assert_eq!(store.unreferenced_blob_count(), (2, 5000 + 7000));
}

#[test]
fn only_an_unreferenced_blob_is_removed_and_its_file_goes_after_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, loose, current, old) = store_with_three_blobs(dir.path());

    let in_use = refusal(&remove(&mut store, current));
    assert!(in_use.contains("in use by firmware/fw"), "{in_use}");
    let in_history = refusal(&remove(&mut store, old));
    assert!(in_history.contains("history references it at 1 revision(s) (newest: 1)"), "{in_history}");
    let unknown = refusal(&remove(&mut store, Digest([9; 32])));
    assert!(unknown.contains("no such blob"), "{unknown}");

    assert_eq!(remove(&mut store, loose), Outcome::BlobRemoved { digest: loose, size: 5000 });
    assert!(store.blob_size(&loose).is_none() && store.open_blob(&loose).is_none());
    assert!(blob_file(dir.path(), &loose).exists(), "the file stays until sled durably forgot the blob");
    store.durable().unwrap();
    assert!(!blob_file(dir.path(), &loose).exists(), "the file is deleted after durable");
    assert!(refusal(&remove(&mut store, loose)).contains("no such blob"), "a second removal is refused");
    for kept in [current, old] {
        assert!(blob_file(dir.path(), &kept).exists() && store.blob_size(&kept).is_some());
    }
    drop(store);

    // A restart: the removal held, nothing else changed.
    let store = Store::open(dir.path()).unwrap();
    assert!(store.blob_size(&loose).is_none());
    assert_eq!(store.blobs().count(), 2);
    assert_eq!(store.unreferenced_blob_count(), (1, 7000));
}

#[test]
fn the_same_bytes_committed_again_before_durable_keep_their_file() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, loose, _, _) = store_with_three_blobs(dir.path());
    assert!(matches!(remove(&mut store, loose), Outcome::BlobRemoved { .. }));
    // Uploaded again before the removal was made durable (put_blob applies, then makes it durable).
    let (again, _) = store.put_blob(7, &[1u8; 5000][..]).unwrap().unwrap();
    assert_eq!(again, loose);
    store.durable().unwrap();
    assert!(blob_file(dir.path(), &loose).exists(), "the re-committed blob keeps its file");
    assert_eq!(store.blob_size(&loose), Some(5000));
    drop(store);
    assert_eq!(Store::open(dir.path()).unwrap().blob_size(&loose), Some(5000));
}

#[test]
fn snapshots_after_a_removal_do_not_carry_the_blob_and_one_caught_in_between_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, loose, _, _) = store_with_three_blobs(dir.path());
    let before = store.snapshot();
    assert!(matches!(remove(&mut store, loose), Outcome::BlobRemoved { .. }));
    store.durable().unwrap();
    // Taken before the removal, written after its file went: stale, not damage.
    match before.write_to(std::io::sink()) {
        Err(Error::Stale(why)) => assert!(why.contains("removed"), "{why}"),
        other => panic!("expected a stale snapshot, got {other:?}"),
    }
    let mut bytes = Vec::new();
    let (header, _) = store.snapshot().write_to(&mut bytes).unwrap();
    assert_eq!((header.blobs, header.blob_bytes), (2, 7000 + 9000));
    let target = tempfile::tempdir().unwrap();
    let mut installed = Store::open(target.path()).unwrap();
    installed.install_snapshot(&bytes[..]).unwrap();
    assert!(installed.blob_size(&loose).is_none());
    assert_eq!(installed.blobs().count(), 2);
}

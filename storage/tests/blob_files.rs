//! Blob files at the points where a crash or a damaged disk leaves them out of step with sled: a part file
//! ahead of sled, a commit linked into place that sled never recorded, a part file behind sled, a blob file
//! missing or with the wrong bytes. Each is set up on real files the way the crash would leave them, then
//! the store is reopened (a restart) and must either carry on exactly or refuse with a clear error; a blob
//! whose bytes do not match its digest is never served.

use std::io::Read;
use std::path::{Path, PathBuf};

use tandem_storage::{Command, Digest, Error, Outcome, Store, blob_dir};

const UPLOAD: u64 = 0x5eed;

/// Deterministic bytes that are not all alike (so that a cut or a shift changes the digest).
fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn chunk(chunk: u32, data: Vec<u8>) -> Command {
    Command::BlobChunk { upload: UPLOAD, chunk, data }
}

fn apply_one(store: &mut Store, command: Command) -> Outcome {
    store.apply(&[command], None).unwrap().remove(0)
}

/// The part file of [`UPLOAD`] (in whichever uploads directory the store uses).
fn part_file(dir: &Path) -> PathBuf {
    let blobs = blob_dir(dir);
    let uploads = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.file_name().unwrap().to_string_lossy().starts_with("uploads-"))
        .expect("an uploads directory");
    uploads.join(format!("{UPLOAD:016x}.part"))
}

fn blob_file(dir: &Path, digest: &Digest) -> PathBuf {
    blob_dir(dir).join("sha256").join(digest.to_string())
}

fn read_blob(store: &Store, digest: &Digest) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    store.open_blob(digest).expect("the blob is committed").read_to_end(&mut out)?;
    Ok(out)
}

#[test]
fn a_part_file_ahead_of_sled_is_cut_back_and_the_upload_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (bytes(300_000, 1), bytes(200_000, 2));
    {
        let mut store = Store::open(dir.path()).unwrap();
        apply_one(&mut store, chunk(0, first.clone()));
        store.durable().unwrap();
    }
    // The crash: chunk 1 reached the part file, its sled batch did not.
    let mut file = std::fs::OpenOptions::new().append(true).open(part_file(dir.path())).unwrap();
    std::io::Write::write_all(&mut file, &bytes(123_456, 9)).unwrap();
    drop(file);

    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(
        std::fs::metadata(part_file(dir.path())).unwrap().len(),
        first.len() as u64,
        "cut to sled's size"
    );
    // The log replays chunk 1, then the commit.
    apply_one(&mut store, chunk(1, second.clone()));
    let whole = [first, second].concat();
    let digest = Digest::of(&whole);
    let outcome =
        apply_one(&mut store, Command::BlobCommit { upload: UPLOAD, digest, size: whole.len() as u64 });
    assert_eq!(outcome, Outcome::BlobCommitted { digest, size: whole.len() as u64 });
    assert!(read_blob(&store, &digest).unwrap() == whole);
}

#[test]
fn a_commit_linked_into_place_but_not_recorded_by_sled_is_replayed_without_damaging_the_blob_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(500_000, 3);
    let digest = Digest::of(&data);
    {
        let mut store = Store::open(dir.path()).unwrap();
        apply_one(&mut store, chunk(0, data[..250_000].to_vec()));
        store.durable().unwrap();
    }
    // The crash: chunk 1 reached the part file and the commit linked it into place; sled's durable state
    // knows only chunk 0.
    let mut file = std::fs::OpenOptions::new().append(true).open(part_file(dir.path())).unwrap();
    std::io::Write::write_all(&mut file, &data[250_000..]).unwrap();
    drop(file);
    std::fs::hard_link(part_file(dir.path()), blob_file(dir.path(), &digest)).unwrap();

    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(std::fs::metadata(part_file(dir.path())).unwrap().len(), 250_000);
    assert_eq!(
        std::fs::read(blob_file(dir.path(), &digest)).unwrap().len(),
        data.len(),
        "cutting the part file did not cut the blob file it was linked to"
    );
    apply_one(&mut store, chunk(1, data[250_000..].to_vec()));
    let outcome =
        apply_one(&mut store, Command::BlobCommit { upload: UPLOAD, digest, size: data.len() as u64 });
    assert!(matches!(outcome, Outcome::BlobCommitted { .. }), "{outcome:?}");
    assert!(read_blob(&store, &digest).unwrap() == data);
    store.durable().unwrap();
    let names: Vec<_> = std::fs::read_dir(blob_dir(dir.path()).join("sha256")).unwrap().collect();
    assert_eq!(names.len(), 1, "one file for the blob, no temporary left");
    assert!(!part_file(dir.path()).exists(), "the part file goes once sled durably forgot the upload");
}

#[test]
fn a_part_file_behind_sled_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path()).unwrap();
        apply_one(&mut store, chunk(0, bytes(100_000, 4)));
        store.durable().unwrap();
    }
    let file = std::fs::OpenOptions::new().write(true).open(part_file(dir.path())).unwrap();
    file.set_len(40_000).unwrap();
    drop(file);
    let error = Store::open(dir.path()).unwrap_err();
    assert!(matches!(error, Error::Corrupt(_)), "{error}");
    assert!(error.to_string().contains("40000 bytes, sled says 100000"), "{error}");
}

#[test]
fn a_part_file_with_other_bytes_than_sled_recorded_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path()).unwrap();
        apply_one(&mut store, chunk(0, bytes(100_000, 4)));
        store.durable().unwrap();
    }
    // A hole the kernel never wrote back, say: same length, other bytes.
    let file = std::fs::OpenOptions::new().write(true).open(part_file(dir.path())).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0u8; 4096], 8192).unwrap();
    drop(file);
    let error = Store::open(dir.path()).unwrap_err();
    assert!(error.to_string().contains("sled recorded"), "{error}");
}

/// Commits `data` through the store's own upload path, durably; returns its digest.
fn committed_blob(dir: &Path, data: &[u8]) -> Digest {
    let mut store = Store::open(dir).unwrap();
    let (digest, _) = store.put_blob(UPLOAD, data).unwrap().unwrap();
    digest
}

#[test]
fn a_blob_file_whose_bytes_do_not_match_its_digest_is_never_served_nor_snapshotted() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(700_000, 5);
    let digest = committed_blob(dir.path(), &data);
    // Bit rot: one byte changed, the length kept.
    let file = std::fs::OpenOptions::new().write(true).open(blob_file(dir.path(), &digest)).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[data[600_000] ^ 0xFF], 600_000).unwrap();
    drop(file);

    let store = Store::open(dir.path()).expect("sizes match: the store opens");
    let mut reader = store.open_blob(&digest).unwrap();
    let mut first = vec![0u8; 1024];
    let error = reader.read(&mut first).unwrap_err();
    assert!(error.to_string().contains("does not match its name"), "{error}");
    assert!(error.to_string().contains("delete the file and restart the node"), "{error}");
    let mut ranged = store.open_blob(&digest).unwrap();
    ranged.seek_to(650_000);
    assert!(ranged.read(&mut first).is_err(), "no byte of it from any offset either");
    let error = store.snapshot().write_to(std::io::sink()).unwrap_err();
    assert!(matches!(error, Error::Corrupt(_)), "{error}");
}

#[test]
fn uploading_the_same_blob_again_repairs_a_damaged_file_and_keeps_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(90_000, 6);
    let digest = committed_blob(dir.path(), &data);
    std::fs::write(blob_file(dir.path(), &digest), vec![0u8; data.len()]).unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    assert!(read_blob(&store, &digest).is_err());
    assert_eq!(store.put_blob(UPLOAD + 1, &data[..]).unwrap().unwrap(), (digest, data.len() as u64));
    assert!(read_blob(&store, &digest).unwrap() == data);
    assert_eq!(std::fs::read_dir(blob_dir(dir.path()).join("sha256")).unwrap().count(), 1);
}

#[test]
fn a_missing_blob_file_stops_the_store_opening_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let digest = committed_blob(dir.path(), &bytes(10_000, 7));
    std::fs::remove_file(blob_file(dir.path(), &digest)).unwrap();
    let error = Store::open(dir.path()).unwrap_err();
    assert!(matches!(error, Error::Corrupt(_)), "{error}");
    assert!(
        error.to_string().contains(&digest.to_string()) && error.to_string().contains("missing"),
        "{error}"
    );
}

#[test]
fn a_rebuild_from_a_snapshot_rewrites_blob_files_from_verified_bytes() {
    let source_dir = tempfile::tempdir().unwrap();
    let data = bytes(1_500_000, 8);
    let digest = committed_blob(source_dir.path(), &data);
    let mut source = Store::open(source_dir.path()).unwrap();
    apply_one(&mut source, chunk(0, bytes(70_000, 9)));
    let mut snapshot = Vec::new();
    source.snapshot().write_to(&mut snapshot).unwrap();

    // The target's blob file survived a rebuild but was damaged; its sled is new and empty.
    let target_dir = tempfile::tempdir().unwrap();
    let mut target = Store::open(target_dir.path()).unwrap();
    std::fs::write(blob_file(target_dir.path(), &digest), b"damaged").unwrap();
    target.install_snapshot(&snapshot[..]).unwrap();
    assert!(read_blob(&target, &digest).unwrap() == data);
    // The upload in progress came along and carries on.
    let rest = bytes(5, 10);
    apply_one(&mut target, chunk(1, rest.clone()));
    let whole = [bytes(70_000, 9), rest].concat();
    let outcome = apply_one(
        &mut target,
        Command::BlobCommit { upload: UPLOAD, digest: Digest::of(&whole), size: whole.len() as u64 },
    );
    assert!(matches!(outcome, Outcome::BlobCommitted { .. }), "{outcome:?}");
    drop(target);
    let reopened = Store::open(target_dir.path()).unwrap();
    assert!(read_blob(&reopened, &Digest::of(&whole)).unwrap() == whole);
    let uploads_dirs = std::fs::read_dir(blob_dir(target_dir.path()))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("uploads-"))
        .count();
    assert_eq!(uploads_dirs, 1, "the uploads directory of the replaced generation is gone");
}

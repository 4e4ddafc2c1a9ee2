//! Snapshots and backups: the snapshot stream reader ([`verify_snapshot`]: frames, header, events replayed in
//! order, documents against the replay, blob and upload data, the end checksum), the backup trailer and
//! checksum ([`verify_backup`], formats 1 and 2), and installing a snapshot into a store
//! ([`Store::install_snapshot`]).
//!
//! Input: one flag byte, then a snapshot stream. Both checksums are made valid by the target, so that the
//! parsers themselves are reached rather than the checksum checks:
//! - flag bit 0: the input is the stream *without* its end frame; the target appends an end frame holding the
//!   SHA-256 of the bytes before it (otherwise the input is taken as it is);
//! - flag bit 1: the backup file gets a format-1 trailer (otherwise format 2); the trailer always holds the
//!   stream's real length and SHA-256.
//!
//! A stream that verifies is installed into a store, which must then succeed too.
//!
//! With `TANDEM_FUZZ_SEEDS=DIR` set, the target first writes seed inputs built from a real store into DIR.
#![no_main]

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tandem_storage::backup::{verify_backup, write_backup_to};
use tandem_storage::snapshot::verify_snapshot;
use tandem_storage::{ChangeMeta, ChangeSet, Command, Digest, Store};

/// The end frame: kind 7, length 32, SHA-256 of every byte before the frame.
fn with_end_frame(stream: &[u8]) -> Vec<u8> {
    let mut out = stream.to_vec();
    out.extend_from_slice(&[7, 0, 0, 0, 32]);
    out.extend_from_slice(&Sha256::digest(stream));
    out
}

fn backup_file(snapshot: &[u8], format_1: bool) -> Vec<u8> {
    let mut out = snapshot.to_vec();
    out.extend_from_slice(b"TANDBKUP");
    if !format_1 {
        out.extend_from_slice(&2u32.to_be_bytes());
    }
    out.extend_from_slice(&(snapshot.len() as u64).to_be_bytes());
    out.extend_from_slice(&Sha256::digest(snapshot));
    out
}

/// A scratch directory in memory when possible (install fsyncs).
fn scratch() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).expect("a temp dir"))
}

fn store() -> &'static Mutex<Store> {
    static STORE: OnceLock<Mutex<Store>> = OnceLock::new();
    STORE.get_or_init(|| Mutex::new(Store::open(&scratch().path().join("store")).expect("a store")))
}

/// Seeds: snapshots of a store with history, documents, a blob and an upload in progress.
fn write_seeds(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).expect("the seed directory");
    let source = tempfile::tempdir().expect("a temp dir");
    let mut store = Store::open(source.path()).expect("a store");
    let write = |store: &Store, name: &str| {
        let mut snapshot = Vec::new();
        store.snapshot().write_to(&mut snapshot).expect("a snapshot");
        let without_end = &snapshot[..snapshot.len() - 37];
        std::fs::write(dir.join(format!("{name}-end-appended")), [&[1u8][..], without_end].concat()).unwrap();
        std::fs::write(dir.join(format!("{name}-v1-trailer")), [&[3u8][..], without_end].concat()).unwrap();
        std::fs::write(dir.join(format!("{name}-as-is")), [&[0u8][..], &snapshot].concat()).unwrap();
        let mut backup = Vec::new();
        write_backup_to(&store.snapshot(), &mut backup).expect("a backup");
        // The target builds the trailer the way `write_backup_to` does.
        assert_eq!(&backup[backup.len() - 52..][..12], &backup_file(b"", false)[..12]);
    };
    write(&store, "empty");
    let meta = || ChangeMeta { actor: "seed".into(), reason: "seed".into(), ..ChangeMeta::default() };
    let blob = b"firmware bytes".to_vec();
    let digest = Digest::of(&blob);
    store
        .apply(
            &[
                Command::BlobChunk { upload: 1, chunk: 0, data: blob.clone() },
                Command::BlobCommit { upload: 1, digest, size: blob.len() as u64 },
            ],
            Some(b"position"),
        )
        .expect("a blob");
    store
        .apply(
            &[Command::Change(
                ChangeSet::new(meta())
                    .put("terminal_servers", "ts1", json!({"address": "10.0.0.5", "port": 3389}))
                    .put("firmware", "fw1", json!({"version": "1", "blob": digest.to_string()}))
                    .put("terminals", "t1", json!({"mac": "52:54:00:12:34:56", "firmware": "fw1"})),
            )],
            Some(b"position 2"),
        )
        .expect("a change");
    store
        .apply(
            &[
                Command::Change(ChangeSet::new(meta()).patch(
                    "terminal_servers",
                    "ts1",
                    json!({"port": 3390}),
                )),
                Command::Change(ChangeSet::new(meta()).delete("terminals", "t1")),
                Command::BlobChunk { upload: 2, chunk: 0, data: b"half an upload".to_vec() },
            ],
            None,
        )
        .expect("more changes");
    write(&store, "history-blob-upload");
}

fuzz_target!(
    init: {
        if let Some(dir) = std::env::var_os("TANDEM_FUZZ_SEEDS") {
            write_seeds(&PathBuf::from(dir));
        }
    },
    |data: &[u8]| {
    let Some((&flags, stream)) = data.split_first() else { return };
    let snapshot = if flags & 1 == 1 { with_end_frame(stream) } else { stream.to_vec() };
    let verified = verify_snapshot(&snapshot[..]);

    let path = scratch().path().join("fuzz.backup");
    let mut file = std::fs::File::create(&path).expect("the backup file");
    file.write_all(&backup_file(&snapshot, flags & 2 == 2)).expect("writing the backup file");
    drop(file);
    let from_backup = verify_backup(&path);
    match (&verified, &from_backup) {
        (Ok(a), Ok(b)) => assert_eq!(a.header, b.header),
        (Err(_), Err(_)) => {}
        _ => panic!("the snapshot verifies as {verified:?} but its backup as {from_backup:?}"),
    }

    if verified.is_ok() {
        let mut store = store().lock().unwrap_or_else(|e| e.into_inner());
        let installed = store.install_snapshot(&snapshot[..]);
        assert!(installed.is_ok(), "verified but does not install: {installed:?}");
    }
});

//! A backup file that was altered or cut short must never verify or restore.
//!
//! The test builds a small but complete backup (events, documents, a blob, an upload in progress), then
//! flips every single byte of it, one at a time, and truncates it at every length: `verify_backup` must refuse
//! each damaged file with an `InvalidSnapshot` error, and a sample of them must also be refused by
//! `restore_backup` without leaving a store behind.

use std::fs;

use serde_json::json;
use tandem_storage::backup::{restore_backup, verify_backup, write_backup};
use tandem_storage::{ChangeMeta, ChangeSet, Command, Error, Store, StoreOptions};

fn build_backup(dir: &std::path::Path) -> Vec<u8> {
    let mut store = Store::open(&dir.join("source")).unwrap();
    let meta = ChangeMeta { actor: "tester".into(), ..Default::default() };
    let (digest, size) = store.put_blob(1, &[7u8; 300][..]).unwrap().unwrap();
    store
        .apply_change_set(
            ChangeSet::new(meta.clone())
                .put("firmware", "fw", json!({"version": "2", "blob": digest.to_string(), "size": size}))
                .put("terminal_servers", "ts", json!({"address": "10.1.1.1"})),
        )
        .unwrap();
    for i in 0..3 {
        store
            .apply_change_set(ChangeSet::new(meta.clone()).put(
                "terminals",
                &format!("t{i}"),
                json!({"mac": format!("02:00:00:00:00:0{i}"), "firmware": "fw"}),
            ))
            .unwrap();
    }
    store.apply(&[Command::BlobChunk { upload: 5, chunk: 0, data: vec![1; 20] }], None).unwrap();
    let path = dir.join("good.backup");
    write_backup(&store.snapshot(), &path).unwrap();
    fs::read(&path).unwrap()
}

fn assert_refused(path: &std::path::Path, what: &str) {
    match verify_backup(path) {
        Err(Error::InvalidSnapshot(_)) => {}
        other => panic!("{what}: verify gave {other:?}"),
    }
}

#[test]
fn every_flipped_byte_and_every_truncation_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let good = build_backup(dir.path());
    let good_path = dir.path().join("good.backup");
    verify_backup(&good_path).expect("the intact backup verifies");
    let bad_path = dir.path().join("bad.backup");

    for position in 0..good.len() {
        let mut bad = good.clone();
        bad[position] ^= 0x5a;
        fs::write(&bad_path, &bad).unwrap();
        assert_refused(&bad_path, &format!("byte {position} of {} flipped", good.len()));
    }
    for length in 0..good.len() {
        fs::write(&bad_path, &good[..length]).unwrap();
        assert_refused(&bad_path, &format!("truncated to {length} of {} bytes", good.len()));
    }
}

#[test]
fn a_damaged_backup_is_not_restored() {
    let dir = tempfile::tempdir().unwrap();
    let good = build_backup(dir.path());
    let bad_path = dir.path().join("bad.backup");
    for (i, position) in
        [0, 13, good.len() / 3, good.len() / 2, good.len() - 60, good.len() - 1].into_iter().enumerate()
    {
        let mut bad = good.clone();
        bad[position] ^= 0x01;
        fs::write(&bad_path, &bad).unwrap();
        let target = dir.path().join(format!("restore-{i}"));
        let result = restore_backup(&bad_path, &target, StoreOptions::default());
        assert!(matches!(result, Err(Error::InvalidSnapshot(_))), "byte {position}: {result:?}");
        let store = Store::open(&target).unwrap();
        assert_eq!(store.revision().0, 0, "nothing was restored from a damaged file");
        assert!(store.projection().is_empty());
    }
}

#[test]
fn a_backup_of_a_newer_format_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let mut backup = build_backup(dir.path());
    let format_at = backup.len() - 52 + 8;
    assert_eq!(&backup[format_at - 8..format_at], b"TANDBKUP", "the trailer is 52 bytes from the end");
    assert_eq!(backup[format_at..format_at + 4], 3u32.to_be_bytes(), "this binary writes format 3");
    backup[format_at..format_at + 4].copy_from_slice(&4u32.to_be_bytes());
    let path = dir.path().join("newer.backup");
    fs::write(&path, &backup).unwrap();
    match verify_backup(&path) {
        Err(Error::InvalidSnapshot(message)) => {
            assert!(message.contains("format 4") && message.contains("formats 1 to 3"), "{message}")
        }
        other => panic!("a format-4 backup gave {other:?}"),
    }
}

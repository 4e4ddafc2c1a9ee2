//! A store directory written by a build that kept blob bytes in sled (format 1), laid out key by key as that
//! build wrote it, opened by this build: its blobs move into files on the first open ([`tandem_storage::migrate`]).

use std::io::Read;
use std::path::Path;

use tandem_storage::blob::UploadMeta;
use tandem_storage::engine::WriteBatch;
use tandem_storage::keys::{self, Meta};
use tandem_storage::limits::STORED_CHUNK_BYTES;
use tandem_storage::migrate::{BlobMetaV1, FORMAT_WITH_BLOBS_IN_SLED};
use tandem_storage::{
    Command, Database, Digest, Error, Outcome, SledDatabase, Store, blob_dir, database_dir,
};

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect()
}

/// What the format-1 build stored for a value (bincode, standard configuration).
fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap()
}

/// Stores `data` as format-1 parts of `upload`.
fn put_parts_v1(batch: &mut WriteBatch, upload: u64, data: &[u8]) {
    for (part, piece) in data.chunks(STORED_CHUNK_BYTES).enumerate() {
        batch.put(keys::blob_part(upload, part as u32), piece.to_vec());
    }
}

/// A store directory as a format-1 build left it: one committed blob (under upload 42), one upload in
/// progress (7), and the uploads directory of an earlier migration attempt that was cut short.
fn format_1_store(dir: &Path, blob: &[u8], partial: &[u8]) {
    let database = SledDatabase::open(&database_dir(dir)).unwrap();
    let space = database.current().unwrap();
    let mut batch = WriteBatch::new();
    batch.put(Meta::Format.key(), FORMAT_WITH_BLOBS_IN_SLED.to_be_bytes().to_vec());
    batch.put(Meta::ClusterId.key(), b"c0ffee".to_vec());
    batch.put(Meta::Revision.key(), 0u64.to_be_bytes().to_vec());
    batch.put(keys::blob(&Digest::of(blob)), encode(&BlobMetaV1 { size: blob.len() as u64, upload: 42 }));
    put_parts_v1(&mut batch, 42, blob);
    batch.put(keys::upload(7), encode(&UploadMeta { next_chunk: 1, size: partial.len() as u64 }));
    put_parts_v1(&mut batch, 7, partial);
    space.write(batch).unwrap();
    database.durable().unwrap();
    std::fs::create_dir_all(blob_dir(dir).join("uploads-00000000deadbeef")).unwrap();
}

#[test]
fn a_format_1_store_moves_its_blobs_into_files_on_first_open() {
    let dir = tempfile::tempdir().unwrap();
    let (blob, partial, rest) = (bytes(100_000, 1), bytes(40_000, 2), bytes(1_000, 3));
    format_1_store(dir.path(), &blob, &partial);

    let mut store = Store::open(dir.path()).unwrap();
    let digest = Digest::of(&blob);
    assert!(blob_dir(dir.path()).join("sha256").join(digest.to_string()).is_file());
    let mut read = Vec::new();
    store.open_blob(&digest).unwrap().read_to_end(&mut read).unwrap();
    assert!(read == blob);
    assert!(
        !blob_dir(dir.path()).join("uploads-00000000deadbeef").exists(),
        "the cut-short attempt's directory"
    );
    // The upload in progress carries on where it was.
    store.apply(&[Command::BlobChunk { upload: 7, chunk: 1, data: rest.clone() }], None).unwrap();
    let whole = [partial, rest].concat();
    let commit = Command::BlobCommit { upload: 7, digest: Digest::of(&whole), size: whole.len() as u64 };
    let outcome = store.apply(&[commit], None).unwrap().remove(0);
    assert!(matches!(outcome, Outcome::BlobCommitted { .. }), "{outcome:?}");
    store.durable().unwrap();
    drop(store);

    let database = SledDatabase::open(&database_dir(dir.path())).unwrap();
    let space = database.current().unwrap();
    assert!(
        space.scan(&[keys::BLOB_PARTS], Some(&[keys::BLOB_PARTS + 1]), false).next().is_none(),
        "no blob byte is left in sled"
    );
    assert_eq!(space.get(&Meta::Format.key()).unwrap().unwrap(), keys::FORMAT_VERSION.to_be_bytes());
    drop((space, database));
    assert_eq!(Store::open(dir.path()).unwrap().blobs().count(), 2, "a second open finds format 2");
}

#[test]
fn a_format_1_blob_whose_parts_do_not_match_its_digest_stops_the_migration() {
    let dir = tempfile::tempdir().unwrap();
    format_1_store(dir.path(), &bytes(50_000, 4), &[]);
    {
        let database = SledDatabase::open(&database_dir(dir.path())).unwrap();
        let mut batch = WriteBatch::new();
        batch.put(keys::blob_part(42, 1), vec![0u8; STORED_CHUNK_BYTES]);
        database.current().unwrap().write(batch).unwrap();
        database.durable().unwrap();
    }
    let error = Store::open(dir.path()).unwrap_err();
    assert!(matches!(error, Error::Corrupt(_)), "{error}");
    assert!(error.to_string().contains("migrating blob"), "{error}");
    let database = SledDatabase::open(&database_dir(dir.path())).unwrap();
    let format = database.current().unwrap().get(&Meta::Format.key()).unwrap().unwrap();
    assert_eq!(format, FORMAT_WITH_BLOBS_IN_SLED.to_be_bytes(), "left in format 1, to retry");
}

/// A format-2 store's events are in the encoding without audit fields; the first open re-encodes them and
/// chains them. A migration cut short after some events were re-encoded resumes after its mark.
#[test]
fn a_format_2_history_gets_audit_fields_and_a_hash_chain_on_first_open() {
    use tandem_storage::legacy::{ChangeMetaV1, ChangeSetV1, EventV1};
    use tandem_storage::{ChangeMeta, ChangeSet, Event, Revision};

    for cut_after in [None, Some(2u64)] {
        let dir = tempfile::tempdir().unwrap();
        let events: Vec<Event> = {
            // The events a store of this build makes, to compare with.
            let mut reference = Store::open(&dir.path().join("reference")).unwrap();
            for i in 1..=4u64 {
                let meta = ChangeMeta {
                    actor: format!("op{i}"),
                    reason: format!("why {i}"),
                    ..ChangeMeta::default()
                };
                let change = ChangeSet::new(meta).put("notes", &format!("n{i}"), serde_json::json!({"i": i}));
                reference.apply(&[Command::Change(change)], None).unwrap();
            }
            reference.events(Revision(1), Revision(4)).map(Result::unwrap).collect()
        };
        let head = Store::open(&dir.path().join("reference")).unwrap().head();

        let database = SledDatabase::open(&database_dir(dir.path())).unwrap();
        let space = database.current().unwrap();
        let mut batch = WriteBatch::new();
        batch.put(Meta::Format.key(), 2u32.to_be_bytes().to_vec());
        batch.put(Meta::ClusterId.key(), b"c0ffee".to_vec());
        batch.put(Meta::Revision.key(), 4u64.to_be_bytes().to_vec());
        batch.put(Meta::UploadDir.key(), b"uploads-0000000000000001".to_vec());
        let mut hash = tandem_storage::chain::GENESIS;
        for event in &events {
            let revision = event.revision.0;
            let stored = match cut_after {
                Some(cut) if revision <= cut => {
                    // Already rewritten by the attempt that was cut short: hash ‖ new encoding.
                    hash = tandem_storage::chain::link(&hash, &encode(event));
                    [&hash.0[..], &encode(event)].concat()
                }
                _ => encode(&EventV1 {
                    revision: event.revision,
                    meta: ChangeMetaV1 {
                        actor: event.meta.actor.clone(),
                        reason: event.meta.reason.clone(),
                        timestamp_ms: event.meta.timestamp_ms,
                        request_id: None,
                    },
                    changes: event.changes.clone(),
                }),
            };
            batch.put(keys::event(event.revision, 0), stored);
        }
        if let Some(cut) = cut_after {
            batch.put(Meta::ReencodedUpTo.key(), cut.to_be_bytes().to_vec());
        }
        let reference = Store::open(&dir.path().join("reference")).unwrap();
        for (key, document) in reference.projection().documents() {
            batch.put(keys::document(key), encode(document));
        }
        space.write(batch).unwrap();
        database.durable().unwrap();
        drop((space, database));

        let mut store = Store::open(dir.path()).unwrap();
        assert_eq!(store.head(), head, "cut after {cut_after:?}: the same chain as a store of this build");
        let read: Vec<Event> = store.events(Revision(1), Revision(4)).map(Result::unwrap).collect();
        assert_eq!(read, events);
        assert!(store.chain().verify().unwrap().is_intact());
        // A change from an old Raft log entry applies as a change without token and source.
        let old = ChangeSetV1 {
            meta: ChangeMetaV1 { actor: "old".into(), ..ChangeMetaV1::default() },
            preconditions: Vec::new(),
            operations: ChangeSet::default().put("notes", "n9", serde_json::json!({})).operations,
        };
        let outcome = store.apply(&[Command::ChangeV1(old)], None).unwrap().remove(0);
        assert!(matches!(outcome, Outcome::Accepted { .. }), "{outcome:?}");
        let event = store.event(Revision(5)).unwrap().unwrap();
        assert_eq!((event.meta.actor.as_str(), event.meta.token.as_deref()), ("old", None));
    }
}

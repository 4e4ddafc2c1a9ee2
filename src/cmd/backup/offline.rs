//! Offline backup commands: `tandem backup verify FILE` and `tandem backup restore FILE --data-dir DIR`.
//!
//! **Verify** reads the whole file with every check a restore makes (trailer length and checksum, frame
//! structure, gap-free history, the history's hash chain against the head the backup carries, the documents
//! against a replay of the history, blob digests) and says what the file holds — with the chain head, to
//! compare with `tandem history verify` — or exactly what is wrong with it.
//!
//! **Restore** turns a backup into the data directory of a *new* cluster:
//!
//! 1. `DIR` must not exist or be empty: a restore never overwrites a node.
//! 2. The file is verified first, so a damaged backup leaves nothing behind.
//! 3. The store is restored into `DIR/db`, where `tandem serve` opens it (see `node/mod.rs`), with the backup's
//!    history and revisions unchanged.
//! 4. It drops the source's cluster id: the new installation must never be taken for the old one (backup
//!    names, sync, and an operator's eyes tell them apart by it). Its own id is fixed when `tandem serve`
//!    founds the new cluster (every cluster's id derives from its founding membership, see
//!    `tandem_cluster::state_machine`), and `tandem status` / `tandem backup create` show it.
//! 5. It forgets the applied position that came with the backup: the source's Raft log id and *membership*.
//!    With them, the new node would believe it belonged to the old cluster and wait for its members. Without
//!    them, `tandem serve --data-dir DIR` finds a node that never joined a cluster, initializes a cluster of
//!    one, and its first change gets the revision after the backup's.
//!
//! The node's identity (`node.json`: id, name, cluster secret) is created by `tandem serve` as for any new
//! node.

use std::path::Path;

use serde_json::json;
use tandem_storage::backup::{restore_backup, verify_backup};
use tandem_storage::snapshot::SnapshotSummary;
use tandem_storage::{StoreOptions, store::new_cluster_id};

use crate::client::backup::count;
use crate::cmd::error::CmdError;

fn failed(message: impl Into<String>) -> CmdError {
    CmdError::failed(message)
}

/// Runs `tandem backup verify FILE`.
pub async fn verify(file: &Path, json: bool) -> Result<(), CmdError> {
    let summary = verified(file).await?;
    let header = &summary.header;
    // After `tandem history forget` the backup holds the events after its base only.
    let events = header.revision.0 - header.base.0;
    if json {
        let answer = json!({"file": file, "valid": true, "cluster_id": header.cluster_id,
                            "revision": header.revision.0, "events": events,
                            "history_starts_at": header.base.0 + 1,
                            "documents": header.documents, "blobs": header.blobs,
                            "blob_bytes": header.blob_bytes, "uploads": header.uploads,
                            "created_at_ms": header.created_at_ms, "bytes": summary.bytes,
                            "head": summary.head.to_string()});
        println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
    } else {
        let created = tandem_cluster::node::rfc3339(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(header.created_at_ms),
        );
        println!("{}: valid backup", file.display());
        println!("cluster    {}", header.cluster_id);
        println!("taken      {created}");
        match header.base.0 {
            0 => println!("revision   {} ({events} events)", header.revision),
            base => println!(
                "revision   {} ({events} events: the history starts at revision {}, earlier ones were forgotten)",
                header.revision,
                base + 1
            ),
        }
        println!("head       {}", summary.head);
        println!("documents  {}", header.documents);
        println!("blobs      {} ({} bytes)", header.blobs, header.blob_bytes);
        println!("size       {} bytes", summary.bytes);
    }
    Ok(())
}

/// Verifies `file` on a blocking thread.
async fn verified(file: &Path) -> Result<SnapshotSummary, CmdError> {
    let path = file.to_path_buf();
    tokio::task::spawn_blocking(move || verify_backup(&path))
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(format!("{} is not a usable backup: {e}", file.display())))
}

/// Runs `tandem backup restore FILE --data-dir DIR`.
pub async fn restore(file: &Path, data_dir: &Path, json: bool) -> Result<(), CmdError> {
    let existed = match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(failed(format!(
                    "{} is not empty (it may hold a node): restore into a new or empty directory",
                    data_dir.display()
                )));
            }
            true
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
        Err(error) => {
            return Err(failed(format!("cannot use {} as the data directory: {error}", data_dir.display())));
        }
    };
    verified(file).await?;
    let (from, to) = (file.to_path_buf(), data_dir.to_path_buf());
    let result = tokio::task::spawn_blocking(move || restore_as_new_cluster(&from, &to))
        .await
        .map_err(|e| failed(e.to_string()))
        .and_then(|result| result);
    let summary = match result {
        Ok(restored) => restored,
        Err(error) => {
            // Leave nothing behind: a half-restored directory could later be started by mistake.
            let _ = if existed {
                std::fs::remove_dir_all(tandem_storage::database_dir(data_dir))
                    .and(std::fs::remove_dir_all(tandem_storage::blob_dir(data_dir)))
            } else {
                std::fs::remove_dir_all(data_dir)
            };
            return Err(error);
        }
    };
    let header = &summary.header;
    if json {
        let answer = json!({"data_dir": data_dir, "revision": header.revision.0, "documents": header.documents,
                            "blobs": header.blobs, "source_cluster_id": header.cluster_id,
                            "head": summary.head.to_string()});
        println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
    } else {
        println!(
            "restored revision {} ({}, {}) into {} as a new cluster (the backup came from cluster {})",
            header.revision,
            count(header.documents, "document"),
            count(header.blobs, "blob"),
            data_dir.display(),
            header.cluster_id
        );
        println!(
            "start it with `tandem serve --data-dir {}`: it runs as a single node; add a partner with `tandem servers add`",
            data_dir.display()
        );
    }
    Ok(())
}

/// Restores `file` into `data_dir` (sled in `db/`, blob files in `blobs/`) without the source's cluster id and applied position (see the module
/// docs).
fn restore_as_new_cluster(file: &Path, data_dir: &Path) -> Result<SnapshotSummary, CmdError> {
    let problem = |e: tandem_storage::Error| failed(format!("restoring {} failed: {e}", file.display()));
    std::fs::create_dir_all(data_dir)
        .map_err(|e| failed(format!("cannot create {}: {e}", data_dir.display())))?;
    // `tandem serve` keeps the store in the `db` and `blobs` directories of the data directory.
    let (mut store, summary) = restore_backup(file, data_dir, StoreOptions::default()).map_err(problem)?;
    store.set_cluster_id(&new_cluster_id()).map_err(problem)?;
    store.forget_position().map_err(problem)?;
    Ok(summary)
}

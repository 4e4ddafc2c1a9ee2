//! Opening a store that a crash may have damaged: a database sled cannot load is set aside, not fatal.
//!
//! Everything the store keeps in sled can be rebuilt by its caller — on a node, from the last Raft snapshot
//! file and the Raft log, which live outside sled in files whose every fsync is Tandem's. sled 0.34 is not
//! power-loss safe on its own terms (see [`crate::engine`]): after a power cut it may refuse to open, or
//! panic while recovering ("tried to serialize Uninitialized") or while the store loads its state
//! ("cannot find pid N in view_for_key": its log points at a blob file it deleted before that log was
//! durable). [`open_or_set_aside`] turns each of these into one recoverable event: the damaged directory is
//! renamed to `<dir>.broken-<unix seconds>` (kept for a post-mortem, never deleted), an empty store takes
//! its place, and the caller is told, so that it can say so and fill the store again.
//!
//! Only sled's directory is set aside: the blob files beside it ([`crate::blob_files`]) stay. They are
//! content-addressed and checked (size at open, digest before they are served or streamed into a snapshot),
//! and the refill writes every blob that the snapshot carries again, verified, so nothing in them is
//! trusted blindly; the uploads directory that the old sled named is deleted once the new store opens.
//!
//! What is *not* set aside: an I/O error (a full or failing disk, permissions — a new directory would not
//! help) and a database locked by another process (another node is using it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::SledDatabase;
use crate::error::{Error, Result};
use crate::store::{Store, StoreOptions, blob_dir, database_dir};

/// A store opened by [`open_or_set_aside`].
#[derive(Debug)]
pub struct Opened {
    pub database: SledDatabase,
    pub store: Store,
    /// Set when the previous database could not be loaded and was moved aside.
    pub set_aside: Option<SetAside>,
}

/// A damaged database that was moved out of the way.
#[derive(Debug, Clone)]
pub struct SetAside {
    /// Where it is now.
    pub moved_to: PathBuf,
    /// Why it could not be loaded.
    pub reason: String,
}

/// Opens the store in the store directory `dir` (see [`Store::open`]); if sled cannot load it, moves sled's
/// directory aside and opens an empty store (see the module documentation).
pub fn open_or_set_aside(dir: &Path, options: StoreOptions) -> Result<Opened> {
    let path = &database_dir(dir);
    let blobs = &blob_dir(dir);
    let error = match open(path, blobs, options.clone()) {
        Ok((database, store)) => return Ok(Opened { database, store, set_aside: None }),
        Err(error) => error,
    };
    let damaged = matches!(error, Error::Engine { .. } | Error::Corrupt(_))
        && !error.to_string().contains("could not acquire lock");
    if !damaged {
        return Err(error);
    }
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "db".into());
    let moved_to = path.with_file_name(format!("{name}.broken-{seconds}"));
    std::fs::rename(path, &moved_to)
        .map_err(|e| Error::io(format!("moving the damaged database {} aside", path.display()), e))?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| Error::io(format!("syncing {}", parent.display()), e))?;
    }
    let (database, store) = open(path, blobs, options)?;
    Ok(Opened { database, store, set_aside: Some(SetAside { moved_to, reason: error.to_string() }) })
}

/// Opens the database and loads the store, with a panic in sled turned into [`Error::Engine`].
fn open(path: &Path, blobs: &Path, options: StoreOptions) -> Result<(SledDatabase, Store)> {
    let attempt = std::panic::catch_unwind(|| {
        let database = SledDatabase::open(path)?;
        let store = Store::open_database(Arc::new(database.clone()), blobs, options)?;
        Ok((database, store))
    });
    attempt.unwrap_or_else(|panic| {
        let message = crate::engine::panic_message(panic.as_ref());
        Err(Error::Engine {
            context: format!("loading {}", path.display()),
            message: format!("sled panicked: {message}"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_sled_cannot_load_is_moved_aside_and_an_empty_store_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::create_dir_all(dir.path().join("blobs").join("sha256")).unwrap();
        std::fs::write(dir.path().join("blobs").join("sha256").join("kept"), b"x").unwrap();
        // A `db` file that is no sled log at all.
        std::fs::write(path.join("db"), vec![0xA5; 4096]).unwrap();
        std::fs::write(path.join("conf"), b"segment_size: 524288\nuse_compression: false\nversion: 0.34\n")
            .unwrap();
        let opened = open_or_set_aside(dir.path(), StoreOptions::default()).unwrap();
        let aside = opened.set_aside.expect("the damaged database was set aside");
        assert!(aside.moved_to.join("db").is_file(), "kept for a post-mortem");
        assert_eq!(aside.moved_to, dir.path().join(aside.moved_to.file_name().unwrap()));
        assert!(dir.path().join("blobs/sha256/kept").is_file(), "blob files are not moved aside");
        assert!(!aside.reason.is_empty());
        assert_eq!(opened.store.revision(), crate::Revision(0));
    }

    #[test]
    fn a_healthy_store_is_opened_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        drop(open_or_set_aside(dir.path(), StoreOptions::default()).unwrap());
        let opened = open_or_set_aside(dir.path(), StoreOptions::default()).unwrap();
        assert!(opened.set_aside.is_none());
    }
}

//! The node's identity: node-local, never replicated, kept in `DATA_DIR/node.json`.
//!
//! The node id is random at first start, persisted, and never reused: a wiped data directory gets a new id, so
//! a node that lost its log can never be mistaken for its former self. The file also keeps the cluster secret
//! (generated at first start when none was given) and the epoch of forced recoveries.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// What a node knows about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub id: NodeId,
    pub name: String,
    pub cluster_secret: String,
    /// Bumped by each forced recovery of this node.
    #[serde(default)]
    pub epoch: u64,
    /// A forced recovery to record as an event when the node next leads: (actor, reason, time ms).
    #[serde(default)]
    pub pending_recovery: Option<(String, String, u64)>,
}

/// Why the identity could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot access {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is damaged ({message}); restore it or wipe the data directory and join as a new node")]
    Corrupt { path: PathBuf, message: String },
}

impl Identity {
    fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("node.json")
    }

    /// Loads the identity, or creates it (random id; the given or a random secret) on first start.
    pub fn load_or_create(
        data_dir: &Path,
        name: &str,
        secret: Option<&str>,
    ) -> Result<Identity, IdentityError> {
        if let Some(identity) = Self::load(data_dir)? {
            return Ok(identity);
        }
        let identity = Identity {
            id: loop {
                let id: u64 = rand::random();
                if id != 0 {
                    break id;
                }
            },
            name: name.to_string(),
            cluster_secret: secret
                .map(str::to_string)
                .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>())),
            epoch: 0,
            pending_recovery: None,
        };
        identity.save(data_dir)?;
        Ok(identity)
    }

    /// Loads the identity if the data directory has one.
    pub fn load(data_dir: &Path) -> Result<Option<Identity>, IdentityError> {
        let path = Self::path(data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| IdentityError::Corrupt { path, message: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(IdentityError::Io { path, source }),
        }
    }

    /// Writes the identity atomically (temp file, fsync, rename).
    pub fn save(&self, data_dir: &Path) -> Result<(), IdentityError> {
        let io = |path: &Path, source| IdentityError::Io { path: path.to_path_buf(), source };
        std::fs::create_dir_all(data_dir).map_err(|e| io(data_dir, e))?;
        let path = Self::path(data_dir);
        let temp = data_dir.join("node.json.partial");
        let bytes = serde_json::to_vec_pretty(self).expect("identity serializes");
        std::fs::write(&temp, bytes).map_err(|e| io(&temp, e))?;
        std::fs::File::open(&temp).and_then(|f| f.sync_all()).map_err(|e| io(&temp, e))?;
        std::fs::rename(&temp, &path).map_err(|e| io(&path, e))?;
        std::fs::File::open(data_dir).and_then(|d| d.sync_all()).map_err(|e| io(data_dir, e))
    }
}

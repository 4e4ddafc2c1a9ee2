//! The node's identity: node-local, never replicated, kept in `DATA_DIR/node.json`.
//!
//! The node id is random at first start, persisted, and never reused: a wiped data directory gets a new id, so
//! a node that lost its log can never be mistaken for its former self. The file also keeps the cluster secret
//! (generated at first start when none was given), the epoch of forced recoveries, and the *cluster id*.
//!
//! ## The cluster id
//!
//! A cluster gets its id once, when it is founded: the first node, started without `--join`, computes it from
//! its own node id ([`founding_cluster_id`], the same value the state machine writes into the store when it
//! applies the founding membership, so `tandem status` and backup file names show one id) and records it here
//! *before* it initializes Raft. A node started with `--join` has none: it learns the id from the first peer
//! request addressed to its own node id (the leader that `tandem servers add` pointed at it) and records it
//! here before handing that request to Raft ([`Identity::record_cluster_id`]). From then on the peer network
//! sends the id with every request and refuses requests carrying another one (see `network::identity_check`).
//! A data directory from before cluster ids existed takes the store's id at start.

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
    /// The id of the cluster this node belongs to; `None` until it founds one or is added to one.
    #[serde(default)]
    pub cluster_id: Option<String>,
}

/// The id of a cluster founded by the voters `founders`: the lowest founder id, then a mix of all of them, in
/// 32 hex digits. Deterministic, so a founder that crashed between recording it and initializing Raft computes
/// the same id again, and every node that applies the founding membership agrees on it.
pub fn founding_cluster_id(founders: impl IntoIterator<Item = NodeId>) -> String {
    let mut founders: Vec<NodeId> = founders.into_iter().collect();
    founders.sort_unstable();
    let low = founders.first().copied().unwrap_or_default();
    let high = founders.iter().fold(0x9e37_79b9_7f4a_7c15_u64, |acc, id| acc.rotate_left(17) ^ id);
    format!("{low:016x}{high:016x}")
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
            cluster_id: None,
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

    /// Records `cluster_id` as this node's cluster id, durably, in the `node.json` of `data_dir` as it is on disk
    /// now (read, changed, written back, so that nothing else recorded there since this process started is
    /// lost).
    pub fn record_cluster_id(data_dir: &Path, cluster_id: &str) -> Result<(), IdentityError> {
        let path = Self::path(data_dir);
        let mut identity = Self::load(data_dir)?.ok_or_else(|| IdentityError::Io {
            path,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "node.json is gone"),
        })?;
        identity.cluster_id = Some(cluster_id.to_owned());
        identity.save(data_dir)
    }

    /// Writes the identity atomically (temp file, fsync, rename, directory fsync), readable by its owner only
    /// (0600): it holds the cluster secret.
    pub fn save(&self, data_dir: &Path) -> Result<(), IdentityError> {
        let io = |path: &Path, source| IdentityError::Io { path: path.to_path_buf(), source };
        std::fs::create_dir_all(data_dir).map_err(|e| io(data_dir, e))?;
        let path = Self::path(data_dir);
        let temp = data_dir.join("node.json.partial");
        let bytes = serde_json::to_vec_pretty(self).expect("identity serializes");
        write_private(&temp, &bytes).map_err(|e| io(&temp, e))?;
        std::fs::File::open(&temp).and_then(|f| f.sync_all()).map_err(|e| io(&temp, e))?;
        std::fs::rename(&temp, &path).map_err(|e| io(&path, e))?;
        std::fs::File::open(data_dir).and_then(|d| d.sync_all()).map_err(|e| io(data_dir, e))
    }
}

/// Writes `bytes` to `path` with mode 0600 (also when the file existed with a looser mode).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_id_is_recorded_durably_and_older_files_have_none() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::load_or_create(dir.path(), "a", Some("secret")).unwrap();
        assert_eq!(identity.cluster_id, None);
        Identity::record_cluster_id(dir.path(), "c1").unwrap();
        let reloaded = Identity::load(dir.path()).unwrap().unwrap();
        assert_eq!(reloaded.cluster_id.as_deref(), Some("c1"));
        assert_eq!(Identity { cluster_id: None, ..reloaded }, identity, "nothing else changed");

        // A node.json written before cluster ids existed still loads.
        let old = r#"{"id": 7, "name": "b", "cluster_secret": "s", "epoch": 2}"#;
        std::fs::write(dir.path().join("node.json"), old).unwrap();
        let loaded = Identity::load(dir.path()).unwrap().unwrap();
        assert_eq!((loaded.id, loaded.epoch, loaded.cluster_id), (7, 2, None));

        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(Identity::record_cluster_id(empty.path(), "c1"), Err(IdentityError::Io { .. })));
    }

    #[test]
    fn founding_cluster_ids_depend_only_on_the_founders() {
        assert_eq!(founding_cluster_id([5, 3]), founding_cluster_id([3, 5]));
        assert_ne!(founding_cluster_id([5]), founding_cluster_id([6]));
        assert_eq!(founding_cluster_id([0xabc]).len(), 32);
        assert!(founding_cluster_id([0xabc]).starts_with("0000000000000abc"));
    }
}

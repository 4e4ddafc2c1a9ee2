//! Checkpoints: now and then a copy of the whole configuration, and the replay that starts from one.
//!
//! Every so often (at least [`crate::StoreOptions::checkpoint_interval`] events, and at least as many events
//! as there are documents, so checkpoints never take more space than the history they summarise) an applied
//! batch also writes the whole projection under its revision: parts of a bincode list of documents, then a
//! `COMPLETE` marker holding the part count ([`crate::keys`]). The configuration at any revision is then the
//! newest checkpoint at or below it plus the events after it ([`replay_from_disk`]): how
//! [`crate::Store::state_at`] goes back in time, and, since format 5 keeps no documents, how a store is
//! loaded at open ([`crate::tip`]).

use crate::change::{DocKey, Revision};
use crate::codec::{self, decode, encode, put_parts};
use crate::engine::{Keyspace, WriteBatch};
use crate::error::{Error, Result};
use crate::keys;
use crate::projection::{Projection, StoredDocument};

/// Adds a checkpoint of `projection` (all its documents) to `batch`.
pub(crate) fn write_checkpoint(batch: &mut WriteBatch, projection: &Projection) {
    let documents: Vec<(&DocKey, &StoredDocument)> = projection.documents().collect();
    let revision = projection.revision();
    let parts = put_parts(batch, &encode(&documents), |part| keys::checkpoint(revision, part));
    batch.put(keys::checkpoint(revision, keys::COMPLETE), parts.to_be_bytes().to_vec());
}

/// The newest complete checkpoint at or below `at`.
pub(crate) fn latest_checkpoint(space: &dyn Keyspace, at: Revision) -> Result<Option<Revision>> {
    let end = keys::checkpoint(Revision(at.0.saturating_add(1)), 0);
    for item in space.scan(&[keys::CHECKPOINTS], Some(&end), true) {
        let (key, _) = item?;
        if let Some((revision, keys::COMPLETE)) = keys::parse_numbered(&key) {
            return Ok(Some(Revision(revision)));
        }
    }
    Ok(None)
}

/// Loads the checkpoint taken at `revision`.
pub(crate) fn load_checkpoint(space: &dyn Keyspace, revision: Revision) -> Result<Projection> {
    let what = format!("checkpoint {revision}");
    let start = keys::checkpoint(revision, 0);
    let end = keys::checkpoint(revision, keys::COMPLETE);
    let mut parts = Vec::new();
    for item in space.scan(&start, Some(&end), false) {
        let (key, value) = item?;
        let (_, part) =
            keys::parse_numbered(&key).ok_or_else(|| Error::Corrupt(format!("{what}: bad key")))?;
        parts.push((part, value));
    }
    let documents: Vec<(DocKey, StoredDocument)> = decode(&codec::join_parts(parts, &what)?, &what)?;
    let mut projection = Projection::new();
    for (key, document) in documents {
        projection.insert(key, document);
    }
    projection.set_revision(revision);
    Ok(projection)
}

/// The configuration at `revision` from what is on disk: the newest checkpoint at or below it (a forget
/// leaves one at the base) and the events after it.
pub(crate) fn replay_from_disk(space: &dyn Keyspace, revision: Revision) -> Result<Projection> {
    let mut projection = match latest_checkpoint(space, revision)? {
        Some(checkpoint) => load_checkpoint(space, checkpoint)?,
        None => Projection::new(),
    };
    if projection.revision() < revision {
        for event in crate::chain::read_events(space, projection.revision().next(), revision, false) {
            projection.apply(&event?)?;
        }
    }
    if projection.revision() != revision {
        return Err(Error::Corrupt(format!(
            "replay stopped at revision {} before {revision}",
            projection.revision()
        )));
    }
    Ok(projection)
}

//! The tip: where the stored history ends — revision, chain head and the caller's applied position — in
//! one key, written last.
//!
//! Up to format 4 every applied batch rewrote three meta keys (`revision`, `head`, `position`) and every
//! document it changed, and made all of that atomic with a redo record ([`crate::redo`]): seven sled writes
//! for a batch of one change, where the event alone is the news. Format 5 stores:
//!
//! - the events (and request ids, and now and then a checkpoint), as before;
//! - **no documents**: the projection is rebuilt at open from the newest checkpoint and the events after it
//!   (at most one checkpoint interval of them, [`crate::store::StoreOptions::checkpoint_interval`]);
//! - one [`Tip`] under [`Meta::Tip`], the batch's commit point.
//!
//! A batch of plain change sets — nearly every batch — is then written *in order*, without a redo record
//! ([`crate::engine::Keyspace::write_in_order`]): its event parts, request ids and checkpoint first, the tip
//! last. sled brings back a prefix of its single-key writes after a crash, so the disk holds either the whole
//! batch or a prefix that the tip does not cover yet: events, request ids or checkpoint parts past the
//! tip's revision. [`discard_unfinished`] deletes those at open, before anything reads them, and the
//! caller re-applies the batch from its log (the cluster crate, from the Raft log past the tip's position).
//! Within a batch every request id follows its event and the checkpoint follows every event, so events past
//! the tip are the sign of any leftover. Batches with any other command (blob chunks, commits, forgets)
//! still go through the atomic path, with the tip inside.

use crate::change::Revision;
use crate::digest::Digest;
use crate::engine::{Keyspace, WriteBatch};
use crate::error::{Error, Result};
use crate::keys::{self, Meta};

/// Where the stored history ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tip {
    /// The revision of the last accepted event (the base when every event was forgotten; 0 when empty).
    pub revision: Revision,
    /// The chain hash at `revision` ([`crate::chain`]).
    pub head: Digest,
    /// The caller's applied position, stored as given (the cluster crate's log id and membership).
    pub position: Option<Vec<u8>>,
}

impl Default for Tip {
    fn default() -> Self {
        Tip { revision: Revision(0), head: crate::chain::GENESIS, position: None }
    }
}

/// revision:u64 ‖ head:32 ‖ position flag:u8 ‖ position bytes.
const FIXED: usize = 8 + 32 + 1;

impl Tip {
    fn encode(&self) -> Vec<u8> {
        let position = self.position.as_deref();
        let mut out = Vec::with_capacity(FIXED + position.map_or(0, <[u8]>::len));
        out.extend_from_slice(&self.revision.0.to_be_bytes());
        out.extend_from_slice(&self.head.0);
        out.push(u8::from(position.is_some()));
        out.extend_from_slice(position.unwrap_or_default());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Tip> {
        let bad = |why: &str| Error::Corrupt(format!("the store's tip {why}"));
        if bytes.len() < FIXED {
            return Err(bad(&format!("is {} bytes, shorter than {FIXED}", bytes.len())));
        }
        let revision = Revision(u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")));
        let head = Digest(bytes[8..40].try_into().expect("32 bytes"));
        let position = match bytes[40] {
            0 if bytes.len() == FIXED => None,
            0 => return Err(bad("has bytes after an absent position")),
            1 => Some(bytes[FIXED..].to_vec()),
            flag => return Err(bad(&format!("has an unknown position flag {flag}"))),
        };
        Ok(Tip { revision, head, position })
    }

    /// Adds the tip to `batch` (as its last write, for [`crate::engine::Keyspace::write_in_order`]).
    pub fn put(&self, batch: &mut WriteBatch) {
        batch.put(Meta::Tip.key(), self.encode());
    }
}

/// The stored tip; an empty store's (revision 0) when none is stored.
pub fn read(space: &dyn Keyspace) -> Result<Tip> {
    match space.get(&Meta::Tip.key())? {
        Some(bytes) => Tip::decode(&bytes),
        None => Ok(Tip::default()),
    }
}

/// Deletes what a batch interrupted by a crash wrote past the tip (see the module documentation); returns
/// how many events it held. Runs at open, before the store is loaded.
///
/// Only a tip that checks out is trusted to say where the history ends: a store with events and no tip, or
/// whose tip's head is not the hash stored with the event at its revision, is damaged, and the open stops
/// rather than delete history on its word.
pub fn discard_unfinished(space: &dyn Keyspace, tip: &Tip) -> Result<u64> {
    let last_event = crate::chain::last_event_revision(space)?;
    if last_event <= tip.revision {
        return Ok(0);
    }
    if space.get(&Meta::Tip.key())?.is_none() {
        return Err(Error::Corrupt(format!(
            "the store holds events up to revision {last_event} but no tip; restore a backup"
        )));
    }
    let base = crate::chain::stored_base(space)?;
    check_head(space, tip.revision, tip.head, base, crate::chain::stored_base_hash(space)?)?;
    let after = Revision(tip.revision.0 + 1);
    let mut batch = WriteBatch::new();
    for (start, end) in [
        (keys::event(after, 0), vec![keys::EVENTS + 1]),
        (keys::checkpoint(after, 0), vec![keys::CHECKPOINTS + 1]),
    ] {
        for item in space.scan(&start, Some(&end), false) {
            batch.delete(item?.0);
        }
    }
    for item in space.scan(&[keys::REQUESTS], Some(&[keys::REQUESTS + 1]), false) {
        let (key, value) = item?;
        let revision = <[u8; 8]>::try_from(value.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| Error::Corrupt("a request id entry is not 8 bytes".into()))?;
        if revision > tip.revision.0 {
            batch.delete(key);
        }
    }
    space.write(batch)?;
    let events = last_event.0 - tip.revision.0;
    tracing::warn!(
        tip = tip.revision.0,
        events,
        "discarded the unfinished end of a batch a crash interrupted (it is applied again from the log)"
    );
    Ok(events)
}

/// Checks a tip's head against the hash stored with the event at its revision (or the base hash when no
/// event is kept).
pub(crate) fn check_head(
    space: &dyn Keyspace,
    revision: Revision,
    head: Digest,
    base: Revision,
    base_hash: Digest,
) -> Result<()> {
    if revision == base && head != base_hash {
        return Err(Error::Corrupt(format!("the chain head {head} is not the base hash {base_hash}")));
    }
    if revision > base {
        let first_part = space.get(&keys::event(revision, 0))?.unwrap_or_default();
        let (last, _) = crate::chain::split_stored(&first_part, revision.0)?;
        if last != head {
            return Err(Error::Corrupt(format!(
                "the chain head {head} is not the hash stored with event {revision}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tip_reads_back_as_written() {
        for position in [None, Some(vec![]), Some(b"log id and membership".to_vec())] {
            let tip = Tip { revision: Revision(42), head: Digest([7; 32]), position };
            assert_eq!(Tip::decode(&tip.encode()).unwrap(), tip);
        }
    }

    #[test]
    fn a_damaged_tip_is_refused_with_a_reason() {
        let tip = Tip { revision: Revision(3), head: Digest([1; 32]), position: None }.encode();
        let short = Tip::decode(&tip[..20]).unwrap_err().to_string();
        assert!(short.contains("shorter than 41"), "{short}");
        let mut trailing = tip.clone();
        trailing.push(9);
        let trailing = Tip::decode(&trailing).unwrap_err().to_string();
        assert!(trailing.contains("after an absent position"), "{trailing}");
        let mut flag = tip;
        flag[40] = 2;
        let flag = Tip::decode(&flag).unwrap_err().to_string();
        assert!(flag.contains("unknown position flag 2"), "{flag}");
    }
}

//! Tamper-evident history: a SHA-256 hash chain over the events.
//!
//! Every event is linked to the one before it:
//!
//! ```text
//! hash(0) = 32 zero bytes                                  (genesis: the empty store)
//! hash(n) = SHA-256( hash(n-1) ‖ bincode(event n) )        (its canonical encoding, as stored after the hash)
//! ```
//!
//! `hash(n)` is stored with event `n` — the event's value is `hash(n) ‖ bincode(event n)` (see
//! [`crate::keys`]), so the chain costs no extra key — and the newest one, the **head**, in the meta table,
//! so applying an event needs no extra read. The chain is computed in
//! [`crate::Store::apply`] from the event's canonical encoding, which every replica produces identically
//! from the same log entry: leader, followers and mirrors hold the same chain without sending hashes around.
//!
//! What it catches: an event altered on disk after it was applied no longer hashes to the hash stored with
//! it ([`ChainView::verify`] names its revision), and a history rewritten *with* its hashes recomputed ends in
//! another head than the other members' (`tandem history verify` compares them, then bisects the stored
//! hashes for the first revision that differs). A snapshot or backup carries the head; installing one
//! recomputes the chain from its events and refuses it when the head differs.
//!
//! What it does not catch: a node whose whole history *and* every other member's were rewritten alike, or a
//! backup rewritten with its head and checksums recomputed. The chain makes tampering evident by comparison;
//! it is not a signature.
//!
//! ## After a forget
//! `tandem history forget --before R` ([`crate::forget`]) deletes the events before `R` but keeps
//! `hash(R-1)` as the **base hash**: the first kept event still links to it, so `hash(n)` for every kept
//! `n` is unchanged — and equal on every member, whatever each has forgotten. [`ChainView::verify`]
//! recomputes from the base hash; `tandem history verify` compares members from the larger of their bases.
//! The base hash itself can no longer be recomputed (its events are gone): it is evidence only by
//! comparison with a member or backup that still holds those events.

use sha2::{Digest as _, Sha256};

use crate::change::Revision;
use crate::codec::{decode, join_parts};
use crate::digest::Digest;
use crate::engine::Keyspace;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::keys;

/// The hash before the first event.
pub const GENESIS: Digest = Digest([0; 32]);

/// The length of the chain hash in front of each stored event.
pub const HASH_LEN: usize = 32;

/// An event's stored value (`hash ‖ event_bytes`) from the hash before it and its canonical encoding, built
/// in `value`, which holds [`HASH_LEN`] bytes of room followed by the encoding; returns the event's hash.
pub(crate) fn seal(previous: &Digest, value: &mut [u8]) -> Digest {
    let hash = link(previous, &value[HASH_LEN..]);
    value[..HASH_LEN].copy_from_slice(&hash.0);
    hash
}

/// Splits an event's stored value into its stored chain hash and its canonical encoding.
pub(crate) fn split_stored(value: &[u8], revision: u64) -> Result<(Digest, &[u8])> {
    if value.len() < HASH_LEN {
        return Err(Error::Corrupt(format!("event {revision} is shorter than its chain hash")));
    }
    let (hash, bytes) = value.split_at(HASH_LEN);
    Ok((Digest(hash.try_into().expect("32 bytes")), bytes))
}

/// The chain hash of an event whose canonical encoding is `event_bytes`, following `previous`.
pub fn link(previous: &Digest, event_bytes: &[u8]) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update(previous.0);
    hasher.update(event_bytes);
    Digest::from(hasher)
}

/// What recomputing a node's chain found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainCheck {
    /// The revision the check went up to.
    pub revision: Revision,
    /// The head recomputed from the events.
    pub head: Digest,
    /// The head the store keeps (what it will link the next event to).
    pub stored_head: Digest,
    /// The first revision whose event does not hash to the hash stored with it, is missing or does not
    /// decode, with why.
    pub first_mismatch: Option<(Revision, String)>,
}

impl ChainCheck {
    /// Whether every event matched its stored hash and the recomputed head is the stored one.
    pub fn is_intact(&self) -> bool {
        self.first_mismatch.is_none() && self.head == self.stored_head
    }
}

/// A detached view of a store's chain at one revision: events and hashes at or below it never change, so it
/// can be read without holding the store.
#[derive(Debug, Clone)]
pub struct ChainView {
    pub(crate) space: std::sync::Arc<dyn Keyspace>,
    pub(crate) revision: Revision,
    pub(crate) head: Digest,
    /// The revision the history starts after, and its chain hash ([`crate::forget`]).
    pub(crate) base: Revision,
    pub(crate) base_hash: Digest,
    /// The SHA-256 of the configuration at the base, as the forget recorded it in the chain.
    pub(crate) base_digest: Option<Digest>,
}

impl ChainView {
    /// The revision this view ends at.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The stored head at [`ChainView::revision`].
    pub fn head(&self) -> Digest {
        self.head
    }

    /// The revision the history starts after (0: the whole history is kept).
    pub fn base(&self) -> Revision {
        self.base
    }

    /// The chain hash of [`ChainView::base`].
    pub fn base_hash(&self) -> Digest {
        self.base_hash
    }

    /// The stored chain hashes of revisions `from..=to` (within the view), in order, at most `limit`. The
    /// base (when not 0) answers its base hash; forgotten revisions answer nothing.
    pub fn hashes(&self, from: Revision, to: Revision, limit: usize) -> Result<Vec<(Revision, Digest)>> {
        let from = from.max(Revision(1));
        let to = to.min(self.revision);
        let mut out = Vec::new();
        if from > to || limit == 0 {
            return Ok(out);
        }
        if self.base.0 > 0 && (from..=to).contains(&self.base) {
            out.push((self.base, self.base_hash));
        }
        let from = from.max(self.base.next());
        if from > to || out.len() >= limit {
            return Ok(out);
        }
        let end = keys::event(to.next(), 0);
        for item in self.space.scan(&keys::event(from, 0), Some(&end), false) {
            let (key, value) = item?;
            match keys::parse_numbered(&key) {
                Some((revision, 0)) => out.push((Revision(revision), split_stored(&value, revision)?.0)),
                Some(_) => continue,
                None => return Err(Error::Corrupt("an event key is bad".into())),
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Recomputes the chain from every kept event up to the view's revision (from the base hash), streaming
    /// (one event in memory at a time), and compares each hash with the one stored with its event.
    ///
    /// A forget applied while this runs deletes events the view expects: that is [`Error::Stale`] (take a
    /// new view), not a broken chain.
    pub fn verify(&self) -> Result<ChainCheck> {
        let check = self.recompute()?;
        if check.first_mismatch.is_some() && stored_base(self.space.as_ref())? != self.base {
            return Err(Error::Stale("the history was forgotten up to a later revision meanwhile".into()));
        }
        Ok(check)
    }

    fn recompute(&self) -> Result<ChainCheck> {
        let mut head = self.base_hash;
        let mut first_mismatch: Option<(Revision, String)> = None;
        let mut expected = self.base.next();
        for item in raw_events(self.space.as_ref(), expected, self.revision, false) {
            let (revision, value) = item?;
            if revision != expected {
                first_mismatch.get_or_insert((expected, format!("event {expected} is missing")));
                break;
            }
            expected = revision.next();
            let (stored_hash, bytes) = match split_stored(&value, revision.0) {
                Ok(split) => split,
                Err(error) => {
                    first_mismatch.get_or_insert((revision, error.to_string()));
                    continue;
                }
            };
            head = link(&head, bytes);
            if first_mismatch.is_some() {
                continue;
            }
            match decode::<Event>(bytes, &format!("event {revision}")) {
                Err(error) => first_mismatch = Some((revision, error.to_string())),
                Ok(event) if event.revision != revision => {
                    first_mismatch =
                        Some((revision, format!("event {revision} says it is revision {}", event.revision)))
                }
                Ok(_) if stored_hash != head => {
                    first_mismatch = Some((
                        revision,
                        format!(
                            "event {revision} hashes to {head}, but the hash stored with it is {stored_hash}: the event or its hash was altered"
                        ),
                    ))
                }
                Ok(_) => {}
            }
        }
        if first_mismatch.is_none() && expected != self.revision.next() {
            first_mismatch = Some((expected, format!("event {expected} is missing")));
        }
        if let Some(problem) = self.check_base()? {
            first_mismatch = Some((self.base, problem));
        }
        Ok(ChainCheck { revision: self.revision, head, stored_head: self.head, first_mismatch })
    }
}

impl ChainView {
    /// Compares the stored configuration at the base (its checkpoint's bytes) with the digest its forget
    /// recorded in the chain; says what is wrong, if anything.
    fn check_base(&self) -> Result<Option<String>> {
        let Some(recorded) = self.base_digest.filter(|_| self.base.0 > 0) else { return Ok(None) };
        let start = keys::checkpoint(self.base, 0);
        let end = keys::checkpoint(self.base, keys::COMPLETE);
        let mut parts = Vec::new();
        for item in self.space.scan(&start, Some(&end), false) {
            let (key, value) = item?;
            let (_, part) =
                keys::parse_numbered(&key).ok_or_else(|| Error::Corrupt("a checkpoint key is bad".into()))?;
            parts.push((part, value));
        }
        let stored = match join_parts(parts, &format!("checkpoint {}", self.base)) {
            Ok(bytes) => Digest::from(Sha256::new_with_prefix(bytes)),
            Err(error) => return Ok(Some(format!("the configuration at the base {}: {error}", self.base))),
        };
        Ok((stored != recorded).then(|| {
            format!(
                "the configuration at the base {} hashes to {stored}, but its forget recorded {recorded}: a document of the base was altered",
                self.base
            )
        }))
    }
}

/// The stored values of events `from..=to` (parts joined: chain hash and encoding), in revision order (newest
/// first when `reverse`).
pub(crate) fn raw_events(
    space: &dyn Keyspace,
    from: Revision,
    to: Revision,
    reverse: bool,
) -> impl Iterator<Item = Result<(Revision, Vec<u8>)>> + '_ {
    let start = keys::event(from, 0);
    let end = keys::event(Revision(to.0.saturating_add(1)), 0);
    let mut scan = space.scan(&start, Some(&end), reverse).peekable();
    std::iter::from_fn(move || {
        let first = scan.next()?;
        let result = (|| {
            let (key, value) = first?;
            let (revision, part) =
                keys::parse_numbered(&key).ok_or_else(|| Error::Corrupt("an event key is bad".into()))?;
            let mut parts = vec![(part, value)];
            while let Some(Ok((next_key, _))) = scan.peek() {
                match keys::parse_numbered(next_key) {
                    Some((next_revision, _)) if next_revision == revision => {
                        let (next_key, next_value) = scan.next().expect("peeked")?;
                        let (_, next_part) = keys::parse_numbered(&next_key).expect("parsed above");
                        parts.push((next_part, next_value));
                    }
                    _ => break,
                }
            }
            if reverse {
                parts.reverse();
            }
            Ok((Revision(revision), join_parts(parts, &format!("event {revision}"))?))
        })();
        Some(result)
    })
}

/// Reads events `from..=to` (both inclusive) from a keyspace, in revision order.
pub(crate) fn read_events(
    space: &dyn Keyspace,
    from: Revision,
    to: Revision,
    reverse: bool,
) -> impl Iterator<Item = Result<Event>> + '_ {
    crate::chain::raw_events(space, from, to, reverse).map(|item| {
        let (revision, value) = item?;
        let what = format!("event {revision}");
        let (_, bytes) = crate::chain::split_stored(&value, revision.0)?;
        let event: Event = decode(bytes, &what)?;
        if event.revision != revision {
            return Err(Error::Corrupt(format!("{what} says it is revision {}", event.revision)));
        }
        Ok(event)
    })
}

/// The revision of the newest stored event (0 if none).
pub(crate) fn last_event_revision(space: &dyn Keyspace) -> Result<Revision> {
    match space.scan(&[keys::EVENTS], Some(&[keys::EVENTS + 1]), true).next() {
        None => Ok(Revision(0)),
        Some(item) => {
            let (key, _) = item?;
            let (revision, _) =
                keys::parse_numbered(&key).ok_or_else(|| Error::Corrupt("an event key is bad".into()))?;
            Ok(Revision(revision))
        }
    }
}

/// The history's base stored in a keyspace ([`crate::forget`]; 0 when nothing was ever forgotten).
pub(crate) fn stored_base(space: &dyn Keyspace) -> Result<Revision> {
    match space.get(&keys::Meta::Base.key())? {
        Some(bytes) => Ok(Revision(u64::from_be_bytes(
            bytes.as_slice().try_into().map_err(|_| Error::Corrupt("the base is not 8 bytes".into()))?,
        ))),
        None => Ok(Revision(0)),
    }
}

/// The chain hash at the history's base stored in a keyspace (the genesis hash when nothing was forgotten).
pub(crate) fn stored_base_hash(space: &dyn Keyspace) -> Result<Digest> {
    match space.get(&keys::Meta::BaseHash.key())? {
        Some(bytes) => parse_hash(&bytes),
        None => Ok(GENESIS),
    }
}

pub(crate) fn parse_hash(value: &[u8]) -> Result<Digest> {
    <[u8; 32]>::try_from(value).map(Digest).map_err(|_| Error::Corrupt("a chain hash is not 32 bytes".into()))
}

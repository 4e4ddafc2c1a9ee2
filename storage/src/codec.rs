//! Encoding of stored values: bincode 2 (serde) with the standard configuration everywhere, and a size limit
//! when decoding so that a damaged length prefix cannot make us allocate gigabytes.
//!
//! Values larger than one stored piece ([`crate::limits::STORED_CHUNK_BYTES`]) are written as numbered parts
//! by [`put_parts`] and read back by [`join_parts`].

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::engine::WriteBatch;
use crate::error::{Error, Result};
use crate::limits::STORED_CHUNK_BYTES;

/// The largest value we ever decode (a checkpoint of a large installation, or a big event).
const DECODE_LIMIT: usize = 256 * 1024 * 1024;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding into a Vec cannot fail for our types (no maps with non-string keys, no unsupported serde
    // features): a failure here is a programming error caught by every test that writes anything.
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .expect("bincode encoding of a storage type")
}

/// [`encode`] after `room` zero bytes, for a header the caller fills in (the chain hash of an event).
pub fn encode_with_room<T: Serialize>(value: &T, room: usize) -> Vec<u8> {
    let mut out = vec![0u8; room];
    bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard())
        .expect("bincode encoding of a storage type");
    out
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    let config = bincode::config::standard().with_limit::<DECODE_LIMIT>();
    let (value, used) = bincode::serde::decode_from_slice(bytes, config)
        .map_err(|e| Error::Corrupt(format!("{what} does not decode: {e}")))?;
    if used != bytes.len() {
        return Err(Error::Corrupt(format!("{what} has {} trailing bytes", bytes.len() - used)));
    }
    Ok(value)
}

/// Writes `bytes` as parts `key_of(0)`, `key_of(1)`, …; returns how many.
pub fn put_parts(batch: &mut WriteBatch, bytes: &[u8], key_of: impl Fn(u32) -> Vec<u8>) -> u32 {
    let mut count = 0;
    for (part, chunk) in bytes.chunks(STORED_CHUNK_BYTES).enumerate() {
        batch.put(key_of(part as u32), chunk.to_vec());
        count += 1;
    }
    if count == 0 {
        batch.put(key_of(0), Vec::new());
        count = 1;
    }
    count
}

/// Concatenates parts read in key order, checking that their numbers run 0, 1, 2, ….
pub fn join_parts(parts: impl IntoIterator<Item = (u32, Vec<u8>)>, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for (expected, (part, bytes)) in parts.into_iter().enumerate() {
        if part as usize != expected {
            return Err(Error::Corrupt(format!("{what}: part {expected} is missing")));
        }
        out.extend_from_slice(&bytes);
    }
    Ok(out)
}

//! Size limits: every input has a bound, so no request can exhaust memory or make a stored value too large.
//!
//! Documents are stored as single sled values, and sled writes values over ~128 KiB to side files that it never
//! fsyncs (see `shared/notes/openraft-sled.md`): so a document, with its metadata, must stay well under 64 KiB.
//! Everything larger (events of big change sets, checkpoints, blobs) is split into [`STORED_CHUNK_BYTES`]
//! pieces by the store.

/// Largest collection name, in bytes.
pub const MAX_COLLECTION_NAME: usize = 64;
/// Largest document id, in bytes.
pub const MAX_DOCUMENT_ID: usize = 128;
/// Largest document, as canonical (compact) JSON.
pub const MAX_DOCUMENT_BYTES: usize = 48 * 1024;
/// Most operations in one change set (a whole-installation sync of 10,000 terminals fits).
pub const MAX_OPERATIONS: usize = 50_000;
/// Largest change set, summing its documents and patches. It must fit one Raft entry, and the peer network
/// carries at most 16 MiB per request.
pub const MAX_CHANGE_SET_BYTES: usize = 8 * 1024 * 1024;
/// Largest actor name, request id or precondition name.
pub const MAX_SHORT_TEXT: usize = 256;
/// Largest reason text.
pub const MAX_REASON: usize = 4096;
/// Largest piece of any value the store writes to sled.
pub const STORED_CHUNK_BYTES: usize = 32 * 1024;
/// Largest blob chunk accepted in one command.
pub const MAX_BLOB_CHUNK: usize = 1024 * 1024;
/// Largest blob (firmware image, module).
pub const MAX_BLOB_BYTES: u64 = 4 * 1024 * 1024 * 1024;

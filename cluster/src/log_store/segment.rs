//! Segment files: the on-disk format of the Raft log, and reading it back.
//!
//! The log is a directory of *segments*, `{sequence:020}.seg`, written strictly in order: only the newest
//! one (the *active* segment) is ever written, and always at its end. A segment is created at full size
//! ([`SEGMENT_BYTES`], or larger for one huge record) so that appending never changes the file's size or
//! allocation, and `fdatasync` has only data to write.
//!
//! ```text
//! segment  = header (32 bytes) ‖ record* ‖ zeros (the unused, preallocated rest)
//! header   = magic "TNDMRLOG" ‖ format: u32 LE (= 1) ‖ reserved: u32 ‖ sequence: u64 LE ‖ crc32c: u32 LE
//!            (of the 24 bytes before it) ‖ reserved: u32
//! record   = length: u32 LE ‖ crc32c: u32 LE (of kind ‖ payload) ‖ kind: u8 ‖ payload (length bytes)
//! ```
//!
//! Kinds ([`RecordKind`]): an entry (its bincode; the log id comes first, so it can be read without decoding
//! the payload), the vote, the committed log id, the last purged log id, and a truncation (every entry from
//! an index on is gone). The log's state is what replaying every record of every segment in order gives.
//!
//! ## Where reading stops
//! A record whose length field is zero ends the segment: it is the preallocated zeros, or a page that a crash
//! kept from reaching the disk. Any other record that does not check out (length past the end of the file, a
//! wrong CRC, an unknown kind) is *bad*. What a bad record means depends on where it is:
//!
//! - in the newest segment, it is a **torn tail**: the last write did not finish before a crash. Nothing
//!   after it was ever reported durable (a batch is acknowledged only after its `fdatasync`, and a later
//!   batch is written only after that), so the scan stops there, and the log store cuts the rest of the file
//!   off and says so.
//! - in any older segment, it is **damage**: acknowledged records are unreadable. The node must not guess,
//!   so opening fails with the segment, the offset and what to do.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The size a segment is created with (unless [`super::LogStore::open_with_segment_bytes`] says otherwise).
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// The segment header's length.
pub const HEADER_BYTES: u64 = 32;
/// A record header's length: length, CRC, kind.
pub const RECORD_HEADER_BYTES: usize = 9;
/// The largest record payload accepted when reading (an entry is at most a 32 MiB change set plus framing).
pub const MAX_RECORD_BYTES: u32 = 64 * 1024 * 1024;
/// The magic at the start of every segment.
const MAGIC: &[u8; 8] = b"TNDMRLOG";
/// The segment and record format this build writes and reads.
pub const FORMAT: u32 = 1;
/// The suffix of a finished segment file.
const SEGMENT_SUFFIX: &str = ".seg";
/// The suffix of a segment being created.
const TEMP_SUFFIX: &str = ".seg.tmp";

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A log entry: its bincode encoding.
    Entry = 1,
    /// The vote: bincode.
    Vote = 2,
    /// The committed log id: bincode `Option<LogId>`.
    Committed = 3,
    /// The last purged log id: bincode.
    Purged = 4,
    /// Entries from this index on are gone: u64 LE.
    Truncate = 5,
}

impl RecordKind {
    fn from_byte(byte: u8) -> Option<RecordKind> {
        Some(match byte {
            1 => RecordKind::Entry,
            2 => RecordKind::Vote,
            3 => RecordKind::Committed,
            4 => RecordKind::Purged,
            5 => RecordKind::Truncate,
            _ => return None,
        })
    }
}

/// Appends one framed record to `out`.
pub fn frame(out: &mut Vec<u8>, kind: RecordKind, payload: &[u8]) -> io::Result<()> {
    let length = u32::try_from(payload.len())
        .ok()
        .filter(|&length| length <= MAX_RECORD_BYTES && length > 0)
        .ok_or_else(|| {
            io::Error::other(format!("a log record of {} bytes cannot be stored", payload.len()))
        })?;
    let mut crc = crc32c::crc32c(&[kind as u8]);
    crc = crc32c::crc32c_append(crc, payload);
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(payload);
    Ok(())
}

/// The framed length of a record with `payload_len` bytes of payload.
pub fn framed_len(payload_len: usize) -> u64 {
    (RECORD_HEADER_BYTES + payload_len) as u64
}

/// One segment file, open for reading (and for writing, if it is the active one).
#[derive(Debug)]
pub struct Segment {
    pub sequence: u64,
    pub path: PathBuf,
    pub file: File,
    /// The file's size as created (records are written below it).
    pub capacity: u64,
}

impl Segment {
    /// Reads back the payload of `len` bytes at `offset` and checks it against its record's header (a
    /// damaged record becomes an error, never a wrong entry).
    pub fn read_payload(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let start = offset
            .checked_sub(RECORD_HEADER_BYTES as u64)
            .ok_or_else(|| io::Error::other("a record offset inside the segment header"))?;
        let mut buffer = vec![0u8; RECORD_HEADER_BYTES + len];
        self.file.read_exact_at(&mut buffer, start)?;
        let length = u32::from_le_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]);
        let crc = u32::from_le_bytes([buffer[4], buffer[5], buffer[6], buffer[7]]);
        if length as usize != len || crc32c::crc32c(&buffer[8..]) != crc {
            return Err(io::Error::other(format!(
                "the record at offset {start} of {} fails its checksum",
                self.path.display()
            )));
        }
        buffer.drain(..RECORD_HEADER_BYTES);
        Ok(buffer)
    }

    /// Creates segment `sequence` in `dir`, `size` bytes long or longer if `min_bytes` of records need
    /// it: written under a temporary name, preallocated, fsynced, renamed, and the directory fsynced, so
    /// that a segment that exists under its name always has a whole header.
    pub fn create(dir: &Path, sequence: u64, size: u64, min_bytes: u64) -> io::Result<Segment> {
        let capacity = size.max(HEADER_BYTES + min_bytes);
        let temp = dir.join(format!("{sequence:020}{TEMP_SUFFIX}"));
        let path = segment_path(dir, sequence);
        let file = fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&temp)?;
        file.write_all_at(&header(sequence), 0)?;
        preallocate(&file, capacity)?;
        file.sync_all()?;
        fs::rename(&temp, &path)?;
        sync_dir(dir)?;
        Ok(Segment { sequence, path, file, capacity })
    }

    /// Opens an existing segment and checks its header. `min_capacity` is the size segments are created with
    /// ([`SEGMENT_BYTES`] unless [`super::LogStore::open_with_segment_bytes`] says otherwise).
    pub fn open(path: &Path, sequence: u64, min_capacity: u64) -> Result<Segment, ScanError> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| ScanError::io(path, 0, format!("opening it: {e}")))?;
        let length = file.metadata().map_err(|e| ScanError::io(path, 0, e.to_string()))?.len();
        // A segment that could not be preallocated is shorter than the size it was created with; it is
        // still filled up to the size segments are created with before the next one starts.
        let capacity = length.max(min_capacity);
        let mut head = [0u8; HEADER_BYTES as usize];
        file.read_exact_at(&mut head, 0)
            .map_err(|e| ScanError::damaged(path, 0, format!("its header cannot be read: {e}")))?;
        check_header(&head, sequence).map_err(|why| ScanError::damaged(path, 0, why))?;
        Ok(Segment { sequence, path: path.to_path_buf(), file, capacity })
    }
}

/// Reserves `capacity` bytes of real blocks for the file (`fallocate`), so that appends below it change
/// neither its length nor its allocation, and `fdatasync` writes only data. Where the file system cannot
/// (LazyFS, which the power-loss tests run on), the file simply grows with each write: still correct, since
/// `fdatasync` then also syncs the new length, only a little slower. (Extending it with `ftruncate` instead
/// made LazyFS answer "No such file or directory" now and then when several nodes shared a mount.)
pub fn preallocate(file: &File, capacity: u64) -> io::Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, capacity) {
        Ok(()) => Ok(()),
        Err(error) if error == rustix::io::Errno::OPNOTSUPP || error == rustix::io::Errno::NOSYS => Ok(()),
        Err(error) => Err(error.into()),
    }
}

fn header(sequence: u64) -> [u8; HEADER_BYTES as usize] {
    let mut head = [0u8; HEADER_BYTES as usize];
    head[..8].copy_from_slice(MAGIC);
    head[8..12].copy_from_slice(&FORMAT.to_le_bytes());
    head[16..24].copy_from_slice(&sequence.to_le_bytes());
    let crc = crc32c::crc32c(&head[..24]);
    head[24..28].copy_from_slice(&crc.to_le_bytes());
    head
}

fn check_header(head: &[u8; HEADER_BYTES as usize], sequence: u64) -> Result<(), String> {
    if &head[..8] != MAGIC {
        return Err("it is not a Tandem Raft log segment (wrong magic)".into());
    }
    let crc = u32::from_le_bytes(head[24..28].try_into().unwrap_or_default());
    if crc != crc32c::crc32c(&head[..24]) {
        return Err("its header fails its checksum".into());
    }
    let format = u32::from_le_bytes(head[8..12].try_into().unwrap_or_default());
    if format != FORMAT {
        return Err(format!(
            "it has log format {format}, and this build reads format {FORMAT}: run the Tandem version that wrote it"
        ));
    }
    let stored = u64::from_le_bytes(head[16..24].try_into().unwrap_or_default());
    if stored != sequence {
        return Err(format!("its header says segment {stored}, its name says {sequence}"));
    }
    Ok(())
}

/// The path of segment `sequence`.
pub fn segment_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{sequence:020}{SEGMENT_SUFFIX}"))
}

/// The sequences of the segments in `dir`, in order; deletes segments left half-created by a crash.
pub fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let mut sequences = Vec::new();
    let mut removed = false;
    for item in fs::read_dir(dir)? {
        let item = item?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(TEMP_SUFFIX) {
            tracing::warn!(file = %item.path().display(), "deleting a log segment whose creation a crash interrupted");
            fs::remove_file(item.path())?;
            removed = true;
        } else if let Some(sequence) = name.strip_suffix(SEGMENT_SUFFIX).and_then(|s| s.parse().ok()) {
            sequences.push(sequence);
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    sequences.sort_unstable();
    Ok(sequences)
}

/// fsyncs a directory, so that files created, renamed or deleted in it stay so.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// One record read back.
#[derive(Debug)]
pub struct Record {
    pub kind: RecordKind,
    /// Where the payload starts in the segment.
    pub payload_offset: u64,
    pub payload: Vec<u8>,
}

/// How the scan of a segment ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// Zeros (or the end of the file) at this offset: the clean end.
    Clean(u64),
    /// A bad record at this offset, and why.
    Bad(u64, String),
}

impl End {
    /// The offset where the next record would go.
    pub fn offset(&self) -> u64 {
        match self {
            End::Clean(offset) | End::Bad(offset, _) => *offset,
        }
    }
}

/// Reads every record of `segment` in order, passing each to `visit`, and says how the segment ended.
pub fn scan(
    segment: &Segment,
    mut visit: impl FnMut(Record) -> Result<(), ScanError>,
) -> Result<End, ScanError> {
    let size = segment.file.metadata().map_err(|e| ScanError::io(&segment.path, 0, e.to_string()))?.len();
    let mut reader = io::BufReader::with_capacity(1024 * 1024, &segment.file);
    let mut offset = HEADER_BYTES;
    io::Seek::seek(&mut reader, io::SeekFrom::Start(offset))
        .map_err(|e| ScanError::io(&segment.path, offset, e.to_string()))?;
    loop {
        if offset + RECORD_HEADER_BYTES as u64 > size {
            return Ok(End::Clean(offset));
        }
        let mut head = [0u8; RECORD_HEADER_BYTES];
        io::Read::read_exact(&mut reader, &mut head)
            .map_err(|e| ScanError::io(&segment.path, offset, e.to_string()))?;
        let length = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if length == 0 {
            return Ok(End::Clean(offset));
        }
        let payload_offset = offset + RECORD_HEADER_BYTES as u64;
        if length > MAX_RECORD_BYTES || payload_offset + u64::from(length) > size {
            return Ok(End::Bad(offset, format!("a record claims {length} bytes, past the end of the file")));
        }
        let mut payload = vec![0u8; length as usize];
        io::Read::read_exact(&mut reader, &mut payload)
            .map_err(|e| ScanError::io(&segment.path, payload_offset, e.to_string()))?;
        if crc32c::crc32c_append(crc32c::crc32c(&[head[8]]), &payload) != crc {
            return Ok(End::Bad(offset, "a record fails its checksum".into()));
        }
        let Some(kind) = RecordKind::from_byte(head[8]) else {
            return Ok(End::Bad(offset, format!("a record has unknown kind {}", head[8])));
        };
        visit(Record { kind, payload_offset, payload })?;
        offset = payload_offset + u64::from(length);
    }
}

/// Why a segment could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the Raft log segment {path} is unreadable at offset {offset}: {why}")]
pub struct ScanError {
    pub path: PathBuf,
    pub offset: u64,
    pub why: String,
}

impl ScanError {
    pub fn damaged(path: &Path, offset: u64, why: String) -> ScanError {
        ScanError { path: path.to_path_buf(), offset, why }
    }

    fn io(path: &Path, offset: u64, why: String) -> ScanError {
        ScanError { path: path.to_path_buf(), offset, why: format!("I/O error: {why}") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(segment: &Segment) -> (Vec<(RecordKind, Vec<u8>)>, End) {
        let mut seen = Vec::new();
        let end = scan(segment, |record| {
            seen.push((record.kind, record.payload));
            Ok(())
        })
        .unwrap();
        (seen, end)
    }

    #[test]
    fn records_read_back_in_order_and_zeros_end_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        let segment = Segment::create(dir.path(), 7, SEGMENT_BYTES, 0).unwrap();
        let mut bytes = Vec::new();
        frame(&mut bytes, RecordKind::Entry, b"first").unwrap();
        frame(&mut bytes, RecordKind::Vote, b"v").unwrap();
        segment.file.write_all_at(&bytes, HEADER_BYTES).unwrap();
        let reopened = Segment::open(&segment_path(dir.path(), 7), 7, SEGMENT_BYTES).unwrap();
        let (seen, end) = records(&reopened);
        assert_eq!(seen, vec![(RecordKind::Entry, b"first".to_vec()), (RecordKind::Vote, b"v".to_vec())]);
        assert_eq!(end, End::Clean(HEADER_BYTES + bytes.len() as u64));
        assert!(reopened.capacity >= SEGMENT_BYTES);
    }

    #[test]
    fn a_flipped_bit_or_a_cut_record_is_a_bad_end_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let segment = Segment::create(dir.path(), 1, SEGMENT_BYTES, 0).unwrap();
        let mut bytes = Vec::new();
        frame(&mut bytes, RecordKind::Entry, b"good").unwrap();
        let second = bytes.len() as u64;
        frame(&mut bytes, RecordKind::Entry, b"torn").unwrap();
        bytes[second as usize + RECORD_HEADER_BYTES + 1] ^= 0x40;
        segment.file.write_all_at(&bytes, HEADER_BYTES).unwrap();
        let (seen, end) = records(&segment);
        assert_eq!(seen.len(), 1);
        assert!(matches!(end, End::Bad(offset, _) if offset == HEADER_BYTES + second));

        // A length that runs past the end of the file.
        segment.file.set_len(HEADER_BYTES + second + 11).unwrap();
        let (_, end) = records(&segment);
        assert!(matches!(end, End::Bad(offset, _) if offset == HEADER_BYTES + second));
    }

    #[test]
    fn wrong_headers_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let segment = Segment::create(dir.path(), 3, SEGMENT_BYTES, 0).unwrap();
        let path = segment.path.clone();
        let error = Segment::open(&path, 4, SEGMENT_BYTES).unwrap_err();
        assert!(error.why.contains("segment 3"), "{error}");
        segment.file.write_all_at(&9u32.to_le_bytes(), 8).unwrap();
        let error = Segment::open(&path, 3, SEGMENT_BYTES).unwrap_err();
        assert!(error.why.contains("checksum"), "{error}");
        fs::write(&path, b"not a segment at all, but 32 bytes or more").unwrap();
        assert!(Segment::open(&path, 3, SEGMENT_BYTES).unwrap_err().why.contains("magic"));
    }

    #[test]
    fn leftover_temporary_segments_are_deleted_when_listing() {
        let dir = tempfile::tempdir().unwrap();
        Segment::create(dir.path(), 2, SEGMENT_BYTES, 0).unwrap();
        Segment::create(dir.path(), 10, SEGMENT_BYTES, 0).unwrap();
        fs::write(dir.path().join(format!("{:020}{TEMP_SUFFIX}", 11)), b"half").unwrap();
        assert_eq!(list(dir.path()).unwrap(), vec![2, 10]);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn empty_payloads_are_refused() {
        assert!(frame(&mut Vec::new(), RecordKind::Vote, b"").is_err());
    }
}

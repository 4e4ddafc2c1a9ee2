//! The boot server: what terminals fetch at power-on, served from this node's own replica of the store,
//! never through consensus, so it works on followers, on mirrors and with every peer down.
//!
//! Both protocols serve the same files, named by the same paths ([`BootPath`]):
//!
//! | path | content |
//! |---|---|
//! | `config/{mac}` | the terminal's merged boot document (JSON) |
//! | `firmware/{name}` | the bytes of the firmware blob named by the `firmware` document `name` |
//! | `blobs/{sha256}` | any blob by digest |
//! | `ipxe/{mac}` | an iPXE script that boots the terminal's firmware with failover across boot servers |
//!
//! [`BootContent`] resolves a path to a [`BootFile`]; the HTTP server ([`http`]) and the TFTP server
//! ([`tftp`]) only move bytes.

use std::io::Read;

use tandem_storage::{Digest, Mac};

pub mod content;
pub mod heartbeat;
pub mod http;
pub mod tftp;

/// The boot servers' shared registries: heartbeats and counters (read by the API and metrics).
#[derive(Clone, Debug, Default)]
pub struct BootState {
    pub heartbeats: std::sync::Arc<heartbeat::Heartbeats>,
    pub http: std::sync::Arc<http::BootHttpStats>,
    pub tftp: std::sync::Arc<tftp::TftpStats>,
}

/// A terminal counts as online while its heartbeats arrive at least this often.
pub const ONLINE_WINDOW: std::time::Duration = std::time::Duration::from_secs(90);

/// A path a terminal may ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootPath {
    Config(Mac),
    Firmware(String),
    Blob(Digest),
    Ipxe(Mac),
}

/// Why a path cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootError {
    /// The path is not one of the four shapes, or its MAC / digest / name is malformed.
    #[error("bad path: {0}")]
    BadPath(String),
    /// Well-formed, but nothing is there (unknown MAC, firmware, blob).
    #[error("not found: {0}")]
    NotFound(String),
    /// The node has never been in sync with its cluster: it has nothing trustworthy to serve yet.
    #[error("not ready: {0}")]
    NotReady(String),
    /// Reading the store failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl BootPath {
    /// Parses `config/{mac}`, `firmware/{name}`, `blobs/{sha256}` or `ipxe/{mac}` (a leading `/` is ignored).
    /// MACs are accepted in the three forms of [`Mac::parse`]; anything else, including `..`, is refused.
    pub fn parse(path: &str) -> Result<BootPath, BootError> {
        let path = path.trim_start_matches('/');
        let bad = || BootError::BadPath(path.chars().take(200).collect());
        let (kind, rest) = path.split_once('/').ok_or_else(bad)?;
        if rest.is_empty() || rest.contains('/') || rest.contains("..") || rest.contains('\0') {
            return Err(bad());
        }
        match kind {
            "config" => Mac::parse(rest).map(BootPath::Config).map_err(|e| BootError::BadPath(e.to_string())),
            "ipxe" => Mac::parse(rest).map(BootPath::Ipxe).map_err(|e| BootError::BadPath(e.to_string())),
            "blobs" => Digest::parse(rest).map(BootPath::Blob).map_err(|e| BootError::BadPath(e.to_string())),
            "firmware" => {
                tandem_storage::collections::check_document_id(rest)
                    .map_err(|e| BootError::BadPath(e.to_string()))?;
                Ok(BootPath::Firmware(rest.to_string()))
            }
            _ => Err(bad()),
        }
    }
}

/// A resolved file: its size, a content-hash ETag (identical on every node), a content type, and its bytes as
/// a stream (blobs are read part by part from the store, never whole in memory).
pub struct BootFile {
    pub size: u64,
    /// A strong ETag, quoted (`"sha256-…"`): the blob digest, or the digest of a generated document.
    pub etag: String,
    pub content_type: &'static str,
    /// The store revision the content comes from.
    pub revision: u64,
    pub body: BootBody,
}

/// The bytes of a [`BootFile`].
#[derive(Debug)]
pub enum BootBody {
    /// A small generated document (boot config, iPXE script).
    Bytes(Vec<u8>),
    /// A blob streamed from the store; `seek_to` lets a server start at an offset (HTTP Range, TFTP).
    Blob(tandem_storage::BlobReader),
}

impl std::fmt::Debug for BootFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootFile").field("size", &self.size).field("etag", &self.etag).finish_non_exhaustive()
    }
}

impl BootBody {
    /// A reader over the bytes from `offset` on.
    pub fn into_reader(self, offset: u64) -> Box<dyn Read + Send> {
        match self {
            BootBody::Bytes(mut bytes) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
                bytes.drain(..start);
                Box::new(std::io::Cursor::new(bytes))
            }
            BootBody::Blob(mut reader) => {
                reader.seek_to(offset);
                Box::new(reader)
            }
        }
    }
}

/// Where the boot servers get their files. Implemented over the node's store ([`content::StoreContent`]);
/// tests may implement it over plain bytes.
pub trait BootContent: Send + Sync + 'static {
    fn open(&self, path: &BootPath) -> Result<BootFile, BootError>;

    /// The generic iPXE entry script (`/boot/v1/ipxe` over HTTP: a DHCP filename that fits every terminal),
    /// which chains to `ipxe/{mac}` with iPXE's own `${mac}` expansion. It names no terminal, so it is not a
    /// [`BootPath`]. Contents without one (test doubles) keep this default: not found.
    fn open_ipxe_entry(&self) -> Result<BootFile, BootError> {
        Err(BootError::NotFound("this server has no iPXE entry script".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_paths_parse_and_refuse_traversal() {
        assert_eq!(
            BootPath::parse("config/52-54-00-12-34-56").unwrap(),
            BootPath::Config(Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]))
        );
        assert_eq!(BootPath::parse("/firmware/fw-1.2").unwrap(), BootPath::Firmware("fw-1.2".into()));
        for bad in [
            "",
            "config",
            "config/",
            "firmware/../etc/passwd",
            "blobs/xyz",
            "other/x",
            "firmware/a/b",
            "ipxe/zz",
        ] {
            assert!(BootPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn byte_bodies_read_from_an_offset() {
        let mut out = String::new();
        BootBody::Bytes(b"hello world".to_vec()).into_reader(6).read_to_string(&mut out).unwrap();
        assert_eq!(out, "world");
    }
}

//! The read-only TFTP server: what PXE ROMs, UEFI PXE and iPXE fetch first, from the same [`BootContent`] as
//! the HTTP server (`config/{mac}`, `firmware/{name}`, `blobs/{sha256}`, `ipxe/{mac}`, and `ipxe`, the generic
//! iPXE entry script).
//!
//! # The protocol (RFC 1350)
//!
//! TFTP runs over UDP. A client sends a read request (RRQ: file name, mode, options) to the server's port (69,
//! here `--tftp`). The server answers from a **new port** of its own — the transfer ID — and the rest of the
//! transfer happens between those two ports: the server sends the file in numbered DATA blocks (512 bytes unless
//! negotiated), the client acknowledges each with an ACK of the same number. A block shorter than the block
//! size ends the file, so a file whose size is an exact multiple of the block size ends with an empty block
//! (a 0-byte file is one empty DATA 1). Either side may send an ERROR packet, which ends the transfer at once
//! and is never answered. Nothing else is reliable: a lost packet is noticed by a timeout and sent again.
//!
//! Here every transfer has its own socket on an ephemeral port, bound to the IP address of the server socket
//! (so answers come from the address clients sent their request to; bind the server to a specific address on
//! a multi-homed host — with `0.0.0.0` the kernel picks the source address by route) and connected to the
//! client, so the kernel drops packets from anyone else and reports a closed client port (ICMP) to us.
//!
//! # Option negotiation (RFC 2347, 2348, 2349, 7440)
//!
//! A client may append `name value` pairs to its request (the whole request fits in 512 octets; longer ones are
//! refused). If it does and the server accepts any of them, the server first answers with an OACK listing
//! **only options the client asked for**, with the granted values; the client acknowledges it with ACK 0 (or
//! refuses it with ERROR 8) and the data starts at block 1. When nothing is accepted there is no OACK: DATA 1
//! comes at once, as RFC 1350 says. Options understood here (`packet::negotiate`):
//!
//! - `blksize` 8..65464 — granted up to [`TftpOptions::max_block_size`] (1468 by default: the largest block
//!   whose packet fits a 1500-byte Ethernet MTU).
//! - `tsize` — the client sends 0 and gets the file's size back. A non-numeric value (atftp sends
//!   `tsize enable` literally) is ignored, not refused. For an empty file `tsize` is left out of the OACK:
//!   curl rejects `tsize 0` (exit 71), and a server may always decline an option.
//! - `timeout` 1..255 seconds — used as this transfer's retransmission interval, lowered to
//!   [`TftpOptions::max_timeout`] (5 s by default; the OACK then carries the lowered value, which RFC 2349
//!   allows): a client must not make one transfer hold a slot for minutes.
//! - `windowsize` 1..65535 (RFC 7440) — granted up to [`TftpOptions::max_window_size`].
//!
//! Unknown options and invalid values are ignored. Both modes, `octet` and `netascii`, are served **byte for
//! byte**: boot files are binary and no boot client asks for netascii, and converting line ends would make the
//! announced `tsize` wrong. Any other mode (`mail`) gets ERROR 4.
//!
//! # Windows (RFC 7440) and retransmission
//!
//! With `windowsize N` the server sends N blocks in a row, then waits for one ACK. The ACK of the window's last
//! block moves the window on; an ACK of a block inside the window means the client missed the one after it, so
//! the next window starts right after the acknowledged block. ACKs of older blocks (duplicates, late ones) are
//! ignored and never trigger a resend — resending on duplicate ACKs is the Sorcerer's Apprentice bug, where
//! every block ends up sent twice. When no useful ACK arrives within the timeout
//! ([`TftpOptions::retransmit_timeout`] or the client's `timeout`), the whole window (or the OACK) is sent
//! again, up to [`TftpOptions::max_retries`] times; then the transfer fails with an ERROR to the client.
//! Without `windowsize` the window is one block: classic lock-step TFTP.
//!
//! # Block number rollover
//!
//! Block numbers are 16 bits on the wire. Internally they are counted in 64 bits and sent as their low 16 bits,
//! so after block 65535 comes block 0, then 1, … — what every client expects (no RFC says it, all do it). A
//! 33 MiB file in 512-byte blocks rolls over once. ACK numbers are mapped back into the current window, which
//! never spans more than 65535 blocks, so the mapping is unambiguous.
//!
//! # Clients and their quirks
//!
//! - **UEFI PXE** (EDK2) first probes the size: `RRQ file octet tsize 0 blksize 1468 windowsize 4`, reads `tsize`
//!   from the OACK, and answers **ERROR 8**; then it sends the real request from a **new port**. A client ERROR
//!   stops a transfer at once here (no retransmissions for minutes), and the new request is an independent
//!   transfer.
//! - **iPXE** asks `blksize 1432 tsize 0`, no window.
//! - **tftp-hpa** (`tftp`) sends no options: 512-byte blocks in lock step.
//! - **atftp** sends every option it is given, `tsize enable` literally (see `tsize` above).
//! - **curl** always sends `tsize`, `blksize` and `timeout`, never `windowsize`; it refuses `tsize 0` in an OACK
//!   (see above) unless run with `--tftp-no-options`.
//! - A **new request from the same address and port** is a new transfer: the old one is cancelled silently and
//!   replaced (a ROM that rebooted reuses its port). One exception: the very same request again while the
//!   client has acknowledged nothing yet is the client retransmitting its request because our first answer was
//!   slow or lost; it is ignored, and the running transfer's own retransmission answers it. Replacing the
//!   transfer then would break a client that already locked onto the first answer's port.
//! - File names: a leading `/` is ignored and `\` is read as `/` (Windows-style DHCP file names). A `..` path
//!   component is refused with ERROR 2 (access violation); any other unknown name gets ERROR 1 (file not
//!   found) with a short reason; a node that is not ready gets ERROR 0 saying so, so a terminal moves on to
//!   its other server.
//!
//! # Refusals and limits
//!
//! Write requests get ERROR 2 (read-only server). Malformed packets (shorter than an opcode, unknown opcode,
//! file name or mode without its NUL, requests over 512 octets) get ERROR 4; DATA or ACK sent to the server
//! port get ERROR 5 (unknown transfer ID); ERROR packets are never answered. Such refusals are sent from the
//! server socket itself and cost no resources; so are refusals when [`TftpOptions::max_transfers`] transfers
//! are running, or [`TftpOptions::max_transfers_per_source`] for the client's IP address (ERROR 0 "server
//! busy"). Files that cannot be opened are refused from the transfer's own socket, as tftpd-hpa does. A
//! transfer lives at most [`TftpOptions::max_transfer_time`], then fails with ERROR 0.
//!
//! # Spoofed requests
//!
//! UDP requests can carry any source address, so a request may name a victim rather than a client. Until the
//! client has acknowledged something, a transfer sends its first packet (OACK or DATA 1) and **one**
//! retransmission, then gives up silently (no ERROR packet): a 13-byte request makes this server send at most
//! two packets to an address that never answers. Only a client that acknowledges gets the full
//! [`TftpOptions::max_retries`].
//!
//! # Reading the file
//!
//! [`BootContent::open`] and blob readers do blocking store reads, so a transfer opens its file on the blocking
//! pool, then reads it in 64 KiB parts, each on the blocking pool only for the read itself, one part ahead
//! ([`crate::node::chunked_read::ChunkedRead`], as HTTP downloads do): a transfer holds a few hundred KiB at
//! most (the part read ahead, its buffer, one window), whatever the file's size, the async workers never wait
//! for the store, and no thread waits for a slow client. (A thread per transfer, parked on a channel while its
//! client was slow, used to hold its own allocator heap: the TFTP half of the boot storm alone peaked at 171 MiB
//! with 64 transfers; 107 MiB after.)

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::node::boot::{BootContent, BootPath};
use packet::{ErrorCode, Incoming, Refusal};
use transfer::{Outcome, Transfer};

mod packet;
mod transfer;

/// Settings of the TFTP server. [`Default`] gives the documented defaults.
#[derive(Clone, Debug)]
pub struct TftpOptions {
    /// The largest `blksize` granted (RFC 2348). Default 1468: 1468 + 4 (TFTP) + 8 (UDP) + 20 (IPv4) = 1500,
    /// the Ethernet MTU. Lower it for paths with a smaller MTU (VPNs, tunnels). Clamped to 8..=65464.
    pub max_block_size: u16,
    /// The largest `windowsize` granted (RFC 7440). Default 64 (gains level out around 16-64). A transfer
    /// keeps one window of blocks in memory. At least 1.
    pub max_window_size: u16,
    /// Transfers served at once; further requests get ERROR 0 "server busy". Default 64. At least 1.
    pub max_transfers: usize,
    /// Transfers served at once for one IP address; further requests from it get ERROR 0 "server busy".
    /// Default 4 (a PXE ROM, then iPXE, runs one or two at a time). At least 1.
    pub max_transfers_per_source: usize,
    /// The largest retransmission interval a client's `timeout` option gets: a larger one is lowered to this
    /// in the OACK (RFC 2349 lets the server refuse or lower it). Default 5 s, within 1..=255 s.
    pub max_timeout: Duration,
    /// The longest a transfer may run, whatever its size or pace; then it fails with ERROR 0. Default 10 min.
    pub max_transfer_time: Duration,
    /// How long to wait for an ACK before sending the OACK or the window again, unless the client asked for
    /// `timeout`. Default 1 s.
    pub retransmit_timeout: Duration,
    /// How many times the same OACK or window is sent again before the transfer fails. Default 5.
    pub max_retries: u32,
    /// Counters for metrics; clone this `Arc` before handing the options to [`serve_tftp`].
    pub stats: Arc<TftpStats>,
}

impl Default for TftpOptions {
    fn default() -> Self {
        TftpOptions {
            max_block_size: 1468,
            max_window_size: 64,
            max_transfers: 256,
            max_transfers_per_source: 4,
            max_timeout: Duration::from_secs(5),
            max_transfer_time: Duration::from_secs(600),
            retransmit_timeout: Duration::from_secs(1),
            max_retries: 5,
            stats: Arc::new(TftpStats::default()),
        }
    }
}

/// Live counters of the TFTP server (all monotonic except `active`). Read them with [`TftpStats::snapshot`].
#[derive(Debug, Default)]
pub struct TftpStats {
    active: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    aborted: AtomicU64,
    refused: AtomicU64,
    bytes: AtomicU64,
    retransmits: AtomicU64,
}

/// A copy of [`TftpStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TftpStatsSnapshot {
    /// Transfers running now.
    pub active: u64,
    /// Transfers whose every block was acknowledged.
    pub completed: u64,
    /// Transfers the server gave up: retries exhausted, read errors, client port closed, shutdown.
    pub failed: u64,
    /// Transfers the client ended with an ERROR (UEFI's size probe ends this way) or replaced with a new
    /// request from the same port.
    pub aborted: u64,
    /// Requests answered with an error packet: unknown file, bad path, not ready, write request, malformed
    /// packet, server busy.
    pub refused: u64,
    /// File bytes acknowledged by clients.
    pub bytes: u64,
    /// DATA and OACK packets sent again after a timeout.
    pub retransmits: u64,
}

impl TftpStats {
    pub fn snapshot(&self) -> TftpStatsSnapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        TftpStatsSnapshot {
            active: get(&self.active),
            completed: get(&self.completed),
            failed: get(&self.failed),
            aborted: get(&self.aborted),
            refused: get(&self.refused),
            bytes: get(&self.bytes),
            retransmits: get(&self.retransmits),
        }
    }
}

/// A running transfer, as the dispatcher knows it.
struct Session {
    id: u64,
    cancel: CancellationToken,
    /// The request packet that started it, to recognise a client repeating it.
    request: Vec<u8>,
    heard: Arc<AtomicBool>,
}

type Sessions = Arc<Mutex<HashMap<SocketAddr, Session>>>;

/// Serves TFTP read requests arriving on `socket` until `shutdown` is cancelled, then cancels the running
/// transfers (their clients get ERROR 0 "server shutting down") and returns once they have stopped.
pub async fn serve_tftp(
    socket: UdpSocket,
    content: Arc<dyn BootContent>,
    options: TftpOptions,
    shutdown: CancellationToken,
) {
    let options = Arc::new(TftpOptions {
        max_block_size: options.max_block_size.clamp(packet::MIN_BLOCK_SIZE, packet::MAX_BLOCK_SIZE),
        max_window_size: options.max_window_size.max(1),
        max_transfers: options.max_transfers.max(1),
        max_transfers_per_source: options.max_transfers_per_source.max(1),
        max_timeout: options.max_timeout.clamp(Duration::from_secs(1), Duration::from_secs(255)),
        ..options
    });
    let local = match socket.local_addr() {
        Ok(local) => local,
        Err(e) => {
            tracing::error!(error = %e, "tftp: the server socket has no address");
            return;
        }
    };
    let sessions: Sessions = Arc::default();
    let transfers = TaskTracker::new();
    let mut next_id = 0u64;
    // Large enough to see that a request is oversized (RFC 2347 caps it at 512 octets).
    let mut buffer = vec![0u8; 65536];
    loop {
        let (length, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            received = socket.recv_from(&mut buffer) => match received {
                Ok(received) => received,
                Err(e) => {
                    tracing::debug!(error = %e, "tftp: receive failed");
                    continue;
                }
            },
        };
        let packet = &buffer[..length];
        let refusal = match packet::parse_incoming(packet) {
            Ok(Incoming::Read(request)) => match resolve(&request.filename) {
                Ok(target) => {
                    next_id += 1;
                    let started = start_transfer(
                        Dispatch { local, peer, packet, next_id, target, request },
                        &sessions,
                        &transfers,
                        &content,
                        &options,
                        &shutdown,
                    );
                    match started {
                        Ok(()) => continue,
                        Err(refusal) => refusal,
                    }
                }
                Err(refusal) => refusal,
            },
            Ok(Incoming::Write) => {
                Refusal::new(ErrorCode::AccessViolation, "read-only server: writes are refused")
            }
            Ok(Incoming::Stray) => Refusal::new(ErrorCode::UnknownTransferId, "unknown transfer ID"),
            Ok(Incoming::Oack) => Refusal::new(ErrorCode::IllegalOperation, "unexpected OACK"),
            Ok(Incoming::Error) => continue,
            Err(refusal) => refusal,
        };
        tracing::debug!(%peer, code = refusal.code as u16, message = %refusal.message, "tftp: refused");
        options.stats.refused.fetch_add(1, Ordering::Relaxed);
        let _ = socket.send_to(&packet::encode_error(refusal.code, &refusal.message), peer).await;
    }
    // The transfers' tokens are children of `shutdown`: they are all stopping now.
    transfers.close();
    transfers.wait().await;
}

/// What a transfer serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Path(BootPath),
    /// `ipxe`: the generic iPXE entry script ([`BootContent::open_ipxe_entry`]).
    IpxeEntry,
}

/// Maps a requested file name to what to serve: `\` is read as `/`, a leading `/` is ignored, `..` components
/// are an access violation, other bad names are "file not found".
fn resolve(filename: &str) -> Result<Target, Refusal> {
    let name = filename.replace('\\', "/");
    if name.split('/').any(|component| component == "..") {
        return Err(Refusal::new(ErrorCode::AccessViolation, "access violation: '..' is not allowed"));
    }
    let name = name.trim_start_matches('/');
    if name == "ipxe" || name == "ipxe/" {
        return Ok(Target::IpxeEntry);
    }
    BootPath::parse(name)
        .map(Target::Path)
        .map_err(|e| Refusal::new(ErrorCode::FileNotFound, format!("file not found: {e}")))
}

/// One accepted read request.
struct Dispatch<'a> {
    local: SocketAddr,
    peer: SocketAddr,
    packet: &'a [u8],
    next_id: u64,
    target: Target,
    request: packet::Request,
}

/// Starts a transfer for a request, replacing the peer's running one, or refuses it when the server is full.
fn start_transfer(
    dispatch: Dispatch<'_>,
    sessions: &Sessions,
    transfers: &TaskTracker,
    content: &Arc<dyn BootContent>,
    options: &Arc<TftpOptions>,
    shutdown: &CancellationToken,
) -> Result<(), Refusal> {
    let Dispatch { local, peer, packet, next_id: id, target, request } = dispatch;
    let cancel = shutdown.child_token();
    let heard = Arc::new(AtomicBool::new(false));
    {
        let mut sessions = sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(old) = sessions.get(&peer) {
            if old.request == packet && !old.heard.load(Ordering::Relaxed) {
                tracing::debug!(%peer, "tftp: request repeated before any ACK: the running transfer answers it");
                return Ok(());
            }
            tracing::debug!(%peer, "tftp: new request from the same port replaces the running transfer");
            old.cancel.cancel();
            sessions.remove(&peer);
        } else if sessions.len() >= options.max_transfers {
            return Err(Refusal::new(
                ErrorCode::NotDefined,
                format!("server busy: {} transfers running, try again later", sessions.len()),
            ));
        } else if sessions.keys().filter(|other| other.ip() == peer.ip()).count()
            >= options.max_transfers_per_source
        {
            return Err(Refusal::new(
                ErrorCode::NotDefined,
                format!(
                    "server busy: your address has {} transfers running, the most allowed; try again later",
                    options.max_transfers_per_source
                ),
            ));
        }
        sessions.insert(
            peer,
            Session { id, cancel: cancel.clone(), request: packet.to_vec(), heard: heard.clone() },
        );
    }
    options.stats.active.fetch_add(1, Ordering::Relaxed);
    let transfer = Transfer {
        peer,
        local_ip: local.ip(),
        target,
        request,
        content: content.clone(),
        options: options.clone(),
        cancel,
        shutdown: shutdown.clone(),
        heard,
    };
    let sessions = sessions.clone();
    let options = options.clone();
    transfers.spawn(async move {
        let started = Instant::now();
        let file = transfer.request.filename.clone();
        let outcome = transfer.run().await;
        {
            let mut sessions = sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if sessions.get(&peer).is_some_and(|session| session.id == id) {
                sessions.remove(&peer);
            }
        }
        let stats = &options.stats;
        stats.active.fetch_sub(1, Ordering::Relaxed);
        let ms = started.elapsed().as_millis() as u64;
        match outcome {
            Outcome::Completed { bytes, block_size, window_size } => {
                stats.completed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%peer, %file, bytes, ms, block_size, window_size, "tftp: sent");
            }
            Outcome::Refused(reason) => {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%peer, %file, %reason, "tftp: refused");
            }
            Outcome::Failed(reason) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, %file, %reason, ms, "tftp: transfer failed");
            }
            Outcome::Aborted(reason) => {
                stats.aborted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, %file, %reason, ms, "tftp: transfer aborted by the client");
            }
            Outcome::Replaced => {
                stats.aborted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, %file, ms, "tftp: transfer replaced by a new request");
            }
            Outcome::ShutDown => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, %file, ms, "tftp: transfer stopped by shutdown");
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_resolve_and_traversal_is_an_access_violation() {
        assert_eq!(resolve("/firmware/fw-1").unwrap(), Target::Path(BootPath::Firmware("fw-1".into())));
        assert_eq!(resolve("\\firmware\\fw-1").unwrap(), Target::Path(BootPath::Firmware("fw-1".into())));
        assert_eq!(resolve("ipxe").unwrap(), Target::IpxeEntry);
        for traversal in ["../etc/passwd", "firmware/../../x", "..", "firmware\\..\\x"] {
            assert_eq!(resolve(traversal).unwrap_err().code, ErrorCode::AccessViolation, "{traversal}");
        }
        for missing in ["etc/passwd", "firmware/", "firmware/a/b", "config/zz", "/"] {
            assert_eq!(resolve(missing).unwrap_err().code, ErrorCode::FileNotFound, "{missing}");
        }
    }
}

/// What the server does with a packet before any I/O, for the `tftp_packet` fuzz target (feature `fuzzing`).
#[cfg(feature = "fuzzing")]
pub mod fuzz {
    use std::time::Duration;

    use super::packet::{self, Incoming, Limits};

    /// Parses `data` as a packet on the server port (then resolves the file name, negotiates the options for a
    /// file of `size` bytes and encodes the OACK and any refusal) and as a reply on a transfer's socket. Panics
    /// if a negotiated value leaves its RFC range or an answer outgrows what was asked.
    pub fn packet(data: &[u8], size: u64) {
        let _ = packet::parse_reply(data);
        match packet::parse_incoming(data) {
            Ok(Incoming::Read(request)) => {
                assert!(data.len() <= packet::MAX_REQUEST);
                if let Err(refusal) = super::resolve(&request.filename) {
                    let error = packet::encode_error(refusal.code, &refusal.message);
                    assert!(error.len() <= 200, "an ERROR packet of {} bytes", error.len());
                }
                let limits =
                    Limits { max_block_size: 1468, max_window_size: 64, max_timeout: Duration::from_secs(5) };
                let negotiated = packet::negotiate(&request.options, limits, size);
                assert!((packet::MIN_BLOCK_SIZE..=1468).contains(&negotiated.block_size));
                assert!((1..=64).contains(&negotiated.window_size));
                assert!(negotiated.timeout.is_none_or(|t| (1..=5).contains(&t.as_secs())));
                assert!(negotiated.oack.len() <= 4, "{:?}", negotiated.oack);
                for (name, _) in &negotiated.oack {
                    assert!(
                        request.options.iter().any(|(asked, _)| asked == name),
                        "{name} was not asked for"
                    );
                }
                // Names come from the request; each answer is a number of at most 20 digits.
                assert!(packet::encode_oack(&negotiated.oack).len() <= 2 + data.len() + 4 * 20);
            }
            Ok(_) => {}
            Err(refusal) => {
                assert!(packet::encode_error(refusal.code, &refusal.message).len() <= 200);
            }
        }
    }
}

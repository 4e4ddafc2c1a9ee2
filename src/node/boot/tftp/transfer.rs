//! One transfer: its own socket, the file read in chunks on the blocking pool, the OACK exchange, then windows of DATA
//! blocks, each window sent again on timeout until the client acknowledges it or the retries run out.

use std::io::{ErrorKind, Read};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::packet::{self, ErrorCode, Limits, Reply, Request};
use super::{Target, TftpOptions};
use crate::node::boot::{BootContent, BootError};
use crate::node::chunked_read::ChunkedRead;

/// The file is read in parts of this size (one read ahead), so a transfer holds about `3 × CHUNK + block size ×
/// window` bytes whatever the file's size.
const CHUNK: usize = 64 * 1024;

/// What a transfer needs; built by the dispatcher for each accepted request.
pub(super) struct Transfer {
    pub peer: SocketAddr,
    /// The server socket's address: transfer sockets are bound to it, so answers come from the address the
    /// client sent its request to (when the server is bound to a specific address).
    pub local_ip: IpAddr,
    pub target: Target,
    pub request: Request,
    pub content: Arc<dyn BootContent>,
    pub options: Arc<TftpOptions>,
    /// Cancelled when the client sends a new request from the same address and port, or on shutdown.
    pub cancel: CancellationToken,
    pub shutdown: CancellationToken,
    /// Set once the client has acknowledged anything (see the dispatcher's rule for repeated requests).
    pub heard: Arc<AtomicBool>,
}

/// How a transfer ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Every block acknowledged.
    Completed { bytes: u64, block_size: u16, window_size: u16 },
    /// The file could not be opened (not found, not ready, …): the client got an error packet.
    Refused(String),
    /// The server gave up: timeouts, a read error, the client's port closed, a socket error.
    Failed(String),
    /// The client sent an ERROR (UEFI's ERROR 8 after its size probe, a user's Ctrl-C).
    Aborted(String),
    /// A new request from the same address and port took over.
    Replaced,
    /// The server is shutting down.
    ShutDown,
}

/// Why the exchange stopped before the end.
enum Stop {
    Cancelled,
    ClientError(u16, String),
    TimedOut,
    /// The transfer ran past [`TftpOptions::max_transfer_time`].
    TooLong,
    ClientGone,
    Read(String),
}

impl Transfer {
    pub async fn run(self) -> Outcome {
        let socket = match bind(self.local_ip, self.peer).await {
            Ok(socket) => socket,
            Err(e) => return Outcome::Failed(format!("opening a transfer socket: {e}")),
        };
        let opening = open(self.content.clone(), self.target.clone());
        let (parts, size) = tokio::select! {
            _ = self.cancel.cancelled() => return self.cancelled(&socket).await,
            opened = opening => match opened {
                Ok(Ok((reader, size))) => (ChunkedRead::new(reader, size, CHUNK), size),
                Ok(Err(error)) => {
                    let (code, message) = refusal_for(&error);
                    let _ = socket.send(&packet::encode_error(code, &message)).await;
                    return Outcome::Refused(message);
                }
                Err(error) => {
                    let _ = socket.send(&packet::encode_error(ErrorCode::NotDefined, "internal error")).await;
                    return Outcome::Failed(format!("opening the file failed: {error}"));
                }
            },
        };
        let limits = Limits {
            max_block_size: self.options.max_block_size,
            max_window_size: self.options.max_window_size,
            max_timeout: self.options.max_timeout,
        };
        let negotiated = packet::negotiate(&self.request.options, limits, size);
        let mut exchange = Exchange {
            transfer: &self,
            socket: &socket,
            source: Source { parts, buffer: Vec::new(), buffer_offset: 0, end: None },
            block_size: u64::from(negotiated.block_size),
            window_size: u64::from(negotiated.window_size),
            timeout: negotiated.timeout.unwrap_or(self.options.retransmit_timeout),
            receive: vec![0; 2048],
        };
        let exchange_all = async {
            if !negotiated.oack.is_empty() {
                exchange.send_oack(&packet::encode_oack(&negotiated.oack)).await?;
            }
            exchange.send_file().await
        };
        let lifetime = self.options.max_transfer_time;
        let result = tokio::time::timeout(lifetime, exchange_all).await.unwrap_or(Err(Stop::TooLong));
        match result {
            Ok(bytes) => Outcome::Completed {
                bytes,
                block_size: negotiated.block_size,
                window_size: negotiated.window_size,
            },
            Err(Stop::Cancelled) => self.cancelled(&socket).await,
            Err(Stop::ClientError(code, message)) => {
                let probe = if code == ErrorCode::OptionRefused as u16 { " (a size probe)" } else { "" };
                Outcome::Aborted(format!("client sent ERROR {code}{probe}: {message}"))
            }
            Err(Stop::TimedOut) if !self.heard.load(Ordering::Relaxed) => {
                // Maybe a spoofed request: nothing more goes to an address that never answered.
                Outcome::Failed("no acknowledgement at all (first packet and one retransmission sent)".into())
            }
            Err(Stop::TooLong) => {
                let message = format!("the transfer took longer than {lifetime:?}, the most allowed");
                let _ = socket.send(&packet::encode_error(ErrorCode::NotDefined, &message)).await;
                Outcome::Failed(message)
            }
            Err(Stop::TimedOut) => {
                let message = "timed out waiting for an acknowledgement";
                let _ = socket.send(&packet::encode_error(ErrorCode::NotDefined, message)).await;
                Outcome::Failed(message.into())
            }
            Err(Stop::ClientGone) => Outcome::Failed("the client's port is closed".into()),
            Err(Stop::Read(reason)) => {
                let _ = socket
                    .send(&packet::encode_error(ErrorCode::NotDefined, "read error on the server"))
                    .await;
                Outcome::Failed(format!("reading {}: {reason}", self.request.filename))
            }
        }
    }

    async fn cancelled(&self, socket: &UdpSocket) -> Outcome {
        if self.shutdown.is_cancelled() {
            let _ = socket.send(&packet::encode_error(ErrorCode::NotDefined, "server shutting down")).await;
            Outcome::ShutDown
        } else {
            // Silently: the client's new transfer may not have answered yet, and an ERROR from this socket
            // could be taken as the answer to its new request.
            Outcome::Replaced
        }
    }
}

/// A socket for one transfer: an ephemeral port on the server's address, connected to the client so the kernel
/// drops packets from anyone else and reports the client's closed port (ICMP) as `ConnectionRefused`.
async fn bind(local_ip: IpAddr, peer: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
    socket.connect(peer).await?;
    Ok(socket)
}

/// An opened file: its reader from the start, and its size.
type Opened = (Box<dyn Read + Send>, u64);

/// Opens the file on the blocking pool (store reads block).
fn open(content: Arc<dyn BootContent>, target: Target) -> tokio::task::JoinHandle<Result<Opened, BootError>> {
    tokio::task::spawn_blocking(move || {
        let file = match &target {
            Target::Path(path) => content.open(path),
            Target::IpxeEntry => content.open_ipxe_entry(),
        }?;
        Ok((file.body.into_reader(0), file.size))
    })
}

/// The file's bytes from the oldest unacknowledged block on.
struct Source {
    /// The file in [`CHUNK`]s, each read on the blocking pool when asked for, one read ahead.
    parts: ChunkedRead,
    buffer: Vec<u8>,
    /// The file offset of `buffer[0]`.
    buffer_offset: u64,
    /// The file's length, once the reader has reached its end.
    end: Option<u64>,
}

impl Source {
    fn received(&self) -> u64 {
        self.buffer_offset + self.buffer.len() as u64
    }

    /// Waits until the buffer holds the file up to `offset`, or the whole file.
    async fn fill_to(&mut self, offset: u64) -> Result<(), Stop> {
        while self.end.is_none() && self.received() < offset {
            match std::future::poll_fn(|cx| self.parts.poll_chunk(cx)).await {
                Some(Ok(bytes)) => {
                    // Exactly what is needed, not double: 200 transfers at once each keep their buffer.
                    self.buffer.reserve_exact(bytes.len());
                    self.buffer.extend_from_slice(&bytes);
                }
                // ChunkedRead hands over exactly `size` bytes, or fails (a short blob is a read error).
                None => self.end = Some(self.received()),
                Some(Err(error)) => return Err(Stop::Read(error.to_string())),
            }
        }
        Ok(())
    }

    /// The bytes of `[start, start + len)`, clipped to the file's end; must be buffered.
    fn slice(&self, start: u64, len: u64) -> &[u8] {
        let from = (start - self.buffer_offset) as usize;
        let to = ((start + len).min(self.received()) - self.buffer_offset) as usize;
        &self.buffer[from.min(to)..to]
    }

    /// Forgets the bytes before `offset` (acknowledged). Compacts once that frees a whole part: what is moved
    /// (at most a part plus a window) is never more than what was freed, so the copying stays proportional to
    /// the file's size, and the buffer stays under two parts plus a window.
    fn release(&mut self, offset: u64) {
        let dead = offset.saturating_sub(self.buffer_offset) as usize;
        if dead >= CHUNK {
            self.buffer.drain(..dead);
            self.buffer_offset += dead as u64;
        }
    }
}

/// The packet exchange of one transfer.
struct Exchange<'a> {
    transfer: &'a Transfer,
    socket: &'a UdpSocket,
    source: Source,
    block_size: u64,
    window_size: u64,
    timeout: Duration,
    receive: Vec<u8>,
}

impl Exchange<'_> {
    /// How many times the current OACK or window may be sent again: once only while the client has
    /// acknowledged nothing (the request may be spoofed, see the module docs), else `max_retries`.
    fn retry_limit(&self) -> u32 {
        let max_retries = self.transfer.options.max_retries;
        if self.transfer.heard.load(Ordering::Relaxed) { max_retries } else { max_retries.min(1) }
    }

    /// Sends the OACK until the client acknowledges it with ACK 0.
    async fn send_oack(&mut self, oack: &[u8]) -> Result<(), Stop> {
        let mut retries = 0;
        loop {
            self.send(oack).await?;
            if self.await_ack(0, 0).await?.is_some() {
                return Ok(());
            }
            retries += 1;
            if retries > self.retry_limit() {
                return Err(Stop::TimedOut);
            }
            self.transfer.options.stats.retransmits.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends the file window by window; returns the bytes sent.
    async fn send_file(&mut self) -> Result<u64, Stop> {
        let transfer = self.transfer;
        let stats = &transfer.options.stats;
        let block_size = self.block_size;
        // Block numbers are counted in 64 bits here; on the wire they are the low 16 bits, so block 65536 goes
        // out as 0 (the rollover every client implements).
        let mut acked: u64 = 0;
        let mut retries = 0;
        let mut packet = Vec::with_capacity(block_size as usize + 4);
        loop {
            let mut sent_to = acked;
            let mut last_sent = false;
            for block in acked + 1..=acked + self.window_size {
                tokio::select! {
                    _ = transfer.cancel.cancelled() => return Err(Stop::Cancelled),
                    filled = self.source.fill_to(block * block_size) => filled?,
                }
                let payload = self.source.slice((block - 1) * block_size, block_size);
                packet::encode_data(&mut packet, block as u16, payload);
                let short = (payload.len() as u64) < block_size;
                self.send(&packet).await?;
                sent_to = block;
                if short {
                    last_sent = true;
                    break;
                }
            }
            match self.await_ack(acked + 1, sent_to).await? {
                Some(block) => {
                    let before = (acked * block_size).min(self.source.received());
                    let after = (block * block_size).min(self.source.received());
                    stats.bytes.fetch_add(after - before, Ordering::Relaxed);
                    acked = block;
                    retries = 0;
                    if last_sent && block == sent_to {
                        return Ok(after);
                    }
                    self.source.release(acked * block_size);
                }
                None => {
                    retries += 1;
                    if retries > self.retry_limit() {
                        return Err(Stop::TimedOut);
                    }
                    stats.retransmits.fetch_add(sent_to - acked, Ordering::Relaxed);
                }
            }
        }
    }

    async fn send(&self, packet: &[u8]) -> Result<(), Stop> {
        match self.socket.send(packet).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => Err(Stop::ClientGone),
            // Anything else (a full send buffer…) is a lost packet: the retransmission covers it.
            Err(e) => {
                tracing::debug!(peer = %self.transfer.peer, error = %e, "tftp: send failed");
                Ok(())
            }
        }
    }

    /// Waits up to the timeout for an ACK of a block in `first..=last` (64-bit numbers; the ACK carries their low
    /// 16 bits, and a window never spans more than 65536 numbers, so the match is unique). Returns the block
    /// acknowledged, or `None` on timeout. ACKs of older blocks (duplicates) are ignored without resending
    /// anything, which avoids the Sorcerer's Apprentice syndrome. A client ERROR stops the transfer at once.
    async fn await_ack(&mut self, first: u64, last: u64) -> Result<Option<u64>, Stop> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let received = tokio::select! {
                _ = self.transfer.cancel.cancelled() => return Err(Stop::Cancelled),
                _ = tokio::time::sleep_until(deadline) => return Ok(None),
                received = self.socket.recv(&mut self.receive) => received,
            };
            let length = match received {
                Ok(length) => length,
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Err(Stop::ClientGone),
                Err(e) => {
                    tracing::debug!(peer = %self.transfer.peer, error = %e, "tftp: receive failed");
                    continue;
                }
            };
            match packet::parse_reply(&self.receive[..length]) {
                Reply::Ack(number) => {
                    self.transfer.heard.store(true, Ordering::Relaxed);
                    let block = first + u64::from(number.wrapping_sub(first as u16));
                    if block <= last {
                        return Ok(Some(block));
                    }
                }
                Reply::Error { code, message } => return Err(Stop::ClientError(code, message)),
                Reply::Other => {}
            }
        }
    }
}

/// The error packet for a file that cannot be opened.
fn refusal_for(error: &BootError) -> (ErrorCode, String) {
    match error {
        BootError::BadPath(what) | BootError::NotFound(what) => {
            (ErrorCode::FileNotFound, format!("file not found: {what}"))
        }
        BootError::NotReady(why) => {
            (ErrorCode::NotDefined, format!("not ready: this server has not synced yet ({why}); try another"))
        }
        BootError::Internal(_) => (ErrorCode::NotDefined, "internal error on the server".into()),
    }
}

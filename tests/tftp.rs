//! The TFTP server against real clients (tftp-hpa, atftp, curl: Debian packages, installed by
//! `scripts/test.sh`) and raw UDP packets, over 127.0.0.1 only.
//!
//! Each real client fetches files of 0 B, 1 B, 512 B, 1468 B, 1 MiB and 33 MiB + 100 B (more than 65536 blocks of
//! 512 bytes: the block number rolls over) and the sha256 of what it wrote must match; clients leave empty files
//! behind on failure, so the server's own count of completed transfers is checked too. The raw tests play the
//! UEFI size probe, malformed and hostile packets, write requests, unknown and traversing names, a client that
//! restarts from the same port, a silent client, a full server, windows with gaps, and a shutdown. Every wait is
//! bounded.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use tandem::node::boot::tftp::{TftpOptions, TftpStats, TftpStatsSnapshot, serve_tftp};
use tandem::node::boot::{BootBody, BootContent, BootError, BootFile, BootPath};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------------------------
// Content and server

/// 33 MiB + 100 bytes: 67 789 blocks of 512 bytes, so block numbers roll over past 65535.
const LARGE: usize = 33 * 1024 * 1024 + 100;

const SIZES: [(&str, usize); 6] = [
    ("size-0", 0),
    ("size-1", 1),
    ("size-512", 512),
    ("size-1468", 1468),
    ("size-1m", 1024 * 1024),
    ("size-33m", LARGE),
];

/// Deterministic pseudo-random bytes (xorshift64*), so every run serves the same files.
fn generate(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(size);
    out
}

/// The served files by firmware name, generated once per test process.
fn files() -> &'static HashMap<String, Arc<Vec<u8>>> {
    static FILES: OnceLock<HashMap<String, Arc<Vec<u8>>>> = OnceLock::new();
    FILES.get_or_init(|| {
        SIZES
            .iter()
            .map(|&(name, size)| (name.to_string(), Arc::new(generate(size, size as u64 + 7))))
            .collect()
    })
}

fn file(name: &str) -> &'static [u8] {
    &files()[name]
}

/// A test double: firmware files in memory; `firmware/not-ready` answers like a node that never synced.
struct Files;

impl BootContent for Files {
    fn open(&self, path: &BootPath) -> Result<BootFile, BootError> {
        let name = match path {
            BootPath::Firmware(name) if name == "not-ready" => {
                return Err(BootError::NotReady("never in sync".into()));
            }
            BootPath::Firmware(name) => name,
            _ => return Err(BootError::NotFound("no such document".into())),
        };
        let bytes = files().get(name).ok_or_else(|| BootError::NotFound(format!("firmware {name}")))?;
        Ok(BootFile {
            size: bytes.len() as u64,
            etag: "\"test\"".into(),
            content_type: "application/octet-stream",
            revision: 1,
            body: BootBody::Bytes(bytes.to_vec()),
        })
    }
}

/// A TFTP server on its own runtime; stopped (and its runtime shut down) when dropped.
struct Server {
    addr: SocketAddr,
    stats: Arc<TftpStats>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Server {
    fn start(options: TftpOptions) -> Server {
        Server::start_on("127.0.0.1", options)
    }

    fn start_on(ip: &str, options: TftpOptions) -> Server {
        files();
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let socket = runtime.block_on(tokio::net::UdpSocket::bind((ip, 0))).unwrap();
        let addr = socket.local_addr().unwrap();
        let stats = options.stats.clone();
        let shutdown = CancellationToken::new();
        let task = runtime.spawn(serve_tftp(socket, Arc::new(Files), options, shutdown.clone()));
        Server { addr, stats, shutdown, task: Some(task), runtime: Some(runtime) }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn stats(&self) -> TftpStatsSnapshot {
        self.stats.snapshot()
    }

    /// Waits (at most 5 s) until the counters satisfy `condition`; returns the last snapshot.
    fn wait_for(&self, what: &str, condition: impl Fn(&TftpStatsSnapshot) -> bool) -> TftpStatsSnapshot {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stats = self.stats();
            if condition(&stats) {
                return stats;
            }
            assert!(Instant::now() < deadline, "waiting for {what}: {stats:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Cancels the server and waits (at most 3 s) for `serve_tftp` to return; true if it did.
    fn stop(&mut self) -> bool {
        self.shutdown.cancel();
        let (Some(runtime), Some(task)) = (self.runtime.as_ref(), self.task.take()) else { return true };
        runtime.block_on(async { tokio::time::timeout(Duration::from_secs(3), task).await.is_ok() })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

fn quick_options() -> TftpOptions {
    TftpOptions { retransmit_timeout: Duration::from_millis(200), ..TftpOptions::default() }
}

// ---------------------------------------------------------------------------------------------------------------
// Real clients

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Runs a client command with a 90 s limit; returns its exit status (killed: None) and its stderr.
fn run(mut command: Command) -> (Option<i32>, String) {
    let mut child =
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                use std::io::Read;
                let _ = pipe.read_to_string(&mut stderr);
            }
            return (status.code(), stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (None, "killed after 90 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Fetches every file of [`SIZES`] with `client` (which builds the command for a file name and an output
/// path) and checks the bytes and the server's count of completed transfers.
fn fetch_all(client: &str, command: impl Fn(u16, &str, &Path) -> Command) {
    let server = Server::start(TftpOptions::default());
    let dir = tempfile::tempdir().unwrap();
    for (index, &(name, _)) in SIZES.iter().enumerate() {
        let out = dir.path().join(name);
        let started = Instant::now();
        let (status, stderr) = run(command(server.port(), &format!("firmware/{name}"), &out));
        let elapsed = started.elapsed();
        let received = std::fs::read(&out).unwrap_or_default();
        let expected = file(name);
        println!("{client:<24} {name:<10} {:>9} bytes in {:>6.3} s", received.len(), elapsed.as_secs_f64());
        assert_eq!(status, Some(0), "{client} {name}: exit status; stderr: {stderr}");
        assert_eq!(
            sha256(&received),
            sha256(expected),
            "{client} {name}: received {} bytes of {}; stderr: {stderr}",
            received.len(),
            expected.len()
        );
        server.wait_for("the transfer to complete", |s| s.completed == index as u64 + 1 && s.active == 0);
    }
    let stats = server.stats();
    assert_eq!((stats.failed, stats.refused), (0, 0), "{stats:?}");
    let total: usize = SIZES.iter().map(|(_, size)| size).sum();
    assert_eq!(stats.bytes, total as u64);
}

#[test]
fn tftp_hpa_without_options() {
    fetch_all("tftp-hpa", |port, name, out| {
        let mut command = Command::new("tftp");
        command.args(["-m", "binary", "127.0.0.1", &port.to_string(), "-c", "get", name]).arg(out);
        command
    });
}

#[test]
fn atftp_with_blksize_windowsize_and_tsize_enable() {
    fetch_all("atftp (1468, window 16)", |port, name, out| {
        let mut command = Command::new("atftp");
        command
            .args(["--option", "blksize 1468", "--option", "windowsize 16", "--option", "tsize enable"])
            .args(["-g", "-r", name, "-l"])
            .arg(out)
            .args(["127.0.0.1", &port.to_string()]);
        command
    });
}

#[test]
fn curl_with_options() {
    fetch_all("curl (tsize, blksize 1468)", |port, name, out| {
        let mut command = Command::new("curl");
        command.args(["-sS", "--max-time", "60", "--tftp-blksize", "1468", "-o"]).arg(out);
        command.arg(format!("tftp://127.0.0.1:{port}/{name}"));
        command
    });
}

#[test]
fn curl_without_options() {
    fetch_all("curl --tftp-no-options", |port, name, out| {
        let mut command = Command::new("curl");
        command.args(["-sS", "--max-time", "60", "--tftp-no-options", "-o"]).arg(out);
        command.arg(format!("tftp://127.0.0.1:{port}/{name}"));
        command
    });
}

// ---------------------------------------------------------------------------------------------------------------
// Raw packets

const RRQ: u16 = 1;
const WRQ: u16 = 2;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

fn request(opcode: u16, file: &str, mode: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut out = opcode.to_be_bytes().to_vec();
    for field in [file, mode].into_iter().chain(options.iter().flat_map(|(name, value)| [*name, *value])) {
        out.extend_from_slice(field.as_bytes());
        out.push(0);
    }
    out
}

fn ack(block: u16) -> Vec<u8> {
    [ACK.to_be_bytes(), block.to_be_bytes()].concat()
}

fn error(code: u16, message: &str) -> Vec<u8> {
    [&ERROR.to_be_bytes()[..], &code.to_be_bytes(), message.as_bytes(), &[0]].concat()
}

/// A packet as the test sees it.
#[derive(Debug, PartialEq, Eq)]
enum Packet {
    Data(u16, Vec<u8>),
    Oack(Vec<(String, String)>),
    Error(u16, String),
    Other(Vec<u8>),
}

fn decode(bytes: &[u8]) -> Packet {
    if bytes.len() < 4 {
        return Packet::Other(bytes.to_vec());
    }
    let number = u16::from_be_bytes([bytes[2], bytes[3]]);
    let strings = |body: &[u8]| -> Vec<String> {
        body.split(|&b| b == 0).map(|s| String::from_utf8_lossy(s).into_owned()).collect()
    };
    match u16::from_be_bytes([bytes[0], bytes[1]]) {
        DATA => Packet::Data(number, bytes[4..].to_vec()),
        ERROR => Packet::Error(number, strings(&bytes[4..])[0].clone()),
        OACK => {
            let fields = strings(&bytes[2..]);
            Packet::Oack(fields.chunks_exact(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect())
        }
        _ => Packet::Other(bytes.to_vec()),
    }
}

/// A raw client socket on 127.0.0.1.
struct Raw {
    socket: UdpSocket,
    server: SocketAddr,
}

impl Raw {
    fn new(server: &Server) -> Raw {
        Raw { socket: UdpSocket::bind("127.0.0.1:0").unwrap(), server: server.addr }
    }

    fn send(&self, packet: &[u8]) {
        self.socket.send_to(packet, self.server).unwrap();
    }

    fn send_to(&self, packet: &[u8], to: SocketAddr) {
        self.socket.send_to(packet, to).unwrap();
    }

    /// The next packet within `timeout`, if any.
    fn receive(&self, timeout: Duration) -> Option<(Packet, SocketAddr)> {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buffer = vec![0u8; 70000];
        match self.socket.recv_from(&mut buffer) {
            Ok((length, from)) => Some((decode(&buffer[..length]), from)),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                None
            }
            Err(e) => panic!("receive: {e}"),
        }
    }

    fn expect(&self, what: &str) -> (Packet, SocketAddr) {
        self.receive(Duration::from_secs(3)).unwrap_or_else(|| panic!("no answer: expected {what}"))
    }

    fn expect_error(&self, what: &str) -> (u16, String) {
        match self.expect(what) {
            (Packet::Error(code, message), _) => (code, message),
            other => panic!("{what}: expected an ERROR, got {other:?}"),
        }
    }

    /// Downloads after a request was sent: acknowledges the OACK if there is one, then every window
    /// (`window` blocks, or the last one); returns the bytes, the OACK's options, and the transfer's address.
    fn download(&self, block_size: usize, window: u16) -> (Vec<u8>, Vec<(String, String)>, SocketAddr) {
        let mut out = Vec::new();
        let mut options = Vec::new();
        let mut transfer: Option<SocketAddr> = None;
        let mut expected: u16 = 1;
        let mut in_window = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let (packet, from) = self.expect("DATA or OACK");
            if *transfer.get_or_insert(from) != from {
                panic!("packet from {from}, the transfer is at {transfer:?}: {packet:?}");
            }
            match packet {
                // Also a retransmitted OACK (our ACK 0 was late): acknowledge it again.
                Packet::Oack(oack) if expected == 1 && out.is_empty() => {
                    options = oack;
                    self.send_to(&ack(0), from);
                }
                // A window sent again because our ACK was late (a loaded machine): already have it.
                Packet::Data(block, _) if block != expected && expected.wrapping_sub(block) <= 64 => {}
                Packet::Data(block, payload) if block == expected => {
                    assert!(payload.len() <= block_size, "block {block} has {} bytes", payload.len());
                    out.extend_from_slice(&payload);
                    expected = expected.wrapping_add(1);
                    in_window += 1;
                    let last = payload.len() < block_size;
                    if last || in_window == window {
                        self.send_to(&ack(block), from);
                        in_window = 0;
                    }
                    if last {
                        return (out, options, from);
                    }
                }
                other => panic!("unexpected {other:?} while expecting block {expected}"),
            }
        }
        panic!("download did not finish in 30 s");
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

#[test]
fn uefi_size_probe_then_fresh_request_from_a_new_port() {
    let server = Server::start(TftpOptions::default());
    let probe = Raw::new(&server);
    let asked = [("tsize", "0"), ("blksize", "1468"), ("windowsize", "4")];
    probe.send(&request(RRQ, "firmware/size-1m", "octet", &asked));
    let (packet, transfer) = probe.expect("OACK");
    assert_eq!(
        packet,
        Packet::Oack(pairs(&[("tsize", "1048576"), ("blksize", "1468"), ("windowsize", "4")]))
    );
    // Answered from the server's address, from a port of the transfer's own.
    assert_eq!(transfer.ip(), server.addr.ip());
    assert_ne!(transfer.port(), server.port());
    probe.send_to(&error(8, "size probe done"), transfer);

    let boot = Raw::new(&server);
    boot.send(&request(RRQ, "firmware/size-1m", "octet", &[("blksize", "1468"), ("windowsize", "4")]));
    let (bytes, options, second) = boot.download(1468, 4);
    assert_ne!(second, transfer);
    assert_eq!(options, pairs(&[("blksize", "1468"), ("windowsize", "4")]));
    assert_eq!(sha256(&bytes), sha256(file("size-1m")));

    // The probe's transfer stopped at the ERROR: nothing arrives at the probe's port, though the server would
    // have resent the OACK after 1 s.
    assert_eq!(probe.receive(Duration::from_millis(1500)), None);
    let stats = server.wait_for("both transfers to end", |s| s.active == 0);
    assert_eq!((stats.completed, stats.aborted, stats.failed), (1, 1, 0), "{stats:?}");
}

#[test]
fn options_are_negotiated_within_limits_and_only_when_asked() {
    let server = Server::start(TftpOptions { max_window_size: 8, ..quick_options() });
    let raw = Raw::new(&server);
    // iPXE: blksize 1432 and tsize.
    raw.send(&request(RRQ, "firmware/size-1468", "octet", &[("blksize", "1432"), ("tsize", "0")]));
    let (bytes, options, _) = raw.download(1432, 1);
    assert_eq!(options, pairs(&[("blksize", "1432"), ("tsize", "1468")]));
    assert_eq!(bytes, file("size-1468"));

    // Too large, unknown, out of range, repeated: capped or ignored, never refused; names are case-insensitive.
    let raw = Raw::new(&server);
    let asked = [
        ("BLKSIZE", "9000"),
        ("multicast", ""),
        ("windowsize", "100"),
        ("timeout", "0"),
        ("timeout", "2"),
        ("tsize", "enable"),
    ];
    raw.send(&request(RRQ, "firmware/size-1m", "octet", &asked));
    let (bytes, options, _) = raw.download(1468, 8);
    assert_eq!(options, pairs(&[("blksize", "1468"), ("windowsize", "8"), ("timeout", "2")]));
    assert_eq!(bytes, file("size-1m"));

    // No usable option: no OACK, DATA 1 at once. netascii is served byte for byte.
    let raw = Raw::new(&server);
    raw.send(&request(RRQ, "firmware/size-1m", "netascii", &[("tsize", "enable")]));
    let (bytes, options, _) = raw.download(512, 1);
    assert!(options.is_empty());
    assert_eq!(bytes, file("size-1m"));

    // An empty file: `tsize 0` is left out (curl refuses it), and the file is one empty block.
    let raw = Raw::new(&server);
    raw.send(&request(RRQ, "firmware/size-0", "octet", &[("tsize", "0"), ("blksize", "1468")]));
    let (bytes, options, _) = raw.download(1468, 1);
    assert_eq!((bytes.len(), options), (0, pairs(&[("blksize", "1468")])));

    let stats = server.wait_for("all transfers to complete", |s| s.completed == 4 && s.active == 0);
    assert_eq!((stats.failed, stats.refused), (0, 0), "{stats:?}");
}

#[test]
fn block_numbers_roll_over_inside_windows() {
    // 1 MiB in 8-byte blocks: 131 073 blocks (the last one empty), two rollovers, windows of 64 spanning them.
    let server = Server::start(TftpOptions::default());
    let raw = Raw::new(&server);
    raw.send(&request(RRQ, "firmware/size-1m", "octet", &[("blksize", "8"), ("windowsize", "64")]));
    let (bytes, options, _) = raw.download(8, 64);
    assert_eq!(options, pairs(&[("blksize", "8"), ("windowsize", "64")]));
    assert_eq!(sha256(&bytes), sha256(file("size-1m")));
    server.wait_for("the transfer to complete", |s| s.completed == 1 && s.active == 0);
}

#[test]
fn an_ack_inside_the_window_restarts_after_it_and_duplicates_resend_nothing() {
    let server =
        Server::start(TftpOptions { retransmit_timeout: Duration::from_secs(2), ..TftpOptions::default() });
    let raw = Raw::new(&server);
    raw.send(&request(RRQ, "firmware/size-1m", "octet", &[("blksize", "512"), ("windowsize", "4")]));
    let (_, transfer) = raw.expect("OACK");
    raw.send_to(&ack(0), transfer);
    let blocks = |count: usize| -> Vec<u16> {
        (0..count)
            .map(|_| match raw.expect("DATA") {
                (Packet::Data(block, _), _) => block,
                other => panic!("expected DATA, got {other:?}"),
            })
            .collect()
    };
    assert_eq!(blocks(4), [1, 2, 3, 4]);
    // "Block 3 was lost": the client acknowledges 2, the next window starts at 3.
    raw.send_to(&ack(2), transfer);
    assert_eq!(blocks(4), [3, 4, 5, 6]);
    // A duplicate ACK of an old block resends nothing (no Sorcerer's Apprentice).
    raw.send_to(&ack(2), transfer);
    assert_eq!(raw.receive(Duration::from_millis(500)), None);
    raw.send_to(&ack(6), transfer);
    assert_eq!(blocks(4), [7, 8, 9, 10]);
    raw.send_to(&error(0, "enough"), transfer);
    server.wait_for("the transfer to end", |s| s.aborted == 1 && s.active == 0);
}

#[test]
fn malformed_and_hostile_packets_get_errors_and_the_server_keeps_serving() {
    let server = Server::start(quick_options());
    let mut oversized = request(RRQ, "firmware/size-1", "octet", &[]);
    oversized.extend(std::iter::repeat_n(b'a', 600));
    oversized.push(0);
    let cases: Vec<(&str, Vec<u8>, Option<u16>)> = vec![
        ("empty", vec![], Some(4)),
        ("one byte", vec![0], Some(4)),
        ("unknown opcode", vec![0, 9, 1, 2, 3], Some(4)),
        ("RRQ without NUL", b"\x00\x01firmware/size-1".to_vec(), Some(4)),
        ("RRQ without mode NUL", b"\x00\x01firmware/size-1\x00octet".to_vec(), Some(4)),
        ("RRQ over 512 octets", oversized, Some(4)),
        ("mail mode", request(RRQ, "firmware/size-1", "mail", &[]), Some(4)),
        ("empty name", request(RRQ, "", "octet", &[]), Some(1)),
        ("ACK to the server port", ack(1), Some(5)),
        ("DATA to the server port", [&DATA.to_be_bytes()[..], &[0, 1], b"xyz"].concat(), Some(5)),
        ("OACK to the server port", b"\x00\x06tsize\x000\x00".to_vec(), Some(4)),
        ("ERROR to the server port", error(0, "hello"), None),
        ("binary garbage", (0..=255u8).rev().collect(), Some(4)),
        ("non-UTF-8 name", b"\x00\x01\xff\xfe\x00octet\x00".to_vec(), Some(1)),
    ];
    for (what, packet, code) in cases {
        let raw = Raw::new(&server);
        raw.send(&packet);
        let answer = raw.receive(Duration::from_millis(if code.is_some() { 3000 } else { 500 }));
        match (answer, code) {
            (None, None) => {}
            (Some((Packet::Error(got, message), from)), Some(code)) => {
                assert_eq!(got, code, "{what}: {message}");
                assert_eq!(from, server.addr, "{what}: refusals come from the server port");
            }
            (answer, _) => panic!("{what}: expected ERROR {code:?}, got {answer:?}"),
        }
    }
    // Still serving.
    let raw = Raw::new(&server);
    raw.send(&request(RRQ, "firmware/size-1468", "octet", &[]));
    assert_eq!(raw.download(512, 1).0, file("size-1468"));
    let stats = server.wait_for("the transfer to complete", |s| s.completed == 1);
    assert_eq!(stats.refused, 13, "{stats:?}");
}

#[test]
fn writes_unknown_names_traversal_and_an_unready_node_are_refused() {
    let server = Server::start(quick_options());
    let refused = |packet: Vec<u8>| Raw::new(&server).send_and_expect_error(&packet);

    let (code, message) = refused(request(WRQ, "firmware/new", "octet", &[]));
    assert_eq!(code, 2, "{message}");
    assert!(message.contains("read-only"), "{message}");

    // `ipxe` is the generic entry script, which this test double does not have.
    for missing in ["firmware/nope", "etc/passwd", "/etc/passwd", "config/not-a-mac", "blobs/abc", "ipxe"] {
        let (code, message) = refused(request(RRQ, missing, "octet", &[]));
        assert_eq!(code, 1, "{missing}: {message}");
        assert!(message.starts_with("file not found"), "{missing}: {message}");
        assert!(message.len() < 200, "{missing}: {message}");
    }
    for traversal in ["../etc/passwd", "firmware/../../x", "..\\..\\etc\\passwd"] {
        let (code, message) = refused(request(RRQ, traversal, "octet", &[]));
        assert_eq!(code, 2, "{traversal}: {message}");
    }
    let (code, message) = refused(request(RRQ, "firmware/not-ready", "octet", &[("tsize", "0")]));
    assert_eq!(code, 0, "{message}");
    assert!(message.contains("not ready"), "{message}");

    let stats = server.wait_for("every refusal counted", |s| s.refused == 11 && s.active == 0);
    assert_eq!((stats.completed, stats.failed), (0, 0), "{stats:?}");
}

impl Raw {
    fn send_and_expect_error(&self, packet: &[u8]) -> (u16, String) {
        self.send(packet);
        self.expect_error("a refusal")
    }
}

#[test]
fn a_new_request_from_the_same_port_replaces_the_transfer_but_a_repeated_one_does_not() {
    let server =
        Server::start(TftpOptions { retransmit_timeout: Duration::from_secs(2), ..TftpOptions::default() });
    let raw = Raw::new(&server);
    let rrq = request(RRQ, "firmware/size-1m", "octet", &[]);

    // The client repeats its request before acknowledging anything: the running transfer answers, no second one.
    raw.send(&rrq);
    let (packet, first) = raw.expect("DATA 1");
    assert!(matches!(packet, Packet::Data(1, _)), "{packet:?}");
    raw.send(&rrq);
    assert_eq!(raw.receive(Duration::from_millis(500)), None);
    raw.send_to(&ack(1), first);
    let (packet, from) = raw.expect("DATA 2");
    assert_eq!((matches!(packet, Packet::Data(2, _)), from), (true, first), "{packet:?}");

    // After an ACK, the same request from the same port is a client that started over: a new transfer from a
    // new port, and the old one goes silent.
    raw.send(&rrq);
    let (bytes, _, second) = raw.download(512, 1);
    assert_ne!(second, first);
    assert_eq!(sha256(&bytes), sha256(file("size-1m")));
    let stats = server.wait_for("the transfers to end", |s| s.active == 0);
    assert_eq!((stats.completed, stats.aborted, stats.failed), (1, 1, 0), "{stats:?}");
}

#[test]
fn a_client_that_goes_silent_gets_bounded_retransmissions_then_an_error() {
    let options = TftpOptions {
        retransmit_timeout: Duration::from_millis(100),
        max_retries: 3,
        ..TftpOptions::default()
    };
    let server = Server::start(options);
    let raw = Raw::new(&server);
    raw.send(&request(RRQ, "firmware/size-1m", "octet", &[]));
    let (packet, transfer) = raw.expect("DATA 1");
    assert!(matches!(packet, Packet::Data(1, _)), "{packet:?}");
    raw.send_to(&ack(1), transfer);
    let mut data = 0;
    let started = Instant::now();
    loop {
        match raw.expect("DATA 2 again or the final ERROR") {
            (Packet::Data(1, _), _) => {} // DATA 1 sent again before our ACK arrived (a loaded machine).
            (Packet::Data(2, _), _) => data += 1,
            (Packet::Error(0, message), _) => {
                assert!(message.contains("timed out"), "{message}");
                break;
            }
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    assert_eq!(data, 4, "the first DATA 2 and 3 retransmissions");
    assert_eq!(raw.receive(Duration::from_millis(400)), None);
    server.wait_for("the transfer to fail", |s| s.failed == 1 && s.active == 0);
}

/// A request may carry a victim's address: until something is acknowledged, the server sends its first
/// packet and one retransmission, then gives up without an ERROR — whatever `max_retries` says.
#[test]
fn a_source_that_never_acknowledges_gets_at_most_two_packets() {
    let options = TftpOptions {
        retransmit_timeout: Duration::from_millis(100),
        max_retries: 5,
        ..TftpOptions::default()
    };
    let server = Server::start(options);
    for (options, first) in [(&[][..], "DATA 1"), (&[("blksize", "1468"), ("tsize", "0")][..], "OACK")] {
        let failed_before = server.stats().failed;
        let victim = Raw::new(&server);
        victim.send(&request(RRQ, "firmware/size-1m", "octet", options));
        server.wait_for("the transfer to give up", |s| s.failed == failed_before + 1 && s.active == 0);
        let mut received = Vec::new();
        while let Some((packet, _)) = victim.receive(Duration::from_millis(300)) {
            received.push(packet);
            assert!(received.len() <= 10, "{received:?}");
        }
        assert_eq!(received.len(), 2, "{first} and one retransmission, nothing else: {received:?}");
        for packet in &received {
            match (first, packet) {
                ("DATA 1", Packet::Data(1, payload)) => assert_eq!(payload.len(), 512),
                ("OACK", Packet::Oack(_)) => {}
                _ => panic!("expected {first} only, got {received:?}"),
            }
        }
    }
}

/// RFC 2349 lets the server lower a client's `timeout`: a client asking for 255 s gets the server's maximum,
/// named in the OACK, and the transfer works.
#[test]
fn a_long_client_timeout_is_lowered_in_the_oack() {
    let server = Server::start(TftpOptions { max_timeout: Duration::from_secs(3), ..quick_options() });
    let raw = Raw::new(&server);
    raw.send(&request(RRQ, "firmware/size-1468", "octet", &[("timeout", "255"), ("tsize", "0")]));
    let (bytes, options, _) = raw.download(512, 1);
    assert_eq!(options, pairs(&[("timeout", "3"), ("tsize", "1468")]));
    assert_eq!(bytes, file("size-1468"));
    // A timeout within the limit is granted as asked.
    raw.send(&request(RRQ, "firmware/size-1", "octet", &[("timeout", "2")]));
    assert_eq!(raw.download(512, 1).1, pairs(&[("timeout", "2")]));
}

/// atftp asking for a 60 s timeout gets 5 s (the default maximum) and still fetches the file byte for byte.
#[test]
fn atftp_accepts_a_lowered_timeout() {
    let server = Server::start(TftpOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fw");
    let mut command = Command::new("atftp");
    command.args([
        "--option",
        "timeout 60",
        "--option",
        "tsize enable",
        "-g",
        "-r",
        "firmware/size-1m",
        "-l",
    ]);
    command.arg(&out).args(["127.0.0.1", &server.port().to_string()]);
    let (status, stderr) = run(command);
    assert_eq!(status, Some(0), "{stderr}");
    assert_eq!(sha256(&std::fs::read(&out).unwrap_or_default()), sha256(file("size-1m")), "{stderr}");
}

#[test]
fn transfers_per_source_address_are_limited() {
    let server = Server::start(TftpOptions { max_transfers_per_source: 2, ..quick_options() });
    let holders: Vec<Raw> = (0..2).map(|_| Raw::new(&server)).collect();
    for holder in &holders {
        holder.send(&request(RRQ, "firmware/size-1m", "octet", &[]));
        assert!(matches!(holder.expect("DATA 1").0, Packet::Data(1, _)));
    }
    let third = Raw::new(&server);
    let (code, message) = third.send_and_expect_error(&request(RRQ, "firmware/size-1", "octet", &[]));
    assert_eq!(code, 0);
    assert!(message.contains("your address"), "{message}");
    // Another source address (127.0.0.2 is loopback too) is still served.
    let other = Raw { socket: UdpSocket::bind("127.0.0.2:0").unwrap(), server: server.addr };
    other.send(&request(RRQ, "firmware/size-1", "octet", &[]));
    assert_eq!(other.download(512, 1).0, file("size-1"));
}

#[test]
fn a_transfer_longer_than_its_lifetime_fails() {
    let server = Server::start(TftpOptions { max_transfer_time: Duration::from_secs(1), ..quick_options() });
    let raw = Raw::new(&server);
    raw.send(&request(RRQ, "firmware/size-1m", "octet", &[]));
    // A slow but live client: it acknowledges every block, late (a block per 150 ms: 2048 blocks take 5 min).
    let started = Instant::now();
    let message = loop {
        assert!(started.elapsed() < Duration::from_secs(20), "the transfer was never cut");
        match raw.expect("DATA or the lifetime ERROR") {
            (Packet::Data(block, _), from) => {
                std::thread::sleep(Duration::from_millis(150));
                raw.send_to(&ack(block), from);
            }
            (Packet::Error(0, message), _) => break message,
            other => panic!("{other:?}"),
        }
    };
    assert!(message.contains("longer than"), "{message}");
    let stats = server.wait_for("the transfer to fail", |s| s.failed == 1 && s.active == 0);
    assert_eq!(stats.completed, 0);
}

#[test]
fn transfers_beyond_the_limit_are_refused_until_one_ends() {
    let server = Server::start(TftpOptions { max_transfers: 1, ..quick_options() });
    let first = Raw::new(&server);
    first.send(&request(RRQ, "firmware/size-1m", "octet", &[]));
    let (_, transfer) = first.expect("DATA 1");

    let second = Raw::new(&server);
    let (code, message) = second.send_and_expect_error(&request(RRQ, "firmware/size-1", "octet", &[]));
    assert_eq!(code, 0);
    assert!(message.contains("busy"), "{message}");

    first.send_to(&error(0, "cancelled by the user"), transfer);
    server.wait_for("the first transfer to end", |s| s.active == 0);
    second.send(&request(RRQ, "firmware/size-1", "octet", &[]));
    assert_eq!(second.download(512, 1).0, file("size-1"));
}

#[test]
fn transfers_answer_from_the_address_the_server_is_bound_to() {
    // 127.0.0.2 is loopback too; the client is on 127.0.0.1.
    let server = Server::start_on("127.0.0.2", quick_options());
    let raw = Raw::new(&server);
    raw.send(&request(RRQ, "firmware/size-512", "octet", &[("tsize", "0")]));
    let (bytes, options, from) = raw.download(512, 1);
    assert_eq!(from.ip(), server.addr.ip());
    assert_eq!((bytes.as_slice(), options), (file("size-512"), pairs(&[("tsize", "512")])));
}

#[test]
fn shutdown_stops_running_transfers_and_returns() {
    let mut server =
        Server::start(TftpOptions { retransmit_timeout: Duration::from_secs(5), ..TftpOptions::default() });
    let raw = Raw::new(&server);
    raw.send(&request(RRQ, "firmware/size-1m", "octet", &[]));
    let (_, transfer) = raw.expect("DATA 1");
    assert!(server.stop(), "serve_tftp returned within 3 s");
    let (packet, from) = raw.expect("ERROR: shutting down");
    assert_eq!(from, transfer);
    assert!(matches!(&packet, Packet::Error(0, message) if message.contains("shutting down")), "{packet:?}");
    assert_eq!(server.stats().active, 0);
}

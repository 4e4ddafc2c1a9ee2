//! Limits on the node's listeners, secrets and advertised addresses, over real sockets (127.0.0.0/8 only):
//!
//! - the HTTP boot server (in process, over a small content double) and the admin API (a real `tandem serve`):
//!   a half-sent request line is disconnected, the N+1th connection from one address is refused while another
//!   address is still served, a stalled body gets `408`, a heartbeat for an unknown MAC is refused before its
//!   body is read, a client that stops reading a download is disconnected;
//! - backups: a cap on concurrent backups (`503`), and a stalled backup client disconnected, freeing its place;
//! - secrets: `node.json` 0600 and the data directory 0700, `--cluster-secret-file`, 16-byte minimum, a
//!   warning for a world-readable config file with tokens;
//! - advertised addresses: `--advertise-api` / `--advertise-peer` reach the membership, unspecified ones are
//!   refused.
//!
//! No assertion measures time: each waits (bounded) for a behaviour and fails if it never comes.

mod harness;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::Node;
use tandem::limits::HttpLimits;
use tandem::node::boot::http::{BootHttpOptions, BootHttpStats, serve_boot_http_with};
use tandem::node::boot::{BootBody, BootContent, BootError, BootFile, BootPath};
use tandem_storage::Mac;
use tokio_util::sync::CancellationToken;

/// Connects from `source` (any 127.x address) to `to`.
fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        socket.connect(to).await.unwrap()
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

/// Reads until the server closes the connection (or 15 s pass: then `None`); returns what was read.
fn read_until_closed(stream: &mut TcpStream) -> Option<String> {
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut out = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(n) => out.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(String::from_utf8_lossy(&out).into_owned());
            }
            Err(_) => return None,
        }
    }
    None
}

/// Sends `request` on a fresh connection and returns the response's first line (waits at most 15 s).
fn status_line(to: SocketAddr, request: &str) -> String {
    let mut stream = connect_from("127.0.0.1", to);
    stream.write_all(request.as_bytes()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut buffer = [0u8; 1024];
    let n = stream.read(&mut buffer).unwrap_or(0);
    String::from_utf8_lossy(&buffer[..n]).lines().next().unwrap_or("").to_string()
}

/// Waits (at most 15 s) until `condition` holds.
fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !condition() {
        assert!(Instant::now() < deadline, "{what} did not happen within 15 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The HTTP boot server

const TERMINAL: &str = "52-54-00-00-00-01";
const BIG: usize = 64 * 1024 * 1024;

/// One terminal (its config) and one 64 MiB firmware image.
struct OneTerminal;

impl BootContent for OneTerminal {
    fn open(&self, path: &BootPath) -> Result<BootFile, BootError> {
        let bytes = match path {
            BootPath::Config(mac) if *mac == Mac::parse(TERMINAL).unwrap() => b"{}".to_vec(),
            BootPath::Firmware(name) if name == "big" => vec![7u8; BIG],
            _ => return Err(BootError::NotFound("nothing here".into())),
        };
        let file = BootFile {
            size: bytes.len() as u64,
            etag: "\"t\"".into(),
            content_type: "application/octet-stream",
            revision: 1,
            body: BootBody::Bytes(bytes),
        };
        Ok(file)
    }
}

/// A boot HTTP server on its own runtime, stopped when dropped.
struct BootServer {
    addr: SocketAddr,
    stats: Arc<BootHttpStats>,
    shutdown: CancellationToken,
    _runtime: tokio::runtime::Runtime,
}

impl BootServer {
    fn start(limits: HttpLimits) -> BootServer {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let options = BootHttpOptions { limits, ..BootHttpOptions::default() };
        let stats = options.stats.clone();
        let shutdown = CancellationToken::new();
        runtime.spawn(serve_boot_http_with(listener, Arc::new(OneTerminal), options, shutdown.clone()));
        BootServer { addr, stats, shutdown, _runtime: runtime }
    }
}

impl Drop for BootServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn quick_limits() -> HttpLimits {
    HttpLimits {
        max_connections: 100,
        max_connections_per_source: 3,
        header_read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        body_read_timeout: Duration::from_secs(1),
        send_stall_timeout: Duration::from_secs(1),
    }
}

#[test]
fn boot_a_half_sent_request_line_is_disconnected() {
    // A long idle timeout: only the header timeout (1 s) can close this connection within the wait.
    let server = BootServer::start(HttpLimits { idle_timeout: Duration::from_secs(60), ..quick_limits() });
    let mut stream = connect_from("127.0.0.1", server.addr);
    stream.write_all(b"GET /boot/v1/con").unwrap();
    assert!(read_until_closed(&mut stream).is_some(), "the stalled connection was never closed");
    wait_until("the connection to be forgotten", || server.stats.connections_open() == 0);
}

#[test]
fn boot_an_idle_keep_alive_connection_is_closed() {
    // A long header timeout: only the idle timeout (1 s) can close this connection within the wait.
    let server =
        BootServer::start(HttpLimits { header_read_timeout: Duration::from_secs(60), ..quick_limits() });
    let mut stream = connect_from("127.0.0.1", server.addr);
    stream
        .write_all(format!("GET /boot/v1/config/{TERMINAL} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let answer = read_until_closed(&mut stream).expect("the idle connection was never closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("connection: close"),
        "kept alive, then closed when idle: {answer}"
    );
}

#[test]
fn boot_connections_beyond_the_per_source_cap_are_refused_and_other_sources_served() {
    let server = BootServer::start(HttpLimits {
        header_read_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
        ..quick_limits()
    });
    let held: Vec<TcpStream> = (0..3).map(|_| connect_from("127.0.0.1", server.addr)).collect();
    wait_until("three connections to be served", || server.stats.connections_open() == 3);
    let mut fourth = connect_from("127.0.0.1", server.addr);
    let answer = read_until_closed(&mut fourth).expect("the fourth connection is closed at once");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("per address"), "{answer}");
    // 127.0.0.2 is another source: served while 127.0.0.1 is full.
    let mut other = connect_from("127.0.0.2", server.addr);
    other
        .write_all(format!("GET /boot/v1/config/{TERMINAL} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut buffer = [0u8; 64];
    other.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let n = other.read(&mut buffer).unwrap();
    assert!(buffer[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buffer[..n]));
    // Closing one frees its place.
    drop(held);
    wait_until("the held connections to close", || server.stats.connections_open() == 1);
    let line =
        status_line(server.addr, &format!("GET /boot/v1/config/{TERMINAL} HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
}

#[test]
fn boot_a_heartbeat_for_an_unknown_mac_is_refused_before_its_body_and_a_stalled_body_gets_408() {
    let server =
        BootServer::start(HttpLimits { body_read_timeout: Duration::from_secs(2), ..quick_limits() });
    // 50 body bytes announced, none sent: the unknown MAC is refused without waiting for them.
    let announce = |mac: &str| {
        format!("POST /boot/v1/status/{mac} HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{{\"state\":")
    };
    let line = status_line(server.addr, &announce("52-54-00-99-99-99"));
    assert!(line.starts_with("HTTP/1.1 404"), "{line}");
    // A known terminal whose body stalls gets 408 after the body timeout.
    let line = status_line(server.addr, &announce(TERMINAL));
    assert!(line.starts_with("HTTP/1.1 408"), "{line}");
    assert_eq!(server.stats.heartbeats(), 0);
    let body = r#"{"state":"green"}"#;
    let whole = format!(
        "POST /boot/v1/status/{TERMINAL} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert!(status_line(server.addr, &whole).starts_with("HTTP/1.1 204"));
}

#[test]
fn boot_a_client_that_stops_reading_a_download_is_disconnected() {
    use tandem::node::boot::http::{PathKind, RequestOutcome};
    // A long header timeout: only the send-stall timeout (1 s) can close this connection within the wait.
    let server =
        BootServer::start(HttpLimits { header_read_timeout: Duration::from_secs(60), ..quick_limits() });
    let mut stream = connect_from("127.0.0.1", server.addr);
    stream.write_all(b"GET /boot/v1/firmware/big HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // The client reads nothing: 64 MiB cannot fit the socket buffers, so the server's writes stall.
    wait_until("the download to be answered", || {
        server.stats.requests(PathKind::Firmware, RequestOutcome::Ok) == 1
    });
    wait_until("the stalled download to be dropped", || server.stats.connections_open() == 0);
    let received = read_until_closed(&mut stream).expect("the server closed the connection");
    assert!(received.starts_with("HTTP/1.1 200"), "{}", &received[..received.len().min(100)]);
    assert!(received.len() < BIG, "the whole image fit the socket buffers: the test proves nothing");
}

// ---------------------------------------------------------------------------------------------------------------
// The admin API and backups, on a real node

const API_LIMITS: &str = r#"
[limits.api]
max_connections_per_source = 4
header_read_timeout = "1s"
body_read_timeout = "1s"
send_stall_timeout = "2s"
max_concurrent_backups = 1
"#;

fn curl(args: &[&str]) -> (String, String) {
    let output = Command::new("curl").args(["-sS", "--max-time", "60"]).args(args).output().unwrap();
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `curl -w %{http_code}` of a GET from `source`.
fn curl_status(source: &str, url: &str) -> String {
    curl(&["--interface", source, "-o", "/dev/null", "-w", "%{http_code}", url]).0
}

#[test]
fn api_a_half_sent_request_and_a_stalled_body_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::new(dir.path(), "api-timeouts", "data").with_config(API_LIMITS);
    node.start(false);
    let api: SocketAddr = node.api.parse().unwrap();

    // Half a request line, before any token could be checked: closed after the header timeout.
    let mut stalled = connect_from("127.0.0.1", api);
    stalled.write_all(b"GET /v1/sta").unwrap();
    assert!(read_until_closed(&mut stalled).is_some(), "the half-sent request was never closed");

    // A body announced and never finished: 408.
    let line = status_line(
        api,
        "POST /v1/changes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    );
    assert!(line.starts_with("HTTP/1.1 408"), "{line}");
}

#[test]
fn api_connections_beyond_the_per_source_cap_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[limits.api]\nmax_connections_per_source = 4\nheader_read_timeout = \"60s\"\n";
    let mut node = Node::new(dir.path(), "api-caps", "data").with_config(config);
    node.start(false);
    let api: SocketAddr = node.api.parse().unwrap();
    let livez = format!("{}/livez", node.url());

    // Four connections from 127.0.0.1 fill its share: curl from there gets 503, from 127.0.0.2 200.
    let held: Vec<TcpStream> = (0..4).map(|_| connect_from("127.0.0.1", api)).collect();
    wait_until("curl from a full source to be refused", || curl_status("127.0.0.1", &livez) == "503");
    assert_eq!(curl_status("127.0.0.2", &livez), "200");
    drop(held);
    wait_until("the freed places to serve curl again", || curl_status("127.0.0.1", &livez) == "200");
}

#[test]
fn backups_are_capped_and_a_stalled_backup_client_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::new(dir.path(), "backup-limits", "data").with_config(API_LIMITS);
    node.start(false);
    // A 24 MiB blob makes the backup larger than what loopback socket buffers hold.
    let blob = dir.path().join("blob");
    std::fs::write(&blob, (0..24 * 1024 * 1024).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>()).unwrap();
    let (uploaded, stderr) =
        curl(&["--data-binary", &format!("@{}", blob.display()), &format!("{}/v1/blobs", node.url())]);
    assert!(uploaded.contains("digest"), "{uploaded}{stderr}");
    let backup_url = format!("{}/v1/backup", node.url());

    // A client that asks for a backup and reads nothing holds the only backup place...
    let mut stalled = connect_from("127.0.0.1", node.api.parse().unwrap());
    stalled.write_all(b"GET /v1/backup HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    stalled.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stalled.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let (answer, _) = curl(&["-w", "%{http_code}", &backup_url]);
    assert!(answer.ends_with("503") && answer.contains("busy"), "{answer}");

    // ...until the send-stall timeout drops it; then a backup streams whole and verifies.
    let out = dir.path().join("backup.tandem");
    wait_until("the stalled backup to free its place", || {
        curl(&["-o", &out.display().to_string(), "-w", "%{http_code}", &backup_url]).0 == "200"
    });
    let verified = node.cli(&["backup", "verify", &out.display().to_string()]);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
    let rest = read_until_closed(&mut stalled).expect("the stalled backup connection is closed");
    assert!(rest.len() < 24 * 1024 * 1024, "the stalled client cannot have read the whole backup");
}

// ---------------------------------------------------------------------------------------------------------------
// Secrets

#[test]
fn secrets_are_private_read_from_a_file_and_long_enough() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "a-secret-from-a-file-0123\n").unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut node = Node::new(dir.path(), "private", "data").with_secret_file(&secret_file);
    node.start(false);
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&node.data_dir), 0o700);
    assert_eq!(mode(&node.data_dir.join("node.json")), 0o600);
    let identity: serde_json::Value =
        serde_json::from_slice(&std::fs::read(node.data_dir.join("node.json")).unwrap()).unwrap();
    assert_eq!(identity["cluster_secret"], "a-secret-from-a-file-0123");

    // 15 bytes are refused, naming the minimum.
    let mut short = Node::new(dir.path(), "short", "data");
    std::fs::write(&secret_file, "only-15-bytes!!").unwrap();
    short = short.with_secret_file(&secret_file);
    short.spawn(false);
    let exited = short.wait_answering(Duration::from_secs(20));
    let Err(harness::Exit::Exited(log)) = exited else { panic!("a 15-byte secret was accepted: {exited:?}") };
    assert!(log.contains("at least 16 bytes"), "{log}");
}

#[test]
fn a_world_readable_config_file_with_tokens_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[[tokens]]\nname = \"ops\"\nrole = \"admin\"\nsecret = \"a-long-enough-token-secret\"\n";
    let mut node =
        Node::new(dir.path(), "warned", "data").with_config(config).with_token("a-long-enough-token-secret");
    // The harness (re)writes its config file at warned.toml, keeping the mode of an existing file.
    let path = dir.path().join("warned.toml");
    std::fs::write(&path, "").unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    node.start(false);
    assert!(node.log_text().contains("readable by every user"), "{}", node.log_text());
}

// ---------------------------------------------------------------------------------------------------------------
// Advertised addresses

#[test]
fn advertised_addresses_reach_the_membership_and_unspecified_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::new(dir.path(), "advertised", "data");
    let port = |address: &str| address.rsplit(':').next().unwrap().to_string();
    let (api_port, peer_port) = (port(&node.api), port(&node.peer));
    let config =
        format!("advertise_api = \"localhost:{api_port}\"\nadvertise_peer = \"localhost:{peer_port}\"\n");
    node = node.with_config(&config);
    node.start(false);
    let servers = node.ok(&["servers", "list", "--json"]);
    assert!(servers.contains(&format!("localhost:{api_port}")), "{servers}");
    assert!(servers.contains(&format!("localhost:{peer_port}")), "{servers}");

    for (flag, value, expected) in [
        ("--peer", "0.0.0.0:7071", "--advertise-peer"),
        ("--advertise-peer", "0.0.0.0:7071", "unspecified"),
        ("--advertise-api", "[::]:7070", "unspecified"),
        ("--boot-advertise", "0.0.0.0:7080", "unspecified"),
        ("--advertise-api", "no-port", "HOST:PORT"),
    ] {
        let output = Command::new(harness::tandem_bin())
            .args(["serve", "--data-dir"])
            .arg(dir.path().join("refused"))
            .args(["--cluster-secret", harness::SECRET, flag, value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flag} {value} was accepted");
        assert!(stderr.contains(expected), "{flag} {value}: {stderr}");
    }
}

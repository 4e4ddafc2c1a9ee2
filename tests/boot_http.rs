//! The HTTP boot server against real `curl`: a real store (sled in a temporary directory) with terminals,
//! terminal servers, modules, model capabilities and firmware blobs, served by `serve_boot_http` on
//! 127.0.0.1, and every answer checked byte for byte (sha256) and header by header.
//!
//! Only loopback; every curl has `--max-time`, every socket a read timeout, every server a shutdown.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tandem::node::boot::BootContent;
use tandem::node::boot::content::StoreContent;
use tandem::node::boot::heartbeat::{Heartbeats, TerminalState};
use tandem::node::boot::http::{
    BootHttpOptions, BootHttpStats, PathKind, RequestOutcome, serve_boot_http_with,
};
use tandem_cluster::SharedStore;
use tandem_storage::{ChangeMeta, ChangeSet, Digest, Mac, Outcome, Store};
use tokio_util::sync::CancellationToken;

const MAC: &str = "52:54:00:12:34:56";
const MAC_KERNEL: &str = "52:54:00:00:00:02";
const MAC_BARE: &str = "52:54:00:00:00:03";
const MAC_UNKNOWN: &str = "52:54:00:00:00:99";

/// Deterministic pseudo-random bytes (xorshift), so two stores built apart hold the same blobs.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// The files of the fixture: firmware name → bytes, plus the kernel, initrd and module.
struct Fixture {
    store: SharedStore,
    firmware: Vec<(&'static str, Vec<u8>)>,
    kernel: Vec<u8>,
    initrd: Vec<u8>,
    module: Vec<u8>,
    revision: u64,
}

impl Fixture {
    fn firmware(&self, name: &str) -> &[u8] {
        &self.firmware.iter().find(|(n, _)| *n == name).unwrap().1
    }
}

/// Builds the same store in `dir` every time: blobs of 0 B, 1 B, 1 MiB and 5 MiB + 123 B (not a multiple of
/// the 32 KiB parts nor of the 128 KiB stream chunks), three terminals and what they reference.
fn build_store(dir: &Path) -> Fixture {
    let mut store = Store::open(dir).unwrap();
    let firmware = vec![
        ("fw-empty", Vec::new()),
        ("fw-one", vec![0x5a]),
        ("fw-1m", bytes(1 << 20, 1)),
        ("fw-big.efi", bytes(5 * (1 << 20) + 123, 2)),
    ];
    let (kernel, initrd, module) = (bytes(300_000, 3), bytes(70_000, 4), bytes(4321, 5));
    let mut put = |upload: u64, data: &[u8]| -> String {
        let (digest, size) = store.put_blob(upload, data).unwrap().unwrap();
        assert_eq!(size, data.len() as u64);
        assert_eq!(digest, Digest::of(data));
        digest.to_string()
    };
    let mut digests = Vec::new();
    for (i, (_, data)) in firmware.iter().enumerate() {
        digests.push(put(i as u64 + 1, data));
    }
    let (k, i, m) = (put(10, &kernel), put(11, &initrd), put(12, &module));
    let meta = ChangeMeta {
        actor: "test".into(),
        reason: "fixture".into(),
        timestamp_ms: 1,
        ..ChangeMeta::default()
    };
    let mut change = ChangeSet::new(meta)
        .put("terminal_servers", "ts1", json!({"address": "10.0.0.5", "port": 3389, "domain": "plant"}))
        .put("terminal_servers", "ts2", json!({"address": "10.0.0.6"}))
        .put("modules", "scanner", json!({"blob": m, "parameters": {"port": "COM1"}}))
        .put("termcap", "hmi-15", json!({"screen": "1920x1080", "touch": true}))
        .put(
            "firmware",
            "fw-kernel",
            json!({"version": "2.0", "blob": digests[2], "kernel": k, "initrd": i, "cmdline": "quiet console=tty0"}),
        );
    for ((name, _), digest) in firmware.iter().zip(&digests) {
        change = change.put("firmware", name, json!({"version": "1.0", "blob": digest}));
    }
    change = change
        .put(
            "terminals",
            "line-3-hmi",
            json!({"mac": MAC, "model": "hmi-15", "firmware": "fw-big.efi", "terminal_servers": ["ts2", "ts1"],
                   "modules": ["scanner"], "settings": {"kiosk": true, "locale": "de"}}),
        )
        .put("terminals", "t2", json!({"mac": MAC_KERNEL, "firmware": "fw-kernel"}))
        .put("terminals", "t3", json!({"mac": MAC_BARE}));
    let revision = match store.apply_change_set(change).unwrap() {
        Outcome::Accepted { revision } => revision.0,
        other => panic!("the fixture was refused: {other:?}"),
    };
    Fixture { store: Arc::new(RwLock::new(store)), firmware, kernel, initrd, module, revision }
}

/// A boot server on 127.0.0.1 with its own runtime; stopped on drop.
struct BootServer {
    addr: SocketAddr,
    stats: Arc<BootHttpStats>,
    heartbeats: Arc<Heartbeats>,
    shutdown: CancellationToken,
    runtime: Option<tokio::runtime::Runtime>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl BootServer {
    /// Serves `store`; the boot servers are this one first, then `others`; ready while `ready` is true.
    fn start(store: SharedStore, others: &[&str], ready: Arc<AtomicBool>) -> BootServer {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut servers = vec![addr.to_string()];
        servers.extend(others.iter().map(|s| s.to_string()));
        let content = StoreContent::new(store, Arc::new(move || servers.clone()))
            .with_readiness(Arc::new(move || ready.load(Ordering::SeqCst)));
        let content: Arc<dyn BootContent> = Arc::new(content);
        let options = BootHttpOptions::default();
        let (stats, heartbeats) = (options.stats.clone(), options.heartbeats.clone());
        let shutdown = CancellationToken::new();
        let task = runtime.spawn(serve_boot_http_with(listener, content, options, shutdown.clone()));
        BootServer { addr, stats, heartbeats, shutdown, runtime: Some(runtime), task: Some(task) }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for BootServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let (Some(runtime), Some(task)) = (self.runtime.take(), self.task.take()) {
            let stopped =
                runtime.block_on(async { tokio::time::timeout(Duration::from_secs(15), task).await });
            if !std::thread::panicking() {
                assert!(stopped.is_ok(), "the boot server did not stop within 15 s of shutdown");
            }
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// One curl answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().rev().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

static CURL_SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn scratch(dir: &Path, what: &str) -> PathBuf {
    dir.join(format!("{what}-{}", CURL_SEQUENCE.fetch_add(1, Ordering::Relaxed)))
}

/// Runs curl on `url` with extra `args`; the body and headers go through files (bodies may be MiBs).
fn curl(dir: &Path, url: &str, args: &[&str]) -> Reply {
    let (body, headers) = (scratch(dir, "body"), scratch(dir, "headers"));
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&headers)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("curl runs (scripts/test.sh installs it)");
    assert!(
        output.status.success(),
        "curl {args:?} {url} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status = String::from_utf8_lossy(&output.stdout).trim().parse().unwrap();
    let header_text = std::fs::read_to_string(&headers).unwrap_or_default();
    let headers = header_text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let body = std::fs::read(&body).unwrap_or_default();
    Reply { status, headers, body }
}

/// Sends raw bytes and reads the whole answer (the request must ask the server to close).
fn raw(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

fn etag_of(data: &[u8]) -> String {
    format!("\"sha256-{}\"", Digest::of(data))
}

fn ready() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(true))
}

#[test]
fn config_is_the_merged_document_in_every_mac_form() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = build_store(&dir.path().join("store"));
    let server = BootServer::start(fixture.store.clone(), &[], ready());
    let tmp = dir.path();

    let forms =
        ["52:54:00:12:34:56", "52-54-00-12-34-56", "525400123456", "52-54-00-12-34-56".to_uppercase().leak()];
    let replies: Vec<Reply> =
        forms.iter().map(|mac| curl(tmp, &server.url(&format!("/boot/v1/config/{mac}")), &[])).collect();
    for (reply, form) in replies.iter().zip(forms) {
        assert_eq!(reply.status, 200, "{form}: {}", reply.text());
        assert_eq!(reply.body, replies[0].body, "{form}");
        assert_eq!(reply.header("etag"), Some(etag_of(&reply.body).as_str()), "{form}");
    }
    let reply = &replies[0];
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-cache"));
    assert_eq!(reply.header("content-length"), Some(reply.body.len().to_string().as_str()));
    assert_eq!(reply.header("x-tandem-revision"), Some(fixture.revision.to_string().as_str()));

    // The document: every reference followed and inlined, canonical (sorted keys, compact).
    let document = reply.json();
    let fw = fixture.firmware("fw-big.efi");
    let fw_digest = Digest::of(fw).to_string();
    let module_digest = Digest::of(&fixture.module).to_string();
    assert_eq!(
        document,
        json!({
            "format": 1,
            "revision": fixture.revision,
            "mac": MAC,
            "terminal": "line-3-hmi",
            "settings": {"kiosk": true, "locale": "de"},
            "model": "hmi-15",
            "termcap": {"screen": "1920x1080", "touch": true},
            "terminal_servers": [
                {"id": "ts2", "address": "10.0.0.6"},
                {"id": "ts1", "address": "10.0.0.5", "port": 3389, "domain": "plant"},
            ],
            "modules": [{"id": "scanner", "digest": module_digest, "size": fixture.module.len(),
                         "parameters": {"port": "COM1"}, "url": format!("/boot/v1/blobs/{module_digest}")}],
            "firmware": {"name": "fw-big.efi", "version": "1.0", "digest": fw_digest, "size": fw.len(),
                         "url": "/boot/v1/firmware/fw-big.efi", "blob_url": format!("/boot/v1/blobs/{fw_digest}")},
        })
    );
    let text = reply.text();
    assert!(text.starts_with("{\"firmware\":{\"blob_url\":"), "keys are sorted and compact: {text}");

    // The kernel terminal's firmware reference carries kernel, initrd and command line; a bare terminal has none.
    let kernel = curl(tmp, &server.url(&format!("/boot/v1/config/{MAC_KERNEL}")), &[]).json();
    let kernel_digest = Digest::of(&fixture.kernel).to_string();
    assert_eq!(
        kernel["firmware"]["kernel"],
        json!({"digest": kernel_digest, "size": fixture.kernel.len(), "url": format!("/boot/v1/blobs/{kernel_digest}")})
    );
    assert_eq!(kernel["firmware"]["initrd"]["size"], json!(fixture.initrd.len()));
    assert_eq!(kernel["firmware"]["cmdline"], json!("quiet console=tty0"));
    let bare = curl(tmp, &server.url(&format!("/boot/v1/config/{MAC_BARE}")), &[]).json();
    assert_eq!(
        (&bare["firmware"], &bare["model"], &bare["termcap"]),
        (&Value::Null, &Value::Null, &Value::Null)
    );
    assert_eq!(
        (&bare["modules"], &bare["terminal_servers"], &bare["settings"]),
        (&json!([]), &json!([]), &json!({}))
    );

    // HEAD: the same headers, Content-Length included, and not one byte of body on the wire.
    let head = curl(tmp, &server.url(&format!("/boot/v1/config/{MAC}")), &["--head"]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some(reply.body.len().to_string().as_str()));
    assert_eq!(head.header("etag"), reply.header("etag"));
    let answer = raw(
        server.addr,
        &format!(
            "HEAD /boot/v1/config/{MAC} HTTP/1.1\r\nHost: anything.example:1\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\n"), "a HEAD answer has no body: {answer:?}");
    assert!(
        answer.to_ascii_lowercase().contains(&format!("content-length: {}\r\n", reply.body.len())),
        "{answer}"
    );

    // Any Host (even none), and keep-alive: two requests in one curl share one connection.
    let answer = raw(server.addr, &format!("GET /boot/v1/config/{MAC} HTTP/1.0\r\n\r\n"));
    assert!(answer.starts_with("HTTP/1.0 200") && answer.ends_with(&text), "{answer}");
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-o", "/dev/null", "-o", "/dev/null", "-w", "%{num_connects} "])
        .arg(server.url(&format!("/boot/v1/config/{MAC}")))
        .arg(server.url("/boot/v1/ipxe"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "1 0",
        "the second request reused the connection"
    );

    // A change to the configuration is served at once, with a new ETag and revision (nothing stale is cached).
    let meta = ChangeMeta { actor: "test".into(), ..ChangeMeta::default() };
    let change = ChangeSet::new(meta).patch("terminals", "line-3-hmi", json!({"settings": {"locale": "fr"}}));
    let revision = match fixture.store.write().unwrap().apply_change_set(change).unwrap() {
        Outcome::Accepted { revision } => revision.0,
        other => panic!("{other:?}"),
    };
    let changed = curl(tmp, &server.url(&format!("/boot/v1/config/{MAC}")), &[]);
    assert_eq!(changed.json()["settings"], json!({"kiosk": true, "locale": "fr"}));
    assert_eq!(changed.json()["revision"], json!(revision));
    assert_eq!(changed.header("x-tandem-revision"), Some(revision.to_string().as_str()));
    assert_ne!(changed.header("etag"), reply.header("etag"));
    let stale = curl(
        tmp,
        &server.url(&format!("/boot/v1/config/{MAC}")),
        &["-H", &format!("If-None-Match: {}", reply.header("etag").unwrap())],
    );
    assert_eq!(stale.status, 200, "the old ETag no longer matches");

    // An unknown MAC is a 404 with a short reason.
    let unknown = curl(tmp, &server.url(&format!("/boot/v1/config/{MAC_UNKNOWN}")), &[]);
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.text(), format!("not found: no terminal has MAC {MAC_UNKNOWN}\n"));
    assert_eq!(server.stats.requests(PathKind::Config, RequestOutcome::NotFound), 1);
    assert!(server.stats.requests(PathKind::Config, RequestOutcome::Ok) >= 7);
}

#[test]
fn firmware_and_blobs_stream_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = build_store(&dir.path().join("store"));
    let server = BootServer::start(fixture.store.clone(), &[], ready());
    let tmp = dir.path();
    let started = Instant::now();
    for (name, data) in &fixture.firmware {
        let digest = Digest::of(data);
        for path in [format!("/boot/v1/firmware/{name}"), format!("/boot/v1/blobs/{digest}")] {
            let reply = curl(tmp, &server.url(&path), &[]);
            assert_eq!(reply.status, 200, "{path}: {}", reply.text());
            assert_eq!(reply.body.len(), data.len(), "{path}");
            assert_eq!(Digest::of(&reply.body), digest, "{path}: the sha256 of what curl received");
            assert_eq!(reply.header("etag"), Some(etag_of(data).as_str()), "{path}");
            assert_eq!(reply.header("content-length"), Some(data.len().to_string().as_str()), "{path}");
            assert_eq!(reply.header("accept-ranges"), Some("bytes"));
            let want_type =
                if path.ends_with(".efi") { "application/efi" } else { "application/octet-stream" };
            assert_eq!(reply.header("content-type"), Some(want_type), "{path}");
            let head = curl(tmp, &server.url(&path), &["--head"]);
            assert_eq!(head.header("content-length"), Some(data.len().to_string().as_str()), "HEAD {path}");
        }
    }
    let served = server.stats.bytes_served();
    let total: u64 = fixture.firmware.iter().map(|(_, d)| 2 * d.len() as u64).sum();
    assert_eq!(served, total, "bytes served counts file bytes, HEAD excluded");

    // Ten terminals fetch the 5 MiB image at once: every copy is exact.
    let big = fixture.firmware("fw-big.efi");
    let children: Vec<(PathBuf, std::process::Child)> = (0..10)
        .map(|i| {
            let out = tmp.join(format!("parallel-{i}"));
            let child = Command::new("curl")
                .args(["-sS", "--max-time", "60", "-o"])
                .arg(&out)
                .arg(server.url("/boot/v1/firmware/fw-big.efi"))
                .spawn()
                .unwrap();
            (out, child)
        })
        .collect();
    for (out, mut child) in children {
        assert!(child.wait().unwrap().success());
        assert_eq!(Digest::of(&std::fs::read(out).unwrap()), Digest::of(big));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.stats.downloads_active() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.stats.downloads_active(), 0, "every download ended");
    eprintln!("streamed {} MiB in {:?}", server.stats.bytes_served() >> 20, started.elapsed());

    // Unknown firmware and blobs are 404s.
    assert_eq!(curl(tmp, &server.url("/boot/v1/firmware/nope"), &[]).status, 404);
    let missing = curl(tmp, &server.url(&format!("/boot/v1/blobs/{}", "0".repeat(64))), &[]);
    assert_eq!(
        (missing.status, missing.text()),
        (404, format!("not found: no blob has digest {}\n", "0".repeat(64)))
    );
}

#[test]
fn ranges_and_conditional_requests() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = build_store(&dir.path().join("store"));
    let server = BootServer::start(fixture.store.clone(), &[], ready());
    let tmp = dir.path();
    let data = fixture.firmware("fw-big.efi");
    let size = data.len();
    let url = server.url("/boot/v1/firmware/fw-big.efi");
    // First bytes, the middle (across 32 KiB parts and 128 KiB chunks), the last byte, a suffix.
    for (range, first, last) in [
        ("0-99", 0, 99),
        ("131000-263000", 131_000, 263_000),
        ("1000000-", 1_000_000, size - 1),
        (&*format!("{}-{}", size - 1, size + 50), size - 1, size - 1),
        ("-100", size - 100, size - 1),
    ] {
        let reply = curl(tmp, &url, &["-H", &format!("Range: bytes={range}")]);
        assert_eq!(reply.status, 206, "{range}: {}", reply.text());
        assert_eq!(
            reply.header("content-range"),
            Some(format!("bytes {first}-{last}/{size}").as_str()),
            "{range}"
        );
        assert_eq!(reply.header("content-length"), Some((last - first + 1).to_string().as_str()));
        assert_eq!(Digest::of(&reply.body), Digest::of(&data[first..=last]), "{range}");
    }
    // curl's own --range, on a generated document too.
    let config = curl(tmp, &server.url(&format!("/boot/v1/config/{MAC}")), &[]);
    let part = curl(tmp, &server.url(&format!("/boot/v1/config/{MAC}")), &["--range", "2-11"]);
    assert_eq!((part.status, &part.body[..]), (206, &config.body[2..12]));

    // Past the end: 416 with the size.
    for range in [format!("bytes={size}-"), "bytes=-0".into()] {
        let reply = curl(tmp, &url, &["-H", &format!("Range: {range}")]);
        assert_eq!(reply.status, 416, "{range}");
        assert_eq!(reply.header("content-range"), Some(format!("bytes */{size}").as_str()));
    }
    // Several ranges, or an If-Range with another ETag: the whole file.
    let several = curl(tmp, &url, &["-H", "Range: bytes=0-1,5-6"]);
    assert_eq!((several.status, several.body.len()), (200, size));
    let stale = curl(tmp, &url, &["-H", "Range: bytes=0-9", "-H", "If-Range: \"sha256-old\""]);
    assert_eq!((stale.status, stale.body.len()), (200, size));
    let fresh = curl(tmp, &url, &["-H", "Range: bytes=0-9", "-H", &format!("If-Range: {}", etag_of(data))]);
    assert_eq!((fresh.status, fresh.body.len()), (206, 10));

    // If-None-Match: 304 with no body for the current ETag (alone, in a list, weak, *); 200 for another.
    let etag = etag_of(data);
    for header in [etag.clone(), format!("\"other\", {etag}"), format!("W/{etag}"), "*".into()] {
        let reply = curl(tmp, &url, &["-H", &format!("If-None-Match: {header}")]);
        assert_eq!((reply.status, reply.body.len()), (304, 0), "{header}");
        assert_eq!(reply.header("etag"), Some(etag.as_str()));
        assert_eq!(reply.header("cache-control"), Some("no-cache"));
    }
    let config_etag = config.header("etag").unwrap().to_string();
    let not_modified = curl(
        tmp,
        &server.url(&format!("/boot/v1/config/{MAC}")),
        &["-H", &format!("If-None-Match: {config_etag}")],
    );
    assert_eq!(not_modified.status, 304);
    let changed = curl(tmp, &url, &["-H", "If-None-Match: \"sha256-something-else\""]);
    assert_eq!((changed.status, changed.body.len()), (200, size));
    assert_eq!(server.stats.requests(PathKind::Firmware, RequestOutcome::NotModified), 4);
    assert_eq!(server.stats.requests(PathKind::Firmware, RequestOutcome::RangeNotSatisfiable), 2);
}

#[test]
fn two_nodes_with_the_same_content_give_the_same_bytes_and_etags() {
    let dir = tempfile::tempdir().unwrap();
    let a = build_store(&dir.path().join("a"));
    let b = build_store(&dir.path().join("b"));
    assert_eq!(a.revision, b.revision);
    // Different boot server lists: the boot document must not depend on them.
    let server_a = BootServer::start(a.store.clone(), &["10.0.0.2:8080"], ready());
    let server_b = BootServer::start(b.store.clone(), &["10.0.0.1:8080"], ready());
    let tmp = dir.path();
    let big = Digest::of(a.firmware("fw-big.efi"));
    for path in [
        format!("/boot/v1/config/{MAC}"),
        format!("/boot/v1/config/{MAC_KERNEL}"),
        "/boot/v1/firmware/fw-big.efi".into(),
        format!("/boot/v1/blobs/{big}"),
    ] {
        let from_a = curl(tmp, &server_a.url(&path), &[]);
        let from_b = curl(tmp, &server_b.url(&path), &[]);
        assert_eq!(from_a.status, 200, "{path}");
        assert_eq!(Digest::of(&from_a.body), Digest::of(&from_b.body), "{path}: same bytes");
        assert_eq!(from_a.header("etag"), from_b.header("etag"), "{path}: same ETag");
        assert_eq!(from_a.header("x-tandem-revision"), from_b.header("x-tandem-revision"));
        // A terminal that fetched from A revalidates against B.
        let revalidated = curl(
            tmp,
            &server_b.url(&path),
            &["-H", &format!("If-None-Match: {}", from_a.header("etag").unwrap())],
        );
        assert_eq!(revalidated.status, 304, "{path}");
    }
}

#[test]
fn bad_paths_are_refused_and_never_500() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = build_store(&dir.path().join("store"));
    let readiness = ready();
    let server = BootServer::start(fixture.store.clone(), &[], readiness.clone());
    let tmp = dir.path();
    let cases: &[(&str, u16)] = &[
        ("/boot/v1/firmware/../../etc/passwd", 400),
        ("/boot/v1/firmware/..", 400),
        ("/boot/v1/firmware/%2e%2e%2fetc%2fpasswd", 400),
        ("/boot/v1/firmware/a%2Fb", 400),
        ("/boot/v1/firmware/.hidden", 400),
        ("/boot/v1/firmware/x%00y", 400),
        ("/boot/v1/firmware/%zz", 400),
        ("/boot/v1/firmware/", 400),
        ("/boot/v1/config/zz:zz:zz:zz:zz:zz", 400),
        ("/boot/v1/config/52:54:00:12:34:56/extra", 400),
        ("/boot/v1/config/52:54:00:12:34", 400),
        ("/boot/v1/blobs/xyz", 400),
        ("/boot/v1/blobs/../../../../etc/passwd", 400),
        ("/boot/v1/ipxe/not-a-mac", 400),
        ("/boot/v1/status/not-a-mac", 400),
        ("/boot/v1/other/thing", 400),
        ("/boot/v1/config", 400),
        ("/boot/v1/", 400),
        ("/boot/v1", 404),
        ("/", 404),
        ("/etc/passwd", 404),
        ("/boot/v2/config/525400123456", 404),
        ("/boot/v1/firmware/nope", 404),
        ("/boot/v1/config/%35%32%35%34%30%30%31%32%33%34%35%36", 200),
    ];
    let long = format!("/boot/v1/firmware/{}", "a".repeat(5000));
    let mut all: Vec<(&str, u16)> = cases.to_vec();
    all.push((&long, 400));
    for (path, want) in all {
        let reply = curl(tmp, &server.url(path), &["--path-as-is"]);
        assert_eq!(reply.status, want, "{path}: {}", reply.text());
        assert!(reply.body.len() < 2000, "{path}: the reason is short");
    }
    // Other methods: 405 with Allow.
    let post = curl(tmp, &server.url(&format!("/boot/v1/config/{MAC}")), &["-X", "POST", "-d", "x"]);
    assert_eq!((post.status, post.header("allow")), (405, Some("GET, HEAD")));
    let delete = curl(tmp, &server.url("/boot/v1/firmware/fw-one"), &["-X", "DELETE"]);
    assert_eq!(delete.status, 405);
    // Garbage on the wire: an HTTP error or a closed connection, and the server keeps serving.
    for garbage in ["GARBAGE\r\n\r\n", "GET /boot/v1/config/x HTTP/9.9\r\n\r\n", "GET  HTTP/1.1\r\n\r\n"] {
        let answer = raw(server.addr, garbage);
        let refused = answer.starts_with("HTTP/1.1 4") || answer.starts_with("HTTP/1.1 505");
        assert!(answer.is_empty() || refused, "{garbage:?}: {answer}");
    }
    assert_eq!(
        server.stats.request_counts().iter().filter(|(_, o, _)| *o == RequestOutcome::Error).count(),
        0
    );

    // A node never in sync: 503 with Retry-After on every path, then normal service.
    readiness.store(false, Ordering::SeqCst);
    for path in [format!("/boot/v1/config/{MAC}"), "/boot/v1/firmware/fw-one".into(), "/boot/v1/ipxe".into()]
    {
        let reply = curl(tmp, &server.url(&path), &[]);
        assert_eq!((reply.status, reply.header("retry-after")), (503, Some("5")), "{path}");
        assert!(reply.text().starts_with("not ready:"), "{}", reply.text());
    }
    readiness.store(true, Ordering::SeqCst);
    assert_eq!(curl(tmp, &server.url(&format!("/boot/v1/config/{MAC}")), &[]).status, 200);
    assert_eq!(server.stats.requests(PathKind::Config, RequestOutcome::NotReady), 1);
}

#[test]
fn ipxe_scripts_fail_over_across_every_boot_server() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = build_store(&dir.path().join("store"));
    let others = ["10.0.0.2:8080", "0.0.0.0:8080", "boot-c.plant.local:80"];
    let server = BootServer::start(fixture.store.clone(), &others, ready());
    let tmp = dir.path();
    let me = server.addr.to_string();
    let usable = [me.as_str(), "10.0.0.2:8080", "boot-c.plant.local:80"];

    // Firmware without a kernel: one `chain --timeout … || chain --timeout …` line over every usable server.
    let reply = curl(tmp, &server.url(&format!("/boot/v1/ipxe/{MAC}")), &[]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    let script = reply.text();
    assert!(script.starts_with("#!ipxe\n"), "{script}");
    assert!(!script.contains("0.0.0.0"), "an unspecified address is useless to a terminal:\n{script}");
    let digest = Digest::of(fixture.firmware("fw-big.efi"));
    let chain: Vec<String> =
        usable.iter().map(|s| format!("chain --timeout 5000 http://{s}/boot/v1/blobs/{digest}")).collect();
    let want = format!("{} || goto failed", chain.join(" || "));
    assert!(script.lines().any(|line| line == want), "missing\n{want}\nin\n{script}");

    // With a kernel: a block per server, each fetch with --timeout, failing over to the next block.
    let script = curl(tmp, &server.url(&format!("/boot/v1/ipxe/{MAC_KERNEL}")), &[]).text();
    let (kernel, initrd) = (Digest::of(&fixture.kernel), Digest::of(&fixture.initrd));
    for (i, s) in usable.iter().enumerate() {
        let next = if i + 1 < usable.len() { format!("server-{}", i + 2) } else { "failed".into() };
        for line in [
            format!(":server-{}", i + 1),
            format!(
                "kernel --timeout 5000 http://{s}/boot/v1/blobs/{kernel} initrd=initrd quiet console=tty0 || goto {next}"
            ),
            format!("initrd --timeout 5000 --name initrd http://{s}/boot/v1/blobs/{initrd} || goto {next}"),
        ] {
            assert!(script.lines().any(|l| l == line), "missing {line:?} in\n{script}");
        }
    }
    for line in script.lines().filter(|l| l.contains("http://")) {
        assert!(line.contains("--timeout 5000"), "every fetch has a timeout: {line}");
    }
    // The URLs in the script serve exactly the files (here, from this server).
    let url = script
        .lines()
        .find_map(|l| l.strip_prefix("kernel --timeout 5000 "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string();
    assert_eq!(Digest::of(&curl(tmp, &url, &[]).body), kernel);

    // The entry script chains to the per-MAC script with iPXE's ${mac} expansion, with the same failover.
    let entry = curl(tmp, &server.url("/boot/v1/ipxe"), &[]);
    assert_eq!((entry.status, entry.header("content-type")), (200, Some("text/plain")));
    let chain: Vec<String> = usable
        .iter()
        .map(|s| format!("chain --timeout 5000 http://{s}/boot/v1/ipxe/${{mac:hexhyp}}"))
        .collect();
    let want = format!("{} || goto failed", chain.join(" || "));
    assert!(entry.text().lines().any(|line| line == want), "missing\n{want}\nin\n{}", entry.text());
    // What iPXE's ${mac:hexhyp} gives is a path the server understands.
    assert_eq!(curl(tmp, &server.url("/boot/v1/ipxe/52-54-00-12-34-56"), &[]).text(), reply.text());

    // No firmware or no terminal: 404 with the reason.
    let bare = curl(tmp, &server.url(&format!("/boot/v1/ipxe/{MAC_BARE}")), &[]);
    assert_eq!(
        (bare.status, bare.text()),
        (404, format!("not found: terminal t3 ({MAC_BARE}) has no firmware to boot\n"))
    );
    assert_eq!(curl(tmp, &server.url(&format!("/boot/v1/ipxe/{MAC_UNKNOWN}")), &[]).status, 404);
}

#[test]
fn heartbeats_are_accepted_counted_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = build_store(&dir.path().join("store"));
    let server = BootServer::start(fixture.store.clone(), &[], ready());
    let tmp = dir.path();
    let post = |mac: &str, body: &str| {
        curl(
            tmp,
            &server.url(&format!("/boot/v1/status/{mac}")),
            &["-H", "Content-Type: application/json", "--data-binary", body],
        )
    };
    assert_eq!(post(MAC, r#"{"state": "green"}"#).status, 204);
    assert_eq!(post("52-54-00-00-00-02", r#"{"state": "red", "detail": "no RDP session"}"#).status, 204);
    assert_eq!(post(MAC, r#"{"state": "green", "detail": "ok", "uptime_s": 12}"#).status, 204);
    assert_eq!(server.heartbeats.terminals_online(Duration::from_secs(60)), 2);
    assert_eq!(server.heartbeats.online_by_state(Duration::from_secs(60)), (1, 1));
    let seen = server.heartbeats.get(Mac::parse(MAC_KERNEL).unwrap()).unwrap();
    assert_eq!((seen.state, seen.detail.as_str()), (TerminalState::Red, "no RDP session"));
    assert_eq!(server.heartbeats.get(Mac::parse(MAC).unwrap()).unwrap().count, 2);

    for malformed in
        ["", "{", "not json", r#"{"state": "blue"}"#, r#"{"detail": "x"}"#, r#"{"state": 1}"#, "[]"]
    {
        let reply = post(MAC, malformed);
        assert_eq!(reply.status, 400, "{malformed:?}: {}", reply.text());
    }
    let too_large = post(MAC, &format!(r#"{{"state":"red","detail":"{}"}}"#, "x".repeat(10_000)));
    assert_eq!(too_large.status, 413);
    let unknown = post(MAC_UNKNOWN, r#"{"state": "green"}"#);
    assert_eq!(
        (unknown.status, unknown.text()),
        (404, format!("not found: no terminal has MAC {MAC_UNKNOWN}\n"))
    );
    assert_eq!(post("nonsense", r#"{"state": "green"}"#).status, 400);
    let get = curl(tmp, &server.url(&format!("/boot/v1/status/{MAC}")), &[]);
    assert_eq!((get.status, get.header("allow")), (405, Some("POST")));

    assert_eq!(
        server.heartbeats.terminals_online(Duration::from_secs(60)),
        2,
        "refused heartbeats count for nothing"
    );
    assert_eq!(server.stats.heartbeats(), 3);
    assert_eq!(server.stats.requests(PathKind::Status, RequestOutcome::Ok), 3);
    assert_eq!(server.stats.requests(PathKind::Status, RequestOutcome::BadRequest), 9);
}

/// Generates `len` deterministic bytes without holding them (so the test's own memory stays flat).
struct Generated {
    left: u64,
    state: u64,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.left as usize);
        for byte in &mut buf[..n] {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            *byte = (self.state >> 24) as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next());
    kib.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 1024
}

#[test]
fn twenty_terminals_fetch_a_64_mib_image_without_twenty_copies_in_memory() {
    const SIZE: u64 = 64 << 20;
    const CLIENTS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("store")).unwrap();
    let (digest, _) = store.put_blob(1, Generated { left: SIZE, state: 7 }).unwrap().unwrap();
    let meta = ChangeMeta { actor: "test".into(), ..ChangeMeta::default() };
    let change =
        ChangeSet::new(meta).put("firmware", "image", json!({"version": "1", "blob": digest.to_string()}));
    assert!(matches!(store.apply_change_set(change).unwrap(), Outcome::Accepted { .. }));
    let server = BootServer::start(Arc::new(RwLock::new(store)), &[], ready());

    let baseline = resident_bytes();
    let started = Instant::now();
    // Each terminal from its own address (127.0.0.2, .3, …: loopback too), as on a plant network (the boot
    // server caps the connections per address).
    let children: Vec<std::process::Child> = (0..CLIENTS)
        .map(|i| {
            let url = server.url("/boot/v1/firmware/image");
            Command::new("sh")
                .arg("-c")
                .arg(format!("curl -sS --max-time 120 --interface 127.0.0.{} {url} | sha256sum", i + 2))
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut peak = baseline;
    let mut outputs = Vec::new();
    for child in children {
        while Instant::now() < started + Duration::from_secs(150) {
            peak = peak.max(resident_bytes());
            let answered = server.stats.requests(PathKind::Firmware, RequestOutcome::Ok);
            if answered == CLIENTS as u64 && server.stats.downloads_active() == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        outputs.push(child.wait_with_output().unwrap());
    }
    let elapsed = started.elapsed();
    for output in outputs {
        let text = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            text.split_whitespace().next(),
            Some(digest.to_string().as_str()),
            "a client got other bytes"
        );
    }
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "{CLIENTS} clients x {} MiB in {elapsed:?}; resident memory grew by {} MiB at most (one copy would be {} MiB)",
        SIZE >> 20,
        growth >> 20,
        SIZE >> 20
    );
    // Streaming holds a few hundred KiB per client; sled's page cache may keep one copy of the parts it read.
    assert!(growth < 2 * SIZE, "memory grew by {} MiB while serving", growth >> 20);
    assert_eq!(server.stats.bytes_served(), SIZE * CLIENTS as u64);
}

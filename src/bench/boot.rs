//! `tandem bench boot`: the boot server of one node against reference servers, on this machine.
//!
//! It starts one `tandem serve` process (this executable) on free loopback ports in a temporary directory,
//! uploads a firmware image of `--size-mib` MiB (pseudo-random bytes) with [`crate::client::firmware::add`], creates a
//! terminal that boots it through the API, and then measures, each figure beside its goal:
//! 1. **boot-config requests/s**: `wrk -t2 -c64 -d{seconds}s --latency` (64 keep-alive connections) on
//!    `GET /boot/v1/config/{mac}` of the node's boot HTTP address, then on the same JSON bytes served as a
//!    static file by nginx (started here as a foreground child with a temporary configuration:
//!    `worker_processes auto`, `access_log off`, `keepalive_requests 1000000`, everything inside the temporary
//!    directory). Goal: at least 0.8x nginx.
//! 2. **TFTP time for the image**: `atftp --option "blksize 1468" --option "windowsize 16" --option "tsize
//!    enable"` (as `tests/tftp.rs` runs it) fetching `firmware/{name}` from the node, then the same file from a
//!    reference server (atftpd, else tftpd-hpa's `in.tftpd`) serving a directory with the same path; `--runs`
//!    runs each, interleaved, median compared, every download's SHA-256 checked. Goal: within 1.2x the
//!    reference server's time.
//! 3. **peak memory of the node while 20 clients fetch the image**: the node's `VmHWM` (peak RSS) is reset
//!    through `/proc/{pid}/clear_refs`, 20 `curl`s fetch `/boot/v1/firmware/{name}` at once (then 20 `atftp`s
//!    over TFTP), and `VmRSS` / `VmHWM` are read from `/proc/{pid}/status` before, during (sampled) and after;
//!    every download's SHA-256 is checked. Goal: under 200 MiB.
//!
//! The external programs come from Debian packages: `scripts/bench-deps.sh` installs the missing ones. All
//! traffic stays on 127.0.0.1; every wait is bounded; every child process is stopped when the benchmark ends,
//! also on error (`Proc` stops its process when dropped, and clients run with `kill_on_drop`).

use std::net::UdpSocket;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hyper::Method;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;

use crate::client::ApiClient;

/// Options of `tandem bench boot`.
#[derive(clap::Args, Debug, Clone)]
pub struct BootBenchOptions {
    /// Seconds of HTTP load (wrk) per server.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// TFTP downloads per server; the median is compared.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Size of the firmware image in MiB.
    #[arg(long, default_value_t = 64)]
    pub size_mib: u64,
    /// Keep the temporary directory (the node's data, the servers' logs and configurations) after the run.
    #[arg(long)]
    pub keep: bool,
    /// A boot storm instead (`bench::storm`): every terminal fetches the image at once, from the node with
    /// its default limits and from nginx + the reference TFTP server; `--runs` storms each.
    #[arg(long)]
    pub storm: bool,
    /// Storm: terminals booting over HTTP.
    #[arg(long, default_value_t = 500)]
    pub storm_http: usize,
    /// Storm: terminals booting over TFTP (blksize 1468, windowsize 16).
    #[arg(long, default_value_t = 200)]
    pub storm_tftp: usize,
    /// Storm: the image's size in MiB.
    #[arg(long, default_value_t = 32)]
    pub storm_size_mib: u64,
}

/// HTTP keep-alive connections wrk opens.
const CONNECTIONS: usize = 64;
/// wrk threads.
const WRK_THREADS: usize = 2;
/// Clients fetching the image at once in the memory test.
const CLIENTS: usize = 20;
/// The goals.
const GOAL_HTTP_RATIO: f64 = 0.8;
const GOAL_TFTP_RATIO: f64 = 1.2;
const GOAL_PEAK_MIB: f64 = 200.0;

pub(super) const FIRMWARE: &str = "bench-fw";
const MAC: &str = "02:00:00:00:b0:01";
const ATFTP_OPTIONS: [&str; 6] =
    ["--option", "blksize 1468", "--option", "windowsize 16", "--option", "tsize enable"];

const DEPS_HINT: &str = "run scripts/bench-deps.sh to install them (Debian packages)";

// ---------------------------------------------------------------------------------------------------------------
// Child processes

/// A long-running child process (the node, nginx, the reference TFTP server), stopped when dropped: SIGTERM
/// first when `term_first` (nginx's master then stops its workers), SIGKILL after a bounded wait.
pub(super) struct Proc {
    name: String,
    child: Option<Child>,
    term_first: bool,
}

impl Proc {
    fn spawn(name: &str, mut command: Command, log: &Path, term_first: bool) -> Result<Proc> {
        let log = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc { name: name.into(), child: Some(child), term_first })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Fails if the process has exited (it should be serving).
    pub(super) fn check_running(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            self.child = None;
            bail!("{} exited ({status})", self.name);
        }
        Ok(())
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if self.term_first {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs a client with a time limit; returns its stdout. Fails on a non-zero exit or the limit (the client is
/// killed then, and also if this future is dropped).
async fn run_client(mut command: tokio::process::Command, limit: Duration, what: &str) -> Result<String> {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let child = command.spawn().with_context(|| format!("starting {what}"))?;
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| anyhow::anyhow!("{what} did not finish within {} s", limit.as_secs()))??;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!("{what} failed ({}): {}{}", output.status, stdout, String::from_utf8_lossy(&output.stderr));
    }
    Ok(stdout)
}

/// Where a program is: `PATH`, then the sbin directories (nginx and atftpd live in `/usr/sbin`, which is not
/// on every user's `PATH`).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The external programs, found.
pub(super) struct Programs {
    nginx: PathBuf,
    wrk: PathBuf,
    atftp: PathBuf,
    curl: PathBuf,
    pub(super) reference_tftp: ReferenceTftp,
}

/// The reference TFTP server.
pub(super) enum ReferenceTftp {
    Atftpd(PathBuf),
    TftpdHpa(PathBuf),
}

impl ReferenceTftp {
    pub(super) fn name(&self) -> &'static str {
        match self {
            ReferenceTftp::Atftpd(_) => "atftpd",
            ReferenceTftp::TftpdHpa(_) => "in.tftpd",
        }
    }
}

pub(super) fn find_programs() -> Result<Programs> {
    let mut missing = Vec::new();
    let mut need = |name: &str, package: &str| {
        let found = find_program(name);
        if found.is_none() {
            missing.push(format!("{name} (package {package})"));
        }
        found.unwrap_or_default()
    };
    let nginx = need("nginx", "nginx-light");
    let wrk = need("wrk", "wrk");
    let atftp = need("atftp", "atftp");
    let curl = need("curl", "curl");
    let reference_tftp = match (find_program("atftpd"), find_program("in.tftpd")) {
        (Some(path), _) => ReferenceTftp::Atftpd(path),
        (None, Some(path)) => ReferenceTftp::TftpdHpa(path),
        (None, None) => {
            missing.push("atftpd (package atftpd) or in.tftpd (package tftpd-hpa)".into());
            ReferenceTftp::Atftpd(PathBuf::new())
        }
    };
    if !missing.is_empty() {
        bail!("tandem bench boot needs programs that are missing: {}; {DEPS_HINT}", missing.join(", "));
    }
    Ok(Programs { nginx, wrk, atftp, curl, reference_tftp })
}

fn free_udp_port() -> Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

// ---------------------------------------------------------------------------------------------------------------
// Pure helpers (unit-tested)

/// What the benchmark reads from wrk's report.
#[derive(Debug, Clone, PartialEq)]
struct WrkReport {
    requests_per_second: f64,
    requests: u64,
    p50: Option<Duration>,
    p99: Option<Duration>,
    /// Responses that were not 2xx or 3xx.
    non_2xx: u64,
    /// Connect, read, write errors and timeouts.
    socket_errors: u64,
}

/// A wrk duration: `463.00us`, `2.26ms`, `1.01s`, `1.50m`.
fn parse_wrk_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.trim().parse().ok()?;
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

/// Parses wrk's report (`--latency` adds the distribution).
fn parse_wrk(output: &str) -> Option<WrkReport> {
    let mut report = WrkReport {
        requests_per_second: f64::NAN,
        requests: 0,
        p50: None,
        p99: None,
        non_2xx: 0,
        socket_errors: 0,
    };
    for line in output.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(value) = line.strip_prefix("Requests/sec:") {
            report.requests_per_second = value.trim().parse().ok()?;
        } else if words.len() >= 2 && words[1] == "requests" && words.get(2) == Some(&"in") {
            report.requests = words[0].parse().ok()?;
        } else if words.len() == 2 && words[0] == "50%" {
            report.p50 = parse_wrk_duration(words[1]);
        } else if words.len() == 2 && words[0] == "99%" {
            report.p99 = parse_wrk_duration(words[1]);
        } else if let Some(value) = line.strip_prefix("Non-2xx or 3xx responses:") {
            report.non_2xx = value.trim().parse().ok()?;
        } else if let Some(errors) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            report.socket_errors = errors
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        }
    }
    report.requests_per_second.is_finite().then_some(report)
}

/// A `kB` field of `/proc/{pid}/status` (`VmRSS`, `VmHWM`), in bytes.
pub(super) fn parse_status_field(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let mut words = rest.split_whitespace();
        let value: u64 = words.next()?.parse().ok()?;
        match words.next() {
            Some("kB") | None => Some(value * 1024),
            Some(_) => None,
        }
    })
}

/// The median of measured durations (the upper one of the middle two for an even count).
fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

pub(super) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub(super) fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// Deterministic pseudo-random bytes (xorshift64*), written to `path`; returns their SHA-256 (hex).
pub(super) fn write_image(path: &Path, size: u64) -> Result<String> {
    use std::io::Write as _;
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut hasher = Sha256::new();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut left = size;
    let mut block = vec![0u8; 1 << 16];
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            word.copy_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n])?;
        hasher.update(&block[..n]);
        left -= n as u64;
    }
    file.flush()?;
    Ok(format!("{:x}", hasher.finalize()))
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(format!("{:x}", hasher.finalize()))
}

// ---------------------------------------------------------------------------------------------------------------
// The node and the reference servers

pub(super) struct Node {
    pub(super) proc: Proc,
    api: String,
    pub(super) boot: String,
    pub(super) tftp_port: u16,
}

/// Starts the node; `raise_limits` lifts the per-address caps above the benchmark's concurrent clients
/// (which all come from 127.0.0.1), otherwise it keeps every default.
pub(super) async fn start_node(root: &Path, raise_limits: bool) -> Result<Node> {
    let api = format!("127.0.0.1:{}", super::free_port()?);
    let peer = format!("127.0.0.1:{}", super::free_port()?);
    let boot = format!("127.0.0.1:{}", super::free_port()?);
    let tftp_port = free_udp_port()?;
    // Every client of the benchmark runs on 127.0.0.1, where a plant has one address per terminal: raise the
    // per-address caps (docs/security.md) above the number of concurrent clients.
    let config = root.join("limits.toml");
    let limits = if raise_limits {
        format!(
            "[limits.boot]\nmax_connections_per_source = {0}\n[limits.tftp]\nmax_transfers_per_source = {0}\n",
            CONNECTIONS.max(CLIENTS) * 2
        )
    } else {
        String::new()
    };
    std::fs::write(&config, limits)?;
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(root.join("node"))
        .args(["--name", "a", "--role", "data", "--api", &api, "--peer", &peer, "--boot", &boot])
        .args(["--tftp", &format!("127.0.0.1:{tftp_port}"), "--cluster-secret", "bench-boot-secret"]);
    let mut proc = Proc::spawn("tandem serve", command, &root.join("node.log"), false)?;
    let client = ApiClient::new(&api, None).with_timeout(Duration::from_secs(5));
    for _ in 0..400 {
        if let Ok((200, _)) = client.send(Method::GET, "/v1/status", None).await {
            return Ok(Node { proc, api, boot, tftp_port });
        }
        proc.check_running().context("the node (see node.log)")?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the node did not answer on {api} within 20 s (see node.log)")
}

/// Uploads the image, creates the terminal (with a model, terminal servers and settings, as a plant would), and
/// waits until the node serves its boot document; returns the document's bytes.
pub(super) async fn provision(node: &Node, image: &Path, size: u64) -> Result<Vec<u8>> {
    let firmware = crate::client::firmware::Firmware {
        name: FIRMWARE.into(),
        file: image.to_path_buf(),
        version: "1.0".into(),
        kernel: None,
        initrd: None,
        cmdline: None,
        reason: "bench boot".into(),
    };
    let client = ApiClient::new(&node.api, None);
    let progress = std::sync::Arc::new(crate::client::NoProgress);
    let answer =
        crate::client::firmware::add(&client, &firmware, progress).await.context("uploading the firmware")?;
    if answer["size"].as_u64() != Some(size) {
        bail!("the firmware upload answered {answer}");
    }
    let change = json!({
        "reason": "bench boot terminal",
        "operations": [
            {"put": {"collection": "termcap", "id": "hmi-15",
                     "document": {"screen": "1920x1080", "touch": true, "keyboard": "de", "audio": false}}},
            {"put": {"collection": "terminal_servers", "id": "ts1",
                     "document": {"address": "10.9.8.7", "port": 3389, "description": "line 3 RDS host A"}}},
            {"put": {"collection": "terminal_servers", "id": "ts2",
                     "document": {"address": "10.9.8.8", "port": 3389, "description": "line 3 RDS host B"}}},
            {"put": {"collection": "terminals", "id": "line-3-hmi",
                     "document": {"mac": MAC, "model": "hmi-15", "firmware": FIRMWARE,
                                  "terminal_servers": ["ts1", "ts2"],
                                  "settings": {"kiosk": true, "language": "de-DE", "timezone": "Europe/Berlin",
                                               "screensaver_minutes": 15, "application": "HMI line 3"}}}},
        ],
    });
    let client = ApiClient::new(&node.api, None);
    let (status, answer) = client.send(Method::POST, "/v1/changes", Some(change)).await?;
    if status != 200 {
        bail!("creating the terminal was refused ({status}): {answer}");
    }
    let boot = ApiClient::new(&node.boot, None).with_timeout(Duration::from_secs(5));
    let path = format!("/boot/v1/config/{MAC}");
    let mut last = String::new();
    for _ in 0..200 {
        match boot.send_raw(Method::GET, &path, None).await {
            Ok((200, _, bytes)) => return Ok(bytes.to_vec()),
            Ok((status, _, bytes)) => last = format!("{status}: {}", String::from_utf8_lossy(&bytes)),
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the node did not serve the boot document within 10 s: {last}")
}

/// nginx serving `www` on a free port; returns the server and its port.
pub(super) async fn start_nginx(programs: &Programs, root: &Path, www: &Path) -> Result<(Proc, u16)> {
    let port = super::free_port()?;
    let prefix = root.join("nginx");
    std::fs::create_dir_all(&prefix)?;
    let p = |name: &str| prefix.join(name).display().to_string();
    let config = format!(
        "worker_processes auto;\n\
         pid {pid};\n\
         error_log {error} warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
         \x20 access_log off;\n\
         \x20 sendfile on;\n\
         \x20 tcp_nopush on;\n\
         \x20 keepalive_requests 1000000;\n\
         \x20 default_type application/json;\n\
         \x20 client_body_temp_path {body};\n\
         \x20 proxy_temp_path {proxy};\n\
         \x20 fastcgi_temp_path {fastcgi};\n\
         \x20 uwsgi_temp_path {uwsgi};\n\
         \x20 scgi_temp_path {scgi};\n\
         \x20 server {{\n\
         \x20   listen 127.0.0.1:{port};\n\
         \x20   root {www};\n\
         \x20 }}\n\
         }}\n",
        pid = p("nginx.pid"),
        error = p("error.log"),
        body = p("client_body"),
        proxy = p("proxy"),
        fastcgi = p("fastcgi"),
        uwsgi = p("uwsgi"),
        scgi = p("scgi"),
        www = www.display(),
    );
    let conf = prefix.join("nginx.conf");
    std::fs::write(&conf, config)?;
    let mut command = Command::new(&programs.nginx);
    command.arg("-p").arg(&prefix).arg("-e").arg(prefix.join("error.log")).arg("-c").arg(&conf);
    command.args(["-g", "daemon off;"]);
    let mut proc = Proc::spawn("nginx", command, &prefix.join("stdout.log"), true)?;
    let client = ApiClient::new(&format!("127.0.0.1:{port}"), None).with_timeout(Duration::from_secs(2));
    for _ in 0..200 {
        if let Ok((200, _, _)) = client.send_raw(Method::GET, "/config.json", None).await {
            return Ok((proc, port));
        }
        proc.check_running().context("nginx (see nginx/error.log)")?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("nginx did not serve /config.json within 10 s (see {})", prefix.join("error.log").display())
}

/// The reference TFTP server serving `www` on a free port; returns the server and its port.
pub(super) async fn start_reference_tftp(
    programs: &Programs,
    root: &Path,
    www: &Path,
) -> Result<(Proc, u16)> {
    let port = free_udp_port()?;
    let (name, command) = match &programs.reference_tftp {
        ReferenceTftp::Atftpd(path) => {
            let mut command = Command::new(path);
            command.args(["--daemon", "--no-fork", "--logfile", "-", "--port", &port.to_string()]);
            command.args(["--bind-address", "127.0.0.1"]);
            // As root it drops to nobody (which can read the world-readable directory); any other user stays
            // who it is.
            if !running_as_root()
                && let (Some(user), Some(group)) = (id_name("-un"), id_name("-gn"))
            {
                command.args(["--user", &user, "--group", &group]);
            }
            command.arg(www);
            ("atftpd", command)
        }
        ReferenceTftp::TftpdHpa(path) => {
            let mut command = Command::new(path);
            command.args(["--foreground", "--address", &format!("127.0.0.1:{port}"), "--secure"]);
            if !running_as_root()
                && let Some(user) = id_name("-un")
            {
                command.args(["--user", &user]);
            }
            command.arg(www);
            ("in.tftpd", command)
        }
    };
    let mut proc = Proc::spawn(name, command, &root.join(format!("{name}.log")), false)?;
    for _ in 0..50 {
        if tftp_answers(port).await {
            return Ok((proc, port));
        }
        proc.check_running().with_context(|| format!("{name} (see {name}.log)"))?;
    }
    bail!("{name} did not answer on UDP port {port} within 10 s (see {name}.log)")
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn id_name(flag: &str) -> Option<String> {
    let output = Command::new("id").arg(flag).output().ok()?;
    let name = String::from_utf8_lossy(&output.stdout).trim().to_string();
    (output.status.success() && !name.is_empty()).then_some(name)
}

/// Whether a TFTP server on 127.0.0.1:`port` answers a read request for a missing file within 200 ms.
async fn tftp_answers(port: u16) -> bool {
    let Ok(socket) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else { return false };
    let request = [&1u16.to_be_bytes()[..], b"no-such-dir/probe\0octet\0"].concat();
    if socket.send_to(&request, ("127.0.0.1", port)).await.is_err() {
        return false;
    }
    let mut buffer = [0u8; 600];
    matches!(
        tokio::time::timeout(Duration::from_millis(200), socket.recv_from(&mut buffer)).await,
        Ok(Ok((n, _))) if n >= 4
    )
}

// ---------------------------------------------------------------------------------------------------------------
// Measurements

async fn wrk(programs: &Programs, url: &str, seconds: u64) -> Result<WrkReport> {
    let mut command = tokio::process::Command::new(&programs.wrk);
    command.arg(format!("-t{WRK_THREADS}")).arg(format!("-c{CONNECTIONS}")).arg(format!("-d{seconds}s"));
    command.args(["--latency", url]);
    let output = run_client(command, Duration::from_secs(seconds + 30), "wrk").await?;
    let report = parse_wrk(&output).with_context(|| format!("cannot read wrk's report:\n{output}"))?;
    if report.non_2xx > 0 || report.socket_errors > 0 {
        bail!(
            "wrk on {url}: {} non-2xx responses, {} socket errors:\n{output}",
            report.non_2xx,
            report.socket_errors
        );
    }
    Ok(report)
}

fn print_wrk(name: &str, report: &WrkReport) {
    let ms = |d: Option<Duration>| d.map_or("?".to_string(), |d| format!("{:.2}", d.as_secs_f64() * 1e3));
    println!(
        "  {name:<8} {:>9.0} req/s   p50 {:>6} ms  p99 {:>6} ms   ({} requests)",
        report.requests_per_second,
        ms(report.p50),
        ms(report.p99),
        report.requests
    );
}

/// One atftp download of `firmware/{name}` from 127.0.0.1:`port` into `out`, checked; returns its time.
async fn atftp_fetch(programs: &Programs, port: u16, out: &Path, digest: &str) -> Result<Duration> {
    let _ = std::fs::remove_file(out);
    let mut command = tokio::process::Command::new(&programs.atftp);
    command.args(ATFTP_OPTIONS).args(["-g", "-r", &format!("firmware/{FIRMWARE}"), "-l"]).arg(out);
    command.args(["127.0.0.1", &port.to_string()]);
    let started = Instant::now();
    run_client(command, Duration::from_secs(300), "atftp").await?;
    let took = started.elapsed();
    let out_path = out.to_path_buf();
    let got = tokio::task::spawn_blocking(move || sha256_file(&out_path)).await??;
    let _ = std::fs::remove_file(out);
    if got != digest {
        bail!("atftp from port {port} wrote other bytes (sha256 {got}, expected {digest})");
    }
    Ok(took)
}

/// One curl download over HTTP, hashed as it arrives; returns (bytes, sha256).
async fn curl_fetch(curl: PathBuf, url: String) -> Result<(u64, String)> {
    let mut command = tokio::process::Command::new(curl);
    command.args(["-sS", "--fail", "--max-time", "300", &url]);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = command.spawn().context("starting curl")?;
    let mut stdout = child.stdout.take().context("curl's stdout")?;
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = stdout.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        total += n as u64;
    }
    let output = child.wait_with_output().await?;
    if !output.status.success() {
        bail!("curl {url} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    Ok((total, format!("{:x}", hasher.finalize())))
}

/// Memory figures of the node during one concurrent-download test.
struct Memory {
    rss_before: u64,
    rss_after: u64,
    /// VmHWM after the test; since the reset (`hwm_reset`) when that worked, else over the node's whole life.
    hwm_after: u64,
    hwm_reset: bool,
    /// The largest VmRSS sampled every 20 ms.
    sampled_peak: u64,
    took: Duration,
}

impl Memory {
    fn peak(&self) -> u64 {
        if self.hwm_reset { self.hwm_after } else { self.sampled_peak }
    }
}

pub(super) fn read_status(pid: u32) -> Result<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))
}

/// Resets the node's VmHWM to its current RSS ("5" to clear_refs, Linux 4.0+); false if that was refused.
pub(super) fn reset_hwm(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Runs `downloads` (each resolving to (bytes, sha256)) concurrently while sampling the node's memory; checks
/// every result.
async fn measure_memory<F>(pid: u32, downloads: Vec<F>, size: u64, digest: &str) -> Result<Memory>
where
    F: std::future::Future<Output = Result<(u64, String)>> + Send + 'static,
{
    let hwm_reset = reset_hwm(pid);
    let rss_before = parse_status_field(&read_status(pid)?, "VmRSS").context("no VmRSS")?;
    let started = Instant::now();
    let tasks: Vec<_> = downloads.into_iter().map(tokio::spawn).collect();
    let deadline = started + Duration::from_secs(600);
    let mut sampled_peak = rss_before;
    while !tasks.iter().all(|task| task.is_finished()) {
        if Instant::now() > deadline {
            for task in &tasks {
                task.abort();
            }
            bail!("the downloads did not finish within 600 s");
        }
        if let Some(rss) = read_status(pid).ok().and_then(|s| parse_status_field(&s, "VmRSS")) {
            sampled_peak = sampled_peak.max(rss);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    let status = read_status(pid)?;
    let rss_after = parse_status_field(&status, "VmRSS").context("no VmRSS")?;
    let hwm_after = parse_status_field(&status, "VmHWM").context("no VmHWM")?;
    for (i, task) in tasks.into_iter().enumerate() {
        let (bytes, got) = task.await.context("a download task panicked")??;
        if bytes != size || got != digest {
            bail!("download {} got {bytes} bytes with sha256 {got}; expected {size} bytes, {digest}", i + 1);
        }
    }
    Ok(Memory {
        rss_before,
        rss_after,
        hwm_after,
        hwm_reset,
        sampled_peak: sampled_peak.max(rss_after),
        took,
    })
}

fn print_memory(label: &str, memory: &Memory) {
    let peak_source = if memory.hwm_reset { "VmHWM, reset before" } else { "sampled VmRSS" };
    println!(
        "  {label:<13} RSS before {:>6.1} MiB, peak {:>6.1} MiB ({peak_source}; sampled max {:.1} MiB), after {:>6.1} MiB; {CLIENTS}/{CLIENTS} verified in {:.1} s   goal < {GOAL_PEAK_MIB:.0} MiB: {}",
        mib(memory.rss_before),
        mib(memory.peak()),
        mib(memory.sampled_peak),
        mib(memory.rss_after),
        memory.took.as_secs_f64(),
        verdict(mib(memory.peak()) < GOAL_PEAK_MIB),
    );
}

// ---------------------------------------------------------------------------------------------------------------
// The benchmark

/// Runs the boot benchmark and prints its figures.
pub async fn boot(options: &BootBenchOptions) -> Result<()> {
    if options.seconds == 0 || options.runs == 0 || options.size_mib == 0 {
        bail!("--seconds, --runs and --size-mib must be at least 1");
    }
    let programs = find_programs()?;
    let dir = tempfile::tempdir()?;
    let root = dir.path().to_path_buf();
    let result = run(options, &programs, &root).await;
    if options.keep {
        println!("kept the node's data, the logs and the configurations in {}", dir.keep().display());
    } else if result.is_err() {
        eprintln!("(run with --keep to keep the logs of the node and the reference servers)");
    }
    result
}

async fn run(options: &BootBenchOptions, programs: &Programs, root: &Path) -> Result<()> {
    // nginx's workers and atftpd run as nobody when started by root: they must be able to read the files.
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))?;
    let www = root.join("www");
    std::fs::create_dir_all(www.join("firmware"))?;
    let size = options.size_mib << 20;
    let image = www.join("firmware").join(FIRMWARE);
    let digest = {
        let image = image.clone();
        tokio::task::spawn_blocking(move || write_image(&image, size)).await??
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!(
        "tandem bench boot: one node on 127.0.0.1 in {}; firmware {} MiB; {} cores; load average {}",
        root.display(),
        options.size_mib,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.join(" ")
    );

    let mut node = start_node(root, true).await?;
    let config = provision(&node, &image, size).await?;
    std::fs::write(www.join("config.json"), &config)?;
    let status = read_status(node.proc.pid())?;
    let field = |name: &str| parse_status_field(&status, name).map_or(f64::NAN, mib);
    println!(
        "node after the upload and the terminal: VmRSS {:.1} MiB, VmHWM {:.1} MiB",
        field("VmRSS"),
        field("VmHWM")
    );

    let http_ratio = measure_http(options, programs, root, &www, &mut node, &config).await?;
    let (tftp_ratio, reference_name) =
        measure_tftp(options, programs, root, &www, &mut node, &digest).await?;
    let (http_memory, tftp_memory) =
        measure_node_memory(options, programs, root, &mut node, size, &digest).await?;

    println!(
        "summary: config {http_ratio:.2}x nginx (goal >= {GOAL_HTTP_RATIO}x: {}); TFTP {tftp_ratio:.2}x {reference_name} (goal <= {GOAL_TFTP_RATIO}x: {}); peak memory {:.0} MiB HTTP / {:.0} MiB TFTP (goal < {GOAL_PEAK_MIB:.0} MiB: {})",
        verdict(http_ratio >= GOAL_HTTP_RATIO),
        verdict(tftp_ratio <= GOAL_TFTP_RATIO),
        mib(http_memory.peak()),
        mib(tftp_memory.peak()),
        verdict(mib(http_memory.peak().max(tftp_memory.peak())) < GOAL_PEAK_MIB),
    );
    drop(node);
    Ok(())
}

/// Step 1: boot-config requests/s against nginx serving the same JSON; returns tandem's rate as a ratio of nginx's.
async fn measure_http(
    options: &BootBenchOptions,
    programs: &Programs,
    root: &Path,
    www: &Path,
    node: &mut Node,
    config: &[u8],
) -> Result<f64> {
    println!(
        "boot config over HTTP keep-alive: wrk -t{WRK_THREADS} -c{CONNECTIONS} -d{}s --latency, {} bytes of JSON",
        options.seconds,
        config.len()
    );
    let tandem_url = format!("http://{}/boot/v1/config/{MAC}", node.boot);
    let (nginx, nginx_port) = start_nginx(programs, root, www).await?;
    let nginx_url = format!("http://127.0.0.1:{nginx_port}/config.json");
    // A short warm-up of each, then the measured runs.
    wrk(programs, &tandem_url, 1).await?;
    let tandem_http = wrk(programs, &tandem_url, options.seconds).await?;
    node.proc.check_running()?;
    print_wrk("tandem", &tandem_http);
    wrk(programs, &nginx_url, 1).await?;
    let nginx_http = wrk(programs, &nginx_url, options.seconds).await?;
    print_wrk("nginx", &nginx_http);
    drop(nginx);
    let http_ratio = tandem_http.requests_per_second / nginx_http.requests_per_second;
    println!(
        "  ratio    {http_ratio:.2}x nginx (nginx: static file, worker_processes auto = {} workers, access_log off, keepalive_requests 1000000)   goal >= {GOAL_HTTP_RATIO}x: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        verdict(http_ratio >= GOAL_HTTP_RATIO)
    );

    Ok(http_ratio)
}

/// Step 2: the TFTP time of the image against the reference server; returns tandem's time as a ratio of
/// the reference's, and the reference's name.
async fn measure_tftp(
    options: &BootBenchOptions,
    programs: &Programs,
    root: &Path,
    www: &Path,
    node: &mut Node,
    digest: &str,
) -> Result<(f64, &'static str)> {
    let (reference, reference_port) = start_reference_tftp(programs, root, www).await?;
    let reference_name = programs.reference_tftp.name();
    for port in [node.tftp_port, reference_port] {
        let mut answered = false;
        for _ in 0..25 {
            if tftp_answers(port).await {
                answered = true;
                break;
            }
        }
        if !answered {
            bail!("no TFTP server answers on UDP port {port}");
        }
    }
    println!(
        "TFTP {} MiB firmware: atftp {}, {} runs each, interleaved, sha256 checked",
        options.size_mib,
        ATFTP_OPTIONS.iter().filter(|o| !o.starts_with("--")).copied().collect::<Vec<_>>().join(", "),
        options.runs
    );
    let out = root.join("tftp-download");
    let mut tandem_times = Vec::new();
    let mut reference_times = Vec::new();
    for _ in 0..options.runs {
        tandem_times.push(atftp_fetch(programs, node.tftp_port, &out, digest).await?);
        reference_times.push(atftp_fetch(programs, reference_port, &out, digest).await?);
    }
    drop(reference);
    node.proc.check_running()?;
    let show = |name: &str, times: &[Duration]| {
        let median = median(times);
        let all: Vec<String> = times.iter().map(|t| format!("{:.3}", t.as_secs_f64())).collect();
        println!(
            "  {name:<8} median {:>7.3} s  ({:>6.1} MiB/s; runs {} s)",
            median.as_secs_f64(),
            options.size_mib as f64 / median.as_secs_f64(),
            all.join(", ")
        );
        median
    };
    let tandem_tftp = show("tandem", &tandem_times);
    let reference_tftp = show(reference_name, &reference_times);
    let tftp_ratio = tandem_tftp.as_secs_f64() / reference_tftp.as_secs_f64();
    println!(
        "  ratio    {tftp_ratio:.2}x {reference_name}'s time   goal <= {GOAL_TFTP_RATIO}x: {}",
        verdict(tftp_ratio <= GOAL_TFTP_RATIO)
    );

    Ok((tftp_ratio, reference_name))
}

/// Step 3: the node's memory while 20 clients fetch the image at once, over HTTP and then over TFTP.
async fn measure_node_memory(
    options: &BootBenchOptions,
    programs: &Programs,
    root: &Path,
    node: &mut Node,
    size: u64,
    digest: &str,
) -> Result<(Memory, Memory)> {
    let pid = node.proc.pid();
    println!(
        "memory of the node (pid {pid}, /proc/{pid}/status) while {CLIENTS} clients fetch the {} MiB image at once:",
        options.size_mib
    );
    let url = format!("http://{}/boot/v1/firmware/{FIRMWARE}", node.boot);
    let downloads: Vec<_> = (0..CLIENTS).map(|_| curl_fetch(programs.curl.clone(), url.clone())).collect();
    let http_memory = measure_memory(pid, downloads, size, digest).await?;
    print_memory("HTTP (curl)", &http_memory);
    node.proc.check_running()?;
    let downloads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let atftp = programs.atftp.clone();
            let out = root.join(format!("memory-tftp-{i}"));
            let port = node.tftp_port;
            async move {
                let mut command = tokio::process::Command::new(atftp);
                command
                    .args(ATFTP_OPTIONS)
                    .args(["-g", "-r", &format!("firmware/{FIRMWARE}"), "-l"])
                    .arg(&out);
                command.args(["127.0.0.1", &port.to_string()]);
                run_client(command, Duration::from_secs(500), "atftp").await?;
                let path = out.clone();
                let result = tokio::task::spawn_blocking(move || -> Result<(u64, String)> {
                    Ok((std::fs::metadata(&path)?.len(), sha256_file(&path)?))
                })
                .await?;
                let _ = std::fs::remove_file(&out);
                result
            }
        })
        .collect();
    let tftp_memory = measure_memory(pid, downloads, size, digest).await?;
    print_memory("TFTP (atftp)", &tftp_memory);
    node.proc.check_running()?;

    Ok((http_memory, tftp_memory))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK_OUTPUT: &str = "Running 10s test @ http://127.0.0.1:8080/config.json
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   571.74us  400.12us  12.01ms   88.00%
    Req/Sec    55.62k     3.90k   63.40k    71.00%
  Latency Distribution
     50%  463.00us
     75%  614.00us
     90%  893.00us
     99%    2.26ms
  1106883 requests in 10.00s, 1.19GB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec: 110591.17
Transfer/sec:    121.58MB
";

    #[test]
    fn wrk_reports_are_parsed() {
        let report = parse_wrk(WRK_OUTPUT).unwrap();
        assert_eq!(report.requests_per_second, 110591.17);
        assert_eq!(report.requests, 1_106_883);
        assert_eq!(report.p50, Some(Duration::from_micros(463)));
        assert_eq!(report.p99, Some(Duration::from_micros(2260)));
        assert_eq!((report.non_2xx, report.socket_errors), (5, 3));
        let clean = "  10 requests in 1.00s, 1KB read\nRequests/sec:     10.00\n";
        let report = parse_wrk(clean).unwrap();
        assert_eq!((report.requests, report.non_2xx, report.socket_errors, report.p50), (10, 0, 0, None));
        assert!(parse_wrk("unable to connect to 127.0.0.1:1 Connection refused").is_none());
        assert_eq!(parse_wrk_duration("1.50s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_wrk_duration("2.00m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_wrk_duration("12"), None);
        assert_eq!(parse_wrk_duration("3.0xs"), None);
    }

    #[test]
    fn proc_status_fields_are_parsed() {
        let status =
            "Name:\ttandem\nVmPeak:\t 1234568 kB\nVmHWM:\t   81234 kB\nVmRSS:\t   40960 kB\nThreads:\t12\n";
        assert_eq!(parse_status_field(status, "VmHWM"), Some(81234 * 1024));
        assert_eq!(parse_status_field(status, "VmRSS"), Some(40 << 20));
        assert_eq!(parse_status_field(status, "VmSwap"), None);
        // A field whose name only starts the same is not taken.
        assert_eq!(parse_status_field("VmRSSX:\t1 kB\n", "VmRSS"), None);
        assert_eq!(parse_status_field("VmRSS:\tlots kB\n", "VmRSS"), None);
    }

    #[test]
    fn medians_and_images() {
        let ms = Duration::from_millis;
        assert_eq!(median(&[ms(30), ms(10), ms(20)]), ms(20));
        assert_eq!(median(&[ms(5)]), ms(5));
        assert_eq!(median(&[]), Duration::ZERO);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image");
        let digest = write_image(&path, 100_003).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 100_003);
        assert_eq!(sha256_file(&path).unwrap(), digest);
    }
}

//! `tandem bench boot --storm`: the morning after a power cut — every terminal of a plant boots at once.
//!
//! One node (default limits: `[limits.boot]`, `[limits.tftp]`, all on) serves a `--storm-size-mib` image
//! (32 MiB) to `--storm-http` terminals over HTTP (500) and `--storm-tftp` terminals over TFTP (200, blksize
//! 1468, windowsize 16), all started at the same instant; then the same storm hits nginx (HTTP) and the
//! reference TFTP server (atftpd) serving the same file. Storms alternate, `--runs` each. Printed per storm:
//! the aggregate throughput of each protocol (its bytes over the time until its last terminal finished), the
//! terminals' boot times (p50, p99, max), refusals ("server busy", retried as a terminal would), the node's
//! peak RSS; then the ratios of the medians, beside the goals (≥ 0.9x nginx, ≥ 0.9x atftpd, peak RSS <
//! 250 MiB).
//!
//! **The terminals** are tasks of this process, each on a loopback address of its own (`127.1.X.Y` for HTTP,
//! `127.2.X.Y` for TFTP), as a plant's terminals have addresses of their own: so the per-address caps hold
//! each terminal, not the benchmark. Every download is hashed as it arrives and checked against the image's
//! SHA-256; a terminal that gets "server busy" or no answer waits 1–2 s and starts again (at most
//! [`MAX_ATTEMPTS`] times, within [`STORM_LIMIT`]), as thin-client loaders do. The TFTP terminal is
//! [`tftp_fetch`]: RFC 1350 with blksize, tsize and windowsize (RFC 7440), acknowledging the last block of
//! each window and re-acknowledging the last block it has after a second of silence.
//!
//! On two cores the terminals' own work (700 sockets, hashing 22 GB per storm) competes with the servers for
//! the CPU alike for both sides, so the ratios mean more than the absolute figures.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};

use super::boot::{self as common, BootBenchOptions, FIRMWARE};

/// Attempts per terminal before it counts as failed.
pub const MAX_ATTEMPTS: u32 = 50;
/// The longest one storm may take.
pub const STORM_LIMIT: Duration = Duration::from_secs(600);
/// A TFTP terminal's silence before it acknowledges again (and, after [`TFTP_GIVE_UP`] of them, starts over).
const TFTP_SILENCE: Duration = Duration::from_secs(1);
const TFTP_GIVE_UP: u32 = 5;
const TFTP_BLOCK: usize = 1468;
const TFTP_WINDOW: u16 = 16;
/// The goals.
const GOAL_RATIO: f64 = 0.9;
const GOAL_PEAK_MIB: f64 = 250.0;

/// One terminal's boot: how long it took from the storm's start, and how many times it was refused or had to
/// start over.
#[derive(Debug, Clone, Copy)]
struct Boot {
    took: Duration,
    retries: u32,
}

/// One protocol's part of a storm.
#[derive(Debug, Default)]
struct ProtocolResult {
    boots: Vec<Boot>,
    failures: Vec<String>,
    bytes: u64,
}

impl ProtocolResult {
    /// Aggregate MiB/s: every byte delivered over the time until the last terminal finished.
    fn throughput(&self) -> f64 {
        let last = self.boots.iter().map(|b| b.took).max().unwrap_or_default();
        if last.is_zero() { 0.0 } else { common::mib(self.bytes) / last.as_secs_f64() }
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut times: Vec<Duration> = self.boots.iter().map(|b| b.took).collect();
        times.sort();
        if times.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * times.len() as f64).ceil() as usize;
        times[rank.clamp(1, times.len()) - 1]
    }

    fn retries(&self) -> u32 {
        self.boots.iter().map(|b| b.retries).sum()
    }
}

/// Where one storm sends its terminals.
#[derive(Debug, Clone)]
struct Target {
    http: SocketAddr,
    http_path: String,
    tftp: SocketAddr,
    tftp_file: String,
}

/// The source address of terminal `index` of `protocol` (1 = HTTP, 2 = TFTP): `127.P.X.Y`, Y in 1..=250.
fn terminal_address(protocol: u8, index: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, protocol, (index / 250) as u8, (index % 250) as u8 + 1)
}

/// A terminal's pause before it tries again: 1–2 s, spread by its index.
fn backoff(index: usize, attempt: u32) -> Duration {
    Duration::from_millis(1000 + ((index as u64 * 7919 + attempt as u64 * 104_729) % 1000))
}

/// One HTTP terminal: `GET` the image on a connection from its own address, hash it as it arrives.
async fn http_fetch(source: Ipv4Addr, target: &Target) -> Result<(u64, String)> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.into(), 0))?;
    let mut stream = socket.connect(target.http).await?;
    stream.set_nodelay(true)?;
    let request =
        format!("GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", target.http_path, target.http);
    stream.write_all(request.as_bytes()).await?;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut head = Vec::new();
    let body_start = loop {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            bail!("the server closed the connection before the response head ended");
        }
        head.extend_from_slice(&buffer[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if head.len() > 64 * 1024 {
            bail!("a response head over 64 KiB");
        }
    };
    let text = String::from_utf8_lossy(&head[..body_start]).to_string();
    let status = text.split_whitespace().nth(1).unwrap_or("?");
    if status != "200" {
        bail!("HTTP {status}");
    }
    let mut hasher = Sha256::new();
    hasher.update(&head[body_start..]);
    let mut total = (head.len() - body_start) as u64;
    loop {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        total += n as u64;
    }
    Ok((total, format!("{:x}", hasher.finalize())))
}

/// Why a TFTP attempt ended without the file.
#[derive(Debug, thiserror::Error)]
enum TftpFailure {
    /// ERROR from the server ("server busy" among others): try again later.
    #[error("refused: {0}")]
    Refused(String),
    /// No packet for [`TFTP_GIVE_UP`] silences.
    #[error("no answer")]
    Silent,
    /// Anything else (malformed packets, socket errors).
    #[error("{0}")]
    Broken(String),
}

/// One TFTP terminal (RFC 1350 + 2347/2348/2349 + 7440): read `file` with blksize 1468 and windowsize 16,
/// hashing the blocks in order; returns (bytes, sha256).
async fn tftp_fetch(source: Ipv4Addr, server: SocketAddr, file: &str) -> Result<(u64, String), TftpFailure> {
    let broken = |e: std::io::Error| TftpFailure::Broken(e.to_string());
    let socket = UdpSocket::bind(SocketAddr::new(source.into(), 0)).await.map_err(broken)?;
    let mut request = vec![0, 1];
    let window = TFTP_WINDOW.to_string();
    let block = TFTP_BLOCK.to_string();
    for part in [file, "octet", "blksize", block.as_str(), "windowsize", window.as_str(), "tsize", "0"] {
        request.extend_from_slice(part.as_bytes());
        request.push(0);
    }
    socket.send_to(&request, server).await.map_err(broken)?;
    let mut peer: Option<SocketAddr> = None;
    let mut block_size = 512usize;
    let mut window_size: u16 = 1;
    let mut last_in_order: u16 = 0;
    let mut since_ack: u16 = 0;
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut silences = 0;
    let mut buffer = vec![0u8; 65536];
    loop {
        let received = tokio::time::timeout(TFTP_SILENCE, socket.recv_from(&mut buffer)).await;
        let (n, from) = match received {
            Err(_) => {
                silences += 1;
                if silences >= TFTP_GIVE_UP {
                    return Err(TftpFailure::Silent);
                }
                // Ask again from the last block in order (or the request itself, before any answer).
                match peer {
                    Some(peer) => {
                        let ack = [0, 4, (last_in_order >> 8) as u8, last_in_order as u8];
                        socket.send_to(&ack, peer).await.map_err(broken)?;
                    }
                    None => {
                        socket.send_to(&request, server).await.map_err(broken)?;
                    }
                }
                continue;
            }
            Ok(result) => result.map_err(broken)?,
        };
        if from.ip() != server.ip() || peer.is_some_and(|p| p != from) {
            continue;
        }
        silences = 0;
        peer = Some(from);
        let packet = &buffer[..n];
        if packet.len() < 4 {
            return Err(TftpFailure::Broken("a packet shorter than 4 bytes".into()));
        }
        match u16::from_be_bytes([packet[0], packet[1]]) {
            6 => {
                let fields: Vec<&[u8]> = packet[2..].split(|b| *b == 0).collect();
                for pair in fields.chunks(2) {
                    if let [name, value] = pair {
                        let value = std::str::from_utf8(value).ok().and_then(|v| v.parse::<u64>().ok());
                        match (name.to_ascii_lowercase().as_slice(), value) {
                            (b"blksize", Some(v)) => block_size = v as usize,
                            (b"windowsize", Some(v)) => window_size = v.max(1) as u16,
                            _ => {}
                        }
                    }
                }
                socket.send_to(&[0, 4, 0, 0], from).await.map_err(broken)?;
            }
            3 => {
                let number = u16::from_be_bytes([packet[2], packet[3]]);
                let data = &packet[4..];
                if number == last_in_order.wrapping_add(1) {
                    hasher.update(data);
                    total += data.len() as u64;
                    last_in_order = number;
                    since_ack += 1;
                    let last = data.len() < block_size;
                    if last || since_ack >= window_size {
                        let ack = [0, 4, packet[2], packet[3]];
                        socket.send_to(&ack, from).await.map_err(broken)?;
                        since_ack = 0;
                    }
                    if last {
                        return Ok((total, format!("{:x}", hasher.finalize())));
                    }
                } else if number != last_in_order {
                    // A gap: acknowledge what we have, so the server sends again from there.
                    let ack = [0, 4, (last_in_order >> 8) as u8, last_in_order as u8];
                    socket.send_to(&ack, from).await.map_err(broken)?;
                    since_ack = 0;
                }
            }
            5 => {
                let message = String::from_utf8_lossy(&packet[4..]).trim_end_matches('\0').to_string();
                return Err(TftpFailure::Refused(message));
            }
            other => return Err(TftpFailure::Broken(format!("a packet of type {other}"))),
        }
    }
}

/// What every terminal of a storm must get, and when the storm began and must end.
#[derive(Debug, Clone)]
struct Expected {
    size: u64,
    digest: String,
    started: Instant,
    deadline: Instant,
}

/// One terminal booting as a thin-client loader does: `fetch` the image, and on a refusal or no answer wait
/// 1–2 s and start again, at most [`MAX_ATTEMPTS`] times and never past the storm's deadline. An image with
/// other bytes fails at once.
async fn boot_terminal<F, Fut>(
    index: usize,
    source: Ipv4Addr,
    expected: &Expected,
    fetch: F,
) -> Result<Boot, String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(u64, String), String>>,
{
    let mut last = String::new();
    for attempt in 0..MAX_ATTEMPTS {
        let remaining = expected.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        match tokio::time::timeout(remaining, fetch()).await {
            Ok(Ok((bytes, got))) if bytes == expected.size && got == expected.digest => {
                return Ok(Boot { took: expected.started.elapsed(), retries: attempt });
            }
            Ok(Ok((bytes, got))) => {
                return Err(format!(
                    "{source}: {bytes} bytes with sha256 {got} (expected {}, {})",
                    expected.size, expected.digest
                ));
            }
            Ok(Err(error)) => last = error,
            Err(_) => last = "the storm's time limit passed".into(),
        }
        tokio::time::sleep(backoff(index, attempt)).await;
    }
    Err(format!("{source}: no image after {MAX_ATTEMPTS} attempts; last: {last}"))
}

/// Runs one storm against `target`: every terminal starts at once; returns the HTTP and the TFTP part.
async fn storm(
    target: &Target,
    http_terminals: usize,
    tftp_terminals: usize,
    size: u64,
    digest: &str,
) -> Result<(ProtocolResult, ProtocolResult)> {
    let started = Instant::now();
    let deadline = started + STORM_LIMIT;
    let expected = Expected { size, digest: digest.to_string(), started, deadline };
    let http_tasks: Vec<_> = (0..http_terminals)
        .map(|index| {
            let (target, expected) = (target.clone(), expected.clone());
            let source = terminal_address(1, index);
            tokio::spawn(async move {
                let fetch = || async { http_fetch(source, &target).await.map_err(|e| e.to_string()) };
                boot_terminal(index, source, &expected, fetch).await
            })
        })
        .collect();
    let tftp_tasks: Vec<_> = (0..tftp_terminals)
        .map(|index| {
            let (target, expected) = (target.clone(), expected.clone());
            let source = terminal_address(2, index);
            tokio::spawn(async move {
                let fetch = || async {
                    tftp_fetch(source, target.tftp, &target.tftp_file).await.map_err(|e| e.to_string())
                };
                boot_terminal(index, source, &expected, fetch).await
            })
        })
        .collect();
    let collect = |results: Vec<Result<Result<Boot, String>, tokio::task::JoinError>>| {
        let mut part = ProtocolResult::default();
        for result in results {
            match result {
                Ok(Ok(boot)) => {
                    part.bytes += size;
                    part.boots.push(boot);
                }
                Ok(Err(failure)) => part.failures.push(failure),
                Err(error) => part.failures.push(format!("a terminal task failed: {error}")),
            }
        }
        part
    };
    let http = collect(futures_util::future::join_all(http_tasks).await);
    let tftp = collect(futures_util::future::join_all(tftp_tasks).await);
    Ok((http, tftp))
}

fn print_part(label: &str, part: &ProtocolResult, terminals: usize) {
    let ms = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1e3);
    println!(
        "    {label:<5} {:>4}/{terminals} verified, {:>7.1} MiB/s aggregate; boot time p50 {} ms, p99 {} ms, max {} ms; {} retries",
        part.boots.len(),
        part.throughput(),
        ms(part.percentile(50.0)),
        ms(part.percentile(99.0)),
        ms(part.percentile(100.0)),
        part.retries()
    );
    for failure in part.failures.iter().take(5) {
        println!("      failed: {failure}");
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() { 0.0 } else { values[values.len() / 2] }
}

/// Runs the storm benchmark in a temporary directory (kept with `--keep`) and prints its figures.
pub async fn storm_bench(options: &BootBenchOptions) -> Result<()> {
    if options.runs == 0 || options.storm_size_mib == 0 {
        bail!("--runs and --storm-size-mib must be at least 1");
    }
    let dir = tempfile::tempdir()?;
    let result = run(options, dir.path()).await;
    if options.keep {
        println!("kept the node's data and the servers' logs in {}", dir.keep().display());
    } else if result.is_err() {
        eprintln!("(run with --keep to keep the logs of the node and the reference servers)");
    }
    result
}

async fn run(options: &BootBenchOptions, root: &Path) -> Result<()> {
    let programs = common::find_programs()?;
    let (http_terminals, tftp_terminals) = (options.storm_http, options.storm_tftp);
    if http_terminals > 250 * 256 || tftp_terminals > 250 * 256 {
        bail!("at most 64,000 terminals per protocol (one loopback address each)");
    }
    std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let www = root.join("www");
    std::fs::create_dir_all(www.join("firmware"))?;
    let size = options.storm_size_mib << 20;
    let image = www.join("firmware").join(FIRMWARE);
    let digest = {
        let image = image.clone();
        tokio::task::spawn_blocking(move || common::write_image(&image, size)).await??
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "tandem bench boot --storm: {http_terminals} HTTP + {tftp_terminals} TFTP terminals (blksize {TFTP_BLOCK}, windowsize {TFTP_WINDOW}) fetch a {} MiB image at once; {} storms per side, alternating; {} cores; load average {}",
        options.storm_size_mib,
        options.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let mut node = common::start_node(root, false).await?;
    let config = common::provision(&node, &image, size).await?;
    std::fs::write(www.join("config.json"), &config)?;
    let (nginx, nginx_port) = common::start_nginx(&programs, root, &www).await?;
    let (reference, reference_port) = common::start_reference_tftp(&programs, root, &www).await?;
    let reference_name = programs.reference_tftp.name();
    println!(
        "  node with its default limits ([limits.boot] {} connections, {} per address; [limits.tftp] {} transfers, {} per address); nginx and {reference_name} as configured for `bench boot`",
        crate::limits::HttpLimits::BOOT_DEFAULTS.max_connections,
        crate::limits::HttpLimits::BOOT_DEFAULTS.max_connections_per_source,
        crate::limits::TftpLimits::default().max_transfers,
        crate::limits::TftpLimits::default().max_transfers_per_source,
    );
    let node_target = Target {
        http: node.boot.parse()?,
        http_path: format!("/boot/v1/firmware/{FIRMWARE}"),
        tftp: SocketAddr::from(([127, 0, 0, 1], node.tftp_port)),
        tftp_file: format!("firmware/{FIRMWARE}"),
    };
    let reference_target = Target {
        http: SocketAddr::from(([127, 0, 0, 1], nginx_port)),
        http_path: format!("/firmware/{FIRMWARE}"),
        tftp: SocketAddr::from(([127, 0, 0, 1], reference_port)),
        tftp_file: format!("firmware/{FIRMWARE}"),
    };
    let (mut node_http, mut node_tftp, mut ref_http, mut ref_tftp, mut peaks) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut failed = 0;
    for run in 1..=options.runs {
        let pid = node.proc.pid();
        common::reset_hwm(pid);
        let sampler = tokio::spawn(async move {
            let mut peak = 0;
            for _ in 0..(STORM_LIMIT.as_millis() / 50) {
                match common::read_status(pid).ok().and_then(|s| common::parse_status_field(&s, "VmRSS")) {
                    Some(rss) => peak = peak.max(rss),
                    None => break,
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            peak
        });
        let (http, tftp) = storm(&node_target, http_terminals, tftp_terminals, size, &digest).await?;
        sampler.abort();
        node.proc.check_running().context("the node died in the storm (see node.log)")?;
        let hwm =
            common::read_status(pid).ok().and_then(|s| common::parse_status_field(&s, "VmHWM")).unwrap_or(0);
        println!(
            "  storm {run} on tandem: node peak RSS {:.1} MiB (VmHWM since the storm began)",
            common::mib(hwm)
        );
        print_part("HTTP", &http, http_terminals);
        print_part("TFTP", &tftp, tftp_terminals);
        failed += http.failures.len() + tftp.failures.len();
        node_http.push(http.throughput());
        node_tftp.push(tftp.throughput());
        peaks.push(common::mib(hwm));

        let (http, tftp) = storm(&reference_target, http_terminals, tftp_terminals, size, &digest).await?;
        println!("  storm {run} on nginx + {reference_name}:");
        print_part("HTTP", &http, http_terminals);
        print_part("TFTP", &tftp, tftp_terminals);
        failed += http.failures.len() + tftp.failures.len();
        ref_http.push(http.throughput());
        ref_tftp.push(tftp.throughput());
    }
    drop((nginx, reference));
    let http_ratio = median(&mut node_http) / median(&mut ref_http).max(f64::MIN_POSITIVE);
    let tftp_ratio = median(&mut node_tftp) / median(&mut ref_tftp).max(f64::MIN_POSITIVE);
    let peak = peaks.iter().copied().fold(0.0, f64::max);
    println!(
        "summary: HTTP {http_ratio:.2}x nginx (goal >= {GOAL_RATIO}x: {}), TFTP {tftp_ratio:.2}x {reference_name} (goal >= {GOAL_RATIO}x: {}), node peak RSS {peak:.0} MiB (goal < {GOAL_PEAK_MIB:.0} MiB: {}); {failed} terminals without a verified image",
        common::verdict(http_ratio >= GOAL_RATIO),
        common::verdict(tftp_ratio >= GOAL_RATIO),
        common::verdict(peak < GOAL_PEAK_MIB),
    );
    drop(node);
    if failed > 0 {
        bail!("{failed} terminals did not get a verified image");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminals_get_addresses_of_their_own() {
        assert_eq!(terminal_address(1, 0), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(terminal_address(2, 249), Ipv4Addr::new(127, 2, 0, 250));
        assert_eq!(terminal_address(1, 250), Ipv4Addr::new(127, 1, 1, 1));
        let all: std::collections::BTreeSet<Ipv4Addr> = (0..700).map(|i| terminal_address(1, i)).collect();
        assert_eq!(all.len(), 700);
    }

    #[test]
    fn percentiles_and_throughput() {
        let part = ProtocolResult {
            boots: (1..=100).map(|ms| Boot { took: Duration::from_millis(ms * 10), retries: 1 }).collect(),
            failures: Vec::new(),
            bytes: 100 << 20,
        };
        assert_eq!(part.percentile(50.0), Duration::from_millis(500));
        assert_eq!(part.percentile(99.0), Duration::from_millis(990));
        assert_eq!(part.percentile(100.0), Duration::from_millis(1000));
        assert!((part.throughput() - 100.0).abs() < 1e-9);
        assert_eq!(part.retries(), 100);
        assert!(backoff(3, 2) >= Duration::from_secs(1) && backoff(3, 2) < Duration::from_secs(2));
    }
}

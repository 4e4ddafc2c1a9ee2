//! `tandem bench cluster --vs-etcd`: Tandem's pair + witness side by side with a three-member etcd 3.4 on
//! this machine, under the same closed-loop HTTP load (issue 9, item 7).
//!
//! **What runs.** etcd: Debian's `etcd-server` 3.4 (installed with `apt-get`, together with `etcd-client`, when
//! `etcd` is not on the PATH), three members on free 127.0.0.1 ports with default settings, their data
//! directories in the same temporary directory as Tandem's nodes, so on the same disk. Tandem: a + b (data) + w
//! (witness), started and formed as plain `bench cluster` does. Nothing listens beyond loopback.
//!
//! **Load.** The closed-loop clients of [`super::cluster::closed_loop`] (one keep-alive HTTP/1.1 connection
//! per client, one request at a time), at each `--clients` count. etcd: `POST /v3/kv/put` on its JSON gateway
//! with `{"key": base64, "value": base64}`; Tandem: `PUT /v1/docs/bench/…`. Both write the same key names and
//! the same 256-byte value (a JSON document `{"v":"xx…"}`, which is what Tandem stores). Both are driven at
//! their **leader**, looked up before every run (etcd: `/v3/maintenance/status` of each member): an etcd
//! follower forwards a put to the leader over gRPC, one more round trip that Tandem's clients, also sent to
//! the leader, do not pay either; so both figures are those of the leader's write path. Runs are interleaved:
//! per client count, `--runs` rounds (default 3) of etcd then Tandem, after a 1 s warm-up of each, so that
//! noise from other work on the machine hits both.
//!
//! **Figures** per client count: throughput over all rounds together (acknowledged writes / seconds of load)
//! and the range of the per-round ratios; p50 and p99 over the latencies of all rounds; the goals of the issue
//! (Tandem ≥ 1.5x etcd's throughput, a p99 no higher than etcd's, 1-client p50 ≤ 0.6 ms) marked met or not.
//!
//! **CPU per write**: utime + stime (all threads) of every process of a system, read from `/proc/<pid>/stat`
//! before and after each run, divided by the writes acknowledged in it. The load generator (this process) is
//! counted for neither.
//!
//! **fsyncs**: `fsync`, `fdatasync` and `sync_file_range` calls (sled flushes with the last one) counted with
//! `perf record -a` on the `syscalls:sys_enter_*` tracepoints during each measured run, kept for the process
//! ids of the system under load (`perf script -F pid`). Chosen over the alternatives because it counts in the
//! measured runs themselves at a cost of well under a microsecond per call, the same for both systems:
//! `/proc/<pid>/io` has no fsync counter; `strace -f -c -p` stops the process at every system call (ptrace;
//! its seccomp filter works only for a process strace starts), which slows both systems several-fold, so it
//! would need separate counting runs whose rates are not those measured; `perf stat -p` counts only the
//! threads present when it attaches, and Tandem's blocking-pool threads come and go. Needs `perf` and root
//! (or a permissive `perf_event_paranoid` and tracefs access); without them the fsyncs are reported as not
//! measured. The count window is the run plus ~1.5 s around it; both systems are idle then.
//! Enabling any `syscalls:` tracepoint puts every system call of every process on the kernel's tracing path,
//! so the calls are counted in one extra round per system and client count, after the measured rounds, whose
//! throughput is printed but kept out of the totals (`--no-fsync-count` skips it). Measured on this machine
//! with counting inside the measured rounds, the 64-client ratio read 1.20x and 1.40x in two runs, and
//! without it 1.47x twice (2026-12-04): the counter cost Tandem, whose writes make more system calls, more.
//!
//! Everything is bounded (health and leader waits, 10 s per request, `timeout` around apt-get), and every
//! process this starts is killed when it ends: on success, on error, and on ctrl-c.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hyper::Method;
use serde_json::{Value, json};

use super::cluster::{
    BenchNode, ClusterBenchOptions, Load, closed_loop, leader_index, percentile, start_pair,
};
use crate::client::ApiClient;

/// Size of the value every put writes.
const VALUE_BYTES: usize = 256;

/// Runs the side-by-side benchmark; ctrl-c stops it and every process it started.
pub async fn vs_etcd(options: &ClusterBenchOptions) -> Result<()> {
    tokio::select! {
        result = run(options) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted: the etcd members and Tandem nodes were stopped"),
    }
}

async fn run(options: &ClusterBenchOptions) -> Result<()> {
    let etcd_version = ensure_etcd()?;
    let dir = tempfile::tempdir()?;
    let root = dir.path().to_path_buf();
    let seconds = Duration::from_secs(options.seconds);
    let rounds = options.runs.unwrap_or(3).max(1);
    println!("tandem bench cluster --vs-etcd, in {} (etcd and Tandem data on the same disk)", root.display());
    println!("machine: {} cores, load average {}", cores(), load_average());

    let etcd = EtcdCluster::start(&root).await?;
    let nodes = start_pair(&root).await?;
    println!("etcd {etcd_version}: 3 members on 127.0.0.1; Tandem: a + b (data) + w (witness) on 127.0.0.1");
    let fsyncs =
        if options.no_fsync_count { Err("--no-fsync-count".to_string()) } else { FsyncCounter::check(&root) };
    match &fsyncs {
        Ok(()) => {
            println!("fsyncs: counted with perf tracepoints (fsync, fdatasync, sync_file_range) per run")
        }
        Err(why) => println!("fsyncs: not measured ({why})"),
    }
    let fsyncs = fsyncs.is_ok();
    println!(
        "load: closed loop, keep-alive HTTP, {VALUE_BYTES}-byte values, to each system's leader; {} s per run, \
         {rounds} round(s) of (etcd, tandem) per client count",
        options.seconds
    );

    // Warm-up: connections, allocations, the first segment / WAL files.
    let value = value_document();
    run_one(System::Etcd, &etcd, &nodes, 16, Duration::from_secs(1), "warmup", &value, &root, false).await?;
    run_one(System::Tandem, &etcd, &nodes, 16, Duration::from_secs(1), "warmup", &value, &root, false)
        .await?;

    let mut summaries = Vec::new();
    for &clients in &options.clients {
        let mut totals = [Totals::default(), Totals::default()];
        for round in 1..=rounds {
            for system in [System::Etcd, System::Tandem] {
                let tag = format!("r{round}");
                let figures =
                    run_one(system, &etcd, &nodes, clients, seconds, &tag, &value, &root, false).await?;
                println!(
                    "{clients:>3} clients round {round} {:<6} {:>7.0} puts/s  p50 {:>6.2} ms  p99 {:>6.2} ms  \
                     CPU {:>4.0} µs/put{}",
                    system.name(),
                    figures.load.per_second(),
                    ms(percentile(&figures.load.latencies, 0.50)),
                    ms(percentile(&figures.load.latencies, 0.99)),
                    figures.cpu_seconds * 1e6 / figures.load.latencies.len().max(1) as f64,
                    if figures.load.failures > 0 {
                        format!("  ({} failed)", figures.load.failures)
                    } else {
                        String::new()
                    },
                );
                totals[system as usize].add(figures);
            }
        }
        if fsyncs {
            // Counted in a round of their own: the tracepoints slow every system call while they are on.
            for system in [System::Etcd, System::Tandem] {
                let figures =
                    run_one(system, &etcd, &nodes, clients, seconds, "count", &value, &root, true).await?;
                println!(
                    "{clients:>3} clients fsync-counting round {:<6} {:>7.0} puts/s (not in the totals)",
                    system.name(),
                    figures.load.per_second(),
                );
                totals[system as usize].counted(&figures);
            }
        }
        summaries.push((clients, totals));
    }

    print_summary(&mut summaries, fsyncs);

    drop(nodes);
    drop(etcd);
    if options.keep {
        println!("kept the data and logs of both systems in {}", dir.keep().display());
    }
    Ok(())
}

/// Prints, per client count, both systems' figures over all rounds beside the goals, and how many are met.
fn print_summary(summaries: &mut [(usize, [Totals; 2])], fsyncs: bool) {
    println!();
    println!("summary (all rounds together; ratio = tandem / etcd; load average now {})", load_average());
    let mut met = 0;
    let mut goals = 0;
    for (clients, [etcd_totals, tandem_totals]) in summaries.iter_mut() {
        etcd_totals.latencies.sort();
        tandem_totals.latencies.sort();
        let ratio = tandem_totals.per_second() / etcd_totals.per_second();
        let round_ratios: Vec<f64> =
            tandem_totals.rounds.iter().zip(&etcd_totals.rounds).map(|(t, e)| t / e).collect();
        let lowest = round_ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let highest = round_ratios.iter().copied().fold(0.0, f64::max);
        let p50 = |t: &Totals| ms(percentile(&t.latencies, 0.50));
        let p99 = |t: &Totals| ms(percentile(&t.latencies, 0.99));
        let mark = |ok: bool| if ok { "met" } else { "NOT met" };
        println!("{clients} client{}:", if *clients == 1 { "" } else { "s" });
        let throughput_ok = ratio >= 1.5;
        println!(
            "  throughput  etcd {:>7.0} puts/s   tandem {:>7.0} puts/s   ratio {ratio:.2}x (rounds {lowest:.2}–{highest:.2}x)   \
             goal ≥ 1.50x: {}",
            etcd_totals.per_second(),
            tandem_totals.per_second(),
            mark(throughput_ok)
        );
        let p50_ok = p50(tandem_totals) <= 0.6;
        println!(
            "  p50         etcd {:>7.2} ms       tandem {:>7.2} ms{}",
            p50(etcd_totals),
            p50(tandem_totals),
            if *clients == 1 {
                format!("                                      goal ≤ 0.60 ms: {}", mark(p50_ok))
            } else {
                String::new()
            }
        );
        let p99_ok = p99(tandem_totals) <= p99(etcd_totals);
        println!(
            "  p99         etcd {:>7.2} ms       tandem {:>7.2} ms                                      goal ≤ etcd's: {}",
            p99(etcd_totals),
            p99(tandem_totals),
            mark(p99_ok)
        );
        println!(
            "  CPU         etcd {:>7.0} µs/put   tandem {:>7.0} µs/put   (all processes: etcd {:.2} cores, tandem {:.2} cores)",
            etcd_totals.cpu_per_write_us(),
            tandem_totals.cpu_per_write_us(),
            etcd_totals.cores(),
            tandem_totals.cores()
        );
        if fsyncs {
            println!("  fsyncs      etcd   {}", etcd_totals.fsync_figures());
            println!("              tandem {}", tandem_totals.fsync_figures());
        }
        if etcd_totals.failures + tandem_totals.failures > 0 {
            println!("  failed      etcd {}   tandem {}", etcd_totals.failures, tandem_totals.failures);
        }
        goals += 2 + usize::from(*clients == 1);
        met += usize::from(throughput_ok) + usize::from(p99_ok) + usize::from(*clients == 1 && p50_ok);
    }
    println!("goals met: {met} of {goals}");
}

#[derive(Clone, Copy, Debug)]
enum System {
    Etcd = 0,
    Tandem = 1,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Etcd => "etcd",
            System::Tandem => "tandem",
        }
    }
}

/// One measured run.
#[derive(Debug)]
struct Figures {
    load: Load,
    cpu_seconds: f64,
    /// Calls of each of [`FSYNC_EVENTS`].
    fsyncs: Option<[u64; 3]>,
}

/// One system's runs at one client count, together.
#[derive(Debug, Default)]
struct Totals {
    latencies: Vec<Duration>,
    failures: u64,
    seconds: f64,
    cpu_seconds: f64,
    /// Throughput of each round, in order.
    rounds: Vec<f64>,
    /// The fsync-counting round: calls of each of [`FSYNC_EVENTS`], writes, seconds.
    fsyncs: Option<([u64; 3], usize, f64)>,
}

impl Totals {
    fn add(&mut self, figures: Figures) {
        self.rounds.push(figures.load.per_second());
        self.latencies.extend(figures.load.latencies);
        self.failures += figures.load.failures;
        self.seconds += figures.load.elapsed.as_secs_f64();
        self.cpu_seconds += figures.cpu_seconds;
    }

    /// Keeps the fsync counts of `figures`, a round measured with the counter on.
    fn counted(&mut self, figures: &Figures) {
        if let Some(calls) = figures.fsyncs {
            self.fsyncs = Some((calls, figures.load.latencies.len(), figures.load.elapsed.as_secs_f64()));
        }
    }

    fn writes(&self) -> usize {
        self.latencies.len()
    }

    fn per_second(&self) -> f64 {
        self.writes() as f64 / self.seconds
    }

    fn cpu_per_write_us(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.writes().max(1) as f64
    }

    fn cores(&self) -> f64 {
        self.cpu_seconds / self.seconds
    }

    /// "N /s (x.xx/put: fdatasync a, fsync b, sync_file_range c)", per put by kind of call, from the
    /// fsync-counting round.
    fn fsync_figures(&self) -> String {
        let Some((calls, writes, seconds)) = self.fsyncs else { return "not counted".into() };
        let per_put = |n: u64| n as f64 / writes.max(1) as f64;
        let total: u64 = calls.iter().sum();
        let kinds: Vec<String> = FSYNC_EVENTS
            .iter()
            .zip(calls)
            .filter(|(_, n)| *n > 0)
            .map(|(event, n)| {
                format!("{} {:.2}", event.trim_start_matches("syscalls:sys_enter_"), per_put(n))
            })
            .collect();
        format!("{:>5.0} /s ({:.2}/put: {})", total as f64 / seconds, per_put(total), kinds.join(", "))
    }
}

/// One closed-loop run of `clients` against `system`'s leader, with its CPU and (if `count_fsyncs`) fsyncs.
#[allow(clippy::too_many_arguments)]
async fn run_one(
    system: System,
    etcd: &EtcdCluster,
    nodes: &[BenchNode; 3],
    clients: usize,
    duration: Duration,
    tag: &str,
    value: &Value,
    root: &Path,
    count_fsyncs: bool,
) -> Result<Figures> {
    let (target, pids) = match system {
        System::Etcd => (etcd.members[etcd.leader().await?].client_url.clone(), etcd.pids()),
        System::Tandem => {
            (nodes[leader_index(nodes).await?].api.clone(), nodes.iter().filter_map(BenchNode::pid).collect())
        }
    };
    let counter = if count_fsyncs { Some(FsyncCounter::start(root, duration).await?) } else { None };
    let cpu_before = cpu_seconds(&pids)?;
    let prefix = format!("bench/{tag}-{clients}");
    let load = match system {
        System::Etcd => {
            let value = base64(serde_json::to_string(value)?.as_bytes());
            closed_loop(&target, clients, duration, move |c, n| {
                let key = base64(format!("{prefix}-c{c}-{n}").as_bytes());
                (Method::POST, "/v3/kv/put".to_string(), json!({"key": key, "value": value}))
            })
            .await?
        }
        System::Tandem => {
            let value = value.clone();
            closed_loop(&target, clients, duration, move |c, n| {
                (Method::PUT, format!("/v1/docs/{prefix}-c{c}-{n}"), value.clone())
            })
            .await?
        }
    };
    let cpu_seconds = cpu_seconds(&pids)? - cpu_before;
    let fsyncs = match counter {
        Some(counter) => Some(counter.finish(&pids).await?),
        None => None,
    };
    if load.latencies.is_empty() {
        bail!("no {} put succeeded ({} failed) against {target}", system.name(), load.failures);
    }
    Ok(Figures { load, cpu_seconds, fsyncs })
}

/// The value every put writes: a JSON document of exactly [`VALUE_BYTES`] bytes.
fn value_document() -> Value {
    let value = json!({"v": "x".repeat(VALUE_BYTES - r#"{"v":""}"#.len())});
    debug_assert_eq!(serde_json::to_string(&value).map(|s| s.len()).ok(), Some(VALUE_BYTES));
    value
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Standard base64 with padding, as etcd's JSON gateway wants bytes.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Makes sure `etcd` can run, installing Debian's etcd 3.4 when it is missing; returns its version.
fn ensure_etcd() -> Result<String> {
    if version("etcd").is_none() {
        apt_install(&["etcd-server", "etcd-client"])?;
    }
    version("etcd").context("etcd is still missing after installing etcd-server")
}

/// The version `program --version` prints, if it runs.
fn version(program: &str) -> Option<String> {
    let output = Command::new(program).arg("--version").stdin(Stdio::null()).output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().find(|l| l.contains("ersion"))?;
    output.status.success().then(|| line.rsplit(' ').next().unwrap_or(line).trim().to_string())
}

/// `apt-get install` of Debian packages (with sudo when not root), bounded in time, saying what it installs.
fn apt_install(packages: &[&str]) -> Result<()> {
    println!("installing {} with apt-get (Debian packages)", packages.join(" "));
    let root = std::fs::read_to_string("/proc/self/status").ok().is_some_and(|s| {
        s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    });
    let apt = |args: &[&str]| -> Result<()> {
        let mut command = Command::new(if root { "timeout" } else { "sudo" });
        if !root {
            command.arg("timeout");
        }
        let status = command
            .args(["600", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-y", "-qq"])
            .args(args)
            .stdin(Stdio::null())
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("apt-get {} failed ({status})", args.join(" "));
        }
        Ok(())
    };
    apt(&["update"])?;
    let mut install = vec!["install"];
    install.extend_from_slice(packages);
    apt(&install)
}

/// One etcd member, killed when dropped.
#[derive(Debug)]
struct Member {
    client_url: String,
    child: Child,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three etcd members on loopback.
#[derive(Debug)]
struct EtcdCluster {
    members: Vec<Member>,
}

impl EtcdCluster {
    async fn start(root: &Path) -> Result<EtcdCluster> {
        let port = super::free_port;
        let names = ["e1", "e2", "e3"];
        let mut urls = Vec::new();
        for _ in names {
            urls.push((format!("http://127.0.0.1:{}", port()?), format!("http://127.0.0.1:{}", port()?)));
        }
        let initial_cluster: Vec<String> =
            names.iter().zip(&urls).map(|(name, (_, peer))| format!("{name}={peer}")).collect();
        let mut cluster = EtcdCluster { members: Vec::new() };
        for (name, (client_url, peer_url)) in names.iter().zip(&urls) {
            let log = std::fs::File::create(root.join(format!("{name}.log")))?;
            let child = Command::new("etcd")
                .args(["--name", name, "--data-dir"])
                .arg(root.join(name))
                .args(["--listen-client-urls", client_url, "--advertise-client-urls", client_url])
                .args(["--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url])
                .args(["--initial-cluster", &initial_cluster.join(",")])
                .args(["--initial-cluster-token", "tandem-bench", "--initial-cluster-state", "new"])
                .args(["--logger", "zap", "--log-outputs", "stderr"])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting etcd")?;
            cluster.members.push(Member { client_url: client_url.clone(), child });
        }
        // Healthy: every member answers /health with {"health":"true"} (it has a leader and can commit).
        let deadline = Instant::now() + Duration::from_secs(30);
        for (member, name) in cluster.members.iter().zip(names) {
            let client = ApiClient::new(&member.client_url, None).with_timeout(Duration::from_secs(2));
            loop {
                if let Ok((200, answer)) = client.send(Method::GET, "/health", None).await
                    && answer["health"] == "true"
                {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("etcd member {name} not healthy within 30 s (see {}/{name}.log)", root.display());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(cluster)
    }

    /// The index of the current leader (the member whose id is the leader id its status reports).
    async fn leader(&self) -> Result<usize> {
        for _ in 0..100 {
            for (index, member) in self.members.iter().enumerate() {
                let client = ApiClient::new(&member.client_url, None).with_timeout(Duration::from_secs(2));
                if let Ok((200, status)) =
                    client.send(Method::POST, "/v3/maintenance/status", Some(json!({}))).await
                    && status["leader"].is_string()
                    && status["leader"] == status["header"]["member_id"]
                {
                    return Ok(index);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("etcd has no leader")
    }

    fn pids(&self) -> Vec<u32> {
        self.members.iter().map(|m| m.child.id()).collect()
    }
}

/// Cores of this machine.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// utime + stime of the processes (all their threads), in seconds.
fn cpu_seconds(pids: &[u32]) -> Result<f64> {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    });
    let mut total = 0u64;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        // The command name (field 2) may hold spaces: count fields after its closing parenthesis. utime and
        // stime are fields 14 and 15, so the 12th and 13th after it.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).context("unexpected /proc/<pid>/stat")?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        for index in [11, 12] {
            total += fields.get(index).and_then(|f| f.parse::<u64>().ok()).context("no utime/stime")?;
        }
    }
    Ok(total as f64 / ticks)
}

const FSYNC_EVENTS: [&str; 3] =
    ["syscalls:sys_enter_fsync", "syscalls:sys_enter_fdatasync", "syscalls:sys_enter_sync_file_range"];

/// A system-wide `perf record` of the fsync tracepoints over one run.
#[derive(Debug)]
struct FsyncCounter {
    child: tokio::process::Child,
    file: PathBuf,
}

impl FsyncCounter {
    /// Whether perf can record the tracepoints here.
    fn check(root: &Path) -> std::result::Result<(), String> {
        let file = root.join("perf-check.data");
        let output = Command::new("perf")
            .args(["record", "-q", "-a", "-e", FSYNC_EVENTS[1], "-o"])
            .arg(&file)
            .args(["--", "true"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("perf: {e}"))?;
        let _ = std::fs::remove_file(&file);
        if output.status.success() {
            Ok(())
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            Err(format!("perf record of {} failed: {}", FSYNC_EVENTS[1], stderr.lines().next().unwrap_or("")))
        }
    }

    /// Starts recording for the run's duration plus a margin, and waits until perf is recording.
    async fn start(root: &Path, duration: Duration) -> Result<FsyncCounter> {
        let file = root.join("fsyncs.data");
        let mut command = tokio::process::Command::new("perf");
        command.args(["record", "-q", "-a"]);
        for event in FSYNC_EVENTS {
            command.args(["-e", event]);
        }
        let child = command
            .arg("-o")
            .arg(&file)
            .args(["--", "sleep", &format!("{:.1}", duration.as_secs_f64() + 1.5)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting perf record")?;
        // perf opens its events on every CPU, then starts the workload: give it time to do so.
        tokio::time::sleep(Duration::from_millis(700)).await;
        Ok(FsyncCounter { child, file })
    }

    /// Waits for the recording to end; the calls of each of [`FSYNC_EVENTS`] made by the processes `pids`.
    async fn finish(mut self, pids: &[u32]) -> Result<[u64; 3]> {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .context("perf record did not end")??;
        if !status.success() {
            bail!("perf record failed ({status})");
        }
        let output = tokio::process::Command::new("perf")
            .args(["script", "-F", "pid,event", "-i"])
            .arg(&self.file)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .context("perf script")?;
        let _ = std::fs::remove_file(&self.file);
        let pids: HashSet<u32> = pids.iter().copied().collect();
        let mut counts = [0; 3];
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            // "  1234 syscalls:sys_enter_fdatasync: "
            let mut fields = line.split_whitespace();
            let Some(pid) = fields.next().and_then(|pid| pid.parse::<u32>().ok()) else { continue };
            let event = fields.next().unwrap_or("").trim_end_matches(':');
            if let Some(kind) = FSYNC_EVENTS.iter().position(|e| *e == event)
                && pids.contains(&pid)
            {
                counts[kind] += 1;
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_with_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn the_value_is_256_bytes() {
        assert_eq!(serde_json::to_string(&value_document()).unwrap().len(), VALUE_BYTES);
    }
}

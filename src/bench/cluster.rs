//! `tandem bench cluster`: a pair with a witness on this machine — write throughput and failover time.
//!
//! It starts three `tandem serve` processes (this executable) on free loopback ports in a temporary
//! directory, forms the cluster through the API as an operator would, and then measures:
//! 1. **throughput**: for 1, 16 and 64 concurrent clients (keep-alive HTTP connections to the leader's API,
//!    one `PUT /v1/docs/...` at a time each), changes per second and p50/p99 latency over a fixed duration;
//! 2. **failover**: `--runs` times, SIGKILL the leader and time until the first write acknowledged by the
//!    surviving data node (a client retrying every 20 ms), then restart the killed node and let it catch up.
//!
//! With `--handover`, instead: planned hand-overs under load (`bench::handover`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hyper::Method;
use serde_json::{Value, json};

use crate::client::ApiClient;

/// Options of `tandem bench cluster`.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterBenchOptions {
    /// Seconds of load per client count.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Client counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub clients: Vec<usize>,
    /// Failover runs (default 5); with --vs-etcd, interleaved etcd/Tandem rounds per client count (default 3).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Measure planned leadership hand-overs (`tandem servers lead`) under write load instead: `--runs`
    /// hand-overs (default 10) for each client count (see `bench::handover`).
    #[arg(long)]
    pub handover: bool,
    /// Keep the temporary directory (the nodes' data and logs) after the run, for inspection.
    #[arg(long)]
    pub keep: bool,
    /// Side by side with a three-member etcd 3.4 on this machine (installed with apt-get when missing): put
    /// throughput, p50/p99, fsyncs and CPU per write of both, runs interleaved (see `bench::etcd`).
    #[arg(long)]
    pub vs_etcd: bool,
    /// With --vs-etcd: skip the extra fsync-counting round per system and client count (the counter's
    /// tracepoints slow every system call, so fsyncs are never counted in the measured rounds).
    #[arg(long)]
    pub no_fsync_count: bool,
}

pub(super) struct BenchNode {
    pub(super) name: &'static str,
    role: &'static str,
    pub(super) api: String,
    peer: String,
    boot: String,
    tftp: String,
    child: Option<Child>,
}

impl BenchNode {
    fn new(name: &'static str, role: &'static str) -> Result<Self> {
        let port = super::free_port;
        Ok(BenchNode {
            name,
            role,
            api: format!("127.0.0.1:{}", port()?),
            peer: format!("127.0.0.1:{}", port()?),
            boot: format!("127.0.0.1:{}", port()?),
            tftp: format!("127.0.0.1:{}", port()?),
            child: None,
        })
    }

    async fn start(&mut self, root: &Path, join: bool) -> Result<()> {
        let exe = std::env::current_exe()?;
        let log = std::fs::File::create(root.join(format!("{}.log", self.name)))?;
        // Every client of the benchmark runs on 127.0.0.1: raise the API's per-address cap (docs/security.md)
        // above the most concurrent clients measured, each on its own connection.
        let config = root.join(format!("{}.toml", self.name));
        std::fs::write(&config, "[limits.api]\nmax_connections = 1024\nmax_connections_per_source = 512\n")?;
        let mut command = Command::new(exe);
        command
            .args(["serve", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(root.join(self.name))
            .args(["--name", self.name, "--role", self.role, "--api", &self.api, "--peer", &self.peer])
            .args(["--boot", &self.boot, "--tftp", &self.tftp, "--cluster-secret", "bench-cluster-secret"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if join {
            command.arg("--join");
        }
        self.child = Some(command.spawn().context("starting tandem serve")?);
        let client = self.client();
        for _ in 0..200 {
            if let Ok((200, _)) = client.send(Method::GET, "/v1/status", None).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{} did not start", self.name)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id of the running node.
    pub(super) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn client(&self) -> ApiClient {
        ApiClient::new(&self.api, None)
    }

    async fn status(&self) -> Result<Value> {
        let (_, status) = self.client().send(Method::GET, "/v1/status", None).await?;
        Ok(status)
    }
}

impl Drop for BenchNode {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(super) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Starts a (data) + b (data) + w (witness) in `root` and forms the cluster through a's API.
pub(super) async fn start_pair(root: &Path) -> Result<[BenchNode; 3]> {
    let mut nodes =
        [BenchNode::new("a", "data")?, BenchNode::new("b", "data")?, BenchNode::new("w", "witness")?];
    nodes[0].start(root, false).await?;
    nodes[1].start(root, true).await?;
    nodes[2].start(root, true).await?;
    for i in 1..3 {
        let body = {
            let (_, info) = nodes[i].client().send(Method::GET, "/v1/node", None).await?;
            json!({"id": info["id"], "name": nodes[i].name, "role": nodes[i].role, "peer_addr": info["peer_addr"],
                   "api_addr": info["api_addr"], "boot_addr": info["boot_addr"]})
        };
        let (status, answer) =
            nodes[0].client().send(Method::POST, "/v1/cluster/servers", Some(body)).await?;
        if status != 200 {
            bail!("adding {}: {answer}", nodes[i].name);
        }
    }
    Ok(nodes)
}

/// The figures of one closed-loop run.
#[derive(Debug)]
pub(super) struct Load {
    /// Latencies of the successful requests, sorted.
    pub(super) latencies: Vec<Duration>,
    pub(super) failures: u64,
    pub(super) elapsed: Duration,
}

impl Load {
    pub(super) fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// `clients` closed-loop clients, each on its own keep-alive connection to `target`, sending one request at a
/// time — `request(client, n)` gives the method, path and JSON body of a client's n-th — for `duration`. A
/// request counts when it is answered 200.
pub(super) async fn closed_loop(
    target: &str,
    clients: usize,
    duration: Duration,
    request: impl Fn(usize, u64) -> (Method, String, Value) + Send + Sync + 'static,
) -> Result<Load> {
    let request = std::sync::Arc::new(request);
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = ApiClient::new(target, None).with_timeout(Duration::from_secs(10));
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let (method, path, body) = request(c, n);
                let start = Instant::now();
                match client.send(method, &path, Some(body)).await {
                    Ok((200, _)) => latencies.push(start.elapsed()),
                    _ => failures += 1,
                }
                n += 1;
            }
            (latencies, failures)
        }));
    }
    let started = Instant::now();
    let mut load = Load { latencies: Vec::new(), failures: 0, elapsed: Duration::ZERO };
    for task in tasks {
        let (l, f) = task.await?;
        load.latencies.extend(l);
        load.failures += f;
    }
    load.elapsed = started.elapsed();
    load.latencies.sort();
    Ok(load)
}

/// Runs the cluster benchmark and prints its figures.
pub async fn cluster(options: &ClusterBenchOptions) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().to_path_buf();
    let root = root.as_path();
    let mut nodes = start_pair(root).await?;
    println!("tandem bench cluster: a + b (data) + w (witness) on 127.0.0.1, in {}", root.display());

    for &clients in &options.clients {
        measure_throughput(&nodes, clients, options.seconds).await?;
    }
    let mut failovers = Vec::new();
    for run in 0..options.runs.unwrap_or(5) {
        if let Some(took) = measure_failover(&mut nodes, root, run).await? {
            failovers.push(took);
        }
    }
    failovers.sort();
    if !failovers.is_empty() {
        println!(
            "failover: median {:.0} ms, min {:.0} ms, max {:.0} ms over {} runs",
            percentile(&failovers, 0.5).as_secs_f64() * 1000.0,
            failovers[0].as_secs_f64() * 1000.0,
            failovers[failovers.len() - 1].as_secs_f64() * 1000.0,
            failovers.len()
        );
    }
    if options.keep {
        println!("kept the nodes' data and logs in {}", dir.keep().display());
    }
    Ok(())
}

/// Writes from `clients` concurrent clients to the leader for `seconds`; prints the rate and latencies.
async fn measure_throughput(nodes: &[BenchNode], clients: usize, seconds: u64) -> Result<()> {
    let leader = leader_index(nodes).await?;
    let load = closed_loop(&nodes[leader].api, clients, Duration::from_secs(seconds), |c, n| {
        (Method::PUT, format!("/v1/docs/bench/c{c}-{n}"), json!({"client": c, "n": n}))
    })
    .await?;
    println!(
        "throughput {clients:>3} clients: {:>7.0} changes/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} changes, {} failed, {:.1} s)",
        load.per_second(),
        percentile(&load.latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&load.latencies, 0.99).as_secs_f64() * 1000.0,
        load.latencies.len(),
        load.failures,
        load.elapsed.as_secs_f64()
    );
    Ok(())
}

/// Kills the leader (a data node) and times the first write acknowledged by the survivor; restarts the killed
/// node and waits until it caught up. `None` when the witness leads (the run is skipped).
async fn measure_failover(nodes: &mut [BenchNode], root: &Path, run: usize) -> Result<Option<Duration>> {
    let leader = leader_index(nodes).await?;
    if nodes[leader].role != "data" {
        tokio::time::sleep(Duration::from_secs(3)).await;
        return Ok(None);
    }
    let survivor = if leader == 0 { 1 } else { 0 };
    let client = nodes[survivor].client();
    // Make sure the survivor is caught up before the kill, as in a steady state.
    let (status, _) =
        client.send(Method::PUT, &format!("/v1/docs/failover/warmup-{run}"), Some(json!({}))).await?;
    if status != 200 {
        bail!("warm-up write failed");
    }
    nodes[leader].kill();
    let killed_at = Instant::now();
    let mut acknowledged = None;
    for attempt in 0..1000 {
        let path = format!("/v1/docs/failover/r{run}-{attempt}");
        let write = client.send(Method::PUT, &path, Some(json!({})));
        if let Ok(Ok((200, _))) = tokio::time::timeout(Duration::from_secs(2), write).await {
            acknowledged = Some(killed_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let Some(took) = acknowledged else { bail!("no write was acknowledged after killing the leader") };
    println!(
        "failover run {}: {:.0} ms from SIGKILL of {} to the first acknowledged write on {}",
        run + 1,
        took.as_secs_f64() * 1000.0,
        nodes[leader].name,
        nodes[survivor].name
    );
    nodes[leader].start(root, false).await?;
    let revision = nodes[survivor].status().await?["revision"].clone();
    for _ in 0..600 {
        if nodes[leader].status().await?["revision"] == revision {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Some(took))
}

pub(super) async fn leader_index(nodes: &[BenchNode]) -> Result<usize> {
    for _ in 0..200 {
        for node in nodes {
            if node.child.is_none() {
                continue;
            }
            if let Ok(status) = node.status().await
                && let Some(leader) = status["leader_name"].as_str()
                && let Some(index) = nodes.iter().position(|n| n.name == leader && n.child.is_some())
            {
                return Ok(index);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("no leader")
}

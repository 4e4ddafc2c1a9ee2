//! `tandem bench operations`: what an operator waits for, on a large installation.
//!
//! The data set is the one of `tandem bench storage` (`--terminals` terminals, `--events` events), built
//! offline into a store and written as a backup file. From there every figure is taken the way an operator
//! gets it, against a real node (`tandem serve`, this executable, on free loopback ports):
//! 1. **restore**: `tandem backup restore FILE --data-dir DIR` (verify + install into a new data directory);
//! 2. **history**: `GET /v1/history?limit=100&newest_first` — the last 100 events;
//! 3. **export**: `GET /v1/export?at=REV` for a revision in the middle of the history (a time-travel read
//!    from the nearest checkpoint, serialized as the whole configuration);
//! 4. **diff**: `GET /v1/diff?from=A&to=B` between that revision and the newest;
//! 5. **backup**: `tandem backup create --out FILE` (stream from the node, write, fsync, verify).
//!
//! Each HTTP figure is the median of `--repeat` runs, measured at the client (request to last byte).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hyper::Method;
use tandem_storage::{Store, backup::write_backup};

use crate::client::ApiClient;

/// Options of `tandem bench operations`.
#[derive(clap::Args, Debug, Clone)]
pub struct OperationsBenchOptions {
    /// Events in the history.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Terminals in the configuration.
    #[arg(long, default_value_t = 10_000)]
    pub terminals: u64,
    /// Runs of each HTTP measurement (the median is printed).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
}

/// Kills the node when the benchmark ends, however it ends.
struct NodeProcess(Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_tandem(args: &[&str]) -> Result<Duration> {
    let start = Instant::now();
    let output = Command::new(std::env::current_exe()?)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running tandem")?;
    let elapsed = start.elapsed();
    if !output.status.success() {
        bail!(
            "tandem {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(elapsed)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Times `GET path` `repeat` times; returns the median and the size of the last answer.
async fn time_get(client: &ApiClient, path: &str, repeat: usize) -> Result<(Duration, usize)> {
    let mut samples = Vec::with_capacity(repeat);
    let mut size = 0;
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        let (status, _, body) = client.send_raw(Method::GET, path, None).await?;
        samples.push(start.elapsed());
        if status != 200 {
            bail!("GET {path} answered {status}: {}", String::from_utf8_lossy(&body));
        }
        size = body.len();
    }
    Ok((median(samples), size))
}

/// Runs the operations benchmark and prints its figures.
pub async fn operations(options: &OperationsBenchOptions) -> Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    println!(
        "tandem bench operations: {} terminals, {} events, in {}",
        options.terminals,
        options.events,
        dir.path().display()
    );
    let backup_file = dir.path().join("data-set.backup");
    {
        let mut store = Store::open(&dir.path().join("source"))?;
        let start = Instant::now();
        crate::bench::storage::build_data_set(&mut store, options.terminals, options.events, 1000)?;
        let summary = write_backup(&store.snapshot(), &backup_file)?;
        println!(
            "data set: revision {}, {} documents, backup {:.1} MiB, built in {:.1} s",
            summary.header.revision,
            summary.header.documents,
            summary.bytes as f64 / (1024.0 * 1024.0),
            start.elapsed().as_secs_f64()
        );
    }

    let data_dir = dir.path().join("node");
    let backup_path = backup_file.to_string_lossy().into_owned();
    let data_path = data_dir.to_string_lossy().into_owned();
    let restore = run_tandem(&["backup", "restore", &backup_path, "--data-dir", &data_path])?;
    println!(
        "restore:  {:>8.0} ms  (tandem backup restore FILE --data-dir DIR: verify + install)",
        ms(restore)
    );

    let api = format!("127.0.0.1:{}", super::free_port()?);
    let log = std::fs::File::create(dir.path().join("node.log"))?;
    let _node = NodeProcess(
        Command::new(std::env::current_exe()?)
            .args(["serve", "--data-dir", &data_path, "--name", "bench", "--api", &api])
            .args(["--peer", &format!("127.0.0.1:{}", super::free_port()?)])
            .args(["--boot", &format!("127.0.0.1:{}", super::free_port()?)])
            .args(["--tftp", &format!("127.0.0.1:{}", super::free_port()?)])
            .args(["--cluster-secret", "bench-secret-0123"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting tandem serve")?,
    );
    let client = ApiClient::new(&api, None).with_timeout(Duration::from_secs(120));
    let deadline = Instant::now() + Duration::from_secs(60);
    let revision = loop {
        if let Ok((200, status)) = client.send(Method::GET, "/v1/status", None).await
            && status["leader"].is_number()
            && let Some(revision) = status["revision"].as_u64()
        {
            break revision;
        }
        if Instant::now() > deadline {
            bail!(
                "the node did not become ready within 60 s (log: {})",
                dir.path().join("node.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let middle = revision / 2;

    let (history, size) = time_get(&client, "/v1/history?limit=100&newest_first", options.repeat).await?;
    println!("history:  {:>8.1} ms  (last 100 of {revision} events, {} KiB)", ms(history), size / 1024);
    let (export, size) = time_get(&client, &format!("/v1/export?at={middle}"), options.repeat).await?;
    println!(
        "export:   {:>8.1} ms  (whole configuration at revision {middle}, {:.1} MiB)",
        ms(export),
        size as f64 / (1024.0 * 1024.0)
    );
    let (diff, size) =
        time_get(&client, &format!("/v1/diff?from={middle}&to={revision}"), options.repeat).await?;
    println!(
        "diff:     {:>8.1} ms  (revision {middle} against {revision}, {:.1} MiB)",
        ms(diff),
        size as f64 / (1024.0 * 1024.0)
    );

    let out = dir.path().join("from-node.backup").to_string_lossy().into_owned();
    let server = format!("http://{api}");
    let mut samples = Vec::new();
    for _ in 0..options.repeat.clamp(1, 3) {
        let _ = std::fs::remove_file(&out);
        samples.push(run_tandem(&["--server", &server, "backup", "create", "--out", &out])?);
    }
    let size = std::fs::metadata(Path::new(&out)).map(|m| m.len()).unwrap_or(0);
    println!(
        "backup:   {:>8.0} ms  (tandem backup create: stream + write + fsync + verify, {:.1} MiB)",
        ms(median(samples)),
        size as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}

//! `tandem bench storage`: figures for the storage engine on this machine.
//!
//! What it measures, on a real sled database in a temporary directory (real fsyncs):
//! 1. **single**: change sets applied one at a time, each followed by a durable step (flush + fsync);
//! 2. **batched**: the same, 100 change sets per `apply` and per durable step (group commit). This phase
//!    builds the data set for the rest: `--terminals` terminals, then patches until the history holds
//!    `--events` events;
//! 3. **replay**: rebuilding the projection from the whole history (read every event from disk, decode,
//!    apply), as `state_at` does from its nearest checkpoint;
//! 4. **snapshot**: building the snapshot stream of the whole store (projection + full history) and installing
//!    it into a fresh store, as a new node or a restore would.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;
use tandem_storage::{ChangeMeta, ChangeSet, Command, Outcome, Projection, Revision, Store, StoreOptions};

/// Options of `tandem bench storage`.
#[derive(clap::Args, Debug, Clone)]
pub struct StorageBenchOptions {
    /// Events in the history built for the replay and snapshot figures.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Terminals in the configuration.
    #[arg(long, default_value_t = 10_000)]
    pub terminals: u64,
    /// Change sets applied one at a time (each with its own fsync).
    #[arg(long, default_value_t = 2_000)]
    pub single: u64,
    /// Change sets per batch in the batched phase.
    #[arg(long, default_value_t = 100)]
    pub batch: u64,
}

pub(crate) fn meta(i: u64) -> ChangeMeta {
    ChangeMeta {
        actor: "bench".into(),
        reason: String::new(),
        timestamp_ms: 1_700_000_000_000 + i,
        request_id: None,
        ..ChangeMeta::default()
    }
}

pub(crate) fn terminal(i: u64) -> ChangeSet {
    let mac = format!(
        "02:00:{:02x}:{:02x}:{:02x}:{:02x}",
        (i >> 24) & 0xff,
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    );
    ChangeSet::new(meta(i)).put(
        "terminals",
        &format!("t{i}"),
        json!({"mac": mac, "firmware": "fw", "terminal_servers": ["ts1", "ts2"],
               "settings": {"kiosk": true, "resolution": "1920x1080", "line": i % 12}}),
    )
}

pub(crate) fn patch(i: u64, terminals: u64) -> ChangeSet {
    let target = (i.wrapping_mul(2_654_435_761)) % terminals.max(1);
    ChangeSet::new(meta(i)).patch("terminals", &format!("t{target}"), json!({"settings": {"generation": i}}))
}

fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

pub(crate) fn check(outcomes: &[Outcome]) -> Result<()> {
    for outcome in outcomes {
        if !matches!(outcome, Outcome::Accepted { .. }) {
            bail!("benchmark change set not accepted: {outcome:?}");
        }
    }
    Ok(())
}

/// Fills `store` with the benchmark data set: a 1 MiB firmware blob and document, two terminal servers,
/// `terminals` terminals, then patches of random terminals until the history holds `events` events; applied
/// `batch` change sets per apply and per fsync. Returns how many change sets were applied in batches.
pub(crate) fn build_data_set(store: &mut Store, terminals: u64, events: u64, batch: u64) -> Result<u64> {
    let (digest, size) =
        store.put_blob(1, &vec![0xabu8; 1 << 20][..])?.map_err(|r| anyhow::anyhow!("{r}"))?;
    check(&[store.apply_change_set(
        ChangeSet::new(meta(0))
            .put("firmware", "fw", json!({"version": "1", "blob": digest.to_string(), "size": size}))
            .put("terminal_servers", "ts1", json!({"address": "10.0.0.1"}))
            .put("terminal_servers", "ts2", json!({"address": "10.0.0.2"})),
    )?])?;
    let total = events.max(terminals + 1) - 1;
    let mut i = 0;
    while i < total {
        let end = (i + batch.max(1)).min(total);
        let commands: Vec<Command> = (i..end)
            .map(|n| Command::Change(if n < terminals { terminal(n) } else { patch(n, terminals) }))
            .collect();
        check(&store.apply(&commands, None)?)?;
        store.durable()?;
        i = end;
    }
    Ok(total)
}

/// Runs the storage benchmark and prints its figures.
pub fn storage(options: &StorageBenchOptions) -> Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    println!(
        "tandem bench storage: {} terminals, {} events, in {}",
        options.terminals,
        options.events,
        dir.path().display()
    );

    // 1. One change set per apply and per fsync.
    {
        let mut store = Store::open(&dir.path().join("single"))?;
        let start = Instant::now();
        for i in 0..options.single {
            let change = ChangeSet::new(meta(i)).put(
                "bench",
                &format!("d{i}"),
                json!({"n": i, "text": "a small document"}),
            );
            check(&[store.apply_change_set(change)?])?;
        }
        let elapsed = start.elapsed();
        println!(
            "single:   {:>9.0} change sets/s  ({} change sets, one apply + fsync each, {:.3} ms each)",
            rate(options.single, elapsed),
            options.single,
            elapsed.as_secs_f64() * 1000.0 / options.single as f64
        );
    }

    // 2. Batches of change sets per apply and per fsync, building the data set.
    let mut store = Store::open(&dir.path().join("main"))?;
    let start = Instant::now();
    let total = build_data_set(&mut store, options.terminals, options.events, options.batch)?;
    let elapsed = start.elapsed();
    println!(
        "batched:  {:>9.0} change sets/s  ({total} change sets in batches of {}, one fsync per batch)",
        rate(total, elapsed),
        options.batch
    );

    // 3. Replay the whole history from disk.
    let start = Instant::now();
    let mut projection = Projection::new();
    for event in store.events(Revision(1), store.revision()) {
        projection.apply(&event?)?;
    }
    let elapsed = start.elapsed();
    if &projection != store.projection() {
        bail!("replay did not reproduce the projection");
    }
    println!(
        "replay:   {:>9.0} events/s       ({} events, {} documents rebuilt in {:.2} s)",
        rate(store.revision().0, elapsed),
        store.revision(),
        projection.len(),
        elapsed.as_secs_f64()
    );

    // 4. Snapshot build and install.
    let snapshot_path = dir.path().join("snapshot");
    let start = Instant::now();
    let file = std::io::BufWriter::new(std::fs::File::create(&snapshot_path)?);
    let (header, bytes) = store.snapshot().write_to(file)?;
    let build = start.elapsed();
    let mut target = Store::open_with(&dir.path().join("installed"), StoreOptions::default())?;
    let start = Instant::now();
    target.install_snapshot(std::io::BufReader::new(std::fs::File::open(&snapshot_path)?))?;
    let install = start.elapsed();
    if target.projection() != store.projection() {
        bail!("the installed snapshot differs from the source");
    }
    println!(
        "snapshot: build {:.2} s + install {:.2} s = {:.2} s  (revision {}, {} documents, {:.1} MiB)",
        build.as_secs_f64(),
        install.as_secs_f64(),
        (build + install).as_secs_f64(),
        header.revision,
        header.documents,
        bytes as f64 / (1024.0 * 1024.0)
    );
    let start = Instant::now();
    let old = store.state_at(Revision(store.revision().0 / 2))?;
    println!(
        "state_at: {:.1} ms for revision {} ({} documents, from the nearest checkpoint)",
        start.elapsed().as_secs_f64() * 1000.0,
        old.revision(),
        old.len()
    );
    Ok(())
}

//! `tandem bench cluster --handover`: planned leadership hand-overs under write load.
//!
//! With the pair + witness of [`super::cluster`] running, `clients` closed-loop writers (half on a's API,
//! half on b's: a follower forwards its writes to the leader) write for the whole run while leadership is
//! handed over `runs` times, a → b → a …, with `POST /v1/cluster/leader` sent to the current leader, one
//! second of load between hand-overs. For each hand-over it reports:
//! - **took**: the API round trip of the request (the old leader answers once it sees the new one lead),
//!   and the node's own `took_ms`;
//! - **gap**: the longest interval without any acknowledged write that overlaps the hand-over, beside the
//!   longest such interval in the steady second before it (the baseline: what the disk and the machine give
//!   anyway);
//! - **slowest**: the longest latency of a write in flight during the hand-over.
//!
//! For the whole run it counts the failed writes (any answer but 200: the goal is none).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use hyper::Method;
use serde_json::json;

use super::cluster::{BenchNode, ClusterBenchOptions, leader_index, percentile, start_pair};
use crate::client::ApiClient;

/// One write: when it was sent, when it was answered, and whether it was acknowledged (200).
#[derive(Clone, Copy, Debug)]
struct Write {
    sent: Instant,
    answered: Instant,
    ok: bool,
}

/// One hand-over: the request's span and what the node said.
#[derive(Debug)]
struct Switch {
    from: &'static str,
    to: &'static str,
    asked: Instant,
    answered: Instant,
    took_ms: u64,
}

/// `tandem bench cluster --handover`: starts the pair + witness, then `measure_handovers` for each client
/// count (`--runs` hand-overs each, default 10).
pub async fn handovers(options: &ClusterBenchOptions) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let nodes = start_pair(dir.path()).await?;
    println!(
        "tandem bench cluster --handover: a + b (data) + w (witness) on 127.0.0.1, in {}",
        dir.path().display()
    );
    for &clients in &options.clients {
        measure_handovers(&nodes, clients, options.runs.unwrap_or(10)).await?;
    }
    if options.keep {
        println!("kept the nodes' data and logs in {}", dir.keep().display());
    }
    Ok(())
}

/// Runs `runs` hand-overs under `clients` writers and prints the figures.
async fn measure_handovers(nodes: &[BenchNode], clients: usize, runs: usize) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for c in 0..clients {
        // Data nodes only (the witness serves no configuration): a and b alternately.
        let api = nodes[c % 2].api.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let client = ApiClient::new(&api, None).with_timeout(Duration::from_secs(15));
            let mut writes = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 10_000_000 {
                let sent = Instant::now();
                let answer = client
                    .send(Method::PUT, &format!("/v1/docs/handover/c{c}-{n}"), Some(json!({"n": n})))
                    .await;
                writes.push(Write { sent, answered: Instant::now(), ok: matches!(answer, Ok((200, _))) });
                n += 1;
            }
            writes
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut switches = Vec::new();
    let mut refused = 0usize;
    for _ in 0..runs {
        let leader = leader_index(nodes).await?;
        let (from, to) = match nodes[leader].name {
            "a" => ("a", "b"),
            "b" => ("b", "a"),
            other => bail!("{other} leads: the witness should hand leadership back by itself"),
        };
        let client = ApiClient::new(&nodes[leader].api, None).with_timeout(Duration::from_secs(10));
        let asked = Instant::now();
        let (status, answer) =
            client.send(Method::POST, "/v1/cluster/leader", Some(json!({"name": to}))).await?;
        let answered = Instant::now();
        if status != 200 {
            // Counted and reported; the next run tries again (the refusal says why: lag, reachability).
            println!("hand-over {from} -> {to} refused ({status}): {answer}");
            refused += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        switches.push(Switch { from, to, asked, answered, took_ms: answer["took_ms"].as_u64().unwrap_or(0) });
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut writes = Vec::new();
    for writer in writers {
        writes.extend(writer.await?);
    }
    report(clients, &writes, &switches);
    if refused > 0 {
        println!("hand-over, {clients} clients: {refused} of {runs} requests refused (see above)");
    }
    Ok(())
}

/// Prints one line per hand-over and a summary.
fn report(clients: usize, writes: &[Write], switches: &[Switch]) {
    let mut acknowledged: Vec<Instant> = writes.iter().filter(|w| w.ok).map(|w| w.answered).collect();
    acknowledged.sort();
    let failed = writes.iter().filter(|w| !w.ok).count();
    let (mut tooks, mut gaps, mut baselines) = (Vec::new(), Vec::new(), Vec::new());
    for (i, switch) in switches.iter().enumerate() {
        let took = switch.answered - switch.asked;
        let gap = longest_gap(&acknowledged, switch.asked, switch.answered);
        let before = switch.asked.checked_sub(Duration::from_millis(900)).unwrap_or(switch.asked);
        let baseline = longest_gap(&acknowledged, before, switch.asked - Duration::from_millis(100));
        let slowest = writes
            .iter()
            .filter(|w| w.sent <= switch.answered && w.answered >= switch.asked)
            .map(|w| w.answered - w.sent)
            .max()
            .unwrap_or_default();
        println!(
            "hand-over {:>2} {} -> {}: took {:>5.0} ms (node: {:>4} ms)  gap in acknowledged writes {:>5.0} ms \
             (steady second before: {:>4.0} ms)  slowest write in flight {:>5.0} ms",
            i + 1,
            switch.from,
            switch.to,
            ms(took),
            switch.took_ms,
            ms(gap),
            ms(baseline),
            ms(slowest)
        );
        tooks.push(took);
        gaps.push(gap);
        baselines.push(baseline);
    }
    tooks.sort();
    gaps.sort();
    baselines.sort();
    println!(
        "hand-over, {clients} clients: took median {:.0} ms, max {:.0} ms; gap median {:.0} ms, max {:.0} ms \
         (steady median {:.0} ms); {} writes acknowledged, {failed} failed, over {} hand-overs",
        ms(percentile(&tooks, 0.5)),
        ms(tooks.last().copied().unwrap_or_default()),
        ms(percentile(&gaps, 0.5)),
        ms(gaps.last().copied().unwrap_or_default()),
        ms(percentile(&baselines, 0.5)),
        acknowledged.len(),
        switches.len()
    );
}

/// The longest interval between consecutive acknowledgements (sorted) that overlaps `[from, to]`, the
/// interval's ends included as if acknowledgements (so a window with none counts whole).
fn longest_gap(acknowledged: &[Instant], from: Instant, to: Instant) -> Duration {
    let before = acknowledged.iter().rev().find(|t| **t < from).copied().unwrap_or(from);
    let after = acknowledged.iter().find(|t| **t > to).copied().unwrap_or(to);
    let mut points: Vec<Instant> = vec![before];
    points.extend(acknowledged.iter().filter(|t| **t >= from && **t <= to));
    points.push(after);
    points.windows(2).map(|pair| pair[1] - pair[0]).max().unwrap_or_default()
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

//! `tandem status`: the node's and the cluster's status as a page for people (or the API's JSON).

use hyper::Method;
use serde_json::Value;

use super::Context;
use super::error::CmdError;
use super::output::{format_time, print_json};

/// Runs `tandem status`.
pub async fn run(ctx: &Context) -> Result<(), CmdError> {
    let status = ctx.call(Method::GET, "/v1/status", None).await?;
    if ctx.json {
        print_json(&status);
    } else {
        print_status(&status);
    }
    Ok(())
}

fn print_status(value: &Value) {
    println!(
        "node      {} ({}) role {}",
        value["name"].as_str().unwrap_or("?"),
        value["id"],
        value["role"].as_str().unwrap_or("?")
    );
    println!(
        "raft      {} term {} leader {}",
        value["raft_state"].as_str().unwrap_or("?"),
        value["term"],
        value["leader_name"].as_str().unwrap_or("none")
    );
    println!("mode      {}", value["mode"].as_str().unwrap_or("?"));
    match value["cluster_id"].as_str() {
        Some(cluster) => println!("cluster   {cluster}"),
        None => println!("cluster   none yet: waiting to be added (`tandem servers add` on a member)"),
    }
    println!("revision  {} (applied index {})", value["revision"], value["applied_index"]);
    if value["terminals"].is_object() {
        let t = &value["terminals"];
        println!(
            "terminals {} online ({} green, {} red), {} offline",
            t["online"], t["green"], t["red"], t["offline"]
        );
    }
    if value["degraded"].as_bool() == Some(true) {
        println!("DEGRADED  {}", value["degraded_reason"].as_str().unwrap_or(""));
    }
    if let Some(rebuilt) = value["store_rebuilt"].as_str() {
        println!("REBUILT   {rebuilt}");
    }
    if let Some(uploads) = value["uploads_in_progress"].as_u64().filter(|n| *n > 0) {
        println!(
            "uploads   {uploads} blob upload(s) in progress (aborted by the leader if they stop progressing)"
        );
    }
    if value["blobs"].is_object() {
        let b = &value["blobs"];
        let mib = |v: &Value| v.as_u64().unwrap_or(0) as f64 / (1024.0 * 1024.0);
        print!("blobs     {} ({:.1} MiB)", b["count"], mib(&b["bytes"]));
        if b["unreferenced"].as_u64().is_some_and(|n| n > 0) {
            print!(
                ", {} not used by the configuration ({:.1} MiB; `tandem blobs list` tells which may be removed)",
                b["unreferenced"],
                mib(&b["unreferenced_bytes"])
            );
        }
        println!();
    }
    if let Some(first) = value["history"]["first_revision"].as_u64().filter(|first| *first > 1) {
        println!(
            "history   from revision {first} (earlier revisions were forgotten: `tandem history forget`)"
        );
    }
    print_backup_status(&value["backup"]);
    print_refusing(value["refusing"].as_array().map(Vec::as_slice).unwrap_or_default());
    print_peers(value["peers"].as_array().map(Vec::as_slice).unwrap_or_default());
    print_recent_changes(value["recent_changes"].as_array().map(Vec::as_slice).unwrap_or_default());
}

/// The backup part of `tandem status`.
fn print_backup_status(backup: &Value) {
    if backup["scheduled"].as_bool() != Some(true) {
        println!("backup    not scheduled on this node");
        return;
    }
    let last = match (backup["last_success_unix"].as_u64(), backup["last_revision"].as_u64()) {
        (Some(at), Some(revision)) => format!(
            "last r{revision} at {} ({:.1} MiB)",
            format_time(at * 1000),
            backup["last_size"].as_u64().unwrap_or(0) as f64 / (1024.0 * 1024.0)
        ),
        _ => "none written yet".into(),
    };
    println!(
        "backup    every {} s to {}: {last}",
        backup["interval_seconds"],
        backup["dir"].as_str().unwrap_or("?")
    );
    if let Some(error) = backup["last_error"].as_str() {
        println!("BACKUP FAILING  {error} ({} failures)", backup["failures_total"]);
    }
}

/// The nodes whose requests this node refuses (another cluster, another node id, not a member).
fn print_refusing(refusing: &[Value]) {
    for refused in refusing {
        let sender = refused["sender"]
            .as_u64()
            .map_or_else(|| "an unnamed node".to_owned(), |id| format!("node {id}"));
        let cluster = refused["sender_cluster"].as_str().unwrap_or("no cluster");
        println!(
            "REFUSING  {sender} of {cluster} at {} ({}, {} requests, last {}): {}",
            refused["remote"].as_str().unwrap_or("?"),
            refused["kind"].as_str().unwrap_or("?"),
            refused["count"],
            format_time(refused["last_at_ms"].as_u64().unwrap_or(0)),
            refused["message"].as_str().unwrap_or("")
        );
    }
}

fn print_peers(peers: &[Value]) {
    if peers.is_empty() {
        return;
    }
    println!(
        "{:<16} {:<8} {:<22} {:<10} {:>6} {:<12}",
        "PEER", "ROLE", "ADDRESS", "REACHABLE", "LAG", "SYNC"
    );
    for peer in peers {
        println!(
            "{:<16} {:<8} {:<22} {:<10} {:>14} {:<12}",
            peer["name"].as_str().unwrap_or("?"),
            peer["role"].as_str().unwrap_or("?"),
            peer["peer_addr"].as_str().unwrap_or("?"),
            peer["reachable"].as_bool().map(|b| if b { "yes" } else { "no" }).unwrap_or("-"),
            match (peer["lag_entries"].as_u64(), peer["lag_seconds"].as_f64()) {
                (Some(entries), Some(seconds)) => format!("{entries} ({seconds:.1}s)"),
                (Some(entries), None) => entries.to_string(),
                _ => "-".into(),
            },
            peer["sync"].as_str().unwrap_or("?"),
        );
    }
    for peer in peers {
        if let Some(message) = peer["refusal"]["message"].as_str() {
            println!(
                "REFUSED   {} at {} refuses this node ({}): {message}",
                peer["name"].as_str().unwrap_or("?"),
                peer["peer_addr"].as_str().unwrap_or("?"),
                peer["refusal"]["kind"].as_str().unwrap_or("?"),
            );
        }
    }
}

fn print_recent_changes(recent: &[Value]) {
    if recent.is_empty() {
        return;
    }
    println!("recent changes:");
    for event in recent {
        let documents: Vec<&str> = event["documents"]
            .as_array()
            .map(|d| d.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        println!(
            "  r{:<7} {}  {:<12} {:<32} {}",
            event["revision"],
            format_time(event["timestamp_ms"].as_u64().unwrap_or(0)),
            event["actor"].as_str().unwrap_or("?"),
            event["reason"].as_str().unwrap_or(""),
            documents.join(" ")
        );
    }
}

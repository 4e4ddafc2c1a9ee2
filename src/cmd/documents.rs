//! `tandem put | get | list | delete` (documents) and `tandem history` (who changed what).

use clap::Args;
use hyper::Method;
use serde_json::Value;

use super::Context;
use super::error::CmdError;
use super::output::{format_time, print_json, print_outcome};
use crate::http::percent_encode;

/// `tandem put`.
#[derive(Args, Debug)]
pub struct PutArgs {
    collection: String,
    id: String,
    /// JSON text, or @FILE.
    document: String,
    #[arg(long, default_value = "")]
    reason: String,
    /// Only if the document was last changed at this revision.
    #[arg(long)]
    if_mod_revision: Option<u64>,
    /// A client request id: a retried put with the same id applies once.
    #[arg(long)]
    request_id: Option<String>,
}

/// `tandem get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    collection: String,
    id: String,
    /// `local`: this node's replica as it is; `linearizable`: after everything committed before the call
    /// (on any data node or mirror; fails when the leader or a quorum is unreachable).
    #[arg(long, default_value = "local", value_parser = ["local", "linearizable"])]
    consistency: String,
    /// As it was at this revision.
    #[arg(long)]
    at: Option<u64>,
}

/// `tandem list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    collection: String,
    /// `local` or `linearizable`, as for `tandem get`.
    #[arg(long, default_value = "local", value_parser = ["local", "linearizable"])]
    consistency: String,
}

/// `tandem delete`.
#[derive(Args, Debug)]
pub struct DeleteArgs {
    collection: String,
    id: String,
    #[arg(long, default_value = "")]
    reason: String,
}

/// `tandem history`.
#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Only events that touched this collection.
    #[arg(long)]
    collection: Option<String>,
    /// Only events that touched a document with this id.
    #[arg(long)]
    id: Option<String>,
    /// Only events by this actor (a token's name; `local` on a node without tokens).
    #[arg(long)]
    actor: Option<String>,
    /// From this revision on.
    #[arg(long)]
    from: Option<u64>,
    /// Up to this revision.
    #[arg(long)]
    to: Option<u64>,
    /// At most this many events (default 1000).
    #[arg(long)]
    limit: Option<u64>,
}

/// Runs `tandem put`.
pub async fn put(ctx: &Context, args: &PutArgs) -> Result<(), CmdError> {
    let text = match args.document.strip_prefix('@') {
        Some(file) => {
            std::fs::read_to_string(file).map_err(|e| CmdError::failed(format!("cannot read {file}: {e}")))?
        }
        None => args.document.clone(),
    };
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| CmdError::usage(format!("the document is not valid JSON: {e}")))?;
    let mut path =
        format!("/v1/docs/{}/{}?reason={}", args.collection, args.id, percent_encode(&args.reason));
    if let Some(revision) = args.if_mod_revision {
        path.push_str(&format!("&if_mod_revision={revision}"));
    }
    if let Some(request_id) = &args.request_id {
        path.push_str(&format!("&request_id={}", percent_encode(request_id)));
    }
    print_outcome(ctx, &ctx.call(Method::PUT, &path, Some(value)).await?);
    Ok(())
}

/// Runs `tandem get`.
pub async fn get(ctx: &Context, args: &GetArgs) -> Result<(), CmdError> {
    let mut path =
        format!("/v1/docs/{}/{}?consistency={}", args.collection, args.id, percent_encode(&args.consistency));
    if let Some(at) = args.at {
        path.push_str(&format!("&at={at}"));
    }
    let value = ctx.call(Method::GET, &path, None).await?;
    if ctx.json {
        print_json(&value);
        return Ok(());
    }
    let doc = &value["document"];
    println!(
        "{}/{}  version {}  created r{}  modified r{}  (store at r{})",
        doc["collection"].as_str().unwrap_or("?"),
        doc["id"].as_str().unwrap_or("?"),
        doc["version"],
        doc["create_revision"],
        doc["mod_revision"],
        value["revision"]
    );
    println!("{}", serde_json::to_string_pretty(&doc["document"]).unwrap_or_default());
    Ok(())
}

/// Runs `tandem list`.
pub async fn list(ctx: &Context, args: &ListArgs) -> Result<(), CmdError> {
    let path = format!("/v1/docs/{}?consistency={}", args.collection, percent_encode(&args.consistency));
    let value = ctx.call(Method::GET, &path, None).await?;
    if ctx.json {
        print_json(&value);
        return Ok(());
    }
    let documents = value["documents"].as_array().cloned().unwrap_or_default();
    println!("{:<32} {:>8} {:>8}  DOCUMENT", "ID", "VERSION", "MOD_REV");
    for doc in &documents {
        let body: String = doc["document"].to_string().chars().take(80).collect();
        println!(
            "{:<32} {:>8} {:>8}  {}",
            doc["id"].as_str().unwrap_or("?"),
            doc["version"],
            doc["mod_revision"],
            body
        );
    }
    println!("({} documents at revision {})", documents.len(), value["revision"]);
    Ok(())
}

/// Runs `tandem delete`.
pub async fn delete(ctx: &Context, args: &DeleteArgs) -> Result<(), CmdError> {
    let path = format!("/v1/docs/{}/{}?reason={}", args.collection, args.id, percent_encode(&args.reason));
    print_outcome(ctx, &ctx.call(Method::DELETE, &path, None).await?);
    Ok(())
}

/// Runs `tandem history`.
pub async fn history(ctx: &Context, args: &HistoryArgs) -> Result<(), CmdError> {
    let mut query = Vec::new();
    for (key, value) in [("collection", &args.collection), ("id", &args.id), ("actor", &args.actor)] {
        if let Some(value) = value {
            query.push(format!("{key}={}", percent_encode(value)));
        }
    }
    for (key, value) in [("from", args.from), ("to", args.to), ("limit", args.limit)] {
        if let Some(value) = value {
            query.push(format!("{key}={value}"));
        }
    }
    let value = ctx.call(Method::GET, &format!("/v1/history?{}", query.join("&")), None).await?;
    if ctx.json {
        print_json(&value);
        return Ok(());
    }
    println!("{:>8}  {:<20} {:<16} CHANGES", "REVISION", "TIME", "ACTOR");
    for event in value["events"].as_array().into_iter().flatten() {
        let time = event["timestamp_ms"].as_u64().map(format_time);
        let changes: Vec<String> = event["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let verb = if c["document"].is_null() { "-" } else { "~" };
                format!(
                    "{verb}{}/{}",
                    c["collection"].as_str().unwrap_or("?"),
                    c["id"].as_str().unwrap_or("?")
                )
            })
            .collect();
        let reason = event["reason"]
            .as_str()
            .filter(|r| !r.is_empty())
            .map(|r| format!("  \"{r}\""))
            .unwrap_or_default();
        println!(
            "{:>8}  {:<20} {:<16} {}{}",
            event["revision"].as_u64().unwrap_or(0),
            time.unwrap_or_default(),
            event["actor"].as_str().unwrap_or("?"),
            changes.join(" "),
            reason
        );
    }
    Ok(())
}

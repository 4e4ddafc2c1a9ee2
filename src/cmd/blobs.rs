//! `tandem blobs list | remove`: the stored blobs (firmware images, kernels, modules), what references each,
//! and removing the ones nothing references (see `tandem_storage::blob_usage` for the rules).
//!
//! `remove` previews (each blob, its size, and whether it may go), asks (or takes `--yes`), then removes each
//! with `DELETE /v1/blobs/{sha256}`, a replicated command that every member applies. A blob still in use by
//! the configuration or referenced by any event of the history is refused before anything is removed.

use clap::Subcommand;
use hyper::Method;
use serde_json::{Value, json};

use super::Context;
use super::error::CmdError;
use super::operations::ConfirmArgs;
use super::output::print_json;

#[derive(Subcommand, Debug)]
pub enum BlobsCommand {
    /// Every blob: size, the documents that use it now, how many events of the history reference it.
    List {
        /// Only the blobs nothing references (what `remove --all-removable` would remove).
        #[arg(long)]
        removable: bool,
    },
    /// Remove blobs that neither the configuration nor the history references (preview, confirm, remove).
    Remove {
        /// The blobs' sha256 digests (64 hex digits).
        #[arg(required_unless_present = "all_removable", conflicts_with = "all_removable")]
        digests: Vec<String>,
        /// Every blob nothing references.
        #[arg(long)]
        all_removable: bool,
        #[command(flatten)]
        confirm: ConfirmArgs,
    },
}

/// Runs `tandem blobs …`.
pub async fn run(ctx: &Context, command: &BlobsCommand) -> Result<(), CmdError> {
    match command {
        BlobsCommand::List { removable } => list(ctx, *removable).await,
        BlobsCommand::Remove { digests, all_removable, confirm } => {
            remove(ctx, digests, *all_removable, confirm).await
        }
    }
}

async fn list(ctx: &Context, only_removable: bool) -> Result<(), CmdError> {
    let mut answer = ctx.call(Method::GET, "/v1/blobs", None).await?;
    if only_removable && let Some(blobs) = answer["blobs"].as_array_mut() {
        blobs.retain(|blob| blob["removable"] == true);
    }
    if ctx.json {
        print_json(&answer);
        return Ok(());
    }
    let blobs = answer["blobs"].as_array().cloned().unwrap_or_default();
    println!("{:<64}  {:>12}  {:<9}  {:>7}  in use by", "sha256", "bytes", "removable", "history");
    for blob in &blobs {
        let in_use: Vec<&str> =
            blob["in_use_by"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        println!(
            "{:<64}  {:>12}  {:<9}  {:>7}  {}",
            blob["digest"].as_str().unwrap_or("?"),
            blob["size"],
            if blob["removable"] == true { "yes" } else { "no" },
            blob["history_references"],
            if in_use.is_empty() { "-".to_string() } else { in_use.join(", ") }
        );
    }
    println!(
        "{} blob(s); {} removable ({} bytes): `tandem blobs remove --all-removable`",
        blobs.len(),
        answer["removable"],
        answer["removable_bytes"]
    );
    Ok(())
}

/// Why a blob may not be removed, in words (`None`: it may).
fn obstacle(blob: &Value) -> Option<String> {
    if blob["removable"] == true {
        return None;
    }
    let in_use: Vec<&str> =
        blob["in_use_by"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if !in_use.is_empty() {
        return Some(format!("in use by {}", in_use.join(", ")));
    }
    let revisions: Vec<String> =
        blob["history_revisions"].as_array().into_iter().flatten().map(|r| r.to_string()).collect();
    Some(format!(
        "referenced by {} event(s) of the history (newest: revision {})",
        blob["history_references"],
        revisions.join(", ")
    ))
}

async fn remove(
    ctx: &Context,
    digests: &[String],
    all_removable: bool,
    args: &ConfirmArgs,
) -> Result<(), CmdError> {
    let answer = ctx.call(Method::GET, "/v1/blobs", None).await?;
    let blobs = answer["blobs"].as_array().cloned().unwrap_or_default();
    let chosen: Vec<Value> = if all_removable {
        blobs.into_iter().filter(|blob| blob["removable"] == true).collect()
    } else {
        let mut chosen = Vec::new();
        for digest in digests {
            let digest = digest.to_ascii_lowercase();
            match blobs.iter().find(|blob| blob["digest"] == digest.as_str()) {
                Some(blob) => chosen.push(blob.clone()),
                None => {
                    return Err(CmdError::failed(format!(
                        "no blob {digest} (`tandem blobs list` lists them); nothing was removed"
                    )));
                }
            }
        }
        chosen
    };
    let refused: Vec<String> = chosen
        .iter()
        .filter_map(|blob| {
            obstacle(blob).map(|why| format!("{}: {why}", blob["digest"].as_str().unwrap_or("?")))
        })
        .collect();
    if !refused.is_empty() {
        return Err(CmdError::failed(format!(
            "not removed (history must stay restorable, and the configuration must keep its blobs):\n  {}\nnothing was removed",
            refused.join("\n  ")
        )));
    }
    let bytes: u64 = chosen.iter().filter_map(|blob| blob["size"].as_u64()).sum();
    let preview = format!(
        "{} blob(s), {bytes} bytes, referenced by nothing, to remove on every member:\n{}",
        chosen.len(),
        chosen
            .iter()
            .map(|blob| format!("  {}  {} bytes\n", blob["digest"].as_str().unwrap_or("?"), blob["size"]))
            .collect::<String>()
    );
    let say = |text: &str| if ctx.json { eprint!("{text}") } else { print!("{text}") };
    if chosen.is_empty() {
        say("no blob to remove\n");
        if ctx.json {
            print_json(&json!({"removed": [], "bytes": 0}));
        }
        return Ok(());
    }
    say(&preview);
    if args.dry_run {
        if ctx.json {
            print_json(&json!({"would_remove": chosen, "bytes": bytes}));
        }
        return Ok(());
    }
    args.ask("Remove?", "removed", "remove").await?;
    let mut removed = Vec::new();
    for blob in &chosen {
        let digest = blob["digest"].as_str().unwrap_or_default();
        ctx.call(Method::DELETE, &format!("/v1/blobs/{digest}"), None).await?;
        removed.push(digest.to_string());
    }
    if ctx.json {
        print_json(&json!({"removed": removed, "bytes": bytes}));
    } else {
        println!("removed {} blob(s), {bytes} bytes", removed.len());
    }
    Ok(())
}

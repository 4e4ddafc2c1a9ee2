//! `tandem sync --from URL --to URL`: make one installation's configuration equal to another's, one way
//! ([`crate::client::sync`] does the work). This file shows the preview (a table, or JSON with `--json`),
//! asks before anything is applied (or takes `--yes`; without a terminal and without `--yes` nothing
//! happens, exit 1), and prints the report.

use std::sync::Arc;

use clap::Args;

use super::Context;
use super::error::CmdError;
use super::output::{byte_progress, can_ask, confirm, human_bytes, print_json};
use crate::client::sync::{CollectionChanges, Report, SyncError, SyncOptions, total_size};

/// Options of `tandem sync`.
#[derive(Args, Debug, Clone)]
pub struct SyncArgs {
    /// The installation to copy from (any data node or mirror of it), e.g. http://10.1.0.5:7070.
    #[arg(long)]
    pub from: String,
    /// The installation to overwrite (any data node of it).
    #[arg(long)]
    pub to: String,
    /// Apply without asking (needed when stdin is not a terminal).
    #[arg(long)]
    pub yes: bool,
    /// The source's API token (default: --token / TANDEM_TOKEN).
    #[arg(long, env = "TANDEM_FROM_TOKEN", hide_env_values = true)]
    pub from_token: Option<String>,
    /// The destination's API token, an operator token (default: --token / TANDEM_TOKEN).
    #[arg(long, env = "TANDEM_TO_TOKEN", hide_env_values = true)]
    pub to_token: Option<String>,
}

/// Runs `tandem sync`: previews, confirms, copies blobs, applies and prints the report.
pub async fn run(ctx: &Context, args: &SyncArgs) -> Result<(), CmdError> {
    let token = |own: &Option<String>| own.clone().or_else(|| ctx.token.clone());
    let options = SyncOptions {
        from: args.from.clone(),
        to: args.to.clone(),
        from_token: token(&args.from_token),
        to_token: token(&args.to_token),
    };
    let decide = async |report: &Report| -> Result<bool, SyncError> {
        if report.collections.is_empty() || (!args.yes && !can_ask()) {
            print_preview(report, ctx.json, false);
            return if report.collections.is_empty() { Ok(false) } else { Err(SyncError::NotConfirmed) };
        }
        print_preview(report, ctx.json, true);
        if !args.yes && !confirm(&format!("Apply these changes to {}?", report.destination.url)).await {
            return Err(SyncError::Declined);
        }
        Ok(true)
    };
    let report = crate::client::sync::run(&options, Arc::new(byte_progress(0, "")), decide).await?;
    if report.outcome != "applied" {
        return Ok(());
    }
    if ctx.json {
        print_json(&report);
    } else {
        print_report(&report);
    }
    Ok(())
}

/// Prints the preview: as JSON on stdout when it is the last word (`--json` and nothing will be applied), as
/// a table otherwise (on stderr with `--json`, so a person confirming sees it and stdout stays JSON).
fn print_preview(report: &Report, json_output: bool, will_continue: bool) {
    if json_output && !will_continue {
        print_json(report);
        return;
    }
    let text = preview_text(report);
    if json_output { eprint!("{text}") } else { print!("{text}") }
}

fn preview_text(report: &Report) -> String {
    let mut out = format!(
        "Sync from {} (revision {}) to {} (revision {})\n",
        report.source.url, report.source.revision, report.destination.url, report.destination.revision
    );
    if report.collections.is_empty() {
        out.push_str("No difference: the destination already has the source's configuration.\n");
        return out;
    }
    out.push('\n');
    for (collection, changes) in &report.collections {
        out.push_str(&format!("{collection:<20} {}\n", counts(changes)));
        for (sign, ids) in [("+", &changes.created), ("~", &changes.changed), ("-", &changes.deleted)] {
            for id in ids {
                out.push_str(&format!("  {sign} {id}\n"));
            }
        }
    }
    if report.missing_blobs.is_empty() {
        out.push_str("\nBlobs to copy: none\n");
    } else {
        let bytes = total_size(&report.missing_blobs);
        out.push_str(&format!("\nBlobs to copy: {} ({})\n", report.missing_blobs.len(), human_bytes(bytes)));
        for blob in &report.missing_blobs {
            out.push_str(&format!("  {}  {}\n", blob.digest, human_bytes(blob.size)));
        }
    }
    out
}

fn counts(changes: &CollectionChanges) -> String {
    format!(
        "{} created, {} changed, {} deleted",
        changes.created.len(),
        changes.changed.len(),
        changes.deleted.len()
    )
}

fn print_report(report: &Report) {
    println!(
        "\nSynced from {} at revision {}: {} is now at revision {}",
        report.source.url,
        report.source.revision,
        report.destination.url,
        report.new_revision.unwrap_or(report.destination.revision)
    );
    for (collection, changes) in &report.collections {
        println!("  {collection:<20} {}", counts(changes));
    }
    println!("  blobs copied: {} ({})", report.blobs_copied.count, human_bytes(report.blobs_copied.bytes));
    println!("  took {:.1} s", report.elapsed_ms as f64 / 1000.0);
}

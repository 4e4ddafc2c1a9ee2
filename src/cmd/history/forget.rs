//! `tandem history forget --before REV`: forget the history before a revision, like etcd's compaction
//! (`tandem_storage::forget` has the design).
//!
//! 1. A dry run (`POST /v1/history/forget` with `dry_run`): how many events would go on every member,
//!    where the history starts now and would start after, and the blobs nothing would reference any
//!    more;
//! 2. confirmation: `Forget? [y/N]` on a terminal, or `--yes`; without either it refuses and changes
//!    nothing (`--dry-run` only previews);
//! 3. the forget, as a replicated command recorded in the history with the caller's name and `--reason`.
//!
//! Forgetting before a revision the history already starts at (or after) changes nothing and says so
//! (exit 0). Then `tandem blobs remove --all-removable` removes the blobs that became unreferenced.

use clap::Args;
use hyper::Method;
use serde_json::{Value, json};

use crate::cmd::Context;
use crate::cmd::error::CmdError;
use crate::cmd::operations::ConfirmArgs;
use crate::cmd::output::print_json;

/// `tandem history forget`.
#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// The first revision to keep: every event before it is forgotten, and the configuration at REV-1 is
    /// where the history starts (it can still be shown and restored).
    #[arg(long, value_name = "REV")]
    pub before: u64,
    /// Why (recorded in the history with the forget).
    #[arg(long, default_value = "")]
    pub reason: String,
    #[command(flatten)]
    pub confirm: ConfirmArgs,
}

/// Runs `tandem history forget`.
pub async fn run(ctx: &Context, args: &ForgetArgs) -> Result<(), CmdError> {
    let body = |dry_run: bool| json!({"before": args.before, "reason": args.reason, "dry_run": dry_run});
    let preview = ctx.call(Method::POST, "/v1/history/forget", Some(body(true))).await?;
    let say = |text: &str| if ctx.json { eprint!("{text}") } else { print!("{text}") };
    if preview["outcome"] == "unchanged" {
        say(&format!(
            "nothing to forget: the history already starts at revision {}\n",
            preview["first_kept"].as_u64().unwrap_or(0)
        ));
        if ctx.json {
            print_json(&preview);
        }
        return Ok(());
    }
    say(&describe(&preview));
    if args.confirm.dry_run {
        if ctx.json {
            print_json(&preview);
        }
        return Ok(());
    }
    args.confirm.ask("Forget?", "forgotten", "forget").await?;
    let answer = ctx.call(Method::POST, "/v1/history/forget", Some(body(false))).await?;
    if ctx.json {
        print_json(&answer);
    } else if answer["outcome"] == "unchanged" {
        println!(
            "nothing to forget: the history already starts at revision {}",
            answer["first_kept"].as_u64().unwrap_or(0)
        );
    } else {
        println!(
            "forgot {} event(s): the history starts at revision {} (the forget is recorded as revision {})",
            answer["events"], answer["first_kept"], answer["revision"]
        );
        if blobs(&answer).next().is_some() {
            println!("blobs nothing references any more: `tandem blobs remove --all-removable`");
        }
    }
    Ok(())
}

fn blobs(answer: &Value) -> impl Iterator<Item = &Value> {
    answer["removable_blobs"].as_array().into_iter().flatten()
}

/// The preview an operator confirms.
fn describe(preview: &Value) -> String {
    let before = preview["before"].as_u64().unwrap_or(0);
    let first = preview["first_kept"].as_u64().unwrap_or(0);
    let mut text = format!(
        "forget {} event(s), revisions {first} to {}, on every member: the history will start at revision {before}\n\
         (the configuration at revision {} and later can still be shown, compared and restored; earlier ones \
         cannot, on any member, ever again)\n",
        preview["events"],
        before.saturating_sub(1),
        before.saturating_sub(1)
    );
    let blobs: Vec<&Value> = blobs(preview).collect();
    if blobs.is_empty() {
        text.push_str("no blob becomes unreferenced\n");
    } else {
        let bytes: u64 = blobs.iter().filter_map(|blob| blob["size"].as_u64()).sum();
        text.push_str(&format!(
            "{} blob(s), {bytes} bytes, would be referenced by nothing (then `tandem blobs remove --all-removable`):\n",
            blobs.len()
        ));
        for blob in blobs {
            text.push_str(&format!("  {}  {} bytes\n", blob["digest"].as_str().unwrap_or("?"), blob["size"]));
        }
    }
    text
}

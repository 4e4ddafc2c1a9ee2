//! Operator commands over the history: `tandem export`, `diff`, `revert`, `undo` and `import`.
//!
//! The reading commands print what the API answers: an export as pretty JSON (to stdout or a file), a diff
//! as a table with a short field-level summary of each changed document.
//!
//! The writing commands never change anything the operator has not seen. Each runs in three steps
//! (`preview_confirm_apply`):
//! 1. a dry run: the node computes the change set and answers the preview and the revision it was computed
//!    at; the preview is printed grouped by collection (`+` created, `~` changed, `-` deleted);
//! 2. confirmation: `--yes`, or "Apply? [y/N]" when stdin is a terminal; without a terminal and without
//!    `--yes` the command refuses (exit 1) rather than guess;
//! 3. the apply, with `if_revision` = the preview's revision: if anything changed in between, the node
//!    refuses (412) and nothing is written — run the command again to see the new preview.
//!
//! With `--json`, stdout carries only the API's answer (the preview table goes to stderr).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use hyper::Method;
use serde_json::{Value, json};

use super::Context;
use super::error::CmdError;
use super::output::{can_ask, confirm, print_json};
use crate::client::ApiClient;
use crate::client::flow::{Flow, Preview, preview_confirm_apply};

/// `tandem export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The configuration as it was right after this revision (default: now).
    #[arg(long)]
    pub at: Option<u64>,
    /// Write the export to this file instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `tandem diff`.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The earlier revision (0: the empty configuration).
    pub from: u64,
    /// The later revision.
    pub to: u64,
}

/// Confirmation flags shared by the writing commands.
#[derive(Args, Debug)]
pub struct ConfirmArgs {
    /// Apply without asking (required when stdin is not a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Only show what would change.
    #[arg(long, conflicts_with = "yes")]
    pub dry_run: bool,
}

impl ConfirmArgs {
    /// Goes on when `--yes` was given or the person at the terminal answers yes to `question`; refuses
    /// otherwise — at once when stdin is not a terminal (nobody can answer) — saying what was `not_done`
    /// ("applied", "removed") and that `--yes` would `verb` ("apply", "remove") it.
    pub async fn ask(&self, question: &str, not_done: &str, verb: &str) -> Result<(), CmdError> {
        if self.yes {
            return Ok(());
        }
        if !can_ask() {
            return Err(CmdError::failed(format!(
                "not {not_done}: stdin is not a terminal, so nobody can confirm. Pass --yes to {verb} (or --dry-run \
                 to only preview); nothing was changed"
            )));
        }
        if !confirm(question).await {
            return Err(CmdError::failed(format!("not {not_done}: nothing was changed")));
        }
        Ok(())
    }
}

/// `tandem revert`.
#[derive(Args, Debug)]
pub struct RevertArgs {
    /// Make the configuration what it was right after this revision.
    #[arg(long)]
    pub to: u64,
    /// Why (recorded in the history).
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub confirm: ConfirmArgs,
}

/// `tandem undo`.
#[derive(Args, Debug)]
pub struct UndoArgs {
    /// The revision of the change set to undo.
    pub revision: u64,
    /// Why (recorded in the history).
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub confirm: ConfirmArgs,
}

/// `tandem import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// An export file (`tandem export --out FILE`).
    pub file: PathBuf,
    /// Why (recorded in the history).
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub confirm: ConfirmArgs,
}

fn client(ctx: &Context) -> ApiClient {
    ctx.client().with_timeout(std::time::Duration::from_secs(300))
}

/// `tandem export [--at REV] [--out FILE]`.
pub async fn export(ctx: &Context, args: &ExportArgs) -> Result<(), CmdError> {
    let path = match args.at {
        Some(at) => format!("/v1/export?at={at}"),
        None => "/v1/export".to_string(),
    };
    let export = client(ctx).call(Method::GET, &path, None).await?;
    let mut text = serde_json::to_string_pretty(&export).unwrap_or_default();
    text.push('\n');
    let Some(out) = &args.out else {
        print!("{text}");
        return Ok(());
    };
    std::fs::write(out, text)
        .map_err(|e| CmdError::failed(format!("cannot write {}: {e}", out.display())))?;
    let collections = export["collections"].as_object().cloned().unwrap_or_default();
    let documents: usize = collections.values().filter_map(Value::as_object).map(|c| c.len()).sum();
    let blobs = export["blobs"].as_object().map_or(0, |b| b.len());
    if ctx.json {
        let summary = json!({"file": out, "revision": export["revision"], "collections": collections.len(),
                             "documents": documents, "blobs": blobs});
        print_json(&summary);
    } else {
        println!(
            "exported revision {}: {documents} document(s) in {} collection(s), {blobs} blob(s) referenced, to {}",
            export["revision"],
            collections.len(),
            out.display()
        );
    }
    Ok(())
}

/// `tandem diff FROM TO`.
pub async fn diff(ctx: &Context, args: &DiffArgs) -> Result<(), CmdError> {
    let path = format!("/v1/diff?from={}&to={}", args.from, args.to);
    let answer = client(ctx).call(Method::GET, &path, None).await?;
    if ctx.json {
        print_json(&answer);
        return Ok(());
    }
    let changes = answer["changes"].as_array().cloned().unwrap_or_default();
    if changes.is_empty() {
        println!("no differences between revision {} and revision {}", args.from, args.to);
        return Ok(());
    }
    println!("{:<8} {:<40} FIELDS", "KIND", "DOCUMENT");
    for change in &changes {
        let kind = change["kind"].as_str().unwrap_or("?");
        let key = format!(
            "{}/{}",
            change["collection"].as_str().unwrap_or("?"),
            change["id"].as_str().unwrap_or("?")
        );
        let fields = if kind == "changed" {
            field_summary(&change["before"], &change["after"])
        } else {
            String::new()
        };
        println!("{kind:<8} {key:<40} {fields}");
    }
    println!("({} documents differ between revision {} and revision {})", changes.len(), args.from, args.to);
    Ok(())
}

/// A short list of what changed inside a document: `+added ~changed -removed` field paths (objects are
/// followed three levels deep), at most eight of them.
pub fn field_summary(before: &Value, after: &Value) -> String {
    const SHOWN: usize = 8;
    let mut paths = Vec::new();
    changed_paths("", before, after, 0, &mut paths);
    if paths.is_empty() {
        return String::new();
    }
    if !before.is_object() || !after.is_object() {
        return "~(whole value)".into();
    }
    let more = paths.len().saturating_sub(SHOWN);
    paths.truncate(SHOWN);
    let mut text = paths.join(" ");
    if more > 0 {
        text.push_str(&format!(" (+{more} more)"));
    }
    text
}

fn changed_paths(prefix: &str, before: &Value, after: &Value, depth: usize, out: &mut Vec<String>) {
    if before == after {
        return;
    }
    let (Value::Object(a), Value::Object(b)) = (before, after) else {
        out.push(format!("~{}", if prefix.is_empty() { "(whole value)" } else { prefix }));
        return;
    };
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for key in keys {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match (a.get(key), b.get(key)) {
            (None, Some(_)) => out.push(format!("+{path}")),
            (Some(_), None) => out.push(format!("-{path}")),
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) if depth < 2 && x.is_object() && y.is_object() => {
                changed_paths(&path, x, y, depth + 1, out)
            }
            _ => out.push(format!("~{path}")),
        }
    }
}

/// `tandem revert --to REV --reason TEXT`.
pub async fn revert(ctx: &Context, args: &RevertArgs) -> Result<(), CmdError> {
    let body = json!({"to": args.to, "reason": args.reason});
    let heading = format!("Revert the configuration to revision {}", args.to);
    preview_confirm_apply_command(ctx, "/v1/revert", body, &heading, &args.confirm).await
}

/// `tandem undo REV --reason TEXT`.
pub async fn undo(ctx: &Context, args: &UndoArgs) -> Result<(), CmdError> {
    let body = json!({"revision": args.revision, "reason": args.reason});
    let heading = format!("Undo the change set of revision {}", args.revision);
    preview_confirm_apply_command(ctx, "/v1/undo", body, &heading, &args.confirm).await
}

/// `tandem import FILE --reason TEXT`.
pub async fn import(ctx: &Context, args: &ImportArgs) -> Result<(), CmdError> {
    let file = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| CmdError::failed(format!("cannot read {file}: {e}")))?;
    let export: Value = serde_json::from_str(&text).map_err(|e| {
        CmdError::usage(format!(
            "{file} is not valid JSON: {e} (expected an export: `tandem export --out FILE`)"
        ))
    })?;
    let heading = format!(
        "Import {file} (revision {} of cluster {})",
        export["revision"],
        export["cluster_id"].as_str().unwrap_or("?")
    );
    let body = json!({"export": export, "reason": args.reason, "source": file});
    preview_confirm_apply_command(ctx, "/v1/import", body, &heading, &args.confirm).await
}

/// Dry run, print, confirm, apply on condition that nothing changed since the dry run (see
/// [`crate::client::flow`]).
async fn preview_confirm_apply_command(
    ctx: &Context,
    endpoint: &str,
    body: Value,
    heading: &str,
    confirm_args: &ConfirmArgs,
) -> Result<(), CmdError> {
    let decide = async |preview: &Preview| -> Result<bool, CmdError> {
        let text = preview_text(heading, &preview.answer, preview.revision);
        if confirm_args.dry_run || preview.is_unchanged() {
            if ctx.json {
                print_json(&preview.answer);
            } else {
                print!("{text}");
            }
            return Ok(false);
        }
        if ctx.json {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
        let missing = preview.answer["missing_blobs"].as_array().map_or(0, Vec::len);
        if missing > 0 {
            return Err(CmdError::failed(format!(
                "{missing} blob(s) the export references are missing on this node: nothing was changed. \
                 Upload them first (`tandem sync` copies them along with the configuration)"
            )));
        }
        confirm_args.ask("Apply?", "applied", "apply").await?;
        Ok(true)
    };
    let Flow::Applied { answer, .. } = preview_confirm_apply(&client(ctx), endpoint, body, decide).await?
    else {
        return Ok(());
    };
    if ctx.json {
        print_json(&answer);
    } else {
        let count = answer["changes"].as_array().map_or(0, Vec::len);
        println!("applied as revision {} ({count} documents changed)", answer["revision"]);
    }
    Ok(())
}

/// The preview, grouped by collection: a count line per collection, then `+ id`, `~ id`, `- id`.
fn preview_text(heading: &str, preview: &Value, revision: u64) -> String {
    let changes = preview["changes"].as_array().cloned().unwrap_or_default();
    let mut out = format!("{heading}, computed at revision {revision}:\n");
    if changes.is_empty() {
        out.push_str("No change: the configuration is already like that.\n");
        return out;
    }
    let mut by_collection: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for change in &changes {
        by_collection.entry(change["collection"].as_str().unwrap_or("?")).or_default().push(change);
    }
    for (collection, changes) in &by_collection {
        let count = |kind: &str| changes.iter().filter(|c| c["kind"] == kind).count();
        out.push_str(&format!(
            "{collection:<20} {} created, {} changed, {} deleted\n",
            count("created"),
            count("changed"),
            count("deleted")
        ));
        for kind in ["created", "changed", "deleted"] {
            for change in changes.iter().filter(|c| c["kind"] == kind) {
                let sign = match kind {
                    "created" => "+",
                    "changed" => "~",
                    _ => "-",
                };
                let size = match change["bytes"].as_u64() {
                    Some(bytes) if kind != "deleted" => format!("  ({bytes} bytes)"),
                    _ => String::new(),
                };
                out.push_str(&format!("  {sign} {}{size}\n", change["id"].as_str().unwrap_or("?")));
            }
        }
    }
    let missing = preview["missing_blobs"].as_array().cloned().unwrap_or_default();
    if !missing.is_empty() {
        out.push_str("Blobs missing on this node (they must be uploaded before the import):\n");
        for blob in &missing {
            out.push_str(&format!("  {} ({} bytes)\n", blob["digest"].as_str().unwrap_or("?"), blob["size"]));
        }
    }
    out.push_str(&format!("{} documents to change.\n", changes.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_summaries_name_added_changed_and_removed_paths() {
        let before = json!({"a": 1, "b": {"c": 1, "d": 2}, "gone": true, "same": [1]});
        let after = json!({"a": 2, "b": {"c": 1, "d": 3, "e": 0}, "new": null, "same": [1]});
        assert_eq!(field_summary(&before, &after), "~a ~b.d +b.e -gone +new");
        assert_eq!(field_summary(&json!(1), &json!(2)), "~(whole value)");
        assert_eq!(field_summary(&json!({"a": 1}), &json!({"a": 1})), "");
        let wide_before = json!({});
        let wide_after: Value =
            (0..12).map(|i| (format!("k{i:02}"), json!(i))).collect::<serde_json::Map<_, _>>().into();
        assert_eq!(
            field_summary(&wide_before, &wide_after),
            "+k00 +k01 +k02 +k03 +k04 +k05 +k06 +k07 (+4 more)"
        );
    }

    #[test]
    fn previews_group_by_collection() {
        let preview = json!({"changes": [
            {"collection": "notes", "id": "b", "kind": "deleted", "bytes": 0},
            {"collection": "notes", "id": "a", "kind": "created", "bytes": 5},
            {"collection": "terminals", "id": "t1", "kind": "changed", "bytes": 40}],
            "missing_blobs": []});
        let text = preview_text("Revert", &preview, 7);
        assert_eq!(
            text,
            "Revert, computed at revision 7:\n\
             notes                1 created, 0 changed, 1 deleted\n  + a  (5 bytes)\n  - b\n\
             terminals            0 created, 1 changed, 0 deleted\n  ~ t1  (40 bytes)\n\
             3 documents to change.\n"
        );
    }
}

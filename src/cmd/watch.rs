//! `tandem watch`: print every change as it happens, with no gap and no duplicate across reconnects (the
//! resuming itself is [`crate::client::watch`]). One line per event: the raw JSON line with `--json`, else
//! `REV  TIME  ACTOR  REASON  ~collection/id -collection/id`. Exit code 3 when no server answers.

use std::io::Write;

use clap::Args;
use serde_json::Value;

use super::Context;
use super::error::CmdError;
use super::output::format_time;
use crate::client::watch::{WatchOptions, WatchSink};

/// `tandem watch` options (`--server` may list several servers, comma-separated).
#[derive(Args, Debug, Clone)]
pub struct WatchArgs {
    /// The first revision to print (default: only changes made from now on).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub from: Option<u64>,
    /// Only changes that touch this collection.
    #[arg(long)]
    pub collection: Option<String>,
    /// Exit after printing this many events.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Failed connection attempts in a row before giving up (exit code 3).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub retries: u32,
}

/// Runs `tandem watch`.
pub async fn run(ctx: &Context, args: &WatchArgs) -> Result<(), CmdError> {
    let options = WatchOptions {
        from: args.from,
        collection: args.collection.clone(),
        limit: args.limit,
        retries: args.retries,
    };
    let mut output = Output { json: ctx.json, out: std::io::stdout() };
    crate::client::watch::watch(&ctx.server, ctx.token.as_deref(), &options, &mut output).await?;
    Ok(())
}

/// Events to stdout, notices to stderr.
struct Output {
    json: bool,
    out: std::io::Stdout,
}

impl WatchSink for Output {
    fn event(&mut self, event: &Value, line: &[u8]) -> std::io::Result<()> {
        let mut out = self.out.lock();
        if self.json {
            out.write_all(line)?;
            return out.write_all(b"\n");
        }
        writeln!(out, "{}", human_line(event))
    }

    fn notice(&mut self, message: &str) {
        eprintln!("watch: {message}");
    }
}

/// An event as one line for people.
pub fn human_line(event: &Value) -> String {
    let time = event["timestamp_ms"].as_u64().map(format_time).unwrap_or_default();
    let reason =
        event["reason"].as_str().filter(|r| !r.is_empty()).map_or("-".into(), |r| format!("\"{r}\""));
    let changes: Vec<String> = event["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|change| {
            let verb = if change["document"].is_null() { "-" } else { "~" };
            format!(
                "{verb}{}/{}",
                change["collection"].as_str().unwrap_or("?"),
                change["id"].as_str().unwrap_or("?")
            )
        })
        .collect();
    format!(
        "{:>8}  {:<20}  {:<16}  {}  {}",
        event["revision"].as_u64().unwrap_or(0),
        time,
        event["actor"].as_str().unwrap_or("?"),
        reason,
        changes.join(" ")
    )
}

//! `tandem history` (who changed what), `tandem history --format csv|json` (the audit trail of a period),
//! `tandem history verify` (the history's hash chain on every member) and `tandem history forget` (forget
//! the history before a revision, [`forget`]).
//!
//! ## Verify
//! 1. The members come from `GET /v1/cluster/servers` on `--server` (witnesses hold no history and are
//!    skipped); a node that cannot list them is verified alone.
//! 2. Each member recomputes its own chain (`GET /v1/history/verify`): an event that no longer hashes to the
//!    hash stored beside it is named there — an event altered on that node's disk.
//! 3. The stored hashes are compared at the highest revision every member has reached (a follower may be a
//!    few revisions behind). A member whose hash differs from the first member's there differs from some
//!    revision on and ever after (each hash covers all before it), so bisecting with
//!    `GET /v1/history/chain` finds the first revision that differs in about log2(revision) requests: a
//!    history rewritten with its hashes recomputed. After `tandem history forget` a member holds hashes
//!    from its base on (the base answers its base hash), so the comparison and the bisection run from the
//!    largest base of the members.
//!
//! Exit 0: every member reached, every chain intact, all equal. Exit 1: a mismatch (named). Exit 3: no
//! mismatch found, but a member could not be reached.

use clap::{Args, Subcommand, ValueEnum};
use hyper::Method;
use serde_json::{Value, json};

pub mod forget;

use super::Context;
use super::error::{CmdError, EXIT_FAILED, EXIT_UNREACHABLE};
use super::output::{format_time, print_json};
use crate::client::{ApiClient, ClientError};
use crate::http::percent_encode;

/// `tandem history`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HistoryArgs {
    #[command(subcommand)]
    command: Option<HistoryCommand>,
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
    /// At most this many events (default: 1000 for the table, all of the period for csv and json).
    #[arg(long)]
    limit: Option<u64>,
    /// Only events at or after this time (UTC): `2026-12-01`, `2026-12-01T08:00:00Z`, or Unix seconds.
    #[arg(long)]
    since: Option<String>,
    /// Only events before this time (UTC, same forms as `--since`).
    #[arg(long)]
    until: Option<String>,
    /// table (default), csv (RFC 4180, a header line), or json (one array): the audit trail of a period.
    #[arg(long, value_enum, default_value_t = HistoryFormat::Table)]
    format: HistoryFormat,
}

#[derive(Subcommand, Debug)]
enum HistoryCommand {
    /// Recompute the history's hash chain on every member and compare them (names the first revision that
    /// differs).
    Verify,
    /// Forget the history before a revision (admin): its events go on every member, the configuration at
    /// REV-1 becomes where the history starts, and blobs only those events referenced become removable
    /// (preview, confirm, apply).
    Forget(forget::ForgetArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum HistoryFormat {
    Table,
    Csv,
    Json,
}

/// Events asked for per request when exporting a period.
const PAGE: u64 = 10_000;

/// Runs `tandem history`.
pub async fn run(ctx: &Context, args: &HistoryArgs) -> Result<(), CmdError> {
    match &args.command {
        Some(HistoryCommand::Verify) => return verify(ctx).await,
        Some(HistoryCommand::Forget(forget)) => return forget::run(ctx, forget).await,
        None => {}
    }
    let mut query = Vec::new();
    for (key, value) in [("collection", &args.collection), ("id", &args.id), ("actor", &args.actor)] {
        if let Some(value) = value {
            query.push(format!("{key}={}", percent_encode(value)));
        }
    }
    for (key, value) in [("since", &args.since), ("until", &args.until)] {
        if let Some(text) = value {
            let ms = parse_time(text).map_err(CmdError::usage)?;
            query.push(format!("{key}={ms}"));
        }
    }
    if args.format != HistoryFormat::Table {
        return export(ctx, args, query).await;
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
    if let Some(first) = value["first_revision"].as_u64().filter(|first| *first > 1) {
        println!(
            "(the history starts at revision {first}: earlier revisions were forgotten, see `tandem history --collection cluster_events`)"
        );
    }
    println!("{:>8}  {:<20} {:<16} {:<16} {:<22} CHANGES", "REVISION", "TIME", "ACTOR", "TOKEN", "SOURCE");
    for event in value["events"].as_array().into_iter().flatten() {
        let reason = event["reason"]
            .as_str()
            .filter(|r| !r.is_empty())
            .map(|r| format!("  \"{r}\""))
            .unwrap_or_default();
        println!(
            "{:>8}  {:<20} {:<16} {:<16} {:<22} {}{}",
            event["revision"].as_u64().unwrap_or(0),
            event["timestamp_ms"].as_u64().map(format_time).unwrap_or_default(),
            event["actor"].as_str().unwrap_or("?"),
            text_or_dash(&event["token"]),
            text_or_dash(&event["source"]),
            changes(event),
            reason
        );
    }
    Ok(())
}

fn text_or_dash(value: &Value) -> &str {
    value.as_str().filter(|text| !text.is_empty()).unwrap_or("-")
}

/// `~collection/id` for a written document, `-collection/id` for a deleted one, space-separated.
fn changes(event: &Value) -> String {
    let changes: Vec<String> = event["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let verb = if c["document"].is_null() { "-" } else { "~" };
            format!("{verb}{}/{}", c["collection"].as_str().unwrap_or("?"), c["id"].as_str().unwrap_or("?"))
        })
        .collect();
    changes.join(" ")
}

/// Every matching event of the period, page by page, printed as it arrives (never all in memory).
async fn export(ctx: &Context, args: &HistoryArgs, query: Vec<String>) -> Result<(), CmdError> {
    let json = args.format == HistoryFormat::Json;
    let mut from = args.from.unwrap_or(1).max(1);
    let mut to = args.to;
    let mut remaining = args.limit.unwrap_or(u64::MAX);
    if json {
        println!("[");
    } else {
        println!("revision,time,timestamp_ms,actor,token,source,reason,request_id,changes");
    }
    let mut first = true;
    while remaining > 0 {
        let page = PAGE.min(remaining);
        let mut path = format!("/v1/history?{}&from={from}&limit={page}", query.join("&"));
        if let Some(to) = to {
            path.push_str(&format!("&to={to}"));
        }
        let value = ctx.client().call(Method::GET, &path, None).await?;
        // The period ends at the revision the first page saw, so pages agree while writes go on.
        let to_revision = *to.get_or_insert(value["revision"].as_u64().unwrap_or(0));
        let events = value["events"].as_array().cloned().unwrap_or_default();
        for event in &events {
            if json {
                let separator = if first { "" } else { "," };
                println!("{separator}{event}");
            } else {
                println!("{}", csv_line(event));
            }
            first = false;
        }
        remaining -= events.len() as u64;
        match events.last().and_then(|event| event["revision"].as_u64()) {
            Some(last) if (events.len() as u64) == page && last < to_revision => from = last + 1,
            _ => break,
        }
    }
    if json {
        println!("]");
    }
    Ok(())
}

/// One event as a CSV record (RFC 4180: every field quoted when it holds a comma, quote or line break).
fn csv_line(event: &Value) -> String {
    let number = |key: &str| event[key].as_u64().map(|n| n.to_string()).unwrap_or_default();
    let text = |key: &str| event[key].as_str().unwrap_or_default().to_string();
    let fields = [
        number("revision"),
        event["timestamp_ms"].as_u64().map(format_time).unwrap_or_default(),
        number("timestamp_ms"),
        text("actor"),
        text("token"),
        text("source"),
        text("reason"),
        text("request_id"),
        changes(event),
    ];
    fields.iter().map(|field| csv_field(field)).collect::<Vec<_>>().join(",")
}

fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) || field.starts_with(' ') || field.ends_with(' ') {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// Parses `2026-12-01`, `2026-12-01T08:00`, `2026-12-01T08:00:00Z` (UTC; a trailing `Z` is optional) or
/// Unix seconds into Unix milliseconds.
pub fn parse_time(text: &str) -> Result<u64, String> {
    let bad =
        || format!("'{text}' is not a time: write 2026-12-01, 2026-12-01T08:00:00Z (UTC) or Unix seconds");
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return seconds.checked_mul(1000).ok_or_else(bad);
    }
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = text.split_once(['T', ' ']).unwrap_or((text, "00:00:00"));
    let numbers = |part: &str, separator: char| -> Result<Vec<u64>, String> {
        part.split(separator).map(|n| n.parse::<u64>().map_err(|_| bad())).collect()
    };
    let date = numbers(date, '-')?;
    let time = numbers(time, ':')?;
    let [year, month, day] = date[..] else { return Err(bad()) };
    let (hour, minute, second) = match time[..] {
        [h, m] => (h, m, 0),
        [h, m, s] => (h, m, s),
        _ => return Err(bad()),
    };
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad());
    }
    // Days from 1970-01-01 to the date (Howard Hinnant's days_from_civil).
    let (y, m) =
        if month <= 2 { (year as i64 - 1, month as i64 + 9) } else { (year as i64, month as i64 - 3) };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * m + 2) / 5 + day as i64 - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = days as u64 * 86_400 + hour * 3600 + minute * 60 + second;
    Ok(seconds * 1000)
}

/// What one member said about its chain.
struct Member {
    name: String,
    server: String,
    answer: Result<Value, ClientError>,
}

/// Runs `tandem history verify`.
async fn verify(ctx: &Context) -> Result<(), CmdError> {
    let servers = member_servers(ctx).await?;
    let mut members = Vec::new();
    for (name, server) in servers {
        let answer = ctx.client_of(&server).call(Method::GET, "/v1/history/verify", None).await;
        members.push(Member { name, server, answer });
    }
    let mut problems = Vec::new();
    let mut unreachable = Vec::new();
    let mut nodes = Vec::new();
    let mut reached: Vec<(&Member, u64)> = Vec::new();
    for member in &members {
        match &member.answer {
            Ok(answer) => {
                let revision = answer["revision"].as_u64().unwrap_or(0);
                if let Some(first) = answer["first_mismatch"].as_object() {
                    problems.push(format!(
                        "{}: revision {} does not match its hash: {}",
                        member.name,
                        first.get("revision").and_then(Value::as_u64).unwrap_or(0),
                        first.get("message").and_then(Value::as_str).unwrap_or("")
                    ));
                } else if answer["intact"] != json!(true) {
                    problems.push(format!(
                        "{}: its events hash to {} but its stored head is {}",
                        member.name, answer["head"], answer["stored_head"]
                    ));
                }
                reached.push((member, revision));
                nodes.push(json!({"name": member.name, "server": member.server, "revision": revision,
                                  "base": answer["base"], "head": answer["head"], "intact": answer["intact"],
                                  "first_mismatch": answer["first_mismatch"]}));
            }
            Err(error) => {
                unreachable.push(format!("{}: {error}", member.name));
                nodes.push(json!({"name": member.name, "server": member.server, "error": error.to_string()}));
            }
        }
    }
    // Compare the stored chains at the highest revision all members have reached, from the largest base
    // (before it, some member holds no hashes any more).
    let common = reached.iter().map(|(_, revision)| *revision).min().unwrap_or(0);
    let floor = members
        .iter()
        .filter_map(|member| member.answer.as_ref().ok())
        .filter_map(|answer| answer["base"].as_u64())
        .max()
        .unwrap_or(0);
    let mut differences = Vec::new();
    if let Some(((reference, _), others)) = reached.split_first()
        && common > 0
        && common >= floor
    {
        let reference_client = ctx.client_of(&reference.server);
        let reference_hash = hash_at(&reference_client, common).await?;
        for (member, _) in others {
            let client = ctx.client_of(&member.server);
            if hash_at(&client, common).await? == reference_hash {
                continue;
            }
            let (mut low, mut high) = (floor.max(1), common);
            while low < high {
                let middle = low + (high - low) / 2;
                if hash_at(&reference_client, middle).await? == hash_at(&client, middle).await? {
                    low = middle + 1;
                } else {
                    high = middle;
                }
            }
            problems.push(format!(
                "{} and {} hold different histories from revision {low} on",
                reference.name, member.name
            ));
            differences
                .push(json!({"node": member.name, "reference": reference.name, "first_revision": low}));
        }
    }
    if ctx.json {
        print_json(
            &json!({"nodes": nodes, "common_revision": common, "compared_from": floor, "differences": differences,
                           "problems": problems, "unreachable": unreachable}),
        );
    } else {
        for member in &members {
            match &member.answer {
                Ok(answer) => println!(
                    "{:<16} revision {:<8} head {}  {}",
                    member.name,
                    answer["revision"],
                    answer["head"].as_str().unwrap_or("?"),
                    if answer["intact"] == json!(true) { "intact" } else { "BROKEN" }
                ),
                Err(_) => println!("{:<16} unreachable", member.name),
            }
        }
    }
    if !problems.is_empty() {
        return Err(CmdError { code: EXIT_FAILED, message: problems.join("; ") });
    }
    if !unreachable.is_empty() {
        return Err(CmdError {
            code: EXIT_UNREACHABLE,
            message: format!(
                "no difference found, but not every member answered: {}",
                unreachable.join("; ")
            ),
        });
    }
    if !ctx.json {
        match floor {
            0 => println!("the history is intact and the same on every member up to revision {common}"),
            _ => println!(
                "the history is intact and the same on every member from revision {floor} (the latest start, \
                 after `tandem history forget`) up to revision {common}"
            ),
        }
    }
    Ok(())
}

/// The stored chain hash of `revision` on one member.
async fn hash_at(client: &ApiClient, revision: u64) -> Result<String, CmdError> {
    let answer =
        client.call(Method::GET, &format!("/v1/history/chain?from={revision}&to={revision}"), None).await?;
    Ok(answer["hashes"][0]["hash"].as_str().unwrap_or_default().to_string())
}

/// The name and API URL (with the scheme of `--server`) of every member that holds the history (witnesses do
/// not); just `--server` when
/// the membership cannot be read.
async fn member_servers(ctx: &Context) -> Result<Vec<(String, String)>, CmdError> {
    let client = ctx.client();
    // Every member speaks what `--server` speaks (all of a cluster have [tls], or none).
    let scheme = if client.base().starts_with("https://") { "https" } else { "http" };
    let listed = match client.call(Method::GET, "/v1/cluster/servers", None).await {
        Ok(answer) => answer["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|server| server["role"] != json!("witness"))
            .filter_map(|server| {
                let name = server["name"].as_str()?.to_string();
                let api = server["api_addr"].as_str()?;
                let url = if api.contains("://") { api.to_string() } else { format!("{scheme}://{api}") };
                Some((name, url))
            })
            .collect::<Vec<_>>(),
        Err(error @ ClientError::Unreachable { .. }) => return Err(error.into()),
        Err(_) => Vec::new(),
    };
    Ok(if listed.is_empty() { vec![(ctx.server.clone(), ctx.server.clone())] } else { listed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_utc() {
        assert_eq!(parse_time("1970-01-01").unwrap(), 0);
        assert_eq!(parse_time("2026-12-01T08:00:00Z").unwrap(), 1_796_112_000_000);
        assert_eq!(parse_time("2026-12-01 08:00").unwrap(), 1_796_112_000_000);
        assert_eq!(parse_time("2000-03-01").unwrap(), 951_868_800_000);
        assert_eq!(parse_time("1796112000").unwrap(), 1_796_112_000_000);
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2026-13-01").is_err());
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a, b"), "\"a, b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }
}

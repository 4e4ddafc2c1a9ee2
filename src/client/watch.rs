//! The resuming watch behind `tandem watch`: every change as it happens, with no gap and no duplicate across
//! reconnects. It hands each event to a [`WatchSink`] (the command prints them).
//!
//! The watch reads `GET /v1/watch` as NDJSON and remembers one number: the last revision its output covers
//! (the last event printed, or the revision a heartbeat says the server has dealt with). Whenever the stream
//! breaks — the server died, the network dropped, the server cut this watcher off as `too_slow` — it connects
//! again with `from` = that number + 1, so the next line printed is exactly the next event. Events at or
//! below it that a server sends again are dropped, and without `--collection` a jump in revisions is an error
//! rather than a silent gap.
//!
//! `--server` may list several servers, comma-separated: after a broken stream the next one in the list is
//! tried, so a watch survives the failover of a pair (every node serves the same history, a follower at most
//! a little behind, and a watch from a revision it has not applied yet simply waits for it). Failed attempts
//! in a row are bounded (`--retries`, with a backoff of 0.1 s doubling to 2 s); when none succeeds the
//! command exits with code 3.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;
use tandem_cluster::network::error_chain;

use super::api::{ApiClient, ClientError, Refusal, base_url, whole_body};
use crate::http::percent_encode;

/// A stream that sends nothing, not even a heartbeat, for this long is taken for dead.
const IDLE_TIMEOUT: Duration = Duration::from_secs(45);
/// How long connecting and getting the response head may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The backoff between failed attempts: 0.1 s, doubling, at most this.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// The most a refusal's body is read.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// The longest line of a stream: one event of the largest change set, JSON-escaped, fits several times.
const MAX_LINE: usize = 64 * 1024 * 1024;

/// What to watch.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The first revision to deliver (`None`: only changes made from now on).
    pub from: Option<u64>,
    /// Only changes that touch this collection.
    pub collection: Option<String>,
    /// Stop after this many events.
    pub limit: Option<u64>,
    /// Failed connection attempts in a row before giving up.
    pub retries: u32,
}

/// Where a watch delivers what it sees.
pub trait WatchSink {
    /// One event: parsed, and the line as received. An error stops the watch; a closed pipe ends it quietly.
    fn event(&mut self, event: &Value, line: &[u8]) -> std::io::Result<()>;
    /// Something the operator should know: a lost connection, a resume.
    fn notice(&mut self, message: &str);
}

/// Why `tandem watch` stopped without reaching its `--limit`.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{0}")]
    Usage(String),
    /// A server refused the watch (bad parameters, a missing or weak token).
    #[error("{0}")]
    Refused(String),
    /// The server broke the promise of a gap-free stream.
    #[error("{0}")]
    Broken(String),
    #[error("no server answered after {tries} attempts in a row ({servers}): {last_error}")]
    Unreachable { tries: u32, servers: String, last_error: String },
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
}

/// How one connection ended.
#[derive(Debug)]
enum SessionEnd {
    /// `--limit` events printed (or the output was closed): stop.
    Done,
    /// The server cut this watcher off and said where to resume: reconnect at once.
    Resume,
    /// The connection failed or broke; `progressed`: it had carried the watch forward first.
    Lost { error: String, progressed: bool },
}

/// What the watch has printed so far.
#[derive(Debug)]
struct Position {
    /// The last revision the output covers; `None` until the first server says where "now" is.
    covered: Option<u64>,
    printed: u64,
}

impl Position {
    fn cover(&mut self, revision: u64) {
        self.covered = Some(self.covered.map_or(revision, |covered| covered.max(revision)));
    }
}

/// Watches `servers` (comma-separated) until `limit` events were delivered or a final error.
pub async fn watch(
    servers: &str,
    token: Option<&str>,
    args: &WatchOptions,
    output: &mut dyn WatchSink,
) -> Result<(), WatchError> {
    let servers: Vec<String> =
        servers.split(',').map(str::trim).filter(|server| !server.is_empty()).map(base_url).collect();
    if servers.is_empty() {
        return Err(WatchError::Usage("--server names no server".into()));
    }
    for server in &servers {
        if format!("{server}/v1/watch").parse::<hyper::Uri>().is_err() {
            return Err(WatchError::Usage(format!(
                "invalid server address '{server}' (use http://HOST:PORT)"
            )));
        }
    }
    if args.collection.as_deref() == Some("") {
        return Err(WatchError::Usage("--collection must not be empty".into()));
    }
    let mut position = Position { covered: args.from.map(|from| from - 1), printed: 0 };
    let mut server = 0usize;
    let mut failures = 0u32;
    loop {
        if failures > 0 {
            let backoff = Duration::from_millis(100).saturating_mul(1 << (failures - 1).min(5));
            tokio::time::sleep(backoff.min(MAX_BACKOFF)).await;
        }
        let client =
            ApiClient::new(&servers[server], token.map(str::to_string)).with_timeout(CONNECT_TIMEOUT);
        let session = Session { client: &client, base: &servers[server], args };
        match session.run(&mut position, output).await? {
            SessionEnd::Done => return Ok(()),
            SessionEnd::Resume => failures = 0,
            SessionEnd::Lost { error, progressed } => {
                failures = if progressed { 1 } else { failures + 1 };
                output.notice(&error);
                if failures >= args.retries {
                    return Err(WatchError::Unreachable {
                        tries: failures,
                        servers: servers.join(", "),
                        last_error: error,
                    });
                }
                server = (server + 1) % servers.len();
            }
        }
    }
}

/// One connection to one server.
struct Session<'a> {
    client: &'a ApiClient,
    base: &'a str,
    args: &'a WatchOptions,
}

impl Session<'_> {
    async fn run(
        &self,
        position: &mut Position,
        output: &mut dyn WatchSink,
    ) -> Result<SessionEnd, WatchError> {
        let mut path = "/v1/watch?format=ndjson".to_string();
        if let Some(covered) = position.covered {
            path.push_str(&format!("&from={}", covered + 1));
        }
        if let Some(collection) = &self.args.collection {
            path.push_str(&format!("&collection={}", percent_encode(collection)));
        }
        let lost = |error: String, progressed: bool| Ok(SessionEnd::Lost { error, progressed });
        let body = match self.connect(&path).await {
            Ok(body) => body,
            Err(Connect::Refused(message)) => return Err(WatchError::Refused(message)),
            Err(Connect::Failed(error)) => return lost(error, false),
        };
        let started_at = position.covered;
        let progressed = |position: &Position| position.covered != started_at;
        let mut body = body;
        let mut pending: Vec<u8> = Vec::new();
        // How much of `pending` is known to hold no newline: each byte is looked at once.
        let mut scanned = 0usize;
        loop {
            let frame = match tokio::time::timeout(IDLE_TIMEOUT, body.frame()).await {
                Ok(Some(Ok(frame))) => frame,
                Ok(Some(Err(error))) => {
                    return lost(
                        format!("{}: the stream broke: {}", self.base, error_chain(&error)),
                        progressed(position),
                    );
                }
                Ok(None) => {
                    return lost(format!("{}: the server ended the stream", self.base), progressed(position));
                }
                Err(_) => {
                    return lost(
                        format!("{}: nothing received for {} s", self.base, IDLE_TIMEOUT.as_secs()),
                        progressed(position),
                    );
                }
            };
            let Ok(data) = frame.into_data() else { continue };
            pending.extend_from_slice(&data);
            while let Some(offset) = pending[scanned..].iter().position(|&byte| byte == b'\n') {
                let line: Vec<u8> = pending.drain(..=scanned + offset).collect();
                scanned = 0;
                let line = &line[..line.len() - 1];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let Ok(value) = serde_json::from_slice::<Value>(line) else {
                    return lost(
                        format!("{}: sent a line that is not JSON", self.base),
                        progressed(position),
                    );
                };
                match self.handle(&value, line, position, output)? {
                    None => {}
                    Some(SessionEnd::Lost { error, .. }) => return lost(error, progressed(position)),
                    Some(end) => return Ok(end),
                }
            }
            scanned = pending.len();
            if pending.len() > MAX_LINE {
                return lost(
                    format!("{}: sent a line longer than {} MiB", self.base, MAX_LINE >> 20),
                    progressed(position),
                );
            }
        }
    }

    /// Acts on one line of the stream; `Some` ends the session.
    fn handle(
        &self,
        value: &Value,
        line: &[u8],
        position: &mut Position,
        output: &mut dyn WatchSink,
    ) -> Result<Option<SessionEnd>, WatchError> {
        if value["heartbeat"] == Value::Bool(true) {
            if let Some(revision) = value["revision"].as_u64() {
                position.cover(revision);
            }
            return Ok(None);
        }
        if let Some(error) = value.get("error") {
            let code = error["code"].as_str().unwrap_or("?");
            let message = error["message"].as_str().unwrap_or("?");
            if let Some(resume_from) = value["resume_from"].as_u64().filter(|r| *r >= 1) {
                position.cover(resume_from - 1);
            }
            if code == "too_slow" {
                output.notice(&format!("{}: {message}; resuming", self.base));
                return Ok(Some(SessionEnd::Resume));
            }
            return Ok(Some(SessionEnd::Lost {
                error: format!("{}: the stream ended with {code}: {message}", self.base),
                progressed: false,
            }));
        }
        let Some(revision) = value["revision"].as_u64() else {
            return Ok(Some(SessionEnd::Lost {
                error: format!("{}: sent an event without a revision", self.base),
                progressed: false,
            }));
        };
        if let Some(covered) = position.covered {
            if revision <= covered {
                return Ok(None);
            }
            if self.args.collection.is_none() && revision != covered + 1 {
                return Err(WatchError::Broken(format!(
                    "{} skipped revisions {}..={}: the stream is not gap-free (please report this)",
                    self.base,
                    covered + 1,
                    revision - 1
                )));
            }
        }
        match output.event(value, line) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
                return Ok(Some(SessionEnd::Done));
            }
            Err(error) => return Err(WatchError::Output(error)),
        }
        position.cover(revision);
        position.printed += 1;
        if self.args.limit.is_some_and(|limit| position.printed >= limit) {
            return Ok(Some(SessionEnd::Done));
        }
        Ok(None)
    }

    /// Sends the request; the body of a 200, or why not.
    async fn connect(&self, path: &str) -> Result<Incoming, Connect> {
        let accept = [("accept", "application/x-ndjson".to_string())];
        let response =
            match self.client.open(hyper::Method::GET, path, &accept, whole_body(Bytes::new())).await {
                Ok(response) => response,
                Err(ClientError::BadAddress(_)) => {
                    return Err(Connect::Refused(format!("invalid server address '{}'", self.base)));
                }
                Err(error) => return Err(Connect::Failed(error.to_string())),
            };
        let status = response.status();
        if status.is_success() {
            return Ok(response.into_body());
        }
        let body = http_body_util::Limited::new(response.into_body(), MAX_ERROR_BODY);
        let bytes = match tokio::time::timeout(CONNECT_TIMEOUT, body.collect()).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            _ => Bytes::new(),
        };
        let refusal =
            Refusal::from_answer(status.as_u16(), serde_json::from_slice(&bytes).unwrap_or_default());
        // A witness serves no history, and a server error may pass: try the next server. Anything else the
        // server refused would be refused again.
        if status.is_server_error() || refusal.code == "witness" {
            Err(Connect::Failed(format!("{}: {}", self.base, refusal.message)))
        } else {
            Err(Connect::Refused(format!("{}: {refusal}", self.base)))
        }
    }
}

/// Why a connection gave no stream.
#[derive(Debug)]
enum Connect {
    /// Worth another try (possibly on another server).
    Failed(String),
    /// Would be refused again.
    Refused(String),
}

//! The `tandem` command line: a client of the admin API, plus `serve`, offline commands and benchmarks.
//!
//! Exit codes scripts can trust: 0 done, 1 refused or failed (the message says why), 2 usage error, 3 the
//! server could not be reached.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use hyper::Method;
use serde_json::{Value, json};

use crate::client::{ApiClient, ClientError};
use crate::config::Config;
use crate::http::percent_encode;

/// Exit code: refused or failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: usage error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: server unreachable.
pub const EXIT_UNREACHABLE: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "tandem",
    version,
    about = "Event-sourced, replicated configuration store with a network-boot server"
)]
pub struct Cli {
    /// The node to talk to.
    #[arg(long, global = true, env = "TANDEM_SERVER", default_value = "http://127.0.0.1:7070")]
    pub server: String,
    /// The API bearer token (its name is recorded as the actor of your changes).
    #[arg(long, global = true, env = "TANDEM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start a node (single node on the defaults when no flags are given).
    Serve(ServeArgs),
    /// Show the node's and the cluster's status.
    Status,
    /// Create or replace a document: JSON text, or @FILE.
    Put {
        collection: String,
        id: String,
        document: String,
        #[arg(long, default_value = "")]
        reason: String,
        /// Only if the document was last changed at this revision.
        #[arg(long)]
        if_mod_revision: Option<u64>,
        /// A client request id: a retried put with the same id applies once.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Show one document.
    Get {
        collection: String,
        id: String,
        #[arg(long, default_value = "local")]
        consistency: String,
        /// As it was at this revision.
        #[arg(long)]
        at: Option<u64>,
    },
    /// List the documents of a collection.
    List { collection: String },
    /// Delete a document.
    Delete {
        collection: String,
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List events (who changed what).
    History {
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
    },
    /// Print the whole configuration (now or at a revision) as JSON.
    Export(crate::operations::ExportArgs),
    /// Show what differs between two revisions.
    Diff(crate::operations::DiffArgs),
    /// Make the configuration what it was at a revision, as a new change (preview, confirm, apply).
    Revert(crate::operations::RevertArgs),
    /// Undo one change set, as a new change (preview, confirm, apply).
    Undo(crate::operations::UndoArgs),
    /// Make the configuration equal to an export file, as a new change (preview, confirm, apply).
    Import(crate::operations::ImportArgs),
    /// Manage the cluster's servers.
    Servers {
        #[command(subcommand)]
        command: ServersCommand,
    },
    /// Manage firmware images.
    Firmware {
        #[command(subcommand)]
        command: FirmwareCommand,
    },
    /// Play a terminal: fetch the boot document and firmware from the first boot server that answers.
    Boot(crate::boot::client::BootArgs),
    /// Print every change as it happens, from a revision on; resumes after a disconnect without gap or
    /// duplicate (`--server` may list several servers, comma-separated, tried in turn).
    Watch(crate::watch::WatchArgs),
    /// Copy another installation's configuration here, one way: preview, confirm, copy blobs, apply.
    Sync(crate::sync::SyncArgs),
    /// Offline recovery on a stopped node's data directory.
    Recover(RecoverArgs),
    /// Take a backup, check one, or restore one (into a new cluster, or live into a running one).
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Make API tokens for a node's config file (offline): a new token, or the digest of a secret.
    Token {
        #[command(subcommand)]
        command: crate::token::TokenCommand,
    },
    /// Run a benchmark and print its figures.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum ServersCommand {
    /// Add a server: discover it through its API, add it as a learner, wait for it to catch up, promote it.
    Add {
        name: String,
        /// The new server's API address (default: NAME resolved by DNS, port 7070).
        #[arg(long)]
        api: Option<String>,
        #[arg(long, default_value = "data")]
        role: String,
    },
    /// List the cluster's servers.
    List,
    /// Remove a server.
    Remove { name: String },
}

#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// Download a backup of the node's store: streamed to a temporary file, verified, renamed into place.
    Create {
        /// Where to write it (default: the name the server suggests, in the current directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a backup file completely (offline): trailer, checksum, history, documents, blobs.
    Verify { file: PathBuf },
    /// Restore a backup: offline into a new data directory (a new cluster with the backup's history), or
    /// with --live into the running cluster at --server as one new change (its history is kept).
    Restore {
        file: PathBuf,
        /// Offline: the new node's data directory (must not exist, or be empty); then `tandem serve --data-dir`.
        #[arg(long, conflicts_with = "live", required_unless_present = "live")]
        data_dir: Option<PathBuf>,
        /// Restore into the running cluster at --server (needs --reason).
        #[arg(long)]
        live: bool,
        /// Why (recorded in the history; required with --live).
        #[arg(long)]
        reason: Option<String>,
        /// Apply without asking (required when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
        /// Only show what a live restore would change.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum FirmwareCommand {
    /// Upload a firmware image (and optional kernel/initrd) and create or update its firmware document.
    Add(crate::firmware::FirmwareAddArgs),
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// The storage engine: apply rates, replay rate, snapshot build and install.
    Storage(crate::bench::StorageBenchOptions),
    /// A pair with a witness on this machine: write throughput and failover time.
    Cluster(crate::bench::cluster::ClusterBenchOptions),
    /// The boot server of one node: config requests/s and TFTP time against nginx and atftpd, peak memory.
    Boot(crate::bench::boot::BootBenchOptions),
    /// Operator commands on a large history: restore, history, export, diff, backup.
    Operations(crate::bench::operations::OperationsBenchOptions),
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// A TOML config file (see docs/tandem.example.toml); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub api: Option<std::net::SocketAddr>,
    #[arg(long)]
    pub peer: Option<std::net::SocketAddr>,
    #[arg(long)]
    pub boot: Option<std::net::SocketAddr>,
    #[arg(long)]
    pub tftp: Option<std::net::SocketAddr>,
    #[arg(long)]
    pub boot_advertise: Option<String>,
    /// data, witness or mirror.
    #[arg(long)]
    pub role: Option<String>,
    /// Start empty and wait to be added to an existing cluster.
    #[arg(long)]
    pub join: bool,
    #[arg(long, env = "TANDEM_CLUSTER_SECRET")]
    pub cluster_secret: Option<String>,
}

impl ServeArgs {
    /// Defaults, then the file, then flags.
    pub fn into_config(self) -> Result<Config, String> {
        let mut config = Config::default();
        if let Some(path) = &self.config {
            config = config.merge_file(path).map_err(|e| e.to_string())?;
        }
        if let Some(v) = self.data_dir {
            config.data_dir = v;
        }
        if let Some(v) = self.name {
            config.name = v;
        }
        if let Some(v) = self.api {
            config.api = v;
        }
        if let Some(v) = self.peer {
            config.peer = v;
        }
        if let Some(v) = self.boot {
            config.boot = v;
        }
        if let Some(v) = self.tftp {
            config.tftp = v;
        }
        if let Some(v) = self.boot_advertise {
            config.boot_advertise = Some(v);
        }
        if let Some(v) = self.role {
            config.role = v.parse()?;
        }
        config.join |= self.join;
        if let Some(v) = self.cluster_secret {
            config.cluster_secret = Some(v);
        }
        Ok(config)
    }
}

#[derive(Args, Debug)]
pub struct RecoverArgs {
    /// The stopped node's data directory.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Make this node the sole voter of its cluster (the other nodes are lost).
    #[arg(long)]
    pub force_standalone: bool,
    /// Why (recorded in the history when the node next starts).
    #[arg(long, default_value = "forced recovery after losing the partner node")]
    pub reason: String,
}

/// A failure of a CLI command, with its exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> Self {
        let code =
            if matches!(error, ClientError::Unreachable { .. }) { EXIT_UNREACHABLE } else { EXIT_FAILED };
        CliError { code, message: error.to_string() }
    }
}

fn failed(message: impl Into<String>) -> CliError {
    CliError { code: EXIT_FAILED, message: message.into() }
}

/// Runs a client command against the API.
pub async fn run_client(cli: &Cli) -> Result<(), CliError> {
    let client = ApiClient::new(&cli.server, cli.token.clone());
    let (method, path, body): (Method, String, Option<Value>) = match &cli.command {
        Command::Status => (Method::GET, "/v1/status".into(), None),
        Command::Put { collection, id, document, reason, if_mod_revision, request_id } => {
            let text = match document.strip_prefix('@') {
                Some(file) => {
                    std::fs::read_to_string(file).map_err(|e| failed(format!("cannot read {file}: {e}")))?
                }
                None => document.clone(),
            };
            let value: Value = serde_json::from_str(&text).map_err(|e| CliError {
                code: EXIT_USAGE,
                message: format!("the document is not valid JSON: {e}"),
            })?;
            let mut path = format!("/v1/docs/{collection}/{id}?reason={}", percent_encode(reason));
            if let Some(revision) = if_mod_revision {
                path.push_str(&format!("&if_mod_revision={revision}"));
            }
            if let Some(request_id) = request_id {
                path.push_str(&format!("&request_id={}", percent_encode(request_id)));
            }
            (Method::PUT, path, Some(value))
        }
        Command::Get { collection, id, consistency, at } => {
            let mut path = format!("/v1/docs/{collection}/{id}?consistency={}", percent_encode(consistency));
            if let Some(at) = at {
                path.push_str(&format!("&at={at}"));
            }
            (Method::GET, path, None)
        }
        Command::List { collection } => (Method::GET, format!("/v1/docs/{collection}"), None),
        Command::Delete { collection, id, reason } => {
            (Method::DELETE, format!("/v1/docs/{collection}/{id}?reason={}", percent_encode(reason)), None)
        }
        Command::History { collection, id, actor, from, to, limit } => {
            let mut query = Vec::new();
            for (key, value) in [("collection", collection), ("id", id), ("actor", actor)] {
                if let Some(value) = value {
                    query.push(format!("{key}={}", percent_encode(value)));
                }
            }
            for (key, value) in [("from", from), ("to", to), ("limit", limit)] {
                if let Some(value) = value {
                    query.push(format!("{key}={value}"));
                }
            }
            (Method::GET, format!("/v1/history?{}", query.join("&")), None)
        }
        Command::Servers { command: ServersCommand::List } => {
            (Method::GET, "/v1/cluster/servers".into(), None)
        }
        Command::Servers { command: ServersCommand::Remove { name } } => {
            (Method::DELETE, format!("/v1/cluster/servers/{}", percent_encode(name)), None)
        }
        Command::Servers { command: ServersCommand::Add { name, api, role } } => {
            let api = api.clone().unwrap_or_else(|| format!("{name}:7070"));
            let (status, info) =
                ApiClient::new(&api, cli.token.clone()).send(Method::GET, "/v1/node", None).await?;
            if status != 200 {
                return Err(failed(format!("{api} did not say who it is (HTTP {status}): {info}")));
            }
            let announced_role = info["role"].as_str().unwrap_or("data");
            if announced_role != role {
                return Err(failed(format!(
                    "{name} was started with --role {announced_role}, not {role}: restart it with --role {role} or pass --role {announced_role}"
                )));
            }
            let body = json!({"id": info["id"], "name": name, "role": role, "peer_addr": info["peer_addr"],
                              "api_addr": info["api_addr"], "boot_addr": info["boot_addr"]});
            (Method::POST, "/v1/cluster/servers".into(), Some(body))
        }
        Command::Serve(_)
        | Command::Recover(_)
        | Command::Bench { .. }
        | Command::Token { .. }
        | Command::Boot(_)
        | Command::Backup { .. }
        | Command::Watch(_)
        | Command::Sync(_)
        | Command::Firmware { .. }
        | Command::Export(_)
        | Command::Diff(_)
        | Command::Revert(_)
        | Command::Undo(_)
        | Command::Import(_) => {
            unreachable!("not client commands")
        }
    };
    let (status, value) = client.send(method, &path, body).await?;
    if !(200..300).contains(&status) {
        if cli.json {
            println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
        }
        let message = value["message"].as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
        let hint = value["hint"].as_str().map(|h| format!("\nhint: {h}")).unwrap_or_default();
        return Err(failed(format!("{message}{hint}")));
    }
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
    } else {
        print_human(&cli.command, &value);
    }
    Ok(())
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

fn print_human(command: &Command, value: &Value) {
    match command {
        Command::Status => {
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
            if let Some(cluster) = value["cluster_id"].as_str() {
                println!("cluster   {cluster}");
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
            print_backup_status(&value["backup"]);
            let peers = value["peers"].as_array().cloned().unwrap_or_default();
            if !peers.is_empty() {
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
            }
            let recent = value["recent_changes"].as_array().cloned().unwrap_or_default();
            if !recent.is_empty() {
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
        }
        Command::Get { .. } => {
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
        }
        Command::List { .. } => {
            let documents = value["documents"].as_array().cloned().unwrap_or_default();
            println!("{:<32} {:>8} {:>8}  DOCUMENT", "ID", "VERSION", "MOD_REV");
            for doc in &documents {
                let body = doc["document"].to_string();
                let body: String = body.chars().take(80).collect();
                println!(
                    "{:<32} {:>8} {:>8}  {}",
                    doc["id"].as_str().unwrap_or("?"),
                    doc["version"],
                    doc["mod_revision"],
                    body
                );
            }
            println!("({} documents at revision {})", documents.len(), value["revision"]);
        }
        Command::History { .. } => {
            let events = value["events"].as_array().cloned().unwrap_or_default();
            println!("{:>8}  {:<20} {:<16} CHANGES", "REVISION", "TIME", "ACTOR");
            for event in &events {
                let time = event["timestamp_ms"].as_u64().map(|ms| {
                    tandem_cluster::node::rfc3339(
                        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
                    )
                });
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
        }
        Command::Servers { command: ServersCommand::List } => {
            println!("{:<16} {:>20} {:<8} {:<6} {:<22} {:<22}", "NAME", "ID", "ROLE", "VOTER", "PEER", "API");
            for server in value["servers"].as_array().into_iter().flatten() {
                println!(
                    "{:<16} {:>20} {:<8} {:<6} {:<22} {:<22}",
                    server["name"].as_str().unwrap_or("?"),
                    server["id"].as_u64().unwrap_or(0),
                    server["role"].as_str().unwrap_or("?"),
                    if server["voter"].as_bool() == Some(true) { "yes" } else { "no" },
                    server["peer_addr"].as_str().unwrap_or("?"),
                    server["api_addr"].as_str().unwrap_or("?"),
                );
            }
        }
        _ => {
            if let Some(revision) = value["revision"].as_u64() {
                println!("{} at revision {revision}", value["outcome"].as_str().unwrap_or("done"));
            } else {
                println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
            }
        }
    }
}

/// Runs the whole command line; returns the process exit code.
pub fn main_with(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let result: Result<(), CliError> = runtime.block_on(async {
        match &cli.command {
            Command::Serve(args) => {
                let config =
                    args.clone().into_config().map_err(|message| CliError { code: EXIT_USAGE, message })?;
                crate::serve::serve(config).await.map_err(|e| failed(format!("{e:#}")))
            }
            Command::Boot(args) => match crate::boot::client::boot(args).await {
                Ok(result) => {
                    match &result.firmware {
                        Some((name, digest)) => println!(
                            "booted from {} at revision {}: firmware {name} ({digest}) verified",
                            result.server, result.revision
                        ),
                        None => println!(
                            "booted from {} at revision {} (no firmware assigned)",
                            result.server, result.revision
                        ),
                    }
                    Ok(())
                }
                Err(error) => Err(failed(format!("{error:#}"))),
            },
            Command::Firmware { command: FirmwareCommand::Add(args) } => {
                let token = cli.token.clone();
                match crate::firmware::add(&cli.server, token.as_deref(), args).await {
                    Ok(answer) if cli.json => {
                        println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
                        Ok(())
                    }
                    Ok(answer) => {
                        println!(
                            "firmware {} ({} bytes, sha256 {}) {} at revision {}",
                            args.name,
                            answer["size"],
                            answer["digest"].as_str().unwrap_or("?"),
                            answer["outcome"].as_str().unwrap_or("?"),
                            answer["revision"]
                        );
                        Ok(())
                    }
                    Err(error) => {
                        let unreachable = error
                            .downcast_ref::<ClientError>()
                            .is_some_and(|e| matches!(e, ClientError::Unreachable { .. }));
                        Err(CliError {
                            code: if unreachable { EXIT_UNREACHABLE } else { EXIT_FAILED },
                            message: format!("{error:#}"),
                        })
                    }
                }
            }
            Command::Sync(args) => crate::sync::run(args, cli.token.as_deref(), cli.json)
                .await
                .map_err(|error| CliError { code: error.exit_code(), message: error.to_string() }),
            Command::Token { command } => crate::token::run(command, cli.json).map_err(failed),
            Command::Recover(args) => {
                crate::recover::recover(args).await.map_err(|e| failed(format!("{e:#}")))
            }
            Command::Backup { command } => crate::backup::run(&cli, command).await,
            Command::Watch(args) => crate::watch::watch(&cli.server, cli.token.as_deref(), cli.json, args)
                .await
                .map_err(|e| CliError { code: e.exit_code(), message: e.to_string() }),
            Command::Bench { which: BenchCommand::Storage(options) } => {
                crate::bench::storage(options).map_err(|e| failed(format!("{e:#}")))
            }
            Command::Bench { which: BenchCommand::Cluster(options) } => {
                crate::bench::cluster::cluster(options).await.map_err(|e| failed(format!("{e:#}")))
            }
            Command::Bench { which: BenchCommand::Operations(options) } => {
                crate::bench::operations::operations(options).await.map_err(|e| failed(format!("{e:#}")))
            }
            Command::Bench { which: BenchCommand::Boot(options) } => {
                crate::bench::boot::boot(options).await.map_err(|e| failed(format!("{e:#}")))
            }
            Command::Export(args) => crate::operations::export(&cli, args).await,
            Command::Diff(args) => crate::operations::diff(&cli, args).await,
            Command::Revert(args) => crate::operations::revert(&cli, args).await,
            Command::Undo(args) => crate::operations::undo(&cli, args).await,
            Command::Import(args) => crate::operations::import(&cli, args).await,
            _ => run_client(&cli).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error.message);
            ExitCode::from(error.code)
        }
    }
}

/// A Unix time in milliseconds as RFC 3339 (UTC).
fn format_time(unix_ms: u64) -> String {
    tandem_cluster::node::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms))
}

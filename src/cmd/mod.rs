//! The `tandem` command line: one file per command or command family, each with its clap arguments beside
//! the code that runs it.
//!
//! A command gets a small [`Context`] (`--server`, `--token`, `--json`), calls the client library
//! ([`crate::client`]) or, for `serve`, the node ([`crate::node`]), prints what it got ([`output`]), and fails
//! with the one [`error::CmdError`], whose code is the process's exit code ([`error`]): 0 done,
//! 1 refused or failed (the message says why), 2 usage error, 3 the server could not be reached.
//!
//! | command | file |
//! |---|---|
//! | `serve` | [`serve`] |
//! | `status` | [`status`] |
//! | `put`, `get`, `list`, `delete` | [`documents`] |
//! | `history`, `history verify` | [`history`] |
//! | `export`, `diff`, `revert`, `undo`, `import` | [`operations`] |
//! | `servers add / list / remove` | [`servers`] |
//! | `firmware add` | [`firmware`] |
//! | `blobs list / remove` | [`blobs`] |
//! | `boot` | [`boot`] |
//! | `watch` | [`watch`] |
//! | `sync` | [`sync`] |
//! | `backup create / verify / restore` | [`backup`] |
//! | `recover` | [`recover`] |
//! | `token new / hash` | [`token`] |
//! | `cert init / node` | [`cert`] |
//! | `demo` | [`demo`] |
//! | `man` (hidden: the manual page the Debian package installs) | [`man`] |
//! | `bench …` (feature `bench`) | `bench` |

pub mod backup;
#[cfg(feature = "bench")]
pub mod bench;
pub mod blobs;
pub mod boot;
pub mod cert;
pub mod demo;
pub mod documents;
pub mod error;
pub mod firmware;
pub mod history;
pub mod man;
pub mod operations;
pub mod output;
pub mod recover;
pub mod serve;
pub mod servers;
pub mod status;
pub mod sync;
pub mod token;
pub mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hyper::Method;
use serde_json::Value;

use crate::client::{ApiClient, ClientError};
use error::{CmdError, EXIT_FAILED};

#[derive(Parser, Debug)]
#[command(
    name = "tandem",
    version,
    about = "Event-sourced, replicated configuration store with a network-boot server"
)]
pub struct Cli {
    /// The node to talk to (`https://HOST:PORT` for a node with [tls]; a bare HOST:PORT is https when
    /// --ca-cert is given).
    #[arg(long, global = true, env = "TANDEM_SERVER", default_value = "http://127.0.0.1:7070")]
    pub server: String,
    /// The CA certificate(s) (PEM) that an https:// server's certificate must be signed by: the cluster's
    /// ca.pem from `tandem cert init`.
    #[arg(long, global = true, env = "TANDEM_CACERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// The API bearer token (its name is recorded as the actor of your changes).
    #[arg(long, global = true, env = "TANDEM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Who you are, recorded as the actor of your changes beside the token's name (default: the token's
    /// name).
    #[arg(long, global = true, env = "TANDEM_ACTOR")]
    pub actor: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start a node (single node on the defaults when no flags are given).
    Serve(serve::ServeArgs),
    /// Try it: a pair with a witness on 127.0.0.1 with some configuration, until Ctrl-C.
    Demo(demo::DemoArgs),
    /// Show the node's and the cluster's status.
    Status,
    /// Create or replace a document: JSON text, or @FILE.
    Put(documents::PutArgs),
    /// Show one document.
    Get(documents::GetArgs),
    /// List the documents of a collection.
    List(documents::ListArgs),
    /// Delete a document.
    Delete(documents::DeleteArgs),
    /// List events (who changed what), export the audit trail of a period (`--format csv|json`), or verify
    /// the history's hash chain on every member (`history verify`).
    History(history::HistoryArgs),
    /// Print the whole configuration (now or at a revision) as JSON.
    Export(operations::ExportArgs),
    /// Show what differs between two revisions.
    Diff(operations::DiffArgs),
    /// Make the configuration what it was at a revision, as a new change (preview, confirm, apply).
    Revert(operations::RevertArgs),
    /// Undo one change set, as a new change (preview, confirm, apply).
    Undo(operations::UndoArgs),
    /// Make the configuration equal to an export file, as a new change (preview, confirm, apply).
    Import(operations::ImportArgs),
    /// Manage the cluster's servers.
    Servers {
        #[command(subcommand)]
        command: servers::ServersCommand,
    },
    /// Manage firmware images.
    Firmware {
        #[command(subcommand)]
        command: firmware::FirmwareCommand,
    },
    /// List the stored blobs and what references each; remove the ones nothing references.
    Blobs {
        #[command(subcommand)]
        command: blobs::BlobsCommand,
    },
    /// Play a terminal: fetch the boot document and firmware from the first boot server that answers.
    Boot(boot::BootArgs),
    /// Print every change as it happens, from a revision on; resumes after a disconnect without gap or
    /// duplicate (`--server` may list several servers, comma-separated, tried in turn).
    Watch(watch::WatchArgs),
    /// Copy another installation's configuration here, one way: preview, confirm, copy blobs, apply.
    Sync(sync::SyncArgs),
    /// Offline recovery on a stopped node's data directory.
    Recover(recover::RecoverArgs),
    /// Take a backup, check one, or restore one (into a new cluster, or live into a running one).
    Backup {
        #[command(subcommand)]
        command: backup::BackupCommand,
    },
    /// Make API tokens for a node's config file (offline): a new token, or the digest of a secret.
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
    },
    /// Make TLS certificates (offline): the cluster CA, and each node's key and certificate.
    Cert {
        #[command(subcommand)]
        command: cert::CertCommand,
    },
    /// Run a benchmark and print its figures.
    #[cfg(feature = "bench")]
    Bench {
        #[command(subcommand)]
        which: bench::BenchCommand,
    },
    /// Print the manual page (roff) that the Debian package installs as tandem(1).
    #[command(hide = true)]
    Man,
}

/// What every command may use of the global options.
#[derive(Debug, Clone)]
pub struct Context {
    /// `--server` (for `watch`, possibly a comma-separated list).
    pub server: String,
    pub token: Option<String>,
    /// `--json`: print JSON instead of tables.
    pub json: bool,
    /// `--actor`: sent with every request as `X-Tandem-Actor`.
    pub actor: Option<String>,
}

impl Context {
    /// A client of `--server`.
    pub fn client(&self) -> ApiClient {
        self.client_of(&self.server)
    }

    /// A client of another server, with the same token.
    pub fn client_of(&self, server: &str) -> ApiClient {
        ApiClient::new(server, self.token.clone()).with_actor(self.actor.clone())
    }

    /// One JSON request to `--server`; a refusal's answer is printed as is with `--json` before it fails.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, CmdError> {
        match self.client().call(method, path, body).await {
            Ok(answer) => Ok(answer),
            Err(ClientError::Refused(refusal)) if self.json => {
                output::print_json(&refusal.answer);
                Err(ClientError::Refused(refusal).into())
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// Runs one command.
pub async fn run(ctx: &Context, command: &Command) -> Result<(), CmdError> {
    match command {
        Command::Serve(args) => serve::run(args).await,
        Command::Demo(args) => demo::run(args, ctx.json).await,
        Command::Status => status::run(ctx).await,
        Command::Put(args) => documents::put(ctx, args).await,
        Command::Get(args) => documents::get(ctx, args).await,
        Command::List(args) => documents::list(ctx, args).await,
        Command::Delete(args) => documents::delete(ctx, args).await,
        Command::History(args) => history::run(ctx, args).await,
        Command::Export(args) => operations::export(ctx, args).await,
        Command::Diff(args) => operations::diff(ctx, args).await,
        Command::Revert(args) => operations::revert(ctx, args).await,
        Command::Undo(args) => operations::undo(ctx, args).await,
        Command::Import(args) => operations::import(ctx, args).await,
        Command::Servers { command } => servers::run(ctx, command).await,
        Command::Firmware { command } => firmware::run(ctx, command).await,
        Command::Blobs { command } => blobs::run(ctx, command).await,
        Command::Boot(args) => boot::run(args).await,
        Command::Watch(args) => watch::run(ctx, args).await,
        Command::Sync(args) => sync::run(ctx, args).await,
        Command::Recover(args) => recover::run(args).await,
        Command::Backup { command } => backup::run(ctx, command).await,
        Command::Token { command } => token::run(command, ctx.json).map_err(CmdError::failed),
        Command::Cert { command } => cert::run(command, ctx.json).map_err(CmdError::failed),
        #[cfg(feature = "bench")]
        Command::Bench { which } => bench::run(which).await,
        Command::Man => man::print().map_err(|e| CmdError::failed(format!("writing the manual page: {e}"))),
    }
}

/// Runs the whole command line; returns the process exit code.
pub fn main_with(cli: Cli) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if matches!(cli.command, Command::Serve(_)) {
        // The node's control plane; its boot servers get a runtime of their own (see `crate::node`).
        builder.worker_threads(crate::node::CONTROL_WORKER_THREADS).thread_name("tandem-control");
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    if let Some(ca) = &cli.ca_cert
        && let Err(error) = crate::client::api::trust_ca(ca)
    {
        eprintln!("error: --ca-cert: {error}");
        return ExitCode::from(error::EXIT_USAGE);
    }
    let ctx = Context { server: cli.server, token: cli.token, json: cli.json, actor: cli.actor };
    match runtime.block_on(run(&ctx, &cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error.message);
            ExitCode::from(error.code)
        }
    }
}

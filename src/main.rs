//! The `tandem` command. Thin: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "tandem",
    version,
    about = "Event-sourced, replicated configuration store with a network-boot server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Open (or create) the node's data directory and report its state.
    ///
    /// The network services (admin API, peer, boot HTTP and TFTP) arrive with the cluster and boot-server
    /// work; for now this checks the store, prints what it holds and exits.
    Serve {
        /// Where the node keeps its data.
        #[arg(long, default_value = "./tandem-data")]
        data_dir: PathBuf,
    },
    /// Run a benchmark and print its figures.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// The storage engine: apply rates, replay rate, snapshot build and install.
    Storage(tandem::bench::StorageBenchOptions),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { data_dir } => serve(&data_dir),
        Command::Bench { which: BenchCommand::Storage(options) } => tandem::bench::storage(&options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(data_dir: &std::path::Path) -> anyhow::Result<()> {
    let store = tandem_storage::Store::open(&data_dir.join("store"))?;
    println!("tandem: data directory {} opened", data_dir.display());
    println!("  cluster id: {}", store.cluster_id());
    println!("  revision:   {}", store.revision());
    println!("  documents:  {}", store.projection().len());
    println!("  blobs:      {}", store.blobs().count());
    println!(
        "tandem serve currently only opens and checks the store: the admin API, peer network and boot server \
         are not implemented yet (see README.md)."
    );
    Ok(())
}

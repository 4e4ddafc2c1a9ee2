//! The `tandem` command. Thin: parses arguments and hands them to the library ([`tandem::cmd`]).

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: the write path allocates many small, short-lived buffers on several
/// threads, where glibc's arenas spent 15-20 % of a node's CPU (docs/cluster.md, "Where a write's time goes").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,tandem=info,tandem_cluster=info")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match tandem::cmd::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(tandem::cmd::error::EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    tandem::cmd::main_with(cli)
}

//! The `tandem` command. Thin: parses arguments and hands them to the library ([`tandem::cmd`]).

use std::process::ExitCode;

use clap::Parser;

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

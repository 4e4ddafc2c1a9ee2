//! `tandem recover --data-dir DIR --force-standalone`: offline recovery of a stopped survivor (see
//! [`tandem_cluster::recover`]).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

/// Options of `tandem recover`.
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

/// Runs `tandem recover`.
pub async fn run(args: &RecoverArgs) -> Result<(), super::error::CmdError> {
    recover(args).await.map_err(|e| super::error::CmdError::failed(format!("{e:#}")))
}

/// Runs the recovery and prints what it did and what to do next.
async fn recover(args: &RecoverArgs) -> Result<()> {
    if !args.force_standalone {
        bail!("say what to recover: --force-standalone makes this node the sole voter of its cluster");
    }
    let actor = std::env::var("USER").unwrap_or_else(|_| "operator".into());
    let report = tandem_cluster::recover::force_standalone(&args.data_dir, &actor, &args.reason).await?;
    println!(
        "node {} is now the sole voter of its cluster (epoch {}, membership entry {}); previous voters: {}",
        report.node,
        report.epoch,
        report.membership_log_id,
        report.previous_voters.join(", ")
    );
    if report.promoted_from_mirror {
        println!("the mirror was promoted to a data node");
    }
    println!(
        "start it again with `tandem serve`; it takes writes alone. The nodes left behind are refused: wipe their \
         data directories, start them with --join and add them with `tandem servers add`."
    );
    Ok(())
}

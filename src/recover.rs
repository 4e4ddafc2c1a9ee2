//! `tandem recover --data-dir DIR --force-standalone`: offline recovery of a stopped survivor (see
//! [`tandem_cluster::recover`]).

use anyhow::{Result, bail};

use crate::cli::RecoverArgs;

/// Runs the recovery and prints what it did and what to do next.
pub async fn recover(args: &RecoverArgs) -> Result<()> {
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

//! `tandem bench …` (cargo feature `bench`): run a benchmark of [`crate::bench`] and print its figures.

use clap::Subcommand;

use super::error::CmdError;

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

/// Runs a benchmark.
pub async fn run(which: &BenchCommand) -> Result<(), CmdError> {
    let result = match which {
        BenchCommand::Storage(options) => crate::bench::storage(options),
        // `--vs-etcd` runs the etcd comparison, which builds on the cluster bench's pieces.
        BenchCommand::Cluster(options) if options.vs_etcd => crate::bench::etcd::vs_etcd(options).await,
        BenchCommand::Cluster(options) if options.handover => {
            crate::bench::handover::handovers(options).await
        }
        BenchCommand::Cluster(options) => crate::bench::cluster::cluster(options).await,
        BenchCommand::Boot(options) if options.storm => crate::bench::storm::storm_bench(options).await,
        BenchCommand::Boot(options) => crate::bench::boot::boot(options).await,
        BenchCommand::Operations(options) => crate::bench::operations::operations(options).await,
    };
    result.map_err(|e| CmdError::failed(format!("{e:#}")))
}

//! The cluster crate's Prometheus metrics: how long applying a batch and making the log durable take, and how
//! many writes share a log entry.
//!
//! Declared here, registered into a registry the caller passes in (never the global default), and handed to
//! the log store, the state machine and the proposer, which observe them where the work happens.

use prometheus::{Histogram, HistogramOpts, Registry};

/// Durations measured inside the Raft storage.
#[derive(Clone, Debug)]
pub struct ClusterMetrics {
    /// One `Store::apply` of a batch of committed entries.
    pub apply_seconds: Histogram,
    /// One fsync of the Raft log's segment files (appends, votes, truncations; queued writes share one).
    pub fsync_seconds: Histogram,
    /// How many client writes each log entry proposed by this node carried (group commit).
    pub entry_writes: Histogram,
}

impl ClusterMetrics {
    /// Creates the metrics and registers them into `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let buckets = prometheus::exponential_buckets(0.000_025, 2.0, 16)?;
        let apply_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "tandem_apply_duration_seconds",
                "Applying one batch of committed entries to the store",
            )
            .buckets(buckets.clone()),
        )?;
        let fsync_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "tandem_fsync_duration_seconds",
                "One fsync of the Raft log's segment files (appends, votes, truncations)",
            )
            .buckets(buckets),
        )?;
        let entry_writes = Histogram::with_opts(
            HistogramOpts::new(
                "tandem_entry_writes",
                "Client writes carried by one log entry this node proposed (group commit)",
            )
            .buckets(prometheus::exponential_buckets(1.0, 2.0, 9)?),
        )?;
        registry.register(Box::new(apply_seconds.clone()))?;
        registry.register(Box::new(entry_writes.clone()))?;
        registry.register(Box::new(fsync_seconds.clone()))?;
        Ok(ClusterMetrics { apply_seconds, fsync_seconds, entry_writes })
    }
}

//! The node's Prometheus metrics, registered into a registry that is passed in (never the global default).
//!
//! Gauges that mirror Raft state are refreshed from openraft's metrics when `/metrics` is scraped; counters
//! and histograms are updated where the events happen (API requests here; apply and fsync durations in the
//! cluster crate's state machine, which registers its own into the same registry).

use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tandem_cluster::node::ClusterNode;

use crate::node::boot::BootState;

/// The node-level metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    has_leader: IntGauge,
    is_leader: IntGauge,
    term: IntGauge,
    leader_changes: IntCounter,
    last_log_index: IntGauge,
    applied_index: IntGauge,
    revision: IntGauge,
    degraded: IntGauge,
    peer_lag: IntGaugeVec,
    peer_lag_seconds: GaugeVec,
    peer_reachable: IntGaugeVec,
    node_info: IntGaugeVec,
    api_requests: IntCounterVec,
    proposals: IntCounterVec,
    api_duration: HistogramVec,
    last_leader: std::sync::Mutex<Option<u64>>,
    boot: BootState,
    /// Held while the boot counters are brought up to the boot server's totals (one scrape at a time).
    boot_refresh: std::sync::Mutex<()>,
    boot_requests: IntCounterVec,
    boot_bytes: IntCounterVec,
    tftp_active: IntGauge,
    tftp_transfers: IntCounterVec,
    terminals_online: IntGaugeVec,
    terminals_offline: IntGauge,
    backup_last_success: IntGauge,
    backup_last_size: IntGauge,
    backup_last_revision: IntGauge,
    backup_failures: IntCounter,
    backup_last_error: IntGauge,
    tls_not_after: IntGauge,
}

/// Creates metrics and registers each into one registry.
struct Register<'a>(&'a Registry);

impl Register<'_> {
    fn register<M: prometheus::core::Collector + Clone + 'static>(&self, metric: M) -> prometheus::Result<M> {
        self.0.register(Box::new(metric.clone()))?;
        Ok(metric)
    }
    fn gauge(&self, name: &str, help: &str) -> prometheus::Result<IntGauge> {
        self.register(IntGauge::new(name, help)?)
    }
    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntGaugeVec> {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels)?)
    }
    fn counter(&self, name: &str, help: &str) -> prometheus::Result<IntCounter> {
        self.register(IntCounter::new(name, help)?)
    }
    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
        self.register(IntCounterVec::new(Opts::new(name, help), labels)?)
    }
}

impl Metrics {
    /// Creates the metrics and registers them into `registry`.
    pub fn new(registry: Registry, boot: BootState) -> prometheus::Result<Self> {
        let r = Register(&registry);
        Ok(Metrics {
            backup_last_success: r.gauge(
                "tandem_backup_last_success_timestamp_seconds",
                "Unix time of the last scheduled backup this node wrote (0: none since start)",
            )?,
            backup_last_size: r
                .gauge("tandem_backup_last_size_bytes", "Size of the last scheduled backup file")?,
            backup_last_revision: r.gauge(
                "tandem_backup_last_revision",
                "Configuration revision of the last scheduled backup file",
            )?,
            backup_failures: r.counter(
                "tandem_backup_failures_total",
                "Scheduled backups that failed (directory missing or unwritable, disk full, verification)",
            )?,
            backup_last_error: r.gauge(
                "tandem_backup_last_error",
                "1 if the last scheduled backup attempt on this node failed, 0 otherwise",
            )?,
            tls_not_after: r.gauge(
                "tandem_tls_certificate_not_after_timestamp_seconds",
                "Unix time at which the node's TLS certificate ends (0: no [tls])",
            )?,
            boot,
            boot_refresh: std::sync::Mutex::new(()),
            boot_requests: r.counter_vec(
                "tandem_boot_requests_total",
                "Boot requests served by this node, by protocol, path kind and outcome",
                &["protocol", "kind", "outcome"],
            )?,
            boot_bytes: r.counter_vec(
                "tandem_boot_bytes_served_total",
                "Bytes served to terminals",
                &["protocol"],
            )?,
            tftp_active: r.gauge("tandem_tftp_transfers_active", "TFTP transfers running now")?,
            tftp_transfers: r.counter_vec(
                "tandem_tftp_transfers_total",
                "TFTP transfers ended, by how: completed, failed, aborted (by the client), refused",
                &["state"],
            )?,
            terminals_online: r.gauge_vec(
                "tandem_terminals_online",
                "Terminals whose heartbeats arrive at this node",
                &["state"],
            )?,
            terminals_offline: r.gauge(
                "tandem_terminals_offline",
                "Configured terminals whose heartbeats do not arrive at this node (0 on a witness)",
            )?,
            has_leader: r.gauge("tandem_raft_has_leader", "1 if this node knows a leader")?,
            is_leader: r.gauge("tandem_raft_is_leader", "1 if this node is the leader")?,
            term: r.gauge("tandem_raft_term", "Current Raft term")?,
            leader_changes: r
                .counter("tandem_raft_leader_changes_total", "Leader changes seen since start")?,
            last_log_index: r.gauge("tandem_raft_last_log_index", "Index of the last Raft log entry")?,
            applied_index: r
                .gauge("tandem_raft_applied_index", "Index of the last applied Raft log entry")?,
            revision: r.gauge("tandem_store_revision", "Configuration revision of this node's store")?,
            degraded: r
                .gauge("tandem_node_degraded", "1 if the node serves its last state without a quorum")?,
            peer_lag: r.gauge_vec(
                "tandem_raft_peer_lag_entries",
                "Log entries a peer is behind the leader (leader only)",
                &["peer"],
            )?,
            peer_lag_seconds: r.register(GaugeVec::new(
                Opts::new(
                    "tandem_raft_peer_lag_seconds",
                    "Seconds since a peer last had the leader's whole log (leader only; 0 when in sync)",
                ),
                &["peer"],
            )?)?,
            peer_reachable: r.gauge_vec(
                "tandem_raft_peer_reachable",
                "1 if this node reached the peer recently, 0 if not (leader: every peer; follower: its leader; \
                 no leader: every voter)",
                &["peer", "role"],
            )?,
            node_info: r.gauge_vec(
                "tandem_node_info",
                "Always 1: this node's id (decimal), name and role",
                &["id", "name", "role"],
            )?,
            api_requests: r.counter_vec(
                "tandem_api_requests_total",
                "Admin API requests",
                &["method", "status"],
            )?,
            proposals: r.counter_vec(
                "tandem_proposals_total",
                "Changes proposed through this node, by result: committed, rejected (deterministic), failed",
                &["result"],
            )?,
            api_duration: r.register(HistogramVec::new(
                HistogramOpts::new("tandem_api_request_duration_seconds", "Admin API request duration")
                    .buckets(prometheus::exponential_buckets(0.0001, 4.0, 10)?),
                &["method"],
            )?)?,
            registry,
            last_leader: std::sync::Mutex::new(None),
        })
    }

    /// The registry, for other components to register into.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts one API request.
    pub fn observe_api(&self, method: &str, status: u16, duration: Duration) {
        self.api_requests.with_label_values(&[method, &status.to_string()]).inc();
        self.api_duration.with_label_values(&[method]).observe(duration.as_secs_f64());
    }

    /// Counts one proposal by its result: `committed`, `rejected` or `failed`.
    pub fn observe_proposal(&self, result: &str) {
        self.proposals.with_label_values(&[result]).inc();
    }

    /// Records the newest backup, written and verified at `unix_seconds` (by this node just now, or found by an
    /// attempt that had nothing to write): no error any more.
    pub fn observe_backup_written(&self, unix_seconds: u64, bytes: u64, revision: u64) {
        self.observe_backup_found(unix_seconds, bytes, revision);
        self.backup_last_error.set(0);
    }

    /// Records the newest backup found in the backup directory (at start), leaving the error as it is.
    pub fn observe_backup_found(&self, unix_seconds: u64, bytes: u64, revision: u64) {
        self.backup_last_success.set(unix_seconds as i64);
        self.backup_last_size.set(bytes as i64);
        self.backup_last_revision.set(revision as i64);
    }

    /// Records when the node's TLS certificate ends (at start and at every reload).
    pub fn observe_tls_certificate(&self, not_after_unix_seconds: i64) {
        self.tls_not_after.set(not_after_unix_seconds);
    }

    /// Records a failed scheduled backup attempt.
    pub fn observe_backup_failure(&self) {
        self.backup_failures.inc();
        self.backup_last_error.set(1);
    }

    /// Copies the node's current Raft and store state into the gauges.
    pub fn refresh(&self, node: &ClusterNode) {
        let status = node.status();
        self.has_leader.set(i64::from(status.leader.is_some()));
        self.is_leader.set(i64::from(status.leader == Some(node.id)));
        self.term.set(status.term as i64);
        self.last_log_index.set(status.last_log_index.unwrap_or(0) as i64);
        self.applied_index.set(status.applied_index.unwrap_or(0) as i64);
        self.revision.set(status.revision.0 as i64);
        self.degraded.set(i64::from(status.degraded));
        if let Ok(mut last) = self.last_leader.lock()
            && *last != status.leader
        {
            if status.leader.is_some() {
                self.leader_changes.inc();
            }
            *last = status.leader;
        }
        self.refresh_boot();
        let role = status.role.to_string();
        if self.node_info.with_label_values(&[&status.id.to_string(), &status.name, &role]).get() == 0 {
            // The role changes when a mirror is promoted: one series at a time.
            self.node_info.reset();
            self.node_info.with_label_values(&[&status.id.to_string(), &status.name, &role]).set(1);
        }
        self.terminals_offline.set(if status.role == tandem_cluster::types::Role::Witness {
            0
        } else {
            let configured = node
                .read_store()
                .map(|store| store.projection().collection("terminals").count())
                .unwrap_or_default();
            let (green, red) = self.boot.heartbeats.online_by_state(crate::node::boot::ONLINE_WINDOW);
            configured.saturating_sub(green + red) as i64
        });
        self.peer_lag.reset();
        self.peer_lag_seconds.reset();
        self.peer_reachable.reset();
        for peer in &status.peers {
            if let Some(lag) = peer.lag_entries {
                self.peer_lag.with_label_values(&[&peer.name]).set(lag as i64);
            }
            if let Some(seconds) = peer.lag_seconds {
                self.peer_lag_seconds.with_label_values(&[&peer.name]).set(seconds);
            }
            if let Some(reachable) = peer.reachable {
                let role = peer.role.to_string();
                self.peer_reachable.with_label_values(&[&peer.name, &role]).set(i64::from(reachable));
            }
        }
    }

    /// Brings the boot metrics up to the boot server's own totals. The boot server counts in atomics of its
    /// own; the counters here advance by the difference, so they are Prometheus counters (never going down
    /// while the process lives), and one scrape at a time does this.
    fn refresh_boot(&self) {
        let _one_at_a_time = self.boot_refresh.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (kind, outcome, count) in self.boot.http.request_counts() {
            advance(&self.boot_requests.with_label_values(&["http", kind.as_str(), outcome.as_str()]), count);
        }
        advance(&self.boot_bytes.with_label_values(&["http"]), self.boot.http.bytes_served());
        let tftp = self.boot.tftp.snapshot();
        advance(&self.boot_bytes.with_label_values(&["tftp"]), tftp.bytes);
        self.tftp_active.set(tftp.active as i64);
        for (state, total) in [
            ("completed", tftp.completed),
            ("failed", tftp.failed),
            ("aborted", tftp.aborted),
            ("refused", tftp.refused),
        ] {
            advance(&self.tftp_transfers.with_label_values(&[state]), total);
        }
        let (green, red) = self.boot.heartbeats.online_by_state(crate::node::boot::ONLINE_WINDOW);
        self.terminals_online.with_label_values(&["green"]).set(green as i64);
        self.terminals_online.with_label_values(&["red"]).set(red as i64);
    }

    /// The text exposition of every metric in the registry.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// Advances `counter` to `total` (never backwards).
fn advance(counter: &IntCounter, total: u64) {
    let behind = total.saturating_sub(counter.get());
    if behind > 0 {
        counter.inc_by(behind);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use prometheus::core::Collector;
    use prometheus::proto::MetricType;
    use tandem_cluster::metrics::ClusterMetrics;

    use super::*;

    /// The operator's reference that must list every metric, and nothing else.
    const DOC: &str = include_str!("../../docs/metrics.md");

    /// A registered metric: its type as the doc writes it, and its label names.
    #[derive(Debug)]
    struct Registered {
        kind: &'static str,
        labels: Vec<String>,
    }

    /// Every metric a node registers into its `/metrics` registry, by name.
    fn registered_metrics() -> BTreeMap<String, Registered> {
        let registry = Registry::new();
        let cluster = ClusterMetrics::new(&registry).expect("cluster metrics");
        let metrics = Metrics::new(registry.clone(), BootState::default()).expect("node metrics");
        // Exhaustive patterns (no `..`): a metric added to either struct does not compile here until it is listed.
        let Metrics {
            registry: _,
            has_leader,
            is_leader,
            term,
            leader_changes,
            last_log_index,
            applied_index,
            revision,
            degraded,
            peer_lag,
            peer_lag_seconds,
            peer_reachable,
            node_info,
            api_requests,
            proposals,
            api_duration,
            last_leader: _,
            boot: _,
            boot_refresh: _,
            boot_requests,
            boot_bytes,
            tftp_active,
            tftp_transfers,
            terminals_online,
            terminals_offline,
            backup_last_success,
            backup_last_size,
            backup_last_revision,
            backup_failures,
            backup_last_error,
            tls_not_after,
        } = &metrics;
        let ClusterMetrics { apply_seconds, fsync_seconds, entry_writes } = &cluster;
        let collectors: [&dyn Collector; 30] = [
            has_leader,
            is_leader,
            term,
            leader_changes,
            last_log_index,
            applied_index,
            revision,
            degraded,
            peer_lag,
            peer_lag_seconds,
            peer_reachable,
            node_info,
            api_requests,
            proposals,
            api_duration,
            boot_requests,
            boot_bytes,
            tftp_active,
            tftp_transfers,
            terminals_online,
            terminals_offline,
            backup_last_success,
            backup_last_size,
            backup_last_revision,
            backup_failures,
            backup_last_error,
            tls_not_after,
            apply_seconds,
            fsync_seconds,
            entry_writes,
        ];

        // One sample in every labelled family (an empty one is not gathered), then the exposition's view: it
        // must hold exactly the collectors above, and gives each metric's type.
        peer_lag.with_label_values(&["b"]).set(0);
        peer_lag_seconds.with_label_values(&["b"]).set(0.0);
        peer_reachable.with_label_values(&["b", "data"]).set(1);
        node_info.with_label_values(&["1", "a", "data"]).set(1);
        boot_requests.with_label_values(&["http", "config", "ok"]).inc_by(0);
        metrics.observe_api("GET", 200, Duration::ZERO);
        metrics.observe_proposal("committed");
        metrics.refresh_boot();
        let types: BTreeMap<String, MetricType> = registry
            .gather()
            .iter()
            .map(|family| (family.name().to_string(), family.get_field_type()))
            .collect();

        let mut registered = BTreeMap::new();
        for desc in collectors.iter().flat_map(|collector| collector.desc()) {
            let kind = match types.get(&desc.fq_name) {
                Some(MetricType::COUNTER) => "counter",
                Some(MetricType::GAUGE) => "gauge",
                Some(MetricType::HISTOGRAM) => "histogram",
                other => panic!("{}: unexpected type {other:?}", desc.fq_name),
            };
            let metric = Registered { kind, labels: desc.variable_labels.clone() };
            assert!(registered.insert(desc.fq_name.clone(), metric).is_none(), "{} twice", desc.fq_name);
        }
        assert_eq!(
            types.keys().collect::<Vec<_>>(),
            registered.keys().collect::<Vec<_>>(),
            "the registry holds metrics that are not fields of Metrics or ClusterMetrics (or the reverse)"
        );
        registered
    }

    /// The doc's table rows that document a metric: `| \`name\` | type | labels | meaning |`, by name.
    fn documented_rows() -> BTreeMap<String, Vec<String>> {
        let mut rows = BTreeMap::new();
        for line in DOC.lines().filter(|line| line.starts_with("| `tandem_")) {
            let cells: Vec<String> =
                line.trim_matches('|').split('|').map(|cell| cell.trim().to_string()).collect();
            let name = cells[0].trim_matches('`').to_string();
            assert!(rows.insert(name.clone(), cells).is_none(), "docs/metrics.md lists {name} twice");
        }
        rows
    }

    #[test]
    fn docs_metrics_md_lists_exactly_the_registered_metrics() {
        let registered = registered_metrics();
        let rows = documented_rows();
        let mut problems = Vec::new();
        for (name, metric) in &registered {
            let Some(cells) = rows.get(name) else {
                problems.push(format!("{name} is registered but has no table row in docs/metrics.md"));
                continue;
            };
            if cells.len() != 4 {
                problems.push(format!("{name}: its row has {} cells, not 4", cells.len()));
                continue;
            }
            if cells[1].split_whitespace().next() != Some(metric.kind) {
                problems.push(format!(
                    "{name}: the doc says type {:?}, the metric is a {}",
                    cells[1], metric.kind
                ));
            }
            if metric.labels.is_empty() && cells[2] != "—" {
                problems.push(format!("{name} has no labels, but the doc lists {:?}", cells[2]));
            }
            for label in &metric.labels {
                if !cells[2].contains(&format!("`{label}`")) {
                    problems.push(format!("{name}: label `{label}` is missing from the doc's labels column"));
                }
            }
        }
        for name in rows.keys().filter(|name| !registered.contains_key(*name)) {
            problems.push(format!("docs/metrics.md documents {name}, which no code registers"));
        }
        for word in unknown_metric_names(DOC, &registered) {
            problems.push(format!("docs/metrics.md mentions {word}, which is not a metric"));
        }
        assert!(problems.is_empty(), "docs/metrics.md is out of date:\n{}", problems.join("\n"));
    }

    /// The `tandem_…` words of `text` (tables, prose, queries) that are neither registered metrics nor series of a
    /// registered histogram.
    fn unknown_metric_names(text: &str, registered: &BTreeMap<String, Registered>) -> BTreeSet<String> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("tandem_"))
            .filter(|word| {
                let histogram_series = ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                    word.strip_suffix(suffix)
                        .and_then(|base| registered.get(base))
                        .is_some_and(|metric| metric.kind == "histogram")
                });
                !registered.contains_key(*word) && !histogram_series
            })
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_grafana_dashboard_and_the_alert_rules_query_only_metrics_a_node_exports() {
        let registered = registered_metrics();
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/grafana/tandem.json"))
                .expect("the dashboard is JSON");
        let mut expressions = Vec::new();
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().into_iter().flatten() {
                expressions.push(target["expr"].as_str().expect("every target has an expr").to_string());
            }
        }
        assert!(expressions.len() >= 20, "only {} queries in the dashboard", expressions.len());
        let unknown = unknown_metric_names(&expressions.join("\n"), &registered);
        assert!(unknown.is_empty(), "docs/grafana/tandem.json queries metrics no node exports: {unknown:?}");
        let unknown = unknown_metric_names(include_str!("../../docs/prometheus/alerts.yml"), &registered);
        assert!(unknown.is_empty(), "docs/prometheus/alerts.yml uses metrics no node exports: {unknown:?}");
    }

    #[test]
    fn a_counter_follows_a_total_upwards_only() {
        let counter = IntCounter::new("t", "t").unwrap();
        advance(&counter, 5);
        assert_eq!(counter.get(), 5);
        advance(&counter, 5);
        advance(&counter, 3);
        assert_eq!(counter.get(), 5, "never backwards");
        advance(&counter, 8);
        assert_eq!(counter.get(), 8);
    }
}

//! `tandem serve`: start a node — open its data directory, start Raft, the peer network and the admin API,
//! and run until SIGTERM or ctrl-c.
//!
//! Start-up is a series of small steps: identity, database, store, Raft log store and state machine, network,
//! listeners (bound before anything else runs, so a busy port fails at once), Raft, then the servers. A node
//! whose data directory has never been part of a cluster initializes itself as a single-node cluster, unless
//! `--join` says to wait to be added.

pub mod api;
pub mod backup;
pub mod boot;
mod chunked_read;
pub mod metrics;

use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use tandem_cluster::identity::Identity;
use tandem_cluster::log_store::LogStore;
use tandem_cluster::network::{PeerNetwork, serve_peer};
use tandem_cluster::node::{ClusterNode, Timing};
use tandem_cluster::state_machine::StateMachine;
use tandem_cluster::{NodeInfo, Raft, Role};
use tandem_storage::{ChangeMeta, ChangeSet, Command, SledDatabase, Store, StoreOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use self::api::{ApiState, serve_api};
use crate::config::Config;
use boot::content::StoreContent;
use boot::http::{BootHttpOptions, serve_boot_http_with};
use boot::tftp::{TftpOptions, serve_tftp};
use boot::{BootContent, BootState};
use metrics::Metrics;

/// Runs a node until it is told to stop.
pub async fn serve(config: Config) -> Result<()> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let mut identity =
        Identity::load_or_create(&config.data_dir, &config.name, config.cluster_secret.as_deref())?;
    if let Some(secret) = &config.cluster_secret
        && secret != &identity.cluster_secret
    {
        identity.cluster_secret = secret.clone();
        identity.save(&config.data_dir)?;
    }
    if config.cluster_secret.is_none() {
        tracing::warn!(
            "no --cluster-secret given: using this node's generated secret (see node.json); give every node of a cluster the same --cluster-secret"
        );
    }

    if config.tokens.is_empty() {
        tracing::warn!(
            api = %config.api,
            "no API tokens configured: the admin API is open to every local user (add [[tokens]] to the config file)"
        );
    }

    let database = SledDatabase::open(&config.data_dir.join("db"))?;
    let store = Store::open_database(Arc::new(database.clone()), StoreOptions::default())?;
    let store = Arc::new(RwLock::new(store));
    let registry = prometheus::Registry::new();
    let cluster_metrics = tandem_cluster::metrics::ClusterMetrics::new(&registry)?;
    let log_store = LogStore::open(database.clone())
        .map_err(|e| anyhow::anyhow!("opening the Raft log: {e}"))?
        .with_metrics(cluster_metrics.clone());
    let (state_machine, applied) = StateMachine::new(store.clone(), config.data_dir.join("snapshots"))
        .map_err(|e| anyhow::anyhow!("opening the snapshot directory: {e}"))?;
    let state_machine = state_machine.with_metrics(cluster_metrics.clone());
    let network = PeerNetwork::new(&identity.cluster_secret)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_sender(identity.id);

    let api_listener = TcpListener::bind(config.api)
        .await
        .with_context(|| format!("binding the API address {}", config.api))?;
    let peer_listener = TcpListener::bind(config.peer)
        .await
        .with_context(|| format!("binding the peer address {}", config.peer))?;
    // Witnesses serve no configuration, so no boots either.
    let boot_sockets = if config.role == Role::Witness {
        None
    } else {
        let http = TcpListener::bind(config.boot)
            .await
            .with_context(|| format!("binding the boot HTTP address {}", config.boot))?;
        let tftp = tokio::net::UdpSocket::bind(config.tftp)
            .await
            .with_context(|| format!("binding the TFTP address {}", config.tftp))?;
        Some((http, tftp))
    };
    let api_addr = api_listener.local_addr()?;
    let peer_addr = peer_listener.local_addr()?;
    let info = NodeInfo {
        name: identity.name.clone(),
        role: config.role,
        peer_addr: peer_addr.to_string(),
        api_addr: api_addr.to_string(),
        boot_addr: config.boot_advertise.clone().unwrap_or_else(|| config.boot.to_string()),
    };

    let timing = Timing::default();
    let mut raft_config = timing.raft_config(config.role);
    if let Some(logs) = std::env::var("TANDEM_RAFT_SNAPSHOT_LOGS").ok().and_then(|v| v.parse().ok()) {
        // For tests and experiments: snapshot (and purge the log) after this many entries.
        raft_config.snapshot_policy = openraft::SnapshotPolicy::LogsSinceLast(logs);
        raft_config.max_in_snapshot_log_to_keep = 0;
        raft_config.purge_batch_size = 1;
    }
    let raft_config = Arc::new(raft_config.validate().context("Raft configuration")?);
    let raft = Raft::new(identity.id, raft_config, network.clone(), log_store, state_machine)
        .await
        .map_err(|e| anyhow::anyhow!("starting Raft: {e}"))?;
    let node = ClusterNode::new(identity.id, info, raft.clone(), store, network, timing, applied);
    node.proposer().set_metrics(cluster_metrics.clone());
    if node.is_pristine().await && !config.join {
        node.initialize_single()
            .await
            .map_err(|e| anyhow::anyhow!("initializing a single-node cluster: {e}"))?;
    }

    let boot = BootState::default();
    let metrics = Arc::new(Metrics::new(registry, boot.clone())?);
    let shutdown = CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    tasks.spawn(serve_peer(
        peer_listener,
        raft.clone(),
        node.proposer(),
        identity.cluster_secret.clone(),
        shutdown.clone(),
    ));
    let backup = backup::BackupState::default();
    if let Some(schedule) = config.backup.clone() {
        let (node, metrics) = (node.clone(), metrics.clone());
        backup::seed(&node, &schedule, &backup, &metrics);
        tasks.spawn(backup::run(node, schedule, backup.clone(), metrics, shutdown.clone()));
    }
    tasks.spawn(serve_api(
        api_listener,
        Arc::new(ApiState {
            node: node.clone(),
            metrics,
            boot: boot.clone(),
            tokens: crate::auth::Tokens::new(config.tokens.clone()),
            backup,
        }),
        shutdown.clone(),
    ));
    tasks.spawn(node.clone().run_duties(shutdown.clone()));
    if let Some((http, tftp)) = boot_sockets {
        let content: Arc<dyn BootContent> = Arc::new(boot_content(&node));
        let options = BootHttpOptions {
            heartbeats: boot.heartbeats.clone(),
            stats: boot.http.clone(),
            ..BootHttpOptions::default()
        };
        tasks.spawn(serve_boot_http_with(http, content.clone(), options, shutdown.clone()));
        let options = TftpOptions { stats: boot.tftp.clone(), ..TftpOptions::default() };
        tasks.spawn(serve_tftp(tftp, content, options, shutdown.clone()));
    }
    if identity.pending_recovery.is_some() {
        tasks.spawn(record_recovery(node.clone(), identity.clone(), config.data_dir.clone()));
    }
    tasks.close();

    println!(
        "tandem: node {} (id {:016x}, {}) serving: api http://{api_addr}, peer {peer_addr}{}",
        identity.name,
        identity.id,
        config.role,
        if config.join { " — waiting to be added with `tandem servers add`" } else { "" }
    );
    wait_for_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tasks.wait()).await;
    let _ = raft.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// Writes the forced recovery recorded by `tandem recover` into the history, once this node leads.
async fn record_recovery(node: Arc<ClusterNode>, mut identity: Identity, data_dir: std::path::PathBuf) {
    let Some((actor, reason, at_ms)) = identity.pending_recovery.clone() else { return };
    for _ in 0..600 {
        if node.is_leader() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut change = ChangeSet::new(ChangeMeta {
        actor,
        reason,
        timestamp_ms: at_ms,
        request_id: Some(format!("forced-recovery-{:016x}-epoch-{}", identity.id, identity.epoch)),
    });
    change = change.put(
        "cluster_events",
        &format!("epoch-{}", identity.epoch),
        serde_json::json!({"event": "forced_recovery", "node": identity.name, "node_id": format!("{:016x}", identity.id),
                           "epoch": identity.epoch, "at_ms": at_ms}),
    );
    match node.write(Command::Change(change)).await {
        Ok(_) => {
            identity.pending_recovery = None;
            if let Err(error) = identity.save(&data_dir) {
                tracing::warn!(%error, "recorded the forced recovery but could not update node.json");
            }
            tracing::info!(epoch = identity.epoch, "forced recovery recorded in the history");
        }
        Err(error) => tracing::warn!(%error, "could not record the forced recovery in the history yet"),
    }
}

/// The boot content of this node: its own store; the boot servers of the cluster (this node first, then the
/// other data nodes and mirrors, as the membership records their advertised boot addresses); ready once the
/// node is a member of a cluster (a `--join` node that was never added has nothing trustworthy to serve).
fn boot_content(node: &Arc<ClusterNode>) -> StoreContent {
    let servers_node = node.clone();
    let servers = Arc::new(move || {
        let mut servers = vec![servers_node.info.boot_addr.clone()];
        for (id, info, _) in servers_node.members() {
            if id != servers_node.id && info.role != Role::Witness {
                servers.push(info.boot_addr);
            }
        }
        servers
    });
    let ready_node = node.clone();
    let ready = Arc::new(move || ready_node.members().iter().any(|(id, _, _)| *id == ready_node.id));
    StoreContent::new(node.shared_store(), servers).with_readiness(ready)
}

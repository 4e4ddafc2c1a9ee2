//! What `tandem serve` runs: a node — its data directory, Raft and the peer network, the admin API, the boot
//! servers, the backup schedule, metrics — until SIGTERM or ctrl-c. Nothing here runs in the operator's shell.
//!
//! | what | where |
//! |---|---|
//! | start-up and shutdown | here: [`start`], [`RunningNode`] |
//! | the admin API: route table, tokens, handlers by resource | [`api`] |
//! | the operator console in the browser (static files at `/`) | [`console`] |
//! | HTTP and TFTP boot servers, boot content, heartbeats | [`boot`] |
//! | scheduled backups, retention, file names | [`backup`] |
//! | Prometheus metrics | [`metrics`] |
//! | writing a forced recovery into the history | `record_recovery` |
//!
//! Start-up ([`start`]) is a series of small steps: identity, database and store (`open_store`), listeners (bound before anything else
//! runs, so a busy port fails at once), Raft log store, state machine, network and Raft
//! (`start_raft`), then the servers (`RunningNode::spawn_servers`); [`RunningNode::stop`] takes them down. A node
//! whose data directory has never been part of a cluster initializes itself as a single-node cluster, unless
//! `--join` says to wait to be added.
//!
//! ## Two runtimes: the control plane on one thread, the boot servers on their own
//! `tandem serve` runs Raft, the peer network, the admin API, backups and the node's duties on a Tokio
//! runtime with [`CONTROL_WORKER_THREADS`] worker (one), and the HTTP and TFTP boot servers on a second
//! runtime with a worker per core ([`RunningNode::spawn_servers`]). Blocking work still goes to each runtime's
//! blocking threads (`spawn_blocking`, `block_in_place`), and the leader's log syncs to the log's flusher
//! thread.
//!
//! Why one thread: a write crosses many tasks on its way (the API's connection, the proposer, openraft's core,
//! the replication streams, the peer server's connection, the state machine), and on a two-worker runtime
//! every hand-over that finds the other worker asleep wakes it, so a write's tasks bounced between the two
//! threads: `perf stat` at one client counted 13.5 context switches per write on the leader and 7.7 on a
//! follower, each a futex or eventfd wake-up that a VM pays dearly for. On one thread the hand-overs are
//! queue operations. Interleaved A/B runs of `tandem bench cluster --runs 0` (three pairs per client count,
//! 2-core VM): one client 1524/1475/1530 → 1609/1575/1611 changes/s (p50 0.61–0.64 → 0.58–0.59 ms), node
//! CPU −8 %; 16 and 64 clients unchanged within the noise (7332–7570 against 7305–7596; 12248–14428 against
//! 13646–13814). One thread is also enough for a configuration store: it carried 12,000–14,000 changes/s at
//! 64 clients here.
//!
//! Why the boot servers have their own runtime: when the power returns, every terminal of a plant boots at
//! once, and their downloads (TLS, file reads, TFTP's per-block timers) must neither wait behind Raft nor
//! hold up its heartbeats and elections. Their listeners are registered with their own runtime's I/O driver,
//! so a busy control thread does not delay a download's readiness either.

pub mod api;
pub mod backup;
pub mod boot;
pub mod chunked_read;
pub mod console;
pub mod metrics;

use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use tandem_cluster::identity::{Identity, founding_cluster_id};
use tandem_cluster::log_store::LogStore;
use tandem_cluster::network::{LocalIdentity, PeerNetwork, PeerServerOptions, serve_peer_with};
use tandem_cluster::node::ClusterNode;
use tandem_cluster::state_machine::StateMachine;
use tandem_cluster::tls::NodeTls;
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

/// Worker threads of the runtime `tandem serve` runs the control plane on (see the module documentation).
pub const CONTROL_WORKER_THREADS: usize = 1;

/// Runs a node until SIGTERM or ctrl-c: [`start`], wait, [`RunningNode::stop`]. `SIGHUP` reloads the TLS
/// files ([`RunningNode::reload_tls`]).
pub async fn serve(config: Config) -> Result<()> {
    let node = start(config).await?;
    println!("{}", node.banner());
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP")?;
    loop {
        tokio::select! {
            () = wait_for_signal() => break,
            Some(()) = hangup.recv() => node.reload_tls(),
        }
    }
    tracing::info!("shutting down");
    node.stop().await;
    Ok(())
}

/// A node whose servers all run: what [`start`] built, until [`RunningNode::stop`].
#[derive(Debug)]
pub struct RunningNode {
    node: Arc<ClusterNode>,
    identity: Identity,
    /// The identity the peer network sends and checks (its cluster id may be learned while running).
    peer_identity: LocalIdentity,
    config: Config,
    api_addr: std::net::SocketAddr,
    peer_addr: std::net::SocketAddr,
    /// `[tls]`, loaded; `None`: plain HTTP on loopback.
    tls: Option<NodeTls>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
    /// The boot servers' runtime (see the module documentation); none on a witness.
    boot_runtime: Option<BootRuntime>,
}

/// The boot servers' runtime, shut down without waiting when dropped: a `Runtime` dropped in async code (an
/// error after it was built, a `RunningNode` dropped without [`RunningNode::stop`]) would otherwise panic,
/// since its drop waits for its blocking threads.
#[derive(Debug)]
struct BootRuntime(Option<tokio::runtime::Runtime>);

impl BootRuntime {
    fn start() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("tandem-boot")
            .enable_all()
            .build()
            .context("starting the boot servers' runtime")?;
        Ok(BootRuntime(Some(runtime)))
    }

    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(tokio::runtime::Runtime::handle)
    }
}

impl Drop for BootRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            // Its servers stopped in `RunningNode::stop` (or overran its wait); what is left is dropped.
            runtime.shutdown_background();
        }
    }
}

/// The sockets of a node, bound before anything else runs so that a busy port fails at once.
struct Listeners {
    api: TcpListener,
    peer: TcpListener,
    /// HTTP and TFTP; none on a witness, which serves no configuration and so no boots either. Taken out of
    /// the control runtime's I/O driver at once: they are registered again on the boot runtime's.
    boot: Option<(std::net::TcpListener, std::net::UdpSocket)>,
}

/// Builds a node from its configuration and starts everything it runs: identity, store, listeners, Raft,
/// then the peer endpoint, the admin API, the boot servers, the backup schedule and the node's duties.
pub async fn start(config: Config) -> Result<RunningNode> {
    config.validate()?;
    let tls = load_tls(&config)?;
    let mut identity = open_identity(&config)?;
    warn_if_open(&config);
    let (database, store, rebuilt) = open_store(&config)?;
    let listeners = bind(&config).await?;
    let registry = prometheus::Registry::new();
    let (node, raft, peer_identity) =
        start_raft(&config, &mut identity, &listeners, (database, store), tls.as_ref(), &registry).await?;
    if let Some(rebuilt) = rebuilt {
        node.note_store_rebuilt(rebuilt);
    }
    let boot_runtime = match &listeners.boot {
        Some(_) => Some(BootRuntime::start()?),
        None => None,
    };
    let boot = BootState::default();
    let metrics = Arc::new(Metrics::new(registry, boot.clone())?);
    if let Some(not_after) = tls.as_ref().and_then(log_certificate) {
        metrics.observe_tls_certificate(not_after);
    }
    let running = RunningNode {
        node,
        api_addr: listeners.api.local_addr()?,
        peer_addr: listeners.peer.local_addr()?,
        identity,
        peer_identity,
        tls,
        metrics: metrics.clone(),
        config,
        shutdown: CancellationToken::new(),
        tasks: tokio_util::task::TaskTracker::new(),
        boot_runtime,
    };
    running.spawn_servers(listeners, raft, boot, metrics);
    Ok(running)
}

/// The node's identity (`node.json`), created on first start; a `--cluster-secret` given now replaces the one
/// stored.
fn open_identity(config: &Config) -> Result<Identity> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    make_private(&config.data_dir)?;
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
    Ok(identity)
}

/// The data directory holds the cluster secret (`node.json`) and every document: owner only (0700 for the
/// directory, 0600 for `node.json`, which older versions wrote 0644), tightened at every start.
fn make_private(data_dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let private = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("making {} private (mode {mode:o})", path.display()))
    };
    private(data_dir, 0o700)?;
    let identity = data_dir.join("node.json");
    if identity.exists() {
        private(&identity, 0o600)?;
    }
    Ok(())
}

/// Loads `[tls]` (the key must match the certificate, which the CA must have signed); without it, warns that
/// the API and the peer network speak plain HTTP (which [`Config::validate`] allows on loopback only).
fn load_tls(config: &Config) -> Result<Option<NodeTls>> {
    let Some(files) = &config.tls else {
        tracing::warn!(
            api = %config.api,
            peer = %config.peer,
            "no [tls] configured: the admin API and the peer network speak plain HTTP (loopback only; see `tandem cert`)"
        );
        return Ok(None);
    };
    let tls = NodeTls::load(files.clone()).context("loading the [tls] files")?;
    Ok(Some(tls))
}

/// Logs until when the node's certificate is valid: at `warn` within 30 days of its end, which is when to renew
/// it (`tandem cert node`, then `kill -HUP`); returns that end (Unix seconds) for the metric.
fn log_certificate(tls: &NodeTls) -> Option<i64> {
    let der = tls.certificate();
    let Ok((_, certificate)) = x509_parser::parse_x509_certificate(&der) else { return None };
    let not_after = certificate.validity().not_after.to_datetime();
    let left = not_after - time::OffsetDateTime::now_utc();
    let cert = tls.files().cert.display();
    let until = not_after.date();
    if left < time::Duration::days(30) {
        tracing::warn!(
            "the TLS certificate {cert} ends on {until} ({} days left): renew it (`tandem cert node`) and `kill -HUP` \
             the node",
            left.whole_days()
        );
    } else {
        tracing::info!("TLS certificate {cert}, valid until {until}");
    }
    Some(not_after.unix_timestamp())
}

fn warn_if_open(config: &Config) {
    if config.tokens.is_empty() {
        tracing::warn!(
            api = %config.api,
            "no API tokens configured: the admin API is open to every local user (add [[tokens]] to the config file)"
        );
    }
}

/// Opens the node's database and store. A database sled cannot load after a crash is moved aside; the state
/// machine refills the empty one from the kept snapshot and the Raft log replays the rest (docs/storage.md,
/// "Where every byte lives").
fn open_store(config: &Config) -> Result<(SledDatabase, Store, Option<String>)> {
    let opened = tandem_storage::rebuild::open_or_set_aside(&config.data_dir, StoreOptions::default())?;
    if let Some(aside) = &opened.set_aside {
        tracing::error!(
            reason = %aside.reason,
            moved_to = %aside.moved_to.display(),
            "the database could not be loaded after a crash: moved it aside; rebuilding it from the last snapshot and the Raft log"
        );
    }
    let rebuilt = opened.set_aside.map(|aside| {
        format!(
            "the database could not be loaded ({}); it was moved to {} and rebuilt from the last snapshot and the Raft log",
            aside.reason,
            aside.moved_to.display()
        )
    });
    Ok((opened.database, opened.store, rebuilt))
}

/// Binds every socket of the node.
async fn bind(config: &Config) -> Result<Listeners> {
    let api = TcpListener::bind(config.api)
        .await
        .with_context(|| format!("binding the API address {}", config.api))?;
    let peer = TcpListener::bind(config.peer)
        .await
        .with_context(|| format!("binding the peer address {}", config.peer))?;
    let boot = if config.role == Role::Witness {
        None
    } else {
        let http = TcpListener::bind(config.boot)
            .await
            .with_context(|| format!("binding the boot HTTP address {}", config.boot))?;
        let tftp = tokio::net::UdpSocket::bind(config.tftp)
            .await
            .with_context(|| format!("binding the TFTP address {}", config.tftp))?;
        Some((http.into_std()?, tftp.into_std()?))
    };
    Ok(Listeners { api, peer, boot })
}

/// The address this node tells the others for a listener: the configured one (checked by
/// [`Config::validate`]), else the bound address (never unspecified: `validate` refuses that without one).
fn advertised(configured: &Option<String>, listener: &TcpListener) -> Result<String> {
    match configured {
        Some(address) => Ok(address.clone()),
        None => Ok(listener.local_addr()?.to_string()),
    }
}

/// Opens the Raft log and the state machine over the store, starts Raft and the [`ClusterNode`] over it; a node
/// that never was part of a cluster founds a single-node cluster (recording its cluster id first, see
/// [`settle_cluster_id`]) unless `--join` says to wait.
async fn start_raft(
    config: &Config,
    identity: &mut Identity,
    listeners: &Listeners,
    (database, store): (SledDatabase, Store),
    tls: Option<&NodeTls>,
    registry: &prometheus::Registry,
) -> Result<(Arc<ClusterNode>, Raft, LocalIdentity)> {
    let store = Arc::new(RwLock::new(store));
    let cluster_metrics = tandem_cluster::metrics::ClusterMetrics::new(registry)?;
    let log_store = LogStore::open(&config.data_dir.join("raft-log"), database)
        .map_err(|e| anyhow::anyhow!("opening the Raft log: {e}"))?
        .with_metrics(cluster_metrics.clone())
        .with_leader_early_ack(identity.id);
    let durable_log = log_store.durable_position();
    let led_when_stopped = log_store.led_when_stopped();
    let (mut state_machine, applied) = StateMachine::new(store.clone(), config.data_dir.join("snapshots"))
        .map_err(|e| anyhow::anyhow!("opening the snapshot directory: {e}"))?;
    let log_end = log_store.last_log_id().map_err(|e| anyhow::anyhow!("reading the Raft log: {e}"))?;
    state_machine
        .cover_applied_past(log_end)
        .await
        .map_err(|e| anyhow::anyhow!("covering the applied state with a snapshot: {e}"))?;
    let log_store = log_store.with_purge_gate(state_machine.purge_gate());
    let state_machine = state_machine
        .with_metrics(cluster_metrics.clone())
        .with_durable_log(durable_log.clone())
        .with_node_id(identity.id);
    let peer_identity = LocalIdentity::new(identity, config.data_dir.clone());
    let mut network = PeerNetwork::new(&identity.cluster_secret)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_identity(peer_identity.clone())
        .with_durable_log(durable_log.clone());
    if let Some(tls) = tls {
        network = network.with_tls(tls.client_config());
    }
    let info = NodeInfo {
        name: identity.name.clone(),
        role: config.role,
        peer_addr: advertised(&config.advertise_peer, &listeners.peer)?,
        api_addr: advertised(&config.advertise_api, &listeners.api)?,
        boot_addr: config.boot_advertise.clone().unwrap_or_else(|| config.boot.to_string()),
    };
    let timing = config.timing.clone();
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
    tandem_cluster::log_store::spawn_commit_announcer(raft.clone(), durable_log);
    if led_when_stopped {
        // It comes back as a candidate of its old term (see `LogStore::with_leader_early_ack`): campaign now
        // instead of after an election timeout.
        if let Err(error) = raft.trigger().elect().await {
            tracing::warn!(%error, "could not start an election at once after leading before the restart");
        }
    }
    let pristine = !raft.is_initialized().await.map_err(|e| anyhow::anyhow!("reading Raft's state: {e}"))?;
    settle_cluster_id(config, identity, &peer_identity, pristine, &store)?;
    let node = ClusterNode::new(identity.id, info, raft.clone(), store, network, timing, applied);
    node.proposer().set_metrics(cluster_metrics);
    node.set_abandoned_upload_after(config.limits.abandoned_upload_after);
    if let Some(bytes) = std::env::var("TANDEM_BLOB_COMPACTION_BYTES").ok().and_then(|v| v.parse().ok()) {
        // For tests and experiments: compact the log after this many new blob bytes (default 64 MiB).
        node.set_blob_compaction_bytes(bytes);
    }
    if pristine && !config.join {
        node.initialize_single()
            .await
            .map_err(|e| anyhow::anyhow!("initializing a single-node cluster: {e}"))?;
    }
    Ok((node, raft, peer_identity))
}

/// Makes sure `node.json` holds the cluster id whenever this node belongs to a cluster (see
/// `tandem_cluster::identity`): a node about to found one records the id it founds *before* Raft is
/// initialized (replacing one it may have learned in a `--join` that never completed); a member whose
/// `node.json` predates cluster ids takes its store's (the same id, written when the founding membership was
/// applied). A `--join` node that was never added keeps what it has, usually none: it learns the id from the
/// leader that adds it.
fn settle_cluster_id(
    config: &Config,
    identity: &mut Identity,
    peer_identity: &LocalIdentity,
    pristine: bool,
    store: &tandem_cluster::SharedStore,
) -> Result<()> {
    let cluster_id = match (pristine, config.join, &identity.cluster_id) {
        (true, false, _) => founding_cluster_id([identity.id]),
        (true, true, _) | (false, _, Some(_)) => return Ok(()),
        (false, _, None) => {
            let store = store.read().map_err(|_| anyhow::anyhow!("the store lock is poisoned"))?;
            tracing::info!(cluster_id = store.cluster_id(), "recording the store's cluster id in node.json");
            store.cluster_id().to_owned()
        }
    };
    if identity.cluster_id.as_deref() != Some(cluster_id.as_str()) {
        peer_identity.record_cluster_id(&cluster_id)?;
        identity.cluster_id = Some(cluster_id);
    }
    Ok(())
}

impl RunningNode {
    /// Spawns the node's servers and background work onto its task tracker.
    fn spawn_servers(&self, listeners: Listeners, raft: Raft, boot: BootState, metrics: Arc<Metrics>) {
        let (node, config, shutdown, tasks) = (&self.node, &self.config, &self.shutdown, &self.tasks);
        let secret = self.identity.cluster_secret.clone();
        let peer_identity = self.peer_identity.clone();
        let options = PeerServerOptions {
            gate: config.limits.peer_gate(),
            tls: self.tls.as_ref().map(NodeTls::peer_server_config),
        };
        let proposer = node.proposer();
        tasks.spawn(serve_peer_with(
            listeners.peer,
            raft,
            proposer,
            (secret, peer_identity),
            options,
            shutdown.clone(),
        ));
        let backup = backup::BackupState::default();
        if let Some(schedule) = config.backup.clone() {
            let (node, metrics) = (node.clone(), metrics.clone());
            backup::seed(&node, &schedule, &backup, &metrics);
            tasks.spawn(backup::run(node, schedule, backup.clone(), metrics, shutdown.clone()));
        }
        let tokens = crate::auth::Tokens::new(config.tokens.clone());
        let limits = config.limits;
        let api_limits =
            api::ApiLimits::new(limits.api, limits.max_concurrent_backups, config.data_dir.clone());
        let state = Arc::new(ApiState {
            node: node.clone(),
            metrics,
            boot: boot.clone(),
            tokens,
            backup,
            limits: api_limits,
            audit: config.audit,
            tls: self.tls.clone(),
        });
        tasks.spawn(serve_api(listeners.api, state, shutdown.clone()));
        tasks.spawn(node.clone().run_duties(shutdown.clone()));
        if let (Some((http, tftp)), Some(runtime)) =
            (listeners.boot, self.boot_runtime.as_ref().and_then(BootRuntime::handle))
        {
            let content: Arc<dyn BootContent> = Arc::new(boot_content(node));
            let options = BootHttpOptions {
                heartbeats: boot.heartbeats.clone(),
                stats: boot.http.clone(),
                limits: limits.boot,
                ..BootHttpOptions::default()
            };
            let (http_content, http_shutdown) = (content.clone(), shutdown.clone());
            let http = async move {
                match TcpListener::from_std(http) {
                    Ok(http) => serve_boot_http_with(http, http_content, options, http_shutdown).await,
                    Err(error) => tracing::error!(%error, "the boot HTTP server cannot use its socket"),
                }
            };
            tasks.spawn_on(http, runtime);
            let options = TftpOptions {
                stats: boot.tftp.clone(),
                max_transfers: limits.tftp.max_transfers,
                max_transfers_per_source: limits.tftp.max_transfers_per_source,
                max_timeout: limits.tftp.max_timeout,
                max_transfer_time: limits.tftp.max_transfer_time,
                ..TftpOptions::default()
            };
            let tftp_shutdown = shutdown.clone();
            let tftp = async move {
                match tokio::net::UdpSocket::from_std(tftp) {
                    Ok(tftp) => serve_tftp(tftp, content, options, tftp_shutdown).await,
                    Err(error) => tracing::error!(%error, "the TFTP server cannot use its socket"),
                }
            };
            tasks.spawn_on(tftp, runtime);
        }
        if self.identity.pending_recovery.is_some() {
            tasks.spawn(record_recovery(node.clone(), self.identity.clone(), config.data_dir.clone()));
        }
        tasks.close();
    }

    /// Re-reads the `[tls]` files (on `SIGHUP`): new connections use them; a failure keeps the old ones.
    pub fn reload_tls(&self) {
        let Some(tls) = &self.tls else {
            tracing::info!("SIGHUP: no [tls] configured, nothing to reload");
            return;
        };
        match tls.reload() {
            Ok(()) => {
                tracing::info!(cert = %tls.files().cert.display(), "SIGHUP: TLS certificates reloaded");
                if let Some(not_after) = log_certificate(tls) {
                    self.metrics.observe_tls_certificate(not_after);
                }
            }
            Err(error) => {
                tracing::error!(%error, "SIGHUP: the TLS files could not be reloaded; still serving the previous ones")
            }
        }
    }

    /// The line `tandem serve` prints once everything runs.
    pub fn banner(&self) -> String {
        let (api, peer) = if self.tls.is_some() { ("https", " (mutual TLS)") } else { ("http", "") };
        format!(
            "tandem: node {} (id {}, {}) serving: api {api}://{}, peer {}{peer}{}",
            self.identity.name,
            self.identity.id,
            self.config.role,
            self.api_addr,
            self.peer_addr,
            if self.config.join { " — waiting to be added with `tandem servers add`" } else { "" }
        )
    }

    /// Stops every server (each finishes what it is doing, bounded), then Raft.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.tasks.wait()).await;
        self.node.shutdown().await;
        // The boot runtime goes with `self` (`BootRuntime`'s drop).
    }
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
        request_id: Some(format!("forced-recovery-{}-epoch-{}", identity.id, identity.epoch)),
        ..ChangeMeta::default()
    });
    change = change.put(
        "cluster_events",
        &format!("epoch-{}", identity.epoch),
        serde_json::json!({"event": "forced_recovery", "node": identity.name, "node_id": identity.id,
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

//! Node configuration: one documented struct, defaults in one place, a TOML file and flags on top.
//!
//! Precedence: built-in defaults < the file given with `--config` < command-line flags. Every key of the file
//! has the name of its flag (with `_` for `-`); `docs/tandem.example.toml` lists them all and a test parses it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tandem_cluster::Role;
use tandem_cluster::node::Timing;

use crate::limits::{HttpLimits, NodeLimits};
pub use tandem_cluster::tls::TlsFiles;

/// Everything `tandem serve` needs to start a node.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Where the node keeps its data (store, Raft log, identity).
    pub data_dir: PathBuf,
    /// The node's name in the cluster (default: the host name, else "tandem").
    pub name: String,
    /// Admin API address.
    pub api: SocketAddr,
    /// Peer (Raft) address.
    pub peer: SocketAddr,
    /// HTTP boot server address.
    pub boot: SocketAddr,
    /// TFTP server address.
    pub tftp: SocketAddr,
    /// How terminals reach this node's boot server (default: `boot`).
    pub boot_advertise: Option<String>,
    /// How the other members and proxied clients reach this node's admin API (default: `api`).
    pub advertise_api: Option<String>,
    /// How the other members reach this node's peer endpoint (default: `peer`).
    pub advertise_peer: Option<String>,
    /// data, witness or mirror.
    pub role: Role,
    /// Start empty and wait to be added to an existing cluster.
    pub join: bool,
    /// Shared secret that peers present to each other (at least [`MIN_SECRET_BYTES`]); from
    /// `--cluster-secret`, `TANDEM_CLUSTER_SECRET`, or the file named by `--cluster-secret-file`.
    pub cluster_secret: Option<String>,
    /// Admin API bearer tokens (file only: `[[tokens]]`). None: the API is open, allowed on loopback only.
    pub tokens: Vec<crate::auth::Token>,
    /// Scheduled backups (file only: `[backup]`), written by whichever node leads. None: no schedule.
    pub backup: Option<BackupSchedule>,
    /// Connection caps and timeouts of every listener (file only: `[limits.*]`).
    pub limits: NodeLimits,
    /// Audit rules for changes made through this node's API (file only: `[audit]`).
    pub audit: AuditSettings,
    /// TLS on the admin API and mutual TLS on the peer network (file only: `[tls]`). None: plain HTTP, which
    /// [`Config::validate`] allows on loopback addresses only.
    pub tls: Option<TlsFiles>,
    /// Raft timing (`[raft]` in the config file): heartbeat interval and election timeouts.
    pub timing: Timing,
}

/// Audit rules (`[audit]` in the config file). Checked by the node that receives a change, before it is
/// proposed: give every data node of a cluster the same settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditSettings {
    /// Refuse a change set without a non-empty reason (422 `reason_required`). Default false.
    pub require_reason: bool,
}

/// The shortest cluster secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// Scheduled backups: every `interval`, the leader writes a backup file into `dir` (unless nothing changed
/// since the newest one there) and keeps the newest `retention` files of its cluster (see
/// [`crate::node::backup`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupSchedule {
    /// The directory backups go to. It must exist: a missing directory (an unmounted backup disk) is reported
    /// as a failure, never created on the disk underneath.
    pub dir: PathBuf,
    /// Time between two backups (file: seconds as a number, or text: "90s", "30m", "1h", "1h30m", "1d").
    pub interval: std::time::Duration,
    /// How many backup files of this cluster to keep in `dir`; older ones are deleted.
    pub retention: usize,
}

impl BackupSchedule {
    /// The interval when the file does not give one.
    pub const DEFAULT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);
    /// The retention when the file does not give one.
    pub const DEFAULT_RETENTION: usize = 24;
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./tandem-data"),
            name: default_name(),
            api: "127.0.0.1:7070".parse().expect("valid default"),
            peer: "127.0.0.1:7071".parse().expect("valid default"),
            boot: "127.0.0.1:7080".parse().expect("valid default"),
            tftp: "127.0.0.1:6969".parse().expect("valid default"),
            boot_advertise: None,
            advertise_api: None,
            advertise_peer: None,
            role: Role::Data,
            join: false,
            cluster_secret: None,
            tokens: Vec::new(),
            backup: None,
            limits: NodeLimits::default(),
            audit: AuditSettings::default(),
            tls: None,
            timing: Timing::default(),
        }
    }
}

fn default_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "tandem".to_string())
}

/// The keys a config file may hold (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub name: Option<String>,
    pub api: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    pub boot: Option<SocketAddr>,
    pub tftp: Option<SocketAddr>,
    pub boot_advertise: Option<String>,
    pub advertise_api: Option<String>,
    pub advertise_peer: Option<String>,
    pub role: Option<String>,
    pub join: Option<bool>,
    pub cluster_secret: Option<String>,
    pub cluster_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub tokens: Vec<crate::auth::Token>,
    pub backup: Option<FileBackup>,
    pub limits: Option<FileLimits>,
    pub audit: Option<FileAudit>,
    pub tls: Option<FileTls>,
    pub raft: Option<FileRaft>,
}

/// `[raft]` in a config file: how often the leader sends heartbeats and how long a follower waits without one
/// before it campaigns, in milliseconds (the same two knobs as etcd's `--heartbeat-interval` and
/// `--election-timeout`). The defaults (100 and 200) suit a LAN; on a link with a round trip of R ms, give a
/// heartbeat interval of at least R plus a disk sync and an election timeout of at least 2× that. Give every
/// member of a cluster the same values. docs/cluster.md, "Timing", has the measurements.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRaft {
    pub heartbeat_interval_ms: Option<u64>,
    pub election_timeout_ms: Option<u64>,
}

impl FileRaft {
    /// The timing these keys give on top of `timing`: the election timeout is drawn from
    /// `[election_timeout_ms, 2 × election_timeout_ms)`, as with the defaults; without `election_timeout_ms`, it
    /// is at least twice the heartbeat interval.
    fn apply(&self, timing: Timing) -> Result<Timing, String> {
        let heartbeat_ms = self.heartbeat_interval_ms.unwrap_or(timing.heartbeat_ms);
        // Only a heartbeat given: the election timeout grows with it to the smallest value allowed.
        let election_min_ms =
            self.election_timeout_ms.unwrap_or(timing.election_min_ms.max(2 * heartbeat_ms));
        if !(10..=10_000).contains(&heartbeat_ms) {
            return Err(format!("[raft] heartbeat_interval_ms {heartbeat_ms} must be between 10 and 10000"));
        }
        if election_min_ms < 2 * heartbeat_ms || election_min_ms > 60_000 {
            return Err(format!(
                "[raft] election_timeout_ms {election_min_ms} must be at least twice heartbeat_interval_ms \
                 ({heartbeat_ms}) and at most 60000"
            ));
        }
        Ok(Timing { heartbeat_ms, election_min_ms, election_max_ms: 2 * election_min_ms })
    }
}

/// `[tls]` in a config file: the three PEM files `tandem cert init` and `tandem cert node` make.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl FileTls {
    fn into_files(self) -> Result<TlsFiles, String> {
        match (self.ca, self.cert, self.key) {
            (Some(ca), Some(cert), Some(key)) => Ok(TlsFiles { ca, cert, key }),
            _ => Err("[tls] needs ca, cert and key (PEM files: make them with `tandem cert init` and \
                      `tandem cert node NAME --dns HOST --ip IP`)"
                .into()),
        }
    }
}

/// The `[limits]` table of a config file: one sub-table per listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub api: Option<FileHttpLimits>,
    pub boot: Option<FileHttpLimits>,
    pub peer: Option<FilePeerLimits>,
    pub tftp: Option<FileTftpLimits>,
}

/// `[limits.api]` and `[limits.boot]` (`max_concurrent_backups` and `abandoned_upload_after`: API only).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHttpLimits {
    pub max_connections: Option<usize>,
    pub max_connections_per_source: Option<usize>,
    pub header_read_timeout: Option<IntervalValue>,
    pub idle_timeout: Option<IntervalValue>,
    pub body_read_timeout: Option<IntervalValue>,
    pub send_stall_timeout: Option<IntervalValue>,
    pub max_concurrent_backups: Option<usize>,
    pub abandoned_upload_after: Option<IntervalValue>,
}

/// `[limits.peer]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePeerLimits {
    pub max_connections: Option<usize>,
    pub max_connections_per_source: Option<usize>,
}

/// `[limits.tftp]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTftpLimits {
    pub max_transfers: Option<usize>,
    pub max_transfers_per_source: Option<usize>,
    pub max_timeout: Option<IntervalValue>,
    pub max_transfer_time: Option<IntervalValue>,
}

impl FileLimits {
    /// These limits over `base`.
    fn apply(self, mut base: NodeLimits) -> Result<NodeLimits, String> {
        if let Some(api) = self.api {
            if let Some(count) = api.max_concurrent_backups {
                base.max_concurrent_backups = count;
            }
            base.abandoned_upload_after = duration_or(
                &api.abandoned_upload_after,
                base.abandoned_upload_after,
                "[limits.api] abandoned_upload_after",
            )?;
            base.api = api.apply(base.api, "[limits.api]")?;
        }
        if let Some(boot) = self.boot {
            if boot.max_concurrent_backups.is_some() {
                return Err("[limits.boot] has no max_concurrent_backups (it belongs in [limits.api])".into());
            }
            if boot.abandoned_upload_after.is_some() {
                return Err("[limits.boot] has no abandoned_upload_after (it belongs in [limits.api])".into());
            }
            base.boot = boot.apply(base.boot, "[limits.boot]")?;
        }
        if let Some(peer) = self.peer {
            base.peer_max_connections = peer.max_connections.unwrap_or(base.peer_max_connections);
            base.peer_max_connections_per_source =
                peer.max_connections_per_source.unwrap_or(base.peer_max_connections_per_source);
        }
        if let Some(tftp) = self.tftp {
            let limits = &mut base.tftp;
            limits.max_transfers = tftp.max_transfers.unwrap_or(limits.max_transfers);
            limits.max_transfers_per_source =
                tftp.max_transfers_per_source.unwrap_or(limits.max_transfers_per_source);
            limits.max_timeout =
                duration_or(&tftp.max_timeout, limits.max_timeout, "[limits.tftp] max_timeout")?;
            limits.max_transfer_time = duration_or(
                &tftp.max_transfer_time,
                limits.max_transfer_time,
                "[limits.tftp] max_transfer_time",
            )?;
        }
        Ok(base)
    }
}

impl FileHttpLimits {
    fn apply(self, base: HttpLimits, table: &str) -> Result<HttpLimits, String> {
        Ok(HttpLimits {
            max_connections: self.max_connections.unwrap_or(base.max_connections),
            max_connections_per_source: self
                .max_connections_per_source
                .unwrap_or(base.max_connections_per_source),
            header_read_timeout: duration_or(
                &self.header_read_timeout,
                base.header_read_timeout,
                &format!("{table} header_read_timeout"),
            )?,
            idle_timeout: duration_or(
                &self.idle_timeout,
                base.idle_timeout,
                &format!("{table} idle_timeout"),
            )?,
            body_read_timeout: duration_or(
                &self.body_read_timeout,
                base.body_read_timeout,
                &format!("{table} body_read_timeout"),
            )?,
            send_stall_timeout: duration_or(
                &self.send_stall_timeout,
                base.send_stall_timeout,
                &format!("{table} send_stall_timeout"),
            )?,
        })
    }
}

fn duration_or(
    value: &Option<IntervalValue>,
    default: std::time::Duration,
    key: &str,
) -> Result<std::time::Duration, String> {
    match value {
        Some(value) => value.to_duration().map_err(|e| format!("{key}: {e}")),
        None => Ok(default),
    }
}

/// The `[backup]` table of a config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBackup {
    pub dir: Option<PathBuf>,
    pub interval: Option<IntervalValue>,
    pub retention: Option<u64>,
}

/// `[audit]` in a config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAudit {
    pub require_reason: Option<bool>,
}

/// An interval as a config file may write it: seconds, or text with units.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum IntervalValue {
    Seconds(u64),
    Text(String),
}

impl IntervalValue {
    fn to_duration(&self) -> Result<std::time::Duration, String> {
        match self {
            IntervalValue::Seconds(seconds) => Ok(std::time::Duration::from_secs(*seconds)),
            IntervalValue::Text(text) => parse_interval(text),
        }
    }
}

/// Parses "90", "90s", "30m", "1h", "1h30m", "1d": whole numbers each followed by a unit (s, m, h, d); a bare
/// number is seconds.
pub fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    let bad = || {
        format!("'{text}' is not an interval (write seconds, or e.g. \"90s\", \"30m\", \"1h30m\", \"1d\")")
    };
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(seconds));
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let value: u64 = number.parse().map_err(|_| bad())?;
        total = value.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() || text.is_empty() {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(total))
}

/// A configuration problem, with the key or file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Applies a config file on top of `self`.
    pub fn merge_file(mut self, path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let file: FileConfig = toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?;
        let role = match file.role {
            Some(role) => {
                Some(role.parse::<Role>().map_err(|e| ConfigError::Parse { path: path.into(), message: e })?)
            }
            None => None,
        };
        self.data_dir = file.data_dir.unwrap_or(self.data_dir);
        self.name = file.name.unwrap_or(self.name);
        self.api = file.api.unwrap_or(self.api);
        self.peer = file.peer.unwrap_or(self.peer);
        self.boot = file.boot.unwrap_or(self.boot);
        self.tftp = file.tftp.unwrap_or(self.tftp);
        self.boot_advertise = file.boot_advertise.or(self.boot_advertise);
        self.advertise_api = file.advertise_api.or(self.advertise_api);
        self.advertise_peer = file.advertise_peer.or(self.advertise_peer);
        self.role = role.unwrap_or(self.role);
        self.join = file.join.unwrap_or(self.join);
        let holds_secrets = !file.tokens.is_empty() || file.cluster_secret.is_some();
        self.cluster_secret = file.cluster_secret.or(self.cluster_secret);
        if let Some(secret_file) = &file.cluster_secret_file {
            self.cluster_secret = Some(read_secret_file(secret_file)?);
        }
        if holds_secrets {
            warn_if_readable_by_others(path);
        }
        if let Some(limits) = file.limits {
            self.limits = limits
                .apply(self.limits)
                .map_err(|message| ConfigError::Parse { path: path.into(), message })?;
        }
        if !file.tokens.is_empty() {
            self.tokens = file.tokens;
        }
        if let Some(tls) = file.tls {
            self.tls =
                Some(tls.into_files().map_err(|message| ConfigError::Parse { path: path.into(), message })?);
        }
        if let Some(raft) = &file.raft {
            self.timing = raft
                .apply(self.timing)
                .map_err(|message| ConfigError::Parse { path: path.into(), message })?;
        }
        if let Some(audit) = file.audit {
            self.audit.require_reason = audit.require_reason.unwrap_or(self.audit.require_reason);
        }
        if let Some(backup) = file.backup {
            let invalid = |message: String| ConfigError::Parse { path: path.into(), message };
            let dir =
                backup.dir.ok_or_else(|| invalid("[backup] needs dir = \"/path/to/backups\"".into()))?;
            let interval = match &backup.interval {
                Some(value) => value.to_duration().map_err(|e| invalid(format!("[backup] interval: {e}")))?,
                None => BackupSchedule::DEFAULT_INTERVAL,
            };
            let retention = match backup.retention {
                Some(count) => usize::try_from(count)
                    .map_err(|_| invalid(format!("[backup] retention {count} is too large")))?,
                None => BackupSchedule::DEFAULT_RETENTION,
            };
            self.backup = Some(BackupSchedule { dir, interval, retention });
        }
        Ok(self)
    }

    /// Checks the combination of settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let addresses = [("api", self.api), ("peer", self.peer), ("boot", self.boot), ("tftp", self.tftp)];
        for (i, (a, x)) in addresses.iter().enumerate() {
            for (b, y) in &addresses[i + 1..] {
                if x == y && x.port() != 0 {
                    return Err(ConfigError::Invalid(format!("--{a} and --{b} are both {x}")));
                }
            }
        }
        if self.name.is_empty() || self.name.len() > 64 || self.name.chars().any(char::is_whitespace) {
            return Err(ConfigError::Invalid(format!(
                "--name '{}' must be 1-64 characters without spaces",
                self.name
            )));
        }
        if let Some(secret) = &self.cluster_secret
            && secret.len() < MIN_SECRET_BYTES
        {
            return Err(ConfigError::Invalid(format!(
                "the cluster secret must be at least {MIN_SECRET_BYTES} bytes (it is {}): e.g. `openssl rand -hex 16`",
                secret.len()
            )));
        }

        crate::auth::Tokens::validate(&self.tokens).map_err(ConfigError::Invalid)?;
        if let Some(backup) = &self.backup {
            if backup.dir.as_os_str().is_empty() {
                return Err(ConfigError::Invalid("[backup] dir must not be empty".into()));
            }
            if backup.interval < std::time::Duration::from_secs(1) {
                return Err(ConfigError::Invalid("[backup] interval must be at least 1 second".into()));
            }
            if backup.retention == 0 {
                return Err(ConfigError::Invalid(
                    "[backup] retention must be at least 1 (the number of backup files to keep)".into(),
                ));
            }
        }
        if self.tokens.is_empty() && !self.api.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "the admin API would listen on {} without tokens, open to anyone who can reach it: add [[tokens]] \
                 (name, role, secret) to the config file, or bind --api to a loopback address",
                self.api
            )));
        }
        self.validate_advertised()?;
        self.validate_plain_http()?;
        self.limits.validate().map_err(ConfigError::Invalid)
    }

    /// Without `[tls]`, bearer tokens, the cluster secret and every document would cross the network in clear:
    /// allowed on loopback addresses only (where `tandem serve` warns), refused anywhere else.
    fn validate_plain_http(&self) -> Result<(), ConfigError> {
        if self.tls.is_some() {
            return Ok(());
        }
        for (flag, what, address) in [("--api", "admin API", self.api), ("--peer", "peer network", self.peer)]
        {
            if !address.ip().is_loopback() {
                return Err(ConfigError::Invalid(format!(
                    "{flag} {address} is not a loopback address, and the {what} would speak plain HTTP there: \
                     tokens, the cluster secret and the configuration would cross the network in clear. Add a \
                     [tls] table (ca, cert, key) to the config file — make the files with `tandem cert init` and \
                     `tandem cert node NAME --dns HOST --ip IP` (docs/security.md) — or bind a loopback address"
                )));
            }
        }
        Ok(())
    }
}

impl Config {
    /// What this node tells the others: every advertised address must be one they can dial, never an
    /// unspecified address (`0.0.0.0`, `::`), which would make each of them dial itself.
    fn validate_advertised(&self) -> Result<(), ConfigError> {
        let checks = [
            ("api", "--advertise-api", self.api, self.advertise_api.as_deref(), true),
            ("peer", "--advertise-peer", self.peer, self.advertise_peer.as_deref(), true),
            (
                "boot",
                "--boot-advertise",
                self.boot,
                self.boot_advertise.as_deref(),
                self.role != Role::Witness,
            ),
        ];
        for (bind_flag, advertise_flag, bound, advertised, needed) in checks {
            match advertised {
                Some(address) => check_advertised(advertise_flag, address)?,
                None if needed && bound.ip().is_unspecified() => {
                    return Err(ConfigError::Invalid(format!(
                        "--{bind_flag} {bound} listens on every address, but that is not an address the others \
                         can reach: give {advertise_flag} HOST:PORT (the address other members and clients use)"
                    )));
                }
                None => {}
            }
        }
        Ok(())
    }
}

/// Checks an advertised `HOST:PORT`: a host, a port, and not an unspecified address.
pub fn check_advertised(flag: &str, address: &str) -> Result<(), ConfigError> {
    let invalid = |why: &str| ConfigError::Invalid(format!("{flag} '{address}' {why}"));
    let (host, port) = address.rsplit_once(':').ok_or_else(|| invalid("must be HOST:PORT"))?;
    match port.parse::<u16>() {
        Ok(port) if port > 0 => {}
        _ => return Err(invalid("must end with a port (1-65535)")),
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.is_empty() {
        return Err(invalid("must name a host"));
    }
    if bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
        return Err(invalid(
            "is an unspecified address, which no other machine can dial: name this node's own address",
        ));
    }
    Ok(())
}

/// Reads a cluster secret from a file (`--cluster-secret-file`): its content without the final line end.
pub fn read_secret_file(path: &Path) -> Result<String, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    warn_if_readable_by_others(path);
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// Warns when a file holding secrets or token digests can be read by every user of the machine.
pub fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = std::fs::metadata(path)
        && metadata.permissions().mode() & 0o004 != 0
    {
        tracing::warn!(
            "{} holds secrets or token digests and is readable by every user (mode {:o}): chmod 600 it",
            path.display(),
            metadata.permissions().mode() & 0o777
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_file_parses_and_overrides_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/tandem.example.toml");
        let config = Config::default().merge_file(&path).unwrap();
        config.validate().unwrap();
        assert_eq!(config.name, "plant-a-1");
        assert_eq!(config.role, Role::Data);
        assert_eq!(config.api.port(), 7070);
        let backup = config.backup.expect("the example has a [backup] table");
        assert_eq!(backup.interval, std::time::Duration::from_secs(6 * 3600));
        assert_eq!(backup.retention, 28);
        assert_eq!(config.limits, NodeLimits::default(), "the example shows the defaults of [limits]");
        let tls = config.tls.expect("the example has a [tls] table");
        assert_eq!(tls.ca, Path::new("/etc/tandem/tls/ca.pem"));
        assert_eq!(tls.cert, Path::new("/etc/tandem/tls/plant-a-1.pem"));
        assert_eq!(tls.key, Path::new("/etc/tandem/tls/plant-a-1-key.pem"));
    }

    #[test]
    fn limits_read_from_the_file_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("limits.toml");
        let text = "[limits.api]\nmax_connections_per_source = 3\nheader_read_timeout = \"2s\"\n\
                    max_concurrent_backups = 1\n[limits.tftp]\nmax_timeout = 9\n[limits.peer]\nmax_connections = 7\n";
        std::fs::write(&path, text).unwrap();
        let config = Config::default().merge_file(&path).unwrap();
        config.validate().unwrap();
        assert_eq!(config.limits.api.max_connections_per_source, 3);
        assert_eq!(config.limits.api.header_read_timeout, std::time::Duration::from_secs(2));
        assert_eq!(config.limits.api.body_read_timeout, HttpLimits::API_DEFAULTS.body_read_timeout);
        assert_eq!(config.limits.max_concurrent_backups, 1);
        assert_eq!(config.limits.tftp.max_timeout, std::time::Duration::from_secs(9));
        assert_eq!(config.limits.peer_max_connections, 7);
        for bad in [
            "[limits.api]\nmax_connections = 0\n",
            "[limits.boot]\nheader_read_timeout = 0\n",
            "[limits.tftp]\nmax_timeout = 300\n",
            "[limits.api]\nmax_connections = 2\nmax_connections_per_source = 3\n",
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(Config::default().merge_file(&path).unwrap().validate().is_err(), "{bad}");
        }
        for unknown in ["[limits.boot]\nmax_concurrent_backups = 1\n", "[limits.api]\nidle = 3\n"] {
            std::fs::write(&path, unknown).unwrap();
            assert!(
                matches!(Config::default().merge_file(&path), Err(ConfigError::Parse { .. })),
                "{unknown}"
            );
        }
    }

    #[test]
    fn raft_timing_read_from_the_file_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.toml");
        std::fs::write(&path, "[raft]\nheartbeat_interval_ms = 300\nelection_timeout_ms = 1500\n").unwrap();
        let timing = Config::default().merge_file(&path).unwrap().timing;
        assert_eq!((timing.heartbeat_ms, timing.election_min_ms, timing.election_max_ms), (300, 1500, 3000));
        std::fs::write(&path, "[raft]\nheartbeat_interval_ms = 150\n").unwrap();
        let timing = Config::default().merge_file(&path).unwrap().timing;
        assert_eq!((timing.heartbeat_ms, timing.election_min_ms, timing.election_max_ms), (150, 300, 600));
        for bad in [
            "[raft]\nheartbeat_interval_ms = 5\n",
            "[raft]\nheartbeat_interval_ms = 300\nelection_timeout_ms = 500\n",
            "[raft]\nelection_timeout_ms = 90000\n",
            "[raft]\nheartbeat = 100\n",
        ] {
            std::fs::write(&path, bad).unwrap();
            let error = Config::default().merge_file(&path).unwrap_err().to_string();
            assert!(error.contains("raft") || error.contains("heartbeat"), "{bad}: {error}");
        }
    }

    #[test]
    fn advertised_addresses_must_be_dialable() {
        for good in ["10.0.0.1:7070", "node-a.plant.local:7070", "[fd00::1]:7070"] {
            check_advertised("--advertise-api", good).unwrap();
        }
        for bad in ["0.0.0.0:7070", "[::]:7070", "10.0.0.1", "10.0.0.1:0", ":7070", "host:port"] {
            assert!(check_advertised("--advertise-api", bad).is_err(), "{bad}");
        }
        let unspecified =
            Config { peer: "0.0.0.0:7071".parse().unwrap(), tls: Some(example_tls()), ..Config::default() };
        assert!(unspecified.validate().unwrap_err().to_string().contains("--advertise-peer"));
        Config { advertise_peer: Some("10.0.0.1:7071".into()), ..unspecified }.validate().unwrap();
        let witness =
            Config { boot: "0.0.0.0:7080".parse().unwrap(), role: Role::Witness, ..Config::default() };
        witness.validate().unwrap();
        let short = Config { cluster_secret: Some("fifteen-bytes!!".into()), ..Config::default() };
        assert!(short.validate().unwrap_err().to_string().contains("at least 16 bytes"));
    }

    #[test]
    fn backup_intervals_read_as_seconds_or_with_units() {
        let secs = |text: &str| parse_interval(text).map(|d| d.as_secs());
        assert_eq!(secs("90"), Ok(90));
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("30m"), Ok(1800));
        assert_eq!(secs("1h30m"), Ok(5400));
        assert_eq!(secs("1d"), Ok(86_400));
        for bad in ["", "h", "1x", "1h30", "-5", "99999999999999999999d"] {
            assert!(parse_interval(bad).is_err(), "{bad:?} was accepted");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup.toml");
        std::fs::write(&path, "[backup]\ndir = \"/b\"\ninterval = 5\n").unwrap();
        let config = Config::default().merge_file(&path).unwrap();
        assert_eq!(
            config.backup,
            Some(BackupSchedule {
                dir: "/b".into(),
                interval: std::time::Duration::from_secs(5),
                retention: BackupSchedule::DEFAULT_RETENTION
            })
        );
        std::fs::write(&path, "[backup]\ninterval = \"1h\"\n").unwrap();
        assert!(matches!(Config::default().merge_file(&path), Err(ConfigError::Parse { .. })));
        std::fs::write(&path, "[backup]\ndir = \"/b\"\nretention = 0\n").unwrap();
        assert!(Config::default().merge_file(&path).unwrap().validate().is_err());
        std::fs::write(&path, "[backup]\ndir = \"/b\"\nkeep = 3\n").unwrap();
        assert!(matches!(Config::default().merge_file(&path), Err(ConfigError::Parse { .. })));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "nmae = \"x\"\n").unwrap();
        assert!(matches!(Config::default().merge_file(&path), Err(ConfigError::Parse { .. })));
        std::fs::write(&path, "role = \"boss\"\n").unwrap();
        assert!(matches!(Config::default().merge_file(&path), Err(ConfigError::Parse { .. })));
        let clash = Config { peer: Config::default().api, ..Config::default() };
        assert!(clash.validate().is_err());
    }

    #[test]
    fn an_api_open_beyond_loopback_needs_tokens() {
        let open = Config { api: "0.0.0.0:7070".parse().unwrap(), ..Config::default() };
        let error = open.validate().unwrap_err().to_string();
        assert!(error.contains("[[tokens]]"), "{error}");
        let token =
            crate::auth::Token::with_secret("ops", crate::auth::TokenRole::Operator, "a-long-enough-secret");
        let error =
            Config { tokens: vec![token.clone()], ..open.clone() }.validate().unwrap_err().to_string();
        assert!(error.contains("--advertise-api"), "{error}");
        let advertised = Some("10.0.0.1:7070".to_string());
        let tls = Some(example_tls());
        Config { tokens: vec![token], advertise_api: advertised, tls, ..open }.validate().unwrap();
    }

    fn example_tls() -> TlsFiles {
        TlsFiles { ca: "ca.pem".into(), cert: "node.pem".into(), key: "node-key.pem".into() }
    }

    #[test]
    fn plain_http_beyond_loopback_is_refused_before_anything_is_bound() {
        let token =
            crate::auth::Token::with_secret("ops", crate::auth::TokenRole::Operator, "a-long-enough-secret");
        let lan = Config {
            api: "10.0.0.1:7070".parse().unwrap(),
            peer: "10.0.0.1:7071".parse().unwrap(),
            tokens: vec![token],
            ..Config::default()
        };
        let error = lan.validate().unwrap_err().to_string();
        assert!(error.contains("--api 10.0.0.1:7070") && error.contains("[tls]"), "{error}");
        assert!(error.contains("tandem cert init"), "{error}");
        let peer_only = Config { api: Config::default().api, ..lan.clone() };
        let error = peer_only.validate().unwrap_err().to_string();
        assert!(error.contains("--peer 10.0.0.1:7071") && error.contains("peer network"), "{error}");
        Config { tls: Some(example_tls()), ..lan }.validate().unwrap();
        Config::default().validate().expect("plain HTTP stays allowed on loopback");
        let ipv6 = Config {
            api: "[::1]:7070".parse().unwrap(),
            peer: "[::1]:7071".parse().unwrap(),
            ..Config::default()
        };
        ipv6.validate().unwrap();
    }

    #[test]
    fn the_tls_table_needs_its_three_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tls.toml");
        std::fs::write(&path, "[tls]\nca = \"/t/ca.pem\"\ncert = \"/t/a.pem\"\nkey = \"/t/a-key.pem\"\n")
            .unwrap();
        let config = Config::default().merge_file(&path).unwrap();
        let files = config.tls.expect("[tls] read");
        assert_eq!(files.ca, Path::new("/t/ca.pem"));
        assert_eq!(files.key, Path::new("/t/a-key.pem"));
        for bad in [
            "[tls]\ncert = \"a.pem\"\nkey = \"k.pem\"\n",
            "[tls]\nca = \"c\"\ncert = \"a\"\nkey = \"k\"\nverify = false\n",
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(matches!(Config::default().merge_file(&path), Err(ConfigError::Parse { .. })), "{bad}");
        }
    }
}

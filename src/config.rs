//! Node configuration: one documented struct, defaults in one place, a TOML file and flags on top.
//!
//! Precedence: built-in defaults < the file given with `--config` < command-line flags. Every key of the file
//! has the name of its flag (with `_` for `-`); `docs/tandem.example.toml` lists them all and a test parses it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tandem_cluster::Role;

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
    /// data, witness or mirror.
    pub role: Role,
    /// Start empty and wait to be added to an existing cluster.
    pub join: bool,
    /// Shared secret that peers present to each other.
    pub cluster_secret: Option<String>,
    /// Admin API bearer tokens (file only: `[[tokens]]`). None: the API is open, allowed on loopback only.
    pub tokens: Vec<crate::api::auth::Token>,
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
            role: Role::Data,
            join: false,
            cluster_secret: None,
            tokens: Vec::new(),
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
    pub role: Option<String>,
    pub join: Option<bool>,
    pub cluster_secret: Option<String>,
    #[serde(default)]
    pub tokens: Vec<crate::api::auth::Token>,
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
        self.role = role.unwrap_or(self.role);
        self.join = file.join.unwrap_or(self.join);
        self.cluster_secret = file.cluster_secret.or(self.cluster_secret);
        if !file.tokens.is_empty() {
            self.tokens = file.tokens;
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
            && secret.len() < 8
        {
            return Err(ConfigError::Invalid("--cluster-secret must be at least 8 characters".into()));
        }
        crate::api::auth::Tokens::validate(&self.tokens).map_err(ConfigError::Invalid)?;
        if self.tokens.is_empty() && !self.api.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "the admin API would listen on {} without tokens, open to anyone who can reach it: add [[tokens]] \
                 (name, role, secret) to the config file, or bind --api to a loopback address",
                self.api
            )));
        }
        Ok(())
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
        let token = crate::api::auth::Token {
            name: "ops".into(),
            role: crate::api::auth::TokenRole::Operator,
            secret: "a-long-enough-secret".into(),
        };
        Config { tokens: vec![token], ..open }.validate().unwrap();
    }
}

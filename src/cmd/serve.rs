//! `tandem serve`: the node's configuration from defaults, a file and flags, then [`crate::node::serve`].

use std::path::PathBuf;

use clap::Args;

use super::error::CmdError;
use crate::config::Config;

/// Options of `tandem serve` (each overrides the config file).
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// A TOML config file (see docs/tandem.example.toml); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub api: Option<std::net::SocketAddr>,
    #[arg(long)]
    pub peer: Option<std::net::SocketAddr>,
    #[arg(long)]
    pub boot: Option<std::net::SocketAddr>,
    #[arg(long)]
    pub tftp: Option<std::net::SocketAddr>,
    /// How terminals reach this node's boot server (HOST:PORT), if not --boot.
    #[arg(long)]
    pub boot_advertise: Option<String>,
    /// How the other members reach this node's admin API (HOST:PORT), if not --api.
    #[arg(long)]
    pub advertise_api: Option<String>,
    /// How the other members reach this node's peer endpoint (HOST:PORT), if not --peer.
    #[arg(long)]
    pub advertise_peer: Option<String>,
    /// data, witness or mirror.
    #[arg(long)]
    pub role: Option<String>,
    /// Start empty and wait to be added to an existing cluster.
    #[arg(long)]
    pub join: bool,
    /// The cluster secret (at least 16 bytes). Visible in `ps`: prefer --cluster-secret-file or the
    /// TANDEM_CLUSTER_SECRET environment variable.
    #[arg(long, env = "TANDEM_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// A file holding the cluster secret (one line; keep it mode 600). Wins over --cluster-secret.
    #[arg(long)]
    pub cluster_secret_file: Option<PathBuf>,
}

impl ServeArgs {
    /// Defaults, then the file, then flags.
    pub fn into_config(self) -> Result<Config, String> {
        let mut config = Config::default();
        if let Some(path) = &self.config {
            config = config.merge_file(path).map_err(|e| e.to_string())?;
        }
        if let Some(v) = self.data_dir {
            config.data_dir = v;
        }
        if let Some(v) = self.name {
            config.name = v;
        }
        if let Some(v) = self.api {
            config.api = v;
        }
        if let Some(v) = self.peer {
            config.peer = v;
        }
        if let Some(v) = self.boot {
            config.boot = v;
        }
        if let Some(v) = self.tftp {
            config.tftp = v;
        }
        if let Some(v) = self.boot_advertise {
            config.boot_advertise = Some(v);
        }
        if let Some(v) = self.advertise_api {
            config.advertise_api = Some(v);
        }
        if let Some(v) = self.advertise_peer {
            config.advertise_peer = Some(v);
        }
        if let Some(v) = self.role {
            config.role = v.parse()?;
        }
        config.join |= self.join;
        if let Some(v) = self.cluster_secret {
            config.cluster_secret = Some(v);
        }
        if let Some(path) = &self.cluster_secret_file {
            config.cluster_secret = Some(crate::config::read_secret_file(path).map_err(|e| e.to_string())?);
        }
        Ok(config)
    }
}

/// Runs `tandem serve` until SIGTERM or ctrl-c.
pub async fn run(args: &ServeArgs) -> Result<(), CmdError> {
    let config = args.clone().into_config().map_err(CmdError::usage)?;
    crate::node::serve(config).await.map_err(|e| CmdError::failed(format!("{e:#}")))
}

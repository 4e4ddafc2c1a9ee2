//! `tandem boot`: play a terminal against the boot servers ([`crate::client::boot`]) and say what it got.

use std::path::PathBuf;

use super::error::CmdError;
use crate::client::boot::{BootOptions, Protocol};

/// How the client fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtocolArg {
    Http,
    Tftp,
}

/// Options of `tandem boot`.
#[derive(clap::Args, Debug, Clone)]
pub struct BootArgs {
    /// Boot servers as DHCP option 066 gives them: `"HOST[:PORT] HOST[:PORT]"`, primary first; 0.0.0.0 = none.
    #[arg(long)]
    pub servers: String,
    /// The terminal's MAC address.
    #[arg(long)]
    pub mac: String,
    /// Seconds to wait for each server (connect, and each read) before trying the next.
    #[arg(long, default_value_t = 5)]
    pub timeout: u64,
    /// How to fetch: HTTP (like iPXE and UEFI HTTP boot) or TFTP (like PXE ROMs).
    #[arg(long, value_enum, default_value = "http")]
    pub protocol: ProtocolArg,
    /// Where to write `config.json` and the firmware.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// The HTTP port of the servers, for heartbeats when booting over TFTP.
    #[arg(long, default_value_t = 7080)]
    pub http_port: u16,
}

impl BootArgs {
    fn options(&self) -> BootOptions {
        BootOptions {
            servers: self.servers.clone(),
            mac: self.mac.clone(),
            timeout: self.timeout,
            protocol: match self.protocol {
                ProtocolArg::Http => Protocol::Http,
                ProtocolArg::Tftp => Protocol::Tftp,
            },
            out: self.out.clone(),
            http_port: self.http_port,
        }
    }
}

/// Runs `tandem boot`.
pub async fn run(args: &BootArgs) -> Result<(), CmdError> {
    let mut notice = |message: &str| eprintln!("boot: {message}");
    let result = crate::client::boot::boot(&args.options(), &mut notice)
        .await
        .map_err(|e| CmdError::failed(format!("{e:#}")))?;
    match &result.firmware {
        Some((name, digest)) => println!(
            "booted from {} at revision {}: firmware {name} ({digest}) verified",
            result.server, result.revision
        ),
        None => {
            println!("booted from {} at revision {} (no firmware assigned)", result.server, result.revision)
        }
    }
    Ok(())
}

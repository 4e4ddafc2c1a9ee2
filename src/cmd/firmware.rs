//! `tandem firmware add NAME FILE --version V [--kernel PATH --initrd PATH --cmdline TEXT]`: upload firmware
//! files as blobs (with a progress bar on a terminal) and create or update the `firmware` document that names
//! them, in one change set ([`crate::client::firmware`]).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Subcommand;

use super::Context;
use super::error::CmdError;
use super::output::{byte_progress, print_json};
use crate::client::firmware::Firmware;

#[derive(Subcommand, Debug)]
pub enum FirmwareCommand {
    /// Upload a firmware image (and optional kernel/initrd) and create or update its firmware document.
    Add(FirmwareAddArgs),
}

/// Options of `tandem firmware add`.
#[derive(clap::Args, Debug, Clone)]
pub struct FirmwareAddArgs {
    /// The firmware document's id (what terminals name in their `firmware` field).
    pub name: String,
    /// The firmware image.
    pub file: PathBuf,
    /// The image's version, shown in boot documents.
    #[arg(long)]
    pub version: String,
    /// A kernel for iPXE boots.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// An initrd for iPXE boots.
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// The kernel command line for iPXE boots.
    #[arg(long)]
    pub cmdline: Option<String>,
    /// Why (recorded in the history; default "firmware NAME version V").
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// Runs `tandem firmware …`.
pub async fn run(ctx: &Context, command: &FirmwareCommand) -> Result<(), CmdError> {
    let FirmwareCommand::Add(args) = command;
    let firmware = Firmware {
        name: args.name.clone(),
        file: args.file.clone(),
        version: args.version.clone(),
        kernel: args.kernel.clone(),
        initrd: args.initrd.clone(),
        cmdline: args.cmdline.clone(),
        reason: args.reason.clone(),
    };
    let answer =
        crate::client::firmware::add(&ctx.client(), &firmware, Arc::new(byte_progress(0, ""))).await?;
    if ctx.json {
        print_json(&answer);
    } else {
        println!(
            "firmware {} ({} bytes, sha256 {}) {} at revision {}",
            args.name,
            answer["size"],
            answer["digest"].as_str().unwrap_or("?"),
            answer["outcome"].as_str().unwrap_or("?"),
            answer["revision"]
        );
    }
    Ok(())
}

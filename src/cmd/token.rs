//! `tandem token`: make API tokens for a node's config file, offline.
//!
//! `tandem token new NAME --role ROLE` draws a random secret (32 bytes from `rand`'s cryptographically secure
//! generator, seeded by the operating system; 64 hex digits) and prints the `[[tokens]]` entry to paste into the config file of every node that should
//! accept it, with only the secret's SHA-256 (`secret_sha256`), and the secret itself, once, for the client
//! (`--token` or `TANDEM_TOKEN`). `tandem token hash` prints the `secret_sha256` of a secret read from
//! standard input, to replace a `secret = "..."` already in a config file.
//!
//! Nothing here talks to a node: tokens are node-local configuration, read when the node starts.

use std::io::Read;

use clap::Subcommand;
use serde_json::json;

use crate::auth::{TokenRole, sha256};

/// The subcommands of `tandem token`.
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a new token: prints its config entry (with only the secret's SHA-256) and the secret, once.
    New {
        /// The token's name: recorded as the actor of every change made with it.
        name: String,
        /// reader, operator or admin.
        #[arg(long, value_parser = parse_role)]
        role: TokenRole,
    },
    /// Print the secret_sha256 of a secret read from standard input (one line).
    Hash,
}

fn parse_role(text: &str) -> Result<TokenRole, String> {
    match text {
        "reader" => Ok(TokenRole::Reader),
        "operator" => Ok(TokenRole::Operator),
        "admin" => Ok(TokenRole::Admin),
        other => Err(format!("unknown role '{other}' (use reader, operator or admin)")),
    }
}

/// Runs a `tandem token` subcommand; `json` prints one JSON object instead of text.
pub fn run(command: &TokenCommand, json: bool) -> Result<(), String> {
    match command {
        TokenCommand::New { name, role } => {
            let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.@".contains(c);
            if name.is_empty() || name.len() > 64 || !name.chars().all(allowed) {
                return Err(format!(
                    "token name '{name}' must be 1-64 characters of letters, digits, '-', '_', '.' and '@'"
                ));
            }
            let secret = hex::encode(rand::random::<[u8; 32]>());
            let digest = hex::encode(sha256(secret.as_bytes()));
            if json {
                let entry =
                    json!({"name": name, "role": role.as_str(), "secret_sha256": digest, "secret": secret});
                println!("{entry}");
            } else {
                println!(
                    "# Add to the config file of every node that should accept this token, then restart it:"
                );
                println!("[[tokens]]");
                println!("name = \"{name}\"");
                println!("role = \"{}\"", role.as_str());
                println!("secret_sha256 = \"{digest}\"");
                println!();
                println!("# The secret, shown once: give it to the client (--token or TANDEM_TOKEN).");
                println!("{secret}");
            }
            Ok(())
        }
        TokenCommand::Hash => {
            let mut input = String::new();
            std::io::stdin()
                .take(64 * 1024)
                .read_to_string(&mut input)
                .map_err(|e| format!("reading the secret from standard input: {e}"))?;
            let secret = input.trim_end_matches(['\r', '\n']);
            if secret.len() < 16 || secret.trim() != secret || secret.contains('\n') {
                return Err("give one secret of at least 16 characters, without surrounding spaces, on \
                            standard input"
                    .into());
            }
            let digest = hex::encode(sha256(secret.as_bytes()));
            if json {
                println!("{}", json!({"secret_sha256": digest}));
            } else {
                println!("secret_sha256 = \"{digest}\"");
            }
            Ok(())
        }
    }
}

//! `tandem servers add | list | remove | set | lead`: the cluster's membership and its leader.

use clap::Subcommand;
use hyper::Method;
use serde_json::json;

use super::Context;
use super::error::CmdError;
use super::operations::ConfirmArgs;
use super::output::{print_json, print_outcome};
use crate::client::ClientError;
use crate::http::percent_encode;

#[derive(Subcommand, Debug)]
pub enum ServersCommand {
    /// Add a server: discover it through its API, add it as a learner, wait for it to catch up, promote it.
    Add {
        name: String,
        /// The new server's API address (default: NAME resolved by DNS, port 7070).
        #[arg(long)]
        api: Option<String>,
        #[arg(long, default_value = "data")]
        role: String,
    },
    /// List the cluster's servers.
    List,
    /// Remove a server.
    Remove { name: String },
    /// Hand leadership over to the data node NAME (planned, writes wait and go on; see docs/cluster.md).
    Lead { name: String },
    /// Switch a running member between data node and mirror (Full ↔ Mirrored), without restarting anything:
    /// shows the resulting mode and what it survives, asks, then switches.
    Set {
        name: String,
        /// `data` (a mirror joins the voters once it has the whole log) or `mirror` (a data node leaves them).
        #[arg(long, value_parser = ["data", "mirror"])]
        role: String,
        #[command(flatten)]
        confirm: ConfirmArgs,
    },
}

/// Runs a `tandem servers …` command.
pub async fn run(ctx: &Context, command: &ServersCommand) -> Result<(), CmdError> {
    match command {
        ServersCommand::List => {
            let answer = ctx.call(Method::GET, "/v1/cluster/servers", None).await?;
            if ctx.json {
                print_json(&answer);
            } else {
                print_servers(&answer);
            }
            Ok(())
        }
        ServersCommand::Remove { name } => {
            let path = format!("/v1/cluster/servers/{}", percent_encode(name));
            print_outcome(ctx, &ctx.call(Method::DELETE, &path, None).await?);
            Ok(())
        }
        ServersCommand::Add { name, api, role } => add(ctx, name, api.as_deref(), role).await,
        ServersCommand::Lead { name } => {
            let answer = ctx.call(Method::POST, "/v1/cluster/leader", Some(json!({"name": name}))).await?;
            if ctx.json {
                print_json(&answer);
            } else if answer["changed"] == false {
                println!("{} already leads", answer["to"].as_str().unwrap_or(name));
            } else {
                println!(
                    "{} leads now (was {}), handed over in {} ms",
                    answer["to"].as_str().unwrap_or(name),
                    answer["from"].as_str().unwrap_or("?"),
                    answer["took_ms"].as_u64().unwrap_or(0)
                );
            }
            Ok(())
        }
        ServersCommand::Set { name, role, confirm } => set_role(ctx, name, role, confirm).await,
    }
}

/// Asks the new server who it is, then adds it with what it said.
async fn add(ctx: &Context, name: &str, api: Option<&str>, role: &str) -> Result<(), CmdError> {
    let api = api.map_or_else(|| format!("{name}:7070"), str::to_string);
    let info = match ctx.client_of(&api).call(Method::GET, "/v1/node", None).await {
        Ok(info) => info,
        Err(ClientError::Refused(refusal)) => {
            return Err(CmdError::failed(format!(
                "{api} did not say who it is (HTTP {}): {}",
                refusal.status, refusal.answer
            )));
        }
        Err(error) => return Err(error.into()),
    };
    let announced_role = info["role"].as_str().unwrap_or("data");
    if announced_role != role {
        return Err(CmdError::failed(format!(
            "{name} was started with --role {announced_role}, not {role}: restart it with --role {role} or pass --role {announced_role}"
        )));
    }
    let body = json!({"id": info["id"], "name": name, "role": role, "peer_addr": info["peer_addr"],
                      "api_addr": info["api_addr"], "boot_addr": info["boot_addr"]});
    print_outcome(ctx, &ctx.call(Method::POST, "/v1/cluster/servers", Some(body)).await?);
    Ok(())
}

/// Previews the switch (`dry_run`), prints it, asks (or takes `--yes`), then makes it.
async fn set_role(ctx: &Context, name: &str, role: &str, confirm_args: &ConfirmArgs) -> Result<(), CmdError> {
    let path = format!("/v1/cluster/servers/{}/role", percent_encode(name));
    let preview = ctx.call(Method::PUT, &path, Some(json!({"role": role, "dry_run": true}))).await?;
    let text = role_change_text(&preview);
    let nothing_to_do = preview["changes"] == false;
    if confirm_args.dry_run || nothing_to_do {
        if ctx.json {
            print_json(&preview);
        } else {
            print!("{text}");
        }
        return Ok(());
    }
    if ctx.json {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
    confirm_args.ask("Switch?", "applied", "apply").await?;
    let answer = ctx.call(Method::PUT, &path, Some(json!({"role": role}))).await?;
    if ctx.json {
        print_json(&answer);
    } else {
        println!(
            "{name} is now a {} node; the cluster is {}",
            answer["to"].as_str().unwrap_or(role),
            answer["mode_after"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// The preview of a role switch, in words.
fn role_change_text(change: &serde_json::Value) -> String {
    let field = |key: &str| change[key].as_str().unwrap_or("?").to_string();
    let lines = |key: &str| -> String {
        change[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str())
            .map(|l| format!("  - {l}\n"))
            .collect()
    };
    if change["changes"] == false {
        return format!("{} is already a {} node: nothing to change\n", field("name"), field("to"));
    }
    format!(
        "switch {} from {} to {}: mode {} -> {}\nafterwards the cluster survives:\n{}and does not survive:\n{}",
        field("name"),
        field("from"),
        field("to"),
        field("mode_before"),
        field("mode_after"),
        lines("survives"),
        lines("does_not_survive")
    )
}

fn print_servers(value: &serde_json::Value) {
    println!("{:<16} {:>20} {:<8} {:<6} {:<22} {:<22}", "NAME", "ID", "ROLE", "VOTER", "PEER", "API");
    for server in value["servers"].as_array().into_iter().flatten() {
        println!(
            "{:<16} {:>20} {:<8} {:<6} {:<22} {:<22}",
            server["name"].as_str().unwrap_or("?"),
            server["id"].as_u64().unwrap_or(0),
            server["role"].as_str().unwrap_or("?"),
            if server["voter"].as_bool() == Some(true) { "yes" } else { "no" },
            server["peer_addr"].as_str().unwrap_or("?"),
            server["api_addr"].as_str().unwrap_or("?"),
        );
    }
}

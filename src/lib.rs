//! # Tandem
//!
//! An event-sourced, replicated configuration store with a built-in network-boot server.
//!
//! ## One change, start to finish
//! 1. `tandem put terminals t1 '{"mac": …}'` ([`cmd::documents::put`]) sends `PUT /v1/docs/terminals/t1`
//!    through [`client::ApiClient`].
//! 2. The admin API ([`node::api`]) finds the route in [`node::api::ROUTES`], checks the token ([`auth`]),
//!    builds a [`tandem_storage::ChangeSet`] and calls [`tandem_cluster::node::ClusterNode::write`], which
//!    proposes it to openraft on the leader (a follower forwards it over the peer network,
//!    `tandem_cluster::network`).
//! 3. openraft replicates the entry to a quorum; the log store (`tandem_cluster::log_store`) fsyncs each
//!    appended batch.
//! 4. Once committed, the state machine (`tandem_cluster::state_machine`) calls
//!    [`tandem_storage::Store::apply`] for the whole batch: `decide` turns the change set into an event (or a
//!    rejection), the projection and the event are written in one atomic batch, then fsynced.
//! 5. The API answers with the outcome and the revision; every node now serves the new configuration from its
//!    own store (the boot server, [`node::boot`], reads the same projection). Snapshots of the store
//!    (`tandem_storage::snapshot`) bring new nodes up to date and are the format of backups.
//!
//! ## The layer rule
//!
//! ```text
//! main ──▶ cmd ──▶ client ──┐
//!           │               ├──▶ http, auth, config, limits ──▶ tandem-cluster ──▶ tandem-storage
//!           └────▶ node ────┘
//! ```
//!
//! | layer | what | may use |
//! |---|---|---|
//! | `main.rs` | parses the command line, hands it to [`cmd`] | `cmd` |
//! | [`cmd`] | the CLI: clap arguments, printing (tables, `--json`, progress, prompts), exit codes | everything below |
//! | [`client`] | a library for the admin API: what commands do over HTTP; no clap, no exit codes, no printing | shared leaves, the cluster and storage crates |
//! | [`node`] | what `tandem serve` runs: the admin API, the boot servers, the backup schedule, metrics, recovery | shared leaves, the cluster and storage crates, and [`client::api`] only (a follower proxies to the leader) |
//! | [`http`], [`auth`], [`config`], [`limits`] | shared leaves: HTTP helpers and the error shape, tokens and roles, the node's configuration, listener limits | each other, the cluster and storage crates |
//!
//! Nothing imports `cmd`; `client` never imports `node`; `node` never imports `client`'s command flows.
//! The benchmarks (`bench`, cargo feature `bench`) are a harness above everything, reached only
//! from `cmd`. So a reader knows from a path alone where code runs: `node/` in the server process, `client/`
//! and `cmd/` in the operator's shell.
//!
//! **Kept by CI.** `tests/layers.rs` reads the `crate::`/`super::` paths of every crate of the workspace and
//! fails on an import cycle between modules (at every level: the top-level modules of a crate, and the
//! children of each module) and on any edge this rule forbids. It is a test of our own rather than
//! `cargo modules dependencies --acyclic` because it runs in the ordinary `cargo test` with no extra tool
//! (cargo-modules needs its own rust-analyzer build in step with the toolchain), and because a generic cycle
//! finder cannot check the direction of the layers. The checker has tests of its own on a tiny crate with a
//! cycle.
//!
//! ## Modules
//! [`cmd`] (one file per command), [`client`] ([`client::api`] transport, [`client::flow`] preview → confirm →
//! apply, sync, watch, backup, firmware, boot client), [`node`] ([`node::serve`], [`node::api`],
//! [`node::boot`], [`node::backup`], [`node::metrics`]), [`config`] (defaults, file, validation), [`auth`]
//! (tokens, roles), [`http`] (shared HTTP helpers), [`limits`] (connection caps and timeouts of the listeners).

pub mod auth;
#[cfg(feature = "bench")]
pub mod bench;
pub mod client;
pub mod cmd;
pub mod config;
pub mod http;
pub mod limits;
pub mod node;

//! # Tandem
//!
//! An event-sourced, replicated configuration store with a built-in network-boot server.
//!
//! ## One change, start to finish
//! 1. `tandem put terminals t1 '{"mac": …}'` ([`cli`]) sends `PUT /v1/docs/terminals/t1` through
//!    [`client::ApiClient`].
//! 2. The admin API ([`api`]) builds a [`tandem_storage::ChangeSet`] and calls
//!    [`tandem_cluster::node::ClusterNode::write`], which proposes it to openraft on the leader (a follower
//!    forwards it over the peer network, `tandem_cluster::network`).
//! 3. openraft replicates the entry to a quorum; the log store (`tandem_cluster::log_store`) fsyncs each
//!    appended batch.
//! 4. Once committed, the state machine (`tandem_cluster::state_machine`) calls
//!    [`tandem_storage::Store::apply`] for the whole batch: `decide` turns the change set into an event (or a
//!    rejection), the projection and the event are written in one atomic batch, then fsynced.
//! 5. The API answers with the outcome and the revision; every node now serves the new configuration from its
//!    own store (the boot server reads the same projection). Snapshots of the store
//!    (`tandem_storage::snapshot`) bring new nodes up to date and are the format of backups.
//!
//! ## Modules
//! [`config`] (defaults, file, validation), [`serve`] (node start-up), [`api`] (admin HTTP API: routes,
//! tokens, time travel, watch, backup streams), [`client`] (its client), [`cli`] (the command line),
//! [`operations`] (export, diff, revert, undo, import commands), [`watch`] (the resuming watch client),
//! [`backup`] (backup commands and the schedule), [`sync`] (one-way sync between installations), [`boot`]
//! (HTTP and TFTP boot servers, boot client), [`firmware`] (uploads), [`metrics`] (Prometheus), [`bench`](mod@bench)
//! (benchmarks), [`http`] (shared HTTP helpers).

pub mod api;
pub mod backup;
pub mod bench;
pub mod boot;
pub mod chunked_read;
pub mod cli;
pub mod client;
pub mod config;
pub mod firmware;
pub mod http;
pub mod metrics;
pub mod operations;
pub mod recover;
pub mod serve;
pub mod sync;
pub mod terminal;
pub mod token;
pub mod watch;

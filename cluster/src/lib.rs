//! # tandem-cluster: replication of the configuration log
//!
//! Adapts the storage crate to openraft: a Raft log store ([`log_store`]) and a state machine
//! ([`state_machine`]) that applies committed [`tandem_storage::Command`]s through
//! [`tandem_storage::Store::apply`] and keeps its snapshots in files ([`snapshot_files`]), the peer network
//! ([`network`]), and the node with its roles ([`types`]); [`blob_compaction`] frees the log of blob chunks
//! once the store holds them in files.

pub mod blob_compaction;
pub mod connection_gate;
pub mod identity;
pub mod log_store;
pub mod metrics;
pub mod network;
pub mod node;
pub mod proposer;
pub mod purge_gate;
pub mod recover;
pub mod snapshot_files;
pub mod state_machine;
pub mod tls;
pub mod types;
pub mod upload_reaper;

pub use log_store::{LogReader, LogStore};
pub use state_machine::{SharedStore, SnapshotBuilder, StateMachine};
pub use types::{NodeId, NodeInfo, Raft, Request, Response, Role, TypeConfig, Written};

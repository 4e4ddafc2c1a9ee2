//! # tandem-cluster: replication of the configuration log
//!
//! This crate will adapt the storage crate to openraft: a Raft log store and a state machine that applies
//! committed [`tandem_storage::Command`]s through [`tandem_storage::Store::apply`], the peer network, membership
//! (data nodes, witness, mirrors) and roles. Until it lands, Tandem runs as a single node on its local store.

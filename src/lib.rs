//! # Tandem
//!
//! An event-sourced, replicated configuration store with a built-in network-boot server.
//!
//! Today this crate holds the command-line front end over the storage engine ([`tandem_storage`]): opening a
//! data directory and measuring the engine ([`bench`]). The cluster (openraft), HTTP API and boot server land
//! on top of it issue by issue; see `README.md` for what works now.

pub mod bench;

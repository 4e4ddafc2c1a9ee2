//! # Tandem
//!
//! (crate doc rewritten below)

pub mod auth;
#[cfg(feature = "bench")]
pub mod bench;
pub mod client;
pub mod cmd;
pub mod config;
pub mod http;
pub mod node;

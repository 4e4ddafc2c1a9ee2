//! A library for the admin API: what the `tandem` commands do over HTTP, without clap, exit codes or
//! printing (the commands in [`crate::cmd`] add those).
//!
//! | what | where |
//! |---|---|
//! | one HTTP client, base-URL rule, refusal message, streamed blob upload | [`api`] |
//! | preview → confirm → apply with `if_revision` (revert, undo, import, sync, live restore) | [`flow`] |
//! | firmware uploads | [`firmware`] |
//! | the resuming watch | [`watch`] |
//! | one-way sync between installations | [`sync`] |
//! | backup download, live restore | [`backup`] |
//! | the boot client that plays a terminal | [`boot`] |

pub mod api;
pub mod backup;
pub mod boot;
pub mod firmware;
pub mod flow;
pub mod sync;
pub mod watch;

pub use api::{ApiClient, ClientError, Refusal};

/// How a long transfer reports its progress: a command draws a progress bar, other callers pass
/// [`NoProgress`].
pub trait Progress: Send + Sync {
    /// A transfer called `label` of `total` bytes starts.
    fn start(&self, label: &str, total: u64) {
        let _ = (label, total);
    }
    /// `bytes` more went through.
    fn advance(&self, bytes: u64);
    /// The transfer ended.
    fn finish(&self) {}
}

/// Progress nobody watches.
#[derive(Debug, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn advance(&self, _bytes: u64) {}
}

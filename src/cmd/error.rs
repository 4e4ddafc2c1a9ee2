//! The one error of a `tandem` command, and the exit codes scripts can trust.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | refused or failed: the message says why |
//! | 2 | usage error (a flag, an address or a file that cannot be what it should) |
//! | 3 | the server could not be reached |
//!
//! Every failure of the client library converts into a [`CmdError`] with a `From` impl that decides its code
//! from the error's variant — never by looking inside an `anyhow` chain.

use crate::client::ClientError;
use crate::client::backup::BackupError;
use crate::client::firmware::FirmwareError;
use crate::client::flow::FlowError;
use crate::client::sync::SyncError;
use crate::client::watch::WatchError;

/// Exit code: done.
pub const EXIT_OK: u8 = 0;
/// Exit code: refused or failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: usage error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: server unreachable.
pub const EXIT_UNREACHABLE: u8 = 3;

/// A failure of a command: the exit code and the message printed after `error: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdError {
    pub code: u8,
    pub message: String,
}

impl CmdError {
    /// Refused or failed (exit 1).
    pub fn failed(message: impl Into<String>) -> Self {
        CmdError { code: EXIT_FAILED, message: message.into() }
    }

    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        CmdError { code: EXIT_USAGE, message: message.into() }
    }

    /// The server could not be reached (exit 3).
    pub fn unreachable(message: impl Into<String>) -> Self {
        CmdError { code: EXIT_UNREACHABLE, message: message.into() }
    }
}

impl std::fmt::Display for CmdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl CmdError {
    /// The exit code of a client error: 3 when the server could not be reached, 1 otherwise.
    pub fn from_client_code(error: &ClientError) -> u8 {
        match error {
            ClientError::Unreachable { .. } => EXIT_UNREACHABLE,
            _ => EXIT_FAILED,
        }
    }
}

impl From<ClientError> for CmdError {
    fn from(error: ClientError) -> Self {
        CmdError { code: CmdError::from_client_code(&error), message: error.to_string() }
    }
}

impl From<FlowError> for CmdError {
    fn from(error: FlowError) -> Self {
        match error {
            FlowError::Preview(error) | FlowError::Apply(error) => error.into(),
            other => CmdError::failed(other.to_string()),
        }
    }
}

impl From<SyncError> for CmdError {
    fn from(error: SyncError) -> Self {
        let code = match error {
            SyncError::Unreachable { .. } => EXIT_UNREACHABLE,
            SyncError::BadAddress(_) => EXIT_USAGE,
            _ => EXIT_FAILED,
        };
        CmdError { code, message: error.to_string() }
    }
}

impl From<WatchError> for CmdError {
    fn from(error: WatchError) -> Self {
        let code = match error {
            WatchError::Usage(_) => EXIT_USAGE,
            WatchError::Unreachable { .. } => EXIT_UNREACHABLE,
            _ => EXIT_FAILED,
        };
        CmdError { code, message: error.to_string() }
    }
}

impl From<FirmwareError> for CmdError {
    fn from(error: FirmwareError) -> Self {
        let code = match error.client_error() {
            Some(client) => CmdError::from_client_code(client),
            None => EXIT_FAILED,
        };
        CmdError { code, message: error.to_string() }
    }
}

impl From<BackupError> for CmdError {
    fn from(error: BackupError) -> Self {
        match error {
            BackupError::Client(error) => error.into(),
            BackupError::Failed(message) => CmdError::failed(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_exit_codes() {
        let unreachable = SyncError::Unreachable { server: "http://x".into(), message: "refused".into() };
        assert_eq!(CmdError::from(unreachable).code, 3);
        assert_eq!(CmdError::from(SyncError::BadAddress("::".into())).code, 2);
        assert_eq!(CmdError::from(SyncError::NotConfirmed).code, 1);
        let moved = SyncError::DestinationMoved { preview: 4, now: "5".into() };
        assert_eq!(CmdError::from(moved).code, 1);
        assert_eq!(CmdError::from(WatchError::Usage("x".into())).code, 2);
        let gone = ClientError::Unreachable { server: "http://x".into(), message: "refused".into() };
        assert_eq!(CmdError::from(FlowError::Preview(gone)).code, 3);
        assert_eq!(CmdError::from(FlowError::NoRevision(serde_json::Value::Null)).code, 1);
    }
}

//! A cap on the connections one listener serves at once, in total and per source address.
//!
//! Every TCP listener of a node (peer, admin API, HTTP boot) takes a [`ConnectionGate`] and asks it to
//! [`ConnectionGate::admit`] each accepted connection *before* anything is read from it: the answer is a
//! [`ConnectionPermit`] that the connection keeps until it closes, or a [`Refusal`] (the listener then closes
//! the socket at once, after a best-effort short answer). Without such a cap one client that opens sockets
//! and sends nothing holds a file descriptor each until a timeout fires, and a few thousand of them exhaust
//! the descriptors of the whole process, which also serves Raft and the boot files.
//!
//! The per-source cap counts by IP address (not port), so one host cannot take the whole listener; the total
//! cap bounds what many hosts can take together. Both are plain counters under one mutex, touched twice per
//! connection (admit, drop): the cost is nothing next to a TCP handshake.
//!
//! ```
//! use tandem_cluster::connection_gate::{ConnectionGate, Refusal};
//! let gate = ConnectionGate::new(10, 2);
//! let ip = "10.0.0.7".parse().unwrap();
//! let first = gate.admit(ip).unwrap();
//! let _second = gate.admit(ip).unwrap();
//! assert_eq!(gate.admit(ip).unwrap_err(), Refusal::SourceFull { limit: 2 });
//! drop(first);
//! assert!(gate.admit(ip).is_ok());
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The listener serves its maximum number of connections.
    #[error("the server has {limit} connections open, its maximum: try again later")]
    ListenerFull { limit: usize },
    /// This source address has its maximum number of connections open.
    #[error("your address has {limit} connections open, the most allowed per address: close some first")]
    SourceFull { limit: usize },
}

/// Counts a listener's open connections, in total and per source address (see the module docs).
#[derive(Debug, Clone)]
pub struct ConnectionGate {
    inner: Arc<GateInner>,
}

#[derive(Debug)]
struct GateInner {
    max_total: usize,
    max_per_source: usize,
    open: Mutex<OpenConnections>,
}

#[derive(Debug, Default)]
struct OpenConnections {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// Held by an admitted connection; dropping it frees the connection's place.
#[derive(Debug)]
pub struct ConnectionPermit {
    inner: Arc<GateInner>,
    source: IpAddr,
}

impl ConnectionGate {
    /// A gate admitting at most `max_total` connections, at most `max_per_source` of them from one IP address
    /// (each at least 1).
    pub fn new(max_total: usize, max_per_source: usize) -> Self {
        let inner = GateInner {
            max_total: max_total.max(1),
            max_per_source: max_per_source.max(1),
            open: Mutex::new(OpenConnections::default()),
        };
        ConnectionGate { inner: Arc::new(inner) }
    }

    /// Admits a connection from `source`, or says why not.
    pub fn admit(&self, source: IpAddr) -> Result<ConnectionPermit, Refusal> {
        let mut open = self.inner.lock();
        if open.total >= self.inner.max_total {
            return Err(Refusal::ListenerFull { limit: self.inner.max_total });
        }
        let from_source = open.by_source.entry(source).or_insert(0);
        if *from_source >= self.inner.max_per_source {
            return Err(Refusal::SourceFull { limit: self.inner.max_per_source });
        }
        *from_source += 1;
        open.total += 1;
        Ok(ConnectionPermit { inner: self.inner.clone(), source })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.inner.lock().total
    }
}

impl GateInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, OpenConnections> {
        // Two counters always updated together under the lock: a panic elsewhere cannot leave them torn.
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut open = self.inner.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_source.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                open.by_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_cap_holds_across_sources_and_frees_on_drop() {
        let gate = ConnectionGate::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "::1".parse().unwrap();
        let permits = [gate.admit(a).unwrap(), gate.admit(a).unwrap(), gate.admit(b).unwrap()];
        assert_eq!(gate.admit(c).unwrap_err(), Refusal::ListenerFull { limit: 3 });
        assert_eq!(gate.open(), 3);
        drop(permits);
        assert_eq!(gate.open(), 0);
        assert!(gate.inner.lock().by_source.is_empty(), "sources with no connection are forgotten");
        assert!(gate.admit(c).is_ok());
    }
}

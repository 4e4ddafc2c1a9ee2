//! Terminal heartbeats: which terminals this node has heard from, and how they say they are.
//!
//! A running terminal posts `{"state": "green" | "red", "detail": "…"}` to `POST /boot/v1/status/{mac}` on
//! **every** boot server it knows, every few seconds. Each node keeps what it hears in a [`Heartbeats`]
//! registry in memory:
//!
//! - **node-local, never replicated**: a heartbeat says "this terminal can reach *this* server". Two nodes of a
//!   pair may rightly disagree (a terminal on a cut switch port reaches one of them), and that disagreement is
//!   exactly what an operator wants to see per node in `tandem status`;
//! - **soft state**: lost on restart, rebuilt within one heartbeat period. Nothing depends on it for
//!   correctness, so it is not worth a disk write per heartbeat;
//! - **bounded**: at most [`Heartbeats::capacity`] terminals; when full, the terminal heard from least recently
//!   is forgotten to make room (the boot port is unauthenticated, so a flood of made-up MACs must not grow
//!   memory without bound).
//!
//! A terminal is *online* while its heartbeats keep arriving: [`Heartbeats::terminals_online`] counts those
//! heard from within a window (a few heartbeat periods, chosen by the caller). Whether a terminal is green or
//! red is its own report; online/offline is this node's observation.
//!
//! ```
//! use std::time::Duration;
//! use tandem::node::boot::heartbeat::{HeartbeatReport, Heartbeats, TerminalState};
//! use tandem_storage::Mac;
//!
//! let heartbeats = Heartbeats::new();
//! let report = HeartbeatReport::parse(br#"{"state": "red", "detail": "no RDP session"}"#).unwrap();
//! heartbeats.record(Mac::parse("52:54:00:12:34:56").unwrap(), report);
//! assert_eq!(heartbeats.terminals_online(Duration::from_secs(30)), 1);
//! let seen = heartbeats.get(Mac::parse("525400123456").unwrap()).unwrap();
//! assert_eq!(seen.state, TerminalState::Red);
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tandem_storage::Mac;

/// The most terminals a registry remembers by default.
pub const DEFAULT_CAPACITY: usize = 65_536;

/// The longest `detail` kept, in characters; longer details are cut (a heartbeat is a status line, not a log).
pub const MAX_DETAIL_CHARS: usize = 512;

/// The largest heartbeat body accepted, in bytes.
pub const MAX_REPORT_BYTES: usize = 4096;

/// How a terminal says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TerminalState {
    /// Running normally (e.g. its terminal-server session is up).
    Green,
    /// Running, but something is wrong; `detail` says what.
    Red,
}

impl TerminalState {
    /// `green` or `red`.
    pub fn as_str(self) -> &'static str {
        match self {
            TerminalState::Green => "green",
            TerminalState::Red => "red",
        }
    }
}

/// One heartbeat as a terminal sends it. Unknown fields are ignored, so newer terminals can add some.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReport {
    pub state: TerminalState,
    #[serde(default)]
    pub detail: String,
}

impl HeartbeatReport {
    /// Parses a heartbeat body, with a message that says what is wrong (for a `400`).
    pub fn parse(body: &[u8]) -> Result<HeartbeatReport, String> {
        if body.len() > MAX_REPORT_BYTES {
            return Err(format!("a heartbeat may be at most {MAX_REPORT_BYTES} bytes"));
        }
        let mut report: HeartbeatReport = serde_json::from_slice(body).map_err(|e| {
            format!(r#"a heartbeat is {{"state": "green" | "red", "detail": "…"}}; this one is not: {e}"#)
        })?;
        if report.detail.chars().count() > MAX_DETAIL_CHARS {
            report.detail = report.detail.chars().take(MAX_DETAIL_CHARS).collect();
        }
        Ok(report)
    }
}

/// What this node last heard from one terminal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub state: TerminalState,
    pub detail: String,
    /// When the last heartbeat arrived (monotonic: for "online within the window").
    pub last_seen: Instant,
    /// The same moment on the wall clock (for display).
    pub last_seen_wall: SystemTime,
    /// How many heartbeats arrived since this node first heard from the terminal.
    pub count: u64,
}

/// The registry of terminal heartbeats on this node. Cheap to share (`Arc<Heartbeats>`); every method takes
/// `&self` and holds an internal lock only for a map operation.
#[derive(Debug)]
pub struct Heartbeats {
    terminals: Mutex<HashMap<Mac, Heartbeat>>,
    capacity: usize,
}

impl Default for Heartbeats {
    fn default() -> Self {
        Self::new()
    }
}

impl Heartbeats {
    /// An empty registry that remembers at most [`DEFAULT_CAPACITY`] terminals.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// An empty registry that remembers at most `capacity` terminals (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        Heartbeats { terminals: Mutex::new(HashMap::new()), capacity: capacity.max(1) }
    }

    /// The most terminals remembered.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Mac, Heartbeat>> {
        // The map is always consistent between operations, so a panic elsewhere cannot have broken it.
        self.terminals.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a heartbeat from `mac`, now.
    pub fn record(&self, mac: Mac, report: HeartbeatReport) {
        self.record_at(mac, report, Instant::now(), SystemTime::now());
    }

    /// Records a heartbeat that arrived at `at` (tests use this to age entries).
    pub fn record_at(&self, mac: Mac, report: HeartbeatReport, at: Instant, wall: SystemTime) {
        let mut terminals = self.lock();
        if let Some(heartbeat) = terminals.get_mut(&mac) {
            heartbeat.state = report.state;
            heartbeat.detail = report.detail;
            heartbeat.last_seen = at;
            heartbeat.last_seen_wall = wall;
            heartbeat.count += 1;
            return;
        }
        if terminals.len() >= self.capacity {
            // O(n), but only when full, and n is bounded by the capacity.
            if let Some(stalest) = terminals.iter().min_by_key(|(_, h)| h.last_seen).map(|(mac, _)| *mac) {
                terminals.remove(&stalest);
            }
        }
        terminals.insert(
            mac,
            Heartbeat {
                state: report.state,
                detail: report.detail,
                last_seen: at,
                last_seen_wall: wall,
                count: 1,
            },
        );
    }

    /// What was last heard from `mac`, if anything.
    pub fn get(&self, mac: Mac) -> Option<Heartbeat> {
        self.lock().get(&mac).cloned()
    }

    /// How many terminals were heard from within `window` (up to now).
    pub fn terminals_online(&self, window: Duration) -> usize {
        let now = Instant::now();
        self.lock().values().filter(|h| now.saturating_duration_since(h.last_seen) <= window).count()
    }

    /// The terminals heard from within `window`, by state: `(green, red)`.
    pub fn online_by_state(&self, window: Duration) -> (usize, usize) {
        let now = Instant::now();
        let terminals = self.lock();
        let online = terminals.values().filter(|h| now.saturating_duration_since(h.last_seen) <= window);
        online.fold((0, 0), |(green, red), h| match h.state {
            TerminalState::Green => (green + 1, red),
            TerminalState::Red => (green, red + 1),
        })
    }

    /// Every terminal ever heard from (and not forgotten), sorted by MAC.
    pub fn all(&self) -> Vec<(Mac, Heartbeat)> {
        let mut all: Vec<(Mac, Heartbeat)> = self.lock().iter().map(|(mac, h)| (*mac, h.clone())).collect();
        all.sort_by_key(|(mac, _)| *mac);
        all
    }

    /// How many terminals are remembered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no terminal was heard from.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Forgets terminals not heard from within `older_than` (a status loop may call this now and then).
    pub fn forget_older_than(&self, older_than: Duration) -> usize {
        let now = Instant::now();
        let mut terminals = self.lock();
        let before = terminals.len();
        terminals.retain(|_, h| now.saturating_duration_since(h.last_seen) <= older_than);
        before - terminals.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(last: u8) -> Mac {
        Mac([0x52, 0x54, 0, 0, 0, last])
    }

    fn green() -> HeartbeatReport {
        HeartbeatReport { state: TerminalState::Green, detail: String::new() }
    }

    #[test]
    fn reports_parse_strictly_but_ignore_unknown_fields() {
        let report = HeartbeatReport::parse(br#"{"state":"green","uptime":5}"#).unwrap();
        assert_eq!(report, green());
        for bad in
            [&b"{}"[..], br#"{"state":"GREEN"}"#, br#"{"state":"blue"}"#, b"not json", br#"{"state":1}"#]
        {
            assert!(HeartbeatReport::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let long = format!(r#"{{"state":"red","detail":"{}"}}"#, "x".repeat(2000));
        assert_eq!(HeartbeatReport::parse(long.as_bytes()).unwrap().detail.len(), MAX_DETAIL_CHARS);
        assert!(HeartbeatReport::parse(&vec![b' '; MAX_REPORT_BYTES + 1]).is_err());
    }

    #[test]
    fn online_counts_only_recent_heartbeats() {
        let heartbeats = Heartbeats::new();
        let now = Instant::now();
        heartbeats.record(mac(1), green());
        heartbeats.record(mac(2), HeartbeatReport { state: TerminalState::Red, detail: "no session".into() });
        if let Some(old) = now.checked_sub(Duration::from_secs(120)) {
            heartbeats.record_at(mac(3), green(), old, SystemTime::now());
            assert_eq!(heartbeats.terminals_online(Duration::from_secs(30)), 2);
            assert_eq!(heartbeats.online_by_state(Duration::from_secs(30)), (1, 1));
            assert_eq!(heartbeats.forget_older_than(Duration::from_secs(60)), 1);
        }
        heartbeats.record(mac(1), green());
        assert_eq!(heartbeats.get(mac(1)).unwrap().count, 2);
        assert_eq!(heartbeats.len(), 2);
    }

    #[test]
    fn a_full_registry_forgets_the_stalest_terminal() {
        let heartbeats = Heartbeats::with_capacity(2);
        let start = Instant::now();
        heartbeats.record_at(mac(1), green(), start, SystemTime::now());
        heartbeats.record_at(mac(2), green(), start + Duration::from_millis(1), SystemTime::now());
        heartbeats.record_at(mac(3), green(), start + Duration::from_millis(2), SystemTime::now());
        let macs: Vec<Mac> = heartbeats.all().into_iter().map(|(mac, _)| mac).collect();
        assert_eq!(macs, vec![mac(2), mac(3)]);
    }
}

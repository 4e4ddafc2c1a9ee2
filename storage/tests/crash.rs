//! Crash test: a store killed with SIGKILL at random moments loses nothing it reported durable, and always
//! reopens consistent.
//!
//! The test binary is both sides. The parent test, `sigkill_loses_nothing_reported_durable`, starts this
//! same executable again as a child process that runs only the ignored test `crash_child`, with the data
//! directory in the `TANDEM_CRASH_TEST_DIR` environment variable. The child opens the store and loops: now and
//! then it uploads a small blob (`Store::put_blob` makes it durable) and reports its digest; otherwise it
//! applies a batch of 1 to 49 random change sets in one `Store::apply` (puts, merge patches and deletes of
//! free-form documents of up to ~47 KiB, so that events and checkpoints span several stored parts, and of
//! terminals, terminal servers and firmware that reference each other and the blobs, so that some change sets
//! are rejected), calls `Store::durable`, and only then prints `durable <revision>`.
//!
//! The parent kills the child with SIGKILL 20 to 300 ms after it reported the store open (every fifth time, 1
//! to 40 ms after the process started instead, so that some kills land while sled is still recovering), reads
//! what the child printed up to its death, reopens the store and checks that:
//! - it opens cleanly (no corruption, no half-written batch);
//! - its revision is at least the last revision the child reported durable, and every blob reported durable
//!   is there;
//! - its history is exactly revisions `1..=revision` (read forwards, and its end backwards), replaying it
//!   from scratch gives its projection, and `Store::state_at` agrees with the replay at a sample of revisions
//!   (which start from checkpoints);
//! - every blob it lists reads back in full with the right size and SHA-256 digest;
//! - a child restarted on the directory opens it at the revision the parent saw.
//!
//! It does that 20 times on the same directory, so later children continue from earlier ones' history. Every
//! wait is bounded and the whole test fails past two minutes; a guard kills the child if the parent panics.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::ThreadRng;
use serde_json::{Value, json};
use tandem_storage::{
    ChangeMeta, ChangeSet, Digest, HistoryFilter, Projection, Revision, Store, StoreOptions,
};

/// The environment variable that carries the data directory to the child (and makes it run at all).
const DIR_VAR: &str = "TANDEM_CRASH_TEST_DIR";
/// Marks the child's report lines among whatever else the test harness prints.
const MARK: &str = "tandem-crash-child:";
/// How many times the child is killed.
const KILLS: usize = 20;
/// The whole test fails if it takes longer than this.
const TEST_LIMIT: Duration = Duration::from_secs(120);
/// The longest wait for a child to open the store, or to die once killed.
const CHILD_WAIT: Duration = Duration::from_secs(20);
/// A child never runs longer than this, even if nobody kills it.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);
/// Low, so that checkpoints are written often.
const CHECKPOINT_INTERVAL: u64 = 20;
/// The largest padding of a free-form document: its canonical JSON stays under the 48 KiB document limit.
const MAX_PAD: usize = 47 * 1024;

fn options() -> StoreOptions {
    StoreOptions { checkpoint_interval: CHECKPOINT_INTERVAL }
}

// ---------------------------------------------------------------------------------------------------------
// The child.

/// The child process: writes to the store until it is killed. Does nothing in an ordinary test run.
#[test]
#[ignore = "the child process of sigkill_loses_nothing_reported_durable, which runs it"]
fn crash_child() {
    let Some(dir) = std::env::var_os(DIR_VAR) else { return };
    let mut store = Store::open_with(Path::new(&dir), options()).expect("the child opens the store");
    let mut out = std::io::stdout();
    let mut report = |line: String| writeln!(out, "{MARK} {line}").and_then(|()| out.flush()).is_ok();
    if !report(format!("open {}", store.revision())) {
        return;
    }
    let mut rng = rand::rng();
    let started = Instant::now();
    let mut number = 0u64;
    while started.elapsed() < CHILD_LIFETIME {
        if rng.random_ratio(1, 8) {
            let mut bytes = vec![0u8; rng.random_range(0..100_000)];
            rng.fill(&mut bytes[..]);
            let (digest, _) =
                store.put_blob(rng.random(), &bytes[..]).expect("upload").expect("the upload is accepted");
            if !report(format!("blob {digest}")) {
                return; // the parent is gone
            }
            continue;
        }
        let commands: Vec<tandem_storage::Command> = (0..rng.random_range(1..50))
            .map(|_| {
                number += 1;
                tandem_storage::Command::Change(random_change_set(&mut rng, &store, number))
            })
            .collect();
        store.apply(&commands, None).expect("apply");
        store.durable().expect("durable");
        if !report(format!("durable {}", store.revision())) {
            return;
        }
    }
}

fn random_change_set(rng: &mut ThreadRng, store: &Store, number: u64) -> ChangeSet {
    let mut change_set = ChangeSet::new(ChangeMeta {
        actor: "crash-child".into(),
        reason: format!("change {number}"),
        timestamp_ms: number,
        request_id: rng.random_ratio(1, 10).then(|| format!("request-{}", rng.random_range(0..1000))),
        ..ChangeMeta::default()
    });
    for _ in 0..rng.random_range(1..4) {
        let (collection, id, document) = match rng.random_range(0..10) {
            0..5 => ("pads", format!("p{}", rng.random_range(0..30)), pad(rng)),
            5 => (
                "terminal_servers",
                format!("s{}", rng.random_range(0..5)),
                json!({"address": format!("10.0.0.{}", rng.random_range(0..255))}),
            ),
            6..8 => {
                let mut terminal = json!({
                    "mac": format!("52:54:00:00:00:{:02x}", rng.random_range(0..20)),
                    "terminal_servers": [format!("s{}", rng.random_range(0..5))],
                });
                if rng.random_bool(0.5) {
                    terminal["firmware"] = json!(format!("f{}", rng.random_range(0..4)));
                }
                ("terminals", format!("t{}", rng.random_range(0..15)), terminal)
            }
            _ => {
                let blobs: Vec<(&Digest, u64)> = store.blobs().collect();
                if blobs.is_empty() {
                    continue;
                }
                let (digest, size) = blobs[rng.random_range(0..blobs.len())];
                (
                    "firmware",
                    format!("f{}", rng.random_range(0..4)),
                    json!({"version": number.to_string(), "blob": digest.to_string(), "size": size}),
                )
            }
        };
        change_set = match rng.random_range(0..10) {
            0..6 => change_set.put(collection, &id, document),
            6..8 => change_set.patch(collection, &id, json!({"patched": number})),
            _ => change_set.delete(collection, &id),
        };
    }
    change_set
}

/// A free-form document: mostly small, one in ten up to [`MAX_PAD`] bytes.
fn pad(rng: &mut ThreadRng) -> Value {
    let len = if rng.random_ratio(1, 10) {
        rng.random_range(16 * 1024..=MAX_PAD)
    } else {
        rng.random_range(0..2000)
    };
    let fill = char::from(b'a' + rng.random_range(0..26));
    json!({"pad": fill.to_string().repeat(len), "n": rng.random::<u32>()})
}

// ---------------------------------------------------------------------------------------------------------
// The parent.

/// What the child reported before it died.
#[derive(Debug, Default)]
struct Reports {
    opened_at: Option<Revision>,
    durable: Revision,
    /// How many `durable` reports were read, in all.
    durable_reports: usize,
    blobs: BTreeSet<String>,
}

impl Reports {
    fn take(&mut self, line: &str) {
        let Some((_, report)) = line.split_once(MARK) else { return };
        let report = report.trim();
        if let Some(revision) = report.strip_prefix("open ") {
            self.opened_at = Some(Revision(revision.parse().expect("an open report")));
        } else if let Some(revision) = report.strip_prefix("durable ") {
            let revision = Revision(revision.parse().expect("a durable report"));
            assert!(revision >= self.durable, "the child reported {revision} durable after {}", self.durable);
            self.durable = revision;
            self.durable_reports += 1;
        } else if let Some(digest) = report.strip_prefix("blob ") {
            self.blobs.insert(digest.to_string());
        } else {
            panic!("unknown report from the child: {line}");
        }
    }
}

/// The running child: killed and reaped when dropped, so that a failing test leaves no process behind.
struct ChildProcess {
    child: Child,
    lines: Receiver<String>,
    stderr: Option<JoinHandle<String>>,
}

impl ChildProcess {
    fn spawn(dir: &Path) -> ChildProcess {
        let mut child = Command::new(std::env::current_exe().expect("the test executable"))
            .args(["--exact", "crash_child", "--nocapture", "--ignored"])
            .env(DIR_VAR, dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the child starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (sender, lines) = channel();
        // The reader ends at end of file, when the child is dead; the channel then disconnects.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        ChildProcess { child, lines, stderr: Some(stderr) }
    }

    /// Reads reports until `until`; panics if the child exits by itself.
    fn read_until(&mut self, reports: &mut Reports, until: Instant, stop_when_open: bool) {
        while !(stop_when_open && reports.opened_at.is_some()) {
            match self.lines.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(line) => reports.take(&line),
                Err(RecvTimeoutError::Timeout) => return,
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait_for_exit(Instant::now() + CHILD_WAIT);
                    panic!("the child exited by itself ({status}): {}", self.stderr_text());
                }
            }
        }
    }

    /// SIGKILLs the child, waits for it to die, and reads what it printed before it died.
    fn kill(&mut self, reports: &mut Reports) {
        self.child.kill().expect("SIGKILL the child");
        let deadline = Instant::now() + CHILD_WAIT;
        self.wait_for_exit(deadline);
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => reports.take(&line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("the dead child's output did not end"),
            }
        }
    }

    fn wait_for_exit(&mut self, deadline: Instant) -> std::process::ExitStatus {
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the child") {
                return status;
            }
            assert!(Instant::now() < deadline, "the child did not exit in time");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stderr_text(&mut self) -> String {
        self.stderr.take().map(|handle| handle.join().unwrap_or_default()).unwrap_or_default()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let deadline = Instant::now() + CHILD_WAIT;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Everything that must hold in a store reopened after a crash.
fn check_reopened(store: &Store, reports: &Reports, rng: &mut ThreadRng, context: &str) {
    let revision = store.revision();
    assert!(
        revision >= reports.durable,
        "{context}: the store is at revision {revision}, but the child reported {} durable",
        reports.durable
    );

    let history = store.history(&HistoryFilter::default()).expect("the history reads");
    let revisions: Vec<u64> = history.iter().map(|event| event.revision.0).collect();
    assert!(revisions.iter().copied().eq(1..=revision.0), "{context}: the history is not 1..={revision}");

    let newest = store
        .history(&HistoryFilter { limit: Some(5), newest_first: true, ..Default::default() })
        .expect("the newest events read");
    assert!(newest.iter().eq(history.iter().rev().take(5)), "{context}: the newest events read backwards");

    // Replay from scratch, comparing `state_at` at a sample of revisions on the way.
    let samples: BTreeSet<u64> =
        (0..8).map(|_| rng.random_range(0..=revision.0)).chain([0, revision.0]).collect();
    let mut replayed = Projection::new();
    for event in &history {
        if samples.contains(&replayed.revision().0) {
            let state = store.state_at(replayed.revision()).expect("state_at");
            assert_eq!(state, replayed, "{context}: state at revision {}", replayed.revision());
        }
        replayed.apply(event).expect("the history replays");
    }
    assert_eq!(&replayed, store.projection(), "{context}: the replayed history is not the projection");
    assert_eq!(store.state_at(revision).expect("state_at"), replayed, "{context}: state at {revision}");

    let listed: BTreeSet<String> = store.blobs().map(|(digest, _)| digest.to_string()).collect();
    let lost: Vec<&String> = reports.blobs.difference(&listed).collect();
    assert!(lost.is_empty(), "{context}: blobs reported durable are gone: {lost:?}");
    for (digest, size) in store.blobs() {
        let mut bytes = Vec::new();
        store.open_blob(digest).expect("a listed blob opens").read_to_end(&mut bytes).expect("blob reads");
        assert_eq!(bytes.len() as u64, size, "{context}: size of blob {digest}");
        assert_eq!(Digest::of(&bytes), *digest, "{context}: digest of blob {digest}");
    }
}

#[test]
fn sigkill_loses_nothing_reported_durable() {
    let started = Instant::now();
    let deadline = started + TEST_LIMIT;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut rng = rand::rng();
    let mut reports = Reports::default();
    let mut seen = Revision(0);
    let mut killed_after_durable = 0;
    for kill in 1..=KILLS {
        let spawned = Instant::now();
        let mut child = ChildProcess::spawn(dir.path());
        reports.opened_at = None;
        let reports_before = reports.durable_reports;
        let context = format!("kill {kill} of {KILLS}");
        if kill % 5 == 0 {
            // Counted from the start (opening takes 5-30 ms): the kill may land while the child is still
            // starting or opening (recovering) the store.
            let delay = Duration::from_millis(rng.random_range(1..40));
            child.read_until(&mut reports, spawned + delay, false);
        } else {
            let delay = Duration::from_millis(rng.random_range(20..300));
            child.read_until(&mut reports, (Instant::now() + CHILD_WAIT).min(deadline), true);
            assert!(reports.opened_at.is_some(), "{context}: the child did not open the store in time");
            child.read_until(&mut reports, Instant::now() + delay, false);
        }
        child.kill(&mut reports);
        if let Some(opened_at) = reports.opened_at {
            assert_eq!(opened_at, seen, "{context}: the child opened the store at another revision");
        }
        if reports.durable_reports > reports_before {
            killed_after_durable += 1;
        }
        drop(child);

        let store = Store::open_with(dir.path(), options())
            .unwrap_or_else(|e| panic!("{context}: the store does not open after SIGKILL: {e}"));
        check_reopened(&store, &reports, &mut rng, &context);
        seen = store.revision();
        drop(store);
        assert!(Instant::now() < deadline, "the crash test takes longer than {TEST_LIMIT:?}");
    }
    assert!(seen.0 > 0 && killed_after_durable > KILLS / 2, "the children made too little progress: {seen}");
    eprintln!(
        "crash test: {KILLS} kills, {} revisions, {} blobs, {:.1} s",
        seen,
        reports.blobs.len(),
        started.elapsed().as_secs_f64()
    );
}

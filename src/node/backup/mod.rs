//! Scheduled backups: every interval, the leader writes a verified backup file and keeps the newest few.
//!
//! Every data node given a `[backup]` table runs [`run`], but only the node that leads the cluster *at the
//! moment of writing* writes: one file per interval for the cluster, whichever node is up. One attempt:
//!
//! 1. Not the leader (openraft's current leader is another node, or none): nothing to do.
//! 2. Take a detached snapshot of the store under the read lock ([`tandem_storage::Store::snapshot`]) and let
//!    the lock go; the rest runs on a blocking thread while the store keeps applying.
//! 3. List `dir`. If the newest backup of *this* cluster there (by the name: see [`name`]) already
//!    holds the snapshot's revision, nothing changed: skip.
//! 4. Check leadership again, write the file with [`tandem_storage::backup::write_backup`] (temporary name,
//!    fsync, rename, directory fsync), read it back with `verify_backup`, delete it if that fails.
//! 5. Delete this cluster's oldest backup files beyond `retention`, and temporary files of attempts that
//!    died half-way. Files of other clusters and every other name are never touched.
//!
//! The outcome of the last attempt, the newest backup and the last error are kept in a [`BackupState`] that
//! `GET /v1/status` shows under `"backup"`, and in the `tandem_backup_*` metrics. "The newest backup" is the
//! newest file of this cluster in `dir` as this node last saw it: written by this node, or found there when
//! the node started or when an attempt found nothing changed. So a restarted node, or one that took over from
//! the node that wrote the files, reports the backup that exists, not zero. A failure (the directory is
//! missing — an unmounted disk is never papered over by creating it — or unwritable, the disk is full, the
//! file does not verify) is logged, counted and retried with a backoff that starts at
//! [`RETRY_FIRST`] and doubles up to the interval (at most [`RETRY_MAX`]); it never stops the node.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;
use tandem_cluster::node::{ClusterNode, StoreLockPoisoned};
use tandem_storage::backup::{verify_backup, write_backup};
use tandem_storage::snapshot::SnapshotSource;
use tokio_util::sync::CancellationToken;

pub mod name;
use crate::config::BackupSchedule;
use crate::node::metrics::Metrics;

/// The first retry after a failure comes this soon (or at the interval, if that is sooner).
pub const RETRY_FIRST: Duration = Duration::from_secs(5);
/// Retries never wait longer than this (nor longer than the interval).
pub const RETRY_MAX: Duration = Duration::from_secs(300);
/// Temporary files of this cluster older than this are left over from a crash and are deleted.
const STALE_PARTIAL: Duration = Duration::from_secs(3600);

/// What the last attempt did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// A backup file was written and verified.
    Written,
    /// The newest backup in the directory already holds the store's revision.
    Unchanged,
    /// Another node leads (or none does): it writes the backups.
    NotLeader,
    Failed,
}

/// The scheduler's report, shown by `GET /v1/status` under `"backup"`. Times are Unix seconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BackupReport {
    /// Whether this node has a `[backup]` schedule.
    pub scheduled: bool,
    pub dir: Option<PathBuf>,
    pub interval_seconds: Option<u64>,
    pub retention: Option<usize>,
    pub last_attempt_unix: Option<u64>,
    pub last_outcome: Option<AttemptOutcome>,
    /// When the newest backup of this cluster in `dir` was written (see the module documentation).
    pub last_success_unix: Option<u64>,
    pub last_file: Option<PathBuf>,
    pub last_revision: Option<u64>,
    pub last_size: Option<u64>,
    /// The error of the last attempt, if it failed (cleared by the next attempt that does not fail).
    pub last_error: Option<String>,
    pub last_error_unix: Option<u64>,
    /// Failed attempts since the node started.
    pub failures_total: u64,
}

/// The scheduler's report, shared with the API.
#[derive(Clone, Debug, Default)]
pub struct BackupState(Arc<Mutex<BackupReport>>);

impl BackupState {
    /// A copy of the current report.
    pub fn report(&self) -> BackupReport {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// The report as JSON, for `GET /v1/status`.
    pub fn status_json(&self) -> Value {
        serde_json::to_value(self.report()).unwrap_or_default()
    }

    fn update(&self, change: impl FnOnce(&mut BackupReport)) {
        change(&mut self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
    }
}

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot read the backup directory {dir}: {source} (it must exist and be a writable directory)")]
    Directory { dir: PathBuf, source: std::io::Error },
    #[error("cannot read {file}: {source}")]
    Inspect { file: PathBuf, source: std::io::Error },
    #[error("writing {file} failed: {source}")]
    Write { file: PathBuf, source: tandem_storage::Error },
    #[error("{file} was written but does not verify, so it was deleted: {source}")]
    Verify { file: PathBuf, source: tandem_storage::Error },
    #[error("deleting the old backup {file} failed: {source}")]
    Prune { file: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Lock(#[from] StoreLockPoisoned),
    #[error("the backup task failed: {0}")]
    Task(String),
}

/// A successful attempt.
#[derive(Debug)]
enum Attempt {
    Written { file: PathBuf, revision: u64, bytes: u64, deleted: usize },
    Unchanged { newest: NewestBackup },
    NotLeader,
}

/// The newest backup file of this cluster in the directory.
#[derive(Debug, Clone)]
struct NewestBackup {
    file: PathBuf,
    revision: u64,
    bytes: u64,
    /// When it was written (its modification time), Unix seconds.
    written_unix: u64,
}

impl NewestBackup {
    fn of(name: &name::BackupName, file: PathBuf) -> Result<Self, BackupError> {
        let metadata =
            std::fs::metadata(&file).map_err(|source| BackupError::Inspect { file: file.clone(), source })?;
        let written_unix = metadata
            .modified()
            .ok()
            .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |since| since.as_secs());
        Ok(NewestBackup { revision: name.revision, bytes: metadata.len(), written_unix, file })
    }

    /// Shows it as the newest backup in the report and the metrics; `clear_error` also clears the error.
    fn record(self, state: &BackupState, metrics: &Metrics, clear_error: bool) {
        if clear_error {
            metrics.observe_backup_written(self.written_unix, self.bytes, self.revision);
        } else {
            metrics.observe_backup_found(self.written_unix, self.bytes, self.revision);
        }
        state.update(|report| {
            report.last_success_unix = Some(self.written_unix);
            report.last_file = Some(self.file);
            report.last_revision = Some(self.revision);
            report.last_size = Some(self.bytes);
        });
    }
}

/// Shows the schedule, and the newest backup of this node's cluster already in the schedule's directory (if
/// it can be read and has one), in `state` and `metrics`. Called once at start, before [`run`] and before the
/// API serves, so that a restarted node never reports "no backup" while one exists. Reads one directory: fine
/// on the starting thread.
pub fn seed(node: &ClusterNode, schedule: &BackupSchedule, state: &BackupState, metrics: &Metrics) {
    state.update(|report| {
        report.scheduled = true;
        report.dir = Some(schedule.dir.clone());
        report.interval_seconds = Some(schedule.interval.as_secs());
        report.retention = Some(schedule.retention);
    });
    let Some(cluster_id) = node.read_store().ok().map(|store| store.cluster_id().to_string()) else { return };
    let Some((name, file)) = backups_in(&schedule.dir, &cluster_id).ok().and_then(|mut found| found.pop())
    else {
        return;
    };
    if let Ok(newest) = NewestBackup::of(&name, file) {
        tracing::info!(file = %newest.file.display(), revision = newest.revision, "newest backup found");
        newest.record(state, metrics, false);
    }
}

/// Runs the schedule until `shutdown` (see the module documentation); [`seed`] the state first.
pub async fn run(
    node: Arc<ClusterNode>,
    schedule: BackupSchedule,
    state: BackupState,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    if !schedule.dir.is_dir() {
        tracing::warn!(
            dir = %schedule.dir.display(),
            "the backup directory does not exist (yet): scheduled backups will fail until it does"
        );
    }
    tracing::info!(
        dir = %schedule.dir.display(),
        interval_s = schedule.interval.as_secs(),
        retention = schedule.retention,
        "scheduled backups on"
    );
    let mut delay = schedule.interval;
    let mut failures_in_a_row: u32 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = attempt(&node, &schedule) => result,
        };
        let now = unix_now();
        delay = schedule.interval;
        match result {
            Ok(Attempt::Written { file, revision, bytes, deleted }) => {
                failures_in_a_row = 0;
                tracing::info!(
                    file = %file.display(),
                    revision,
                    bytes,
                    deleted,
                    "scheduled backup written and verified"
                );
                metrics.observe_backup_written(now, bytes, revision);
                state.update(|report| {
                    report.last_attempt_unix = Some(now);
                    report.last_outcome = Some(AttemptOutcome::Written);
                    report.last_success_unix = Some(now);
                    report.last_file = Some(file);
                    report.last_revision = Some(revision);
                    report.last_size = Some(bytes);
                    report.last_error = None;
                });
            }
            Ok(Attempt::Unchanged { newest }) => {
                failures_in_a_row = 0;
                tracing::debug!(
                    revision = newest.revision,
                    "scheduled backup skipped: nothing changed since the newest one"
                );
                newest.record(&state, &metrics, true);
                state.update(|report| {
                    report.last_attempt_unix = Some(now);
                    report.last_outcome = Some(AttemptOutcome::Unchanged);
                    report.last_error = None;
                });
            }
            Ok(Attempt::NotLeader) => {
                failures_in_a_row = 0;
                state.update(|report| {
                    report.last_attempt_unix = Some(now);
                    report.last_outcome = Some(AttemptOutcome::NotLeader);
                    report.last_error = None;
                });
            }
            Err(error) => {
                failures_in_a_row = failures_in_a_row.saturating_add(1);
                delay = retry_delay(schedule.interval, failures_in_a_row);
                tracing::error!(%error, retry_in_s = delay.as_secs(), "scheduled backup failed");
                metrics.observe_backup_failure();
                state.update(|report| {
                    report.last_attempt_unix = Some(now);
                    report.last_outcome = Some(AttemptOutcome::Failed);
                    report.last_error = Some(error.to_string());
                    report.last_error_unix = Some(now);
                    report.failures_total += 1;
                });
            }
        }
    }
}

/// How long to wait after the `failures`-th failure in a row.
fn retry_delay(interval: Duration, failures: u32) -> Duration {
    let backoff = RETRY_FIRST.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    backoff.min(RETRY_MAX).min(interval)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn is_leader(node: &ClusterNode) -> bool {
    node.is_leader()
}

/// One attempt (see the module documentation).
async fn attempt(node: &Arc<ClusterNode>, schedule: &BackupSchedule) -> Result<Attempt, BackupError> {
    if !is_leader(node) {
        return Ok(Attempt::NotLeader);
    }
    let (source, cluster_id) = {
        let store = node.read_store()?;
        (store.snapshot(), store.cluster_id().to_string())
    };
    let node = node.clone();
    let dir = schedule.dir.clone();
    let retention = schedule.retention;
    tokio::task::spawn_blocking(move || {
        write_into(&source, &cluster_id, &dir, retention, || is_leader(&node))
    })
    .await
    .map_err(|e| BackupError::Task(e.to_string()))?
}

/// Writes a backup of `source` into `dir` unless the newest one there holds its revision; then prunes.
/// `still_leader` is asked right before writing.
fn write_into(
    source: &SnapshotSource,
    cluster_id: &str,
    dir: &Path,
    retention: usize,
    still_leader: impl Fn() -> bool,
) -> Result<Attempt, BackupError> {
    let revision = source.revision().0;
    let mut existing = backups_in(dir, cluster_id)?;
    if let Some((newest, file)) = existing.pop().filter(|(newest, _)| newest.revision == revision) {
        return Ok(Attempt::Unchanged { newest: NewestBackup::of(&newest, file)? });
    }
    if !still_leader() {
        return Ok(Attempt::NotLeader);
    }
    let file = dir.join(name::file_name(cluster_id, revision, SystemTime::now()));
    let written =
        write_backup(source, &file).map_err(|source| BackupError::Write { file: file.clone(), source })?;
    if let Err(source) = verify_backup(&file) {
        let _ = std::fs::remove_file(&file);
        return Err(BackupError::Verify { file, source });
    }
    let deleted = prune(dir, cluster_id, retention)?;
    Ok(Attempt::Written { file, revision, bytes: written.bytes, deleted })
}

/// This cluster's backup files in `dir`, oldest first.
fn backups_in(dir: &Path, cluster_id: &str) -> Result<Vec<(name::BackupName, PathBuf)>, BackupError> {
    let directory_error = |source| BackupError::Directory { dir: dir.to_path_buf(), source };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(directory_error)? {
        let entry = entry.map_err(directory_error)?;
        let file_name = entry.file_name();
        let Some(text) = file_name.to_str() else { continue };
        if let Some(parsed) = name::parse(text).filter(|parsed| parsed.cluster_id == cluster_id) {
            found.push((parsed, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Deletes this cluster's oldest backups beyond `retention` and its stale temporary files; returns how many
/// backups it deleted.
fn prune(dir: &Path, cluster_id: &str, retention: usize) -> Result<usize, BackupError> {
    let existing = backups_in(dir, cluster_id)?;
    let excess = existing.len().saturating_sub(retention);
    for (_, file) in &existing[..excess] {
        std::fs::remove_file(file).map_err(|source| BackupError::Prune { file: file.clone(), source })?;
        tracing::info!(file = %file.display(), "deleted an old backup (retention)");
    }
    let directory_error = |source| BackupError::Directory { dir: dir.to_path_buf(), source };
    for entry in std::fs::read_dir(dir).map_err(directory_error)?.flatten() {
        let file_name = entry.file_name();
        let Some(partial) = file_name.to_str().and_then(|n| n.strip_suffix(".partial")) else { continue };
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|modified| modified.elapsed().is_ok_and(|age| age > STALE_PARTIAL));
        if stale && name::parse(partial).is_some_and(|parsed| parsed.cluster_id == cluster_id) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(excess)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_up_to_the_interval_and_a_bound() {
        let hour = Duration::from_secs(3600);
        assert_eq!(retry_delay(hour, 1), RETRY_FIRST);
        assert_eq!(retry_delay(hour, 2), RETRY_FIRST * 2);
        assert_eq!(retry_delay(hour, 40), RETRY_MAX);
        assert_eq!(retry_delay(Duration::from_secs(1), 1), Duration::from_secs(1));
    }

    #[test]
    fn an_unchanged_store_is_skipped_and_only_this_clusters_oldest_files_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = tandem_storage::Store::open(&dir.path().join("db")).unwrap();
        let backups = dir.path().join("backups");
        std::fs::create_dir(&backups).unwrap();
        let foreign = backups.join("tandem-othercluster-r1-20200101T000000Z.backup");
        std::fs::write(&foreign, b"not ours").unwrap();
        std::fs::write(backups.join("notes.txt"), b"keep me").unwrap();
        let cluster = store.cluster_id().to_string();
        // Older files of ours (by their names), as if written earlier.
        for (revision, stamp) in [(0, "20200101T000000Z"), (0, "20200102T000000Z")] {
            std::fs::write(backups.join(format!("tandem-{cluster}-r{revision}-{stamp}.backup")), b"x")
                .unwrap();
        }
        let outcome = write_into(&store.snapshot(), &cluster, &backups, 2, || true).unwrap();
        let Attempt::Unchanged { newest } = outcome else { panic!("{outcome:?}") };
        assert_eq!((newest.revision, newest.bytes), (0, 1));
        assert!(newest.file.ends_with(format!("tandem-{cluster}-r0-20200102T000000Z.backup")));
        assert!(newest.written_unix > 0);

        let change = tandem_storage::ChangeSet::new(tandem_storage::ChangeMeta::default()).put(
            "notes",
            "n",
            serde_json::json!(1),
        );
        store.apply_change_set(change).unwrap();
        assert!(matches!(
            write_into(&store.snapshot(), &cluster, &backups, 2, || false).unwrap(),
            Attempt::NotLeader
        ));
        let outcome = write_into(&store.snapshot(), &cluster, &backups, 2, || true).unwrap();
        let Attempt::Written { file, revision: 1, deleted: 1, .. } = outcome else { panic!("{outcome:?}") };
        verify_backup(&file).unwrap();
        let ours = backups_in(&backups, &cluster).unwrap();
        assert_eq!(ours.len(), 2);
        assert_eq!(ours[0].0.stamp, "20200102T000000Z");
        assert!(foreign.exists() && backups.join("notes.txt").exists());
        let outcome = write_into(&store.snapshot(), &cluster, &backups, 2, || true).unwrap();
        let Attempt::Unchanged { newest } = outcome else { panic!("{outcome:?}") };
        assert_eq!(newest.file, file);
        assert_eq!(newest.bytes, std::fs::metadata(&file).unwrap().len());

        let not_a_directory = dir.path().join("file");
        std::fs::write(&not_a_directory, b"").unwrap();
        let error = write_into(&store.snapshot(), &cluster, &not_a_directory, 2, || true).unwrap_err();
        assert!(matches!(error, BackupError::Directory { .. }), "{error}");
    }
}

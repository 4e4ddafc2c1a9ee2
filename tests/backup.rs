//! End-to-end tests of backups with real nodes: take a backup with `tandem backup create`, check it with
//! `tandem backup verify`, restore it offline into a new cluster and start a node on it, restore it live
//! into a running cluster, refuse damaged files; and scheduled backups, written only by the leader, with
//! retention, skipping when nothing changed, and surviving a broken backup directory.

mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use harness::{Node, tandem_bin};
use serde_json::Value;

/// Runs an offline `tandem` command (no server needed).
fn offline(args: &[&str]) -> Output {
    Command::new(tandem_bin()).args(args).output().expect("run tandem")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        stderr(output)
    );
    serde_json::from_slice(&output.stdout).expect("JSON output")
}

/// curl: returns (HTTP status, body).
fn curl(url: &str) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "--max-time", "20", url])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

fn export(node: &Node) -> Value {
    let (status, body) = curl(&format!("{}/v1/export", node.url()));
    assert_eq!(status, 200, "GET /v1/export: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The names of the backup files in `dir`, sorted.
fn backup_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("tandem-") && name.ends_with(".backup"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Waits (bounded) until `check()` holds.
fn wait_until(what: &str, timeout: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not happen within {timeout:?}");
}

fn put(node: &Node, collection: &str, id: &str, document: &str) -> u64 {
    let answer = node.json(&["put", collection, id, document, "--reason", &format!("set {id}")]);
    answer["revision"].as_u64().expect("a revision")
}

fn firmware_file(root: &Path, name: &str, fill: u8) -> PathBuf {
    let path = root.join(name);
    std::fs::write(&path, vec![fill; 100_000]).unwrap();
    path
}

/// Takes a backup of `node` into `out` and returns the `--json` answer.
fn create_backup(node: &Node, out: &Path) -> Value {
    json_of(&node.cli(&["backup", "create", "--out", out.to_str().unwrap(), "--json"]))
}

#[test]
fn a_backup_of_a_pair_restores_offline_into_a_new_single_node_with_the_same_history() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, _w) = harness::pair_with_witness(root.path());
    put(&a, "terminal_servers", "ts1", r#"{"address": "10.0.0.5", "port": 3389}"#);
    put(&b, "notes", "n1", r#"{"text": "first"}"#);
    let firmware = firmware_file(root.path(), "fw.bin", 7);
    a.ok(&["firmware", "add", "fw1", firmware.to_str().unwrap(), "--version", "1.0"]);
    put(&a, "notes", "n1", r#"{"text": "second"}"#);
    a.ok(&["delete", "notes", "n1", "--reason", "not needed"]);
    let revision = put(&b, "notes", "n2", r#"{"text": "kept"}"#);
    let history = a.history();
    assert_eq!(history.last().unwrap()["revision"].as_u64(), Some(revision));
    // Both data nodes belong to one cluster, with one id (b joined; it took the id of a's founding).
    b.wait_status("b applied everything", Duration::from_secs(10), |s| {
        s["revision"].as_u64() == Some(revision)
    });
    assert_eq!(export(&a)["cluster_id"], export(&b)["cluster_id"]);
    assert_eq!(a.status()["cluster_id"], export(&a)["cluster_id"]);

    // Without --out, the backup takes the name the server suggests, in the current directory.
    let downloads = root.path().join("downloads");
    std::fs::create_dir(&downloads).unwrap();
    let output = Command::new(tandem_bin())
        .args(["--server", &b.url(), "backup", "create", "--json"])
        .current_dir(&downloads)
        .output()
        .unwrap();
    let created = json_of(&output);
    assert_eq!(created["revision"].as_u64(), Some(revision));
    let names = backup_files(&downloads);
    assert_eq!(names.len(), 1, "{names:?}");
    let source_cluster = created["cluster_id"].as_str().unwrap().to_string();
    assert!(names[0].starts_with(&format!("tandem-{source_cluster}-r{revision}-")), "{names:?}");
    assert!(!downloads.join(format!("{}.partial", names[0])).exists());
    let file = downloads.join(&names[0]);

    let verified = json_of(&offline(&["backup", "verify", file.to_str().unwrap(), "--json"]));
    assert_eq!(verified["revision"].as_u64(), Some(revision));
    assert_eq!(verified["events"].as_u64(), Some(revision));
    assert_eq!(verified["blobs"].as_u64(), Some(1));
    assert_eq!(verified["documents"].as_u64(), Some(3), "ts1, fw1 and n2: {verified}");
    let human = offline(&["backup", "verify", file.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("valid backup"));

    // An existing file is never overwritten.
    let again = b.cli(&["backup", "create", "--out", file.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(stderr(&again).contains("already exists"));

    let restored_dir = root.path().join("restored");
    let restored = json_of(&offline(&[
        "backup",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        restored_dir.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(restored["source_cluster_id"].as_str(), Some(source_cluster.as_str()));
    // A directory that holds a node is refused.
    let twice =
        offline(&["backup", "restore", file.to_str().unwrap(), "--data-dir", restored_dir.to_str().unwrap()]);
    assert_eq!(twice.status.code(), Some(1));
    assert!(stderr(&twice).contains("not empty"), "{}", stderr(&twice));

    let mut node = Node::new(root.path(), "restored", "data");
    node.start(false);
    let status = node
        .wait_status("the restored node leads", Duration::from_secs(20), |s| s["leader_name"] == "restored");
    assert_eq!(status["mode"], "single");
    assert_eq!(status["revision"].as_u64(), Some(revision));
    // Identical history: revisions, actors, reasons, timestamps, changes.
    assert_eq!(node.history(), history);
    assert_eq!(node.json(&["get", "terminal_servers", "ts1"])["document"]["document"]["address"], "10.0.0.5");
    // The blob came along: the firmware's bytes are served by the new node.
    let digest =
        node.json(&["get", "firmware", "fw1"])["document"]["document"]["blob"].as_str().unwrap().to_string();
    assert_eq!(
        node.json(&["get", "firmware", "fw1"])["document"]["document"]["size"].as_u64(),
        Some(100_000)
    );
    let (status, body) = curl(&format!("{}/v1/blobs/{digest}", node.url()));
    assert_eq!(status, 200, "{body}");

    // The new cluster takes writes, after the backup's revision.
    assert_eq!(put(&node, "notes", "after-restore", "{}"), revision + 1);
    let own = create_backup(&node, &root.path().join("own.backup"));
    // A new cluster, with its own id (fixed when the node founded it).
    assert_ne!(own["cluster_id"].as_str(), Some(source_cluster.as_str()));
    assert_eq!(own["cluster_id"], export(&node)["cluster_id"]);
    assert_eq!(own["revision"].as_u64(), Some(revision + 1));
    // The source cluster is untouched.
    assert_eq!(a.status()["revision"].as_u64(), Some(revision));
}

#[test]
fn damaged_backups_are_refused_by_verify_and_restore_and_leave_nothing_behind() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "a", "data");
    node.start(false);
    for i in 0..5 {
        put(&node, "notes", &format!("n{i}"), &format!(r#"{{"i": {i}}}"#));
    }
    let good = root.path().join("good.backup");
    create_backup(&node, &good);
    let bytes = std::fs::read(&good).unwrap();

    let truncated = root.path().join("truncated.backup");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 3] ^= 0x20;
    let altered = root.path().join("altered.backup");
    std::fs::write(&altered, &flipped).unwrap();
    let missing = root.path().join("missing.backup");

    for (file, expected) in
        [(&truncated, "truncated"), (&altered, "checksum mismatch"), (&missing, "No such file")]
    {
        let verify = offline(&["backup", "verify", file.to_str().unwrap()]);
        assert_eq!(verify.status.code(), Some(1), "{}", file.display());
        assert!(stderr(&verify).contains(expected), "{}: {}", file.display(), stderr(&verify));

        let target = root.path().join("target");
        let restore =
            offline(&["backup", "restore", file.to_str().unwrap(), "--data-dir", target.to_str().unwrap()]);
        assert_eq!(restore.status.code(), Some(1), "{}", file.display());
        assert!(stderr(&restore).contains(expected), "{}: {}", file.display(), stderr(&restore));
        assert!(!target.exists(), "a refused restore left {} behind", target.display());
    }
    // The good file still verifies: the failures were about the damage.
    json_of(&offline(&["backup", "verify", good.to_str().unwrap(), "--json"]));
    // Usage errors: no destination, or --reason without --live.
    assert_eq!(offline(&["backup", "restore", good.to_str().unwrap()]).status.code(), Some(2));
    let target = root.path().join("x");
    let reason_offline = offline(&[
        "backup",
        "restore",
        good.to_str().unwrap(),
        "--data-dir",
        target.to_str().unwrap(),
        "--reason",
        "why",
    ]);
    assert_eq!(reason_offline.status.code(), Some(2), "{}", stderr(&reason_offline));
    assert!(!target.exists());
}

#[test]
fn a_live_restore_is_refused_without_a_terminal_or_yes_and_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "a", "data");
    node.start(false);
    put(&node, "notes", "n1", "{}");
    let file = root.path().join("b.backup");
    create_backup(&node, &file);
    let revision = put(&node, "notes", "n2", "{}");
    // The CLI runs with stdin from a pipe (not a terminal).
    let refused = node.cli(&["backup", "restore", file.to_str().unwrap(), "--live", "--reason", "test"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("--yes"), "{}", stderr(&refused));
    let no_reason = node.cli(&["backup", "restore", file.to_str().unwrap(), "--live", "--yes"]);
    assert_eq!(no_reason.status.code(), Some(2), "{}", stderr(&no_reason));
    assert_eq!(node.status()["revision"].as_u64(), Some(revision));
}

/// Needs `POST /v1/import` (and `GET /v1/export`).
#[test]
fn a_live_restore_brings_the_backups_configuration_back_as_one_new_event() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, _w) = harness::pair_with_witness(root.path());
    put(&a, "notes", "n1", r#"{"text": "kept"}"#);
    put(&a, "notes", "n2", r#"{"text": "original"}"#);
    let firmware = firmware_file(root.path(), "fw.bin", 9);
    a.ok(&["firmware", "add", "fw1", firmware.to_str().unwrap(), "--version", "1.0"]);
    let file = root.path().join("before.backup");
    let backup = create_backup(&a, &file);
    let at_backup = export(&a);
    assert_eq!(at_backup["revision"], backup["revision"]);

    // Damage: a change, a deletion, an addition.
    put(&b, "notes", "n2", r#"{"text": "overwritten by mistake"}"#);
    b.ok(&["delete", "notes", "n1"]);
    let damaged = put(&a, "notes", "n3", r#"{"text": "added later"}"#);
    let events_before = a.history().len();

    // A dry run shows the three changes and writes nothing (no terminal and no --yes needed).
    let file_arg = file.to_str().unwrap();
    let preview = json_of(&a.cli(&[
        "backup",
        "restore",
        file_arg,
        "--live",
        "--reason",
        "look",
        "--dry-run",
        "--json",
    ]));
    assert_eq!(preview["dry_run"], true, "{preview}");
    let mut kinds: Vec<String> = preview["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {}/{}",
                c["kind"].as_str().unwrap(),
                c["collection"].as_str().unwrap(),
                c["id"].as_str().unwrap()
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["changed notes/n2", "created notes/n1", "deleted notes/n3"]);
    assert_eq!(a.history().len(), events_before);

    let output = a.cli(&[
        "backup",
        "restore",
        file.to_str().unwrap(),
        "--live",
        "--reason",
        "undo the mistake",
        "--yes",
        "--json",
    ]);
    let answer = json_of(&output);
    assert_eq!(answer["outcome"], "accepted", "{answer}");
    let now = export(&a);
    assert_eq!(now["collections"], at_backup["collections"]);
    assert_eq!(now["blobs"], at_backup["blobs"]);
    assert_eq!(now["revision"].as_u64(), Some(damaged + 1));
    let history = a.history();
    assert_eq!(history.len(), events_before + 1, "one new event, history kept");
    assert_eq!(
        history.last().unwrap()["reason"].as_str().map(|r| r.contains("undo the mistake")),
        Some(true)
    );

    // Restoring again changes nothing.
    let again = json_of(&a.cli(&[
        "backup",
        "restore",
        file.to_str().unwrap(),
        "--live",
        "--reason",
        "again",
        "--yes",
        "--json",
    ]));
    assert_eq!(again["outcome"], "unchanged", "{again}");
    assert_eq!(a.history().len(), events_before + 1);

    // Into another, empty installation: the blobs it lacks are uploaded first.
    let mut other = Node::new(root.path(), "other", "data");
    other.start(false);
    let answer = json_of(&other.cli(&[
        "backup",
        "restore",
        file.to_str().unwrap(),
        "--live",
        "--reason",
        "seed",
        "--yes",
        "--json",
    ]));
    assert_eq!(answer["outcome"], "accepted", "{answer}");
    let seeded = export(&other);
    assert_eq!(seeded["collections"], at_backup["collections"]);
    assert_eq!(seeded["blobs"], at_backup["blobs"]);
    assert_eq!(other.history().len(), 1);
}

/// A pair with a witness where both data nodes have a `[backup]` schedule (1 s, keep 2), each its own dir.
#[test]
fn scheduled_backups_come_from_the_leader_only_keep_the_newest_skip_when_unchanged_and_survive_a_broken_dir()
{
    let root = tempfile::tempdir().unwrap();
    let dir_of = |name: &str| root.path().join(format!("backups-{name}"));
    let config =
        |name: &str| format!("[backup]\ndir = {:?}\ninterval = \"1s\"\nretention = 2\n", dir_of(name));
    std::fs::create_dir(dir_of("a")).unwrap();
    std::fs::create_dir(dir_of("b")).unwrap();
    let mut a = Node::new(root.path(), "a", "data").with_config(&config("a"));
    let mut b = Node::new(root.path(), "b", "data").with_config(&config("b"));
    let mut w = Node::new(root.path(), "w", "witness");
    a.start(false);
    b.start(true);
    w.start(true);
    a.add(&b);
    a.add(&w);

    let leader_name = a.status()["leader_name"].as_str().expect("a leader").to_string();
    let (leader, follower) = if leader_name == "a" { (&a, &b) } else { (&b, &a) };
    let (leader_dir, follower_dir) = (dir_of(&leader.name), dir_of(&follower.name));
    // Files that are not this cluster's backups are never touched.
    let stranger = "tandem-zzzzothercluster-r1-20200101T000000Z.backup";
    std::fs::write(leader_dir.join(stranger), b"someone else's").unwrap();
    std::fs::write(leader_dir.join("notes.txt"), b"keep me").unwrap();

    let revision = put(leader, "notes", "k0", "{}");
    let has_revision = |revision: u64| {
        let dir = leader_dir.clone();
        move || backup_files(&dir).iter().any(|n| n.contains(&format!("-r{revision}-")) && n != stranger)
    };
    wait_until("a backup of the first change", Duration::from_secs(20), has_revision(revision));
    let first = backup_files(&leader_dir)
        .into_iter()
        .find(|n| n.contains(&format!("-r{revision}-")) && n != stranger)
        .unwrap();
    let cluster_prefix = first[..first.find("-r").unwrap()].to_string();
    let ours = || -> Vec<String> {
        backup_files(&leader_dir).into_iter().filter(|n| n.starts_with(&cluster_prefix)).collect()
    };
    let status = leader.status();
    assert_eq!(status["backup"]["scheduled"], true, "{status}");
    assert_eq!(status["backup"]["last_revision"].as_u64(), Some(revision), "{status}");
    let file = leader_dir.join(&first);
    json_of(&offline(&["backup", "verify", file.to_str().unwrap(), "--json"]));

    // Nothing changes: the next attempts skip.
    let before = ours();
    leader.wait_status("an unchanged attempt", Duration::from_secs(10), |s| {
        s["backup"]["last_outcome"] == "unchanged"
    });
    leader.wait_status("another unchanged attempt", Duration::from_secs(10), |s| {
        s["backup"]["last_outcome"] == "unchanged"
            && s["backup"]["last_attempt_unix"].as_u64() > status["backup"]["last_attempt_unix"].as_u64()
    });
    assert_eq!(ours(), before, "no new backup while nothing changed");

    // More changes: only the newest two of this cluster's backups are kept.
    let mut revisions = vec![revision];
    for i in 1..=3 {
        let revision = put(leader, "notes", &format!("k{i}"), "{}");
        wait_until(
            &format!("a backup of revision {revision}"),
            Duration::from_secs(20),
            has_revision(revision),
        );
        revisions.push(revision);
    }
    wait_until("retention to delete the oldest", Duration::from_secs(10), || ours().len() == 2);
    let kept: Vec<String> = ours();
    assert!(kept[0].contains(&format!("-r{}-", revisions[2])), "{kept:?}");
    assert!(kept[1].contains(&format!("-r{}-", revisions[3])), "{kept:?}");
    assert!(leader_dir.join(stranger).exists() && leader_dir.join("notes.txt").exists());

    // The follower wrote nothing (while the leader stayed the same).
    assert_eq!(follower.status()["leader_name"].as_str(), Some(leader.name.as_str()));
    assert!(backup_files(&follower_dir).is_empty(), "{:?}", backup_files(&follower_dir));
    assert_eq!(follower.status()["backup"]["last_outcome"], "not_leader");

    // The directory breaks (a regular file in its place: this stops root too): reported, the node lives on.
    std::fs::remove_dir_all(&leader_dir).unwrap();
    std::fs::write(&leader_dir, b"not a directory").unwrap();
    let revision = put(leader, "notes", "during-failure", "{}");
    let failed = leader.wait_status("the failure in the status", Duration::from_secs(20), |s| {
        s["backup"]["last_error"].is_string() && s["backup"]["failures_total"].as_u64() >= Some(1)
    });
    assert!(
        failed["backup"]["last_error"].as_str().unwrap().contains(leader_dir.to_str().unwrap()),
        "{failed}"
    );
    assert_eq!(failed["backup"]["last_outcome"], "failed");
    let (_, metrics) = curl(&format!("{}/metrics", leader.url()));
    assert!(metrics.contains("tandem_backup_last_error 1"), "{metrics}");
    assert!(!metrics.contains("tandem_backup_failures_total 0"), "{metrics}");
    assert_eq!(put(leader, "notes", "still-writable", "{}"), revision + 1);

    // Fixed: backups resume.
    std::fs::remove_file(&leader_dir).unwrap();
    std::fs::create_dir(&leader_dir).unwrap();
    wait_until("backups to resume", Duration::from_secs(20), has_revision(revision + 1));
    let resumed = leader
        .wait_status("the error to clear", Duration::from_secs(10), |s| s["backup"]["last_error"].is_null());
    assert_eq!(resumed["backup"]["last_revision"].as_u64(), Some(revision + 1));
    let (_, metrics) = curl(&format!("{}/metrics", leader.url()));
    assert!(metrics.contains("tandem_backup_last_error 0"), "{metrics}");
    assert!(metrics.contains(&format!("tandem_backup_last_revision {}", revision + 1)), "{metrics}");
    // Every node lived through it.
    for node in [&a, &b, &w] {
        node.status();
    }

    // Restarted, the node reports the newest backup in its directory (found at start, or by an attempt that
    // found nothing changed), not zero: an alert on the backup's age does not fire because of a restart.
    let restarted = if leader_name == "a" { &mut a } else { &mut b };
    restarted.stop();
    restarted.start(false);
    // Found at start, before the API answers: there from the first status on.
    let status = restarted.status();
    assert_eq!(status["backup"]["last_revision"].as_u64(), Some(revision + 1), "{status}");
    assert!(status["backup"]["last_success_unix"].as_u64() > Some(0), "{status}");
    let (_, metrics) = curl(&format!("{}/metrics", restarted.url()));
    assert!(metrics.contains(&format!("tandem_backup_last_revision {}", revision + 1)), "{metrics}");
    assert!(!metrics.contains("tandem_backup_last_success_timestamp_seconds 0\n"), "{metrics}");
}

/// A node config with one operator and one reader token named `{prefix}-ops` and `{prefix}-reader`.
fn tokens_config(prefix: &str, operator: &str, reader: &str) -> String {
    format!(
        "[[tokens]]\nname = \"{prefix}-ops\"\nrole = \"operator\"\nsecret = \"{operator}\"\n\n\
         [[tokens]]\nname = \"{prefix}-reader\"\nrole = \"reader\"\nsecret = \"{reader}\"\n"
    )
}

#[test]
fn backups_need_an_operator_token_and_a_live_restore_is_recorded_under_its_name() {
    const OPERATOR: &str = "backup-operator-secret-0001";
    const READER: &str = "backup-reader-secret-000002";
    const OTHER_OPERATOR: &str = "other-operator-secret-00003";
    const OTHER_READER: &str = "other-reader-secret-0000004";
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "a", "data")
        .with_config(&tokens_config("a", OPERATOR, READER))
        .with_token(OPERATOR);
    node.start(false);
    put(&node, "notes", "n1", r#"{"text": "one"}"#);
    let firmware = firmware_file(root.path(), "fw.bin", 5);
    node.ok(&["firmware", "add", "fw1", firmware.to_str().unwrap(), "--version", "1.0"]);
    let revision = node.status()["revision"].as_u64().unwrap();

    // A reader may not take a backup: 403 naming the role, and no file (not even a partial one).
    let file = root.path().join("tokens.backup");
    let file_arg = file.to_str().unwrap();
    let refused =
        harness::cli_with_token(&node.url(), READER, &["backup", "create", "--out", file_arg, "--json"]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("403") && stderr(&refused).contains("reader"), "{}", stderr(&refused));
    assert!(!file.exists() && !root.path().join("tokens.backup.partial").exists());
    // Without a token: 401.
    let anonymous = harness::cli(&node.url(), &["backup", "create", "--out", file_arg]);
    assert_eq!(anonymous.status.code(), Some(1), "{}", stderr(&anonymous));
    assert!(stderr(&anonymous).contains("401"), "{}", stderr(&anonymous));
    assert!(!file.exists());

    // The operator may.
    let created = create_backup(&node, &file);
    assert_eq!(created["revision"].as_u64(), Some(revision));
    json_of(&offline(&["backup", "verify", file_arg, "--json"]));

    // A live restore into another installation with its own tokens: a reader is refused before anything is
    // uploaded or written; its operator's restore (blob upload included) is recorded under its name.
    let mut other = Node::new(root.path(), "other", "data")
        .with_config(&tokens_config("other", OTHER_OPERATOR, OTHER_READER))
        .with_token(OTHER_OPERATOR);
    other.start(false);
    put(&other, "notes", "stray", "{}");
    let other_revision = other.status()["revision"].as_u64().unwrap();
    let digest =
        node.json(&["get", "firmware", "fw1"])["document"]["document"]["blob"].as_str().unwrap().to_string();
    let restore = ["backup", "restore", file_arg, "--live", "--reason", "seed", "--yes", "--json"];
    let refused = harness::cli_with_token(&other.url(), OTHER_READER, &restore);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("403") && stderr(&refused).contains("reader"), "{}", stderr(&refused));
    assert_eq!(other.status()["revision"].as_u64(), Some(other_revision));
    let (status, _) = curl_with_token(&format!("{}/v1/blobs/{digest}", other.url()), OTHER_OPERATOR);
    assert_eq!(status, 404, "the refused restore uploaded a blob");
    // The source's operator token is not valid here.
    let foreign = harness::cli_with_token(&other.url(), OPERATOR, &restore);
    assert_eq!(foreign.status.code(), Some(1), "{}", stderr(&foreign));
    assert_eq!(other.status()["revision"].as_u64(), Some(other_revision));

    let answer = json_of(&other.cli(&restore));
    assert_eq!(answer["outcome"], "accepted", "{answer}");
    assert_eq!(other.status()["revision"].as_u64(), Some(other_revision + 1));
    let (status, _) = curl_with_token(&format!("{}/v1/blobs/{digest}", other.url()), OTHER_OPERATOR);
    assert_eq!(status, 200, "the blob was not uploaded");
    let history = other.history();
    let event = history.last().unwrap();
    assert_eq!(event["actor"], "other-ops", "{event}");
    assert!(event["reason"].as_str().is_some_and(|r| r.contains("seed")), "{event}");
    let restored: Value = serde_json::from_str(&other.ok(&["export"])).unwrap();
    let original: Value = serde_json::from_str(&node.ok(&["export"])).unwrap();
    assert_eq!(restored["collections"], original["collections"]);
}

/// curl with a bearer token: returns (HTTP status, body).
fn curl_with_token(url: &str, token: &str) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "--max-time", "20", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(url)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

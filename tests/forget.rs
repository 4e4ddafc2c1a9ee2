//! Forgetting history before a revision (issue 11 item 6, last part), end to end: on a pair with a witness,
//! a firmware image that only old revisions reference cannot be removed until `tandem history forget` has
//! forgotten those revisions; then it can, on every member. The history then starts at the same revision
//! on both data nodes, `history verify` is clean across members, time travel before the start is refused
//! with a message that names it, and a follower whose store is rebuilt afterwards (its database wiped, the
//! leader's log purged past it, so it installs the leader's snapshot) agrees. Real `tandem serve`
//! processes and the real CLI.

mod harness;

use std::time::{Duration, Instant};

use harness::Node;
use serde_json::Value;

/// Whether `node` holds the file of blob `digest` (`blobs/sha256/{digest}` under its data directory).
fn has_blob_file(node: &Node, digest: &str) -> bool {
    node.data_dir.join("blobs").join("sha256").join(digest).is_file()
}

fn wait_until(what: &str, timeout: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what} did not happen within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stderr_of(node: &Node, args: &[&str]) -> (Option<i32>, String) {
    let output = node.cli(args);
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

fn first_revision(node: &Node) -> u64 {
    node.json(&["history", "--limit", "1"])["first_revision"].as_u64().unwrap()
}

#[test]
fn forgotten_history_frees_old_firmware_on_every_member_and_a_rebuilt_follower_agrees() {
    let root = tempfile::tempdir().unwrap();
    // Snapshots every 10 entries (and the log purged), so that a follower that falls behind gets one.
    let (a, mut b, _w) = harness::pair_with_witness_configured(root.path(), |node| {
        node.with_env("TANDEM_RAFT_SNAPSHOT_LOGS", "10")
    });
    let image = |name: &str, byte: u8| {
        let path = root.path().join(name);
        std::fs::write(&path, vec![byte; 150_000]).unwrap();
        path
    };
    let (v1, v2) = (image("v1.img", 1), image("v2.img", 2));
    a.ok(&["firmware", "add", "fw", v1.to_str().unwrap(), "--version", "1"]);
    a.ok(&["put", "terminals", "t1", r#"{"mac": "02:00:00:00:00:01", "firmware": "fw"}"#, "--reason", "t1"]);
    a.ok(&["firmware", "add", "fw", v2.to_str().unwrap(), "--version", "2"]);
    a.ok(&["put", "notes", "n1", r#"{"text": "after the upgrade"}"#, "--reason", "note"]);
    let list = b.json(&["blobs", "list"]);
    let digest_of = |byte_size: u64, referenced: bool| -> String {
        let blobs = list["blobs"].as_array().unwrap();
        let blob = blobs
            .iter()
            .find(|blob| {
                blob["size"] == byte_size && (blob["in_use_by"].as_array().unwrap().is_empty() != referenced)
            })
            .unwrap_or_else(|| panic!("{list:#}"));
        blob["digest"].as_str().unwrap().to_string()
    };
    let (old, current) = (digest_of(150_000, false), digest_of(150_000, true));
    let revision = a.status()["revision"].as_u64().unwrap();
    assert_eq!(revision, 4, "fw 1, t1, fw 2, n1");

    // The old image is referenced by revision 1 only: refused until that is forgotten.
    let (code, stderr) = stderr_of(&a, &["blobs", "remove", &old, "--yes"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("history"), "{stderr}");

    // Forget before 3 through the follower (forwarded to the leader): the history starts at 3, from the
    // configuration at 2 (t1 on firmware 1). A dry run first: it names the old image.
    let preview = b.json(&["history", "forget", "--before", "3", "--dry-run"]);
    assert_eq!(
        (preview["outcome"].as_str(), preview["events"].as_u64()),
        (Some("preview"), Some(2)),
        "{preview:#}"
    );
    let unconfirmed = b.cli(&["history", "forget", "--before", "3"]);
    assert_eq!(unconfirmed.status.code(), Some(1), "no terminal, no --yes: refused");
    // Forgetting before 3 keeps the base configuration at 2, which still uses the old image.
    assert!(preview["removable_blobs"].as_array().unwrap().is_empty(), "{preview:#}");
    let forgot = b.ok(&["history", "forget", "--before", "4", "--reason", "retention: 2 years", "--yes"]);
    assert!(forgot.contains("forgot 3 event(s): the history starts at revision 4"), "{forgot}");
    let again = b.ok(&["history", "forget", "--before", "4", "--yes"]);
    assert!(again.contains("nothing to forget: the history already starts at revision 4"), "{again}");
    let (code, stderr) = stderr_of(&b, &["history", "forget", "--before", "99", "--yes"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot forget history before revision 99"), "{stderr}");

    // Now the old image goes, on every member; the one in use stays refused.
    a.ok(&["blobs", "remove", &old, "--yes"]);
    for node in [&a, &b] {
        wait_until(&format!("{}: old image file gone", node.name), Duration::from_secs(10), || {
            !has_blob_file(node, &old)
        });
        assert!(has_blob_file(node, &current), "{}: the image in use must stay", node.name);
    }
    let (code, stderr) = stderr_of(&b, &["blobs", "remove", &current, "--yes"]);
    assert_eq!(code, Some(1), "{stderr}");

    // Both data nodes: the history starts at 4 (n1), the forget's record is in it with actor and reason.
    for node in [&a, &b] {
        let history = node.history();
        let revisions: Vec<u64> = history.iter().map(|e| e["revision"].as_u64().unwrap()).collect();
        assert_eq!(revisions, vec![4, 5], "{}: {history:#?}", node.name);
        let record = &history[1];
        assert_eq!(record["reason"], "retention: 2 years");
        assert_eq!(record["changes"][0]["collection"], "cluster_events");
        assert_eq!(record["changes"][0]["document"]["history_starts_at"], 4);
        assert_eq!(first_revision(node), 4);
        assert_eq!(node.status()["history"]["first_revision"], 4);
        // Time travel: before the start refused by name, the base and after readable.
        let (code, stderr) = stderr_of(node, &["get", "terminals", "t1", "--at", "2"]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains("revision 2 was forgotten") && stderr.contains("starts at revision 4"),
            "{stderr}"
        );
        let at_base = node.ok(&["get", "terminals", "t1", "--at", "3"]);
        assert!(at_base.contains("02:00:00:00:00:01"), "{at_base}");
        let (code, stderr) = stderr_of(node, &["diff", "1", "5"]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains("forgotten"), "{stderr}");
    }
    let status = a.ok(&["status"]);
    assert!(status.contains("history   from revision 4"), "{status}");
    let table = a.ok(&["history"]);
    assert!(table.contains("the history starts at revision 4"), "{table}");
    let verified = a.ok(&["history", "verify"]);
    assert!(verified.contains("the same on every member from revision 3"), "{verified}");

    // A follower rebuilt afterwards: b's database is wiped while it is down, and the leader moves on (its
    // log purged past b), so b installs a snapshot carrying the base, and replays the rest.
    a.ok(&["servers", "lead", "a"]);
    b.kill();
    std::fs::remove_dir_all(b.data_dir.join("db")).unwrap();
    for i in 0..25 {
        a.ok(&["put", "notes", &format!("while-b-down-{i}"), "{}"]);
    }
    b.start(false);
    let target = a.status()["revision"].as_u64().unwrap();
    b.wait_status("b caught up", Duration::from_secs(30), |s| s["revision"].as_u64() == Some(target));
    assert!(b.log_text().contains("installed a snapshot"), "b caught up through the leader's snapshot");
    assert_eq!(first_revision(&b), 4);
    assert_eq!(b.status()["history"]["base_hash"], a.status()["history"]["base_hash"]);
    assert!(
        !b.json(&["blobs", "list"])["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|blob| blob["digest"] == old.as_str())
    );
    let (code, stderr) = stderr_of(&b, &["export", "--at", "1"]);
    assert_eq!(code, Some(1), "{stderr}");
    let verified = a.json(&["history", "verify"]);
    assert_eq!(verified["problems"], Value::Array(vec![]), "{verified:#}");
    assert_eq!(verified["compared_from"], 3, "{verified:#}");
    assert_eq!(verified["common_revision"], target, "{verified:#}");
    let heads: Vec<&Value> = verified["nodes"].as_array().unwrap().iter().map(|n| &n["head"]).collect();
    assert!(heads.windows(2).all(|pair| pair[0] == pair[1]), "{verified:#}");
}

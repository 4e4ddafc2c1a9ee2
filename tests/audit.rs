//! Audit end to end, on real `tandem serve` processes: the history's hash chain (`tandem history verify`
//! names the revision of an event altered on one node's disk), `[audit] require_reason`, the audit fields
//! of every event (actor, token name, source address) and the export of the audit trail of a period
//! (`tandem history --format csv|json --since --until`).

mod harness;

use std::time::Duration;

use harness::Node;
use serde_json::Value;
use tandem_storage::engine::WriteBatch;
use tandem_storage::{Database, Revision, SledDatabase, keys};

fn put(node: &Node, id: &str, reason: &str) -> u64 {
    let answer = node.json(&["put", "notes", id, r#"{"v": 1}"#, "--reason", reason]);
    answer["revision"].as_u64().unwrap_or_else(|| panic!("no revision in {answer}"))
}

/// Changes the stored bytes of one event on a stopped node's disk, as an intruder with a hex editor would:
/// the event still decodes, its hash beside it is left alone.
fn alter_event(data_dir: &std::path::Path, revision: u64, from: &[u8], to: &[u8]) {
    let database = SledDatabase::open(&tandem_storage::database_dir(data_dir)).unwrap();
    let space = database.current().unwrap();
    let key = keys::event(Revision(revision), 0);
    let mut bytes = space.get(&key).unwrap().expect("the event is stored");
    let at = bytes.windows(from.len()).position(|w| w == from).expect("the text is in the event");
    bytes[at..at + from.len()].copy_from_slice(to);
    let mut batch = WriteBatch::new();
    batch.put(key, bytes);
    space.write(batch).unwrap();
    database.durable().unwrap();
}

#[test]
fn history_verify_names_the_revision_of_an_event_altered_on_one_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Node::new(dir.path(), "a", "data");
    let mut b = Node::new(dir.path(), "b", "data");
    a.start(false);
    b.start(true);
    a.add(&b);
    let mut last = 0;
    for i in 1..=5 {
        last = put(&a, &format!("n{i}"), &format!("change {i}"));
    }
    b.wait_status("b applies every change", Duration::from_secs(20), |s| s["revision"] == last);

    let report = a.json(&["history", "verify"]);
    assert_eq!(report["nodes"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(report["common_revision"], last, "{report}");
    assert_eq!(report["nodes"][0]["head"], report["nodes"][1]["head"], "{report}");
    assert!(a.ok(&["history", "verify"]).contains("intact and the same on every member"));

    assert!(b.stop(), "b stops cleanly");
    let altered = last - 2;
    let reason = format!("change {altered}");
    alter_event(&b.data_dir, altered, reason.as_bytes(), format!("chXnge {altered}").as_bytes());
    b.start(false);
    b.wait_status("b is back", Duration::from_secs(20), |s| s["revision"] == last);
    let on_b = b.history();
    assert_eq!(on_b[altered as usize - 1]["reason"], format!("chXnge {altered}"), "the edit is on b's disk");

    let output = a.cli(&["history", "verify"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "a broken chain fails the command: {stderr}");
    assert!(stderr.contains(&format!("b: revision {altered} does not match its hash")), "{stderr}");
    assert!(!stderr.contains("a: revision"), "a is intact: {stderr}");

    let output = a.cli(&["history", "verify", "--json"]);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let b_report = report["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "b").unwrap().clone();
    assert_eq!(b_report["first_mismatch"]["revision"], altered, "{report}");
    assert_eq!(b_report["intact"], false);
    // New changes keep applying on both, and the alteration stays evident.
    let next = put(&a, "n9", "after the edit");
    b.wait_status("b applies the next change", Duration::from_secs(20), |s| s["revision"] == next);
    let output = b.cli(&["history", "verify"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains(&format!("revision {altered} does not")));
}

#[test]
fn require_reason_refuses_a_change_without_one_and_the_trail_exports_as_csv_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[audit]\nrequire_reason = true\n\n[[tokens]]\nname = \"line-7\"\nrole = \"operator\"\nsecret = \"operator-secret-0123456\"\n";
    let mut node =
        Node::new(dir.path(), "solo", "data").with_config(config).with_token("operator-secret-0123456");
    node.start(false);

    let refused = node.cli(&["put", "notes", "n1", r#"{"v": 1}"#]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("requires a reason for every change"), "{stderr}");
    let refused = node.cli(&["put", "notes", "n1", r#"{"v": 1}"#, "--reason", "  ", "--json"]);
    let answer: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(answer["code"], "reason_required", "{answer}");
    assert!(answer["hint"].as_str().unwrap().contains("--reason"), "{answer}");
    assert_eq!(node.status()["revision"], 0, "nothing was written");

    let first = put(&node, "n1", "first, \"quoted\"");
    std::thread::sleep(Duration::from_millis(1100));
    let second =
        node.json(&["put", "notes", "n2", "{}", "--reason", "second", "--actor", "grace"])["revision"]
            .as_u64()
            .unwrap();
    let events = node.history();
    let second_ms = events[1]["timestamp_ms"].as_u64().unwrap();
    // Who, with which token, from where.
    assert_eq!((&events[0]["actor"], &events[0]["token"]), (&Value::from("line-7"), &Value::from("line-7")));
    assert_eq!((&events[1]["actor"], &events[1]["token"]), (&Value::from("grace"), &Value::from("line-7")));
    let source = events[1]["source"].as_str().expect("a source address");
    assert!(source.starts_with("127.0.0.1:"), "{source}");
    let table = node.ok(&["history"]);
    assert!(table.contains("grace") && table.contains("127.0.0.1:"), "{table}");

    let csv = node.ok(&["history", "--format", "csv"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "revision,time,timestamp_ms,actor,token,source,reason,request_id,changes");
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[1].starts_with(&format!("{first},")), "{csv}");
    assert!(lines[1].contains(r#","first, ""quoted""","#), "quoted per RFC 4180: {csv}");
    assert!(lines[1].ends_with(",~notes/n1"), "{csv}");
    assert!(lines[2].contains(",grace,line-7,127.0.0.1:"), "actor, token, source: {csv}");

    // The period: from the second's start (Unix seconds) on, then until it.
    let since = (second_ms / 1000).to_string();
    let period: Value =
        serde_json::from_str(&node.ok(&["history", "--format", "json", "--since", &since])).unwrap();
    let revisions: Vec<u64> =
        period.as_array().unwrap().iter().map(|e| e["revision"].as_u64().unwrap()).collect();
    assert_eq!(revisions, vec![second]);
    let before: Value =
        serde_json::from_str(&node.ok(&["history", "--format", "json", "--until", &since])).unwrap();
    let revisions: Vec<u64> =
        before.as_array().unwrap().iter().map(|e| e["revision"].as_u64().unwrap()).collect();
    assert_eq!(revisions, vec![first]);
    let none = node.ok(&["history", "--format", "csv", "--since", "2999-01-01"]);
    assert_eq!(none.lines().count(), 1, "only the header: {none}");
    let bad = node.cli(&["history", "--format", "csv", "--since", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2), "a bad time is a usage error");
}

#[test]
fn a_backup_carries_the_chain_head_and_a_restored_node_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::new(dir.path(), "a", "data");
    node.start(false);
    for i in 1..=3 {
        put(&node, &format!("n{i}"), &format!("change {i}"));
    }
    let head = node.json(&["history", "verify"])["nodes"][0]["head"].as_str().unwrap().to_string();
    assert_eq!(head.len(), 64);
    let file = dir.path().join("a.backup");
    node.ok(&["backup", "create", "--out", file.to_str().unwrap()]);
    let verified = node.json(&["backup", "verify", file.to_str().unwrap()]);
    assert_eq!(verified["head"], head.as_str(), "{verified}");

    let restored_dir = dir.path().join("restored");
    let restored = node.json(&[
        "backup",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        restored_dir.to_str().unwrap(),
    ]);
    assert_eq!(restored["head"], head.as_str());
    let mut copy = Node::new(dir.path(), "restored", "data");
    copy.start(false);
    let report = copy.json(&["history", "verify"]);
    assert_eq!(report["nodes"][0]["head"], head.as_str(), "the restored node has the same chain: {report}");
    assert_eq!(report["nodes"][0]["intact"], true);
    // The restored node links its next event to the backup's head.
    put(&copy, "n4", "after the restore");
    assert_eq!(copy.json(&["history", "verify"])["nodes"][0]["intact"], true);
}
